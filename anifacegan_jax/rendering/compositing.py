"""Alpha compositing of manifold intersections (paper Eq. 4) and depth (Eq. 5), SPEC §2.5.

Written for one ray of P points (23 manifold intersections + the background plane); the caller
vectorises with `jax.vmap`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from anifacegan_jax.types import Array

INVALID_DISTANCE = 10.0  # invalid intersections are moved behind everything before sorting
TRANSMITTANCE_EPS = 1e-10


def widened_sigmoid(logits: Array, eps: float = 1e-3) -> Array:
  """sigmoid(x)·(1 + 2ε) - ε: colours that can reach 0 and 1 exactly (GRAM's `widen_sigmoid`)."""
  return jax.nn.sigmoid(logits) * (1.0 + 2.0 * eps) - eps


def composite_ray(rgb: Array, sigma_raw: Array, distances: Array, valid: Array,
                  is_background: Array, *, delta: float = 0.04,
                  delta_background: float = 1e10,
                  white_background: bool = False) -> tuple[Array, Array, Array]:
  """Composite one ray front to back (Eq. 4) and return its colour, depth (Eq. 5) and weights.

  Points are sorted by distance (invalid ones placed at distance 10). Every interval length is the
  constant `delta`, except the last sorted point and the background point, which get
  `delta_background` (effectively opaque). α_i = (1 - exp(-δ_i·softplus(σ_i)))·valid_i,
  T_i = Π_{j<i} (1 - α_j + 1e-10), w_i = α_i·T_i.

  Args:
    rgb: (P, 3) colours in [0, 1].
    sigma_raw: (P,) raw densities (softplus is applied here).
    distances: (P,) Euclidean distance from the ray origin to each target-space point, world units.
    valid: (P,) bool.
    is_background: (P,) bool, True for the background-plane point.
    delta: interval length of every non-final point (GRAM `alpha_delta` 0.04).
    delta_background: interval length of the last and the background point.
    white_background: the released AniFaceGAN meaning of `white_back`: background colour := 1.

  Returns:
    pixel: (3,) Σ w·rgb, in [0, 1] up to the sigmoid widening.
    depth: () Σ w·z / Σ w, world units.
    weights: (P,) w in the *input* order of the points.
  """
  distances = jnp.where(valid, distances, INVALID_DISTANCE)
  order = jnp.argsort(jax.lax.stop_gradient(distances))
  rgb_s, sigma_s = rgb[order], sigma_raw[order]
  z_s, valid_s, bg_s = distances[order], valid[order], is_background[order]
  if white_background:
    rgb_s = jnp.where(bg_s[:, None], 1.0, rgb_s)
  is_last = jnp.arange(order.shape[0]) == order.shape[0] - 1
  deltas = jnp.where(is_last | bg_s, delta_background, delta)
  alpha = (1.0 - jnp.exp(-deltas * jax.nn.softplus(sigma_s))) * valid_s
  survive = 1.0 - alpha + TRANSMITTANCE_EPS
  transmittance = jnp.concatenate([jnp.ones((1,), alpha.dtype), jnp.cumprod(survive)[:-1]])
  weights_s = alpha * transmittance
  pixel = jnp.sum(weights_s[:, None] * rgb_s, axis=0)
  total = jnp.sum(weights_s)
  depth = jnp.sum(weights_s * z_s) / jnp.maximum(total, TRANSMITTANCE_EPS)
  weights = jnp.zeros_like(weights_s).at[order].set(weights_s)
  return pixel, depth, weights
