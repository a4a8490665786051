"""Do the radiance manifolds survive training? Short ablation runs of the training changes.

  python benchmarks/manifolds.py --workdir=/tmp/manifolds --data_dir=/tmp/manifolds_tfds \
      --arms=depth_gradient,baseline --num_steps=600 --out=benchmarks/manifolds_cpu.json \
      --figure=docs/manifolds_cpu.png

Each arm is `configs/synthface.py:<variant>` (tiny by default) with a few config overrides
(`ARMS` below, or `--set=field=value` for all arms), trained from the same seed with
`main.train` (the training command's loop) on every local device (run without the fake-device flag for one
CPU device). The training log's `crossings` (fraction of ray-manifold crossings found) and
`foreground` (1 − the background plane's weight) and the losses are read back from the run's
TensorBoard events at every `--log_every` steps; at the end the EMA generator renders fixed
identities from three yaws with their depth (figure), its `evaluation.geometry` is measured, and
the variety of its identities (`spread`: per-pixel standard deviation over 64 identities at the
frontal camera, against the 64 most frontal training images; identities that all look alike
give a low ratio).
Workdirs resume: a finished arm is only re-read. Writes a JSON record.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from anifacegan_jax import checkpointing, evaluation, experiment, sampling  # noqa: E402
from anifacegan_jax.main import train as run_training  # noqa: E402
from anifacegan_jax.models.generator import render  # noqa: E402
from anifacegan_jax.models.priors import sample_latents  # noqa: E402
from anifacegan_jax.types import Camera  # noqa: E402
from configs import synthface  # noqa: E402
import imitation  # noqa: E402  (the machine record)

# Each arm changes one thing against `baseline` (the config as committed).
ARMS = {
    "baseline": {},
    "depth_gradient": {"model.depth_gradient": True},  # z with gradient (the code before)
    "manifold_lr_0.1": {"optim.manifold_lr": 2e-6},  # GRAM CARLA: 0.1 × g_lr
    "manifold_lr_0.1_d128": {"optim.manifold_lr": 2e-6,  # and a discriminator twice as wide
                             "discriminator.max_channels": 128},
    "manifold_lr_0.1_d256": {"optim.manifold_lr": 2e-6, "discriminator.max_channels": 256},
    "adversarial": {"imitation.chamfer_weight": 0.0, "imitation.deform_weight": 0.0,
                    "imitation.reg_weight": 0.0, "imitation.smooth_weight": 0.0},  # GRAM alone
}
LOGGED = ("crossings", "foreground", "chamfer", "deform_imitation", "g_adv", "d_real", "d_fake",
          "g_pose", "r1")


def parse_value(text: str):
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  return {"true": True, "false": False}.get(text.lower(), text)


def arm_config(overrides: dict, args):
  config = synthface.get_config(args.variant)
  config.dataset.data_dir = args.data_dir
  config.dataset.num_train = args.num_train
  config.num_steps = args.num_steps
  config.log_every = args.log_every
  config.checkpoint_every = args.num_steps
  config.snapshot_every = args.num_steps
  for field, value in {**dict(args.set), **overrides}.items():
    node = config
    *parents, leaf = field.split(".")
    for name in parents:  # 'stages.0.per_device_batch' indexes the stage list
      node = node[int(name)] if name.isdigit() else node[name]
    node[leaf] = value
  for name in ("g_lr", "deform_lr", "manifold_lr"):  # compresses time; ratios kept
    config.optim[name] *= args.lr_scale
  return config


def read_scalars(workdir: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value)]} from the run's TensorBoard event files."""
  import tensorflow as tf
  scalars: dict[str, list] = {}
  for path in sorted(pathlib.Path(workdir).glob("events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.tag in LOGGED:
          number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
          scalars.setdefault(value.tag, []).append((int(event.step), number))
  return {k: sorted(dict(v).items()) for k, v in scalars.items()}


def spread(run: experiment.Run, config, num: int = 64) -> dict[str, float]:
  """Variety of the identities: the per-pixel standard deviation over `num` images (0-255
  units, mean over pixels and channels) of generated images at the frontal camera (prior
  latents, ψ = 1) and of the `num` most frontal of the first 1,024 training images. A generator
  whose identities all look alike has a low ratio (pose does not count: one camera)."""
  import tensorflow_datasets as tfds
  from anifacegan_jax.data import datasets, input_pipeline
  resolution = int(config.stages[0].resolution)
  latents = sample_latents(run.prior, jax.random.key(11), num)
  out = jax.jit(lambda p: render(run.generator, {"params": p}, latents, Camera.frontal(num),
                                 resolution=resolution, chunk_size=1024, lock_view=True))(
                                     run.ema_params)
  fake = sampling.to_uint8(out.image)
  ds = datasets.make_builder(config).as_dataset(split="train", shuffle_files=False).take(1024)
  examples = list(tfds.as_numpy(ds.map(lambda ex: input_pipeline.preprocess(ex, resolution))))
  off = np.array([np.abs(np.asarray(e["pose"]) - np.pi / 2).sum() for e in examples])
  real = sampling.to_uint8(np.stack([examples[i]["image"] for i in np.argsort(off)[:num]]))
  std = lambda x: float(np.mean(np.std(x.astype(np.float64), axis=0)))
  return dict(fake=std(fake), real=std(real), ratio=std(fake) / std(real))


def picture(run: experiment.Run, num: int = 4, resolution: int = 32) -> np.ndarray:
  """uint8 (2·num·R, 3·R, 3): rows of identities (ψ = 1, neutral) at yaw −0.35, 0, 0.35, each
  row above its depth (white = near 0.88, black = far 1.12)."""
  latents = jax.tree_util.tree_map(
      lambda x: jnp.repeat(x, 3, axis=0),
      sample_latents(run.prior, jax.random.key(7), num).replace(
          z_exp=jnp.zeros((num, 64))))
  yaws = jnp.tile(jnp.pi / 2 + jnp.asarray([-0.35, 0.0, 0.35]), num)
  camera = Camera(pitch=jnp.full_like(yaws, jnp.pi / 2), yaw=yaws)
  out = jax.jit(lambda p: render(run.generator, {"params": p}, latents, camera,
                                 resolution=resolution, chunk_size=1024, lock_view=True))(
                                     run.ema_params)
  image = sampling.to_uint8(out.image)
  depth = np.clip((run.generator.far - np.asarray(out.depth))
                  / (run.generator.far - run.generator.near), 0, 1)
  depth = np.repeat((depth * 255).round().astype(np.uint8)[..., None], 3, axis=-1)
  rows = []
  for i in range(num):
    rows.append(np.concatenate(list(image[3 * i:3 * i + 3]), axis=1))
    rows.append(np.concatenate(list(depth[3 * i:3 * i + 3]), axis=1))
  return np.concatenate(rows, axis=0)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="/tmp/manifolds")
  parser.add_argument("--data_dir", default="", help="tfds data_dir ('' = tfds default)")
  parser.add_argument("--variant", default="tiny")
  parser.add_argument("--num_train", type=int, default=2048)
  parser.add_argument("--num_steps", type=int, default=600)
  parser.add_argument("--log_every", type=int, default=50)
  parser.add_argument("--lr_scale", type=float, default=1.0,
                      help="multiplies the generator's three learning rates (after the arm's)")
  parser.add_argument("--arms", default="baseline,depth_gradient")
  parser.add_argument("--set", action="append", default=[], type=lambda s: (
      s.split("=", 1)[0], parse_value(s.split("=", 1)[1])),
                      help="field=value applied to every arm (repeatable)")
  parser.add_argument("--out", default="benchmarks/manifolds_cpu.json")
  parser.add_argument("--figure", default="", help="PNG: each arm's final samples and depth")
  args = parser.parse_args()
  logging.set_verbosity(logging.INFO)
  out = pathlib.Path(args.out)
  record = json.loads(out.read_text()) if out.exists() else {}
  record.setdefault("arms", {})
  panels = []
  for arm in args.arms.split(","):
    if arm not in ARMS:
      raise SystemExit(f"unknown arm {arm!r}: choose from {', '.join(ARMS)}")
    config = arm_config(ARMS[arm], args)
    workdir = str(pathlib.Path(args.workdir) / arm)
    finished = checkpointing.latest_step(workdir) == args.num_steps
    start = time.time()
    run_training(config, workdir)
    wall = round(time.time() - start, 1)
    if finished:  # only re-read: keep the wall time of the run that trained it
      wall = record["arms"].get(arm, {}).get("wall_s")
    run = experiment.load_run(workdir)
    geometry = evaluation.geometry(run, evaluation.Settings(metrics=("geometry",)),
                                   int(config.stages[0].resolution))
    entry = dict(overrides={**dict(args.set), **ARMS[arm]}, lr_scale=args.lr_scale,
                 num_steps=args.num_steps,
                 variant=args.variant, devices=jax.local_device_count(),
                 per_device_batch=int(config.stages[0].per_device_batch), wall_s=wall,
                 curves=read_scalars(workdir), geometry=geometry, spread=spread(run, config))
    record["arms"][arm] = entry
    last = {k: v[-1][1] for k, v in entry["curves"].items()}
    print(arm, json.dumps(dict(geometry=geometry, spread=entry["spread"], last=last,
                               wall_s=wall)), flush=True)
    panels.append(picture(run))
  record.update(machine=imitation.machine(), date=time.strftime("%Y-%m-%d"))
  out.write_text(json.dumps(record, indent=1) + "\n")
  if args.figure:
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    grid = np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)
    Image.fromarray(np.kron(grid, np.ones((2, 2, 1), np.uint8))).save(args.figure)


if __name__ == "__main__":
  main()
