"""Building blocks shared by the template and deformation fields: PyTorch-equivalent linear layers
with the official initialisations (SPEC §2.1-§2.3, §3.3), FiLM-SIREN layers and mapping networks.

Kernels are stored Flax-style as (in, out) = Wᵀ of the PyTorch (out, in) weight.
"""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from anifacegan_jax.types import Array

Initializer = Callable[..., Array]
FILM_FREQ_SCALE = 15.0  # ω = 15·f + 30 turns a mapping output f into a SIREN frequency
FILM_FREQ_SHIFT = 30.0
SINES = ("auto", "xla", "polynomial")
# The generator MLPs' matmuls (`matmul`): the backend's default, float32 throughout, TF32 where the
# hardware has it, or bfloat16 operands with float32 accumulation; parameters stay float32.
PRECISIONS = ("default", "float32", "tf32", "bfloat16")

# sin(x) = (−1)^k sin(r), r = x − kπ ∈ [−π/2, π/2]: π split in two (Cody-Waite) so that k·π_hi is
# exact for |k| < 2^15, and Taylor polynomials of degree 13 (sin) and 14 (cos) on r, whose
# truncation error at |r| = π/2 is < 1e-9.
_PI_HI = 3.140625
_PI_LO = math.pi - _PI_HI
_SIN_COEFFS = tuple((-1) ** k / math.factorial(2 * k + 1) for k in range(7))  # r, r³, …, r¹³
_COS_COEFFS = tuple((-1) ** k / math.factorial(2 * k) for k in range(8))  # 1, r², …, r¹⁴


def _reduce(x: Array) -> tuple[Array, Array]:
  k = jnp.round(x * (1.0 / math.pi))
  r = (x - k * _PI_HI) - k * _PI_LO
  return r, 1.0 - 2.0 * (k - 2.0 * jnp.floor(0.5 * k))  # (−1)^k


def _even_polynomial(coeffs: tuple[float, ...], r2: Array) -> Array:
  p = coeffs[-1]
  for c in coeffs[-2::-1]:
    p = p * r2 + c
  return p


@jax.custom_jvp
def polynomial_sin(x: Array) -> Array:
  """sin(x) from elementwise arithmetic that XLA fuses and vectorises (within 2e-7 of sin for
  |x| ≤ 3000; the SIREN arguments stay within a few hundred). XLA's CPU `sin` runs as slowly as
  the 256-wide matmul in front of it (BENCHMARKS.md, "Speed"); this one is ≈ 4× faster there."""
  r, sign = _reduce(x)
  return sign * r * _even_polynomial(_SIN_COEFFS, r * r)


@polynomial_sin.defjvp
def _polynomial_sin_jvp(primals, tangents):
  r, sign = _reduce(primals[0])
  r2 = r * r
  value = sign * r * _even_polynomial(_SIN_COEFFS, r2)
  return value, sign * _even_polynomial(_COS_COEFFS, r2) * tangents[0]


def sine_function(kind: str) -> Callable[[Array], Array]:
  """The sine of the FiLM-SIREN layers: 'xla' (jnp.sin), 'polynomial' (`polynomial_sin`), or
  'auto': the polynomial on the CPU, where it is faster, jnp.sin on other backends."""
  if kind not in SINES:
    raise ValueError(f"model.sine must be one of {SINES}, got {kind!r}")
  if kind == "auto":
    kind = "polynomial" if jax.default_backend() == "cpu" else "xla"
  return polynomial_sin if kind == "polynomial" else jnp.sin


def check_precision(precision: str) -> str:
  """`precision` if it is one of `PRECISIONS`, else a ValueError naming model.precision."""
  if precision not in PRECISIONS:
    raise ValueError(f"model.precision must be one of {PRECISIONS}, got {precision!r}")
  return precision


def matmul(x: Array, kernel: Array, precision: str = "default") -> Array:
  """x @ kernel at a `PRECISIONS` setting: 'default' (XLA's default for float32: full precision
  on the CPU, TF32 on recent NVIDIA GPUs), 'float32' (`Precision.HIGHEST` everywhere), 'tf32'
  (`Precision.HIGH`: TF32 or three bfloat16 passes where the hardware has them, else float32),
  'bfloat16' (both operands rounded to bfloat16, products accumulated in float32)."""
  check_precision(precision)
  if precision == "bfloat16":
    return jnp.dot(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16),
                   preferred_element_type=jnp.float32).astype(x.dtype)
  lax_precision = dict(default=None, float32=jax.lax.Precision.HIGHEST,
                       tf32=jax.lax.Precision.HIGH)[precision]
  return jnp.dot(x, kernel, precision=lax_precision)


