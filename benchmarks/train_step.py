"""Training-step throughput and a short real training stretch on SynthFaces.

  python benchmarks/train_step.py --resolutions=32,64,128 --out=benchmarks/train_step.json
  python benchmarks/train_step.py --resolutions= --train_seconds=240 --train_resolution=64

Part 1 times the discriminator step (fakes rendered without gradient, D forward/backward with R1)
and the generator step (rematerialised render + D, `batch_split` sub-batches) separately, pmapped
over the local devices, and reports images/s per step and the peak device memory.
Part 2 trains the full model with the full `train_step` for `--train_seconds` on SynthFaces images
rendered in-process (no tfds needed), logging losses, and writes a sample grid.
Uses only jax/flax/optax/numpy/pillow, so it runs on a bare accelerator image.
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from anifacegan_jax import curriculum  # noqa: E402
from anifacegan_jax import train_step as ts  # noqa: E402
from anifacegan_jax.models.discriminator import Discriminator  # noqa: E402
from anifacegan_jax.models.generator import AnimatableGenerator, render  # noqa: E402
from anifacegan_jax.models.priors import GaussianPrior, sample_latents  # noqa: E402
from anifacegan_jax.synthfaces import procedural, synthetic  # noqa: E402
from anifacegan_jax.types import Batch, Camera  # noqa: E402
from configs import default  # noqa: E402
from timing import compile_and_time  # noqa: E402  (benchmarks/, beside this script)

# The step of the adversarial loss alone (configs/default.py's settings otherwise).
IMITATION_OFF = dict(chamfer_weight=0.0, deform_weight=0.0, reg_weight=0.0, smooth_weight=0.0)


def _peak_gib():
  stats = jax.local_devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / 2**30


def _setup(resolution, per_device_batch, batch_split, prior=None):
  generator, discriminator = AnimatableGenerator(), Discriminator(resolution)
  g_tx, d_tx = ts.make_optimizers()
  state = ts.create_state(jax.random.key(0), generator, discriminator, g_tx, d_tx, prior)
  cfg = curriculum.step_config(default.get_config(), resolution=resolution,
                               per_device_batch=per_device_batch, batch_split=batch_split,
                               **IMITATION_OFF)
  return generator, discriminator, g_tx, d_tx, state, cfg


def bench_steps(resolution, per_device_batch, batch_split, repeats):
  generator, discriminator, g_tx, d_tx, state, cfg = _setup(resolution, per_device_batch,
                                                            batch_split)
  devices = jax.local_device_count()
  batch = Batch.dummy(devices * per_device_batch, resolution)
  batch = jax.tree_util.tree_map(lambda x: x.reshape((devices, per_device_batch) + x.shape[1:]),
                                 batch)
  key = ts.replicate(jax.random.key(1))
  replicated = ts.replicate(state)
  d_fn = jax.pmap(functools.partial(ts.d_step, generator=generator, discriminator=discriminator,
                                    d_tx=d_tx, cfg=cfg), axis_name=ts.AXIS)
  g_fn = jax.pmap(functools.partial(ts.g_step, generator=generator, discriminator=discriminator,
                                    g_tx=g_tx, cfg=cfg), axis_name=ts.AXIS)
  d_compile, d_seconds = compile_and_time(d_fn, replicated, batch, key, repeats=repeats)
  g_compile, g_seconds = compile_and_time(g_fn, replicated, key, repeats=repeats)
  images = devices * per_device_batch
  record = dict(resolution=resolution, devices=devices, per_device_batch=per_device_batch,
                batch_split=batch_split, d_compile_s=d_compile, g_compile_s=g_compile, d_step_s=d_seconds, g_step_s=g_seconds,
                d_images_per_s=images / d_seconds, g_images_per_s=images / g_seconds,
                iteration_images_per_s=images / (d_seconds + g_seconds), peak_gib=_peak_gib(),
                device=jax.devices()[0].device_kind, jax=jax.__version__)
  print(json.dumps(record), flush=True)
  return record


def synthfaces(num, resolution):
  """(num, R, R, 3) images in [-1, 1], poses (num, 2) and coefficients (num, 257)."""
  model = procedural.load_procedural()
  examples = [synthetic.generate(model, "train", i, resolution) for i in range(num)]
  images = np.stack([e["image"] for e in examples]).astype(np.float32) / 127.5 - 1.0
  return images, np.stack([e["pose"] for e in examples]), np.stack([e["coefficients"] for e in examples])


def train_stretch(resolution, per_device_batch, batch_split, seconds, num_images, out_dir):
  start_data = time.perf_counter()
  images, poses, coefficients = synthfaces(num_images, resolution)
  data_seconds = time.perf_counter() - start_data
  prior = GaussianPrior.fit(coefficients[:, :80], coefficients[:, 80:144])
  generator, discriminator, g_tx, d_tx, state, cfg = _setup(resolution, per_device_batch,
                                                            batch_split, prior)
  p_step = ts.make_train_step(generator, discriminator, g_tx, d_tx, cfg)
  devices = jax.local_device_count()
  replicated, key = ts.replicate(state), ts.replicate(jax.random.key(2))
  rng = np.random.default_rng(0)
  log, step, begin = [], 0, time.perf_counter()
  while time.perf_counter() - begin < seconds:
    pick = rng.integers(0, num_images, devices * per_device_batch)
    shape = lambda x: x.reshape((devices, per_device_batch) + x.shape[1:])
    batch = Batch(image=shape(images[pick]), pose=shape(poses[pick]),
                  coefficients=shape(coefficients[pick]),
                  landmarks=np.zeros((devices, per_device_batch, 68, 2), np.float32))
    replicated, metrics = p_step(replicated, batch, key)
    step += 1
    if step % 50 == 0 or step == 1:
      m = {k: float(v[0]) for k, v in jax.device_get(metrics).items()}
      m.update(step=step, seconds=time.perf_counter() - begin)
      log.append(m)
      print(json.dumps({k: round(v, 4) for k, v in m.items()}), flush=True)
  jax.block_until_ready(replicated)
  host = ts.unreplicate(replicated)
  latents = sample_latents(prior, jax.random.key(3), 8)
  grid = render(generator, {"params": host.ema_params}, latents, Camera.frontal(8),
                resolution=resolution, lock_view=True).image
  grid = np.concatenate(list(np.asarray((jnp.clip(grid, -1, 1) + 1) * 127.5).astype(np.uint8)), 1)
  real = np.concatenate(list(((images[:8] + 1) * 127.5).astype(np.uint8)), 1)
  Image.fromarray(np.concatenate([real, grid], 0)).save(out_dir / f"train_stretch_{resolution}.png")
  summary = dict(resolution=resolution, steps=step, seconds=seconds, data_seconds=data_seconds,
                 iterations_per_s=step / (time.perf_counter() - begin), log=log,
                 device=jax.devices()[0].device_kind)
  return summary


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--resolutions", default="32,64,128")
  parser.add_argument("--per_device_batch", type=int, default=4)
  parser.add_argument("--batch_split", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--train_seconds", type=float, default=0.0)
  parser.add_argument("--train_resolution", type=int, default=64)
  parser.add_argument("--train_images", type=int, default=1024)
  parser.add_argument("--out", default="benchmarks/train_step.json")
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  result = dict(steps=[], stretch=None)
  for resolution in [int(r) for r in args.resolutions.split(",") if r]:
    result["steps"].append(bench_steps(resolution, args.per_device_batch, args.batch_split,
                                       args.repeats))
    out.write_text(json.dumps(result, indent=1))
  if args.train_seconds > 0:
    result["stretch"] = train_stretch(args.train_resolution, args.per_device_batch,
                                      args.batch_split, args.train_seconds, args.train_images,
                                      out.parent)
  out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
