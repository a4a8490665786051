"""Disentanglement score (DS, DiscoFaceGAN §5.1) of identity, expression and pose.

For a factor f, K anchor settings (z_id, z_exp, ε, camera) are drawn from the priors and, for
each, M images vary only f (new z_exp from the prior, or a new camera from the pose prior). The
reconstruction network reads every image; σ_g is the variance of group g's predicted coefficients
(id: 80, exp: 64, pose: the 3 angles) across the M variations, averaged over anchors and summed
over the group's columns, divided by the group's variance over all rendered images (where every
factor varies). Then DS_f = ∏_{g ≠ f} σ_f / σ_g: large when varying f moves f's estimate and
nothing else.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from anifacegan_jax.metrics import coefficients as cm
from anifacegan_jax.models.priors import Prior, sample_latents
from anifacegan_jax.rendering.camera import sample_camera
from anifacegan_jax.types import Camera, Latents, PRNGKey

GROUPS = {"id": cm.ID, "exp": cm.EXP, "pose": cm.ANGLE}
VARIED = ("exp", "pose", "id")


def variations(prior: Prior, key: PRNGKey, factor: str, num_anchors: int, num_variations: int,
               *, yaw_std: float, pitch_std: float, clamp: float) -> tuple[Latents, Camera]:
  """Latents and cameras (K·M,), anchor-major, in which only `factor` changes within an anchor."""
  if factor not in VARIED:
    raise ValueError(f"factor={factor!r}; expected one of {VARIED}")
  k, m = num_anchors, num_variations
  key_anchor, key_camera, key_vary = jax.random.split(key, 3)
  cam = dict(yaw_std=yaw_std, pitch_std=pitch_std, clamp=clamp)
  latents = sample_latents(prior, key_anchor, k)
  camera = sample_camera(key_camera, k, **cam)
  repeat = lambda x: jnp.repeat(x, m, axis=0)  # noqa: E731
  latents, camera = jax.tree_util.tree_map(repeat, latents), jax.tree_util.tree_map(repeat, camera)
  if factor == "pose":
    camera = sample_camera(key_vary, k * m, **cam)
  elif factor == "exp":
    latents = latents.replace(z_exp=prior.sample_exp(key_vary, k * m))
  else:
    latents = latents.replace(z_id=prior.sample_id(key_vary, k * m))
  return latents, camera


def normalized_variances(preds: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
  """σ[f][g] for predictions {factor f: (K, M, 257)} (see the module docstring)."""
  pooled = np.concatenate([p.reshape(-1, p.shape[-1]) for p in preds.values()])
  total = {g: float(np.sum(np.var(pooled[:, cols], axis=0))) for g, cols in GROUPS.items()}
  for g, value in total.items():
    if not value > 0:
      raise ValueError(f"the predicted {g} coefficients do not vary over the rendered images; "
                       "DS is undefined")
  return {f: {g: float(np.mean(np.sum(np.var(p[..., cols], axis=1), axis=-1))) / total[g]
              for g, cols in GROUPS.items()} for f, p in preds.items()}


def scores(sigma: dict[str, dict[str, float]]) -> dict[str, float]:
  """DS_f = ∏_{g ≠ f} σ_f[f] / σ_f[g] for each varied factor f."""
  return {f: math.prod(s[f] / max(s[g], 1e-30) for g in GROUPS if g != f)
          for f, s in sigma.items()}
