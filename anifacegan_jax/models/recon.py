"""The face-reconstruction network: images → 257 3DMM coefficients, Deep3DFaceRecon's regressor.

Architecture (Deep3DFaceRecon `models/networks.py`, `ReconNetWrapper` with `use_last_fc=False`):
a torchvision-style ResNet without its fc (stem conv 7×7/2 + BN + ReLU + max pool 3×3/2, four
stages of residual blocks, global average pool), then seven 1×1 convolutions on the pooled
features, concatenated in the 257 layout: id 80 | exp 64 | tex 80 | angle 3 | gamma 27 |
trans_xy 2 | trans_z 1. Heads start at zero (as the official init), so an untrained network
predicts the mean face, frontal, with no translation.

Input: RGB in [0, 1], (B, H, W, 3), no mean/std normalisation (Deep3DFaceRecon feeds its 224²
aligned crops divided by 255). `ReconNet()` is the official ResNet-50 at 224²; `small_recon_net()`
is a narrow ResNet-18 for 64² SynthFaces. Images of another size are resized to `input_size`.

Official checkpoints: `load_deep3d_recon("epoch_20.pth")` reads the `net_recon` state_dict
(`backbone.conv1.weight`, `backbone.layer1.0.downsample.1.running_var`, `final_layers.6.bias`, ...)
without torch; `save_deep3d_recon` writes Flax variables back in that layout. Convolutions are
(out, in, kh, kw) in torch and (kh, kw, in, out) in Flax; BatchNorm weight ↔ scale, running_mean/
running_var ↔ the `batch_stats` mean/var; `num_batches_tracked` is written as 0 and ignored on load.
"""

from __future__ import annotations

import collections
import os
import re
from typing import Any, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from anifacegan_jax import torch_save, torch_zip
from anifacegan_jax.torch_zip import CheckpointLayoutError
from anifacegan_jax.types import Array, PRNGKey, PyTree

# Output heads in `final_layers` order; their concatenation is the 257 coefficient layout.
HEADS = (("id", 80), ("exp", 64), ("tex", 80), ("angle", 3), ("gamma", 27), ("trans_xy", 2),
         ("trans_z", 1))
NUM_COEFFICIENTS = sum(size for _, size in HEADS)
BLOCKS = ("basic", "bottleneck")

