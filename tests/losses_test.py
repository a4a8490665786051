"""Loss terms against closed forms and brute force (paper Eq. 6-11)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anifacegan_jax import losses


def _mesh(num=300, seed=0):
  return jax.random.normal(jax.random.key(seed), (num, 3)) * 0.05


def test_chamfer_of_a_mesh_against_itself_is_zero_and_grows_as_offset_squared():
  mesh = _mesh()
  assert float(losses.directed_chamfer(mesh, mesh, chunk=64)) == 0.0
  offset = jnp.array([3e-4, -2e-4, 1e-4])  # far below the point spacing
  moved = losses.directed_chamfer(mesh, mesh + offset, chunk=77)
  assert float(moved) == pytest.approx(float(jnp.sum(offset**2)), rel=1e-4)
  doubled = losses.directed_chamfer(mesh, mesh + 2 * offset, chunk=77)
  assert float(doubled) == pytest.approx(4 * float(moved), rel=1e-4)


def test_chamfer_masks_and_matches_brute_force():
  source, target = _mesh(50, 1), _mesh(80, 2)
  target_mask = jnp.arange(80) % 3 != 0
  source_mask = jnp.arange(50) < 40
  value = losses.directed_chamfer(source, target, target_mask, source_mask, chunk=16)
  s, t = np.asarray(source)[:40], np.asarray(target)[np.asarray(target_mask)]
  brute = np.mean(np.min(np.sum((s[:, None] - t[None]) ** 2, -1), axis=1))
  assert float(value) == pytest.approx(brute, rel=1e-5)


def test_chamfer_without_valid_targets_is_zero_with_finite_gradient():
  source, target = _mesh(20, 1), _mesh(30, 2)
  none = jnp.zeros(30, bool)
  value, grad = jax.value_and_grad(lambda t: losses.directed_chamfer(source, t, none, chunk=8))(
      target)
  assert float(value) == 0.0 and np.isfinite(grad).all()


def test_reference_deformation_equals_brute_force_nearest_vertex():
  vertices = _mesh(120, 3)
  offsets = jax.random.normal(jax.random.key(4), (120, 3)) * 0.01
  points = vertices[::3] + 0.004 * jax.random.normal(jax.random.key(5), (40, 3))
  ref = losses.reference_deformation(points, vertices, offsets, chunk=7)
  d2 = np.sum((np.asarray(points)[:, None] - np.asarray(vertices)[None]) ** 2, -1)
  np.testing.assert_allclose(ref, -np.asarray(offsets)[np.argmin(d2, 1)])


def test_landmark_loss_ignores_the_contour():
  a = jax.random.normal(jax.random.key(6), (68, 3))
  b = a.at[:17].add(5.0)  # move only the jaw contour
  assert float(losses.landmark_loss(a, b)) == 0.0
  c = a.at[30].add(jnp.array([0.0, 0.3, 0.4]))
  assert float(losses.landmark_loss(a, c)) == pytest.approx(0.25 / 51, rel=1e-5)
  assert float(losses.landmark_loss(a[:, :2], c[:, :2])) == pytest.approx(0.09 / 51, rel=1e-5)


def test_deformation_terms_closed_forms():
  delta = jnp.array([[0.003, 0.0, 0.004], [0.0, 0.0, 0.0]])
  assert float(losses.deformation_regularizer(delta)) == pytest.approx(2.5e-5 / 2, rel=1e-5)
  assert float(losses.deformation_imitation_loss(delta, delta)) == 0.0
  assert float(losses.deformation_smoothness(delta, delta + 0.001)) == pytest.approx(3e-6, rel=1e-5)


def test_every_loss_has_finite_gradients():
  mesh, cloud = _mesh(64, 7), _mesh(90, 8)
  mask = jnp.arange(90) > 5
  grads = jax.grad(lambda m, c: losses.directed_chamfer(m, c, mask, chunk=16), argnums=(0, 1))(
      mesh, cloud)
  assert all(np.isfinite(g).all() for g in grads)
  assert float(jnp.abs(grads[1]).sum()) > 0
  lm = jax.random.normal(jax.random.key(9), (68, 3))
  for fn, args in [(losses.landmark_loss, (lm, lm * 1.1)),
                   (losses.deformation_imitation_loss, (mesh, cloud[:64])),
                   (losses.deformation_regularizer, (mesh,)),
                   (losses.deformation_smoothness, (mesh, mesh + 1e-3)),
                   (losses.d_real_loss, (mesh[:, 0],)), (losses.d_fake_loss, (mesh[:, 0],)),
                   (losses.g_adversarial_loss, (mesh[:, 0],)),
                   (losses.pose_loss, (mesh[:, :2], cloud[:64, :2]))]:
    g = jax.grad(lambda *a: fn(*a))(*args)
    assert np.isfinite(g).all(), fn.__name__


def test_r1_penalty_closed_form():
  # D(x) = Σ w·x per image → ∇ = w, penalty = ‖w‖².
  w = jnp.arange(12.0).reshape(2, 2, 3) / 10
  images = jnp.ones((3, 2, 2, 3))
  value = losses.r1_penalty(lambda x: jnp.sum(x * w, axis=(1, 2, 3)), images)
  assert float(value) == pytest.approx(float(jnp.sum(w**2)), rel=1e-6)
