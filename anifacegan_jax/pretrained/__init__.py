"""Shipped models: a trained run packed into a few plain files and loaded by name or by folder.

  python -m anifacegan_jax.sample --pretrained=synthfaces --workdir=OUT --mode=video
  python -m anifacegan_jax.evaluate --pretrained=synthfaces --workdir=OUT --metrics=geometry,control
  python -m anifacegan_jax.pretrained --workdir=RUN --recon=RECON_RUN --out=DIR   # pack a run

A model folder holds (nothing in it can run code: JSON, msgpack and an .npz read without pickle):

  config.json        the run's config (ml_collections JSON; dataset.data_dir and recon cleared)
  generator.msgpack  the EMA generator's parameters (flax.serialization, float32)
  prior.npz          the latent prior of z_id / z_exp (`models.priors.save_prior`)
  recon.json         optional: the reconstruction network's `train_recon` config
  recon.msgpack      optional: its variables {'params', 'batch_stats'}
  model.json         format version, the training step and where the files came from
  identity.npz       optional: one fixed identity (z_id, ε; `python -m anifacegan_jax.invert`
                     writes it): every seed of `sample` / `serve` renders that face

This module reads and writes the files; `experiment.load_pretrained` builds the run from them
(its `config.recon` names the folder when it holds a reconstruction network, so `evaluate
--metrics=control,ds,consistency` read the shipped model with the network it was measured with)
and `experiment.export_pretrained` packs a training workdir.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import serialization

FORMAT = 1
SHIPPED = ("synthfaces",)  # folders next to this file
CONFIG, GENERATOR, PRIOR = "config.json", "generator.msgpack", "prior.npz"
RECON_CONFIG, RECON, INFO = "recon.json", "recon.msgpack", "model.json"
IDENTITY = "identity.npz"


class PretrainedError(ValueError):
  """A model folder that is missing a file or holds one that does not fit its config."""


def model_dir(name: str | os.PathLike) -> pathlib.Path:
  """The folder of a shipped model (`SHIPPED`) or a folder written by `export`."""
  if str(name) in SHIPPED:
    path = pathlib.Path(__file__).parent / str(name)
  else:
    path = pathlib.Path(name).expanduser()
    if not path.is_dir():
      raise FileNotFoundError(f"--pretrained={name}: neither a shipped model ({', '.join(SHIPPED)})"
                              " nor a folder written by `python -m anifacegan_jax.pretrained`")
  if not is_model_dir(path):
    raise FileNotFoundError(f"{path}: no {GENERATOR} / {CONFIG}; a model folder is written by "
                            "`python -m anifacegan_jax.pretrained --workdir=RUN --out=DIR`")
  return path


def is_model_dir(path: str | os.PathLike) -> bool:
  path = pathlib.Path(path)
  return (path / GENERATOR).is_file() and (path / CONFIG).is_file()


def has_recon(path: str | os.PathLike) -> bool:
  path = pathlib.Path(path)
  return (path / RECON).is_file() and (path / RECON_CONFIG).is_file()


def _write_bytes(path: pathlib.Path, data: bytes) -> None:
  tmp = path.with_name(f".{path.name}.tmp")
  tmp.write_bytes(data)
  os.replace(tmp, path)


def _write_json(path: pathlib.Path, value: Any) -> None:
  _write_bytes(path, (json.dumps(value, indent=1, sort_keys=True) + "\n").encode())


def _read_json(path: pathlib.Path) -> Any:
  try:
    return json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
    raise PretrainedError(f"{path}: not a JSON file ({error})") from error


def _config_from_json(path: pathlib.Path) -> ml_collections.ConfigDict:
  from anifacegan_jax import checkpointing

  plain = _read_json(path)
  if not isinstance(plain, dict):
    raise PretrainedError(f"{path}: expected a JSON object (a config), got {type(plain).__name__}")
  return checkpointing.config_from_json(plain)


def _restore(path: pathlib.Path, target: Any, what: str) -> Any:
  """msgpack bytes into the structure, shapes and dtypes of `target` (ShapeDtypeStructs)."""
  try:
    tree = serialization.msgpack_restore(path.read_bytes())
  except OSError as error:
    raise PretrainedError(f"{path}: cannot read {what} ({error})") from error
  except Exception as error:  # msgpack raises its own exception types
    raise PretrainedError(f"{path}: not a msgpack file of {what} ({error})") from error
  flat_target = dict(_flatten(target))
  flat_tree = dict(_flatten(tree)) if isinstance(tree, dict) else {}
  missing = sorted(set(flat_target) - set(flat_tree))
  extra = sorted(set(flat_tree) - set(flat_target))
  if missing or extra:
    raise PretrainedError(f"{path}: {what} does not fit its config: missing "
                          f"{missing[:3] or 'nothing'}, unexpected {extra[:3] or 'nothing'}")
  for key, want in flat_target.items():
    got = np.asarray(flat_tree[key])
    if got.shape != tuple(want.shape):
      raise PretrainedError(f"{path}: {what} {'/'.join(key)} has shape {got.shape}, its config "
                            f"expects {tuple(want.shape)}")
    if not np.all(np.isfinite(got)):
      raise PretrainedError(f"{path}: {what} {'/'.join(key)} holds NaN or infinite values")
  restored = serialization.from_state_dict(target, tree)
  return jax.tree_util.tree_map(lambda t, x: jax.numpy.asarray(x, t.dtype), target, restored)


def _flatten(tree: Any, prefix: tuple[str, ...] = ()):
  if isinstance(tree, dict):
    for key, value in tree.items():
      yield from _flatten(value, prefix + (str(key),))
  else:
    yield prefix, tree


def _host(tree: Any) -> Any:
  return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), jax.device_get(tree))


def write(out: str | os.PathLike, config: ml_collections.ConfigDict, ema_params: Any, prior: Any,
          *, step: int, source: str, recon: tuple[dict, Any, str] | None = None,
          eval_resolution: int | None = None) -> pathlib.Path:
  """Write a model folder from a run's parts in memory (`export` reads them from a workdir).

  Args:
    recon: optional (its `train_recon` config as a dict, its variables, where it came from).
  """
  from anifacegan_jax.models.priors import save_prior

  if recon is not None and recon[0].get("face_model", "") != config.face_model:
    raise PretrainedError(f"{recon[2]} reads the 3DMM face_model={recon[0].get('face_model')!r}, "
                          f"the run imitates {config.face_model!r}")
  out = pathlib.Path(out).expanduser()
  out.mkdir(parents=True, exist_ok=True)
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.dataset.data_dir = ""  # a path on the machine that trained it
    config.recon = ""  # the shipped network (if any) is found in the folder itself
    if eval_resolution is not None:
      config.eval_resolution = int(eval_resolution)
  if config.prior.startswith("file:"):
    config.prior = "fit"  # the prior ships as prior.npz; the file path means nothing elsewhere
  _write_json(out / CONFIG, json.loads(config.to_json()))
  _write_bytes(out / GENERATOR, serialization.msgpack_serialize(
      serialization.to_state_dict(_host(ema_params))))
  save_prior(prior, out / PRIOR)
  info = dict(format=FORMAT, step=int(step), workdir=source)
  if recon is not None:
    recon_config, variables, recon_source = recon
    _write_json(out / RECON_CONFIG, json.loads(json.dumps(_plain(recon_config))))
    _write_bytes(out / RECON, serialization.msgpack_serialize(
        serialization.to_state_dict(_host(variables))))
    info["recon"] = recon_source
  else:
    for name in (RECON, RECON_CONFIG):
      (out / name).unlink(missing_ok=True)
  (out / IDENTITY).unlink(missing_ok=True)  # a run's folder holds no fixed identity
  _write_json(out / INFO, info)
  return out


def write_identity(out: str | os.PathLike, z_id: Any, noise: Any, **extra: Any) -> pathlib.Path:
  """Fix the identity of the model folder `out`: z_id (80,), ε (80,) and, for the record, any
  `extra` arrays (an inversion's z_exp and camera)."""
  arrays = dict(z_id=np.asarray(z_id, np.float32), noise=np.asarray(noise, np.float32),
                **{k: np.asarray(v, np.float32) for k, v in extra.items()})
  for name in ("z_id", "noise"):
    if arrays[name].shape != (80,) or not np.isfinite(arrays[name]).all():
      raise PretrainedError(f"identity {name}: expected 80 finite numbers, got shape "
                            f"{arrays[name].shape}")
  path = pathlib.Path(out).expanduser() / IDENTITY
  np.savez(path, **arrays)
  return path


def read_identity(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray] | None:
  """(z_id (80,), ε (80,)) of the folder's identity.npz; None for a folder without one."""
  path = pathlib.Path(path) / IDENTITY
  if not path.is_file():
    return None
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {name: np.asarray(data[name], np.float32) for name in ("z_id", "noise")}
  except (OSError, ValueError, KeyError, EOFError) as error:
    raise PretrainedError(f"{path}: not a readable identity file ({type(error).__name__}: "
                          f"{error}); expected an .npz with z_id (80,) and noise (80,)") from None
  for name, value in arrays.items():
    if value.shape != (80,) or not np.isfinite(value).all():
      raise PretrainedError(f"{path}: {name} has shape {value.shape} or non-finite values; "
                            "expected 80 finite numbers")
  return arrays["z_id"], arrays["noise"]


def _plain(value: Any) -> Any:
  """A config (ConfigDict or nested dicts/tuples) as JSON-ready dicts and lists."""
  if isinstance(value, ml_collections.ConfigDict):
    return json.loads(value.to_json())
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  return value


def read_config(path: str | os.PathLike) -> ml_collections.ConfigDict:
  """The run config of the model folder `path`, its `recon` naming the folder when it holds a
  reconstruction network, its prior 'fit' (the prior is prior.npz).

  Raises:
    FileNotFoundError; PretrainedError naming the file (a newer format, not a JSON config).
  """
  path = pathlib.Path(path)
  info = read_info(path)
  if int(info.get("format", FORMAT)) > FORMAT:
    raise PretrainedError(f"{path / INFO}: format {info['format']} is newer than this version "
                          f"reads ({FORMAT}); upgrade anifacegan_jax")
  config = _config_from_json(path / CONFIG)
  with config.unlocked():
    config.recon = str(path) if has_recon(path) else ""
    config.prior = "fit"  # the prior is prior.npz; the config's only decides the restore target
  return config


def read_info(path: str | os.PathLike) -> dict:
  """model.json of the folder (format, step, sources); {} for a folder without one."""
  path = pathlib.Path(path)
  return _read_json(path / INFO) if (path / INFO).is_file() else {}


def read_generator(path: str | os.PathLike, target: Any) -> Any:
  """The EMA generator parameters of the folder, shaped like `target` (ShapeDtypeStructs)."""
  return _restore(pathlib.Path(path) / GENERATOR, target, "the EMA generator parameters")


def read_prior(path: str | os.PathLike):
  """The latent prior (prior.npz) of the folder."""
  from anifacegan_jax.models.priors import load_prior
  return load_prior(pathlib.Path(path) / PRIOR)


def read_recon(path: str | os.PathLike):
  """(ReconNet, variables) of the reconstruction network in a model folder."""
  from anifacegan_jax import recon_step
  from anifacegan_jax.models.recon import init_recon

  path = pathlib.Path(path)
  if not has_recon(path):
    raise FileNotFoundError(f"{path}: no {RECON} / {RECON_CONFIG} (packed with "
                            "`python -m anifacegan_jax.pretrained --recon=...`)")
  config = _config_from_json(path / RECON_CONFIG)
  try:
    model = recon_step.build_model(config.model)
  except (AttributeError, KeyError, TypeError) as error:
    raise PretrainedError(f"{path / RECON_CONFIG}: not a train_recon config ({error!r})") from error
  target = jax.eval_shape(lambda: init_recon(model, jax.random.key(0)))
  variables = _restore(path / RECON, target, "the reconstruction network's variables")
  return model, variables
