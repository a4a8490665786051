"""Generator throughput: images/s of the forward render and of forward+backward, and peak memory.

  python benchmarks/render.py --resolutions=32,64,128 --batch=4 --out=benchmarks/render.json

Writes one JSON record per (resolution, mode) to --out and prints a Markdown table for
BENCHMARKS.md. Compile time is reported apart from the run time (median of --repeats calls after a warm-up,
each waited for with `block_until_ready`).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform

import jax
import jax.numpy as jnp

from anifacegan_jax.models.generator import AnimatableGenerator, init_generator, render
from anifacegan_jax.models.layers import SINES
from anifacegan_jax.rendering.camera import sample_camera
from anifacegan_jax.types import Latents
from timing import compile_and_time


def _latents(key, batch):
  k1, k2, k3 = jax.random.split(key, 3)
  return Latents(z_id=jax.random.normal(k1, (batch, 80)), z_exp=jax.random.normal(k2, (batch, 64)),
                 noise=jax.random.normal(k3, (batch, 80)))


SKIP = {"auto": None, "on": True, "off": False}  # --skip_invalid → render(skip_invalid=)
SKIP_NAMES = {v: k for k, v in SKIP.items()}


def _peak_bytes():
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def bench(resolution: int, batch: int, chunk: int, repeats: int, sine: str,
          skip_invalid: bool | None = None, remat: bool = True) -> list[dict]:
  model = AnimatableGenerator(sine=sine)
  variables = init_generator(model, jax.random.key(0))
  latents = _latents(jax.random.key(1), batch)
  camera = sample_camera(jax.random.key(2), batch, yaw_std=0.3, pitch_std=0.155, clamp=1.3)
  draw = functools.partial(render, model, resolution=resolution, chunk_size=chunk,
                           skip_invalid=skip_invalid)
  forward = jax.jit(lambda v, l, c: draw(v, l, c).image)

  def loss(params, l, c):
    out = draw({"params": params}, l, c, remat=remat)
    return jnp.mean(out.image) + jnp.mean(out.depth)

  backward = jax.jit(jax.grad(loss))
  records = []
  for mode, fn, args in (("forward", forward, (variables, latents, camera)),
                         ("forward+backward", backward, (variables["params"], latents, camera))):
    compile_s, seconds = compile_and_time(fn, *args, repeats=repeats)
    records.append(dict(resolution=resolution, batch=batch, chunk=chunk, sine=sine, mode=mode,
                        skip_invalid=SKIP_NAMES[skip_invalid], remat=remat,
                        compile_s=compile_s, seconds_per_batch=seconds, images_per_second=batch / seconds,
                        peak_bytes=_peak_bytes(), device=jax.devices()[0].device_kind,
                        backend=jax.default_backend(), jax=jax.__version__,
                        host=platform.node()))
    print(json.dumps(records[-1]), flush=True)
  return records


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--resolutions", default="32,64")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--chunk", type=int, default=0, help="0: render's default")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--sine", default="auto", choices=SINES, help="model.sine")
  parser.add_argument("--skip_invalid", default="auto", choices=tuple(SKIP),
                      help="radiance only at valid points (auto: render's default, on the CPU)")
  parser.add_argument("--remat", action=argparse.BooleanOptionalAction, default=True,
                      help="rematerialise each chunk in the forward+backward mode (as training)")
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  records = []
  for resolution in (int(r) for r in args.resolutions.split(",")):
    records += bench(resolution, args.batch, args.chunk, args.repeats, args.sine,
                     SKIP[args.skip_invalid], args.remat)
  print("\n| device | res | batch | mode | images/s | compile s | peak GiB |\n"
        "|---|---|---|---|---|---|---|")
  for r in records:
    peak = f"{r['peak_bytes'] / 2**30:.2f}" if r["peak_bytes"] else "n/a"
    print(f"| {r['device']} | {r['resolution']}² | {r['batch']} | {r['mode']} | "
          f"{r['images_per_second']:.2f} | {r['compile_s']:.1f} | {peak} |")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(records, f, indent=1)


if __name__ == "__main__":
  main()
