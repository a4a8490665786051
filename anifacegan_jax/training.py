"""The training loop: data, models, create-or-resume, curriculum, checkpoints and summaries."""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

from anifacegan_jax import checkpointing, cli, curriculum, warmup
from anifacegan_jax import train_step as ts
from anifacegan_jax.data import datasets, input_pipeline
from anifacegan_jax.experiment import (PRIOR_FILE, build_models, build_optimizers,  # noqa: F401
                                       load_face_model, load_recon, prior_template)
from anifacegan_jax.models.generator import AnimatableGenerator, mean_radiance_codes, render
from anifacegan_jax.models.priors import GaussianPrior, Prior, load_prior, sample_latents
from anifacegan_jax.types import Camera, PyTree


def build_prior(config: ml_collections.ConfigDict, builder) -> Prior:
  """The latent prior named by config.prior.

  'fit': a Gaussian fitted to the training split's id/exp coefficients; 'standard': N(0, I);
  'file:<path>': a prior saved by `python -m anifacegan_jax.fit_prior` (Gaussian or VAEs).
  """
  if config.prior == "standard":
    return GaussianPrior.standard()
  if config.prior == "fit":
    coefficients = datasets.coefficient_table(builder, "train")
    return GaussianPrior.fit(coefficients[:, :80], coefficients[:, 80:144])
  if config.prior.startswith(PRIOR_FILE):
    return load_prior(pathlib.Path(config.prior[len(PRIOR_FILE):]).expanduser())
  raise curriculum.ConfigError(
      f"config.prior must be 'fit', 'standard' or 'file:<path>', got {config.prior!r}")


def _generator_default(key: str):
  """The AnimatableGenerator default of model field `key` (None if it has none)."""
  field = AnimatableGenerator.__dataclass_fields__.get(key)
  return None if field is None or field.default is dataclasses.MISSING else field.default


def _check_resumable(config: ml_collections.ConfigDict, workdir: str) -> None:
  """A workdir trained with other network shapes cannot be resumed: say which field differs."""
  for step in reversed(checkpointing.saved_steps(workdir)):  # the newest config that reads
    try:
      saved = checkpointing.restore_config(workdir, step)
      break
    except checkpointing.CheckpointCorruptError as error:
      logging.warning("%s", error)
  else:
    return  # no config reads: restore_newest_good says so
  for section in ("model", "discriminator"):
    for key, value in config[section].items():
      old = saved[section].get(key) if section in saved else None
      if old is None and section == "model":  # a field newer than the run: it had the default
        old = _generator_default(key)
      if old is not None and old != value:
        raise curriculum.ConfigError(
            f"{workdir} was trained with config.{section}.{key}={old!r}, now {value!r}: use a new "
            "--workdir or the saved value")


def create_or_restore(config, workdir, generator, discriminator, g_tx, d_tx,
                      prior_fn, step: int | None = None) -> ts.GanState:
  """A fresh state, or the newest intact checkpoint of `workdir` (automatic resume), or the
  checkpoint at `step` (newer ones are set aside, not deleted: `checkpointing.set_aside_after`)."""
  key = jax.random.key(config.seed)
  if step is not None and step not in checkpointing.saved_steps(workdir):
    raise checkpointing.CheckpointNotFoundError(
        f"--step={step}: no such checkpoint in {checkpointing.checkpoint_dir(workdir)} (saved: "
        f"{checkpointing.saved_steps(workdir) or 'none'})")
  if checkpointing.latest_step(workdir) is None:
    return ts.create_state(key, generator, discriminator, g_tx, d_tx, prior_fn())
  _check_resumable(config, workdir)
  template = prior_template(config)
  target = jax.eval_shape(lambda: ts.create_state(key, generator, discriminator, g_tx, d_tx,
                                                  template))
  if step is not None:
    state = checkpointing.restore_state(workdir, target, step)  # checked before moving anything
    moved = checkpointing.set_aside_after(workdir, step)
    if moved:
      logging.warning("--step=%d: the newer checkpoints were moved to %s", step, moved)
  else:
    state = checkpointing.restore_newest_good(workdir, target)
  logging.info("Resumed from %s at step %d", workdir, int(state.step))
  return state


def examples_before(config: ml_collections.ConfigDict, step: int, devices: int) -> int:
  """Examples (per process) consumed by iterations [0, step) under the curriculum."""
  total = 0
  for i, stage in enumerate(config.stages):
    end = config.stages[i + 1].start_step if i + 1 < len(config.stages) else step
    steps = max(0, min(step, end) - stage.start_step)
    total += steps * stage.per_device_batch * devices
  return total


