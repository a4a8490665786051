"""The composed generator: parameter counts, rendering, chunking, truncation, gradients, jit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anifacegan_jax.models.layers import matmul, polynomial_sin, sine_function
from anifacegan_jax.models.generator import (AnimatableGenerator, default_chunk_size,
                                             default_skip_invalid, init_generator,
                                             mean_radiance_codes, render, shade_valid)
from anifacegan_jax.models import generator as generator_lib
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


def test_chunk_size_zero_is_the_backend_default(model_and_variables):
  model, variables = model_and_variables
  latents, cam = _latents(2, 1), Camera.frontal(1)
  assert default_chunk_size() == 256  # chunk_size ≤ 0: 256 rays on the CPU
  auto = render(model, variables, latents, cam, resolution=20, chunk_size=0)
  np.testing.assert_array_equal(
      auto.image, render(model, variables, latents, cam, resolution=20, chunk_size=256).image)


def test_chunking_and_skipping_invalid_points_change_neither_image_nor_gradients(
    model_and_variables):
  model, variables = model_and_variables
  # A pitch that lets part of the rays miss manifolds; 12² rays whole, against chunks of 50
  # (144 = 2 × 50 + 44: the last one padded) with the radiance skipped at invalid points.
  latents, cam = _latents(2, 2), Camera(pitch=jnp.array([1.3, 1.6]), yaw=jnp.array([1.4, 1.8]))
  assert default_skip_invalid() and not default_skip_invalid(remat=True)  # on the CPU

  @functools.partial(jax.jit, static_argnums=(1, 2))
  @functools.partial(jax.value_and_grad, has_aux=True)
  def loss(params, chunk_size, skip):
    out = render(model, {"params": params}, latents, cam, resolution=12, chunk_size=chunk_size,
                 remat=True, skip_invalid=skip)
    return jnp.mean(out.image) + jnp.mean(out.depth), out

  (value_all, all_points), grads_all = loss(variables["params"], 144, False)
  (value_skip, skipped), grads_skip = loss(variables["params"], 50, True)
  assert 0.3 < float(all_points.valid.mean()) < 0.95  # there is something to skip
  for field in ("image", "depth", "weights", "points_canonical"):
    np.testing.assert_allclose(getattr(skipped, field), getattr(all_points, field), atol=1e-5,
                               err_msg=field)
  np.testing.assert_allclose(value_skip, value_all, rtol=1e-6)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads_all),
                          jax.tree_util.tree_leaves(grads_skip)):
    np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4 * float(jnp.abs(a).max()) + 1e-12,
                               err_msg=jax.tree_util.keystr(path))


def test_shade_valid_shades_the_masked_points_and_skips_empty_blocks(model_and_variables):
  model, variables = model_and_variables
  latents = _latents(3, 2)
  codes = model.apply(variables, latents, method=AnimatableGenerator.codes)
  keys = jax.random.split(jax.random.key(4), 2)
  points = 0.1 * jax.random.normal(keys[0], (2, 5, 4, 3))  # (B, rays, points per ray, 3)
  directions = jax.random.normal(keys[1], (2, 5, 3))
  directions = directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)
  traced = generator_lib.TracedRays(points_target=points, points_canonical=points,
                                    valid=jnp.ones((2, 5, 4), bool), directions=directions,
                                    distances=jnp.ones((2, 5, 4)))
  shade = jax.vmap(lambda c, p, d: model.apply(variables, c, p, d[:, None, :],
                                               method=AnimatableGenerator.shade))
  rgb_all, sigma_all = shade(codes, points, directions)
  # 20 points per image in blocks of 6: image 0 has 7 masked points, image 1 has 3 → 2 blocks
  # are shaded, the last 2 (points 12-19 of the masked-first order) are skipped.
  mask = np.zeros((2, 5, 4), bool)
  mask[0, [0, 1, 3], [1, 0, 2]] = True
  mask[0, 4, :] = True
  mask[1, 2, [0, 3]] = True
  mask[1, 0, 1] = True
  mask = jnp.asarray(mask)
  rgb, sigma = jax.jit(functools.partial(shade_valid, model, block=6))(variables, codes, traced,
                                                                       mask)
  np.testing.assert_allclose(rgb[mask], rgb_all[mask], atol=1e-6)
  np.testing.assert_allclose(sigma[mask], sigma_all[mask], atol=1e-6)
  assert int(jnp.sum(sigma[~mask] != 0)) == 12 - 7 + 12 - 3  # unmasked points in shaded blocks
  rgb0, sigma0 = shade_valid(model, variables, codes, traced, jnp.zeros_like(mask), block=6)
  assert not np.any(rgb0) and not np.any(sigma0)  # nothing masked: every block skipped


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

  grads = jax.jit(jax.grad(depth))(params["manifold"])
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
  images = [jax.jit(lambda v: render(model.clone(sine=sine), v, latents, cam,
                                     resolution=16).image)(variables)
            for sine in ("xla", "polynomial")]
  np.testing.assert_allclose(images[0], images[1], atol=2e-5)
  grads = [jax.jit(jax.grad(lambda p: jnp.mean(render(model.clone(sine=sine), {"params": p},
                                                      latents, cam, resolution=8).image)))(
                                                          variables["params"])
           for sine in ("xla", "polynomial")]
  for a, b in zip(jax.tree_util.tree_leaves(grads[0]), jax.tree_util.tree_leaves(grads[1])):
    np.testing.assert_allclose(a, b, atol=1e-4 * float(jnp.abs(a).max()) + 1e-9)


def test_precision_bfloat16_rounds_the_matmul_operands_and_keeps_float32_parameters(
    model_and_variables):
  x = jax.random.normal(jax.random.key(20), (16, 32))
  kernel = jax.random.normal(jax.random.key(21), (32, 8))
  exact = np.asarray(x, np.float64) @ np.asarray(kernel, np.float64)
  rounded = lambda a: np.asarray(a.astype(jnp.bfloat16).astype(jnp.float32), np.float64)
  np.testing.assert_allclose(matmul(x, kernel, "bfloat16"), rounded(x) @ rounded(kernel),
                             rtol=1e-5, atol=1e-5)
  assert float(np.abs(np.asarray(matmul(x, kernel, "bfloat16")) - exact).max()) > 1e-3
  for precision in ("default", "float32", "tf32"):  # all float32 on the CPU
    np.testing.assert_allclose(matmul(x, kernel, precision), exact, rtol=1e-5, atol=1e-5)

  model, variables = model_and_variables
  half = model.clone(precision="bfloat16")
  shapes = jax.eval_shape(lambda: init_generator(half, jax.random.key(0)))
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(shapes))
  draw = lambda m: render(m, variables, _latents(22, 1), Camera.frontal(1), resolution=6,
                          lock_view=True)
  full, rounded_image = draw(model).image, draw(half).image
  assert np.isfinite(rounded_image).all() and rounded_image.dtype == jnp.float32
  assert 0 < float(jnp.abs(rounded_image - full).mean()) < 0.05
  with pytest.raises(ValueError, match="model.precision"):
    init_generator(AnimatableGenerator(precision="float8"), jax.random.key(0))
