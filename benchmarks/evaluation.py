"""The evaluation metrics (`python -m anifacegan_jax.evaluate`) along a SynthFaces training run.

  python benchmarks/evaluation.py --recon=/tmp/recon128/wd --workdir=/tmp/evalbench/imitation \
      --data_dir=/tmp/imit_tfds --steps=500,1500,3000 --out=benchmarks/evaluation_cpu.json

Trains (or resumes) the `imitation` arm of `benchmarks/imitation.py` (`configs/synthface.py:tiny`,
16², with the 3D imitation losses; `--variant=default` is the 64² config) to the last of
`--steps`, keeping a checkpoint at each, then evaluates the EMA generator of each step with
`anifacegan_jax.evaluation.evaluate`:

* FID / KID at the training resolution (`--num_fake` generated vs the first `--num_real` training
  images, the paper's protocol at a smaller count);
* control, DS (exp, pose) and 3D consistency rendered at `--eval_resolution` (the network
  resizes to its input; 64² as `benchmarks/imitation.py`), read by `--recon`.

Two reference rows frame the numbers: `untrained` (the run's step-0 generator: same seed, same
prior) and `real` (FID / KID of the first `--num_real` training images against the next
`--num_real`, the floor a perfect generator reaches at this count, with the same flips protocol).
A finished workdir is only re-evaluated, and rows already in `--out` (same workdir and settings)
are kept, so steps can be added as a run reaches them; `--trained` evaluates the checkpoints of
any training workdir (e.g. `configs/synthface.py:small`) with its saved config, training nothing:

  python benchmarks/evaluation.py --trained --workdir=/tmp/small --recon=/tmp/recon128 \
      --data_dir=/tmp/tfds --steps=500,1500,3000 --out=benchmarks/small_cpu.json

On a GPU, `--variant=default --steps=5000,20000
--num_train=10000 --num_fake=5000 --num_real=5000` is the paper's protocol at 64².
Writes a JSON record.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys
import time

import jax
import numpy as np
from absl import logging

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from anifacegan_jax import checkpointing, evaluation, experiment, sampling  # noqa: E402
from anifacegan_jax import recon_training as rt  # noqa: E402
from anifacegan_jax import train_step as ts  # noqa: E402
from anifacegan_jax.main import train as run_training  # noqa: E402
from anifacegan_jax.metrics import fid as fid_lib  # noqa: E402
from anifacegan_jax.metrics import fid_weights, inception  # noqa: E402
import imitation  # noqa: E402  (benchmarks/imitation.py: the arm's config and machine record)


def untrained_run(run: experiment.Run) -> experiment.Run:
  """`run` with the EMA weights of its step 0 (the config's seed, as `train.create_or_restore`)."""
  generator, discriminator = experiment.build_models(run.config)
  g_tx, d_tx = experiment.build_optimizers(run.config)
  state = ts.create_state(jax.random.key(run.config.seed), generator, discriminator, g_tx, d_tx,
                          run.prior)
  return experiment.Run(config=run.config, generator=run.generator, ema_params=state.ema_params,
                      prior=run.prior, step=0)


def real_reference(config, settings: evaluation.Settings, resolution: int) -> dict[str, float]:
  """FID / KID of training images [0, N) against [N, 2N) (N = settings.num_real)."""
  _, variables = fid_weights.load_fid_inception(settings.fid_weights,
                                                preprocess=settings.preprocess)
  images = evaluation.real_images(config, 2 * settings.num_real, resolution=resolution,
                                  seed=settings.seed)
  first, second = (inception.features(variables, part, preprocess=settings.preprocess)
                   for part in np.split(images, 2))
  kid, kid_std = fid_lib.kid(first, second, num_subsets=settings.kid_subsets,
                             subset_size=settings.kid_subset_size, seed=settings.seed)
  return dict(fid=fid_lib.fid_from_features(first, second), kid=kid, kid_std=kid_std)


def evaluate_run(run: experiment.Run, workdir: str, fid_settings: evaluation.Settings,
                 recon_settings: evaluation.Settings) -> dict:
  start = time.time()
  metrics = evaluation.evaluate(run, workdir, fid_settings)
  metrics.update(evaluation.evaluate(run, workdir, recon_settings))
  return dict(step=run.step, metrics=metrics, eval_wall_s=round(time.time() - start, 1))


def add_metrics(args, settings: evaluation.Settings) -> None:
  """Evaluates `settings.metrics` for every generator row of the record `args.out`, in place."""
  path = pathlib.Path(args.out)
  record = json.loads(path.read_text())
  for name, run in _row_runs(args, record):
    row = record["rows"][name]
    row["metrics"].update(evaluation.evaluate(run, args.workdir, settings))
    print(name, json.dumps(row["metrics"]), flush=True)
  record["recon_settings"]["metrics"] = sorted(set(record["recon_settings"]["metrics"])
                                               | set(settings.metrics))
  path.write_text(json.dumps(record, indent=1, default=str) + "\n")


def _row_runs(args, record: dict):
  """(name, Run) of every generator row of `record`."""
  steps = [row["step"] for name, row in record["rows"].items() if name.startswith("step_")]
  first = experiment.load_run(args.workdir, min(steps))
  for name, row in record["rows"].items():
    if name != "real":
      yield name, (untrained_run(first) if name == "untrained"
                   else experiment.load_run(args.workdir, row["step"]))


def write_figure(args, config, num: int = 8, scale: int = 4) -> None:
  """Rows: real training images, then per generator row its first `num` FID images (the
  protocol's latents and cameras) above their depth (near 0.88 white … far 1.12 black)."""
  from PIL import Image

  record = json.loads(pathlib.Path(args.out).read_text())
  resolution = int(config.stages[0].resolution)
  rows = [evaluation.real_images(config, num, resolution=resolution)]
  for _, run in _row_runs(args, record):
    images = np.concatenate(list(evaluation.generated_images(run, num, resolution=resolution,
                                                             batch_size=1)))
    rows.append(images)
    latents, camera = evaluation.protocol_latents(run, num)
    depth = evaluation.gather_run(run, latents, camera, lambda out, *_: {"depth": out.depth},
                                  resolution=resolution, batch_size=num)["depth"]
    near, far = run.generator.near, run.generator.far
    gray = np.clip((far - depth) / (far - near), 0, 1)
    rows.append(np.repeat(sampling.to_uint8(gray * 2 - 1)[..., None], 3, axis=-1))
  grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
  grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
  Image.fromarray(grid).save(args.figure)
  print(args.figure, grid.shape)


def write_curve(args, path: str, width: int = 300, height: int = 150) -> None:
  """Panels of the run's logged training scalars (crossings, foreground, L_Ch, D(real) and
  D(fake)) against the iteration, and FID of the record's rows: a PNG from PIL alone."""
  from PIL import Image, ImageDraw

  import manifolds  # benchmarks/manifolds.py: the TensorBoard reader

  record = json.loads(pathlib.Path(args.out).read_text())
  logged = manifolds.read_scalars(args.workdir)
  fid = sorted((row["step"] if name != "untrained" else 0, row["metrics"]["fid"])
               for name, row in record["rows"].items() if name != "real")
  panels = [("crossings", {"crossings": logged["crossings"]}, (0.0, 1.0)),
            ("foreground", {"foreground": logged["foreground"]}, (0.0, 1.0)),
            ("L_Ch", {"chamfer": logged["chamfer"]}, None),
            ("D(real) black, D(fake) red", {"d_real": logged["d_real"],
                                            "d_fake": logged["d_fake"]}, (0.0, 1.0)),
            (f"FID (real floor {record['rows']['real']['metrics']['fid']:.0f})", {"fid": fid},
             None)]
  colors = {"d_fake": (200, 30, 30)}
  last = max(s for _, series, _ in panels for points in series.values() for s, _ in points)
  canvas = Image.new("RGB", (width * len(panels), height), "white")
  draw = ImageDraw.Draw(canvas)
  margin = 40
  for i, (title, series, limits) in enumerate(panels):
    values = [v for points in series.values() for _, v in points]
    low, high = limits or (min(values), max(values))
    high = high if high > low else low + 1
    x0, y0, x1, y1 = i * width + margin, 16, (i + 1) * width - 8, height - 16
    draw.rectangle((x0, y0, x1, y1), outline=(160, 160, 160))
    draw.text((x0, 2), title, fill="black")
    draw.text((x0 - margin + 2, y0), f"{high:.2g}", fill="black")
    draw.text((x0 - margin + 2, y1 - 10), f"{low:.2g}", fill="black")
    draw.text((x1 - 30, y1 + 2), f"{last}", fill="black")
    for name, points in series.items():
      xy = [(x0 + (x1 - x0) * s / last, y1 - (y1 - y0) * (min(max(v, low), high) - low)
             / (high - low)) for s, v in points]
      draw.line(xy, fill=colors.get(name, (0, 0, 0)), width=2 if name == "fid" else 1)
      if name == "fid":
        for x, y in xy:
          draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill="black")
  canvas.save(path)
  print(path, canvas.size)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--recon", required=True, help="a train_recon workdir (SynthFaces)")
  parser.add_argument("--workdir", default="/tmp/evalbench/imitation")
  parser.add_argument("--data_dir", default="", help="tfds data_dir ('' = tfds default)")
  parser.add_argument("--variant", default="tiny", help="configs/synthface.py variant")
  parser.add_argument("--num_train", type=int, default=2048)
  parser.add_argument("--steps", default="500,1500,3000", help="checkpoints to evaluate")
  parser.add_argument("--num_fake", type=int, default=1000)
  parser.add_argument("--num_real", type=int, default=1000)
  parser.add_argument("--eval_resolution", type=int, default=64,
                      help="render size of control / ds / consistency")
  parser.add_argument("--control_num", type=int, default=256)
  parser.add_argument("--ds_anchors", type=int, default=50)
  parser.add_argument("--ds_variations", type=int, default=10)
  parser.add_argument("--consistency_num", type=int, default=64)
  parser.add_argument("--geometry_num", type=int, default=64)
  parser.add_argument("--fid_weights", default=None)
  parser.add_argument("--figure", default="", help="write a PNG of each row of an existing --out "
                      "record (real images; each generator's images and depth) and exit")
  parser.add_argument("--curve", default="", help="write a PNG of the run's logged crossings, "
                      "foreground, L_Ch, D outputs and the record's FID rows, and exit")
  parser.add_argument("--add", default="", help="metrics (e.g. geometry) to evaluate and add to "
                      "the rows of an existing --out record, without training or other metrics")
  parser.add_argument("--trained", action="store_true", help="evaluate the checkpoints --steps of "
                      "an existing workdir with its saved config (train nothing)")
  parser.add_argument("--out", default="benchmarks/evaluation_cpu.json")
  parser.add_argument("--compilation_cache", default="/tmp/anifacegan_jax_bench_cache",
                      help="persistent XLA cache: each row re-traces the same renderers")
  args = parser.parse_args()
  if args.compilation_cache:
    jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  logging.set_verbosity(logging.INFO)
  logging.set_stderrthreshold(logging.INFO)
  try:
    steps = sorted({int(s) for s in args.steps.split(",")})
  except ValueError:
    raise SystemExit(f"--steps={args.steps}: expected comma-separated iteration counts") from None
  if not steps or steps[0] < 1:
    raise SystemExit(f"--steps={args.steps}: expected positive iteration counts")
  if 2 * args.num_real > args.num_train and not args.trained:
    raise SystemExit(f"--num_real={args.num_real}: the real-vs-real row needs 2 × num_real ≤ "
                     f"--num_train={args.num_train}")

  if args.trained:
    config = checkpointing.restore_config(args.workdir)
    saved = checkpointing.create_manager(args.workdir, read_only=True).all_steps()
    missing = sorted(set(steps) - set(saved))
    if missing:
      raise SystemExit(f"--trained: {args.workdir} has no checkpoint of step(s) {missing}")
    if args.data_dir:
      config.dataset.data_dir = args.data_dir
  else:
    config = imitation.arm_config("imitation", argparse.Namespace(
        data_dir=args.data_dir, num_train=args.num_train, variant=args.variant,
        num_steps=steps[-1], recon=args.recon))
    config.checkpoint_every = math.gcd(*steps)
    config.keep_checkpoints = steps[-1] // config.checkpoint_every + 1
  fid_settings = evaluation.Settings(metrics=("fid", "kid"), num_fake=args.num_fake,
                                     num_real=args.num_real, fid_weights=args.fid_weights)
  recon_settings = evaluation.Settings(
      metrics=("control", "ds", "consistency", "geometry"), resolution=args.eval_resolution,
      control_num=args.control_num, ds_anchors=args.ds_anchors, ds_variations=args.ds_variations,
      consistency_num=args.consistency_num, geometry_num=args.geometry_num, recon=args.recon)
  if (args.figure or args.add or args.curve) and not pathlib.Path(args.out).is_file():
    raise SystemExit(f"--out={args.out}: no such record; --figure and --add read the rows of a "
                     "finished benchmark run")
  if args.figure:
    write_figure(args, config)
    return
  if args.curve:
    write_curve(args, args.curve)
    return
  if args.add:
    add_metrics(args, dataclasses.replace(recon_settings, metrics=tuple(args.add.split(","))))
    return
  start = time.time()
  if not args.trained and (checkpointing.latest_step(args.workdir) or 0) < steps[-1]:
    run_training(config, args.workdir)
  train_s = round(time.time() - start, 1)
  recon_config = rt.restore_config(args.recon)
  evals = pathlib.Path(args.recon) / rt.EVAL_FILE
  record = dict(
      workdir=args.workdir, config=config.to_dict(), train_wall_s_this_call=train_s,
      fid_settings=dataclasses.asdict(fid_settings),
      recon_settings=dataclasses.asdict(recon_settings),
      recon=dict(workdir=args.recon, model=recon_config.model.to_dict(),
                 test_metrics=json.loads(evals.read_text().splitlines()[-1])
                 if evals.exists() else None),
      rows={})
  out = pathlib.Path(args.out)
  if out.is_file():  # rows of an earlier call with the same workdir and settings are kept
    earlier = json.loads(out.read_text())
    if all(earlier.get(k) == json.loads(json.dumps(record[k], default=str))
           for k in ("workdir", "fid_settings", "recon_settings")):
      record["rows"] = earlier["rows"]
  resolution = int(config.stages[0].resolution)

  def save():
    record.update(machine=imitation.machine(), date=time.strftime("%Y-%m-%d"))
    out.write_text(json.dumps(record, indent=1, default=str) + "\n")

  if "real" not in record["rows"]:
    start = time.time()
    real = real_reference(config, fid_settings, resolution)
    record["rows"]["real"] = dict(metrics=real, eval_wall_s=round(time.time() - start, 1))
    print("real", json.dumps(record["rows"]["real"]), flush=True)
    save()
  for step in [0] + steps:
    name = "untrained" if step == 0 else f"step_{step}"
    if name in record["rows"]:
      continue
    run = (untrained_run(experiment.load_run(args.workdir, steps[0])) if step == 0
           else experiment.load_run(args.workdir, step))
    record["rows"][name] = evaluate_run(run, args.workdir, fid_settings, recon_settings)
    print(name, json.dumps(record["rows"][name]), flush=True)
    save()


if __name__ == "__main__":
  main()
