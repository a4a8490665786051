"""Where the render's time goes: each stage of `AnimatableGenerator.render_rays` timed alone.

  python benchmarks/profile_render.py --resolution=64 --out=benchmarks/profile_render_cpu.json

One image of the default generator (64 samples, 23 manifolds + the background), all rays in one
call per stage, each stage jitted on the previous stage's outputs: deformation network at every
sample, manifold predictor at every sample, the crossing search and interpolation, radiance net at
the 24 points per ray, compositing; then the whole `render` (chunked, as `sample` runs it) and its
forward+backward (`remat` off and on), at render's default chunk size (--chunk: another). Each stage's FLOPs come from XLA's cost analysis of its
compiled program, so its rate can be set against the machine's float32 matmul peak (a 2048² jnp
matmul, measured here). Seconds are medians of --repeats calls; compile time is reported apart
(≈ 0 for the forward stages, compiled already to make the next stage's inputs).
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import sys

import jax
import jax.numpy as jnp

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from anifacegan_jax.models.generator import AnimatableGenerator, init_generator, render  # noqa: E402
from anifacegan_jax.models.layers import SINES  # noqa: E402
from anifacegan_jax.rendering import camera as camera_lib  # noqa: E402
from anifacegan_jax.rendering.compositing import composite_ray  # noqa: E402
from anifacegan_jax.rendering.manifolds import first_crossings, interpolate_at, manifold_levels  # noqa: E402
from anifacegan_jax.types import Camera, Latents  # noqa: E402
from records import write_record  # noqa: E402  (benchmarks/, beside this script)
from timing import compile_and_time, machine, matmul_peak  # noqa: E402


def flops(fn, *args) -> float:
  """FLOPs of fn's compiled program by XLA's cost analysis (0 when it reports none)."""
  analysis = fn.lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0))


def stages(model: AnimatableGenerator, variables, resolution: int, chunk: int):
  """[(name, jitted fn, args)] of the render's stages for one frontal image, inputs computed."""
  latents = jax.tree_util.tree_map(lambda x: x[0], Latents.dummy(1))
  latents = latents.replace(z_id=jax.random.normal(jax.random.key(1), (80,)),
                            z_exp=jax.random.normal(jax.random.key(2), (64,)),
                            noise=jax.random.normal(jax.random.key(3), (80,)))
  camera = Camera(pitch=jnp.full((), jnp.pi / 2), yaw=jnp.full((), jnp.pi / 2))
  rays = camera_lib.generate_rays(camera, resolution, model.fov_degrees, model.camera_radius)
  codes = jax.jit(lambda v, l: model.apply(v, l, method=AnimatableGenerator.codes))(
      variables, latents)
  x_t = camera_lib.sample_points(rays, camera_lib.sample_distances(model.near, model.far,
                                                                   model.num_samples))
  apply = functools.partial(model.apply, variables)

  deform = jax.jit(lambda x, c: apply(x, c, method=AnimatableGenerator.deform))
  delta = deform(x_t, codes)
  manifold = jax.jit(lambda x: apply(x, method=lambda m, x: m.manifold(x)))
  s = manifold(x_t + delta)
  levels = manifold_levels(model.levels_start, model.levels_end, model.num_levels)

  @jax.jit
  def crossings(s, x_t, delta):
    index, fraction, valid = jax.vmap(functools.partial(
        first_crossings, levels=levels, crossing=model.crossing, min_gap=model.min_gap))(s)
    x_star = jax.vmap(interpolate_at)(x_t, index, fraction)
    return x_star, x_star + jax.vmap(interpolate_at)(delta, index, fraction), valid

  x_star, canonical, valid = crossings(s, x_t, delta)
  background = camera_lib.background_points(rays, model.background_z)[:, None, :]
  points = jnp.concatenate([canonical, background], axis=1)
  radiance = jax.jit(lambda p, d, c: apply(p, d[:, None, :], c.radiance_freq, c.radiance_phase,
                                           method=lambda m, *a: m.radiance(*a)))
  rgb, sigma = radiance(points, rays.directions, codes)
  z = jnp.linalg.norm(jnp.concatenate([x_star, background], 1) - rays.origins[:, None], axis=-1)
  valid = jnp.concatenate([valid, jnp.ones_like(valid[:, :1])], axis=1)
  is_background = jnp.arange(points.shape[1]) == points.shape[1] - 1
  composite = jax.jit(jax.vmap(functools.partial(composite_ray, is_background=is_background,
                                                 delta=model.delta)))
  batched = jax.tree_util.tree_map(lambda x: x[None], latents)
  cameras = jax.tree_util.tree_map(lambda x: x[None], camera)
  draw = functools.partial(render, model, resolution=resolution, chunk_size=chunk)
  whole = jax.jit(lambda v, l, c: draw(v, l, c).image)

  def grad_of(remat):
    return jax.jit(jax.grad(lambda p, l, c: jnp.mean(draw({"params": p}, l, c, remat=remat).image)))

  def backward(fn, argnums):
    """fn's forward+backward: the gradient of the sum of its outputs w.r.t. `argnums`."""
    total = lambda *a: sum(jnp.sum(o) for o in jax.tree_util.tree_leaves(fn(*a)))
    return jax.jit(jax.grad(total, argnums=argnums))

  params_deform = lambda p, x, c: model.apply({"params": p}, x, c, method=AnimatableGenerator.deform)
  params_manifold = lambda p, x: model.apply({"params": p}, x, method=lambda m, x: m.manifold(x))
  params_radiance = lambda p, q, d, c: model.apply(
      {"params": p}, q, d[:, None, :], c.radiance_freq, c.radiance_phase,
      method=lambda m, *a: m.radiance(*a))
  params = variables["params"]
  return [("deformation network", deform, (x_t, codes)),
          ("manifold predictor", manifold, (x_t + delta,)),
          ("crossing search + interpolation", crossings, (s, x_t, delta)),
          ("radiance net", radiance, (points, rays.directions, codes)),
          ("compositing", composite, (rgb, sigma, z, valid)),
          ("deformation network fwd+bwd", backward(params_deform, (0, 1)), (params, x_t, codes)),
          ("manifold predictor fwd+bwd", backward(params_manifold, (0, 1)), (params, x_t + delta)),
          ("radiance net fwd+bwd", backward(params_radiance, (0, 1, 3)),
           (params, points, rays.directions, codes)),
          ("compositing fwd+bwd", backward(composite, (0, 1)), (rgb, sigma, z, valid)),
          ("whole render", whole, (variables, batched, cameras)),
          ("forward+backward (remat off)", grad_of(False), (variables["params"], batched, cameras)),
          ("forward+backward (remat on)", grad_of(True), (variables["params"], batched, cameras))]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--resolution", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--skip", default="", help="comma-separated stage names to leave out")
  parser.add_argument("--chunk", type=int, default=0, help="render's rays per chunk (0: default)")
  parser.add_argument("--sine", default="auto", choices=SINES, help="model.sine")
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  peak = matmul_peak()
  model = AnimatableGenerator(sine=args.sine)
  variables = init_generator(model, jax.random.key(0))
  rows = []
  skip = {s.strip() for s in args.skip.split(",") if s.strip()}
  for name, fn, fn_args in stages(model, variables, args.resolution, args.chunk):
    if name in skip:
      continue
    compile_s, seconds = compile_and_time(fn, *fn_args, repeats=args.repeats)
    work = flops(fn, *fn_args)
    rows.append(dict(stage=name, seconds=seconds, compile_s=compile_s, gflop=work / 1e9,
                     gflop_per_s=work / 1e9 / seconds, of_peak=work / 1e9 / seconds / peak))
    print(rows[-1], flush=True)
  total = sum(r["seconds"] for r in rows[:5])
  print(f"\nmatmul peak {peak:.1f} GFLOP/s; {args.resolution}² image, one call per stage\n")
  print("| stage | s | share of stages | GFLOP (XLA) | GFLOP/s | of peak | compile s |")
  print("|---|---|---|---|---|---|---|")
  for i, r in enumerate(rows):
    share = f"{r['seconds'] / total:.0%}" if i < 5 else "–"
    print(f"| {r['stage']} | {r['seconds']:.3f} | {share} | {r['gflop']:.1f} | "
          f"{r['gflop_per_s']:.1f} | {r['of_peak']:.0%} | {r['compile_s']:.1f} |")
  if args.out:
    write_record(args.out, dict(args=vars(args), matmul_peak_gflop_per_s=peak, stages=rows,
                                **machine()))


if __name__ == "__main__":
  main()
