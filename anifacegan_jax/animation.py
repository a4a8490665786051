"""Animation: expression and pose trajectories, frames of a trained run, videos, line textures.

A `Trajectory` gives every frame its expression z_exp (64,) and camera (pitch, yaw); one identity
(z_id, ε) is held fixed over a video. Trajectories come from handcrafted paths (`yaw_sweep`,
`expression_blend`: the official render.py blends z_exp = r·exp with r = 0 → 1 while the yaw
sweeps ±0.35 over 50 frames) or from a real video's Deep3DFaceRecon coefficients
(`load_sequence`: an .npz of exp (T, 64) and angles (T, 3), or a folder of per-frame .mat files).

`render_frames` renders a trajectory with the EMA generator in fixed-size frame batches (one
compilation), ray chunks and truncation ψ; the same seed gives identical frames. `write_video`
writes GIF / WebP (pillow) or MP4 (imageio-ffmpeg, optional); `line_texture` stacks one pixel row
of every frame (paper Fig. 4): smooth, continuous streaks mean temporally consistent animation.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import sys
import zipfile
import zlib
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from anifacegan_jax.face3d import geometry, morphable
from anifacegan_jax.models.generator import mean_radiance_codes, render
from anifacegan_jax.types import Camera, Latents

HALF_PI = float(np.pi / 2)
NUM_EXP = 64
VIDEO_SUFFIXES = (".gif", ".webp", ".mp4")


@dataclasses.dataclass(frozen=True)
class Trajectory:
  """Per-frame expression and camera.

  Attributes:
    z_exp: (T, 64) expression coefficients.
    pitch: (T,) polar angle φ, radians (π/2 = level).
    yaw: (T,) azimuth θ, radians (π/2 = frontal).
  """

  z_exp: np.ndarray
  pitch: np.ndarray
  yaw: np.ndarray

  def __post_init__(self):
    z_exp = np.asarray(self.z_exp, np.float32)
    pitch, yaw = np.asarray(self.pitch, np.float32), np.asarray(self.yaw, np.float32)
    if z_exp.ndim != 2 or z_exp.shape[1] != NUM_EXP or len(z_exp) < 1:
      raise ValueError(f"Trajectory.z_exp must be (T >= 1, {NUM_EXP}), got {z_exp.shape}")
    if pitch.shape != (len(z_exp),) or yaw.shape != (len(z_exp),):
      raise ValueError(f"Trajectory.pitch and yaw must be ({len(z_exp)},) like z_exp's frames, got "
                       f"{pitch.shape} and {yaw.shape}")
    for name, value in (("z_exp", z_exp), ("pitch", pitch), ("yaw", yaw)):
      if not np.isfinite(value).all():
        raise ValueError(f"Trajectory.{name} has NaN or infinite values")
    object.__setattr__(self, "z_exp", z_exp)
    object.__setattr__(self, "pitch", pitch)
    object.__setattr__(self, "yaw", yaw)

  @property
  def num_frames(self) -> int:
    return len(self.z_exp)


def check_expression(value, source: str, sequence: bool = False) -> np.ndarray:
  """`value` as float32 (64,) (or (T, 64) when `sequence`), else a ValueError naming `source`."""
  array = np.asarray(value)
  if array.dtype.kind not in "fiu":
    raise ValueError(f"{source}: expression coefficients must be numeric, got dtype {array.dtype}")
  array = array.astype(np.float32)
  if sequence:
    if array.ndim != 2 or array.shape[1] != NUM_EXP or len(array) < 1:
      raise ValueError(f"{source}: exp has shape {array.shape}; expected (T, {NUM_EXP}) "
                       "Deep3DFaceRecon expression coefficients, one row per frame")
  else:
    array = array.reshape(-1) if array.ndim == 2 and array.shape[0] == 1 else array
    if array.shape != (NUM_EXP,):
      raise ValueError(f"{source}: exp has shape {np.asarray(value).shape}; expected ({NUM_EXP},) "
                       "or (1, 64) Deep3DFaceRecon expression coefficients")
  if not np.isfinite(array).all():
    raise ValueError(f"{source}: exp has NaN or infinite values")
  return array


def yaw_sweep(num_frames: int, amplitude: float = 0.35, z_exp=None,
              pitch: float = HALF_PI) -> Trajectory:
  """Yaw from −amplitude to +amplitude around frontal at a fixed expression (default neutral)."""
  _check_frames(num_frames)
  exp = np.zeros(NUM_EXP, np.float32) if z_exp is None else check_expression(z_exp, "z_exp")
  return Trajectory(z_exp=np.tile(exp, (num_frames, 1)), pitch=np.full(num_frames, pitch),
                    yaw=HALF_PI + np.linspace(-amplitude, amplitude, num_frames))


def expression_blend(target, num_frames: int, yaw_amplitude: float = 0.0, start=None,
                     pitch: float = HALF_PI) -> Trajectory:
  """z_exp = start + r·(target − start), r = linspace(0, 1, T) (start: neutral, z_exp = 0).

  With yaw_amplitude = 0.35 and 50 frames this is the official render.py trajectory (expression
  and yaw change together).
  """
  _check_frames(num_frames)
  target = check_expression(target, "target")
  start = np.zeros(NUM_EXP, np.float32) if start is None else check_expression(start, "start")
  ratio = np.linspace(0.0, 1.0, num_frames, dtype=np.float32)[:, None]
  return Trajectory(z_exp=start + ratio * (target - start), pitch=np.full(num_frames, pitch),
                    yaw=HALF_PI + np.linspace(-yaw_amplitude, yaw_amplitude, num_frames))


def _check_frames(num_frames: int) -> None:
  if int(num_frames) < 1:
    raise ValueError(f"num_frames must be >= 1, got {num_frames}")


def _from_angles(z_exp: np.ndarray, angles: np.ndarray | None, source: str,
                 use_pose: bool) -> Trajectory:
  if angles is None or not use_pose:
    frames = len(z_exp)
    return Trajectory(z_exp=z_exp, pitch=np.full(frames, HALF_PI), yaw=np.full(frames, HALF_PI))
  angles = np.asarray(angles)
  if angles.dtype.kind not in "fiu":
    raise ValueError(f"{source}: angles must be numeric, got dtype {angles.dtype}")
  angles = angles.astype(np.float32)
  if angles.shape != (len(z_exp), 3):
    raise ValueError(f"{source}: angles has shape {angles.shape}; expected ({len(z_exp)}, 3) "
                     "Deep3DFaceRecon Euler angles (radians), one row per exp row")
  if not np.isfinite(angles).all():
    bad = int(np.argwhere(~np.isfinite(angles))[0, 0])
    raise ValueError(f"{source}: angles has NaN or infinite values (first in row {bad})")
  pitch, yaw = geometry.angles_to_camera(angles)
  return Trajectory(z_exp=z_exp, pitch=np.asarray(pitch), yaw=np.asarray(yaw))


def load_sequence(path: str | pathlib.Path, use_pose: bool = True) -> Trajectory:
  """A trajectory extracted from a real video by Deep3DFaceRecon.

  Args:
    path: an .npz with 'exp' (T, 64) and optionally 'angles' (or 'angle') (T, 3); a folder of
      per-frame Deep3DFaceRecon .mat files (sorted by name); or one .mat file (one frame).
    use_pose: drive the camera with the angles (pitch/yaw; roll is dropped); False keeps the
      camera frontal.
  """
  path = pathlib.Path(path).expanduser()
  if path.is_dir():
    mats = sorted(path.glob("*.mat"))
    if not mats:
      raise FileNotFoundError(f"{path}: no .mat files (Deep3DFaceRecon results) in this folder")
    exp, angles = [], []
    for mat in mats:
      coeffs, _ = morphable.read_coefficients_mat(mat)
      exp.append(coeffs.exp)
      angles.append(coeffs.angle)
    return _from_angles(np.stack(exp), np.stack(angles), str(path), use_pose)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such file or folder (expected an .npz of exp/angles or "
                            "Deep3DFaceRecon .mat files)")
  if path.suffix == ".mat":
    coeffs, _ = morphable.read_coefficients_mat(path)
    return _from_angles(coeffs.exp[None], coeffs.angle[None], str(path), use_pose)
  if path.suffix != ".npz":
    raise ValueError(f"{path}: unsupported driving file; expected .npz (exp (T, 64), angles "
                     "(T, 3)), a .mat or a folder of .mat files")
  data = read_npz(path, "(T, 64)")
  z_exp = check_expression(data["exp"], str(path), sequence=True)
  angles = data.get("angles", data.get("angle"))
  return _from_angles(z_exp, angles, str(path), use_pose)


def read_npz(path: pathlib.Path, exp_shape: str) -> dict[str, np.ndarray]:
  """Every array of an .npz (no pickled objects), which must hold 'exp' of `exp_shape`; a
  truncated or damaged file raises one ValueError naming it."""
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {name: data[name] for name in data.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
    raise ValueError(f"{path}: not a readable .npz file ({type(error).__name__}: {error}); "
                     f"expected numpy.savez arrays with 'exp' {exp_shape}") from None
  if "exp" not in arrays:
    raise ValueError(f"{path}: missing array 'exp' {exp_shape}; found {sorted(arrays)}")
  return arrays


def smooth(trajectory: Trajectory, window: int) -> Trajectory:
  """Centred moving average over `window` frames (odd; edges padded by repetition): steadies the
  frame-to-frame jitter of per-frame reconstructions."""
  if window <= 1:
    return trajectory
  if window % 2 == 0:
    raise ValueError(f"smoothing window must be odd, got {window}")
  half = window // 2

  def average(x):
    padded = np.concatenate([np.repeat(x[:1], half, 0), x, np.repeat(x[-1:], half, 0)])
    kernel = np.ones(window, np.float32) / window
    flat = padded.reshape(len(padded), -1)
    out = np.stack([np.convolve(flat[:, k], kernel, mode="valid") for k in range(flat.shape[1])], 1)
    return out.reshape(x.shape)

  return Trajectory(z_exp=average(trajectory.z_exp), pitch=average(trajectory.pitch),
                    yaw=average(trajectory.yaw))


def named_expression(spec: str) -> np.ndarray:
  """(64,) z_exp from SynthFaces blendshape names: 'jaw_open' or 'smile_left=0.8,smile_right=0.8'
  (a bare name means 1). Only meaningful for runs on the procedural model."""
  from anifacegan_jax.synthfaces.procedural_expressions import EXPRESSION_NAMES
  z_exp = np.zeros(NUM_EXP, np.float32)
  for part in spec.split(","):
    name, _, value = part.strip().partition("=")
    if name not in EXPRESSION_NAMES:
      raise ValueError(f"unknown expression {name!r}: use one of {', '.join(EXPRESSION_NAMES)}, a "
                       ".mat/.npz file, or '' for a random expression of the prior")
    try:
      z_exp[EXPRESSION_NAMES.index(name)] = float(value) if value else 1.0
    except ValueError:
      raise ValueError(f"expression {part!r}: the weight after '=' must be a number") from None
  return z_exp


def load_expression(spec: str) -> np.ndarray:
  """(64,) z_exp from a Deep3DFaceRecon .mat, an .npz with 'exp' (64,)/(1, 64), or names."""
  path = pathlib.Path(spec).expanduser()
  if path.suffix in (".mat", ".npz"):
    if path.suffix == ".mat":
      coeffs, _ = morphable.read_coefficients_mat(path)
      return coeffs.exp
    if not path.is_file():
      raise FileNotFoundError(f"{path}: no such file")
    return check_expression(read_npz(path, "(64,)")["exp"], str(path))
  return named_expression(spec)


# ---------------------------------------------------------------------------------------------
# Rendering.


@dataclasses.dataclass(frozen=True)
class Frames:
  """Rendered frames: images uint8 (T, R, R, 3), depth (T, R, R) world units along the ray,
  mask (T, R, R) bool (opacity of the manifolds, not the background, above one half)."""

  images: np.ndarray
  depth: np.ndarray
  mask: np.ndarray


def identity_latents(prior, seed: int) -> tuple[jax.Array, jax.Array]:
  """(z_id (80,), ε (80,)) of one identity, fixed by `seed`."""
  key_id, key_noise = jax.random.split(jax.random.key(seed))
  return prior.sample_id(key_id, 1)[0], jax.random.normal(key_noise, (80,))


def truncation_centre(run, key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The run's ψ-truncation centre: `mean_radiance_codes` of its EMA generator over
  config.psi_samples codes drawn from its prior (identities and, for a template conditioned on
  the expression, expressions) with `key`."""
  return mean_radiance_codes(run.generator, {"params": run.ema_params}, key,
                             sample_z_id=run.prior.sample_id, num=int(run.config.psi_samples),
                             sample_z_exp=run.prior.sample_exp)


