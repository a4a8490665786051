"""The official coefficient VAEs (SPEC §3.1, §6.4), their decoder-only prior, and the official
`pretrained_vaes/{identity,expression}/vae.pth` state_dicts ↔ Flax trees (no torch import).

VAE_ID (in = 80) and VAE_EXP (in = 64) share one architecture, latent 256, hidden 512:
  encoder  5×[Linear(→512), LeakyReLU(0.01)], then fc_mu and fc_var (512→256, log-variance);
  decoder  decoder_input Linear(256→512) (no activation), 5×[Linear(512→512), LeakyReLU(0.01)],
           final Linear(512→512), LeakyReLU(0.01), Linear(512→in).
Training and FID sampling only decode: z = decode(n), n ~ N(0, I₂₅₆).

Initialisation (only matters when fitting; the official weights are missing): He-normal kernels
for the layers followed by LeakyReLU(0.01), PyTorch's default U(±1/√fan_in) for the linear heads
(fc_mu, fc_var, decoder_input, output) and for every bias. PyTorch's default everywhere shrinks
the signal through the 12-layer paths: on a 20k-row table (lr 1e-3) it trained slower and its
log-variances overflowed to NaN after ~3k steps. He-normal everywhere makes the initial log σ²
and outputs large (initial loss ≈ 40× the data variance), which stalled small fits.

Flax tree: {'encoder': {hidden_0..4, fc_mu, fc_var},
            'decoder': {input, hidden_0..4, final, output}}, each {'kernel': (in, out) = Wᵀ, 'bias'}.
"""

from __future__ import annotations

import collections
import math
import os
import pathlib
from typing import Any, Iterator, Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from anifacegan_jax import torch_save, torch_zip
from anifacegan_jax.models.layers import Linear, kaiming_leaky_init, uniform
from anifacegan_jax.types import EXP_DIM, ID_DIM, Array, PRNGKey, PyTree

LATENT_DIM = 256
HIDDEN = 512
DEPTH = 5
NEGATIVE_SLOPE = 0.01


def torch_kernel_init(key, shape, dtype=jnp.float32):
  """PyTorch's default Linear weight init (kaiming_uniform, a = √5): U(±1/√fan_in)."""
  return uniform(1.0 / math.sqrt(shape[0]))(key, shape, dtype)


def _dense(features: int, name: str, activated: bool = True) -> Linear:
  """He-normal before a LeakyReLU; PyTorch's default for the linear heads."""
  kernel_init = kaiming_leaky_init(NEGATIVE_SLOPE) if activated else torch_kernel_init
  return Linear(features, kernel_init=kernel_init, bias_init="torch", name=name)


class VAEEncoder(nn.Module):
  """x (..., in) → (μ, log σ²), each (..., latent_dim).

  Attributes:
    latent_dim: width of μ and log σ² (256 officially).
    hidden: hidden width (512).
    depth: number of Linear+LeakyReLU blocks (5).
  """

  latent_dim: int = LATENT_DIM
  hidden: int = HIDDEN
  depth: int = DEPTH

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, Array]:
    h = x
    for i in range(self.depth):
      h = nn.leaky_relu(_dense(self.hidden, f"hidden_{i}")(h), NEGATIVE_SLOPE)
    return (_dense(self.latent_dim, "fc_mu", activated=False)(h),
            _dense(self.latent_dim, "fc_var", activated=False)(h))


class VAEDecoder(nn.Module):
  """n (..., latent) → coefficients (..., out_dim).

  Attributes:
    out_dim: 80 (identity) or 64 (expression).
    hidden: hidden width (512).
    depth: number of Linear+LeakyReLU blocks after `input` (5).
  """

  out_dim: int
  hidden: int = HIDDEN
  depth: int = DEPTH

  @nn.compact
  def __call__(self, n: Array) -> Array:
    h = _dense(self.hidden, "input", activated=False)(n)  # the official has no activation here
    for i in range(self.depth):
      h = nn.leaky_relu(_dense(self.hidden, f"hidden_{i}")(h), NEGATIVE_SLOPE)
    h = nn.leaky_relu(_dense(self.hidden, "final")(h), NEGATIVE_SLOPE)
    return _dense(self.out_dim, "output", activated=False)(h)


