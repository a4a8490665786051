"""Orbax checkpoints of the training state plus the run's config as JSON.

Layout: <workdir>/checkpoints/<step>/{state, config, checksums}. Saving is asynchronous and
atomic (Orbax writes to a temporary directory and renames it), so a run killed mid-save never loses
the previous checkpoint. A state with a non-finite array is never saved. `checksums` holds a CRC-32
of every array, checked at restore: a file damaged after saving raises `CheckpointCorruptError`
naming the checkpoint, and `restore_newest_good` (training's resume) falls back to the newest
checkpoint that reads back intact. `restore_config` and `restore_fields` (a few named fields, e.g.
the EMA generator, without the discriminator and optimizer states) need only the workdir: that
is what `sample` and `evaluate` read. Saving needs no ml_collections (a plain mapping is a config too), so code
on a bare accelerator image writes checkpoints in the same layout.
"""

from __future__ import annotations

import json
import pathlib
import zlib
from typing import TYPE_CHECKING, Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from anifacegan_jax.types import PyTree

if TYPE_CHECKING:
  import ml_collections

CHECKPOINT_DIR = "checkpoints"
ITEMS = ("state", "config", "checksums")


class CheckpointMismatchError(ValueError):
  """A checkpoint whose state tree differs from what this version builds."""


class CheckpointNotFoundError(FileNotFoundError):
  """A workdir without (readable) checkpoints."""


class CheckpointCorruptError(ValueError):
  """A checkpoint that cannot be read back, or whose arrays differ from their saved checksums."""


class NonFiniteStateError(FloatingPointError):
  """A state holding NaN or Inf: never written as a checkpoint."""


def checksums(state: PyTree) -> dict[str, str]:
  """'dtype[shape]:crc32' of every array of `state` (host arrays), by tree path.

  Raises:
    NonFiniteStateError naming the first array with a NaN or Inf.
  """
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    array = np.ascontiguousarray(np.asarray(leaf))
    name = jax.tree_util.keystr(path)
    if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
      raise NonFiniteStateError(f"state{name} holds NaN or Inf")
    out[name] = f"{array.dtype}{list(array.shape)}:{zlib.crc32(array.tobytes()):08x}"
  return out


def checkpoint_dir(workdir: str | pathlib.Path) -> pathlib.Path:
  return pathlib.Path(workdir).expanduser().resolve() / CHECKPOINT_DIR


