"""The template (neutral, canonical) field of GRAM: manifold predictor and FiLM-SIREN radiance net.

Points are canonical-space positions in world units; both networks apply GRAM's box warp
(× 2/0.24 = 8.3333) internally (SPEC §1.2).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from anifacegan_jax.models.layers import FiLMLayer, Linear, geometric_hidden_init
from anifacegan_jax.rendering.compositing import widened_sigmoid
from anifacegan_jax.types import Array

BOX_WARP = 2.0 / 0.24  # world → warped units: the ±0.12 sample box maps to ±1


class ManifoldPredictor(nn.Module):
  """Scalar field s(x) whose level sets are the radiance manifolds; no latent input (SPEC §2.3).

  s = MLP(8.3333·x − center), 3 ReLU layers, GRAM's geometric init so that s grows with the
  distance from `center` (behind the face) and decreases along rays away from the camera.

  Attributes:
    hidden: width of the hidden layers (GRAM FFHQ: 128).
    num_layers: number of hidden ReLU layers.
    center: (3,) sphere centre of the initial level sets, warped units.
    precision: the matmuls' `layers.PRECISIONS` setting.
  """

  hidden: int = 128
  num_layers: int = 3
  center: tuple[float, float, float] = (0.0, 0.0, -1.5)
  precision: str = "default"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """x (..., 3) world units → s (...,)."""
    h = x * BOX_WARP - jnp.asarray(self.center, x.dtype)
    for i in range(self.num_layers):
      h = Linear(self.hidden, kernel_init=geometric_hidden_init, bias_init="zeros",
                 precision=self.precision, name=f"dense_{i}")(h)
      h = nn.relu(h)
    out_init = nn.initializers.constant(10.0 * math.sqrt(math.pi / self.hidden))
    return Linear(1, kernel_init=out_init, bias_init="zeros", precision=self.precision,
                  name="output")(h)[..., 0]


class RadianceNet(nn.Module):
  """FiLM-SIREN radiance field with multi-head outputs (SPEC §2.2).

  The trunk has `num_layers` FiLM layers; after each trunk layer but the first, a density head and a
  colour head add to σ_raw and the colour logits. The last colour head reads a view-dependent FiLM
  layer on cat(direction, h). Needs 9 FiLM codes: one per trunk layer and one for the colour layer.

  Attributes:
    hidden: trunk width (256).
    num_layers: trunk depth (8).
    sine: the FiLM layers' sine ('auto', 'xla', 'polynomial'; `layers.sine_function`).
    precision: the matmuls' `layers.PRECISIONS` setting.
  """

  hidden: int = 256
  num_layers: int = 8
  sine: str = "auto"
  precision: str = "default"

  @nn.compact
  def __call__(self, x: Array, directions: Array, freq: Array,
               phase: Array) -> tuple[Array, Array]:
    """Radiance at canonical points.

    Args:
      x: (..., 3) canonical points, world units.
      directions: (..., 3) unit view directions, world.
      freq, phase: (num_layers + 1, hidden) raw FiLM codes of one image.

    Returns:
      rgb: (..., 3) in [-1e-3, 1 + 1e-3] (widened sigmoid).
      sigma_raw: (...,) raw density (softplus is applied when compositing).
    """
    h = x * BOX_WARP
    sigma = jnp.zeros(x.shape[:-1] + (1,), x.dtype)
    logits = jnp.zeros(x.shape[:-1] + (3,), x.dtype)
    for i in range(self.num_layers):
      h = FiLMLayer(self.hidden, first=i == 0, sine=self.sine, precision=self.precision,
                    name=f"film_{i}")(h, freq[i], phase[i])
      if i == 0:
        continue
      feature = h
      if i == self.num_layers - 1:
        view_in = jnp.concatenate([jnp.broadcast_to(directions, h.shape[:-1] + (3,)), h], -1)
        feature = FiLMLayer(self.hidden, sine=self.sine, precision=self.precision,
                            name="color_film")(view_in, freq[-1], phase[-1])
      sigma = sigma + Linear(1, precision=self.precision, name=f"sigma_head_{i - 1}")(h)
      logits = logits + Linear(3, precision=self.precision, name=f"color_head_{i - 1}")(feature)
    return widened_sigmoid(logits), sigma[..., 0]
