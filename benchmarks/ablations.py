"""The paper's ablations on SynthFaces: what each part of AniFaceGAN buys, measured.

  python benchmarks/ablations.py --data_dir=D                     # every arm; resumes
  python benchmarks/ablations.py --data_dir=D --arms=full,adversarial
  python benchmarks/ablations.py --data_dir=D --report            # table, figure, record only

Six arms of `configs/synthface.py:small` (16², one device × 8, 2,000 iterations; the config of
BENCHMARKS.md "The small SynthFaces model"), trained from the same seed for the same iterations.
`full` is that config with every loss of the paper: L_Ch, L_3DMM, L_reg, L_smooth and L_lm (3-D
landmarks, weight 1e4, through the shipped SynthFaces reconstruction network); every other arm
changes one thing (`ARMS`). Each finished arm is evaluated with the same settings as
`python -m anifacegan_jax.evaluate --workdir=<arm> --metrics=fid,kid,control,ds,consistency,geometry
--recon=synthfaces --num_fake=1000 --num_real=1000 --control_num=256 --ds_anchors=20
--ds_variations=5 --consistency_num=32` (FID / KID at the training resolution against the
training images, the reconstruction network's metrics at the config's 64² `eval_resolution`;
the real images' features are computed once for every arm). Then one figure row per arm: the
same identity (z_id, ε) with the same expressions, each above its depth.

Everything is resumable (SIGTERM or Ctrl-C stops it after saving the arm's state): an arm's
workdir resumes training from its newest checkpoint (every 250 iterations), a
finished evaluation (`<arm>/eval/ablation.json`) or figure row is reused, and the record, the
figure and the markdown table are rewritten from what is done after every arm; a killed study
goes on where it stopped when the same command runs again. Each arm's training wall time sums
the sessions that trained it (`<arm>/ablation_train_s.json`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks import records  # noqa: E402

ARMS = {  # name -> (config overrides by section, what the arm tests); trained in this order
    "full": ({}, "every loss of the paper (L_Ch, L_3DMM, L_reg, L_smooth, L_lm 3-D)"),
    "discofacegram": ({"model": dict(expression="template"),
                       "imitation": dict(deform_weight=0.0, reg_weight=0.0, smooth_weight=0.0)},
                      "DiscoFaceGRAM: no deformation field, z_exp conditions the template"),
    "adversarial": ({"imitation": dict(chamfer_weight=0.0, deform_weight=0.0, reg_weight=0.0,
                                       smooth_weight=0.0, landmark_weight=0.0)},
                    "no 3D imitation: the adversarial and pose losses only"),
    "no_lm": ({"imitation": dict(landmark_weight=0.0)}, "without L_lm (Eq. 7)"),
    "no_deform_imitation": ({"imitation": dict(deform_weight=0.0)},
                            "without the deformation imitation L_3DMM (Eq. 8-9)"),
    "lm_2d": ({"imitation": dict(landmark_dims=2)}, "L_lm on 2-D (projected) landmarks"),
}
METRICS = ("fid", "kid", "control", "ds", "consistency", "geometry")
RECON = "synthfaces"  # the shipped SynthFaces reconstruction network (L_lm and the metrics)
FIGURE_EXPRESSIONS = (("neutral", ""), ("jaw open", "jaw_open"),
                      ("smile", "smile_left,smile_right"),
                      ("brows up", "brow_up_left,brow_up_right"), ("pucker", "pucker"),
                      ("blink", "blink_left,blink_right"))
FIGURE_SEED = 3  # the figure's identity (`animation.identity_latents`)
FIGURE_RESOLUTION = 64
TIMING_FILE = "ablation_train_s.json"
EVAL_FILE = "ablation.json"


def arm_config(arm: str, args):
  """`configs/synthface.py:small` with L_lm through the shipped network, then the arm's changes."""
  from configs import synthface
  config = synthface.get_config("small")
  config.dataset.data_dir = args.data_dir
  if args.num_train:
    config.dataset.num_train = args.num_train
  config.num_steps = args.num_steps
  # every 250 iterations: a study stopped between checkpoints loses little when it resumes
  config.checkpoint_every = max(1, min(250, args.num_steps))
  config.snapshot_every = args.num_steps
  config.imitation.landmark_weight = 1e4  # L_lm, Eq. 7 (as configs/synthface.py:small64)
  config.recon = RECON
  overrides, _ = ARMS[arm]
  for section, fields in overrides.items():
    for field, value in fields.items():
      config[section][field] = value
  if config.imitation.landmark_weight == 0:
    config.recon = ""  # not needed; the metrics name their network themselves
  return config


