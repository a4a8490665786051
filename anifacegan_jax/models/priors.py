"""Priors over the 3DMM codes z_id (80) and z_exp (64) used to sample training latents.

`GaussianPrior` is a full-covariance Gaussian fitted to a table of real coefficients (or the
standard normal); `VAEPrior` (models/vae.py) decodes N(0, I₂₅₆) draws with the paper's coefficient
VAEs, fitted here by `fit_vae_prior`. Both have `sample_id(key, num)` / `sample_exp(key, num)`.
`save_prior` / `load_prior` keep either kind in one `.npz` file (see `save_prior`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import zipfile
from typing import Any, Mapping, Union

import flax.struct
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from anifacegan_jax.models.vae import CoefficientVAE, VAEPrior, decoder_for, init_vae
from anifacegan_jax.types import (EXP_DIM, ID_DIM, NOISE_DIM, Array, Latents, PRNGKey,
                                  PyTree)


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


Prior = Union[GaussianPrior, VAEPrior]


def sample_latents(prior: Prior, key: PRNGKey, num: int) -> Latents:
  """z_id, z_exp from the prior and ε ~ N(0, I₈₀) (SPEC §3.1)."""
  key_id, key_exp, key_noise = jax.random.split(key, 3)
  return Latents(z_id=prior.sample_id(key_id, num), z_exp=prior.sample_exp(key_exp, num),
                 noise=jax.random.normal(key_noise, (num, NOISE_DIM)))


# ---------------------------------------------------------------------------------------------
# Fitting the coefficient VAEs.

# KL weight of the ELBO (the official weight is unknown, SPEC §8.12); see `vae_loss`.
DEFAULT_BETA = 2.5e-4


def check_table(x: Any, dim: int, name: str, min_rows: int = 2) -> np.ndarray:
  """A (M ≥ min_rows, dim) finite coefficient table as float64; else a ValueError naming `name`."""
  x = np.asarray(x)
  if x.ndim != 2 or x.shape[1] != dim or x.dtype.kind not in "fiu":
    raise ValueError(f"{name} must be a (M, {dim}) numeric table of coefficients, got shape "
                     f"{x.shape} dtype {x.dtype}")
  if x.shape[0] < min_rows:
    raise ValueError(f"{name} has {x.shape[0]} rows, need at least {min_rows} to fit a prior")
  bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
  if bad.size:
    raise ValueError(f"{name} has {bad.size} rows with NaN/inf (first: row {bad[0]}); drop or "
                     "fix them before fitting")
  return x.astype(np.float64)


@dataclasses.dataclass(frozen=True)
class VAEFit:
  """A fitted CoefficientVAE.

  Attributes:
    params: full CoefficientVAE params (encoder + decoder) in raw coefficient units.
    losses: (steps,) minibatch ELBO loss per step, in standardised units (see `fit_vae`).
  """

  params: PyTree
  losses: np.ndarray


def vae_loss(model: CoefficientVAE, params: PyTree, x: Array, key: PRNGKey,
             beta: float) -> tuple[Array, tuple[Array, Array]]:
  """Negative ELBO in the form of the PyTorch-VAE `VanillaVAE` loss the official code's
  architecture comes from: mean_{b,d} (x − x̂)² + β · mean_b KL(q(n|x) ‖ N(0, I)).

  With a Gaussian likelihood of per-dimension variance σ² this is the exact negative ELBO
  (up to a constant and a factor) for β = 2σ²/D, D = x.shape[-1]. The official weight is unknown
  (SPEC §8.12); the default β = 2.5e-4 is PyTorch-VAE's `kld_weight` and means σ² = 0.01 (id) /
  0.008 (exp) of the standardised data. Decoding drops that noise, so decoded N(0, I) draws are
  somewhat narrower than the data: in a 20k-step study on 20k-row tables (H200, He-normal init
  throughout) they kept a median 0.6 of each coefficient's variance, and β = 2.5e-3 collapsed the
  posterior in 3k steps (decoded draws ≈ the mean). Check a fitted prior's spread before training.

  Args:
    x: (B, D) standardised coefficients.
  Returns:
    (loss, (reconstruction MSE, KL)), scalars.
  """
  recon, mu, logvar = model.apply({"params": params}, x, key)
  mse = jnp.mean((recon - x) ** 2)
  kl = jnp.mean(-0.5 * jnp.sum(1.0 + logvar - mu**2 - jnp.exp(logvar), axis=-1))
  return mse + beta * kl, (mse, kl)


def _standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Column mean, 1/std and std; constant columns get 0 for both, so they decode to their mean."""
  mean, std = x.mean(axis=0), x.std(axis=0)
  varies = std > 1e-6 * max(float(std.max()), 1e-30)
  return mean, np.where(varies, 1.0 / np.where(varies, std, 1.0), 0.0), np.where(varies, std, 0.0)


