"""Orbax checkpoints of the training state plus the run's config as JSON.

Layout: <workdir>/checkpoints/<step>/{state, config}. Saving is asynchronous and atomic (Orbax
writes to a temporary directory and renames it), so a run killed mid-save never loses the previous
checkpoint. `restore_config` and `restore_state` need only the workdir, which is what `sample`
and `evaluate` use. Saving needs no ml_collections (a plain mapping is a config too), so code
on a bare accelerator image writes checkpoints in the same layout.
"""

from __future__ import annotations

import json
import pathlib
from typing import TYPE_CHECKING, Any, Mapping

import orbax.checkpoint as ocp

from anifacegan_jax.types import PyTree

if TYPE_CHECKING:
  import ml_collections

CHECKPOINT_DIR = "checkpoints"


class CheckpointMismatchError(ValueError):
  """A checkpoint whose state tree differs from what this version builds."""


class CheckpointNotFoundError(FileNotFoundError):
  """A workdir without (readable) checkpoints."""


def checkpoint_dir(workdir: str | pathlib.Path) -> pathlib.Path:
  return pathlib.Path(workdir).expanduser().resolve() / CHECKPOINT_DIR


def create_manager(workdir: str | pathlib.Path, max_to_keep: int = 3,
                   async_save: bool = True, read_only: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager over <workdir>/checkpoints with items 'state' and 'config'."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                         enable_async_checkpointing=async_save,
                                         read_only=read_only)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=("state", "config"))


def save(manager: ocp.CheckpointManager, step: int, state: PyTree,
         config: ml_collections.ConfigDict | Mapping[str, Any], force: bool = False) -> bool:
  """Save the (unreplicated, host-fetchable) state and the config (a ConfigDict or a JSON-able
  mapping) at `step`."""
  plain = json.loads(config.to_json()) if hasattr(config, "to_json") else json.loads(
      json.dumps(dict(config)))
  args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                            config=ocp.args.JsonSave(plain))
  return manager.save(step, args=args, force=force)


def latest_step(workdir: str | pathlib.Path) -> int | None:
  """The newest saved step in the workdir, or None."""
  if not checkpoint_dir(workdir).is_dir():
    return None
  return create_manager(workdir, read_only=True).latest_step()


def _require_step(workdir, step: int | None) -> int:
  step = latest_step(workdir) if step is None else step
  if step is None:
    raise CheckpointNotFoundError(
        f"no checkpoint in {checkpoint_dir(workdir)}: train first with "
        f"`python -m anifacegan_jax.main --config=... --workdir={workdir}`")
  return step


def restore_config(workdir: str | pathlib.Path, step: int | None = None) -> ml_collections.ConfigDict:
  """The config the run at `workdir` was trained with (newest checkpoint by default)."""
  step = _require_step(workdir, step)
  manager = create_manager(workdir, read_only=True)
  restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  return config_from_json(restored["config"])


def config_from_json(plain: dict) -> ml_collections.ConfigDict:
  """A run config from its JSON form (`save` writes it, and model folders hold it)."""
  import ml_collections  # here only: saving works without it
  config = ml_collections.ConfigDict(plain)
  if "stages" in config:  # JSON turns the list of stage ConfigDicts into plain dicts
    config.stages = [ml_collections.ConfigDict(stage) for stage in config.stages]
  return config


def restore_state(workdir: str | pathlib.Path, target: PyTree, step: int | None = None) -> Any:
  """Restore the state saved at `step` (newest by default) into the structure of `target`.

  `target` may be abstract (e.g. from `jax.eval_shape`); the result has concrete arrays.
  """
  step = _require_step(workdir, step)
  manager = create_manager(workdir, read_only=True)
  try:
    restored = manager.restore(step,
                               args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  except ValueError as error:
    if "Structure mismatch" not in str(error):
      raise
    detail = str(error).split(" Expected identical structures")[0][:300]
    raise CheckpointMismatchError(
        f"the checkpoint at {checkpoint_dir(workdir)}/{step} does not have this version's state "
        f"layout ({detail}): it was written by an older anifacegan_jax (e.g. before the manifold "
        "learning-rate group, config.optim.manifold_lr); use that version to sample or resume "
        "it, or train anew in another --workdir") from None
  return restored["state"]
