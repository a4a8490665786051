"""Pure, unweighted loss terms. Weights live in the config and are applied by `train_step`.

Adversarial part (GRAM, SPEC §4.3): non-saturating softplus losses, the R1 penalty on real images
and pose regression of the discriminator's pose head.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from anifacegan_jax.face3d.geometry import nearest_vertices
from anifacegan_jax.types import Array


def d_real_loss(logits: Array) -> Array:
  """mean softplus(−D(real))."""
  return jnp.mean(jax.nn.softplus(-logits))


def d_fake_loss(logits: Array) -> Array:
  """mean softplus(D(fake))."""
  return jnp.mean(jax.nn.softplus(logits))


def g_adversarial_loss(logits: Array) -> Array:
  """mean softplus(−D(fake)): the non-saturating generator loss."""
  return jnp.mean(jax.nn.softplus(-logits))


def pose_loss(predicted: Array, target: Array) -> Array:
  """MSE between predicted and true (pitch, yaw), both (B, 2) radians."""
  return jnp.mean(jnp.square(predicted - target))


def r1_penalty(logit_fn: Callable[[Array], Array], images: Array) -> Array:
  """E_batch ‖∇_x D(x)‖² for real images x (B, R, R, 3); the caller multiplies by 0.5·γ.

  `logit_fn` maps images to per-image logits (B,); the gradient of their sum gives every image's
  own gradient because the discriminator treats images independently.
  """
  grads = jax.grad(lambda x: jnp.sum(logit_fn(x)))(images)
  return jnp.mean(jnp.sum(jnp.square(grads).reshape(images.shape[0], -1), axis=-1))


# --- 3D imitation (paper §3.4, Eq. 6-11). Points are world units (GRAM frame) unless stated. ---

LANDMARKS_WITHOUT_CONTOUR = tuple(range(17, 68))  # iBUG 68 minus the jaw contour (paper Eq. 7)


def _masked_min_squared_distance(source: Array, target: Array, target_mask: Array) -> Array:
  """(N,) min over valid targets of ‖s − t‖² for each source point; +inf if no target is valid."""
  d2 = jnp.sum(jnp.square(source[:, None, :] - target[None, :, :]), axis=-1)
  return jnp.min(jnp.where(target_mask[None, :], d2, jnp.inf), axis=-1)


def directed_chamfer(source: Array, target: Array, target_mask: Array | None = None,
                     source_mask: Array | None = None, chunk: int = 512) -> Array:
  """Eq. 6: (1/|S|) Σ_{x∈S} min_{y∈S′} ‖x − y‖², from the 3DMM mesh S to the depth cloud S′.

  Args:
    source: (N, 3) mesh vertices S(z_id, z_exp), world units.
    target: (M, 3) points back-projected from the generated depth, world units.
    target_mask: (M,) bool, pixels opaque enough to count (default all).
    source_mask: (N,) bool, vertices to average over (e.g. those facing the camera; default all).
    chunk: source points per `lax.map` step, so N·M distances never exist at once.

  Returns:
    () the mean squared distance; gradients reach both point sets through the chosen pairs.
    0 when no target point is valid (an image with no opaque pixel gives no constraint).
  """
  num = source.shape[0]
  target_mask = jnp.ones(target.shape[0], bool) if target_mask is None else target_mask
  source_mask = jnp.ones(num, bool) if source_mask is None else source_mask
  padded = -(-num // chunk) * chunk
  blocks = jnp.pad(source, ((0, padded - num), (0, 0))).reshape(-1, chunk, 3)
  nearest = jax.lax.map(lambda b: _masked_min_squared_distance(b, target, target_mask), blocks)
  nearest = nearest.reshape(-1)[:num]
  use = source_mask & jnp.any(target_mask)
  nearest = jnp.where(use, nearest, 0.0)  # where, not a product: inf·0 would be NaN
  return jnp.sum(nearest) / jnp.maximum(jnp.sum(use.astype(source.dtype)), 1.0)


def landmark_loss(landmarks: Array, reference: Array,
                  indices: tuple[int, ...] = LANDMARKS_WITHOUT_CONTOUR) -> Array:
  """Eq. 7: mean over `indices` of ‖f_lm(S(ẑ)) − f_lm(S(z))‖² for (..., 68, D) landmarks (D = 3, or
  2 for the 2-D ablation)."""
  idx = jnp.asarray(indices)
  return jnp.mean(jnp.sum(jnp.square(landmarks[..., idx, :] - reference[..., idx, :]), axis=-1))


def deformation_imitation_loss(delta: Array, reference: Array) -> Array:
  """Eq. 9: mean ‖Δx − Δx_ref‖² over (K, 3) query points; Δx_ref from `reference_deformation`."""
  return jnp.mean(jnp.sum(jnp.square(delta - reference), axis=-1))


def reference_deformation(points: Array, vertices: Array, expression_offsets: Array,
                          chunk: int = 256) -> Array:
  """Eq. 8: Δx_ref = −B_exp γ at the mesh vertex nearest to each point.

  Args:
    points: (K, 3) query points in target space, world units.
    vertices: (N, 3) the target mesh S(z_id, z_exp), world units.
    expression_offsets: (N, 3) B_exp γ per vertex, converted to world units (rotation and scale
      of the model → world transform, no translation).
    chunk: points per search step.

  Returns:
    (K, 3) reference inverse warp; no gradient flows into the search.
  """
  index, _ = nearest_vertices(jax.lax.stop_gradient(points), jax.lax.stop_gradient(vertices),
                              chunk=chunk)
  return -expression_offsets[index]


def deformation_regularizer(delta: Array) -> Array:
  """Eq. 10: L_reg = mean ‖Δx‖²."""
  return jnp.mean(jnp.sum(jnp.square(delta), axis=-1))


def deformation_smoothness(delta: Array, delta_perturbed: Array) -> Array:
  """Eq. 11: L_smooth = mean ‖Δ(x) − Δ(x + ξ)‖², ξ ~ U(±0.001)³ world units (SPEC §3.7)."""
  return jnp.mean(jnp.sum(jnp.square(delta - delta_perturbed), axis=-1))