# torchvision's kaiming_normal_(mode='fan_out', nonlinearity='relu'), untruncated.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(features: int, kernel: int, stride: int = 1, name: str | None = None) -> nn.Conv:
  """torch Conv2d(kernel, stride, padding=kernel // 2, bias=False) in NHWC."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding=((pad, pad), (pad, pad)),
                 use_bias=False, kernel_init=_conv_init, name=name)


def _norm(train: bool, name: str) -> nn.BatchNorm:
  # torch BatchNorm2d: eps 1e-5, running = 0.9·running + 0.1·batch.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class ResidualBlock(nn.Module):
  """torchvision BasicBlock (two 3×3) or Bottleneck (1×1, 3×3 with the stride, 1×1 ×4; ResNet v1.5).

  Attributes:
    planes: channels of the block's inner convolutions; it outputs planes × expansion.
    kind: 'basic' (expansion 1) or 'bottleneck' (expansion 4).
    stride: spatial stride of the block (1 or 2).
    downsample: project the shortcut with a strided 1×1 conv + BN (first block of a stage).
  """

  planes: int
  kind: str = "bottleneck"
  stride: int = 1
  downsample: bool = False

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    if self.kind == "basic":
      convs = ((self.planes, 3, self.stride), (self.planes, 3, 1))
    else:
      convs = ((self.planes, 1, 1), (self.planes, 3, self.stride), (4 * self.planes, 1, 1))
    y = x
    for i, (features, kernel, stride) in enumerate(convs, start=1):
      y = _conv(features, kernel, stride, name=f"conv{i}")(y)
      y = _norm(train, f"bn{i}")(y)
      if i < len(convs):
        y = nn.relu(y)
    shortcut = x
    if self.downsample:
      shortcut = _conv(convs[-1][0], 1, self.stride, name="downsample_conv")(x)
      shortcut = _norm(train, "downsample_bn")(shortcut)
    return nn.relu(y + shortcut)


class ResNet(nn.Module):
  """torchvision ResNet up to the global average pool (no fc), NHWC.

  Attributes:
    kind: 'bottleneck' (ResNet-50 with stage_sizes (3, 4, 6, 3)) or 'basic' (ResNet-18 with
      (2, 2, 2, 2)).
    stage_sizes: residual blocks per stage; stage i has width · 2^i planes, stride 2 from stage 2.
    width: channels of the stem and of stage 1's planes (torchvision: 64).
    stem_pool: the stem's 3×3/2 max pool (torchvision: True). False keeps stage 1 at half the
      input size instead of a quarter: 4× the compute, finer detail for small inputs. Same
      parameters either way.
  """

  kind: str = "bottleneck"
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  stem_pool: bool = True

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    """(B, H, W, 3) → (B, C) pooled features, C = width · 2^(stages−1) · expansion."""
    if self.kind not in BLOCKS:
      raise ValueError(f"ResNet kind must be one of {BLOCKS}, got {self.kind!r}")
    expansion = 4 if self.kind == "bottleneck" else 1
    x = nn.relu(_norm(train, "bn1")(_conv(self.width, 7, 2, name="conv1")(x)))
    if self.stem_pool:
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))  # pads with -inf, as torch
    channels = self.width
    for i, size in enumerate(self.stage_sizes):
      planes = self.width * 2**i
      for j in range(size):
        stride = 2 if i > 0 and j == 0 else 1
        downsample = j == 0 and (stride != 1 or channels != planes * expansion)
        x = ResidualBlock(planes, self.kind, stride, downsample, name=f"layer{i + 1}_{j}")(x, train)
        channels = planes * expansion
    return jnp.mean(x, axis=(1, 2))


class ReconNet(nn.Module):
  """Deep3DFaceRecon's `ReconNetWrapper`: a ResNet backbone + seven zero-initialised 1×1 heads.

  Attributes:
    kind, stage_sizes, width, stem_pool: the backbone (see `ResNet`); defaults = ResNet-50
      ('resnet50').
    input_size: image side the network is trained for (224: Deep3DFaceRecon's aligned crops);
      inputs of another size are bilinearly resized (antialiased) first.
  """

  kind: str = "bottleneck"
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  input_size: int = 224
  stem_pool: bool = True

  @nn.compact
  def __call__(self, images: Array, train: bool = False) -> Array:
    """(B, H, W, 3) RGB in [0, 1] → (B, 257) coefficients (id|exp|tex|angle|gamma|trans).

    `train=True` normalises with batch statistics and updates `batch_stats` (apply with
    `mutable=['batch_stats']`); `train=False` uses the running averages.
    """
    size = self.input_size
    if images.shape[1:3] != (size, size):
      images = jax.image.resize(images, images.shape[:1] + (size, size, 3), "linear")
    backbone = ResNet(self.kind, tuple(self.stage_sizes), self.width, self.stem_pool,
                      name="backbone")
    features = backbone(images, train)
    features = features[:, None, None, :]
    outputs = [nn.Conv(n, (1, 1), kernel_init=nn.initializers.zeros, name=f"final_layers_{k}")(
        features) for k, (_, n) in enumerate(HEADS)]
    return jnp.concatenate(outputs, axis=-1).reshape(images.shape[0], NUM_COEFFICIENTS)


def small_recon_net(width: int = 32, input_size: int = 64) -> ReconNet:
  """A ResNet-18-style regressor (BasicBlocks (2, 2, 2, 2)) of reduced width for 64² SynthFaces."""
  return ReconNet(kind="basic", stage_sizes=(2, 2, 2, 2), width=width, input_size=input_size)


def init_recon(model: ReconNet, key: PRNGKey) -> PyTree:
  """Variables {'params', 'batch_stats'} of `model` for (1, input_size, input_size, 3) inputs."""
  images = jnp.zeros((1, model.input_size, model.input_size, 3), jnp.float32)
  # Jitted as a whole, under the classic threefry: XLA:CPU compiles the partitionable one for
  # ~60 initialisers several times slower (12 s vs 3 s for the small net). Same distributions.
  with jax.threefry_partitionable(False):
    return jax.jit(model.init, static_argnames="train")(key, images, train=False)


# ---------------------------------------------------------------------------------------------
# Official checkpoints (Deep3DFaceRecon `epoch_20.pth`: {'net_recon': state_dict, ...}).

# Flax leaf → (collection, torch suffix).
_LEAVES = {("params", "kernel"): "weight", ("params", "scale"): "weight",
           ("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
           ("batch_stats", "var"): "running_var"}
_BN_ORDER = (("params", "scale"), ("params", "bias"), ("batch_stats", "mean"),
             ("batch_stats", "var"))


def _torch_module(path: Sequence[str]) -> str:
  """Flax module path ('backbone', 'layer1_0', 'downsample_bn') → torch name
  'backbone.layer1.0.downsample.1'."""
  name = ".".join(path)
  name = re.sub(r"layer(\d+)_(\d+)", r"layer\1.\2", name)
  name = re.sub(r"final_layers_(\d+)", r"final_layers.\1", name)
  return name.replace("downsample_conv", "downsample.0").replace("downsample_bn", "downsample.1")


def _registration_key(name: str) -> tuple:
  """Sort key of a Flax module name in torch's registration order (jax sorts dict keys):
  backbone; conv1 bn1 conv2 bn2 …; downsample; layer1_0 layer1_1 …; final_layers_0 …"""
  kind = re.sub(r"[\d_]+$", "", name)
  rank = {"backbone": 0, "conv": 1, "bn": 1, "downsample_conv": 2, "downsample_bn": 2,
          "layer": 3, "final_layers": 4}[kind]
  return rank, tuple(int(n) for n in re.findall(r"\d+", name)), kind.endswith("bn")


def _entries(params: Mapping[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple]:
  """(torch key, collection, Flax path, is_conv_kernel) in torch's `state_dict()` order.

  A BatchNorm's four tensors come together (weight, bias, running_mean, running_var), as torch
  registers them; `num_batches_tracked` is handled by the callers.
  """
  leaves = sorted((k for k, v in params.items() if not isinstance(v, Mapping)),
                  key=lambda leaf: leaf != "kernel")  # torch: weight before bias
  if "scale" in leaves:
    for collection, leaf in _BN_ORDER:
      yield f"{_torch_module(path)}.{_LEAVES[collection, leaf]}", collection, path + (leaf,), False
  else:
    for leaf in leaves:
      yield f"{_torch_module(path)}.{_LEAVES['params', leaf]}", "params", path + (leaf,), \
          leaf == "kernel"
  children = [name for name, child in params.items() if isinstance(child, Mapping)]
  for name in sorted(children, key=_registration_key):
    yield from _entries(params[name], path + (name,))


def _get(tree: Mapping[str, Any], path: Sequence[str]) -> Any:
  for name in path:
    tree = tree[name]
  return tree


def _set(tree: dict, path: Sequence[str], value: Any) -> None:
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def to_state_dict(variables: PyTree) -> "collections.OrderedDict[str, np.ndarray]":
  """Flax variables → the official `net_recon` state_dict (float32 numpy; int64 counters = 0)."""
  state = collections.OrderedDict()
  for key, collection, path, is_kernel in _entries(variables["params"]):
    value = np.asarray(_get(variables[collection], path), np.float32)
    state[key] = np.ascontiguousarray(value.transpose(3, 2, 0, 1) if is_kernel else value)
    if key.endswith(".running_var"):
      state[key.removesuffix("running_var") + "num_batches_tracked"] = np.array(0, np.int64)
  return state


def from_state_dict(state: Mapping[str, Any], expected: PyTree, source: str) -> dict:
  """The official `net_recon` state_dict → Flax variables shaped like `expected`.

  Args:
    state: torch key → numpy array.
    expected: variables (arrays or ShapeDtypeStructs) of the target `ReconNet`.
    source: file name for error messages.

  Raises:
    CheckpointLayoutError: missing or unexpected keys, or a tensor of the wrong shape.
  """
  entries = list(_entries(expected["params"]))
  wanted = {key for key, *_ in entries}
  missing = [key for key, *_ in entries if key not in state]
  unexpected = sorted(k for k in state
                      if k not in wanted and not k.endswith(".num_batches_tracked"))
  if missing or unexpected:
    raise CheckpointLayoutError(
        f"{source}: keys do not match Deep3DFaceRecon's net_recon layout for this ReconNet; "
        f"missing {missing[:8]}{' …' if len(missing) > 8 else ''}, unexpected "
        f"{unexpected[:8]}{' …' if len(unexpected) > 8 else ''}")
  variables: dict = {}
  for key, collection, path, is_kernel in entries:
    value = torch_zip.require_finite(state[key], source, key).astype(np.float32)
    want = tuple(_get(expected[collection], path).shape)
    official = (want[3], want[2], want[0], want[1]) if is_kernel else want
    if value.shape != official:
      raise CheckpointLayoutError(
          f"{source}: {key} has shape {value.shape}, expected {official}")
    _set(variables.setdefault(collection, {}), path,
         value.transpose(2, 3, 1, 0) if is_kernel else value)
  return variables


def load_deep3d_recon(path: str | os.PathLike, model: ReconNet | None = None) -> dict:
  """Variables {'params', 'batch_stats'} from Deep3DFaceRecon's `epoch_20.pth` (no torch needed).

  The file is a torch.save dict whose 'net_recon' entry is the `ReconNetWrapper` state_dict
  (other entries such as the optimizer state are ignored). `model` defaults to `ReconNet()`
  (ResNet-50, 224²).

  Raises:
    FileNotFoundError; torch_zip.TorchZipError (not a torch zip); CheckpointLayoutError (no
    'net_recon', or keys/shapes that do not fit `model`), each naming the file.
  """
  model = model or ReconNet()
  checkpoint = torch_zip.load(path)
  if not isinstance(checkpoint, Mapping) or "net_recon" not in checkpoint:
    keys = sorted(checkpoint)[:8] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
    raise CheckpointLayoutError(
        f"{path}: expected Deep3DFaceRecon's checkpoint dict with a 'net_recon' state_dict, "
        f"got {keys}")
  expected = jax.eval_shape(lambda: init_recon(model, jax.random.key(0)))
  return from_state_dict(checkpoint["net_recon"], expected, str(path))


def save_deep3d_recon(variables: PyTree, path: str | os.PathLike) -> None:
  """Write `variables` as {'net_recon': state_dict}, the layout of Deep3DFaceRecon's checkpoints."""
  torch_save.save({"net_recon": to_state_dict(variables)}, path)

