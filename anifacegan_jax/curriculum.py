"""Training stages from the config: which StepConfig applies at a given iteration."""

from __future__ import annotations

import ml_collections

from anifacegan_jax.models.generator import EXPRESSION_MODES
from anifacegan_jax.models.layers import PRECISIONS, SINES
from anifacegan_jax.train_step import StepConfig


class ConfigError(ValueError):
  """A config field has a value training cannot use."""


def validate_stages(config: ml_collections.ConfigDict) -> None:
  """Stages sorted by start_step from 0, one resolution, divisible batch splits."""
  stages = list(config.stages)
  if not stages:
    raise ConfigError("config.stages is empty: give at least one stage starting at step 0")
  starts = [int(s.start_step) for s in stages]
  if starts[0] != 0 or starts != sorted(set(starts)):
    raise ConfigError(f"config.stages start_step values must start at 0 and increase, got {starts}")
  resolutions = {int(s.resolution) for s in stages}
  if len(resolutions) != 1:
    raise ConfigError(f"config.stages must share one resolution (the discriminator is built for "
                      f"one), got {sorted(resolutions)}")
  for i, stage in enumerate(stages):
    if stage.batch_split < 1:
      raise ConfigError(f"config.stages[{i}].batch_split must be >= 1 (generator sub-batches per "
                        f"step), got {stage.batch_split}")
    if stage.resolution < 1:
      raise ConfigError(f"config.stages[{i}].resolution must be >= 1, got {stage.resolution}")
    if stage.per_device_batch < 1 or stage.per_device_batch % stage.batch_split:
      raise ConfigError(f"config.stages[{i}]: per_device_batch {stage.per_device_batch} must be a "
                        f"positive multiple of batch_split {stage.batch_split}")


# Loop fields that must be positive integers (keep_checkpoints = 0 would delete every checkpoint).
POSITIVE_FIELDS = ("num_steps", "log_every", "checkpoint_every", "keep_checkpoints",
                   "snapshot_every", "num_snapshot", "chunk_size", "psi_samples")


def validate_loop(config: ml_collections.ConfigDict) -> None:
  """The training loop's counts: positive where a zero would divide by zero, never save or
  delete every checkpoint; checked before anything is built or compiled."""
  for field in POSITIVE_FIELDS:
    if not config[field] >= 1:  # also rejects NaN
      raise ConfigError(f"config.{field} must be >= 1, got {config[field]}")
  if not config.max_nonfinite_steps >= 0:
    raise ConfigError(f"config.max_nonfinite_steps must be >= 0 (consecutive skipped iterations "
                      f"before the run stops), got {config.max_nonfinite_steps}")


def validate(config: ml_collections.ConfigDict) -> None:
  """Every check a training config gets before the first compile."""
  validate_loop(config)
  validate_stages(config)
  validate_imitation(config)
  scale = config.model.get("deform_exp_scale", 1.0)
  if not (isinstance(scale, (int, float)) and scale > 0):  # also NaN
    raise ConfigError(f"config.model.deform_exp_scale must be > 0 (z_exp's factor at the "
                      f"deformation network; 1: the released network), got {scale!r}")
  validate_expression(config)
  for field, choices in (("sine", SINES), ("precision", PRECISIONS)):
    value = config.model.get(field, choices[0])
    if value not in choices:
      raise ConfigError(f"config.model.{field} must be one of {choices}, got {value!r}")


def validate_expression(config: ml_collections.ConfigDict) -> None:
  """config.model.expression is known, and a model without a deformation field ('template', the
  DiscoFaceGRAM baseline) asks for none of the deformation field's terms."""
  expression = config.model.get("expression", "deformation")
  if expression not in EXPRESSION_MODES:
    raise ConfigError(f"config.model.expression must be one of {EXPRESSION_MODES} (where z_exp "
                      f"enters: the deformation field, or the template's mapping network), got "
                      f"{expression!r}")
  if expression == "deformation":
    return
  imitation = config.imitation
  on = [f"config.imitation.{field}" for field in ("deform_weight", "reg_weight", "smooth_weight",
                                                  "deform_warmup_steps")
        if imitation.get(field, 0) != 0]
  if on:
    raise ConfigError(f"config.model.expression='template' has no deformation field, so "
                      f"{', '.join(on)} (its terms) must be 0")


