"""Render image grids, depth and animations of a trained run (`experiment.Run`) with its EMA
generator."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from anifacegan_jax import animation, export
from anifacegan_jax.experiment import Run, load_run
from anifacegan_jax.models.generator import AnimatableGenerator, render
from anifacegan_jax.models.priors import Prior
from anifacegan_jax.types import Camera, Latents


def to_uint8(images) -> np.ndarray:
  """[-1, 1] float images -> uint8 (rounded, as written to an image file)."""
  return ((np.clip(np.asarray(images), -1, 1) + 1) * 127.5).round().astype(np.uint8)


def grid_latents(prior: Prior, key: jax.Array, num_identities: int,
                 num_expressions: int) -> Latents:
  """(identities, expressions) latents: one z_id and ε per row, expression 0 neutral."""
  key_id, key_noise, key_exp = jax.random.split(key, 3)
  z_id = prior.sample_id(key_id, num_identities)
  noise = jax.random.normal(key_noise, (num_identities, 80))
  z_exp = jnp.concatenate([jnp.zeros((1, 64)), prior.sample_exp(key_exp, num_expressions - 1)])
  shape = (num_identities, num_expressions)
  return Latents(z_id=jnp.broadcast_to(z_id[:, None], shape + (80,)),
                 z_exp=jnp.broadcast_to(z_exp[None], shape + (64,)),
                 noise=jnp.broadcast_to(noise[:, None], shape + (80,)))


def depth_rgb(generator: AnimatableGenerator, depth: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """uint8 (N, R, R, 3) gray `export.depth_preview` of (N, R, R) depths: near bright, far and
  where `mask` is False (the manifolds less than half opaque) black."""
  gray = np.stack([export.depth_preview(d, m, generator.near, generator.far)
                   for d, m in zip(depth, mask)])
  return np.repeat(gray[..., None], 3, axis=-1)


def render_grid(run: Run, *, num_identities: int = 4, num_expressions: int = 3,
                yaws: tuple[float, ...] = (-0.35, 0.0, 0.35), psi: float | None = None,
                resolution: int | None = None, seed: int = 0, depth: bool = False) -> np.ndarray:
  """uint8 (identities·R, expressions·yaws·R, 3) grid; columns iterate yaws within expressions.
  With `depth`, each identity's row is followed by its depth (`export.depth_preview`: near
  bright, where the manifolds are less than half opaque black): (2·identities·R, ...)."""
  if num_identities < 1 or num_expressions < 1 or not yaws:
    raise ValueError("need at least one identity, one expression and one yaw")
  config = run.config
  psi = config.psi if psi is None else psi
  resolution = resolution or int(config.stages[0].resolution)
  key = jax.random.key(seed)
  latents = grid_latents(run.prior, key, num_identities, num_expressions)
  if run.identity is not None:  # one face (an inversion): every row renders it
    z_id, noise = (jnp.broadcast_to(jnp.asarray(x), latents.z_id.shape) for x in run.identity)
    latents = latents.replace(z_id=z_id, noise=noise)
  mean = animation.truncation_centre(run, jax.random.fold_in(key, 1))
  yaw = jnp.pi / 2 + jnp.asarray(yaws, jnp.float32)
  columns = num_expressions * len(yaws)
  flat = jax.tree_util.tree_map(
      lambda x: jnp.repeat(x.reshape((-1, x.shape[-1])), len(yaws), axis=0), latents)
  camera = Camera(pitch=jnp.full((flat.z_id.shape[0],), jnp.pi / 2),
                  yaw=jnp.tile(yaw, num_identities * num_expressions))

  @jax.jit
  def draw(params, lat, cam):
    out = render(run.generator, {"params": params}, lat, cam, resolution=resolution,
                 chunk_size=config.chunk_size, lock_view=True, psi=psi, mean_codes=mean)
    return out.image, out.depth, 1.0 - out.weights[..., -1].reshape(out.depth.shape)

  image, distance, opacity = jax.device_get(draw(run.ema_params, flat, camera))
  rows = to_uint8(image).reshape(num_identities, 1, columns, resolution, resolution, 3)
  if depth:
    rows = np.concatenate([rows, depth_rgb(run.generator, distance, opacity > 0.5).reshape(
        rows.shape)], axis=1)
  return rows.transpose(0, 1, 3, 2, 4, 5).reshape(rows.shape[0] * rows.shape[1] * resolution,
                                                  columns * resolution, 3)


def write_grid(workdir: str | pathlib.Path, out: str | pathlib.Path | None = None,
               step: int | None = None, run: Run | None = None, **kwargs) -> pathlib.Path:
  """Render `render_grid` for `run` (default: the run in `workdir`) and save it as PNG under
  `workdir` (or `out`); returns the path."""
  run = run or load_run(workdir, step)
  grid = render_grid(run, **kwargs)
  path = pathlib.Path(out) if out else (
      pathlib.Path(workdir) / "samples" / f"grid_{run.step:08d}.png")
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(grid).save(path)
  return path


# ---------------------------------------------------------------------------------------------
# Videos, line textures, depth maps and meshes (`python -m anifacegan_jax.sample --mode=...`).

ANIMATION_MODES = ("video", "reel", "lines", "depth", "mesh")


def expression_target(run: Run, spec: str, seed: int) -> np.ndarray:
  """(64,) target expression: '' = one drawn from the run's prior (fixed by `seed`), a
  Deep3DFaceRecon .mat / an .npz with 'exp', or SynthFaces blendshape names (procedural runs)."""
  if not spec:
    key = jax.random.fold_in(jax.random.key(seed), 2)
    return np.asarray(run.prior.sample_exp(key, 1)[0], np.float32)
  if pathlib.Path(spec).suffix in (".mat", ".npz"):
    return animation.load_expression(spec)
  if run.config.face_model:
    raise ValueError(f"expression {spec!r}: blendshape names belong to SynthFaces' procedural "
                     f"model, but this run imitates {run.config.face_model}; give a .mat/.npz")
  return animation.named_expression(spec)


def make_trajectory(run: Run, trajectory: str = "blend", *, expression: str = "",
                    num_frames: int = 50, yaw_amplitude: float = 0.35, smoothing: int = 1,
                    use_pose: bool = True, seed: int = 0) -> animation.Trajectory:
  """'blend' (neutral → `expression` while the yaw sweeps ±yaw_amplitude: render.py), 'yaw'
  (a yaw sweep at `expression`, '' = neutral here), or a driving file/folder for
  `animation.load_sequence` (then smoothed over `smoothing` frames)."""
  if trajectory == "blend":
    target = expression_target(run, expression, seed)
    return animation.expression_blend(target, num_frames, yaw_amplitude)
  if trajectory == "yaw":
    target = expression_target(run, expression, seed) if expression else None
    return animation.yaw_sweep(num_frames, yaw_amplitude, target)
  return animation.smooth(animation.load_sequence(trajectory, use_pose=use_pose), smoothing)


def write_animation(workdir: str | pathlib.Path, mode: str, *,
                    out_dir: str | pathlib.Path | None = None, seeds: tuple[int, ...] = (0,),
                    trajectory: str = "blend", expression: str = "", num_frames: int = 50,
                    yaw_amplitude: float = 0.35,
                    smoothing: int = 1, use_pose: bool = True, psi: float | None = None,
                    resolution: int | None = None, batch_size: int = 8, fps: float = 25.0,
                    video_format: str = "gif", mesh_format: str = "ply", row: float = 0.6,
                    progress: bool = True, step: int | None = None,
                    run: Run | None = None) -> list[pathlib.Path]:
  """Render a trajectory per identity seed and write `mode`'s files; returns their paths.

  `run` defaults to the run in `workdir` (`step`); pass `experiment.official_run(...)` for the release.

  Files in `out_dir` (default <workdir>/samples), per seed s:
    video: video_s<s>.<video_format> (gif, webp or mp4);
    reel: one video for all seeds, reel_s<first>-<last>.<video_format>: a row per identity, each
      frame beside its depth (near bright, background black);
    lines: lines_s<s>.png, the line texture of pixel row `row` (fraction of the height);
    depth: depth_s<s>_f<frame>.png (16-bit, [near, far] → [0, 65535]) and ..._preview.png;
    mesh: mesh_s<s>_f<frame>.<mesh_format> (ply or obj), from each frame's depth and colours.
  """
  if mode not in ANIMATION_MODES:
    raise ValueError(f"mode {mode!r}: use one of {', '.join(ANIMATION_MODES)} (or the grid)")
  if mode in ("video", "reel") and f".{video_format}" not in animation.VIDEO_SUFFIXES:
    raise ValueError(f"video format {video_format!r}: use gif, webp or mp4")
  if mode == "mesh" and mesh_format not in ("ply", "obj"):
    raise ValueError(f"mesh format {mesh_format!r}: use ply or obj")
  run = run or load_run(workdir, step)
  out_dir = pathlib.Path(out_dir) if out_dir else pathlib.Path(workdir) / "samples"
  generator = run.generator
  paths, rows = [], []
  for seed in seeds:
    path = make_trajectory(run, trajectory, expression=expression, num_frames=num_frames,
                           yaw_amplitude=yaw_amplitude, smoothing=smoothing, use_pose=use_pose,
                           seed=seed)
    bar = animation.ProgressBar(f"seed {seed}: frames", path.num_frames) if progress else None
    frames = animation.render_frames(run, path, seed=seed, psi=psi, resolution=resolution,
                                     batch_size=batch_size, progress=bar, identity=run.identity)
    if mode == "video":
      paths.append(animation.write_video(out_dir / f"video_s{seed}.{video_format}",
                                         frames.images, fps))
    elif mode == "reel":
      rows.append(np.concatenate([frames.images, depth_rgb(generator, frames.depth, frames.mask)],
                                 axis=2))
    elif mode == "lines":
      texture = animation.line_texture(frames.images, float(row))
      out_dir.mkdir(parents=True, exist_ok=True)
      paths.append(out_dir / f"lines_s{seed}.png")
      Image.fromarray(texture).save(paths[-1])
    else:
      for i in range(path.num_frames):
        stem = out_dir / f"{mode}_s{seed}_f{i:03d}"
        if mode == "depth":
          paths.append(export.write_depth_png(stem.with_suffix(".png"), frames.depth[i],
                                              generator.near, generator.far))
          preview = export.depth_preview(frames.depth[i], frames.mask[i], generator.near,
                                         generator.far)
          paths.append(stem.with_name(stem.name + "_preview.png"))
          Image.fromarray(preview).save(paths[-1])
        else:
          mesh = export.depth_mesh(frames.depth[i], float(path.pitch[i]), float(path.yaw[i]),
                                   mask=frames.mask[i], colors=frames.images[i],
                                   fov_degrees=generator.fov_degrees,
                                   radius=generator.camera_radius)
          paths.append(export.write_mesh(stem.with_suffix(f".{mesh_format}"), mesh))
  if mode == "reel":
    name = f"reel_s{seeds[0]}-{seeds[-1]}.{video_format}"
    paths.append(animation.write_video(out_dir / name, np.concatenate(rows, axis=1), fps))
  return paths