def settings(args):
  from anifacegan_jax import evaluation
  return evaluation.Settings(
      metrics=METRICS, num_fake=args.num_fake, num_real=args.num_real,
      control_num=args.control_num, ds_anchors=args.ds_anchors, ds_variations=args.ds_variations,
      consistency_num=args.consistency_num, geometry_num=args.geometry_num, recon=RECON, seed=0)


def read_sessions(path: pathlib.Path) -> list:
  """The training sessions recorded in `path` (`TIMING_FILE`); a damaged file stops the study
  with its name rather than losing the arm's history."""
  try:
    sessions = json.loads(path.read_text())["sessions"]
    if not all(isinstance(s, dict) and isinstance(s.get("wall_s"), (int, float))
               for s in sessions):
      raise ValueError("a session without its wall_s")
    return sessions
  except (ValueError, KeyError, TypeError) as error:
    raise SystemExit(f"{path}: expected {{'sessions': [{{'from_step', 'to_step', 'wall_s', "
                     f"'date'}}, ...]}} ({error}); repair or delete it (the arm's training time "
                     "then counts from the next session only)") from None


def train_arm(arm: str, config, workdir: pathlib.Path) -> float:
  """Train (or resume) the arm; returns the training wall time summed over every session."""
  from anifacegan_jax import checkpointing
  from anifacegan_jax.main import train
  timing = workdir / TIMING_FILE
  sessions = read_sessions(timing) if timing.is_file() else []
  saved = checkpointing.saved_steps(workdir)
  if not saved or saved[-1] < config.num_steps:
    start_step, start = (saved[-1] if saved else 0), time.time()
    try:
      train(config, str(workdir))  # SIGTERM / Ctrl-C: saves, raises cli.Interrupted
    finally:  # the session counts whether it finished or was stopped
      end = checkpointing.saved_steps(workdir)
      sessions.append(dict(from_step=start_step, to_step=end[-1] if end else 0,
                           wall_s=round(time.time() - start, 1), date=time.strftime("%Y-%m-%d")))
      workdir.mkdir(parents=True, exist_ok=True)
      timing.write_text(json.dumps(dict(sessions=sessions), indent=1) + "\n")
  return round(sum(s["wall_s"] for s in sessions), 1)


def evaluate_arm(workdir: pathlib.Path, root: pathlib.Path, eval_settings) -> dict:
  """The arm's metrics: from `<arm>/eval/ablation.json` when it holds these settings' results."""
  from anifacegan_jax import evaluation, experiment
  path = workdir / "eval" / EVAL_FILE
  wanted = dataclasses.asdict(eval_settings)
  if path.is_file():
    try:
      saved = json.loads(path.read_text())
    except ValueError:  # damaged: evaluated again and rewritten
      saved = {}
    if isinstance(saved, dict) and saved.get("settings") == json.loads(json.dumps(wanted)):
      return saved
  run = experiment.load_run(str(workdir))
  start = time.time()
  results = evaluation.evaluate(run, root, eval_settings)  # real features cached in <root>/eval
  results["wall_s"] = round(time.time() - start, 1)
  evaluation.write_results(workdir, run.step, results, eval_settings, out=path)
  return json.loads(path.read_text())


