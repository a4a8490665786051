"""Training-loop helpers: prior selection, curriculum checks, checkpoints of either prior kind."""

import dataclasses
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from anifacegan_jax import checkpointing, curriculum, experiment, training
from anifacegan_jax import train_step as ts
from anifacegan_jax.models.priors import GaussianPrior, save_prior
from anifacegan_jax.models.vae import VAEPrior
from configs import synthface

from conftest import save_recon_run


@pytest.fixture()
def config():
  return synthface.get_config("tiny")


def test_prior_from_file_restores_through_a_checkpoint(tmp_path, config):
  prior = VAEPrior.init(jax.random.key(0))
  save_prior(prior, tmp_path / "prior.npz")
  config.prior = f"file:{tmp_path / 'prior.npz'}"
  loaded = training.build_prior(config, builder=None)
  assert isinstance(loaded, VAEPrior)
  generator, discriminator = experiment.build_models(config)
  g_tx, d_tx = experiment.build_optimizers(config)
  state = ts.create_state(jax.random.key(1), generator, discriminator, g_tx, d_tx, loaded)
  manager = checkpointing.create_manager(tmp_path / "run", async_save=False)
  checkpointing.save(manager, 1, state, config)
  manager.wait_until_finished()
  target = jax.eval_shape(lambda: ts.create_state(jax.random.key(1), generator, discriminator,
                                                  g_tx, d_tx, experiment.prior_template(config)))
  restored = checkpointing.restore_state(tmp_path / "run", target)
  key = jax.random.key(2)
  np.testing.assert_allclose(restored.prior.sample_exp(key, 3), prior.sample_exp(key, 3),
                             rtol=1e-6)
  assert checkpointing.restore_config(tmp_path / "run").prior == config.prior


def test_standard_prior_and_bad_prior_names(config):
  config.prior = "standard"
  assert isinstance(training.build_prior(config, builder=None), GaussianPrior)
  config.prior = "vae"
  with pytest.raises(curriculum.ConfigError, match="'fit', 'standard' or 'file:<path>'"):
    training.build_prior(config, builder=None)


def test_stage_validation_names_the_problem(config):
  config.stages[0].batch_split = 3
  with pytest.raises(curriculum.ConfigError, match=r"stages\[0\].*multiple of batch_split 3"):
    curriculum.validate_stages(config)


def test_face_model_required_for_real_data(config):
  config.dataset.name = "ffhq_faces"
  with pytest.raises(curriculum.ConfigError, match="config.face_model is empty"):
    experiment.load_face_model(config)


def test_examples_before_follows_the_curriculum(config):
  assert training.examples_before(config, 5, devices=8) == 5 * config.stages[0].per_device_batch * 8


def test_landmark_loss_settings_are_validated(config):
  config.imitation.landmark_weight = 1e4
  with pytest.raises(curriculum.ConfigError, match="needs a face-reconstruction network.*recon"):
    curriculum.validate_imitation(config)
  config.recon = "/somewhere"
  curriculum.validate_imitation(config)
  assert curriculum.step_config(config, 0).uses_recon
  config.imitation.landmark_dims = 4
  with pytest.raises(curriculum.ConfigError, match="landmark_dims must be 3 .* or 2"):
    curriculum.validate_imitation(config)
  config.imitation.landmark_dims = 3
  config.imitation.chamfer_weight = float("nan")
  with pytest.raises(curriculum.ConfigError, match="chamfer_weight must be >= 0"):
    curriculum.validate_imitation(config)


def test_deformation_warmup_settings_are_validated(config):
  config.imitation.deform_warmup_steps = -1
  with pytest.raises(curriculum.ConfigError, match="deform_warmup_steps must be an integer >= 0"):
    curriculum.validate_imitation(config)
  config.imitation.deform_warmup_steps = 100
  curriculum.validate_imitation(config)
  config.imitation.deform_warmup_b1 = 1.0
  with pytest.raises(curriculum.ConfigError, match="deform_warmup_b1 must be in"):
    curriculum.validate_imitation(config)
  config.imitation.deform_warmup_b1 = 0.9
  curriculum.validate_imitation(config)
  config.model.deform_exp_scale = 0.0
  with pytest.raises(curriculum.ConfigError, match="deform_exp_scale must be > 0"):
    curriculum.validate(config)
  config.model.deform_exp_scale = 1.0
  config.model.precision = "fp8"
  with pytest.raises(curriculum.ConfigError, match="model.precision must be one of"):
    curriculum.validate(config)
  config.model.precision = "bfloat16"
  config.model.sine = "cos"
  with pytest.raises(curriculum.ConfigError, match="model.sine must be one of"):
    curriculum.validate(config)
  config.imitation.deform_weight = 0.0
  with pytest.raises(curriculum.ConfigError, match="L_3DMM, which is off"):
    curriculum.validate_imitation(config)


