"""Training-loop helpers: prior selection, curriculum checks, checkpoints of either prior kind."""

import jax
import numpy as np
import pytest

from anifacegan_jax import checkpointing, curriculum, train
from anifacegan_jax import train_step as ts
from anifacegan_jax.models.priors import GaussianPrior, save_prior
from anifacegan_jax.models.vae import VAEPrior
from configs import synthface


@pytest.fixture()
def config():
  return synthface.get_config("tiny")


def test_prior_from_file_restores_through_a_checkpoint(tmp_path, config):
  prior = VAEPrior.init(jax.random.key(0))
  save_prior(prior, tmp_path / "prior.npz")
  config.prior = f"file:{tmp_path / 'prior.npz'}"
  loaded = train.build_prior(config, builder=None)
  assert isinstance(loaded, VAEPrior)
  generator, discriminator = train.build_models(config)
  g_tx, d_tx = train.build_optimizers(config)
  state = ts.create_state(jax.random.key(1), generator, discriminator, g_tx, d_tx, loaded)
  manager = checkpointing.create_manager(tmp_path / "run", async_save=False)
  checkpointing.save(manager, 1, state, config)
  manager.wait_until_finished()
  target = jax.eval_shape(lambda: ts.create_state(jax.random.key(1), generator, discriminator,
                                                  g_tx, d_tx, train.prior_template(config)))
  restored = checkpointing.restore_state(tmp_path / "run", target)
  key = jax.random.key(2)
  np.testing.assert_allclose(restored.prior.sample_exp(key, 3), prior.sample_exp(key, 3),
                             rtol=1e-6)
  assert checkpointing.restore_config(tmp_path / "run").prior == config.prior


def test_standard_prior_and_bad_prior_names(config):
  config.prior = "standard"
  assert isinstance(train.build_prior(config, builder=None), GaussianPrior)
  config.prior = "vae"
  with pytest.raises(curriculum.ConfigError, match="'fit', 'standard' or 'file:<path>'"):
    train.build_prior(config, builder=None)


def test_stage_validation_names_the_problem(config):
  config.stages[0].batch_split = 3
  with pytest.raises(curriculum.ConfigError, match=r"stages\[0\].*multiple of batch_split 3"):
    curriculum.validate_stages(config)


def test_face_model_required_for_real_data(config):
  config.dataset.name = "ffhq_faces"
  with pytest.raises(curriculum.ConfigError, match="config.face_model is empty"):
    train.load_face_model(config)


def test_examples_before_follows_the_curriculum(config):
  assert train.examples_before(config, 5, devices=8) == 5 * config.stages[0].per_device_batch * 8
