"""The composed generator: parameter counts, rendering, chunking, truncation, gradients, jit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anifacegan_jax.models.layers import polynomial_sin, sine_function
from anifacegan_jax.models.generator import (AnimatableGenerator, default_chunk_size,
                                             init_generator, mean_radiance_codes, render)
from anifacegan_jax.types import Camera, Latents


def _count(tree):
  return sum(x.size for x in jax.tree_util.tree_leaves(tree))


def _latents(seed, batch):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  return Latents(z_id=jax.random.normal(k1, (batch, 80)),
                 z_exp=0.5 * jax.random.normal(k2, (batch, 64)),
                 noise=jax.random.normal(k3, (batch, 80)))


@pytest.fixture(scope="module")
def model_and_variables():
  model = AnimatableGenerator()
  return model, init_generator(model, jax.random.key(0))


def test_parameter_counts_match_the_official_networks(model_and_variables):
  _, variables = model_and_variables
  params = dict(variables["params"])
  assert set(params) == {"manifold", "mapping", "radiance", "deformation"}
  assert _count(params.pop("deformation")) == 185_607
  assert _count(params) == 1_926_045


def test_renders_a_64px_image(model_and_variables):
  model, variables = model_and_variables
  out = jax.jit(functools.partial(render, model, resolution=64, chunk_size=2048))(
      variables, _latents(1, 1), Camera.frontal(1))
  assert out.image.shape == (1, 64, 64, 3)
  assert out.depth.shape == (1, 64, 64)
  assert out.weights.shape == (1, 64 * 64, 24)
  assert out.points_target.shape == out.points_canonical.shape == (1, 64 * 64, 24, 3)
  assert np.isfinite(out.image).all() and np.isfinite(out.depth).all()
  assert float(jnp.abs(out.image).max()) <= 1.002 + 1e-6
  np.testing.assert_allclose(out.weights.sum(-1), 1.0, atol=1e-4)  # opaque background
  # The manifolds of the geometric init are crossed inside the sample box.
  assert float(out.valid[..., :-1].mean()) > 0.5
  assert 0.88 <= float(out.depth.min()) and float(out.depth.max()) <= 1.2


def test_chunking_does_not_change_the_image(model_and_variables):
  model, variables = model_and_variables
  latents, cam = _latents(2, 2), Camera(pitch=jnp.array([1.5, 1.6]), yaw=jnp.array([1.4, 1.8]))
  whole = render(model, variables, latents, cam, resolution=12, chunk_size=144)
  chunked = render(model, variables, latents, cam, resolution=12, chunk_size=50)  # padded
  np.testing.assert_allclose(whole.image, chunked.image, atol=1e-5)
  np.testing.assert_allclose(whole.depth, chunked.depth, atol=1e-5)
  assert default_chunk_size() == 256  # chunk_size ≤ 0: 256 rays on the CPU
  auto = render(model, variables, latents, cam, resolution=20, chunk_size=0)
  np.testing.assert_array_equal(
      auto.image, render(model, variables, latents, cam, resolution=20, chunk_size=256).image)


def test_truncation_psi_zero_removes_the_noise(model_and_variables):
  model, variables = model_and_variables
  mean = mean_radiance_codes(model, variables, jax.random.key(3), num=64)
  a, b = _latents(4, 1), _latents(4, 1)
  b = b.replace(noise=b.noise + 1.0)
  render_psi = functools.partial(render, model, variables, camera=Camera.frontal(1),
                                 resolution=8, psi=0.0, mean_codes=mean)
  np.testing.assert_allclose(render_psi(a).image, render_psi(b).image, atol=1e-6)
  plain = functools.partial(render, model, variables, camera=Camera.frontal(1), resolution=8)
  assert float(jnp.abs(plain(a).image - plain(b).image).max()) > 1e-4


def test_jit_compiles_once_per_resolution(model_and_variables):
  model, variables = model_and_variables
  traces = []

  @functools.partial(jax.jit, static_argnames="resolution")
  def run(variables, latents, cam, resolution):
    traces.append(resolution)
    return render(model, variables, latents, cam, resolution=resolution).image

  cam = Camera.frontal(1)
  run(variables, _latents(5, 1), cam, resolution=8)
  run(variables, _latents(6, 1), cam, resolution=8)
  assert traces == [8]
  run(variables, _latents(7, 1), cam, resolution=6)
  run(variables, _latents(8, 1), cam, resolution=6)
  assert traces == [8, 6]


@pytest.mark.parametrize("warp", ["single", "double"])
def test_gradients_are_finite_for_every_parameter(warp):
  model = AnimatableGenerator(warp=warp, deform_final_bias_init="torch")
  variables = init_generator(model, jax.random.key(9))
  latents = _latents(10, 1)
  cam = Camera(pitch=jnp.array([1.5]), yaw=jnp.array([1.7]))
  resolution = 32 if warp == "single" else 8

  def loss(params):
    out = render(model, {"params": params}, latents, cam, resolution=resolution,
                 chunk_size=256, remat=True)
    return jnp.mean(out.image) + jnp.mean(out.depth)

  grads = jax.jit(jax.grad(loss))(variables["params"])
  leaves = jax.tree_util.tree_leaves_with_path(grads)
  for path, g in leaves:
    assert np.isfinite(g).all(), jax.tree_util.keystr(path)
  nonzero = [jax.tree_util.keystr(p) for p, g in leaves if float(jnp.abs(g).max()) > 0]
  # Every network receives gradient: deformation (through Δ* and the manifolds), manifolds
  # (through the intersections), mapping and radiance.
  for name in ("deformation", "manifold", "mapping", "radiance"):
    assert any(name in p for p in nonzero), name


@pytest.mark.parametrize("depth_gradient", [False, True])
def test_depth_reaches_the_manifolds_only_through_the_weights(depth_gradient):
  # With a density that does not depend on position the compositing weights do not move with the
  # manifolds, so the depth (Eq. 5) moves them only through z: never when z has no gradient
  # (SPEC §2.5, the default), always when it has (the ablation).
  model = AnimatableGenerator(num_samples=16, num_levels=6, manifold_hidden=16,
                              radiance_hidden=16, deform_hidden=16,
                              depth_gradient=depth_gradient)
  params = dict(init_generator(model, jax.random.key(11))["params"])
  radiance = jax.tree_util.tree_map(lambda x: x, params["radiance"])
  for name in radiance:
    if name.startswith("sigma_head_"):
      radiance[name] = jax.tree_util.tree_map(lambda x: jnp.full_like(x, 0.0) if x.ndim == 2
                                              else jnp.full_like(x, 0.3), radiance[name])
  params["radiance"] = radiance

  def depth(manifold):
    out = render(model, {"params": {**params, "manifold": manifold}}, _latents(12, 1),
                 Camera.frontal(1), resolution=6, chunk_size=36)
    return jnp.sum(out.depth)

  grads = jax.grad(depth)(params["manifold"])
  size = max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(grads))
  assert (size > 1e-4) if depth_gradient else size == 0.0


def test_deform_exp_scale_multiplies_the_expression_code_and_nothing_else():
  from anifacegan_jax.models.deformation import DeformationField
  field, scaled = DeformationField(hidden=16), DeformationField(hidden=16, exp_scale=4.0)
  z_id = jax.random.normal(jax.random.key(0), (3, 80))
  z_exp = 0.2 * jax.random.normal(jax.random.key(1), (3, 64))
  params = field.init(jax.random.key(2), z_id, z_exp, method=DeformationField.code)
  codes = scaled.apply(params, z_id, z_exp, method=DeformationField.code)
  expected = field.apply(params, z_id, 4.0 * z_exp, method=DeformationField.code)
  unscaled = field.apply(params, z_id, z_exp, method=DeformationField.code)
  for got, want, other in zip(codes, expected, unscaled):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert float(jnp.abs(got - other).max()) > 1e-3
  with pytest.raises(ValueError, match="deform_exp_scale must be > 0"):
    init_generator(AnimatableGenerator(deform_hidden=16, manifold_hidden=16, radiance_hidden=16,
                                       deform_exp_scale=0.0), jax.random.key(0))
  # The same parameter tree: a released checkpoint loads at any scale.
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
      scaled.init(jax.random.key(2), z_id, z_exp, method=DeformationField.code))


def test_the_polynomial_sine_is_sine_to_float32_precision():
  x = jnp.linspace(-3000.0, 3000.0, 200_001)
  exact = np.sin(np.asarray(x, np.float64))
  assert np.abs(np.asarray(polynomial_sin(x)) - exact).max() < 2e-7
  slope = jax.vmap(jax.grad(polynomial_sin))(x[::100])
  assert np.abs(np.asarray(slope) - np.cos(np.asarray(x[::100], np.float64))).max() < 2e-7
  curvature = jax.vmap(jax.grad(jax.grad(polynomial_sin)))(x[::1000])  # L_smooth's double backward
  assert np.abs(np.asarray(curvature) + exact[::1000]).max() < 1e-6
  assert sine_function("xla") is jnp.sin and sine_function("polynomial") is polynomial_sin
  with pytest.raises(ValueError, match="model.sine must be one of"):
    sine_function("fast")


def test_the_polynomial_sine_renders_the_same_image(model_and_variables):
  model, variables = model_and_variables
  latents, cam = _latents(5, 2), Camera(pitch=jnp.array([1.5, 1.6]), yaw=jnp.array([1.4, 1.8]))
  images = [render(model.clone(sine=sine), variables, latents, cam, resolution=16).image
            for sine in ("xla", "polynomial")]
  np.testing.assert_allclose(images[0], images[1], atol=2e-5)
  grads = [jax.grad(lambda p: jnp.mean(render(model.clone(sine=sine), {"params": p}, latents, cam,
                                              resolution=8).image))(variables["params"])
           for sine in ("xla", "polynomial")]
  for a, b in zip(jax.tree_util.tree_leaves(grads[0]), jax.tree_util.tree_leaves(grads[1])):
    np.testing.assert_allclose(a, b, atol=1e-4 * float(jnp.abs(a).max()) + 1e-9)