def create_manager(workdir: str | pathlib.Path, max_to_keep: int = 3,
                   async_save: bool = True, read_only: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager over <workdir>/checkpoints with items 'state', 'config', 'checksums'."""
  if not read_only and not max_to_keep >= 1:
    raise ValueError(f"checkpoints to keep must be >= 1 (0 would delete every checkpoint), got "
                     f"{max_to_keep}")
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                         enable_async_checkpointing=async_save,
                                         read_only=read_only)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=ITEMS)


def save(manager: ocp.CheckpointManager, step: int, state: PyTree,
         config: ml_collections.ConfigDict | Mapping[str, Any], force: bool = False) -> bool:
  """Save the (unreplicated, host) state, its checksums and the config (a ConfigDict or a
  JSON-able mapping) at `step`.

  Raises:
    NonFiniteStateError (nothing is written) when an array of `state` is not finite.
  """
  plain = json.loads(config.to_json()) if hasattr(config, "to_json") else json.loads(
      json.dumps(dict(config)))
  sums = checksums(state)
  args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                            config=ocp.args.JsonSave(plain), checksums=ocp.args.JsonSave(sums))
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
  try:
    restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  except (OSError, ValueError) as error:
    raise CheckpointCorruptError(f"{checkpoint_dir(workdir) / str(step) / 'config'}: cannot be "
                                 f"read ({_first_line(error)})") from None
  if not isinstance(restored["config"], dict):
    raise CheckpointCorruptError(f"{checkpoint_dir(workdir) / str(step) / 'config'}: not a "
                                 "config (expected a JSON object)")
  return config_from_json(restored["config"])


def config_from_json(plain: dict) -> ml_collections.ConfigDict:
  """A run config from its JSON form (`save` writes it, and model folders hold it)."""
  import ml_collections  # here only: saving works without it
  config = ml_collections.ConfigDict(plain)
  if "stages" in config:  # JSON turns the list of stage ConfigDicts into plain dicts
    config.stages = [ml_collections.ConfigDict(stage) for stage in config.stages]
  return config


def saved_steps(workdir: str | pathlib.Path) -> list[int]:
  """The saved steps of the workdir, oldest first."""
  if not checkpoint_dir(workdir).is_dir():
    return []
  return sorted(create_manager(workdir, read_only=True).all_steps())


def set_aside_after(workdir: str | pathlib.Path, step: int) -> pathlib.Path | None:
  """Move the checkpoints newer than `step` to <workdir>/checkpoints_after_<step>_<n>/ (so that
  training can resume from `step` and save again); returns that folder, None if none are newer."""
  newer = [s for s in saved_steps(workdir) if s > step]
  if not newer:
    return None
  root = pathlib.Path(workdir).expanduser().resolve()
  n = 0
  while (root / f"{CHECKPOINT_DIR}_after_{step}_{n}").exists():
    n += 1
  aside = root / f"{CHECKPOINT_DIR}_after_{step}_{n}"
  aside.mkdir()
  for s in newer:
    (checkpoint_dir(workdir) / str(s)).rename(aside / str(s))
  return aside


def restore_state(workdir: str | pathlib.Path, target: PyTree, step: int | None = None) -> Any:
  """Restore the state saved at `step` (newest by default) into the structure of `target`.

  `target` may be abstract (e.g. from `jax.eval_shape`); the result has concrete arrays.

  Raises:
    CheckpointNotFoundError; CheckpointMismatchError (another version's state layout);
    CheckpointCorruptError (unreadable, or an array differs from its saved checksum).
  """
  step = _require_step(workdir, step)
  where = checkpoint_dir(workdir) / str(step)
  manager = create_manager(workdir, read_only=True)
  try:
    restored = manager.restore(step,
                               args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  except ValueError as error:
    if _is_damage(error):
      raise CheckpointCorruptError(f"{where}: cannot be read ({_first_line(error)})") from None
    if "Structure mismatch" not in str(error):
      raise
    detail = str(error).split(" Expected identical structures")[0][:300]
    raise CheckpointMismatchError(
        f"the checkpoint at {where} does not have this version's state "
        f"layout ({detail}): it was written by an older anifacegan_jax (e.g. before the manifold "
        "learning-rate group, config.optim.manifold_lr); use that version to sample or resume "
        "it, or train anew in another --workdir") from None
  except OSError as error:  # a data file missing or unreadable
    raise CheckpointCorruptError(f"{where}: cannot be read ({_first_line(error)})") from None
  state = restored["state"]
  if (where / "checksums").is_dir():  # checkpoints written before checksums have none
    saved, now = _saved_and_now(manager, step, where, state)
    bad = [name for name, value in now.items() if saved.get(name) != value]
    if bad or set(saved) != set(now):
      raise CheckpointCorruptError(
          f"{where}: {len(bad) or 'the set of'} arrays differ from the checksums written with "
          f"them (first: state{bad[0] if bad else ''}): the files were damaged after saving")
  return state


def _saved_and_now(manager: ocp.CheckpointManager, step: int, where: pathlib.Path,
                   state: PyTree) -> tuple[dict[str, str], dict[str, str]]:
  """The checksums saved at `step` and those of the restored `state`."""
  try:
    saved = manager.restore(step, args=ocp.args.Composite(
        checksums=ocp.args.JsonRestore()))["checksums"]
  except (OSError, ValueError) as error:
    raise CheckpointCorruptError(f"{where}: its checksums cannot be read "
                                 f"({_first_line(error)})") from None
  try:
    return saved, checksums(jax.device_get(state))
  except NonFiniteStateError as error:
    raise CheckpointCorruptError(f"{where}: {error} (damaged after saving)") from None


def restore_fields(workdir: str | pathlib.Path, target: Mapping[str, PyTree],
                   step: int | None = None) -> dict[str, Any]:
  """Only the named fields of the saved state (e.g. step, ema_params, prior for inference),
  shaped like `target` (abstract leaves allowed); the rest (discriminator, optimizer states) is
  not read. Each restored array is checked against its saved checksum.

  Raises:
    as `restore_state`.
  """
  step = _require_step(workdir, step)
  where = checkpoint_dir(workdir) / str(step)
  try:
    with ocp.PyTreeCheckpointer() as checkpointer:
      state = checkpointer.restore(where / "state", args=ocp.args.PyTreeRestore(
          dict(target), partial_restore=True))
  except ValueError as error:
    if _is_damage(error):
      raise CheckpointCorruptError(f"{where}: cannot be read ({_first_line(error)})") from None
    raise CheckpointMismatchError(
        f"the checkpoint at {where} does not hold {sorted(target)} in this version's layout "
        f"({_first_line(error)}): use the anifacegan_jax version that wrote it") from None
  except OSError as error:
    raise CheckpointCorruptError(f"{where}: cannot be read ({_first_line(error)})") from None
  if (where / "checksums").is_dir():
    saved, now = _saved_and_now(create_manager(workdir, read_only=True), step, where, state)
    missing = [f for f in target if not any(k.startswith((f"['{f}']", f".{f}")) for k in saved)]
    if missing:
      raise CheckpointMismatchError(f"the checkpoint at {where} does not hold {missing}")
    # a field of a saved dataclass (GanState) is '.name' where this dict has "['name']"
    as_field = lambda name: "." + name[2:].replace("']", "", 1)  # noqa: E731
    bad = [name for name, value in now.items()
           if saved.get(name, saved.get(as_field(name))) != value]
    if bad:
      raise CheckpointCorruptError(
          f"{where}: {len(bad)} arrays differ from the checksums written with them (first: "
          f"state{bad[0]}): the files were damaged after saving")
  return state


def restore_newest_good(workdir: str | pathlib.Path, target: PyTree) -> Any:
  """`restore_state` of the newest checkpoint that reads back intact, saying which were skipped.

  Raises:
    CheckpointCorruptError when no checkpoint of the workdir is intact.
  """
  steps = saved_steps(workdir)
  if not steps:
    _require_step(workdir, None)
  errors = []
  for step in reversed(steps):
    try:
      state = restore_state(workdir, target, step)
    except CheckpointCorruptError as error:
      errors.append(str(error))
      logging.warning("%s; trying the previous checkpoint", error)
      continue
    if errors:
      logging.warning("resuming from step %d, the newest intact checkpoint (%d newer one(s) "
                      "damaged: %s)", step, len(errors), "; ".join(errors))
    return state
  raise CheckpointCorruptError(f"no intact checkpoint in {checkpoint_dir(workdir)}: "
                               + "; ".join(errors))


# tensorstore's status codes for unreadable data (truncated, missing or garbled files).
_DAMAGE_CODES = ("OUT_OF_RANGE", "DATA_LOSS", "NOT_FOUND", "FAILED_PRECONDITION", "Error reading",
                 "Error opening")


def _is_damage(error: BaseException) -> bool:
  return isinstance(error, json.JSONDecodeError) or any(c in str(error) for c in _DAMAGE_CODES)


def _first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:300]}" if text else type(error).__name__
