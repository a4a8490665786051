"""The FID Inception-v3 (TF `inception-2015-12-05` graph, as ported by pytorch-fid) in Flax.

Every FID in the literature since TTUR uses this network's 2048-d pool3 features (global
average pool of the last map). It differs from torchvision's Inception-v3 in its weights and in
its pools: the A/C/E1 blocks average-pool without counting the padding, the last E block
max-pools. Weights: `fid_weights.load_fid_inception`.

Inputs are resized to 299² and scaled to about [-1, 1] in one of three ways (`preprocess`):
  * 'torch_fidelity' (the AniFaceGAN / GRAM protocol, SPEC §5.4): images as 0..255 values,
    TensorFlow-1 bilinear resize (`tf.image.resize_bilinear`, align_corners=False: source
    coordinate = destination · in/out), then (x − 128) / 128;
  * 'pytorch_fid': images in [0, 1], PyTorch `F.interpolate(mode='bilinear',
    align_corners=False)` without antialias (half-pixel centres), then 2x − 1;
  * 'none': no resize (at least 75² inputs), 2x − 1 (the conformance reference's setting).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from anifacegan_jax.types import Array, PyTree

PREPROCESSING = ("torch_fidelity", "pytorch_fid", "none")
INPUT_SIZE = 299  # the resolution the network was trained at
MIN_SIZE = 75  # smallest input the strided convolutions and pools accept
FEATURE_DIM = 2048
BN_EPSILON = 1e-3
_PRECISION = jax.lax.Precision.HIGHEST  # FID compares to float32 references: no TF32/bf16 passes


# --- resize ---------------------------------------------------------------------------------------

def _bilinear_matrix(in_size: int, out_size: int, half_pixel: bool = True) -> np.ndarray:
  """(out, in) float32 weights of a 1-D bilinear resize without antialias: PyTorch's
  align_corners=False (half-pixel centres) or TensorFlow 1's legacy resize_bilinear."""
  scale = in_size / out_size
  if half_pixel:
    src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
  else:
    src = np.arange(out_size) * scale
  low = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  high = np.minimum(low + 1, in_size - 1)
  frac = src - low
  matrix = np.zeros((out_size, in_size), np.float64)
  np.add.at(matrix, (np.arange(out_size), low), 1.0 - frac)
  np.add.at(matrix, (np.arange(out_size), high), frac)
  return matrix.astype(np.float32)


def resize_bilinear(images: Array, size: int, half_pixel: bool = True) -> Array:
  """(B, H, W, C) -> (B, size, size, C) bilinearly, without antialias (downsampling skips pixels).

  half_pixel=True is PyTorch's `F.interpolate(mode='bilinear', align_corners=False)`; False is
  TensorFlow 1's `resize_bilinear(align_corners=False)` (torch-fidelity's resize).
  """
  rows = jnp.asarray(_bilinear_matrix(images.shape[1], size, half_pixel))
  cols = jnp.asarray(_bilinear_matrix(images.shape[2], size, half_pixel))
  x = jnp.einsum("pw,bhwc->bhpc", cols, images, precision=_PRECISION)
  return jnp.einsum("oh,bhpc->bopc", rows, x, precision=_PRECISION)


# --- network --------------------------------------------------------------------------------------

class BasicConv2d(nn.Module):
  """Convolution without bias, inference batch norm (eps 1e-3), ReLU.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw).
    strides: the same stride along both axes.
    padding: (ph, pw) zeros on both sides of each axis.
  """
  features: int
  kernel_size: tuple[int, int] = (1, 1)
  strides: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x: Array) -> Array:
    pad = tuple((p, p) for p in self.padding)
    x = nn.Conv(self.features, self.kernel_size, self.strides, pad, use_bias=False,
                precision=_PRECISION, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x: Array) -> Array:
  """3×3, stride 1, padding 1, padding not counted (the TF graph's AvgPool SAME)."""
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x: Array) -> Array:
  return nn.max_pool(x, (3, 3), (2, 2))


