"""GanState and the pure, pmapped training step: one discriminator step then one generator step.

This is the only module that talks to the device axis ('batch'): gradients and metrics are
`pmean`-ed over it and per-replica randomness comes from fold_in(step) then fold_in(axis_index).
Static hyperparameters come in a frozen `StepConfig` bound with `functools.partial`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from anifacegan_jax import losses
from anifacegan_jax.face3d import geometry
from anifacegan_jax.face3d.morphable import MorphableArrays
from anifacegan_jax.models.discriminator import Discriminator
from anifacegan_jax.models.generator import (AnimatableGenerator, init_generator, manifold_health,
                                             render)
from anifacegan_jax.models.priors import GaussianPrior, Prior, sample_latents
from anifacegan_jax.models.recon import ReconNet
from anifacegan_jax.rendering.camera import generate_rays, project_points, sample_camera
from anifacegan_jax.types import Array, Batch, PRNGKey, PyTree

AXIS = "batch"


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Static settings of one training stage (hashable; changing one recompiles). Built from a
  config by `curriculum.step_config`, which holds no defaults of its own: configs/default.py does.

  Attributes:
    resolution: image size R of this stage.
    per_device_batch: images per device per step (real and fake).
    batch_split: generator sub-batches accumulated with `lax.scan` (GRAM's batch_split).
    chunk_size: rays per `lax.map` step when rendering.
    r1_gamma: R1 weight γ (the loss adds 0.5·γ·E‖∇D‖²).
    pos_lambda: weight of the pose loss on fake images (D and G).
    real_pos_lambda: weight of the pose loss on real images (D).
    ema_decay: generator EMA decay (torch_ema warm-up min(decay, (1+n)/(10+n))).
    fade_steps: discriminator fade-in length in steps (0 disables the fade).
    stage_start: first step of this stage (the fade starts there).
    yaw_std, pitch_std, pose_clamp: the camera prior (radians).
    chamfer_weight: weight of L_Ch (Eq. 6), 3DMM mesh → generated depth cloud.
    deform_weight: weight of L_3DMM (Eq. 8-9), deformation imitation.
    reg_weight, smooth_weight: weights of L_reg (Eq. 10) and L_smooth (Eq. 11).
    imitation_points: query points per image for Eq. 8-11, drawn around mesh vertices.
    imitation_noise: std of those points around their vertex, world units.
    smooth_radius: ξ ~ U(±radius)³ for L_smooth, world units (SPEC §3.7: 0.001).
    chamfer_opacity: pixels whose non-background opacity exceeds this form the depth cloud S′
      (0: every pixel, so a still transparent face is pulled towards the mesh from the start).
    landmark_weight: weight of L_lm (Eq. 7): landmarks of S(ẑ_id, ẑ_exp), ẑ predicted by the
      reconstruction network from the generated image, vs those of S(z_id, z_exp).
    landmark_dims: 3 (the paper: 3D landmarks, world units, no pose) or 2 (the '2D landmarks'
      ablation: both sets projected by the generating camera, image plane × camera radius).
    deform_image_gradient: whether the losses of the rendered image (adversarial, pose, L_Ch,
      L_lm) train the deformation network (the paper: they do); False leaves it to L_3DMM, L_reg
      and L_smooth (Eq. 8-11), so it follows the 3DMM whatever the discriminator rewards.
    deform_identity: Eq. 8's reference also carries the identity, Δx_ref = −(B_id β + B_exp γ):
      the field warps every face to the mean shape S̄, so the identity's shape reaches the
      geometry and the image the way the expression's does (the paper: False, −B_exp γ; the
      template's manifolds have no latent, so there the identity's shape can only come from the
      radiance net's opacity).
  """

  resolution: int
  per_device_batch: int
  batch_split: int
  chunk_size: int
  r1_gamma: float
  pos_lambda: float
  real_pos_lambda: float
  ema_decay: float
  fade_steps: int
  stage_start: int
  yaw_std: float
  pitch_std: float
  pose_clamp: float
  chamfer_weight: float
  deform_weight: float
  reg_weight: float
  smooth_weight: float
  imitation_points: int
  imitation_noise: float
  smooth_radius: float
  chamfer_opacity: float
  landmark_weight: float
  landmark_dims: int
  deform_image_gradient: bool
  deform_identity: bool

  def __post_init__(self):
    if self.landmark_dims not in (2, 3):
      raise ValueError(f"landmark_dims must be 2 or 3, got {self.landmark_dims}")

  @property
  def uses_face_model(self) -> bool:
    """The 3DMM is needed (L_Ch, L_3DMM or L_lm is on)."""
    return self.chamfer_weight > 0 or self.deform_weight > 0 or self.uses_recon

  @property
  def uses_recon(self) -> bool:
    """The face-reconstruction network is needed (L_lm is on)."""
    return self.landmark_weight > 0


