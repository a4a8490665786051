"""Official AniFaceGAN PyTorch checkpoints ↔ Flax parameter trees, without importing torch.

Supported files (SPEC §6, key listing in keys_shapes.txt):
  * `generator.pth`: the template generator's state_dict (`siren.*`, `model_sample.*`).
  * `ema.pth`: torch_ema's state: a dict (or a whole pickled EMA object) whose `shadow_params` is a
    list of tensors in `generator.parameters()` order.
  * `dif.pth`: the deformation network's state_dict.
Linear weights (out, in) become Flax kernels (in, out) = Wᵀ; biases are unchanged. The official
networks use the released conventions of `official_generator()` (double warp, either-direction
first crossing, no |Δs| guard). The inverse maps export trained Flax weights in the official layout.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Iterator, Mapping, Sequence

import jax
import numpy as np

from anifacegan_jax import torch_save, torch_zip
from anifacegan_jax.models.generator import AnimatableGenerator, init_generator
from anifacegan_jax.torch_zip import CheckpointLayoutError
from anifacegan_jax.types import PyTree

# (official Linear prefix, Flax module path), in `parameters()` registration order.
Layout = Sequence[tuple[str, tuple[str, ...]]]

TEMPLATE_LAYOUT: Layout = (
    *[(f"siren.network.{i}.layer", ("radiance", f"film_{i}", "linear")) for i in range(8)],
    *[(f"siren.output_sigma.{k}", ("radiance", f"sigma_head_{k}")) for k in range(7)],
    ("siren.color_layer_sine.0.layer", ("radiance", "color_film", "linear")),
    *[(f"siren.output_color.{k}", ("radiance", f"color_head_{k}")) for k in range(7)],
    *[(f"siren.mapping_network.network.{2 * i}", ("mapping", f"dense_{i}")) for i in range(4)],
    *[(f"model_sample.network.{2 * i}", ("manifold", f"dense_{i}")) for i in range(3)],
    ("model_sample.output_layer", ("manifold", "output")),
)

DEFORMATION_LAYOUT: Layout = (
    *[(f"network.{i}.layer", (f"film_{i}", "linear")) for i in range(3)],
    ("final_layer", ("output",)),
    *[(f"mapping_network.network.{2 * i}", ("mapping", f"dense_{i}")) for i in range(4)],
)


def official_generator(**overrides: Any) -> AnimatableGenerator:
  """The generator with the released AniFaceGAN conventions (SPEC §2.4, §3.5, §3.6)."""
  settings = dict(warp="double", crossing="either", min_gap=0.0, deform_final_bias_init="torch")
  settings.update(overrides)
  return AnimatableGenerator(**settings)


def _entries(layout: Layout) -> Iterator[tuple[str, tuple[str, ...], bool]]:
  """(official key, Flax path, is_weight) for every tensor, in `parameters()` order."""
  for prefix, path in layout:
    yield f"{prefix}.weight", path + ("kernel",), True
    yield f"{prefix}.bias", path + ("bias",), False


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
  for name in path:
    tree = tree[name]
  return tree


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def _strip_prefix(state: Mapping[str, Any], layout: Layout) -> Mapping[str, Any]:
  """Drop a DistributedDataParallel `module.` prefix when the checkpoint has one."""
  first = next(iter(layout))[0] + ".weight"
  if first not in state and f"module.{first}" in state:
    return {k[len("module."):]: v for k, v in state.items() if k.startswith("module.")}
  return state


def from_torch(state: Mapping[str, Any], layout: Layout, expected: PyTree,
               source: str) -> dict:
  """Map an official state_dict to a Flax parameter subtree.

  Args:
    state: official key → array (tensors as numpy arrays).
    layout: TEMPLATE_LAYOUT or DEFORMATION_LAYOUT.
    expected: the Flax subtree (arrays or ShapeDtypeStructs) whose shapes must be matched.
    source: file name used in error messages.

  Raises:
    CheckpointLayoutError: missing or unexpected keys, or a shape that does not fit.
  """
  if not isinstance(state, Mapping):
    raise CheckpointLayoutError(f"{source}: holds a {type(state).__name__}; expected a state_dict "
                                "(a dict of tensors, as torch.save(model.state_dict(), path))")
  state = _strip_prefix(state, layout)
  wanted = {key for key, _, _ in _entries(layout)}
  missing = sorted(wanted - set(state))
  unexpected = sorted(set(state) - wanted)
  if missing or unexpected:
    raise CheckpointLayoutError(
        f"{source}: keys do not match the official layout; missing {missing[:8]}"
        f"{' …' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
        f"{' …' if len(unexpected) > 8 else ''}")
  return from_torch_list([state[key] for key, _, _ in _entries(layout)], layout, expected,
                         source)


def from_torch_list(tensors: Sequence[Any], layout: Layout, expected: PyTree,
                    source: str) -> dict:
  """Map tensors listed in `parameters()` order (e.g. an EMA shadow list) to a Flax subtree."""
  entries = list(_entries(layout))
  if len(tensors) != len(entries):
    raise CheckpointLayoutError(
        f"{source}: expected {len(entries)} tensors in parameters() order, got {len(tensors)}")
  params: dict = {}
  for (key, path, is_weight), tensor in zip(entries, tensors):
    value = torch_zip.require_finite(tensor, source, key).astype(np.float32)
    value = value.T if is_weight else value
    want = tuple(_get(expected, path).shape)
    if value.shape != want:
      official = want[::-1] if is_weight else want
      raise CheckpointLayoutError(
          f"{source}: {key} has shape {tuple(np.shape(tensor))}, expected {official}")
    _set(params, path, value)
  return params


def to_torch(params: Mapping[str, Any], layout: Layout) -> "collections.OrderedDict[str, np.ndarray]":
  """Inverse of `from_torch`: a Flax subtree → official state_dict of float32 numpy arrays."""
  state = collections.OrderedDict()
  for key, path, is_weight in _entries(layout):
    value = np.asarray(_get(params, path), dtype=np.float32)
    state[key] = np.ascontiguousarray(value.T if is_weight else value)
  return state


def _expected_params(model: AnimatableGenerator) -> PyTree:
  return jax.eval_shape(lambda: init_generator(model, jax.random.key(0)))["params"]


def _template_part(params: Mapping[str, Any]) -> dict:
  return {k: v for k, v in params.items() if k != "deformation"}


def _shadow_params(obj: Any, source: str) -> list:
  """The `shadow_params` list of a torch_ema state_dict or of a whole pickled EMA object."""
  state = obj if isinstance(obj, Mapping) else getattr(obj, "state", None)
  if not isinstance(state, Mapping) or "shadow_params" not in state:
    raise CheckpointLayoutError(
        f"{source}: expected a torch_ema state with a 'shadow_params' list, got {type(obj).__name__}")
  return list(state["shadow_params"])


def load_official(generator_path: str | os.PathLike, deformation_path: str | os.PathLike,
                  ema_path: str | os.PathLike | None = None,
                  model: AnimatableGenerator | None = None) -> tuple[AnimatableGenerator, PyTree]:
  """Load the released `generator.pth` (+ optional `ema.pth`, preferred) and `dif.pth`.

  Returns:
    (model, variables) ready for `render`; the model defaults to `official_generator()`.
  """
  model = model or official_generator()
  expected = _expected_params(model)
  if ema_path is not None:
    shadow = _shadow_params(torch_zip.load(ema_path), str(ema_path))
    template = from_torch_list(shadow, TEMPLATE_LAYOUT, _template_part(expected), str(ema_path))
  else:
    template = from_torch(torch_zip.load(generator_path), TEMPLATE_LAYOUT,
                          _template_part(expected), str(generator_path))
  deformation = load_deformation(deformation_path, model)
  return model, {"params": {**template, "deformation": deformation}}


def load_deformation(path: str | os.PathLike, model: AnimatableGenerator | None = None) -> dict:
  """The `deformation` parameter subtree from an official `dif.pth`."""
  model = model or official_generator()
  return from_torch(torch_zip.load(path), DEFORMATION_LAYOUT,
                    _expected_params(model)["deformation"], str(path))


def save_official(variables: PyTree, generator_path: str | os.PathLike,
                  deformation_path: str | os.PathLike) -> None:
  """Export Flax variables as official `generator.pth` and `dif.pth` state_dicts."""
  params = variables["params"]
  if "deformation" not in params:
    raise CheckpointLayoutError(
        "these variables have no deformation field (model.expression='template', the "
        "DiscoFaceGRAM baseline): the official AniFaceGAN layout cannot hold them")
  torch_save.save(to_torch(_template_part(params), TEMPLATE_LAYOUT), generator_path)
  torch_save.save(to_torch(params["deformation"], DEFORMATION_LAYOUT), deformation_path)