class InceptionA(nn.Module):
  """Mixed_5b/c/d (35² at 299²): 64 + 64 + 96 + pool_features channels.

  Attributes:
    pool_features: channels of the pool branch.
  """
  pool_features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b1 = BasicConv2d(64, name="branch1x1")(x)
    b5 = BasicConv2d(48, name="branch5x5_1")(x)
    b5 = BasicConv2d(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = BasicConv2d(64, name="branch3x3dbl_1")(x)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = BasicConv2d(self.pool_features, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a, the 35² -> 17² reduction: 384 + 96 + input channels."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b3 = BasicConv2d(384, (3, 3), strides=2, name="branch3x3")(x)
    bd = BasicConv2d(64, name="branch3x3dbl_1")(x)
    bd = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = BasicConv2d(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b..e (17²), factorised 7×7 convolutions: 4 × 192 channels.

  Attributes:
    channels_7x7: width of the 1×7 / 7×1 towers.
  """
  channels_7x7: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c7 = self.channels_7x7
    row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
    b1 = BasicConv2d(192, name="branch1x1")(x)
    b7 = BasicConv2d(c7, name="branch7x7_1")(x)
    b7 = BasicConv2d(c7, **row, name="branch7x7_2")(b7)
    b7 = BasicConv2d(192, **col, name="branch7x7_3")(b7)
    bd = BasicConv2d(c7, name="branch7x7dbl_1")(x)
    bd = BasicConv2d(c7, **col, name="branch7x7dbl_2")(bd)
    bd = BasicConv2d(c7, **row, name="branch7x7dbl_3")(bd)
    bd = BasicConv2d(c7, **col, name="branch7x7dbl_4")(bd)
    bd = BasicConv2d(192, **row, name="branch7x7dbl_5")(bd)
    bp = BasicConv2d(192, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a, the 17² -> 8² reduction: 320 + 192 + input channels."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b3 = BasicConv2d(192, name="branch3x3_1")(x)
    b3 = BasicConv2d(320, (3, 3), strides=2, name="branch3x3_2")(b3)
    b7 = BasicConv2d(192, name="branch7x7x3_1")(x)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv2d(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b/c (8²): 320 + 2·384 + 2·384 + 192 = 2048 channels.

  Attributes:
    max_pool: the pool branch max-pools (Mixed_7c, a quirk of the TF graph) instead of
      average-pooling without the padding (Mixed_7b).
  """
  max_pool: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    row, col = dict(kernel_size=(1, 3), padding=(0, 1)), dict(kernel_size=(3, 1), padding=(1, 0))
    b1 = BasicConv2d(320, name="branch1x1")(x)
    b3 = BasicConv2d(384, name="branch3x3_1")(x)
    b3 = [BasicConv2d(384, **row, name="branch3x3_2a")(b3),
          BasicConv2d(384, **col, name="branch3x3_2b")(b3)]
    bd = BasicConv2d(448, name="branch3x3dbl_1")(x)
    bd = BasicConv2d(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = [BasicConv2d(384, **row, name="branch3x3dbl_3a")(bd),
          BasicConv2d(384, **col, name="branch3x3dbl_3b")(bd)]
    pooled = (nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1))) if self.max_pool
              else _avg_pool_3x3(x))
    bp = BasicConv2d(192, name="branch_pool")(pooled)
    return jnp.concatenate([b1, *b3, *bd, bp], axis=-1)


class FIDInception(nn.Module):
  """Images -> (B, 2048) pool3 features of the FID Inception-v3.

  Attributes:
    preprocess: 'torch_fidelity' (default: the paper's protocol), 'pytorch_fid' or 'none' (see
      the module docstring); with 'none' inputs must be at least 75².
  """
  preprocess: str = "torch_fidelity"

  @nn.compact
  def __call__(self, images: Array) -> Array:
    """(B, H, W, 3) float in [0, 1] -> (B, 2048) float32."""
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"FIDInception: images of shape {images.shape}; expected (B, H, W, 3)")
    if self.preprocess not in PREPROCESSING:
      raise ValueError(f"FIDInception: preprocess={self.preprocess!r}; expected one of "
                       f"{PREPROCESSING}")
    x = images.astype(jnp.float32)
    if self.preprocess == "torch_fidelity":
      x = (resize_bilinear(255.0 * x, INPUT_SIZE, half_pixel=False) - 128.0) / 128.0
    elif self.preprocess == "pytorch_fid":
      x = 2.0 * resize_bilinear(x, INPUT_SIZE) - 1.0
    elif min(x.shape[1:3]) < MIN_SIZE:
      raise ValueError(f"FIDInception: {x.shape[1]}×{x.shape[2]} images; expected at least "
                       f"{MIN_SIZE}×{MIN_SIZE} without resize (preprocess='none')")
    else:
      x = 2.0 * x - 1.0
    x = BasicConv2d(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
    x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = BasicConv2d(80, name="Conv2d_3b_1x1")(_max_pool_3x3_s2(x))
    x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3_s2(x)
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = InceptionA(pool_features, name=name)(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c7, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(name="Mixed_7b")(x)
    x = InceptionE(max_pool=True, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))


@functools.lru_cache(maxsize=None)
def _jitted_apply(preprocess: str):
  return jax.jit(FIDInception(preprocess=preprocess).apply)


def features(variables: PyTree, images: np.ndarray, *, batch_size: int = 50,
             preprocess: str = "torch_fidelity") -> np.ndarray:
  """(N, H, W, 3) images (float in [0, 1], or uint8 in [0, 255]) -> (N, 2048) float64 features.

  Runs jitted batches of min(batch_size, N) images (the last one padded, so one compilation
  per image size).
  """
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"features: images of shape {images.shape}; expected (N, H, W, 3)")
  scale = 1.0 / 255.0 if images.dtype == np.uint8 else 1.0
  apply, size = _jitted_apply(preprocess), max(1, min(batch_size, len(images)))
  out = []
  for start in range(0, len(images), size):
    chunk = images[start:start + size].astype(np.float32) * np.float32(scale)
    padded = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), np.float32)])
    out.append(np.asarray(apply(variables, padded))[:len(chunk)])
  return np.concatenate(out).astype(np.float64) if out else np.zeros((0, FEATURE_DIM))