@flax.struct.dataclass
class Teachers:
  """What the 3D-imitation losses imitate; passed (replicated) as an argument of the step.

  Attributes:
    face: the 3DMM when `StepConfig.uses_face_model`, else None.
    recon: variables {'params', 'batch_stats'} of the face-reconstruction network when
      `StepConfig.uses_recon` (the network itself is static: `make_train_step(..., recon=)`).
  """

  face: MorphableArrays | None = None
  recon: PyTree | None = None


@flax.struct.dataclass
class GanState:
  """Everything a training run carries between steps.

  Attributes:
    step: () int32 number of completed iterations.
    g_params: generator parameters {'manifold', 'mapping', 'radiance', 'deformation'} (no
      'deformation' when the model has none: `AnimatableGenerator.expression`).
    d_params: discriminator parameters.
    g_opt_state, d_opt_state: optax states.
    ema_params: EMA of g_params (used for sampling and evaluation).
    prior: the latent prior z_id, z_exp are drawn from.
    nonfinite: () int32 number of consecutive iterations, up to this one, whose update was
      skipped (a non-finite loss, gradient or updated parameter); 0 after a clean iteration.
  """

  step: Array
  g_params: PyTree
  d_params: PyTree
  g_opt_state: Any
  d_opt_state: Any
  ema_params: PyTree
  prior: Prior
  nonfinite: Array


def make_optimizers(g_lr: float = 2e-5, deform_lr: float = 2e-5, d_lr: float = 2e-4,
                    clip_norm: float = 0.3, b1: float = 0.0, b2: float = 0.9,
                    manifold_lr: float | None = None,
                    ) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  """Adam(β = (0, 0.9)) with per-network global-norm clipping (the template field, F, D).

  The template field's manifold predictor may have its own learning rate `manifold_lr` (default
  `g_lr`, as the paper; GRAM's CARLA setting is 0.1 × g_lr); it is still clipped together with
  the rest of the template field. F has its own optimizer and clip (`deform_lr`).
  """
  adam = lambda lr: optax.adam(lr, b1=b1, b2=b2)
  manifold_lr = g_lr if manifold_lr is None else manifold_lr
  template = optax.chain(
      optax.clip_by_global_norm(clip_norm),
      optax.multi_transform({"manifold": adam(manifold_lr), "rest": adam(g_lr)},
                            lambda p: {k: "manifold" if k == "manifold" else "rest" for k in p}))
  deformation = deformation_optimizer(deform_lr, clip_norm, b1, b2)
  labels = lambda params: {k: "deformation" if k == "deformation" else "template" for k in params}
  g_tx = optax.multi_transform({"template": template, "deformation": deformation}, labels)
  return g_tx, optax.chain(optax.clip_by_global_norm(clip_norm), adam(d_lr))


def deformation_optimizer(deform_lr: float, clip_norm: float, b1: float,
                          b2: float) -> optax.GradientTransformation:
  """The deformation network's optimizer: Adam(β = (b1, b2)) after its own global-norm clip."""
  return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(deform_lr, b1=b1, b2=b2))


def create_state(key: PRNGKey, generator: AnimatableGenerator, discriminator: Discriminator,
                 g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation,
                 prior: Prior | None = None) -> GanState:
  """A fresh state on the host (`replicate` it for the pmapped step), built by one compiled
  call: run op by op, the initialisation compiles hundreds of small programs in every process."""
  return _create_state(key, prior or GaussianPrior.standard(), generator, discriminator, g_tx,
                       d_tx)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _create_state(key, prior, generator, discriminator, g_tx, d_tx) -> GanState:
  key_g, key_d = jax.random.split(key)
  g_params = init_generator(generator, key_g)["params"]
  res = discriminator.resolution
  d_params = discriminator.init(key_d, jnp.zeros((1, res, res, 3)))["params"]
  return GanState(step=jnp.zeros((), jnp.int32), g_params=g_params, d_params=d_params,
                  g_opt_state=g_tx.init(g_params), d_opt_state=d_tx.init(d_params),
                  ema_params=g_params, prior=prior, nonfinite=jnp.zeros((), jnp.int32))