def test_a_model_without_deformation_field_refuses_its_terms(config):
  config.model.expression = "template"  # DiscoFaceGRAM: the field's terms would train nothing
  with pytest.raises(curriculum.ConfigError, match=r"no deformation field, so "
                     r"config.imitation.deform_weight, config.imitation.reg_weight, "
                     r"config.imitation.smooth_weight \(its terms\) must be 0"):
    curriculum.validate(config)
  for field in ("deform_weight", "reg_weight", "smooth_weight"):
    config.imitation[field] = 0.0
  curriculum.validate(config)
  config.model.expression = "both"
  with pytest.raises(curriculum.ConfigError, match="model.expression must be one of"):
    curriculum.validate(config)


def test_recon_network_loads_from_a_workdir_or_fails_clearly(tmp_path, config):
  model, state = save_recon_run(tmp_path / "recon")
  config.recon = str(tmp_path / "recon")
  loaded, variables = experiment.load_recon(config)
  assert loaded == model
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables, state.variables)
  config.face_model = "/data/BFM_model_front.mat"
  with pytest.raises(curriculum.ConfigError, match="trained for the 3DMM face_model=''"):
    experiment.load_recon(config)
  config.recon = str(tmp_path / "missing")
  with pytest.raises(curriculum.ConfigError, match="missing: no such file or directory"):
    experiment.load_recon(config)
  (tmp_path / "epoch_20.pth").write_bytes(b"not a checkpoint")
  config.recon = str(tmp_path / "epoch_20.pth")
  with pytest.raises(Exception, match="epoch_20.pth: not a zip archive"):
    experiment.load_recon(config)


def test_collapse_check_warns_names_causes_and_stops_when_asked(config, caplog):
  healthy = dict(crossings=0.6, foreground=0.5)
  collapsed = dict(crossings=0.01, foreground=0.002)
  training.check_manifolds(healthy, 10, config, "W/checkpoints")  # nothing to say
  assert not caplog.records
  with caplog.at_level("WARNING"):
    training.check_manifolds(collapsed, 10, config, "W/checkpoints")
  message = caplog.records[-1].getMessage()
  for cause in ("config.model.depth_gradient", "config.optim.manifold_lr",
                "config.model.num_samples", "step 10", "0.010"):
    assert cause in message
  config.collapse_crossings = 0.0  # never
  caplog.clear()
  training.check_manifolds(collapsed, 10, config, "W/checkpoints")
  assert not caplog.records
  config.collapse_crossings = 0.2
  config.stop_on_collapse = True
  with pytest.raises(training.ManifoldCollapseError, match="saved in W/checkpoints"):
    training.check_manifolds(collapsed, 10, config, "W/checkpoints")
  training.check_manifolds(healthy, 10, config, "W/checkpoints")


def test_every_step_setting_comes_from_the_config():
  # One source of defaults: StepConfig has none; step_config reads each field from the config.
  from configs import default
  config = default.get_config()
  given = curriculum.step_config(config)
  assert given.chamfer_opacity == config.imitation.chamfer_opacity
  assert given.deform_weight == config.imitation.deform_weight
  assert given.yaw_std == config.camera.yaw_std and given.chunk_size == config.chunk_size
  assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(ts.StepConfig))
  with pytest.raises(TypeError):
    ts.StepConfig(resolution=8, per_device_batch=2)
  assert curriculum.step_config(config, chunk_size=64).chunk_size == 64
  with pytest.raises(TypeError, match="no StepConfig field named \\['chunk'\\]"):
    curriculum.step_config(config, chunk=64)


REPO = pathlib.Path(__file__).resolve().parents[1]
KEEP_CROSSINGS = 0.5  # a fresh tiny generator finds ≈ 0.8 of its crossings


def _logged(workdir: pathlib.Path, tag: str) -> list[float]:
  import tensorflow as tf
  return [float(tf.make_ndarray(v.tensor)) if v.HasField("tensor") else v.simple_value
          for path in sorted(workdir.glob("events.out.tfevents.*"))
          for event in tf.compat.v1.train.summary_iterator(str(path))
          for v in event.summary.value if v.tag == tag]