def _fold_standardisation(params: PyTree, mean: np.ndarray, inv_std: np.ndarray,
                          std: np.ndarray) -> dict:
  """Fold x ↦ (x − mean)/std into the first encoder layer and its inverse into the decoder's
  output layer, so the VAE keeps the official architecture and works in raw coefficients."""
  params = jax.tree_util.tree_map(lambda v: np.asarray(v, np.float64), params)
  first, out = params["encoder"]["hidden_0"], params["decoder"]["output"]
  first_kernel = inv_std[:, None] * first["kernel"]
  params["encoder"]["hidden_0"] = {"kernel": first_kernel,
                                   "bias": first["bias"] - mean @ first_kernel}
  params["decoder"]["output"] = {"kernel": out["kernel"] * std[None, :],
                                 "bias": mean + std * out["bias"]}
  return jax.tree_util.tree_map(lambda v: np.asarray(v, np.float32), params)


def _train_steps(model: CoefficientVAE, tx: optax.GradientTransformation, batch_size: int,
                 beta: float, carry, data: Array, keys: Array):
  """lax.scan of Adam steps on random minibatches (with replacement) of `data`."""
  def step(carry, key):
    params, opt_state = carry
    key_batch, key_noise = jax.random.split(key)
    batch = data[jax.random.randint(key_batch, (batch_size,), 0, data.shape[0])]
    grad_fn = jax.value_and_grad(functools.partial(vae_loss, model), has_aux=True)
    (loss, _), grads = grad_fn(params, batch, key_noise, beta)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss
  return jax.lax.scan(step, carry, keys)


def fit_vae(x: Any, key: PRNGKey, *, name: str = "x", steps: int = 20_000,
            batch_size: int = 256, beta: float = DEFAULT_BETA, learning_rate: float = 1e-3,
            latent_dim: int = 256, hidden: int = 512, depth: int = 5,
            log_every: int = 1000) -> VAEFit:
  """Train one CoefficientVAE on a (M, D) coefficient table with Adam (cosine-decayed rate).

  The network is trained on column-standardised data (a well-conditioned problem whatever the
  coefficients' scales) and the standardisation is then folded into its first and last layers.

  Args:
    x: (M, D) coefficients, finite; `name` is used in error messages.
    key: PRNG key (initialisation, minibatches, reparameterisation noise).
    steps, batch_size, beta, learning_rate: optimisation; `beta` weighs the KL (`vae_loss`).
    latent_dim, hidden, depth: architecture (official 256, 512, 5).
    log_every: steps between progress logs (also the length of one jitted scan).
  """
  x = np.asarray(x)
  x = check_table(x, x.shape[-1] if x.ndim == 2 else -1, name)
  if steps < 1 or batch_size < 1 or beta < 0 or learning_rate <= 0:
    raise ValueError(f"fit_vae({name}): need steps ≥ 1, batch_size ≥ 1, beta ≥ 0 and "
                     f"learning_rate > 0, got {steps}, {batch_size}, {beta}, {learning_rate}")
  mean, inv_std, std = _standardisation(x)
  data = jnp.asarray((x - mean) * inv_std, jnp.float32)
  model = CoefficientVAE(x.shape[1], latent_dim, hidden, depth)
  key_init, key_train = jax.random.split(key)
  params = init_vae(model, key_init)
  tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.01))
  run = jax.jit(functools.partial(_train_steps, model, tx, batch_size, beta))
  carry, keys, losses = (params, tx.init(params)), jax.random.split(key_train, steps), []
  chunk = max(1, min(log_every, steps))
  for start in range(0, steps, chunk):
    carry, chunk_losses = run(carry, data, keys[start:start + chunk])
    losses.append(np.asarray(chunk_losses))
    if not np.isfinite(losses[-1]).all():
      raise ValueError(f"fit_vae({name}): the loss became NaN/inf near step "
                       f"{start + int(np.argmin(np.isfinite(losses[-1])))}; lower learning_rate")
    logging.info("VAE %s: step %d/%d, loss %.4f", name, start + len(losses[-1]), steps,
                 float(losses[-1][-1]))
  return VAEFit(params=_fold_standardisation(carry[0], mean, inv_std, std),
                losses=np.concatenate(losses))


def fit_vaes(z_id: Any, z_exp: Any, key: PRNGKey, **options) -> tuple[VAEFit, VAEFit]:
  """VAE_ID on (M, 80) identity and VAE_EXP on (M', 64) expression coefficients (`fit_vae`
  options)."""
  z_id, z_exp = check_table(z_id, ID_DIM, "z_id"), check_table(z_exp, EXP_DIM, "z_exp")
  key_id, key_exp = jax.random.split(key)
  return (fit_vae(z_id, key_id, name="z_id", **options),
          fit_vae(z_exp, key_exp, name="z_exp", **options))


def fit_vae_prior(z_id: Any, z_exp: Any, key: PRNGKey, **options) -> VAEPrior:
  """The decoders of `fit_vaes` as a VAEPrior."""
  fit_id, fit_exp = fit_vaes(z_id, z_exp, key, **options)
  return VAEPrior.from_vaes(fit_id.params, fit_exp.params)