def make_snapshot_fn(generator, config, state: ts.GanState):
  """Renders the fixed snapshot latents with the EMA weights, ψ-truncated, as a (1, H, W, 3) grid."""
  num = int(config.num_snapshot)
  latents = sample_latents(state.prior, jax.random.key(config.seed + 1), num)
  camera = Camera.frontal(num)
  resolution = int(config.stages[0].resolution)

  @jax.jit
  def snapshot(ema_params, mean_codes):
    out = render(generator, {"params": ema_params}, latents, camera, resolution=resolution,
                 chunk_size=config.chunk_size, lock_view=True, psi=config.psi,
                 mean_codes=mean_codes)
    images = (jnp.clip(out.image, -1, 1) + 1) / 2
    return jnp.concatenate(list(images), axis=1)[None]

  def run(ema_params, prior):
    mean = mean_radiance_codes(generator, {"params": ema_params}, jax.random.key(config.seed + 2),
                               sample_z_id=prior.sample_id, num=config.psi_samples,
                               sample_z_exp=prior.sample_exp)
    return snapshot(ema_params, mean)

  return run


class NonFiniteStop(cli.StopRequested):
  """Training stopped after config.max_nonfinite_steps consecutive skipped iterations."""


class ManifoldCollapseError(cli.StopRequested):
  """Training stopped because the radiance manifolds left the sampled range (config asked)."""


def check_manifolds(summary: dict, step: int, config: ml_collections.ConfigDict,
                    checkpoints: str) -> None:
  """Warn (or, with config.stop_on_collapse, raise ManifoldCollapseError) when the logged
  fraction of ray-manifold crossings is under config.collapse_crossings."""
  crossings, threshold = summary.get("crossings"), float(config.collapse_crossings)
  if crossings is None or threshold <= 0 or crossings >= threshold:
    return
  m = config.model
  message = (
      f"step {step}: only {crossings:.3f} of the ray-manifold crossings are found (threshold "
      f"config.collapse_crossings={threshold}; manifold opacity {summary.get('foreground', 0):.3f})"
      f": the radiance manifolds are leaving the sampled range [{m.near}, {m.far}], and once no "
      "ray crosses them no gradient reaches the manifold predictor. Likely causes: depth with "
      f"gradient under L_Ch (config.model.depth_gradient={m.depth_gradient}; the official renderer "
      f"has none), a manifold learning rate too high (config.optim.manifold_lr="
      f"{config.optim.manifold_lr}; GRAM's CARLA setting is 0.1 x g_lr), too few samples or too "
      f"narrow a manifold network (config.model.num_samples={m.num_samples}, manifold_hidden="
      f"{m.manifold_hidden}).")
  if config.stop_on_collapse:
    raise ManifoldCollapseError(f"{message} Stopped (config.stop_on_collapse); the state at this "
                                f"step is saved in {checkpoints}.")
  logging.warning("%s", message)


