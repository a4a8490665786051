"""Train a SynthFaces config on an accelerator with no TensorFlow, tfds or clu; write model folders.

  python benchmarks/train_device.py --config=configs/synthface.py:small64 --out=$OUT --seconds=300
  python benchmarks/train_device.py --config=configs/synthface.py:small64 --config.num_steps=8000 \\
      --config.imitation.deform_image_gradient=False --out=$OUT

An accelerator image may hold JAX, Flax, Optax and Orbax but no TensorFlow (ml_collections travels
as a wheel). This script renders `--num_images` SynthFaces training examples in-process (the tfds
builder's examples 0..N-1 at the stored resolution config.dataset.config, area-resampled to the
training resolution as the input pipeline does; not mirrored), fits the Gaussian prior to their
coefficients (config.prior 'fit'), and runs the training loop's own parts (`experiment`'s models,
optimizers, 3DMM and reconstruction network, `curriculum.step_config`, the pmapped `train_step`)
for config.num_steps iterations or `--seconds` of training, whichever ends first. The scalars are
logged every config.log_every iterations to <out>/log.jsonl. At `--num_checkpoints` evenly spaced
points (in steps, or in training seconds when `--seconds` ends the run first; the last at the end)
it writes the EMA generator as a model folder (`pretrained.write`, packed as
<out>/model_<step>.tar) with a row of frontal samples, and measures the `evaluate` metrics that need
no real images (control, ds, consistency, geometry) and the deformation field's L_3DMM against the
zero field's (`deformation/ratio`, benchmarks/deformation_fit.py), all in <out>/record.json. Back on a machine
with the dataset, FID follows from the folder:

  mkdir M && tar -xf model_3000.tar -C M && python -m anifacegan_jax.evaluate --pretrained=M \
      --workdir=E --metrics=fid,kid,control,ds,consistency,geometry
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import sys
import tarfile
import tempfile
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from anifacegan_jax import (cli, curriculum, evaluation, experiment, pretrained,  # noqa: E402
                            sampling, warmup)
from anifacegan_jax import train_step as ts  # noqa: E402
from anifacegan_jax.models.priors import GaussianPrior  # noqa: E402
from anifacegan_jax.synthfaces import synthetic  # noqa: E402
from anifacegan_jax.types import Batch  # noqa: E402

import deformation_fit  # noqa: E402  (benchmarks/, beside this script)

DEVICE_METRICS = ("control", "ds", "consistency", "geometry")


def check_config(config, spec: str) -> None:
  """What this script can train: a valid config of one stage on SynthFaces with a fitted prior."""
  try:
    curriculum.validate(config)
  except curriculum.ConfigError as e:
    raise SystemExit(f"--config={spec}: {e}")
  if len(config.stages) != 1:
    raise SystemExit(f"--config={spec}: {len(config.stages)} stages; this script trains one")
  if config.dataset.name != "synth_faces" or config.prior != "fit":
    raise SystemExit(f"--config={spec}: needs dataset.name 'synth_faces' and prior 'fit' (got "
                     f"{config.dataset.name!r}, {config.prior!r})")


def area_resize(images: np.ndarray, resolution: int) -> np.ndarray:
  """uint8 (N, S, S, 3) → float32 (N, R, R, 3) in [-1, 1], means over S/R × S/R blocks (the
  input pipeline's area resampling for an integer factor)."""
  source = images.shape[1]
  if source % resolution:
    raise SystemExit(f"stored resolution {source} is not a multiple of the training {resolution}")
  f = source // resolution
  x = images.astype(np.float32).reshape(len(images), resolution, f, resolution, f, 3).mean((2, 4))
  return x / 127.5 - 1.0


def synthfaces(config, num: int, resolution: int, workers: int) -> dict:
  data = synthetic.generate_many("train", num, int(config.dataset.config), workers)
  scale = resolution / data["image"].shape[1]
  return dict(image=area_resize(data["image"], resolution), pose=data["pose"].astype(np.float32),
              coefficients=data["coefficients"].astype(np.float32),
              landmarks=((data["landmarks"] + 0.5) * scale - 0.5).astype(np.float32))


def write_model(out: pathlib.Path, config, host, step: int) -> pathlib.Path:
  """The EMA generator as a model folder, packed as <out>/model_<step>.tar (flat members)."""
  tar_path = out / f"model_{step}.tar"
  with tempfile.TemporaryDirectory() as tmp:
    folder = pretrained.write(tmp, config, host.ema_params, host.prior, step=step,
                              source="train_device")
    with tarfile.open(tar_path, "w") as tar:
      for file in sorted(folder.iterdir()):
        tar.add(file, arcname=file.name)
  return tar_path


def samples_row(run: experiment.Run, num: int) -> np.ndarray:
  """uint8 (R, num·R, 3): frontal samples of the fixed snapshot latents (ψ = 1)."""
  from anifacegan_jax.models.generator import render
  from anifacegan_jax.models.priors import sample_latents
  from anifacegan_jax.types import Camera

  latents = sample_latents(run.prior, jax.random.key(run.config.seed + 1), num)
  resolution = int(run.config.stages[0].resolution)
  image = render(run.generator, {"params": run.ema_params}, latents, Camera.frontal(num),
                 resolution=resolution, chunk_size=int(run.config.chunk_size),
                 lock_view=True).image
  return np.concatenate(list(sampling.to_uint8(np.asarray(image))), 1)


FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", "configs/synthface.py:small64", "Training configuration file, as main's --config; "
    "fields are set the same way, e.g. --config.imitation.landmark_weight=1e5.", lock_config=True)
