"""Priors over the 3DMM codes z_id (80) and z_exp (64) used to sample training latents.

`GaussianPrior` is a full-covariance Gaussian fitted to a table of real coefficients (or the
standard normal); the paper's coefficient VAEs plug in through the same `sample` interface.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from anifacegan_jax.types import EXP_DIM, ID_DIM, NOISE_DIM, Array, Latents, PRNGKey


@flax.struct.dataclass
class GaussianPrior:
  """z = mean + L·n, n ~ N(0, I), for identity and expression separately.

  Attributes:
    id_mean: (80,); id_scale_tril: (80, 80) lower Cholesky factor of the covariance.
    exp_mean: (64,); exp_scale_tril: (64, 64).
  """

  id_mean: Array
  id_scale_tril: Array
  exp_mean: Array
  exp_scale_tril: Array

  @classmethod
  def standard(cls) -> "GaussianPrior":
    return cls(id_mean=jnp.zeros(ID_DIM), id_scale_tril=jnp.eye(ID_DIM),
               exp_mean=jnp.zeros(EXP_DIM), exp_scale_tril=jnp.eye(EXP_DIM))

  @classmethod
  def fit(cls, z_id: np.ndarray, z_exp: np.ndarray, jitter: float = 1e-6) -> "GaussianPrior":
    """Maximum-likelihood fit to (M, 80) identity and (M, 64) expression coefficients.

    Dimensions that never vary (e.g. unused expression columns) get a zero scale.
    """
    def factor(x, dim, name):
      x = np.asarray(x, np.float64)
      if x.ndim != 2 or x.shape[1] != dim or x.shape[0] < 2:
        raise ValueError(f"GaussianPrior.fit: {name} must be (M ≥ 2, {dim}), got {x.shape}")
      if not np.isfinite(x).all():
        raise ValueError(f"GaussianPrior.fit: {name} holds NaN or inf")
      cov = np.cov(x, rowvar=False) + jitter * np.eye(dim)
      return jnp.asarray(x.mean(0), jnp.float32), jnp.asarray(np.linalg.cholesky(cov), jnp.float32)

    id_mean, id_tril = factor(z_id, ID_DIM, "z_id")
    exp_mean, exp_tril = factor(z_exp, EXP_DIM, "z_exp")
    return cls(id_mean=id_mean, id_scale_tril=id_tril, exp_mean=exp_mean, exp_scale_tril=exp_tril)

  def sample_id(self, key: PRNGKey, num: int) -> Array:
    """(num, 80) identity codes."""
    return self.id_mean + jax.random.normal(key, (num, ID_DIM)) @ self.id_scale_tril.T

  def sample_exp(self, key: PRNGKey, num: int) -> Array:
    """(num, 64) expression codes."""
    return self.exp_mean + jax.random.normal(key, (num, EXP_DIM)) @ self.exp_scale_tril.T


def sample_latents(prior: GaussianPrior, key: PRNGKey, num: int) -> Latents:
  """z_id, z_exp from the prior and ε ~ N(0, I₈₀) (SPEC §3.1)."""
  key_id, key_exp, key_noise = jax.random.split(key, 3)
  return Latents(z_id=prior.sample_id(key_id, num), z_exp=prior.sample_exp(key_exp, num),
                 noise=jax.random.normal(key_noise, (num, NOISE_DIM)))
