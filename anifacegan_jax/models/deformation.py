"""Deformation field F(x, z_id, z_exp) → Δx, an inverse warp from target space to the template
(SPEC §3.3; paper §3.2).

The layout follows the released `dif.pth` so that it loads exactly: a 144 → 128³ → 768 mapping
network on cat(z_id, z_exp), and three FiLM-SIREN layers on cat(8.3333·x, 0, 0, 0, 0) (four zero
channels kept from an abandoned input) with a 7-wide linear output of which Δ is the first three.
Δ is in world units when added to world points (the generator's 'single' warp); see
`generator.py` for the released double-warp convention.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from anifacegan_jax.models.layers import FiLMLayer, Linear, MappingNetwork
from anifacegan_jax.models.template import BOX_WARP
from anifacegan_jax.types import Array


class DeformationField(nn.Module):
  """F: target-space points + (z_id, z_exp) → Δ.

  Attributes:
    hidden: width of the FiLM trunk and of the mapping network (128).
    num_layers: FiLM layers (3).
    zero_channels: zero input channels appended to the 3 warped coordinates (4 in `dif.pth`).
    output_dim: width of the last linear layer; Δ is its first 3 outputs (7 in `dif.pth`).
    final_bias_init: 'torch' (released: U(±1/√128), a small constant initial Δ) or 'zeros'
      (Δ ≡ 0 at init, the default for training from scratch; SPEC §8.16).
    exp_scale: z_exp is multiplied by this before the mapping network (1: released). Expression
      coefficients an order smaller than the identity's (SynthFaces' blendshape weights, std
      ≈ 0.2 against 0.8) otherwise reach F's conditioning as a small part of its input.
    sine: the FiLM layers' sine ('auto', 'xla', 'polynomial'; `layers.sine_function`).
    precision: the matmuls' `layers.PRECISIONS` setting.
  """

  hidden: int = 128
  num_layers: int = 3
  zero_channels: int = 4
  output_dim: int = 7
  final_bias_init: str = "zeros"
  exp_scale: float = 1.0
  sine: str = "auto"
  precision: str = "default"

  def setup(self):
    self.mapping = MappingNetwork(hidden=self.hidden, num_film=self.num_layers,
                                  film_width=self.hidden, precision=self.precision)
    self.film = [FiLMLayer(self.hidden, first=i == 0, sine=self.sine, precision=self.precision)
                 for i in range(self.num_layers)]
    self.output = Linear(self.output_dim, kernel_init=nn.initializers.zeros,
                         bias_init=self.final_bias_init, precision=self.precision)

  def code(self, z_id: Array, z_exp: Array) -> tuple[Array, Array]:
    """(..., 80), (..., 64) → raw FiLM freq, phase each (..., num_layers, hidden)."""
    return self.mapping(jnp.concatenate([z_id, self.exp_scale * z_exp], axis=-1))

  def __call__(self, x: Array, freq: Array, phase: Array) -> Array:
    """Δ (..., 3) at target points x (..., 3) world units, for the codes of one image."""
    h = x * BOX_WARP
    if self.zero_channels:
      h = jnp.concatenate([h, jnp.zeros(h.shape[:-1] + (self.zero_channels,), h.dtype)], -1)
    for i, layer in enumerate(self.film):
      h = layer(h, freq[i], phase[i])
    return self.output(h)[..., :3]