def test_tiny_run_with_imitation_keeps_its_manifolds(tmp_path):
  # Regression test of the collapse in BENCHMARKS ("Keeping the radiance manifolds"): the tiny
  # config with its imitation losses on, on one CPU device with the generator's learning rates
  # × 10 (where depth with gradient lost every crossing by step 150), trains with the collapse
  # guard set to stop; the run must finish with its crossings and opacity up. It starts with the
  # deformation warm-up (config.imitation.deform_warmup_steps).
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device: 2 images a step
  result = subprocess.run(
      [sys.executable, "-m", "anifacegan_jax.main", "--config=configs/synthface.py:tiny",
       f"--workdir={tmp_path}", f"--config.dataset.data_dir={tmp_path / 'tfds'}",
       "--config.dataset.num_train=64", "--config.num_steps=120", "--config.log_every=20",
       "--config.checkpoint_every=120", "--config.snapshot_every=1000",
       "--config.optim.g_lr=2e-4", "--config.optim.deform_lr=2e-4",
       "--config.optim.manifold_lr=2e-4", f"--config.collapse_crossings={KEEP_CROSSINGS}",
       "--config.stop_on_collapse=True", "--config.imitation.deform_warmup_steps=40"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  crossings, foreground = _logged(tmp_path, "crossings"), _logged(tmp_path, "foreground")
  assert len(crossings) == 6 and min(crossings) > KEEP_CROSSINGS, crossings
  assert min(foreground[1:]) > 0.3, foreground  # the face becomes more opaque, not less
  # the fresh run fitted its deformation field first, logged once at step 0 (whether 40 steps at
  # this learning rate help is tests/warmup_test.py's question, not this one's)
  ratio = _logged(tmp_path, "warmup/ratio")
  assert len(ratio) == 1 and np.isfinite(ratio[0]) and ratio[0] > 0, ratio


def test_checkpoint_of_another_state_layout_fails_clearly(tmp_path, config):
  import optax
  generator, discriminator = experiment.build_models(config)
  g_tx, d_tx = experiment.build_optimizers(config)
  old = ts.create_state(jax.random.key(0), generator, discriminator, optax.adam(1e-4), d_tx)
  manager = checkpointing.create_manager(tmp_path, async_save=False)
  checkpointing.save(manager, 3, old, config)
  manager.wait_until_finished()
  target = jax.eval_shape(lambda: ts.create_state(jax.random.key(0), generator, discriminator,
                                                  g_tx, d_tx))
  with pytest.raises(checkpointing.CheckpointMismatchError,
                     match=r"checkpoints/3 does not have this version's state layout") as error:
    checkpointing.restore_state(tmp_path, target)
  assert len(str(error.value)) < 800


def test_resuming_with_a_model_field_the_run_predates_compares_its_default(tmp_path, config):
  # A run saved before model.deform_exp_scale existed ran F at the default, 1: resuming it with
  # SynthFaces' 16 would change what its field means, and is refused by name.
  generator, discriminator = experiment.build_models(config)
  g_tx, d_tx = experiment.build_optimizers(config)
  state = ts.create_state(jax.random.key(0), generator, discriminator, g_tx, d_tx)
  older = config.copy_and_resolve_references()
  with older.unlocked():
    del older.model["deform_exp_scale"]
  manager = checkpointing.create_manager(tmp_path, async_save=False)
  checkpointing.save(manager, 2, state, older)
  manager.wait_until_finished()
  assert config.model.deform_exp_scale == 16.0
  with pytest.raises(curriculum.ConfigError,
                     match=r"config.model.deform_exp_scale=1.0, now 16.0: use a new --workdir"):
    training._check_resumable(config, str(tmp_path))
  config.model.deform_exp_scale = 1.0
  training._check_resumable(config, str(tmp_path))


def test_every_ablation_arm_is_a_valid_config_that_changes_only_its_part():
  # benchmarks/ablations.py: the six arms of BENCHMARKS.md "Ablations" differ from the full model
  # by their overrides alone (and the network L_lm needs), and each passes training's checks.
  import argparse
  from benchmarks import ablations
  args = argparse.Namespace(data_dir="/data", num_steps=2000, num_train=0)
  full = ablations.arm_config("full", args)
  assert full.imitation.landmark_weight > 0 and full.recon == ablations.RECON
  assert full.model.expression == "deformation" and full.dataset.num_train == 30000
  flat = lambda config: {(section, key): value for section in ("model", "imitation")
                         for key, value in config[section].items()}
  assert set(ablations.ARMS) == {"full", "adversarial", "no_lm", "lm_2d", "no_deform_imitation",
                                 "discofacegram"}
  for arm, (overrides, _) in ablations.ARMS.items():
    config = ablations.arm_config(arm, args)
    curriculum.validate(config)
    changed = {k: v for k, v in flat(config).items() if flat(full)[k] != v}
    assert changed == {(s, k): v for s, fields in overrides.items() for k, v in fields.items()
                       if flat(full)[(s, k)] != v}, arm
    assert (config.recon == ablations.RECON) == (config.imitation.landmark_weight > 0), arm
  record = dict(arms={"full": dict(train_wall_s=10.0, metrics={"fid": 12.345, "ds/exp": 2.0})})
  row = ablations.table(record).splitlines()[-1]
  assert row.startswith("| full | 12.3 | – |") and "| 2.00 |" in row and row.endswith("| 10 |")
