"""A fresh deformation network fitted alone (Eq. 8-11) on a chosen expression distribution: which
expressions can it learn, at which rate? The probes of BENCHMARKS.md "Why control stays at chance".

  python benchmarks/deformation_probe.py --pretrained=M --steps=3000 --out=J            # the run's prior
  python benchmarks/deformation_probe.py --pretrained=M --steps=3000 --drop=0 --out=J   # no jaw_open
  python benchmarks/deformation_probe.py --pretrained=M --steps=1500 --only=8 --out=J   # blink_left alone

The field is new (the run's width), fitted by `warmup.fit_deformation` (`--batch` 8, the
config's query points (`--points`) and weights, Adam with the config's clip and β2; `--lr`,
`--b1`, `--exp_scale`). The expressions:
the run's prior (default); a Gaussian fitted to SynthFaces' own expression sampler with the
`--drop` columns zeroed; or `--only=k`: column k ~ U(0, 1), the rest 0. Identities: the run's
prior. Reported: Eq. 9's ratio on 64 samples of that distribution, and
`deformation_fit.field_gains` on 128 (which coefficients the field reproduces).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # records.py, beside this script
from anifacegan_jax import curriculum, experiment, warmup  # noqa: E402
from anifacegan_jax import train_step as ts  # noqa: E402
from anifacegan_jax.models.generator import init_generator  # noqa: E402
from anifacegan_jax.models.priors import GaussianPrior  # noqa: E402
from anifacegan_jax.synthfaces import procedural  # noqa: E402

import deformation_fit  # noqa: E402  (benchmarks/, beside this script)
from records import write_record  # noqa: E402  (benchmarks/, beside this script)


def expression_prior(run, drop: list[int], only: int | None, num: int = 4096):
  """The prior of the probe (module docstring); the run's own when neither option is given."""
  if not drop and only is None:
    return run.prior
  rng = np.random.default_rng(0)
  ids = np.asarray(run.prior.sample_id(jax.random.key(5), num), np.float32)
  if only is not None:
    exp = np.zeros((num, 64), np.float32)
    exp[:, only] = rng.uniform(0.0, 1.0, num)
  else:
    exp = procedural.sample_expressions(rng, num).astype(np.float32)
    exp[:, drop] = 0.0
  return GaussianPrior.fit(ids, exp)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pretrained", required=True, help="model folder or a shipped name")
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--lr", type=float, default=None, help="default: the config's deform_lr")
  parser.add_argument("--b1", type=float, default=None, help="Adam β1 (default: the config's)")
  parser.add_argument("--exp_scale", type=float, default=None,
                      help="z_exp's factor at F's mapping (default: the run's model.deform_exp_scale)")
  parser.add_argument("--points", type=int, default=0,
                      help="query points per sample (0: the config's imitation.points)")
  parser.add_argument("--batch", type=int, default=8, help="prior samples per step")
  parser.add_argument("--drop", default="", help="comma-separated expression columns set to 0")
  parser.add_argument("--only", type=int, default=None, help="fit this expression column alone")
  parser.add_argument("--out", required=True, help="JSON record")
  args = parser.parse_args(argv)
  drop = [int(c) for c in args.drop.split(",") if c.strip()]
  if args.steps < 1 or args.batch < 1 or args.points < 0 or any(not 0 <= c < 64 for c in drop) or (
      args.only is not None and not 0 <= args.only < 64) or (drop and args.only is not None):
    parser.error("--steps, --batch >= 1, --points >= 0; --drop / --only columns in [0, 64), not both")
  run = experiment.load_pretrained(args.pretrained)
  run = dataclasses.replace(run, prior=expression_prior(run, drop, args.only))
  face = experiment.load_face_model(run.config)
  cfg = dataclasses.replace(curriculum.step_config(run.config, 0), chamfer_weight=0.0,
                            landmark_weight=0.0)
  if args.points:
    cfg = dataclasses.replace(cfg, imitation_points=args.points)
  o = run.config.optim
  lr = o.deform_lr if args.lr is None else args.lr
  b1 = o.b1 if args.b1 is None else args.b1
  if args.exp_scale is not None:
    run = dataclasses.replace(run, generator=run.generator.clone(deform_exp_scale=args.exp_scale))
  fresh = init_generator(run.generator, jax.random.key(0))["params"]["deformation"]
  params = dict(run.ema_params, deformation=fresh)
  tick = time.perf_counter()
  deform, curve = warmup.fit_deformation(
      run.generator, params, run.prior, face, cfg,
      ts.deformation_optimizer(lr, o.clip_norm, b1, o.b2), steps=args.steps, batch=args.batch,
      key=jax.random.key(1), log_every=max(1, args.steps // 10),
      log=lambda entry: print(json.dumps(entry), flush=True))
  params = dict(params, deformation=deform)
  record = dict(pretrained=str(args.pretrained), args=vars(args), lr=lr, b1=b1,
                exp_scale=run.generator.deform_exp_scale, curve=curve,
                fit_s=round(time.perf_counter() - tick, 1), jax=jax.__version__,
                device=jax.devices()[0].device_kind, date=time.strftime("%Y-%m-%d"))
  record["ratio"] = deformation_fit.mean_terms(run, face, cfg, params, 64, 1)["ratio"]
  record["gains"] = deformation_fit.field_gains(run, face, params, num=128)
  print(json.dumps(dict(ratio=record["ratio"], gains=record["gains"])), flush=True)
  write_record(args.out, record)
  return record


if __name__ == "__main__":
  main()
