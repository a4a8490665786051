"""3D imitation vs adversarial-only at 64² on an accelerator, with no tf/tfds/clu/configs.

  python benchmarks/recon_device.py --resolution=64 ... --workdir=$OUT/recon --out=$OUT/recon.json
  python benchmarks/imitation_device.py --recon=$OUT/recon --steps=2000 --out=$OUT/imitation.json

The device-side twin of `benchmarks/imitation.py` (which trains through tfds and the training
loop): renders `--num_images` SynthFaces in-process, fits the Gaussian prior to their
coefficients, and trains the full-size generator with the full pmapped `train_step` for `--steps`
iterations per arm from the same seed: `adversarial` (no imitation), `imitation` (L_Ch, L_3DMM,
L_reg, L_smooth at the config defaults) and `imitation_lm` (plus L_lm through the reconstruction
network `--recon`, a workdir of `benchmarks/recon_device.py` or `train_recon`). Each arm's EMA
generator is measured by `metrics.control.control_errors` (landmark error of S(ẑ) vs S(z) in mm
through the network, exp RMSE, pose error, and the network-free landmark depth error) and writes
a sample row. `--tiny` shrinks the networks for a CPU smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from anifacegan_jax import curriculum  # noqa: E402
from anifacegan_jax import recon_step  # noqa: E402
from anifacegan_jax import train_step as ts  # noqa: E402
from anifacegan_jax.metrics import coefficients, control  # noqa: E402
from anifacegan_jax.models.discriminator import Discriminator  # noqa: E402
from anifacegan_jax.models.generator import AnimatableGenerator, render  # noqa: E402
from anifacegan_jax.models.priors import GaussianPrior, sample_latents  # noqa: E402
from anifacegan_jax.synthfaces import procedural, synthetic  # noqa: E402
from anifacegan_jax.types import Batch, Camera  # noqa: E402
from configs import default  # noqa: E402

# configs/default.py's step settings, its imitation weights on or off; imitation_lm adds L_lm at 1e4.
CAMERA = default.get_config().camera.to_dict()  # the pose prior of every arm and of control
OFF = dict(chamfer_weight=0.0, deform_weight=0.0, reg_weight=0.0, smooth_weight=0.0)
ARMS = {"adversarial": OFF, "imitation": {}, "imitation_lm": dict(landmark_weight=1e4)}
TINY = dict(radiance_hidden=32, manifold_hidden=32, deform_hidden=32, num_samples=16,
            num_levels=6)

def synthfaces(num: int, resolution: int, workers: int):
  """Images in [-1, 1] (num, R, R, 3), poses (num, 2), coefficients (num, 257)."""
  data = synthetic.generate_many("train", num, resolution, workers)
  return (data["image"].astype(np.float32) / 127.5 - 1.0, data["pose"], data["coefficients"])


def train_arm(arm, args, data, prior, teachers, recon):
  images, poses, coeffs = data
  generator = AnimatableGenerator(**(TINY if args.tiny else {}))
  discriminator = Discriminator(args.resolution, max_channels=64 if args.tiny else 400)
  g_tx, d_tx = ts.make_optimizers()
  state = ts.create_state(jax.random.key(0), generator, discriminator, g_tx, d_tx, prior)
  cfg = curriculum.step_config(default.get_config(), resolution=args.resolution,
                               per_device_batch=args.per_device_batch,
                               batch_split=args.batch_split, chunk_size=args.chunk_size,
                               imitation_points=args.points, **ARMS[arm])
  p_step = ts.make_train_step(generator, discriminator, g_tx, d_tx, cfg,
                              recon=recon if cfg.uses_recon else None)
  arm_teachers = ts.Teachers(face=teachers.face if cfg.uses_face_model else None,
                             recon=teachers.recon if cfg.uses_recon else None)
  devices = jax.local_device_count()
  replicated = ts.replicate(state)
  key = ts.replicate(jax.random.key(2))
  rng = np.random.default_rng(0)  # the same real batches for every arm
  shape = lambda x: x.reshape((devices, args.per_device_batch) + x.shape[1:])
  log, begin = [], time.perf_counter()
  for step in range(1, args.steps + 1):
    pick = rng.integers(0, len(images), devices * args.per_device_batch)
    batch = Batch(image=shape(images[pick]), pose=shape(poses[pick]),
                  coefficients=shape(coeffs[pick]),
                  landmarks=np.zeros((devices, args.per_device_batch, 68, 2), np.float32))
    replicated, metrics = p_step(replicated, batch, key, arm_teachers)
    if step % 100 == 0 or step == 1:
      m = {k: round(float(v[0]), 6) for k, v in jax.device_get(metrics).items()}
      m.update(step=step, seconds=round(time.perf_counter() - begin, 1))
      log.append(m)
      print(arm, json.dumps(m), flush=True)
  jax.block_until_ready(replicated)
  seconds = time.perf_counter() - begin
  return generator, ts.unreplicate(replicated), log, seconds


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--recon", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--resolution", type=int, default=64)
  parser.add_argument("--num_images", type=int, default=4096)
  parser.add_argument("--steps", type=int, default=2000)
  parser.add_argument("--per_device_batch", type=int, default=4)
  parser.add_argument("--batch_split", type=int, default=4)
  parser.add_argument("--chunk_size", type=int, default=4096)
  parser.add_argument("--points", type=int, default=1024)
  parser.add_argument("--arms", default=",".join(ARMS))
  parser.add_argument("--eval_num", type=int, default=256)
  parser.add_argument("--workers", type=int, default=os.cpu_count())
  parser.add_argument("--tiny", action="store_true", help="tiny networks (CPU smoke run)")
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)

  start = time.perf_counter()
  data = synthfaces(args.num_images, args.resolution, args.workers)
  render_s = time.perf_counter() - start
  prior = GaussianPrior.fit(data[2][:, :80], data[2][:, 80:144])
  recon, recon_variables, recon_config = recon_step.load_trained(args.recon)
  face = procedural.load_procedural()
  teachers = ts.Teachers(face=face.arrays(), recon=recon_variables)
  teachers = ts.Teachers(face=ts.replicate(teachers.face), recon=ts.replicate(teachers.recon))
  record = dict(recon=dict(workdir=args.recon, model=recon_config["model"]),
                args=vars(args), render_s=round(render_s, 1), arms={},
                device=jax.devices()[0].device_kind, jax=jax.__version__,
                date=time.strftime("%Y-%m-%d"))
  rows = []
  for arm in args.arms.split(","):
    generator, host, log, seconds = train_arm(arm, args, data, prior, teachers, recon)
    start = time.perf_counter()
    metrics = control.control_errors(
        generator, {"params": host.ema_params}, host.prior, recon, recon_variables,
        coefficients.landmark_arrays(face), key=jax.random.key(1234), num=args.eval_num,
        resolution=args.resolution, chunk_size=args.chunk_size, **CAMERA)
    record["arms"][arm] = dict(control=metrics, train_s=round(seconds, 1),
                               iterations_per_s=round(args.steps / seconds, 2),
                               eval_s=round(time.perf_counter() - start, 1), log=log)
    print(arm, json.dumps(metrics), flush=True)
    latents = sample_latents(host.prior, jax.random.key(3), 8)
    image = render(generator, {"params": host.ema_params}, latents, Camera.frontal(8),
                   resolution=args.resolution, chunk_size=args.chunk_size, lock_view=True).image
    rows.append(np.concatenate(list(np.asarray((jnp.clip(image, -1, 1) + 1) * 127.5)
                                    .astype(np.uint8)), 1))
    out.write_text(json.dumps(record, indent=1) + "\n")
  Image.fromarray(np.concatenate(rows, 0)).save(out.with_suffix(".png"))


if __name__ == "__main__":
  main()
