"""Training and evaluation of the reconstruction network (`recon.ReconNet`) with ground truth.

SynthFaces stores every image's true 3DMM coefficients, so the regressor is trained by direct
supervision instead of Deep3DFaceRecon's photometric loop:

  L = w_id·MSE(id) + w_exp·MSE(exp) + w_angle·MSE(angle) + w_lm·E_l ‖l(β̂, γ̂) − l(β, γ)‖²,

where l(β, γ) are the 3D landmarks 17-67 (iBUG-68 without the jaw contour, the set AniFaceGAN's
landmark loss uses) of S = S̄ + B_id β + B_exp γ in the model frame (3DMM units ≈ decimetres), so
the landmark term weighs coefficients by how much they move the face. Images are not flipped:
a mirror swaps left/right expression coefficients (`smile_left` ↔ `smile_right`).

Evaluation on the held-out 'test' split: `exp_rmse` (coefficient units, over all 64 expression
coefficients), `id_rmse`, `angle_rmse_deg`, and `landmark_mm`, the mean Euclidean 3D error of
landmarks 17-67 in millimetres (model units ≈ dm, so mm = 100 × model units), with pose removed.

Single device, `jax.jit`; Orbax checkpoints (state + config JSON) resume automatically;
`restore_recon(workdir)` returns the trained (model, variables) for other code.
"""

from __future__ import annotations

import functools
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tensorflow_datasets as tfds
from absl import logging
from clu import metric_writers, periodic_actions

from anifacegan_jax import checkpointing, experiment, recon_step
from anifacegan_jax.data import datasets, input_pipeline
from anifacegan_jax.face3d.morphable import MorphableArrays
from anifacegan_jax.metrics.coefficients import (landmark_arrays, per_example_errors,
                                                 summarize_errors)
from anifacegan_jax.models.recon import ReconNet
from anifacegan_jax.recon_step import (LossWeights, ReconState, create_state, images_01,
                                       load_trained, make_optimizer, train_step)
from anifacegan_jax.types import PyTree

EVAL_FILE = "eval_metrics.jsonl"  # in the workdir: one JSON line per evaluation


class ReconConfigError(ValueError):
  """A recon config field has an unsupported value, or a workdir was trained with another model."""


def build_model(config: ml_collections.ConfigDict) -> ReconNet:
  return recon_step.build_model(config.model)


def build_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """`recon_step.make_optimizer` with config.optim and config.num_steps."""
  o = config.optim
  return make_optimizer(float(o.lr), int(o.warmup_steps), int(config.num_steps),
                        float(o.end_lr_factor), float(o.b1), float(o.b2))


def loss_weights(config: ml_collections.ConfigDict) -> LossWeights:
  w = config.loss
  return LossWeights(id=float(w.id_weight), exp=float(w.exp_weight),
                     angle=float(w.angle_weight), landmark=float(w.landmark_weight))


