"""3D imitation vs adversarial-only training: control accuracy of the generated faces.

  python benchmarks/imitation.py --recon=/tmp/recon_bench/run2 --workdir=/tmp/imitation_bench \
      --num_steps=600 --out=benchmarks/imitation_cpu.json

Trains the tiny SynthFaces config (`configs/synthface.py:tiny`) once per arm from the same seed:
`adversarial` (every imitation weight 0), `imitation` (L_Ch, L_3DMM, L_reg, L_smooth at the
config's weights) and `imitation_lm` (plus L_lm through the reconstruction network `--recon`).
Each run's EMA generator is then measured by `metrics.control.control_errors`: `--eval_num`
images from the prior's latents and the pose prior, read by the reconstruction network; the 3D
landmark error of S(ẑ) vs S(z) in mm, exp RMSE and pose error, next to the mean-face error of the
same latents (what a generator ignoring its codes scores), the network's own error on real
held-out SynthFaces, and the network-free `landmark_depth_mm` (generated depth at the landmarks'
pixels vs their true distance). Workdirs resume, so a killed benchmark goes on and a finished
one is only re-evaluated (its training wall time is kept in <arm>/train_wall_s.json).
Writes a JSON record.
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
import ml_collections
from absl import logging

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from anifacegan_jax import experiment  # noqa: E402
from anifacegan_jax import recon_training as rt  # noqa: E402
from anifacegan_jax.main import train as run_training  # noqa: E402
from anifacegan_jax.metrics import coefficients, control  # noqa: E402
from configs import synthface  # noqa: E402

TIMING_FILE = "train_wall_s.json"  # in each arm's workdir
ARMS = {
    "adversarial": dict(chamfer_weight=0.0, deform_weight=0.0, reg_weight=0.0, smooth_weight=0.0,
                        landmark_weight=0.0),
    "imitation": dict(landmark_weight=0.0),
    "imitation_lm": dict(landmark_weight=1e4),
}


def arm_config(arm: str, args) -> ml_collections.ConfigDict:
  config = synthface.get_config(getattr(args, "variant", "tiny"))
  config.dataset.data_dir = args.data_dir
  config.dataset.num_train = args.num_train
  config.num_steps = args.num_steps
  config.checkpoint_every = max(1, args.num_steps // 4)
  config.log_every = 50
  config.snapshot_every = args.num_steps
  for field, value in ARMS[arm].items():
    config.imitation[field] = value
  if config.imitation.landmark_weight > 0:
    config.recon = args.recon
  return config


def machine() -> dict:
  device = jax.devices()[0]
  return dict(platform=platform.platform(), cpu_count=os.cpu_count(),
              load_average=os.getloadavg(), jax=jax.__version__,
              device=f"{device.platform}:{getattr(device, 'device_kind', '')}",
              local_devices=jax.local_device_count())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--recon", required=True, help="a train_recon workdir (SynthFaces)")
  parser.add_argument("--workdir", default="/tmp/imitation_bench")
  parser.add_argument("--data_dir", default="", help="tfds data_dir ('' = tfds default)")
  parser.add_argument("--num_train", type=int, default=2048)
  parser.add_argument("--num_steps", type=int, default=600)
  parser.add_argument("--arms", default=",".join(ARMS))
  parser.add_argument("--eval_num", type=int, default=256)
  parser.add_argument("--eval_resolution", type=int, default=64)
  parser.add_argument("--out", default="benchmarks/imitation_cpu.json")
  args = parser.parse_args()
  logging.set_verbosity(logging.INFO)
  logging.set_stderrthreshold(logging.INFO)
  recon_model, recon_variables = rt.restore_recon(args.recon)
  recon_config = rt.restore_config(args.recon)
  face = coefficients.landmark_arrays(experiment.load_morphable_model(recon_config))
  evals = pathlib.Path(args.recon) / rt.EVAL_FILE
  record = dict(recon=dict(workdir=args.recon, model=recon_config.model.to_dict(),
                           test_metrics=json.loads(evals.read_text().splitlines()[-1])
                           if evals.exists() else None),
                num_steps=args.num_steps, eval_num=args.eval_num,
                eval_resolution=args.eval_resolution, arms={})
  for arm in args.arms.split(","):
    if arm not in ARMS:
      raise SystemExit(f"unknown arm {arm!r}: choose from {', '.join(ARMS)}")
    config = arm_config(arm, args)
    workdir = str(pathlib.Path(args.workdir) / arm)
    timing = pathlib.Path(workdir) / TIMING_FILE
    trained_before = timing.exists()
    start = time.time()
    run_training(config, workdir)
    if not trained_before:  # the wall time of the run that trained it, kept for re-evaluations
      timing.write_text(json.dumps(dict(train_wall_s=round(time.time() - start, 1))))
    train_s = json.loads(timing.read_text())["train_wall_s"]
    run = experiment.load_run(workdir)
    start = time.time()
    metrics = control.control_errors(
        run.generator, {"params": run.ema_params}, run.prior, recon_model, recon_variables, face,
        key=jax.random.key(1234), num=args.eval_num, resolution=args.eval_resolution,
        chunk_size=config.chunk_size, yaw_std=config.camera.yaw_std,
        pitch_std=config.camera.pitch_std, clamp=config.camera.clamp)
    record["arms"][arm] = dict(control=metrics, train_wall_s=train_s,
                               eval_wall_s=round(time.time() - start, 1),
                               imitation=config.imitation.to_dict())
    print(arm, json.dumps(metrics), flush=True)
  record.update(machine=machine(), date=time.strftime("%Y-%m-%d"))
  pathlib.Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
  main()