def replicate(tree: PyTree) -> PyTree:
  """One copy of every leaf per local device, laid out along the pmapped axis (as
  flax.jax_utils.replicate, but copied on the host: stacking on the device compiles a program
  per leaf shape)."""
  devices = jax.local_devices()
  sharding = jax.NamedSharding(jax.sharding.Mesh(np.array(devices), (AXIS,)), jax.P(AXIS))

  def put(x):
    if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    x = np.asarray(x)
    return jax.device_put(np.broadcast_to(x[None], (len(devices),) + x.shape), sharding)
  return jax.tree_util.tree_map(put, tree)


def unreplicate(tree: PyTree) -> PyTree:
  """The first local device's copy of every leaf of a pmapped output, as host arrays."""
  def get(x):
    if not isinstance(x, jax.Array) or jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return x[0]
    if x.ndim == 0:  # not a pmapped output (those have the device axis): as flax, unchanged
      return np.asarray(x)
    if len(x.sharding.device_set) > 1 and x.sharding.is_fully_replicated:
      return np.asarray(x.addressable_shards[0].data)
    first = min(x.addressable_shards, key=lambda shard: shard.index[0].start or 0)
    return np.asarray(first.data)[0]
  return jax.tree_util.tree_map(get, tree)


def _fade_alpha(step: Array, cfg: StepConfig) -> Array:
  if cfg.fade_steps <= 0:
    return jnp.ones((), jnp.float32)
  return jnp.clip((step - cfg.stage_start) / cfg.fade_steps, 0.0, 1.0).astype(jnp.float32)


def image_params(g_params: PyTree, cfg: StepConfig) -> PyTree:
  """The generator parameters the rendered image sees: the deformation network's under
  `stop_gradient` when `cfg.deform_image_gradient` is off (its own terms still train it)."""
  if cfg.deform_image_gradient or "deformation" not in g_params:
    return g_params
  return {**g_params, "deformation": jax.lax.stop_gradient(g_params["deformation"])}


def _fakes(generator, g_params, prior, key, num, cfg: StepConfig, remat: bool):
  key_latents, key_camera = jax.random.split(key)
  latents = sample_latents(prior, key_latents, num)
  camera = sample_camera(key_camera, num, yaw_std=cfg.yaw_std, pitch_std=cfg.pitch_std,
                         clamp=cfg.pose_clamp)
  out = render(generator, {"params": g_params}, latents, camera, resolution=cfg.resolution,
               chunk_size=cfg.chunk_size, lock_view=False, remat=remat)
  # render's default skips the radiance at invalid points for the D step's fakes (a forward
  # render: faster on the CPU), not for the G step's (remat: skipping slows its backward).
  return out, latents, camera


def _all_finite(tree: PyTree) -> Array:
  leaves = jax.tree_util.tree_leaves(tree)
  if not leaves:  # e.g. the state of a stateless optimizer
    return jnp.array(True)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _apply(tx, params, opt_state, grads, ok):
  """Optimizer update, or nothing when `ok` is False (a non-finite loss or gradient) or the
  updated parameters or optimizer state would not be finite (e.g. a learning rate that
  overflows); returns (params, opt_state, whether the update was applied)."""
  updates, new_opt_state = tx.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)
  ok = ok & _all_finite(new_params) & _all_finite(new_opt_state)
  ok = jax.lax.pmin(ok.astype(jnp.int32), AXIS).astype(bool)
  keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)
  return keep(new_params, params), keep(new_opt_state, opt_state), ok


