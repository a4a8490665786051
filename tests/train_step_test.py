"""The pmapped GAN step on 8 fake CPU devices: replicas agree, D learns, non-finite steps skip."""

import functools

import flax.jax_utils
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from anifacegan_jax import train_step as ts
from anifacegan_jax.models.discriminator import Discriminator
from anifacegan_jax.models.generator import AnimatableGenerator
from anifacegan_jax.types import Batch

TINY = dict(radiance_hidden=32, manifold_hidden=32, deform_hidden=32, num_samples=16,
            num_levels=6)
CFG = ts.StepConfig(resolution=8, per_device_batch=2, batch_split=2, chunk_size=64)


@pytest.fixture(scope="module")
def setup():
  generator, discriminator = AnimatableGenerator(**TINY), Discriminator(8)
  g_tx, d_tx = ts.make_optimizers()
  state = ts.create_state(jax.random.key(0), generator, discriminator, g_tx, d_tx)
  rng = np.random.default_rng(0)
  batch = Batch(image=jnp.asarray(rng.uniform(-1, 1, (8, 2, 8, 8, 3)), jnp.float32),
                pose=jnp.asarray(np.pi / 2 + rng.normal(0, 0.1, (8, 2, 2)), jnp.float32),
                coefficients=jnp.zeros((8, 2, 257)), landmarks=jnp.zeros((8, 2, 68, 2)))
  return generator, discriminator, g_tx, d_tx, state, batch


@pytest.fixture(scope="module")
def p_step(setup):
  generator, discriminator, g_tx, d_tx, _, _ = setup
  return ts.make_train_step(generator, discriminator, g_tx, d_tx, CFG)


def _replicate(tree):
  return flax.jax_utils.replicate(tree, axis_name="batch")


def test_one_step_keeps_replicas_identical(setup, p_step):
  *_, state, batch = setup
  new, metrics = p_step(_replicate(state), batch, _replicate(jax.random.key(1)))
  assert int(new.step[0]) == 1 and int(new.nonfinite[0]) == 0
  for tree in (new.g_params, new.d_params, new.ema_params):
    for leaf in jax.tree_util.tree_leaves(tree):
      np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[0], leaf.shape))
  moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a[0] - b).max()), new.g_params,
                                 state.g_params)
  assert max(jax.tree_util.tree_leaves(moved)) > 0
  for name, value in metrics.items():
    assert np.isfinite(value).all(), name
  assert set(metrics) >= {"d_loss", "g_loss", "r1", "d_pose_real", "g_pose", "nonfinite_steps"}


def test_discriminator_loss_decreases_on_a_fixed_batch(setup):
  generator, discriminator, g_tx, d_tx, state, batch = setup
  step = functools.partial(ts.d_step, generator=generator, discriminator=discriminator,
                           d_tx=d_tx, cfg=CFG)
  p_step = jax.pmap(step, axis_name="batch")
  replicated, key = _replicate(state), _replicate(jax.random.key(2))  # fixed fakes
  losses = []
  for _ in range(8):
    replicated, metrics = p_step(replicated, batch, key)
    losses.append(float(metrics["d_loss"][0]))
  assert losses[-1] < losses[0] * 0.8, losses


def test_nonfinite_batch_skips_the_update(setup, p_step):
  *_, state, batch = setup
  bad = batch.replace(image=batch.image.at[3, 0, 0, 0, 0].set(jnp.nan))
  new, metrics = p_step(_replicate(state), bad, _replicate(jax.random.key(1)))
  assert int(new.nonfinite[0]) == 1 and float(metrics["d_ok"][0]) == 0.0
  for a, b in zip(jax.tree_util.tree_leaves(new.d_params), jax.tree_util.tree_leaves(state.d_params)):
    np.testing.assert_array_equal(a[0], b)


def test_imitation_terms_are_finite_and_train_the_deformation(setup, tmp_path):
  from anifacegan_jax.face3d import procedural
  generator, discriminator, g_tx, d_tx, state, _ = setup
  face = procedural.load_procedural(cache_dir=tmp_path).arrays()
  cfg = ts.StepConfig(resolution=8, per_device_batch=2, chunk_size=64, chamfer_weight=1.0,
                      deform_weight=1.0, reg_weight=1.0, smooth_weight=1.0, imitation_points=64,
                      chamfer_opacity=0.0)
  key = jax.random.key(3)

  def terms_of(g_params):
    out, latents, camera = ts._fakes(generator, g_params, state.prior, key, 2, cfg, remat=False)
    return ts.imitation_terms(generator, g_params, face, latents, camera, out, key, cfg)

  terms = jax.jit(terms_of)(state.g_params)
  assert set(terms) == {"chamfer", "deform_imitation", "deform_reg", "deform_smooth"}
  for name, value in terms.items():
    assert np.isfinite(value) and float(value) >= 0, name
  assert float(terms["chamfer"]) > 0 and float(terms["deform_imitation"]) > 0
  # Gradient steps on L_3DMM alone move F towards −B_exp γ: the loss falls.
  loss = jax.jit(lambda p: terms_of(p)["deform_imitation"])
  grad = jax.jit(jax.grad(lambda p: terms_of(p)["deform_imitation"]))
  params, first = state.g_params, float(loss(state.g_params))
  assert any(float(jnp.abs(g).max()) > 0
             for g in jax.tree_util.tree_leaves(grad(params)["deformation"]))
  tx = optax.adam(1e-3)
  opt = tx.init(params)
  for _ in range(10):
    updates, opt = tx.update(grad(params), opt, params)
    params = optax.apply_updates(params, updates)
  assert float(loss(params)) < 0.9 * first
