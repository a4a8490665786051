"""Pure, unweighted loss terms. Weights live in the config and are applied by `train_step`.

Adversarial part (GRAM, SPEC §4.3): non-saturating softplus losses, the R1 penalty on real images
and pose regression of the discriminator's pose head.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

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