def d_step(state: GanState, batch: Batch, key: PRNGKey, *, generator, discriminator, d_tx,
           cfg: StepConfig) -> tuple[GanState, dict]:
  """Discriminator update on a real batch (B, R, R, 3) and as many fakes (no G gradient)."""
  out, _, camera = _fakes(generator, state.g_params, state.prior, key, cfg.per_device_batch,
                          cfg, remat=False)
  fake = jax.lax.stop_gradient(out.image)
  alpha = _fade_alpha(state.step, cfg)

  def loss_fn(d_params):
    apply = lambda x: discriminator.apply({"params": d_params}, x, alpha)
    real_logit, real_pose = apply(batch.image)
    fake_logit, fake_pose = apply(fake)
    terms = dict(d_real=losses.d_real_loss(real_logit), d_fake=losses.d_fake_loss(fake_logit),
                 r1=losses.r1_penalty(lambda x: apply(x)[0], batch.image),
                 d_pose_fake=losses.pose_loss(fake_pose, camera.as_pose()),
                 d_pose_real=losses.pose_loss(real_pose, batch.pose))
    total = (terms["d_real"] + terms["d_fake"] + 0.5 * cfg.r1_gamma * terms["r1"]
             + cfg.pos_lambda * terms["d_pose_fake"] + cfg.real_pos_lambda * terms["d_pose_real"])
    return total, terms

  (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d_params)
  grads = jax.lax.pmean(grads, AXIS)
  ok = jnp.isfinite(loss) & _all_finite(grads)
  ok = jax.lax.pmin(ok.astype(jnp.int32), AXIS).astype(bool)
  d_params, d_opt_state, ok = _apply(d_tx, state.d_params, state.d_opt_state, grads, ok)
  metrics = dict(terms, d_loss=loss, d_grad_norm=optax.tree.norm(grads), fade_alpha=alpha,
                 d_ok=ok.astype(jnp.float32))
  return state.replace(d_params=d_params, d_opt_state=d_opt_state), metrics


def landmark_term(recon: ReconNet, recon_variables: PyTree, face: MorphableArrays, latents,
                  camera, images: Array, cfg: StepConfig, radius: float = 1.0) -> Array:
  """L_lm (Eq. 7) of generated images (B, R, R, 3) in [-1, 1] rendered from `latents`, `camera`.

  The frozen network (inference-mode BatchNorm) predicts ẑ_id, ẑ_exp from the images; the loss is
  the mean squared distance of landmarks 17-67 of S(ẑ_id, ẑ_exp) and S(z_id, z_exp), both placed
  in world units by `geometry.model_to_world` (3-D), or projected by the generating camera
  (2-D ablation). Gradients reach the generator through the images only.
  """
  predicted = recon.apply(recon_variables, (images + 1.0) / 2.0, train=False)
  # Only the 68 landmark rows of S = S̄ + B_id β + B_exp γ, not the whole mesh.
  index = face.landmarks
  mean, id_basis, exp_basis = (face.mean_shape[index], face.id_basis[index],
                               face.exp_basis[index])

  def world_landmarks(z_id, z_exp):
    return geometry.model_to_world(mean + jnp.einsum("nck,k->nc", id_basis, z_id)
                                   + jnp.einsum("nck,k->nc", exp_basis, z_exp))

  mine = jax.vmap(world_landmarks)(predicted[:, :80], predicted[:, 80:144])
  reference = jax.vmap(world_landmarks)(latents.z_id, latents.z_exp)
  if cfg.landmark_dims == 2:
    mine = radius * project_points(camera, mine, radius)
    reference = radius * project_points(camera, reference, radius)
  return losses.landmark_loss(mine, jax.lax.stop_gradient(reference))


def reference_offsets(face, z_id, z_exp, identity: bool):
  """(N, 3) what Eq. 8's field undoes at each vertex, model frame: B_exp γ (the paper), plus
  B_id β with `identity` (`StepConfig.deform_identity`)."""
  offsets = geometry.expression_offsets(face, z_exp)
  return offsets + geometry.identity_offsets(face, z_id) if identity else offsets