def validate_imitation(config: ml_collections.ConfigDict) -> None:
  """Imitation settings training can use: L_lm has a reconstruction network, 2 or 3 dims."""
  imitation = config.imitation
  for field in ("chamfer_weight", "deform_weight", "reg_weight", "smooth_weight",
                "landmark_weight"):
    if not imitation[field] >= 0:  # also rejects NaN
      raise ConfigError(f"config.imitation.{field} must be >= 0 (0 switches the term off), got "
                        f"{imitation[field]}")
  warmup = imitation.get("deform_warmup_steps", 0)
  if not (isinstance(warmup, int) and warmup >= 0):
    raise ConfigError(f"config.imitation.deform_warmup_steps must be an integer >= 0 (0: no "
                      f"deformation warm-up), got {warmup!r}")
  if warmup > 0 and not imitation.deform_weight > 0:
    raise ConfigError("config.imitation.deform_warmup_steps > 0 fits the deformation network to "
                      "L_3DMM, which is off (config.imitation.deform_weight = 0): set the weight "
                      "or the steps to 0")
  b1 = imitation.get("deform_warmup_b1", 0.0)
  if not (isinstance(b1, (int, float)) and 0.0 <= b1 < 1.0):
    raise ConfigError(f"config.imitation.deform_warmup_b1 must be in [0, 1) (Adam β1 of the "
                      f"deformation warm-up), got {b1!r}")
  if imitation.landmark_dims not in (2, 3):
    raise ConfigError(f"config.imitation.landmark_dims must be 3 (3D landmarks, the paper) or 2 "
                      f"(the 2D-landmark ablation), got {imitation.landmark_dims}")
  if imitation.landmark_weight > 0 and not config.recon:
    raise ConfigError(
        "config.imitation.landmark_weight > 0 (L_lm) needs a face-reconstruction network: set "
        "--config.recon to a `python -m anifacegan_jax.train_recon` workdir or to "
        "Deep3DFaceRecon's epoch_20.pth, or set the weight to 0")


def stage_index(config: ml_collections.ConfigDict, step: int) -> int:
  """Index of the last stage whose start_step ≤ step."""
  return max(i for i, s in enumerate(config.stages) if s.start_step <= step)


def step_config(config: ml_collections.ConfigDict, index: int = 0, **overrides) -> StepConfig:
  """The static step settings of stage `index`, every one read from `config` (configs/default.py
  holds the defaults); `overrides` replace fields by name (tests, benchmarks)."""
  stage = config.stages[index]
  imitation = config.imitation
  settings = dict(
      resolution=int(stage.resolution), per_device_batch=int(stage.per_device_batch),
      batch_split=int(stage.batch_split), chunk_size=int(config.chunk_size),
      r1_gamma=float(config.loss.r1_gamma), pos_lambda=float(config.loss.pos_lambda),
      real_pos_lambda=float(config.loss.real_pos_lambda), ema_decay=float(config.ema_decay),
      fade_steps=int(config.fade_steps) if config.discriminator.fade_in else 0,
      stage_start=int(stage.start_step), yaw_std=float(config.camera.yaw_std),
      pitch_std=float(config.camera.pitch_std), pose_clamp=float(config.camera.clamp),
      chamfer_weight=float(imitation.chamfer_weight),
      deform_weight=float(imitation.deform_weight),
      reg_weight=float(imitation.reg_weight),
      smooth_weight=float(imitation.smooth_weight),
      imitation_points=int(imitation.points), imitation_noise=float(imitation.noise),
      smooth_radius=float(imitation.smooth_radius),
      chamfer_opacity=float(imitation.chamfer_opacity),
      landmark_weight=float(imitation.landmark_weight),
      landmark_dims=int(imitation.landmark_dims),
      # absent from configs saved before the field existed: the paper's routing
      deform_image_gradient=bool(imitation.get("deform_image_gradient", True)),
      deform_identity=bool(imitation.get("deform_identity", False)))
  unknown = set(overrides) - set(settings)
  if unknown:
    raise TypeError(f"step_config: no StepConfig field named {sorted(unknown)}")
  settings.update(overrides)
  return StepConfig(**settings)
