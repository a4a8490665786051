"""Differentiable intersection of a ray with the level sets of a scalar field (SPEC §2.3-§2.4).

GRAM's radiance manifolds are the level sets {x : s(x) = l} of the manifold predictor s. Along a
ray sampled at x_0..x_{S-1} (target space, world units) with field values s_0..s_{S-1}, each level
l is intersected at the first sample interval [k, k+1] where s crosses l going down, by linear
interpolation of s. The interval choice is discrete; the point is differentiable through s (and
through any per-sample quantity interpolated with the same weights, such as the deformation Δ).

Everything here is written for one ray and vectorised by the caller with `jax.vmap`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from anifacegan_jax.types import Array

CROSSING_MODES = ("decreasing", "either")


def manifold_levels(start: float = 23.0, end: float = 8.0, num: int = 23) -> Array:
  """(L,) iso-values of the manifolds, linspace(start, end, num) (GRAM FFHQ: 23 → 8, 23 levels)."""
  return jnp.linspace(start, end, num, dtype=jnp.float32)


def first_crossings(s: Array, levels: Array, *, crossing: str = "decreasing",
                    min_gap: float = 0.0) -> tuple[Array, Array, Array]:
  """First crossing of every level along one ray.

  For level l and interval k with (s_lo, s_hi) = (s_k, s_{k+1}), the crossing is valid when
  s_hi ≤ l ≤ s_lo (s decreasing through l). The chosen interval is the nearest one to the camera
  whose score is positive:
    * crossing='decreasing' (GRAM): score sign = +1 for a valid crossing, -1 otherwise;
    * crossing='either' (released AniFaceGAN): sign((s_hi - l)(l - s_lo)), +1 for a crossing in either
      direction; an increasing first crossing is then picked but marked invalid.
  With no crossing the last interval is chosen and marked invalid.

  The interpolation fraction a = (l - s_lo) / (s_hi - s_lo) ∈ [0, 1] puts the point at
  (1 - a)·x_k + a·x_{k+1}. Invalid crossings, and valid ones with |s_hi - s_lo| ≤ min_gap, get
  a = 1 (the interval's far sample, as GRAM). The division uses the double-`where` pattern so
  neither the value nor the gradient is NaN when s_hi = s_lo.

  Args:
    s: (S,) field values at the ray samples, ordered from the camera outwards.
    levels: (L,) iso-values.
    crossing: 'decreasing' or 'either' (see above).
    min_gap: GRAM's guard on |s_hi - s_lo| (0.05 in GRAM, 0 in released AniFaceGAN).

  Returns:
    index: (L,) int32 interval index k in [0, S - 2].
    fraction: (L,) float32 a, differentiable w.r.t. s.
    valid: (L,) bool.
  """
  if crossing not in CROSSING_MODES:
    raise ValueError(f"crossing must be one of {CROSSING_MODES}, got {crossing!r}")
  s_lo, s_hi = s[:-1], s[1:]
  num_intervals = s_lo.shape[0]
  level = levels[:, None]
  s_lo_ng, s_hi_ng = jax.lax.stop_gradient(s_lo), jax.lax.stop_gradient(s_hi)
  decreasing = (s_hi_ng <= level) & (level <= s_lo_ng)  # (L, K)
  if crossing == "decreasing":
    sign = jnp.where(decreasing, 1.0, -1.0)
  else:
    sign = jnp.sign((s_hi_ng - level) * (level - s_lo_ng))
  # Strictly decreasing cost makes the argmax pick the crossing nearest to the camera.
  cost = jnp.linspace(float(num_intervals), 0.0, num_intervals, dtype=s.dtype)
  index = jnp.argmax(sign * cost, axis=-1).astype(jnp.int32)
  valid = jnp.take_along_axis(decreasing, index[:, None], axis=-1)[:, 0]
  lo, hi = s_lo[index], s_hi[index]
  gap = hi - lo
  usable = valid & (jnp.abs(jax.lax.stop_gradient(gap)) > min_gap)
  safe_gap = jnp.where(usable, gap, -1.0)
  fraction = jnp.where(usable, (levels - lo) / safe_gap, 1.0)
  return index, fraction, valid


def interpolate_at(values: Array, index: Array, fraction: Array) -> Array:
  """Evaluate per-sample `values` (S, C) at the crossings: (1 - a)·v_k + a·v_{k+1} → (L, C)."""
  a = fraction[:, None]
  return (1.0 - a) * values[index] + a * values[index + 1]
