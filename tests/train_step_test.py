"""The pmapped GAN step on 8 fake CPU devices: replicas agree, D learns, non-finite steps skip."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from anifacegan_jax import train_step as ts
from anifacegan_jax.models import layers
from anifacegan_jax.models.discriminator import Discriminator
from anifacegan_jax.models.generator import AnimatableGenerator
from anifacegan_jax.types import Batch
from conftest import step_config

TINY = dict(radiance_hidden=32, manifold_hidden=32, deform_hidden=32, num_samples=16,
            num_levels=6)
CFG = step_config(resolution=8, per_device_batch=2, batch_split=2, chunk_size=64)


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


def test_one_step_keeps_replicas_identical(setup, p_step):
  *_, state, batch = setup
  new, metrics = p_step(ts.replicate(state), batch, ts.replicate(jax.random.key(1)))
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
  # geometry health of a fresh generator: some rays cross the manifolds, which are not empty
  assert 0 < float(metrics["crossings"][0]) <= 1 and 0 < float(metrics["foreground"][0]) <= 1


def test_replicate_lays_a_copy_on_every_device_and_unreplicate_reads_it_back():
  tree = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "step": jnp.int32(7),
          "key": jax.random.key(4)}
  replicated = ts.replicate(tree)
  assert replicated["w"].shape == (8, 2, 3) and len(replicated["w"].sharding.device_set) == 8
  doubled = jax.pmap(lambda t: {**t, "w": t["w"] * 2, "step": t["step"] * 2},
                     axis_name=ts.AXIS)(replicated)
  back = ts.unreplicate(doubled)
  np.testing.assert_array_equal(back["w"], tree["w"] * 2)
  assert isinstance(back["w"], np.ndarray) and int(back["step"]) == 14
  np.testing.assert_array_equal(jax.random.key_data(back["key"]),
                                jax.random.key_data(tree["key"]))
  assert int(ts.unreplicate({"scalar": jnp.int32(3)})["scalar"]) == 3


@pytest.mark.parametrize("init", [layers.kaiming_leaky_init(), layers.kaiming_leaky_init(scale=0.25),
                                  layers.geometric_hidden_init, layers.film_kernel_init(True),
                                  layers.film_kernel_init(False), layers.uniform(0.3)])
def test_a_compiled_initialisation_draws_the_parameters_of_one_run_op_by_op(init):
  # create_state compiles the whole initialisation; the parameters must stay those of the
  # op-by-op runs that trained the shipped and benchmarked models (fused, a scale folded into
  # the sampler's constants moves values by an ulp).
  key = jax.random.key(11)
  for shape in ((160, 64), (64, 1152), (3, 64)):
    np.testing.assert_array_equal(jax.jit(lambda k: init(k, shape))(key), init(key, shape))


def test_discriminator_loss_decreases_on_a_fixed_batch(setup):
  generator, discriminator, g_tx, d_tx, state, batch = setup
  step = functools.partial(ts.d_step, generator=generator, discriminator=discriminator,
                           d_tx=d_tx, cfg=CFG)
  p_step = jax.pmap(step, axis_name="batch")
  replicated, key = ts.replicate(state), ts.replicate(jax.random.key(2))  # fixed fakes
  losses = []
  for _ in range(8):
    replicated, metrics = p_step(replicated, batch, key)
    losses.append(float(metrics["d_loss"][0]))
  assert losses[-1] < losses[0] * 0.8, losses


def test_nonfinite_batch_skips_the_update(setup, p_step):
  *_, state, batch = setup
  bad = batch.replace(image=batch.image.at[3, 0, 0, 0, 0].set(jnp.nan))
  new, metrics = p_step(ts.replicate(state), bad, ts.replicate(jax.random.key(1)))
  assert int(new.nonfinite[0]) == 1 and float(metrics["d_ok"][0]) == 0.0
  for a, b in zip(jax.tree_util.tree_leaves(new.d_params), jax.tree_util.tree_leaves(state.d_params)):
    np.testing.assert_array_equal(a[0], b)


def test_imitation_terms_are_finite_and_train_the_deformation(setup, tmp_path):
  from anifacegan_jax.synthfaces import procedural
  generator, discriminator, g_tx, d_tx, state, _ = setup
  face = procedural.load_procedural(cache_dir=tmp_path).arrays()
  cfg = step_config(resolution=8, per_device_batch=2, chunk_size=64, chamfer_weight=1.0,
                      deform_weight=1.0, reg_weight=1.0, smooth_weight=1.0, imitation_points=64,
                      chamfer_opacity=0.0)
  key = jax.random.key(3)

  def terms_of(g_params):
    out, latents, camera = ts._fakes(generator, g_params, state.prior, key, 2, cfg, remat=False)
    return ts.imitation_terms(generator, g_params, ts.Teachers(face=face), latents, camera, out,
                              key, cfg)

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


def test_the_image_losses_can_leave_the_deformation_to_its_imitation(setup):
  # deform_image_gradient=False: the adversarial and pose losses train the template, not F (no
  # imitation term is on here, so F gets no gradient at all and must not move).
  generator, discriminator, g_tx, _, state, _ = setup
  cfg = dataclasses.replace(CFG, batch_split=1, deform_image_gradient=False)
  step = jax.pmap(functools.partial(ts.g_step, generator=generator, discriminator=discriminator,
                                    g_tx=g_tx, cfg=cfg), axis_name="batch")
  new, metrics = step(ts.replicate(state), ts.replicate(jax.random.key(5)))
  assert float(metrics["g_ok"][0]) == 1.0
  moved = lambda name: max(float(jnp.abs(a[0] - b).max()) for a, b in zip(
      jax.tree_util.tree_leaves(new.g_params[name]),
      jax.tree_util.tree_leaves(state.g_params[name])))
  assert moved("deformation") == 0.0
  assert moved("radiance") > 0 and moved("mapping") > 0


@pytest.fixture(scope="module")
def face_and_recon(tmp_path_factory):
  from anifacegan_jax.models import recon
  from anifacegan_jax.synthfaces import procedural
  face = procedural.load_procedural(cache_dir=tmp_path_factory.mktemp("face")).arrays()
  model = recon.ReconNet(kind="basic", stage_sizes=(1,), width=8, input_size=16)
  return face, model, recon.init_recon(model, jax.random.key(5))


def _world_landmarks(face, z_id, z_exp):
  from anifacegan_jax.face3d import geometry
  vertices = jax.vmap(geometry.face_vertices, in_axes=(None, 0, 0))(face, z_id, z_exp)
  return geometry.model_to_world(vertices[:, np.asarray(face.landmarks)])


@pytest.mark.parametrize("dims", [3, 2])
def test_landmark_term_of_an_untrained_network_is_the_mean_face_error(setup, face_and_recon,
                                                                      dims):
  """Zero-initialised heads predict ẑ = 0, so L_lm is the distance of S(0, 0) to S(z) (Eq. 7)."""
  from anifacegan_jax.rendering.camera import project_points
  generator, _, _, _, state, _ = setup
  face, model, variables = face_and_recon
  cfg = step_config(resolution=8, per_device_batch=2, chunk_size=64, landmark_weight=1.0,
                      landmark_dims=dims)
  out, latents, camera = ts._fakes(generator, state.g_params, state.prior, jax.random.key(4), 2,
                                   cfg, remat=False)
  terms = ts.imitation_terms(generator, state.g_params, ts.Teachers(face=face, recon=variables),
                             latents, camera, out, jax.random.key(6), cfg, recon=model)
  assert set(terms) == {"landmark"}
  mean = _world_landmarks(face, jnp.zeros_like(latents.z_id), jnp.zeros_like(latents.z_exp))
  true = _world_landmarks(face, latents.z_id, latents.z_exp)
  if dims == 2:
    mean, true = project_points(camera, mean), project_points(camera, true)
  diff = np.asarray(mean - true)[:, 17:68]
  expected = np.mean(np.sum(diff ** 2, axis=-1))
  assert float(terms["landmark"]) == pytest.approx(expected, rel=1e-4)
  assert expected > 0


def test_landmark_loss_reaches_the_generator(setup, face_and_recon):
  generator, _, _, _, state, _ = setup
  face, model, variables = face_and_recon
  # Non-zero heads, so the prediction (and L_lm) depends on the generated image.
  heads = {k: jax.tree_util.tree_map(
      lambda x: 0.05 * jax.random.normal(jax.random.key(7), x.shape), v)
      for k, v in variables["params"].items() if k.startswith("final_layers")}
  variables = {"params": {**variables["params"], **heads},
               "batch_stats": variables["batch_stats"]}
  teachers = ts.Teachers(face=face, recon=variables)
  cfg = step_config(resolution=8, per_device_batch=2, chunk_size=64, landmark_weight=1e4)

  def landmark(g_params):
    out, latents, camera = ts._fakes(generator, g_params, state.prior, jax.random.key(8), 2, cfg,
                                     remat=False)
    return ts.imitation_terms(generator, g_params, teachers, latents, camera, out,
                              jax.random.key(9), cfg, recon=model)["landmark"]

  grads = jax.jit(jax.grad(landmark))(state.g_params)
  norms = {k: float(optax.tree.norm(v)) for k, v in grads.items()}
  assert all(np.isfinite(n) for n in norms.values()), norms
  assert norms["radiance"] > 0 and norms["manifold"] > 0, norms
  # The pmapped step with L_lm runs end to end in main_test (training logs `landmark`).


def test_landmark_loss_without_a_network_is_refused(setup, face_and_recon):
  generator, _, _, _, state, _ = setup
  cfg = step_config(resolution=8, per_device_batch=2, chunk_size=64, landmark_weight=1.0)
  out, latents, camera = ts._fakes(generator, state.g_params, state.prior, jax.random.key(4), 2,
                                   cfg, remat=False)
  with pytest.raises(ValueError, match="reconstruction network"):
    ts.imitation_terms(generator, state.g_params, ts.Teachers(face=face_and_recon[0]), latents,
                       camera, out, jax.random.key(6), cfg)
  with pytest.raises(ValueError, match="landmark_dims must be 2 or 3"):
    step_config(resolution=8, per_device_batch=2, landmark_dims=1)


def test_the_identity_carrying_field_warps_every_face_to_the_mean_shape(setup, face_and_recon):
  from anifacegan_jax.face3d import geometry
  from anifacegan_jax.types import Latents
  generator, _, _, _, state, _ = setup
  face = face_and_recon[0]
  rng = np.random.default_rng(7)
  z_id = jnp.asarray(rng.normal(0, 0.8, (2, 80)), jnp.float32)
  z_exp = jnp.asarray(rng.normal(0, 0.2, (2, 64)), jnp.float32)
  vertices = jax.vmap(geometry.face_vertices, in_axes=(None, 0, 0))(face, z_id, z_exp)
  undo = lambda identity: jax.vmap(  # noqa: E731
      lambda i, e: ts.reference_offsets(face, i, e, identity))(z_id, z_exp)
  np.testing.assert_allclose(vertices - undo(True), np.broadcast_to(face.mean_shape,
                                                                    vertices.shape), atol=1e-5)
  neutral = jax.vmap(geometry.face_vertices, in_axes=(None, 0, None))(face, z_id, jnp.zeros(64))
  np.testing.assert_allclose(vertices - undo(False), neutral, atol=1e-5)
  # Wired through Eq. 8: for neutral faces the paper's zero field is exact, the identity one not.
  zero = jax.tree_util.tree_map(jnp.zeros_like, state.g_params["deformation"])
  params = dict(state.g_params, deformation=zero)
  latents = Latents(z_id=z_id, z_exp=jnp.zeros_like(z_exp), noise=jnp.zeros((2, 80)))
  cfg = step_config(resolution=8, per_device_batch=2, chunk_size=64, chamfer_weight=0.0,
                    deform_weight=1.0, imitation_points=32)
  term = lambda c: float(ts.imitation_terms(  # noqa: E731
      generator, params, ts.Teachers(face=face), latents, None, None, jax.random.key(1),
      c)["deform_imitation"])
  assert term(cfg) == 0.0
  assert term(dataclasses.replace(cfg, deform_identity=True)) > 1e-7


def test_the_discofacegram_model_conditions_its_template_on_the_expression(setup, face_and_recon,
                                                                          tmp_path):
  # model.expression='template' (the paper's DiscoFaceGRAM baseline, BENCHMARKS.md "Ablations"):
  # no deformation field, z_exp enters the radiance mapping network, and the training step runs
  # with the image-space imitation (L_Ch) that still applies.
  from anifacegan_jax import porting
  from anifacegan_jax.models.generator import init_generator, mean_radiance_codes, render
  from anifacegan_jax.types import Camera, Latents
  _, discriminator, g_tx, _, state, _ = setup
  generator = AnimatableGenerator(**TINY, expression="template", deform_exp_scale=4.0)
  params = init_generator(generator, jax.random.key(0))["params"]
  state = state.replace(g_params=params, g_opt_state=g_tx.init(params), ema_params=params)
  assert set(state.g_params) == {"manifold", "mapping", "radiance"}
  assert state.g_params["mapping"]["dense_0"]["kernel"].shape[0] == 80 + 64 + 80
  variables = {"params": state.g_params}
  latents = Latents.dummy(2)
  latents = latents.replace(z_exp=latents.z_exp.at[1].set(1.0))
  out = render(generator, variables, latents, Camera.frontal(2), resolution=8, chunk_size=64)
  assert float(jnp.abs(out.image[0] - out.image[1]).max()) > 1e-4  # the expression repaints
  np.testing.assert_array_equal(out.points_canonical, out.points_target)  # nothing warps
  # the truncation centre averages over expressions too: z_exp moves it
  mean = lambda exp: mean_radiance_codes(generator, variables, jax.random.key(3), num=16,
                                         sample_z_exp=lambda k, n: jnp.full((n, 64), exp))
  assert float(jnp.abs(mean(0.0)[0] - mean(1.0)[0]).max()) > 1e-6
  face = face_and_recon[0]
  cfg = dataclasses.replace(CFG, batch_split=1, chamfer_weight=1.0, deform_weight=0.0,
                            reg_weight=0.0, smooth_weight=0.0, imitation_points=64)
  step = jax.pmap(functools.partial(ts.g_step, generator=generator, discriminator=discriminator,
                                    g_tx=g_tx, cfg=cfg), axis_name="batch")
  new, metrics = step(ts.replicate(state), ts.replicate(jax.random.key(1)),
                      ts.replicate(ts.Teachers(face=face)))
  assert float(metrics["g_ok"][0]) == 1.0 and np.isfinite(metrics["chamfer"]).all()
  assert "deform_imitation" not in metrics
  assert float(jnp.abs(new.g_params["mapping"]["dense_0"]["kernel"][0]
                       - state.g_params["mapping"]["dense_0"]["kernel"]).max()) > 0
  with pytest.raises(porting.CheckpointLayoutError, match="no deformation field"):
    porting.save_official(variables, tmp_path / "g.pth", tmp_path / "d.pth")
