"""GRAM discriminator: official parameter counts, outputs, fade-in, CoordConv channel order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anifacegan_jax.models.discriminator import CoordConv, Discriminator


@pytest.mark.parametrize("resolution,params,tensors", [
    (64, 12_098_003, 28), (128, 12_332_115, 34), (256, 12_391_827, 40)])
def test_parameter_counts_match_gram(resolution, params, tensors):
  shapes = jax.eval_shape(lambda: Discriminator(resolution).init(
      jax.random.key(0), jnp.zeros((1, resolution, resolution, 3))))
  leaves = jax.tree_util.tree_leaves(shapes)
  assert sum(x.size for x in leaves) == params and len(leaves) == tensors


def test_outputs_and_fade_in_at_alpha_one():
  images = jax.random.uniform(jax.random.key(1), (3, 16, 16, 3), minval=-1, maxval=1)
  faded = Discriminator(16, fade_in=True)
  variables = faded.init(jax.random.key(2), images)
  logit, pose = faded.apply(variables, images, 1.0)
  assert logit.shape == (3,) and pose.shape == (3, 2)
  plain_params = {k: v for k, v in variables["params"].items() if k != "from_rgb_fade"}
  plain_logit, plain_pose = Discriminator(16).apply({"params": plain_params}, images)
  np.testing.assert_allclose(logit, plain_logit, atol=1e-6)
  np.testing.assert_allclose(pose, plain_pose, atol=1e-6)
  half, _ = faded.apply(variables, images, 0.5)
  assert float(jnp.abs(half - logit).max()) > 0


def test_coordconv_appends_row_then_column_coordinates():
  conv = CoordConv(1)
  x = jnp.zeros((1, 4, 5, 1))
  variables = conv.init(jax.random.key(0), x)
  # A kernel that reads only the centre tap of channel 1 (row coordinate).
  kernel = jnp.zeros((3, 3, 3, 1)).at[1, 1, 1, 0].set(1.0)
  params = {"conv": {"conv": {"kernel": kernel, "bias": jnp.zeros(1)}}}
  out = conv.apply({"params": params}, x)[0, :, :, 0]
  np.testing.assert_allclose(out[:, 0], np.linspace(-1, 1, 4), atol=1e-6)  # varies along H
  np.testing.assert_allclose(out[0], -1.0)
  assert jax.tree_util.tree_structure(variables["params"]) == jax.tree_util.tree_structure(params)


def test_bad_inputs_are_rejected():
  with pytest.raises(ValueError, match="power of two"):
    Discriminator(48).init(jax.random.key(0), jnp.zeros((1, 48, 48, 3)))
  with pytest.raises(ValueError, match=r"expects images \(B, 32, 32, 3\)"):
    Discriminator(32).init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