def figure_row(workdir: pathlib.Path):
  """uint8 (2·R, E·R, 3): the figure identity with each of FIGURE_EXPRESSIONS, frontal, ψ of the
  config, above its depth; cached as `<arm>/ablation_row.png`."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from PIL import Image

  from anifacegan_jax import animation, experiment, sampling
  path = workdir / "ablation_row.png"
  if path.is_file():
    return np.asarray(Image.open(path).convert("RGB"))
  run = experiment.load_run(str(workdir))
  config = run.config
  z_id, noise = animation.identity_latents(run.prior, FIGURE_SEED)
  z_exp = jnp.asarray(np.stack([animation.named_expression(spec) if spec else np.zeros(64)
                                for _, spec in FIGURE_EXPRESSIONS]), jnp.float32)
  count = z_exp.shape[0]
  mean = animation.truncation_centre(run, jax.random.fold_in(jax.random.key(0), 1))
  half_pi = jnp.full((count,), jnp.pi / 2)
  images, depth, mask = jax.device_get(animation.draw_frames(
      run.generator, run.ema_params, z_id, noise, z_exp, half_pi, half_pi, mean,
      float(config.psi), resolution=FIGURE_RESOLUTION, chunk_size=int(config.chunk_size)))
  rows = np.stack([images, sampling.depth_rgb(run.generator, depth, mask)])  # (2, E, R, R, 3)
  res = FIGURE_RESOLUTION
  row = rows.transpose(0, 2, 1, 3, 4).reshape(2 * res, count * res, 3)
  Image.fromarray(row).save(path)
  return row


def write_figure(rows: dict, path: pathlib.Path) -> None:
  """The arms' rows stacked, each labelled on its left, expressions named on top."""
  import numpy as np
  from PIL import Image, ImageDraw
  label_w, head_h, res = 150, 16, FIGURE_RESOLUTION
  width = label_w + len(FIGURE_EXPRESSIONS) * res
  canvas = Image.new("RGB", (width, head_h + sum(r.shape[0] for r in rows.values())), "white")
  draw = ImageDraw.Draw(canvas)
  for i, (name, _) in enumerate(FIGURE_EXPRESSIONS):
    draw.text((label_w + i * res + 2, 2), name, fill="black")
  y = head_h
  for arm, row in rows.items():
    canvas.paste(Image.fromarray(np.asarray(row, np.uint8)), (label_w, y))
    draw.text((4, y + res // 2 - 6), arm, fill="black")
    y += row.shape[0]
  path.parent.mkdir(parents=True, exist_ok=True)
  canvas.save(path)


COLUMNS = (  # (header, metric key, format)
    ("FID ↓", "fid", "{:.1f}"), ("KID ↓", "kid", "{:.3f}"),
    ("exp RMSE ↓", "control/exp_rmse", "{:.3f}"), ("landmark mm ↓", "control/landmark_mm", "{:.2f}"),
    ("pose ° ↓", "control/angle_rmse_deg", "{:.1f}"),
    ("landmark depth mm ↓", "control/landmark_depth_mm", "{:.1f}"),
    ("DS exp ↑", "ds/exp", "{:.2f}"), ("DS pose ↑", "ds/pose", "{:.2f}"),
    ("reproj. px ↓", "consistency/landmark_reprojection_px", "{:.2f}"),
    ("warp error (8-bit) ↓", "consistency/warp_error", "{:.2f}"),
    ("crossings", "geometry/crossings", "{:.3f}"), ("foreground", "geometry/foreground", "{:.3f}"),
)


def table(record: dict) -> str:
  """Markdown: one row per finished arm."""
  lines = ["| arm | " + " | ".join(h for h, _, _ in COLUMNS) + " | train s |",
           "|---|" + "---|" * (len(COLUMNS) + 1)]
  for arm, entry in record["arms"].items():
    metrics = entry["metrics"]
    cells = [fmt.format(metrics[key]) if key in metrics else "–" for _, key, fmt in COLUMNS]
    lines.append(f"| {arm} | " + " | ".join(cells) + f" | {entry['train_wall_s']:.0f} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="/tmp/ablations", help="one subfolder per arm")
  parser.add_argument("--data_dir", default="", help="tfds data_dir ('' = tfds default)")
  parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated, in this order")
  parser.add_argument("--num_steps", type=int, default=2000, help="iterations of every arm")
  parser.add_argument("--num_train", type=int, default=0,
                      help="SynthFaces training faces (0: the config's 30,000)")
  parser.add_argument("--num_fake", type=int, default=1000)
  parser.add_argument("--num_real", type=int, default=1000)
  parser.add_argument("--control_num", type=int, default=256)
  parser.add_argument("--ds_anchors", type=int, default=20)
  parser.add_argument("--ds_variations", type=int, default=5)
  parser.add_argument("--consistency_num", type=int, default=32)
  parser.add_argument("--geometry_num", type=int, default=64)
  parser.add_argument("--report", action="store_true",
                      help="train and evaluate nothing: write the record, figure and table of "
                           "the arms already done")
  parser.add_argument("--out", default="benchmarks/ablations_cpu.json")
  parser.add_argument("--figure", default="docs/ablations.png")
  args = parser.parse_args()
  arms = [a.strip() for a in args.arms.split(",") if a.strip()]
  unknown = [a for a in arms if a not in ARMS]
  if unknown or not arms:
    raise SystemExit(f"--arms: unknown {unknown or '(none)'}; choose from {', '.join(ARMS)}")
  if args.num_steps < 1 or args.num_train < 0:
    raise SystemExit(f"--num_steps={args.num_steps}, --num_train={args.num_train}: expected a "
                     "positive count (--num_train 0: the config's)")

  import jax
  from absl import logging
  if jax.local_device_count() != 1:
    raise SystemExit(f"{jax.local_device_count()} devices: the small config trains on one device "
                     "× 8 images; unset XLA_FLAGS' --xla_force_host_platform_device_count")
  logging.set_verbosity(logging.INFO)
  logging.set_stderrthreshold(logging.INFO)
  root = pathlib.Path(args.workdir).expanduser()
  eval_settings = settings(args)
  eval_settings.validate()
  record = dict(config="configs/synthface.py:small + L_lm (weight 1e4, recon=synthfaces)",
                num_steps=args.num_steps, num_train=int(arm_config("full", args).dataset.num_train), settings=dataclasses.asdict(eval_settings),
                figure=dict(seed=FIGURE_SEED, expressions=FIGURE_EXPRESSIONS,
                            resolution=FIGURE_RESOLUTION), arms={})
  rows = {}
  for arm in arms:
    workdir = root / arm
    config = arm_config(arm, args)
    if args.report:
      done = (workdir / "eval" / EVAL_FILE).is_file() and (workdir / TIMING_FILE).is_file()
      if not done:
        continue
      train_s = round(sum(s["wall_s"] for s in read_sessions(workdir / TIMING_FILE)), 1)
      try:
        evaluated = json.loads((workdir / "eval" / EVAL_FILE).read_text())
      except ValueError:
        print(f"{workdir / 'eval' / EVAL_FILE}: damaged, left out (the next run evaluates the arm "
              "again)", file=sys.stderr)
        continue
    else:
      train_s = train_arm(arm, config, workdir)
      evaluated = evaluate_arm(workdir, root, eval_settings)
    rows[arm] = figure_row(workdir)
    overrides, tests = ARMS[arm]
    record["arms"][arm] = dict(tests=tests, overrides=overrides, step=evaluated["step"],
                               train_wall_s=train_s, metrics=evaluated["metrics"])
    record.update(date=time.strftime("%Y-%m-%d"), machine=dict(
        cpu_count=os.cpu_count(), jax=jax.__version__, device=jax.devices()[0].device_kind))
    records.write_record(args.out, record)
    write_figure(rows, pathlib.Path(args.figure))
    print(f"{arm}: " + json.dumps({k: v for k, v in evaluated["metrics"].items()
                                   if isinstance(v, float)}), flush=True)
  print(table(record))


if __name__ == "__main__":
  from anifacegan_jax import cli
  try:
    main()
  except cli.Interrupted as stop:  # SIGTERM / Ctrl-C: the arm was saved; run again to resume
    sys.stderr.write(f"{stop}; run the same command again to resume the study\n")
    sys.exit(stop.exit_code)
