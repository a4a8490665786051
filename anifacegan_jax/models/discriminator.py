"""GRAM's residual CoordConv discriminator with pose head (SPEC §4.1), optional pi-GAN fade-in (§4.2).

Images are NHWC in [-1, 1]. For a 2^L image: fromRGB 1×1 conv to c(13 − L) channels, then residual
CoordConv blocks i = 13 − L … 11 (c(i) → c(i+1), each halving the resolution, c(i) = min(400, 2^i)),
then a 2×2 valid conv to 3 outputs: the real/fake logit and the pose (pitch φ, yaw θ).
All convolutions keep PyTorch's default init, U(±1/√fan_in) for weights and biases.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from anifacegan_jax.models.layers import uniform
from anifacegan_jax.types import Array

MAX_CHANNELS = 400


def channels(i: int, max_channels: int = MAX_CHANNELS) -> int:
  """c(i) = min(max_channels, 2^i) (GRAM: 400)."""
  return min(max_channels, 2**i)


def _avg_pool2(x: Array) -> Array:
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


class TorchConv(nn.Module):
  """Conv2d with PyTorch's default init; kernel (kh, kw, in, out).

  Attributes:
    features: output channels.
    kernel_size: square kernel size.
    padding: 'SAME'-style zero padding on each side.
  """

  features: int
  kernel_size: int = 3
  padding: int = 1

  @nn.compact
  def __call__(self, x: Array) -> Array:
    bound = 1.0 / math.sqrt(x.shape[-1] * self.kernel_size**2)
    return nn.Conv(self.features, (self.kernel_size, self.kernel_size),
                   padding=[(self.padding, self.padding)] * 2, kernel_init=uniform(bound),
                   bias_init=uniform(bound), name="conv")(x)


class CoordConv(nn.Module):
  """3×3 conv over cat(features, row coordinate, column coordinate), coordinates in [-1, 1].

  Attributes:
    features: output channels.
  """

  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    batch, height, width, _ = x.shape
    rows = jnp.broadcast_to(jnp.linspace(-1.0, 1.0, height, dtype=x.dtype)[:, None],
                            (height, width))
    cols = jnp.broadcast_to(jnp.linspace(-1.0, 1.0, width, dtype=x.dtype)[None, :],
                            (height, width))
    coords = jnp.broadcast_to(jnp.stack([rows, cols], -1), (batch, height, width, 2))
    return TorchConv(self.features, 3, 1, name="conv")(jnp.concatenate([x, coords], -1))


class ResidualCoordConvBlock(nn.Module):
  """(main + skip)/√2 with main = CoordConv–LReLU–CoordConv–LReLU–AvgPool2, skip = AvgPool2 [–1×1].

  Attributes:
    features: output channels.
  """

  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    h = nn.leaky_relu(CoordConv(self.features, name="conv_0")(x), 0.2)
    h = nn.leaky_relu(CoordConv(self.features, name="conv_1")(h), 0.2)
    h = _avg_pool2(h)
    skip = _avg_pool2(x)
    if x.shape[-1] != self.features:
      skip = TorchConv(self.features, 1, 0, name="proj")(skip)
    return (h + skip) / math.sqrt(2.0)


class Discriminator(nn.Module):
  """GRAM discriminator sized by resolution.

  Attributes:
    resolution: input image size, a power of two from 8 to 2048.
    fade_in: add pi-GAN's fade path: after the first block the features are blended with the
      half-resolution input through a second fromRGB adapter, weight 1 − α.
    max_channels: channel cap (GRAM: 400; smaller for CPU-sized configs).
  """

  resolution: int
  fade_in: bool = False
  max_channels: int = MAX_CHANNELS

  @nn.compact
  def __call__(self, images: Array, alpha: Array | float = 1.0) -> tuple[Array, Array]:
    """images (B, R, R, 3) in [-1, 1] → logit (B,), pose (B, 2) = (pitch, yaw)."""
    level = int(round(math.log2(self.resolution)))
    if 2**level != self.resolution or not 3 <= level <= 11:
      raise ValueError(f"Discriminator resolution must be a power of two in [8, 2048], got "
                       f"{self.resolution}")
    if images.shape[1:] != (self.resolution, self.resolution, 3):
      raise ValueError(f"Discriminator({self.resolution}) expects images (B, {self.resolution}, "
                       f"{self.resolution}, 3), got {images.shape}")
    first = 13 - level
    width = lambda i: channels(i, self.max_channels)
    x = nn.leaky_relu(TorchConv(width(first), 1, 0, name="from_rgb")(images), 0.2)
    for j, i in enumerate(range(first, 12)):
      x = ResidualCoordConvBlock(width(i + 1), name=f"block_{j}")(x)
      if j == 0 and self.fade_in:
        skip = TorchConv(width(first + 1), 1, 0, name="from_rgb_fade")(_avg_pool2(images))
        x = alpha * x + (1.0 - alpha) * nn.leaky_relu(skip, 0.2)
    out = TorchConv(3, 2, 0, name="final")(x)  # (B, 1, 1, 3)
    out = out.reshape(out.shape[0], 3)
    return out[:, 0], out[:, 1:]