def synthfaces_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` checked to name SynthFaces, the only dataset with the ground-truth coefficients this
  training needs (for `datasets.make_builder`)."""
  if config.dataset.name != "synth_faces":
    raise ReconConfigError(f"config.dataset.name must be 'synth_faces' (ground-truth coefficients "
                           f"are needed), got {config.dataset.name!r}")
  return config


def train_batches(builder, config: ml_collections.ConfigDict, start_step: int):
  """numpy batches {'image', 'coefficients', ...} (B, ...) from `start_step` on, deterministic."""
  ds = input_pipeline.create_dataset(
      builder, "train", global_batch_size=config.batch_size, resolution=config.model.input_size,
      random_flip=False, seed=config.seed, shuffle_buffer=config.dataset.shuffle_buffer,
      process_index=0, process_count=1, local_device_count=1,
      skip_examples=start_step * config.batch_size)
  for batch in tfds.as_numpy(ds):
    yield {k: v[0] for k, v in batch.items()}  # drop the device axis: single-device jit


def predict(model: ReconNet, variables: PyTree, builder, resolution: int, batch_size: int = 250,
            split: str = "test") -> tuple[np.ndarray, np.ndarray]:
  """(M, 257) eval-mode predictions and true coefficients of every example of `split`."""
  ds = builder.as_dataset(split=split, shuffle_files=False)
  ds = ds.map(lambda ex: input_pipeline.preprocess(ex, resolution)).batch(batch_size)
  apply = jax.jit(functools.partial(model.apply, train=False))
  pred, target = [], []
  for batch in tfds.as_numpy(ds):
    pred.append(np.asarray(apply(variables, images_01(batch))))
    target.append(batch["coefficients"])
  return np.concatenate(pred), np.concatenate(target)


def evaluate(model: ReconNet, variables: PyTree, builder, arrays: MorphableArrays,
             resolution: int, batch_size: int = 250, split: str = "test") -> dict[str, float]:
  """Metrics of `summarize_errors` over every example of `split`."""
  pred, target = predict(model, variables, builder, resolution, batch_size, split)
  errors = jax.jit(per_example_errors)(jnp.asarray(pred), jnp.asarray(target), arrays)
  return summarize_errors(jax.device_get(errors))


def restore_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a recon run in `workdir` was trained with (newest checkpoint)."""
  step = checkpointing.latest_step(workdir)
  if step is None:
    load_trained(workdir)  # raises the error that says how to train one
  manager = checkpointing.create_manager(workdir, read_only=True)
  restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  return ml_collections.ConfigDict(restored["config"])


def _restore_state(config, workdir: str, model: ReconNet, tx) -> ReconState:
  saved = restore_config(workdir)
  plain = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # JSON turns tuples into lists
  for key, value in config.model.items():
    old = saved.model.get(key)
    if old is not None and plain(old) != plain(value):
      raise ReconConfigError(f"{workdir} was trained with config.model.{key}={old!r}, now "
                             f"{value!r}: use a new --workdir or the saved value")
  target = jax.eval_shape(lambda: create_state(jax.random.key(0), model, tx))
  return checkpointing.restore_state(workdir, target)


def restore_recon(workdir: str) -> tuple[ReconNet, PyTree]:
  """(model, variables {'params', 'batch_stats'}) of the newest checkpoint in `workdir`."""
  model, variables, _ = load_trained(workdir)
  return model, variables


def _write_eval(writer, workdir: str, step: int, metrics: dict[str, float]) -> None:
  """TensorBoard scalars eval/*, and a JSON line per evaluation in <workdir>/eval_metrics.jsonl."""
  writer.write_scalars(step, {f"eval/{k}": v for k, v in metrics.items() if k != "num_examples"})
  line = json.dumps(dict(step=step, **metrics))
  logging.info("eval: %s", line)
  with open(pathlib.Path(workdir) / EVAL_FILE, "a") as f:
    f.write(line + "\n")


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> tuple[ReconState, dict[str, float]]:
  """Train (or resume) in `workdir`; returns the host state and the final test metrics."""
  writer = metric_writers.create_default_writer(workdir)
  builder = datasets.make_builder(synthfaces_config(config))
  arrays = landmark_arrays(experiment.load_morphable_model(config))
  model, tx = build_model(config), build_optimizer(config)
  if checkpointing.latest_step(workdir) is None:
    state = create_state(jax.random.key(config.seed), model, tx)
  else:
    state = _restore_state(config, workdir, model, tx)
    logging.info("Resumed from %s at step %d", workdir, int(state.step))
  manager = checkpointing.create_manager(workdir, config.keep_checkpoints, config.async_checkpoints)
  step_fn = jax.jit(functools.partial(train_step, model=model, tx=tx, weights=loss_weights(config)),
                    donate_argnums=(0,))
  evaluate_now = functools.partial(evaluate, model, builder=builder, arrays=arrays,
                                   resolution=config.model.input_size,
                                   batch_size=config.eval_batch_size)
  report = periodic_actions.ReportProgress(num_train_steps=config.num_steps, writer=writer)
  start, pending = int(state.step), []
  batches = train_batches(builder, config, start)
  for step in range(start, config.num_steps):
    state, step_metrics = step_fn(state, next(batches), arrays)
    pending.append(step_metrics)
    done = step + 1
    report(done, t=time.time())
    if done % config.log_every == 0 or done == config.num_steps:
      summary = {k: float(np.mean([m[k] for m in jax.device_get(pending)])) for k in pending[0]}
      writer.write_scalars(done, summary)
      pending = []
      if int(state.nonfinite) > config.max_nonfinite_steps:
        checkpointing.save(manager, done, jax.device_get(state), config, force=True)
        manager.wait_until_finished()
        raise FloatingPointError(
            f"{int(state.nonfinite)} steps had non-finite losses or gradients "
            f"(config.max_nonfinite_steps={config.max_nonfinite_steps}); the state is saved in "
            f"{checkpointing.checkpoint_dir(workdir)}")
    if done % config.checkpoint_every == 0 or done == config.num_steps:
      checkpointing.save(manager, done, jax.device_get(state), config)
    if done % config.eval_every == 0 and done != config.num_steps:
      _write_eval(writer, workdir, done, evaluate_now(state.variables))
  metrics = evaluate_now(state.variables)
  _write_eval(writer, workdir, int(state.step), metrics)
  manager.wait_until_finished()
  writer.flush()
  return jax.device_get(state), metrics