# ---------------------------------------------------------------------------------------------
# Persistence: one .npz, `kind` = 'gaussian' | 'vae', arrays by '/'-joined tree path.

PRIOR_FORMAT = 1
_GAUSSIAN_SHAPES = {"id_mean": (ID_DIM,), "id_scale_tril": (ID_DIM, ID_DIM),
                    "exp_mean": (EXP_DIM,), "exp_scale_tril": (EXP_DIM, EXP_DIM)}


class PriorFileError(ValueError):
  """A prior file that is not a readable prior of a known kind."""


def save_prior(prior: Prior, path: str | os.PathLike) -> pathlib.Path:
  """Write `prior` to `path` (an uncompressed .npz; written beside it, then renamed).

  Keys: `kind`, `format` and the float32 arrays: GaussianPrior's fields, or, for a VAEPrior,
  `id_decoder/<layer>/{kernel,bias}` and `exp_decoder/...` (Flax kernels (in, out)).
  """
  path = pathlib.Path(path)
  if isinstance(prior, GaussianPrior):
    kind, arrays = "gaussian", {k: getattr(prior, k) for k in _GAUSSIAN_SHAPES}
  elif isinstance(prior, VAEPrior):
    tree = {"id_decoder": prior.id_decoder, "exp_decoder": prior.exp_decoder}
    kind, arrays = "vae", flax.traverse_util.flatten_dict(tree, sep="/")
  else:
    raise TypeError(f"save_prior: expected a GaussianPrior or VAEPrior, got {type(prior).__name__}")
  arrays = {k: np.asarray(v, np.float32) for k, v in arrays.items()}
  tmp = path.with_name(f".{path.name}.tmp")
  with open(tmp, "wb") as f:  # a file object: np.savez would append '.npz' to a bare path
    np.savez(f, kind=np.array(kind), format=np.array(PRIOR_FORMAT), **arrays)
  os.replace(tmp, path)
  return path


def load_prior(path: str | os.PathLike) -> Prior:
  """The GaussianPrior or VAEPrior saved by `save_prior`.

  Raises:
    FileNotFoundError; PriorFileError naming the file and the bad key.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such prior file; write one with "
                            "`python -m anifacegan_jax.fit_prior --out=...`")
  try:
    with np.load(path, allow_pickle=False) as contents:
      arrays = {k: contents[k] for k in contents.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
    raise PriorFileError(f"{path}: not a prior file written by save_prior ({error})") from error
  kind = str(arrays.pop("kind", ""))
  if int(arrays.pop("format", -1)) != PRIOR_FORMAT or kind not in ("gaussian", "vae"):
    raise PriorFileError(f"{path}: expected save_prior's format {PRIOR_FORMAT} with kind "
                         f"'gaussian' or 'vae', got kind {kind!r}")
  for key, value in arrays.items():
    if value.dtype.kind != "f" or not np.isfinite(value).all():
      raise PriorFileError(f"{path}: '{key}' must hold finite floats")
  if kind == "gaussian":
    return _gaussian_from_arrays(arrays, path)
  return _vae_from_arrays(arrays, path)


def _gaussian_from_arrays(arrays: Mapping[str, np.ndarray], path: pathlib.Path) -> GaussianPrior:
  for key, shape in _GAUSSIAN_SHAPES.items():
    if key not in arrays or arrays[key].shape != shape:
      got = arrays[key].shape if key in arrays else "missing"
      raise PriorFileError(f"{path}: Gaussian prior field '{key}' must be {shape}, got {got}")
  return GaussianPrior(**{k: jnp.asarray(arrays[k], jnp.float32) for k in _GAUSSIAN_SHAPES})


def _vae_from_arrays(arrays: Mapping[str, np.ndarray], path: pathlib.Path) -> VAEPrior:
  tree = flax.traverse_util.unflatten_dict(arrays, sep="/")
  decoders = {}
  for name, out_dim in (("id_decoder", ID_DIM), ("exp_decoder", EXP_DIM)):
    params = tree.get(name, {})
    try:
      model = decoder_for(params)
    except (AttributeError, KeyError, TypeError, IndexError) as error:
      raise PriorFileError(f"{path}: VAE prior '{name}' lacks its input/output layers") from error
    if model.out_dim != out_dim:
      raise PriorFileError(f"{path}: '{name}/output/kernel' must have {out_dim} columns, got "
                           f"{model.out_dim}")
    latent = params["input"]["kernel"].shape[0]
    want = jax.eval_shape(lambda m=model: m.init(jax.random.key(0), jnp.zeros((1, latent))))
    want = {k: v.shape for k, v in flax.traverse_util.flatten_dict(want["params"], sep="/").items()}
    got = {k: v.shape for k, v in flax.traverse_util.flatten_dict(params, sep="/").items()}
    if got != want:
      bad = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
      raise PriorFileError(
          f"{path}: VAE prior '{name}' entries {bad[:6]} have shapes "
          f"{[got.get(k) for k in bad[:6]]}, expected {[want.get(k) for k in bad[:6]]}")
    decoders[name] = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), params)
  return VAEPrior(**decoders)
