"""Ray / level-set intersection against closed forms (SPEC §2.4)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anifacegan_jax.rendering import camera as camera_lib
from anifacegan_jax.rendering.manifolds import first_crossings, interpolate_at, manifold_levels
from anifacegan_jax.types import Camera

LEVELS = manifold_levels(23.0, 8.0, 23)
T = camera_lib.sample_distances(0.88, 1.12, 64)


def _intersect(points, s, **kwargs):
  """points (N, S, 3), s (N, S) → intersections (N, L, 3), valid (N, L)."""
  index, fraction, valid = jax.vmap(functools.partial(first_crossings, levels=LEVELS, **kwargs))(s)
  return jax.vmap(interpolate_at)(points, index, fraction), valid


@pytest.mark.parametrize("crossing", ["decreasing", "either"])
def test_spheres_around_the_camera_match_closed_form(crossing):
  # s = C - k·|x - o| is exactly linear along every ray from o: level l is hit at t = (C - l)/k.
  cam = Camera(pitch=jnp.array([1.45]), yaw=jnp.array([1.75]))
  rays = camera_lib.generate_rays(cam, resolution=9)
  points = camera_lib.sample_points(rays, T)[0]  # (81, 64, 3)
  c, k = 113.0, 100.0
  s = c - k * jnp.linalg.norm(points - rays.origins[0][:, None], axis=-1)
  hits, valid = _intersect(points, s, crossing=crossing)
  t_star = (c - LEVELS) / k
  expected = rays.origins[0][:, None] + t_star[None, :, None] * rays.directions[0][:, None]
  assert bool(valid.all())
  np.testing.assert_allclose(hits, expected, atol=1e-5)


def test_sphere_behind_the_face_along_rays_through_its_centre():
  # GRAM-like field s = k·|x - c| growing away from a centre c behind the face. Along a ray through
  # c it is linear before c, so the first crossing is |o - c| - l/k from the origin.
  centre = jnp.array([0.0, 0.0, -0.18])
  origins = jnp.array([[0.0, 0.0, 1.0], [0.3, 0.2, 0.93], [-0.4, -0.1, 0.9]])
  directions = (centre - origins) / jnp.linalg.norm(centre - origins, axis=-1, keepdims=True)
  t = jnp.linalg.norm(centre - origins, axis=-1)[:, None] + jnp.linspace(-0.25, 0.03, 64)[None]
  points = origins[:, None] + t[..., None] * directions[:, None]
  k = 100.0
  s = k * jnp.linalg.norm(points - centre, axis=-1)
  hits, valid = _intersect(points, s)
  expected = centre - (LEVELS / k)[None, :, None] * directions[:, None]
  assert bool(valid.all())
  np.testing.assert_allclose(hits, expected, atol=1e-5)


def test_no_crossing_gives_last_sample_and_invalid():
  points = jnp.linspace(0.0, 1.0, 64)[:, None] * jnp.ones(3)
  s = jnp.full((64,), 50.0)
  index, fraction, valid = first_crossings(s, LEVELS)
  assert not bool(valid.any())
  np.testing.assert_array_equal(index, 62)
  np.testing.assert_allclose(interpolate_at(points, index, fraction), points[-1][None].repeat(23, 0))


def test_increasing_first_crossing_rules():
  # s rises through 10 (increasing crossing) before falling through it again.
  s = jnp.concatenate([jnp.linspace(5.0, 20.0, 32), jnp.linspace(20.0, 5.0, 32)])
  level = jnp.array([10.0])
  index_g, _, valid_g = first_crossings(s, level, crossing="decreasing")
  index_a, _, valid_a = first_crossings(s, level, crossing="either")
  assert bool(valid_g[0]) and int(index_g[0]) > 31  # GRAM skips to the decreasing crossing
  assert not bool(valid_a[0]) and int(index_a[0]) < 31  # released rule: picked, then invalid


def test_flat_interval_is_nan_free_in_value_and_gradient():
  s = jnp.concatenate([jnp.full((10,), 30.0), jnp.full((2,), 15.0), jnp.full((52,), 2.0)])
  points = jnp.linspace(0.0, 1.0, 64)[:, None] * jnp.ones(3)

  def loss(s_):
    index, fraction, _ = first_crossings(s_, jnp.array([15.0]), min_gap=0.0)
    return jnp.sum(interpolate_at(points, index, fraction))

  value, grad = jax.value_and_grad(loss)(s)
  assert np.isfinite(value) and np.isfinite(grad).all()


def test_fraction_gradient_matches_finite_differences():
  s = jnp.linspace(30.0, 1.0, 64)
  points = jnp.linspace(0.0, 1.0, 64)[:, None] * jnp.array([1.0, 2.0, 3.0])

  def loss(s_):
    index, fraction, _ = first_crossings(s_, LEVELS)
    return jnp.sum(interpolate_at(points, index, fraction) ** 2)

  grad = jax.grad(loss)(s)
  bump = jnp.zeros(64).at[20].set(1e-2)
  numeric = (loss(s + bump) - loss(s - bump)) / 2e-2
  assert float(grad[20]) == pytest.approx(float(numeric), rel=1e-2, abs=1e-5)
  assert float(jnp.abs(grad).sum()) > 0