def imitation_terms(generator: AnimatableGenerator, g_params: PyTree, teachers: Teachers | None,
                    latents, camera, out, key: PRNGKey, cfg: StepConfig,
                    recon: ReconNet | None = None) -> dict:
  """The unweighted 3D-imitation terms of one generator sub-batch (paper Eq. 6-11).

  The 3DMM mesh S(z_id, z_exp) is placed in world units by `geometry.model_to_world`; S′ is the
  generated depth (Eq. 5) back-projected along the pixel rays. Query points for Eq. 8-11 are
  mesh vertices (target space) jittered by N(0, imitation_noise²). L_lm needs `recon` (static)
  and its variables in `teachers.recon`.
  """
  terms = {}
  if not (cfg.uses_face_model or cfg.reg_weight > 0 or cfg.smooth_weight > 0):
    return terms
  face = teachers.face if teachers is not None else None
  if cfg.uses_face_model and face is None:
    raise ValueError("an imitation loss is on but no 3DMM was given (Teachers.face)")
  if cfg.uses_recon:
    if recon is None or teachers.recon is None:
      raise ValueError("landmark_weight > 0 needs the reconstruction network: pass recon= and "
                       "its variables in Teachers.recon")
    terms["landmark"] = landmark_term(recon, teachers.recon, face, latents, camera, out.image,
                                      cfg, generator.camera_radius)
  codes = generator.apply({"params": g_params}, latents, method=AnimatableGenerator.codes)
  deform = lambda x, c: generator.apply({"params": g_params}, x, c,
                                        method=AnimatableGenerator.deform)
  if face is not None:
    vertices = geometry.model_to_world(
        jax.vmap(lambda i, e: geometry.face_vertices(face, i, e))(latents.z_id, latents.z_exp))
  if cfg.chamfer_weight > 0:
    rays = generate_rays(camera, cfg.resolution, generator.fov_degrees, generator.camera_radius)
    depth = out.depth.reshape(out.depth.shape[0], -1)
    cloud = rays.origins + depth[..., None] * rays.directions
    opaque = (1.0 - out.weights[..., -1]) > cfg.chamfer_opacity
    terms["chamfer"] = jnp.mean(jax.vmap(losses.directed_chamfer)(vertices, cloud, opaque))
  key_pick, key_noise, key_xi = jax.random.split(key, 3)
  num_images = latents.z_id.shape[0]
  if face is not None:
    pick = jax.random.randint(key_pick, (num_images, cfg.imitation_points), 0,
                              vertices.shape[1])
    anchors = jnp.take_along_axis(vertices, pick[..., None], axis=1)
  else:  # regularisers only: points inside the sample box
    anchors = jax.random.uniform(key_pick, (num_images, cfg.imitation_points, 3),
                                 minval=-0.1, maxval=0.1)
  points = anchors + cfg.imitation_noise * jax.random.normal(key_noise, anchors.shape)
  delta = jax.vmap(deform)(points, codes)
  if cfg.deform_weight > 0:
    offsets = geometry.model_to_world(
        jax.vmap(lambda i, e: reference_offsets(face, i, e, cfg.deform_identity))(
            latents.z_id, latents.z_exp), translation=(0.0, 0.0, 0.0))
    reference = jax.vmap(losses.reference_deformation)(points, vertices, offsets)
    terms["deform_imitation"] = losses.deformation_imitation_loss(delta, reference)
  if cfg.reg_weight > 0:
    terms["deform_reg"] = losses.deformation_regularizer(delta)
  if cfg.smooth_weight > 0:
    xi = jax.random.uniform(key_xi, points.shape, minval=-cfg.smooth_radius,
                            maxval=cfg.smooth_radius)
    terms["deform_smooth"] = losses.deformation_smoothness(delta, jax.vmap(deform)(points + xi, codes))
  return terms


IMITATION_WEIGHTS = (("chamfer", "chamfer_weight"), ("deform_imitation", "deform_weight"),
                     ("deform_reg", "reg_weight"), ("deform_smooth", "smooth_weight"),
                     ("landmark", "landmark_weight"))