flags.DEFINE_string("out", None, "Output directory (record.json, log.jsonl, model_<step>.tar).")
flags.DEFINE_float("seconds", 300.0, "Training wall-clock budget (rendering, compiles and metrics "
                   "excluded).")
flags.DEFINE_integer("num_checkpoints", 3, "Model folders + metrics, evenly spaced (at most 4: 8 "
                     "files come back).", lower_bound=1, upper_bound=4)
flags.DEFINE_integer("num_images", 8192, "SynthFaces training examples rendered in-process.",
                     lower_bound=1)
flags.DEFINE_integer("workers", os.cpu_count(), "Render worker processes.", lower_bound=1)
flags.DEFINE_string("recon", "synthfaces", "Reconstruction network of the metrics when "
                    "config.recon is empty.")
flags.DEFINE_float("eval_scale", 1.0, "Multiplies the metrics' image counts (a CPU smoke run: "
                   "0.05).", lower_bound=0.0)
flags.mark_flags_as_required(["out"])

ARG_FLAGS = ("out", "seconds", "num_checkpoints", "num_images", "workers", "recon", "eval_scale")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  args = argparse.Namespace(**{name: FLAGS[name].value for name in ARG_FLAGS})
  config, spec = FLAGS.config, config_flags.get_config_filename(FLAGS["config"])
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(out.parent / f".{out.name}_jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  check_config(config, spec)
  cfg = curriculum.step_config(config, 0)
  devices = jax.local_device_count()
  record = dict(config=spec, config_values=json.loads(config.to_json()), args=vars(args),
                device=jax.devices()[0].device_kind,
                devices=devices, jax=jax.__version__, python=platform.python_version(),
                date=time.strftime("%Y-%m-%d"), checkpoints=[])

  begin = time.perf_counter()
  data = synthfaces(config, args.num_images, cfg.resolution, args.workers)
  record["render_s"] = round(time.perf_counter() - begin, 1)
  prior = GaussianPrior.fit(data["coefficients"][:, :80], data["coefficients"][:, 80:144])
  generator, discriminator = experiment.build_models(config)
  g_tx, d_tx = experiment.build_optimizers(config)
  state = ts.create_state(jax.random.key(config.seed), generator, discriminator, g_tx, d_tx, prior)
  recon = None
  teachers = ts.Teachers(face=None, recon=None)
  face = experiment.load_face_model(config) if cfg.uses_face_model else None
  if config.imitation.deform_warmup_steps > 0:
    tick = time.perf_counter()
    state, record["warmup"] = warmup.warm_up_from_config(
        config, generator, state, face, lambda entry: print(json.dumps(dict(warmup=entry)),
                                                            flush=True))
    record["warmup_s"] = round(time.perf_counter() - tick, 1)
  if face is not None:
    teachers = ts.Teachers(face=ts.replicate(face), recon=None)
  if cfg.uses_recon:
    recon, recon_variables = experiment.load_recon(config)
    teachers = ts.Teachers(face=teachers.face, recon=ts.replicate(recon_variables))
  p_step = ts.make_train_step(generator, discriminator, g_tx, d_tx, cfg, recon=recon)
  replicated = ts.replicate(state)
  base_key = ts.replicate(jax.random.key(config.seed + 3))
  rng = np.random.default_rng(config.seed)
  per_step = devices * cfg.per_device_batch

  def batch_at(pick):
    shape = lambda x: x[pick].reshape((devices, cfg.per_device_batch) + x.shape[1:])
    return Batch(image=shape(data["image"]), pose=shape(data["pose"]),
                 coefficients=shape(data["coefficients"]), landmarks=shape(data["landmarks"]))

  field_cfg = dataclasses.replace(cfg, chamfer_weight=0.0, landmark_weight=0.0)
  log_path = out / "log.jsonl"
  log_path.write_text("")
  settings = evaluation.Settings(
      metrics=DEVICE_METRICS, control_num=max(8, int(256 * args.eval_scale)),
      ds_anchors=max(2, int(100 * args.eval_scale)),
      consistency_num=max(4, int(64 * args.eval_scale)),
      geometry_num=max(4, int(64 * args.eval_scale)), batch_size=16,
      recon=config.recon or args.recon)
  pending, rows, step, order, mark = [], [], 0, np.empty(0, np.int64), 1
  train_start, eval_s = None, 0.0  # training time: wall time after the first step, less metrics
  while step < config.num_steps:
    if len(order) < per_step:  # epochs of a fixed shuffled order, as the tf.data pipeline
      order = np.concatenate([order, rng.permutation(len(data["image"]))])
    pick, order = order[:per_step], order[per_step:]
    tick = time.perf_counter()
    replicated, metrics = p_step(replicated, batch_at(pick), base_key, teachers)
    pending.append(metrics)
    step += 1
    if train_start is None:  # the first step compiles: not counted as training time
      jax.block_until_ready(metrics)
      train_start = time.perf_counter()
      record["compile_s"] = round(train_start - tick, 1)
    train_s = time.perf_counter() - train_start - eval_s
    out_of_time = train_s >= args.seconds
    if step % config.log_every == 0 or step == config.num_steps or out_of_time:
      fetched = jax.device_get(pending)
      train_s = time.perf_counter() - train_start - eval_s
      summary = {k: float(np.mean([m[k][0] for m in fetched])) for k in fetched[0]}
      pending = []
      line = dict(step=step, train_s=round(train_s, 1),
                  **{k: round(v, 6) for k, v in summary.items()})
      with log_path.open("a") as f:
        f.write(json.dumps(line) + "\n")
      print(json.dumps(line), flush=True)
      if summary.get("nonfinite_steps", 0) >= max(1, config.max_nonfinite_steps):
        record["stopped"] = f"non-finite steps at step {step}"
        out_of_time = True
    fraction = mark / args.num_checkpoints  # the next checkpoint: this share of steps or time
    due = step >= fraction * config.num_steps or train_s >= fraction * args.seconds
    if due or step == config.num_steps or out_of_time:
      mark += 1
      jax.block_until_ready(replicated)
      host = ts.unreplicate(replicated)
      run = experiment.Run(config=config, generator=generator, ema_params=host.ema_params,
                         prior=host.prior, step=step)
      tick = time.perf_counter()
      with tempfile.TemporaryDirectory() as workdir:  # FID caches only: none are made here
        metrics = evaluation.evaluate(run, workdir, settings)
      if cfg.deform_weight > 0:  # how much of the 3DMM's expression offsets the field follows
        field = deformation_fit.mean_terms(run, face, field_cfg, host.ema_params,
                                           max(16, int(128 * args.eval_scale)), config.seed + 1)
        metrics["deformation/ratio"] = field["ratio"]
        gains = deformation_fit.field_gains(run, face, host.ema_params)  # per coefficient
        metrics["deformation/gain"] = gains["gain"]
        metrics.update({f"deformation/gain/{k}": v for k, v in gains["columns"].items()})
      rows.append(samples_row(run, int(config.num_snapshot)))
      Image.fromarray(np.concatenate(rows, 0)).save(out / "samples.png")  # a row per checkpoint
      tar = write_model(out, config, host, step)
      record["checkpoints"].append(dict(step=step, train_s=round(train_s, 1),
                                        iterations_per_s=round((step - 1) / max(train_s, 1e-9), 2),
                                        eval_s=round(time.perf_counter() - tick, 1),
                                        model=tar.name, metrics=metrics))
      (out / "record.json").write_text(json.dumps(record, indent=1) + "\n")
      print(json.dumps(dict(step=step, **metrics)), flush=True)
      eval_s += time.perf_counter() - tick
    if out_of_time:
      break
  record["total_s"] = round(time.perf_counter() - begin, 1)
  (out / "record.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
  cli.run(main)  # main's flag parsing: a bad --config.X is one line, not a traceback