def _unfused(x: Array) -> Array:
  """`x` as computed on its own: a compiled initialisation then draws the same bits as one run
  op by op (fused, the scale would be folded into the sampler's constants, 1 ulp apart)."""
  return jax.lax.optimization_barrier(x)


def uniform(bound: float) -> Initializer:
  """U(-bound, bound)."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def film_kernel_init(first: bool) -> Initializer:
  """U(±1/fan_in) for the first FiLM layer, else U(±√(6/fan_in)/25) (SPEC §2.2)."""
  def init(key, shape, dtype=jnp.float32):
    fan_in = shape[0]
    bound = 1.0 / fan_in if first else math.sqrt(6.0 / fan_in) / 25.0
    return uniform(bound)(key, shape, dtype)
  return init


def kaiming_leaky_init(negative_slope: float = 0.2, scale: float = 1.0) -> Initializer:
  """N(0, (gain/√fan_in)²)·scale with gain = √(2/(1+a²)) (PyTorch kaiming_normal_, fan_in, leaky_relu)."""
  def init(key, shape, dtype=jnp.float32):
    std = math.sqrt(2.0 / (1.0 + negative_slope**2)) / math.sqrt(shape[0])
    return scale * std * _unfused(jax.random.normal(key, shape, dtype))
  return init


def geometric_hidden_init(key, shape, dtype=jnp.float32):
  """N(0, 2/fan_out): GRAM's geometric init of the manifold predictor's hidden layers."""
  return math.sqrt(2.0 / shape[1]) * _unfused(jax.random.normal(key, shape, dtype))


class Linear(nn.Module):
  """A PyTorch-equivalent linear layer y = x W + b.

  Attributes:
    features: output width.
    kernel_init: initialiser of the (in, out) kernel.
    bias_init: 'torch' for PyTorch's default U(±1/√fan_in), 'zeros', or a callable.
    precision: the matmul's `PRECISIONS` setting (`matmul`).
  """

  features: int
  kernel_init: Initializer = film_kernel_init(first=False)
  bias_init: str | Initializer = "torch"
  precision: str = "default"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    fan_in = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (fan_in, self.features))
    if self.bias_init == "torch":
      bias_init = uniform(1.0 / math.sqrt(fan_in))
    elif self.bias_init == "zeros":
      bias_init = nn.initializers.zeros
    else:
      bias_init = self.bias_init
    bias = self.param("bias", bias_init, (self.features,))
    return matmul(x, kernel, self.precision) + bias


class FiLMLayer(nn.Module):
  """FiLM-SIREN layer h ← sin(ω ⊙ (W h + b) + φ), ω = 15·freq + 30 (SPEC §2.2).

  Attributes:
    features: output width.
    first: use the first-layer init U(±1/fan_in).
    sine: 'auto', 'xla' or 'polynomial' (`sine_function`).
    precision: the matmul's `PRECISIONS` setting.
  """

  features: int
  first: bool = False
  sine: str = "auto"
  precision: str = "default"

  @nn.compact
  def __call__(self, x: Array, freq: Array, phase: Array) -> Array:
    """x (..., in); freq, phase broadcastable to (..., features) → (..., features)."""
    h = Linear(self.features, kernel_init=film_kernel_init(self.first),
               precision=self.precision, name="linear")(x)
    return sine_function(self.sine)((FILM_FREQ_SCALE * freq + FILM_FREQ_SHIFT) * h + phase)


class MappingNetwork(nn.Module):
  """z → (frequencies, phase shifts): 3 hidden LeakyReLU(0.2) layers and a linear output (SPEC §2.1).

  Attributes:
    hidden: hidden width (256 radiance, 128 deformation).
    num_film: number of FiLM layers fed; the output has 2·num_film·film_width values.
    film_width: width of each FiLM layer.
    precision: the matmuls' `PRECISIONS` setting.
  """

  hidden: int
  num_film: int
  film_width: int
  precision: str = "default"

  @nn.compact
  def __call__(self, z: Array) -> tuple[Array, Array]:
    """z (..., z_dim) → freq, phase each (..., num_film, film_width), raw (pre 15f+30)."""
    h = z
    for i in range(3):
      h = Linear(self.hidden, kernel_init=kaiming_leaky_init(), precision=self.precision,
                 name=f"dense_{i}")(h)
      h = nn.leaky_relu(h, 0.2)
    out = Linear(2 * self.num_film * self.film_width,
                 kernel_init=kaiming_leaky_init(scale=0.25), precision=self.precision,
                 name="dense_3")(h)
    freq, phase = jnp.split(out, 2, axis=-1)
    shape = z.shape[:-1] + (self.num_film, self.film_width)
    return freq.reshape(shape), phase.reshape(shape)
