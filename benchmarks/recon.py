"""Train the small reconstruction network on SynthFaces and report its held-out accuracy.

  python benchmarks/recon.py --workdir=/tmp/recon_bench/run --data_dir=/tmp/recon_bench/tfds \
      --num_steps=3000 --out=benchmarks/recon_cpu.json

Trains `configs/recon.py` (narrow ResNet-18, 64², 20k training faces; flags override the step
count, batch and width) with `recon_training.train_and_evaluate` and writes a JSON record:
the test-split metrics at every evaluation (exp RMSE in coefficient units, 3D landmark error of
landmarks 17-67 in mm), the mean-face baseline (predicting zeros for id/exp/angle), the landmark
error with only the predicted id or only the predicted exp (the other part true), steps, wall
times (dataset rendering separately) and the machine. Acceptance of issue #5: exp RMSE < 0.3 and
landmark error < 2 mm on the held-out split. A workdir is resumed, so a killed run can go on.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

import jax
import jax.numpy as jnp
from absl import logging

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from anifacegan_jax import experiment  # noqa: E402
from anifacegan_jax import recon_training as rt  # noqa: E402
from anifacegan_jax.data import datasets  # noqa: E402
from anifacegan_jax.metrics import coefficients as cm  # noqa: E402
from configs import recon as recon_config  # noqa: E402


def _machine() -> dict:
  device = jax.devices()[0]
  return dict(platform=platform.platform(), processor=platform.processor() or platform.machine(),
              cpu_count=os.cpu_count(), load_average=os.getloadavg(), jax=jax.__version__,
              device=f"{device.platform}:{getattr(device, 'device_kind', '')}")


def baseline(builder, arrays) -> dict:
  """Metrics of the mean face (zero id/exp/angle) on the test split: what the net must beat."""
  target = jnp.asarray(datasets.coefficient_table(builder, "test"))
  return cm.summarize_errors(jax.device_get(
      cm.per_example_errors(jnp.zeros_like(target), target, arrays)))


def error_split(workdir: str, builder, arrays, resolution: int) -> dict:
  """Landmark mm of the trained net with only its id (true exp) or only its exp (true id)."""
  model, variables = rt.restore_recon(workdir)
  pred, target = rt.predict(model, variables, builder, resolution)
  out = {}
  for name, part in (("id_only", cm.ID), ("exp_only", cm.EXP)):
    mixed = target.copy()
    mixed[:, part] = pred[:, part]
    errors = cm.per_example_errors(jnp.asarray(mixed), jnp.asarray(target), arrays)
    out[f"landmark_mm_{name}"] = cm.summarize_errors(jax.device_get(errors))["landmark_mm"]
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="/tmp/recon_bench/run")
  parser.add_argument("--data_dir", default="", help="tfds data_dir ('' = tfds default)")
  parser.add_argument("--num_steps", type=int, default=None)
  parser.add_argument("--batch_size", type=int, default=None)
  parser.add_argument("--width", type=int, default=None)
  parser.add_argument("--lr", type=float, default=None)
  parser.add_argument("--eval_every", type=int, default=None)
  parser.add_argument("--out", default="benchmarks/recon_cpu.json")
  args = parser.parse_args()
  logging.set_verbosity(logging.INFO)  # progress lines of the training loop on stderr
  logging.set_stderrthreshold(logging.INFO)
  config = recon_config.get_config()
  config.dataset.data_dir = args.data_dir
  for field, value in (("num_steps", args.num_steps), ("batch_size", args.batch_size),
                       ("eval_every", args.eval_every)):
    if value is not None:
      config[field] = value
  if args.width is not None:
    config.model.width = args.width
  if args.lr is not None:
    config.optim.lr = args.lr

  start = time.time()
  # renders SynthFaces on first use (≈ 20 ms/example/core)
  builder = datasets.make_builder(rt.synthfaces_config(config))
  prepare_s = time.time() - start
  mean_face = baseline(builder, cm.landmark_arrays(experiment.load_morphable_model(config)))
  print("mean-face baseline:", json.dumps(mean_face), flush=True)
  start = time.time()
  state, metrics = rt.train_and_evaluate(config, args.workdir)
  train_s = time.time() - start
  arrays = cm.landmark_arrays(experiment.load_morphable_model(config))
  split = error_split(args.workdir, builder, arrays, config.model.input_size)
  evals = [json.loads(line) for line in
           (pathlib.Path(args.workdir) / rt.EVAL_FILE).read_text().splitlines()]
  record = dict(
      final=metrics, steps=int(state.step), batch_size=config.batch_size,
      examples_seen=int(state.step) * config.batch_size, train_wall_s=round(train_s, 1),
      dataset_prepare_s=round(prepare_s, 1), evals=evals, mean_face_baseline=mean_face,
      error_split=split,
      accepted=bool(metrics["exp_rmse"] < 0.3 and metrics["landmark_mm"] < 2.0),
      config=json.loads(config.to_json()), machine=_machine(),
      date=time.strftime("%Y-%m-%d"))
  print(json.dumps({k: record[k] for k in ("final", "steps", "train_wall_s", "accepted")}))
  pathlib.Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
  main()