class ProgressBar:
  """A one-line text progress bar on a stream (stderr): `label [#####     ] 12/50`."""

  def __init__(self, label: str, total: int, stream=None, width: int = 30):
    self.label, self.total, self.width = label, total, width
    self.stream = stream if stream is not None else sys.stderr

  def __call__(self, done: int) -> None:
    filled = self.width * done // max(1, self.total)
    end = "\n" if done >= self.total else ""
    self.stream.write(f"\r{self.label} [{'#' * filled}{' ' * (self.width - filled)}] "
                      f"{done}/{self.total}{end}")
    self.stream.flush()


@functools.partial(jax.jit, static_argnames=("generator", "resolution", "chunk_size"))
def draw_frames(generator, params, z_id, noise, z_exp, pitch, yaw, mean, psi, *, resolution: int,
                chunk_size: int):
  """uint8 images (T, R, R, 3), depth (T, R, R) and opacity mask (T, R, R) of frames z_exp (T, 64),
  pitch (T,), yaw (T,) of one identity (z_id (80,), ε (80,)), truncated by ψ towards `mean` (the
  radiance codes of `mean_radiance_codes`; None: no truncation, ψ ignored). ψ is traced: one
  compilation per generator, resolution, chunk size and frame count serves every identity, ψ
  and trajectory (`render_frames`, the viewer)."""
  count = z_exp.shape[0]
  latents = Latents(z_id=jnp.broadcast_to(z_id, (count, 80)), z_exp=z_exp,
                    noise=jnp.broadcast_to(noise, (count, 80)))
  out = render(generator, {"params": params}, latents, Camera(pitch=pitch, yaw=yaw),
               resolution=resolution, chunk_size=chunk_size, lock_view=True,
               psi=1.0 if mean is None else psi, mean_codes=mean)
  image = jnp.round((jnp.clip(out.image, -1, 1) + 1) * 127.5).astype(jnp.uint8)
  opacity = 1.0 - out.weights[..., -1].reshape(out.depth.shape)
  return image, out.depth, opacity > 0.5


