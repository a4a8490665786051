"""Compositing (Eq. 4) and depth (Eq. 5) against hand computations (SPEC §2.5)."""

import jax.numpy as jnp
import numpy as np
import pytest

from anifacegan_jax.rendering.compositing import composite_ray, widened_sigmoid


def _sigma_for_alpha(alpha, delta=0.04):
  """Raw density whose softplus gives opacity `alpha` over an interval `delta`."""
  density = -np.log(1.0 - alpha) / delta
  return np.log(np.expm1(density))


def test_known_alphas_match_hand_computation_in_input_order():
  alphas = np.array([0.3, 0.5, 0.2])
  # Input order is shuffled w.r.t. distance; the background (last input) sorts last.
  distances = np.array([0.97, 0.95, 1.01, 1.13])
  sigma = np.concatenate([_sigma_for_alpha(alphas), [5.0]])
  rgb = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.5, 0.5, 0.5]])
  valid = np.array([True, True, True, True])
  is_bg = np.array([False, False, False, True])
  pixel, depth, weights = composite_ray(jnp.asarray(rgb), jnp.asarray(sigma),
                                        jnp.asarray(distances), jnp.asarray(valid),
                                        jnp.asarray(is_bg))
  eps = 1e-10
  # Sorted order: point 1 (0.95), point 0 (0.97), point 2 (1.01), background (δ = 1e10 → α = 1).
  w1 = alphas[1]
  w0 = alphas[0] * (1 - alphas[1] + eps)
  w2 = alphas[2] * (1 - alphas[1] + eps) * (1 - alphas[0] + eps)
  wb = 1.0 * (1 - alphas[1] + eps) * (1 - alphas[0] + eps) * (1 - alphas[2] + eps)
  expected = np.array([w0, w1, w2, wb])
  np.testing.assert_allclose(weights, expected, rtol=1e-5)
  np.testing.assert_allclose(pixel, expected @ rgb, rtol=1e-5)
  np.testing.assert_allclose(depth, expected @ distances / expected.sum(), rtol=1e-6)


def test_depth_of_single_opaque_manifold_is_its_distance():
  distances = jnp.array([0.5, 0.93, 1.05, 1.12])
  sigma = jnp.array([80.0, 1e4, 3.0, 1.0])  # only the 0.93 point is valid and it is opaque
  valid = jnp.array([False, True, False, True])
  is_bg = jnp.array([False, False, False, True])
  _, depth, weights = composite_ray(jnp.ones((4, 3)), sigma, distances, valid, is_bg)
  assert float(depth) == pytest.approx(0.93, abs=1e-6)
  np.testing.assert_allclose(weights, [0.0, 1.0, 0.0, 0.0], atol=1e-6)


def test_invalid_points_get_no_weight_and_white_background():
  distances = jnp.array([0.9, 1.0, 1.13])
  sigma = jnp.array([-50.0, 2.0, 0.0])  # almost transparent first point
  valid = jnp.array([True, False, True])
  is_bg = jnp.array([False, False, True])
  rgb = jnp.zeros((3, 3))
  pixel, _, weights = composite_ray(rgb, sigma, distances, valid, is_bg, white_background=True)
  assert float(weights[1]) == 0.0
  np.testing.assert_allclose(pixel, jnp.full(3, weights[2]), rtol=1e-6)
  assert float(weights.sum()) == pytest.approx(1.0, abs=1e-6)


def test_widened_sigmoid_range():
  out = widened_sigmoid(jnp.array([-100.0, 0.0, 100.0]))
  np.testing.assert_allclose(out, [-1e-3, 0.5, 1.0 + 1e-3], atol=1e-7)
