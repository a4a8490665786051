"""The deformation warm-up: the field alone learns the 3DMM's offsets, nothing else moves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anifacegan_jax import train_step as ts
from anifacegan_jax import warmup
from anifacegan_jax.models.discriminator import Discriminator
from anifacegan_jax.models.generator import AnimatableGenerator
from anifacegan_jax.models.priors import GaussianPrior, sample_latents
from conftest import step_config

TINY = dict(radiance_hidden=16, manifold_hidden=16, deform_hidden=32, num_samples=8,
            num_levels=4)
CFG = step_config(resolution=8, per_device_batch=2, chunk_size=64, imitation_points=64,
                  deform_weight=1e4, reg_weight=10.0, smooth_weight=1e3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  from anifacegan_jax.synthfaces import procedural
  face = procedural.load_procedural(cache_dir=tmp_path_factory.mktemp("face")).arrays()
  generator = AnimatableGenerator(**TINY)
  g_tx, d_tx = ts.make_optimizers()
  # a prior of SynthFaces-like codes: N(0, I) expressions would be far outside the 3DMM's range
  rng = np.random.default_rng(0)
  prior = GaussianPrior.fit(rng.normal(0, 0.8, (256, 80)).astype(np.float32),
                            procedural.sample_expressions(rng, 256).astype(np.float32))
  state = ts.create_state(jax.random.key(0), generator, Discriminator(8), g_tx, d_tx, prior)
  return generator, face, state


def _imitation(generator, face, params, state):
  """L_3DMM of `params` on a fixed batch of 16 prior samples (not one the warm-up saw)."""
  latents = sample_latents(state.prior, jax.random.key(99), 16)
  return float(ts.imitation_terms(generator, params, ts.Teachers(face=face), latents, None, None,
                                  jax.random.key(98), CFG)["deform_imitation"])


def test_warmup_fits_the_deformation_alone(setup):
  generator, face, state = setup
  logged = []
  tx = ts.deformation_optimizer(1e-4, 0.3, 0.0, 0.9)
  new, curve = warmup.warm_up_deformation(generator, state, face, CFG, tx, steps=200, batch=4,
                                          key=jax.random.key(1), log_every=100, log=logged.append)
  assert [e["step"] for e in curve] == [100, 200] and logged == curve
  assert set(curve[0]) == {"step", "deform_imitation", "deform_reg", "deform_smooth", "ratio"}
  before = _imitation(generator, face, state.g_params, state)
  after = _imitation(generator, face, new.g_params, state)
  assert after < 0.85 * before, (before, after)
  for name in state.g_params:  # the template is untouched; the EMA starts from the fitted field
    same = jax.tree_util.tree_all(jax.tree_util.tree_map(
        lambda a, b: bool(jnp.array_equal(a, b)), new.g_params[name], state.g_params[name]))
    assert same == (name != "deformation"), name
  for a, b in zip(jax.tree_util.tree_leaves(new.ema_params["deformation"]),
                  jax.tree_util.tree_leaves(new.g_params["deformation"])):
    np.testing.assert_array_equal(a, b)
  assert int(new.step) == 0 and new.g_opt_state is state.g_opt_state


def test_warmup_arguments_are_checked(setup):
  generator, face, state = setup
  tx = ts.deformation_optimizer(1e-3, 0.3, 0.0, 0.9)
  with pytest.raises(ValueError, match="steps must be >= 0"):
    warmup.warm_up_deformation(generator, state, face, CFG, tx, steps=-1, batch=2,
                               key=jax.random.key(0))
  off = step_config(resolution=8, per_device_batch=2, chunk_size=64)
  with pytest.raises(ValueError, match="L_3DMM, whose weight is 0"):
    warmup.warm_up_deformation(generator, state, face, off, tx, steps=5, batch=2,
                               key=jax.random.key(0))



def test_warmup_from_a_config(setup):
  from anifacegan_jax import experiment
  from configs import synthface
  _, face, _ = setup
  config = synthface.get_config("tiny")
  config.imitation.deform_warmup_steps = 20
  config.log_every = 10
  generator, discriminator = experiment.build_models(config)
  g_tx, d_tx = experiment.build_optimizers(config)
  state = ts.create_state(jax.random.key(0), generator, discriminator, g_tx, d_tx)
  new, curve = warmup.warm_up_from_config(config, generator, state, face)
  assert [e["step"] for e in curve] == [10, 20]
  moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()),
                                 new.g_params["deformation"], state.g_params["deformation"])
  assert max(jax.tree_util.tree_leaves(moved)) > 0
  # the warm-up's own Adam β1 (config.imitation.deform_warmup_b1) is the one used
  config.imitation.deform_warmup_b1 = 0.0
  plain, _ = warmup.warm_up_from_config(config, generator, state, face)
  differ = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()),
                                  new.g_params["deformation"], plain.g_params["deformation"])
  assert max(jax.tree_util.tree_leaves(differ)) > 0