def render_frames(run, trajectory: Trajectory, *, seed: int = 0, psi: float | None = None,
                  resolution: int | None = None, batch_size: int = 8,
                  progress: Callable[[int], None] | None = None,
                  identity: tuple[jax.Array, jax.Array] | None = None) -> Frames:
  """Render every frame of `trajectory` for one identity with the run's EMA generator.

  Args:
    run: a `experiment.Run`.
    trajectory: expressions and cameras.
    seed: fixes the identity z_id and appearance noise ε (unless `identity` is given).
    psi: truncation ψ (default: the run's config.psi).
    resolution: image size (default: the training resolution).
    batch_size: frames per render call; the last batch is padded, so one compilation serves all.
    progress: called with the number of frames done after each batch.
    identity: (z_id (80,), ε (80,)) instead of drawing them from `seed`.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  config = run.config
  psi = float(config.psi if psi is None else psi)
  resolution = int(resolution or config.stages[0].resolution)
  z_id, noise = identity if identity is not None else identity_latents(run.prior, seed)
  mean = None
  if psi != 1.0:
    mean = truncation_centre(run, jax.random.fold_in(jax.random.key(seed), 1))

  total = trajectory.num_frames
  batch_size = min(batch_size, total)
  images, depths, masks = [], [], []
  for start in range(0, total, batch_size):
    stop = min(start + batch_size, total)
    pad = lambda x: np.concatenate([x[start:stop], np.repeat(x[stop - 1:stop],
                                                             batch_size - (stop - start), 0)])
    image, depth, mask = jax.device_get(draw_frames(
        run.generator, run.ema_params, z_id, noise, pad(trajectory.z_exp), pad(trajectory.pitch),
        pad(trajectory.yaw), mean, np.float32(psi), resolution=resolution,
        chunk_size=int(config.chunk_size)))
    images.append(image[:stop - start])
    depths.append(depth[:stop - start])
    masks.append(mask[:stop - start])
    if progress is not None:
      progress(stop)
  return Frames(images=np.concatenate(images), depth=np.concatenate(depths),
                mask=np.concatenate(masks))


# ---------------------------------------------------------------------------------------------
# Outputs.


def line_texture(images: np.ndarray, row: float | int = 0.6) -> np.ndarray:
  """(T, W, 3) image: pixel row `row` of every frame (T, H, W, 3), frame 0 at the top.

  `row` is a pixel index (int) or a fraction of the height (float in [0, 1]; 0.6 crosses the
  mouth of a Deep3DFaceRecon-framed face).
  """
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"images must be (T, H, W, C), got shape {images.shape}")
  height = images.shape[1]
  index = round(row * (height - 1)) if isinstance(row, float) else int(row)
  if not 0 <= index < height:
    raise ValueError(f"row {row} is outside the image (height {height})")
  return images[:, index]


def write_video(path: str | pathlib.Path, images: Sequence[np.ndarray] | np.ndarray,
                fps: float = 25.0) -> pathlib.Path:
  """Write uint8 frames (T, H, W, 3) as .gif / .webp (pillow) or .mp4 (H.264 via imageio-ffmpeg,
  yuv420p, crf 21 as the official render.py); returns the path."""
  path = pathlib.Path(path)
  suffix = path.suffix.lower()
  if suffix not in VIDEO_SUFFIXES:
    raise ValueError(f"{path}: unsupported video format {suffix!r}; use one of "
                     f"{', '.join(VIDEO_SUFFIXES)}")
  frames = np.asarray(images)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
    raise ValueError(f"video frames must be uint8 (T >= 1, H, W, 3), got {frames.dtype} "
                     f"{frames.shape}")
  if fps <= 0:
    raise ValueError(f"fps must be positive, got {fps}")
  path.parent.mkdir(parents=True, exist_ok=True)
  if suffix == ".mp4":
    _write_mp4(path, frames, fps)
    return path
  pictures = [Image.fromarray(frame) for frame in frames]
  options = dict(save_all=True, append_images=pictures[1:], duration=round(1000 / fps), loop=0)
  if suffix == ".webp":
    options["lossless"] = True
  pictures[0].save(path, **options)
  return path


def _write_mp4(path: pathlib.Path, frames: np.ndarray, fps: float) -> None:
  try:
    import imageio_ffmpeg
  except ImportError:
    raise ValueError(f"{path}: writing .mp4 needs imageio-ffmpeg (pip install imageio-ffmpeg, or "
                     "the package's [video] extra); .gif and .webp need nothing more") from None
  height, width = frames.shape[1:3]
  if height % 2 or width % 2:  # yuv420p needs even sizes: repeat the last row/column
    frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
  writer = imageio_ffmpeg.write_frames(
      str(path), (frames.shape[2], frames.shape[1]), fps=fps, codec="libx264",
      pix_fmt_out="yuv420p", output_params=["-crf", "21"], macro_block_size=1)
  writer.send(None)
  for frame in frames:
    writer.send(np.ascontiguousarray(frame).tobytes())
  writer.close()