def g_step(state: GanState, key: PRNGKey, teachers: Teachers | None = None, *, generator,
           discriminator, g_tx, cfg: StepConfig,
           recon: ReconNet | None = None) -> tuple[GanState, dict]:
  """Generator update; gradients summed over `batch_split` sub-batches (as GRAM, not averaged)."""
  if cfg.per_device_batch % cfg.batch_split:
    raise ValueError(f"per-device batch {cfg.per_device_batch} must be divisible by batch_split "
                     f"{cfg.batch_split}")
  sub_batch = cfg.per_device_batch // cfg.batch_split
  alpha = _fade_alpha(state.step, cfg)

  def loss_fn(g_params, sub_key):
    key_fakes, key_imitation = jax.random.split(sub_key)
    out, latents, camera = _fakes(generator, image_params(g_params, cfg), state.prior, key_fakes,
                                  sub_batch, cfg,
                                  remat=True)
    logit, pose = discriminator.apply({"params": state.d_params}, out.image, alpha)
    terms = dict(g_adv=losses.g_adversarial_loss(logit),
                 g_pose=losses.pose_loss(pose, camera.as_pose()))
    terms.update(imitation_terms(generator, g_params, teachers, latents, camera, out,
                                 key_imitation, cfg, recon))
    # Geometry health, logged only: the manifolds' opacity (1 − background weight) and the
    # fraction of ray-manifold crossings found. Both at 0 means the faces sit on the background
    # plane and no gradient reaches the manifold predictor (a collapse training cannot undo).
    crossings, foreground = manifold_health(out)
    terms.update(crossings=jnp.mean(crossings), foreground=jnp.mean(foreground))
    total = terms["g_adv"] + cfg.pos_lambda * terms["g_pose"]
    for name, weight in IMITATION_WEIGHTS:
      if name in terms:
        total = total + getattr(cfg, weight) * terms[name]
    return total, terms

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def accumulate(carry, sub_key):
    (loss, terms), grads = grad_fn(state.g_params, sub_key)
    total_grads, total_loss, total_terms = carry
    return (jax.tree_util.tree_map(jnp.add, total_grads, grads), total_loss + loss,
            jax.tree_util.tree_map(jnp.add, total_terms, terms)), None

  zeros = jax.tree_util.tree_map(jnp.zeros_like, state.g_params)
  zero_terms = jax.tree_util.tree_map(
      jnp.zeros_like, jax.eval_shape(loss_fn, state.g_params, key)[1])
  (grads, loss, terms), _ = jax.lax.scan(accumulate, (zeros, jnp.zeros(()), zero_terms),
                                         jax.random.split(key, cfg.batch_split))
  grads = jax.lax.pmean(grads, AXIS)
  ok = jnp.isfinite(loss) & _all_finite(grads)
  ok = jax.lax.pmin(ok.astype(jnp.int32), AXIS).astype(bool)
  g_params, g_opt_state, ok = _apply(g_tx, state.g_params, state.g_opt_state, grads, ok)
  count = state.step.astype(jnp.float32)
  decay = jnp.minimum(cfg.ema_decay, (1.0 + count) / (10.0 + count))
  ema = jax.tree_util.tree_map(lambda e, p: jnp.where(ok, decay * e + (1 - decay) * p, e),
                               state.ema_params, g_params)
  metrics = {k: v / cfg.batch_split for k, v in terms.items()}
  metrics.update(g_loss=loss / cfg.batch_split, g_grad_norm=optax.tree.norm(grads),
                 g_ok=ok.astype(jnp.float32))
  return state.replace(g_params=g_params, g_opt_state=g_opt_state, ema_params=ema), metrics


def train_step(state: GanState, batch: Batch, key: PRNGKey, teachers: Teachers | None = None,
               *, generator: AnimatableGenerator, discriminator: Discriminator, g_tx, d_tx,
               cfg: StepConfig, recon: ReconNet | None = None) -> tuple[GanState, dict]:
  """One iteration (D step, then G step) on one replica; pmap it with `make_train_step`.

  `teachers` holds the 3DMM and the reconstruction network's variables the imitation losses
  need (None when every imitation loss is off).
  """
  key = jax.random.fold_in(jax.random.fold_in(key, state.step), jax.lax.axis_index(AXIS))
  key_d, key_g = jax.random.split(key)
  state, d_metrics = d_step(state, batch, key_d, generator=generator, discriminator=discriminator,
                            d_tx=d_tx, cfg=cfg)
  state, g_metrics = g_step(state, key_g, teachers, generator=generator,
                            discriminator=discriminator, g_tx=g_tx, cfg=cfg, recon=recon)
  skipped = 1 - (d_metrics["d_ok"] * g_metrics["g_ok"]).astype(jnp.int32)
  state = state.replace(step=state.step + 1, nonfinite=(state.nonfinite + 1) * skipped)
  metrics = jax.lax.pmean({**d_metrics, **g_metrics}, AXIS)
  metrics["nonfinite_steps"] = state.nonfinite.astype(jnp.float32)
  return state, metrics


def make_train_step(generator, discriminator, g_tx, d_tx, cfg: StepConfig,
                    recon: ReconNet | None = None):
  """`train_step` bound to its static settings and pmapped over the local devices.

  Call as p_step(replicated_state, batch (devices, per_device, ...), replicated_key[,
  replicated Teachers]); `recon` is the reconstruction network of L_lm.
  """
  step = functools.partial(train_step, generator=generator, discriminator=discriminator,
                           g_tx=g_tx, d_tx=d_tx, cfg=cfg, recon=recon)
  return jax.pmap(step, axis_name=AXIS, donate_argnums=(0,))