class CoefficientVAE(nn.Module):
  """The official `VAE_model.VAE`: encode → reparameterise → decode.

  Attributes:
    in_dim: coefficient width, 80 (identity) or 64 (expression).
    latent_dim, hidden, depth: as VAEEncoder/VAEDecoder (official 256, 512, 5).
  """

  in_dim: int
  latent_dim: int = LATENT_DIM
  hidden: int = HIDDEN
  depth: int = DEPTH

  def setup(self):
    self.encoder = VAEEncoder(self.latent_dim, self.hidden, self.depth)
    self.decoder = VAEDecoder(self.in_dim, self.hidden, self.depth)

  def __call__(self, x: Array, key: PRNGKey) -> tuple[Array, Array, Array]:
    """x (B, in) → (reconstruction (B, in), μ (B, latent), log σ² (B, latent))."""
    mu, logvar = self.encoder(x)
    n = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)
    return self.decoder(n), mu, logvar

  def encode(self, x: Array) -> tuple[Array, Array]:
    return self.encoder(x)

  def decode(self, n: Array) -> Array:
    return self.decoder(n)


def init_vae(model: CoefficientVAE, key: PRNGKey) -> PyTree:
  """The model's 'params' tree."""
  x = jnp.zeros((1, model.in_dim), jnp.float32)
  return model.init(key, x, jax.random.key(0))["params"]


def decoder_for(params: Mapping[str, Any]) -> VAEDecoder:
  """The VAEDecoder whose parameters `params` are (dimensions read from the shapes)."""
  depth = sum(1 for name in params if name.startswith("hidden_"))
  return VAEDecoder(out_dim=params["output"]["kernel"].shape[1],
                    hidden=params["input"]["kernel"].shape[1], depth=depth)


def decode(params: Mapping[str, Any], n: Array) -> Array:
  """Decoder parameters, n (..., latent) → (..., out_dim) coefficients."""
  return decoder_for(params).apply({"params": params}, n)


@flax.struct.dataclass
class VAEPrior:
  """z_id = VAE_ID.decode(n₁), z_exp = VAE_EXP.decode(n₂), n₁, n₂ ~ N(0, I₂₅₆) (SPEC §3.1).

  Same sampling interface as GaussianPrior. Only the decoders are kept: training and sampling
  never encode, and the prior travels replicated inside the training state.

  Attributes:
    id_decoder: VAEDecoder params with out_dim 80.
    exp_decoder: VAEDecoder params with out_dim 64.
  """

  id_decoder: PyTree
  exp_decoder: PyTree

  @classmethod
  def from_vaes(cls, id_params: Mapping[str, Any], exp_params: Mapping[str, Any]) -> "VAEPrior":
    """From full CoefficientVAE params of VAE_ID and VAE_EXP."""
    return cls(id_decoder=id_params["decoder"], exp_decoder=exp_params["decoder"])

  @classmethod
  def init(cls, key: PRNGKey, latent_dim: int = LATENT_DIM, hidden: int = HIDDEN,
           depth: int = DEPTH) -> "VAEPrior":
    """Untrained decoders: a structure for `jax.eval_shape` restore targets and tests."""
    key_id, key_exp = jax.random.split(key)
    n = jnp.zeros((1, latent_dim), jnp.float32)
    return cls(id_decoder=VAEDecoder(ID_DIM, hidden, depth).init(key_id, n)["params"],
               exp_decoder=VAEDecoder(EXP_DIM, hidden, depth).init(key_exp, n)["params"])

  @property
  def latent_dim(self) -> int:
    return self.id_decoder["input"]["kernel"].shape[0]

  def sample_id(self, key: PRNGKey, num: int) -> Array:
    """(num, 80) identity codes."""
    n = jax.random.normal(key, (num, self.id_decoder["input"]["kernel"].shape[0]))
    return decode(self.id_decoder, n)

  def sample_exp(self, key: PRNGKey, num: int) -> Array:
    """(num, 64) expression codes."""
    n = jax.random.normal(key, (num, self.exp_decoder["input"]["kernel"].shape[0]))
    return decode(self.exp_decoder, n)


# ---------------------------------------------------------------------------------------------
# Official state_dicts: key table in registration order (keys_shapes.txt VAE_ID / VAE_EXP).


class VAECheckpointError(ValueError):
  """An official VAE checkpoint without the expected keys, shapes or finite values."""