def _log_metrics(writer, step, pending: list) -> dict:
  fetched = jax.device_get(pending)
  summary = {k: float(np.mean([m[k][0] for m in fetched])) for k in fetched[0]}
  writer.write_scalars(step, summary)
  return summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       step: int | None = None) -> ts.GanState:
  """Train (or resume) in `workdir`, from its checkpoint at `step` if given; returns the final
  host-side state."""
  curriculum.validate(config)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  builder = datasets.make_builder(config)
  generator, discriminator = build_models(config)
  g_tx, d_tx = build_optimizers(config)
  state = create_or_restore(config, workdir, generator, discriminator, g_tx, d_tx,
                            functools.partial(build_prior, config, builder), step)
  start = int(state.step)
  if start == 0 and config.imitation.deform_warmup_steps > 0:  # a fresh run: the field first
    state = _warm_up(config, generator, state, writer)
  manager = checkpointing.create_manager(workdir, config.keep_checkpoints,
                                         config.async_checkpoints)
  snapshot = make_snapshot_fn(generator, config, state)
  replicated = ts.replicate(state)
  base_key = ts.replicate(jax.random.key(config.seed + 3))
  report = periodic_actions.ReportProgress(num_train_steps=config.num_steps, writer=writer)
  devices = jax.local_device_count()
  stage, p_step, batches, pending = None, None, None, []
  stop_after = max(1, config.max_nonfinite_steps)  # consecutive skipped iterations
  previous = [int(state.nonfinite)]  # the last step's consecutive skips (on the device later)
  face = recon = recon_variables = None
  with cli.SignalStop() as stop:
    for step in range(start, config.num_steps):
      index = curriculum.stage_index(config, step)
      if index != stage:
        stage, cfg = index, curriculum.step_config(config, index)
        if cfg.uses_face_model and face is None:
          face = ts.replicate(load_face_model(config))
        if cfg.uses_recon and recon is None:
          recon, host_variables = load_recon(config)
          recon_variables = ts.replicate(host_variables)
        teachers = ts.Teachers(face=face if cfg.uses_face_model else None,
                               recon=recon_variables if cfg.uses_recon else None)
        p_step = ts.make_train_step(generator, discriminator, g_tx, d_tx, cfg,
                                    recon=recon if cfg.uses_recon else None)
        batches = input_pipeline.device_batches(input_pipeline.create_dataset(
            builder, "train",
            global_batch_size=cfg.per_device_batch * devices * jax.process_count(),
            resolution=cfg.resolution, random_flip=config.dataset.random_flip, seed=config.seed,
            shuffle_buffer=config.dataset.shuffle_buffer,
            skip_examples=examples_before(config, step, devices)))
      replicated, metrics = p_step(replicated, next(batches), base_key, teachers)
      pending.append(metrics)
      done = step + 1
      report(done, t=time.time())
      # Consecutive skipped updates: the previous step's count is read after this step is
      # dispatched (no wait in a clean run); only when this step could reach the limit is its
      # own count read at once, so the stop comes exactly at the limit.
      skipped = int(previous[0])
      if skipped >= stop_after - 1:
        skipped = int(metrics["nonfinite_steps"][0])
      previous = metrics["nonfinite_steps"]
      if skipped >= stop_after:
        _log_metrics(writer, done, pending)
        _save(manager, done, replicated, config, force=True)  # skipped updates: the last good state
        manager.wait_until_finished()
        raise NonFiniteStop(
            f"step {done}: {skipped} consecutive iterations had non-finite losses, gradients or "
            f"updated parameters and were skipped (config.max_nonfinite_steps="
            f"{config.max_nonfinite_steps}); the parameters of the last good iteration are "
            f"saved in {checkpointing.checkpoint_dir(workdir)}/{done}. Lower the learning rates "
            "(config.optim.*_lr) or check the data for NaN.")
      if done % config.log_every == 0 or done == config.num_steps:
        summary = _log_metrics(writer, done, pending)
        pending = []
        try:
          check_manifolds(summary, done, config, checkpointing.checkpoint_dir(workdir))
        except ManifoldCollapseError:
          _save(manager, done, replicated, config, force=True)
          manager.wait_until_finished()
          raise
      if jax.process_index() == 0 and (done % config.snapshot_every == 0
                                       or done == config.num_steps):
        host = ts.unreplicate(replicated)  # local: no collective, process 0 only
        writer.write_images(done, {"samples": np.asarray(snapshot(host.ema_params, host.prior))})
      if done % config.checkpoint_every == 0 or done == config.num_steps:
        _save(manager, done, replicated, config)
      if _stop_now(stop, done, config):
        if manager.latest_step() != done:
          _save(manager, done, replicated, config, force=True)
        manager.wait_until_finished()
        writer.flush()
        raise cli.Interrupted(
            f"{stop.requested or 'a signal to another process'} at step {done}: the state is "
            f"saved in {checkpointing.checkpoint_dir(workdir)}/{done}; the same command resumes "
            "it", stop.signum or 15)
  manager.wait_until_finished()
  writer.flush()
  return ts.unreplicate(replicated)


def _warm_up(config, generator, state: ts.GanState, writer) -> ts.GanState:
  """The deformation warm-up (`warmup.warm_up_from_config`), its curve in the log at step 0."""
  tick = time.perf_counter()

  def log(entry):
    logging.info("deformation warm-up step %d: %s", entry["step"],
                 ", ".join(f"{k} {v:.4g}" for k, v in entry.items() if k != "step"))
  state, curve = warmup.warm_up_from_config(config, generator, state, load_face_model(config), log)
  writer.write_scalars(0, {f"warmup/{k}": v for k, v in curve[-1].items() if k != "step"})
  logging.info("deformation warm-up: %d steps in %.1f s, L_3DMM ratio %.3f",
               curve[-1]["step"], time.perf_counter() - tick, curve[-1]["ratio"])
  return state


def _stop_now(stop: cli.SignalStop, step: int, config) -> bool:
  """Whether to stop after this step on a signal: at once with one process; with several, at a
  log_every boundary when any of them got one (every process asks there, and they save together)."""
  if jax.process_count() == 1:
    return stop.requested is not None
  if step % config.log_every:
    return False
  from jax.experimental import multihost_utils
  flags = multihost_utils.process_allgather(np.array(stop.requested is not None, np.int32))
  return bool(np.any(flags))


def _save(manager, step: int, replicated: PyTree, config, force: bool = False) -> None:
  host = ts.unreplicate(replicated)
  checkpointing.save(manager, step, host, config, force=force)