def official_layout(depth: int = DEPTH) -> list[tuple[str, tuple[str, str]]]:
  """(official Linear prefix, Flax module path) in `parameters()` order."""
  return [*[(f"encoder.{i}.0", ("encoder", f"hidden_{i}")) for i in range(depth)],
          ("fc_mu", ("encoder", "fc_mu")), ("fc_var", ("encoder", "fc_var")),
          ("decoder_input", ("decoder", "input")),
          *[(f"decoder.{i}.0", ("decoder", f"hidden_{i}")) for i in range(depth)],
          ("final_layer.0", ("decoder", "final")), ("final_layer.2", ("decoder", "output"))]


def _entries(depth: int) -> Iterator[tuple[str, tuple[str, str], str]]:
  """(official key, Flax module path, 'kernel' | 'bias') for every tensor."""
  for prefix, path in official_layout(depth):
    yield f"{prefix}.weight", path, "kernel"
    yield f"{prefix}.bias", path, "bias"


def vae_from_torch(state: Mapping[str, Any], model: CoefficientVAE, source: str) -> dict:
  """An official VAE state_dict (key → array) → CoefficientVAE params, shape-checked.

  Raises:
    VAECheckpointError naming `source` and the offending key.
  """
  if not isinstance(state, Mapping):
    raise VAECheckpointError(f"{source}: expected a VAE state_dict (a dict of tensors), got "
                             f"{type(state).__name__}")
  if "fc_mu.weight" not in state and "module.fc_mu.weight" in state:  # DataParallel prefix
    state = {k.removeprefix("module."): v for k, v in state.items()}
  entries = list(_entries(model.depth))
  missing = sorted({key for key, _, _ in entries} - set(state))
  unexpected = sorted(set(state) - {key for key, _, _ in entries})
  if missing or unexpected:
    raise VAECheckpointError(f"{source}: keys do not match the official VAE layout; missing "
                             f"{missing[:8]}, unexpected {unexpected[:8]}")
  expected = jax.eval_shape(lambda: init_vae(model, jax.random.key(0)))
  params: dict = {}
  for key, (part, layer), leaf in entries:
    value = np.asarray(state[key])
    want = expected[part][layer][leaf].shape
    official = want[::-1] if leaf == "kernel" else want
    if value.shape != official:
      raise VAECheckpointError(f"{source}: {key} has shape {value.shape}, expected {official}")
    if value.dtype.kind not in "fiu" and value.dtype != ml_dtypes.bfloat16:
      raise VAECheckpointError(f"{source}: {key} has dtype {value.dtype}, expected float32")
    value = value.astype(np.float32)
    if not np.isfinite(value).all():
      raise VAECheckpointError(f"{source}: {key} holds NaN/inf values")
    params.setdefault(part, {}).setdefault(layer, {})[leaf] = value.T if leaf == "kernel" else value
  return params


def vae_to_torch(params: Mapping[str, Any]) -> "collections.OrderedDict[str, np.ndarray]":
  """Inverse of `vae_from_torch`: CoefficientVAE params → official state_dict (float32)."""
  depth = sum(1 for name in params["decoder"] if name.startswith("hidden_"))
  state = collections.OrderedDict()
  for key, (part, layer), leaf in _entries(depth):
    value = np.asarray(params[part][layer][leaf], np.float32)
    state[key] = np.ascontiguousarray(value.T if leaf == "kernel" else value)
  return state


def load_official_vae(path: str | os.PathLike, in_dim: int) -> dict:
  """CoefficientVAE params (official dimensions) from a `vae.pth` state_dict."""
  return vae_from_torch(torch_zip.load(path), CoefficientVAE(in_dim), str(path))


def load_official_prior(identity_path: str | os.PathLike,
                        expression_path: str | os.PathLike) -> VAEPrior:
  """VAEPrior from `pretrained_vaes/identity/vae.pth` and `pretrained_vaes/expression/vae.pth`."""
  return VAEPrior.from_vaes(load_official_vae(identity_path, ID_DIM),
                           load_official_vae(expression_path, EXP_DIM))


def save_official_vaes(id_params: Mapping[str, Any], exp_params: Mapping[str, Any],
                       directory: str | os.PathLike) -> tuple[pathlib.Path, pathlib.Path]:
  """Write <directory>/identity/vae.pth and <directory>/expression/vae.pth (official layout)."""
  paths = []
  for name, params in (("identity", id_params), ("expression", exp_params)):
    path = pathlib.Path(directory) / name / "vae.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch_save.save(vae_to_torch(params), path)
    paths.append(path)
  return paths[0], paths[1]
