"""Command-line plumbing shared by the entry points: flag parsing that reports config typos in
one line, and user errors (missing files, bad configs) shown as messages, not tracebacks."""

from __future__ import annotations

import logging as py_logging
import os
import pathlib
import signal
import sys
import tempfile
import threading
import traceback
from typing import Callable

from absl import app, flags, logging

flags.DEFINE_string("compilation_cache", "", "Directory of JAX's persistent compilation cache, "
                    "so a second run skips the compiles of the first: '' = "
                    "$JAX_COMPILATION_CACHE_DIR, else the user cache (~/.cache/anifacegan_jax/"
                    "xla); 'none' turns it off.")


class StopRequested(RuntimeError):
  """A run stopped because a config field asked it to (e.g. config.stop_on_collapse)."""

  exit_code = 2


class Interrupted(StopRequested):
  """A run stopped cleanly on SIGTERM or SIGINT after saving; exits 128 + the signal number."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + signum


class SignalStop:
  """Context manager: SIGTERM and SIGINT ask the loop to stop after the current step.

  `requested` is the signal's name once one arrived (None before); the loop checks it, saves and
  raises `Interrupted`. A second SIGINT (Ctrl-C twice) raises KeyboardInterrupt at once. Outside
  the main thread (where handlers cannot be installed) it does nothing.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested: str | None = None
    self.signum = 0
    self._previous = {}

  def handle(self, signum, frame=None) -> None:
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt  # the second Ctrl-C: stop now, without saving
    self.requested, self.signum = signal.Signals(signum).name, signum
    logging.warning("%s received: stopping after this step and saving (Ctrl-C again to stop "
                    "at once, without saving)", self.requested)

  def __enter__(self) -> SignalStop:
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self.handle) for s in self.SIGNALS}
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)


# Errors caused by the user's input, and stops a config field asked for: shown as one line (exit
# status 2), never a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError, StopRequested)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing; a missing config file, a config file that raises (e.g. an unknown
  variant) and a bad `--config.<field>=...` override exit with a one-line message."""
  for arg in argv[1:]:
    if arg.startswith("--config="):
      path = arg.split("=", 1)[1].split(":", 1)[0]
      if not pathlib.Path(path).expanduser().is_file():
        sys.stderr.write(f"error: {arg}: no such config file {path} (expected e.g. "
                         "--config=configs/synthface.py:tiny, relative to the working directory)\n")
        sys.exit(2)
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    lines = [line for line in str(error).splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):  # a config file's own exception
      cause = lines[-1].split(": ", 1)[-1]
      sys.stderr.write(f"error: {lines[0].split(': Error whilst')[0]}: {cause}\n")
    else:
      sys.stderr.write(f"error: {' '.join(lines)}\n")
    sys.exit(2)
  except (AttributeError, KeyError, TypeError, ValueError) as error:
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    files = [a.split("=", 1)[1].split(":")[0] for a in argv[1:] if a.startswith("--config=")]
    inner = error
    while inner.args and isinstance(inner.args[0], BaseException):  # AttributeError(KeyError(..))
      inner = inner.args[0]
    message = str(inner.args[0]) if inner.args else str(inner)  # KeyError's str() is a repr
    reason = message.strip("\"' ")
    if isinstance(error, (AttributeError, KeyError)):
      field, *hint = message.splitlines()
      reason = f"the config has no field '{field.strip(chr(34) + chr(39) + ' ')}'"
      reason += f" ({hint[0].strip()})" if hint else ""
    source = files[0] if files else "the config file"
    sys.stderr.write(f"error: invalid config override {' '.join(overrides)}: {reason}. Fields must "
                     f"exist in {source} (or the defaults it builds on) and keep their type.\n")
    sys.exit(2)


def require_writable(path: str | pathlib.Path, flag: str) -> pathlib.Path:
  """Create `path` if needed and check a file can be written in it, before any work is done.

  Raises:
    ValueError naming the flag, for a directory that cannot be created or written.
  """
  path = pathlib.Path(path).expanduser()
  try:
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_"):
      pass
  except OSError as error:
    raise ValueError(f"{flag}={path}: cannot write there ({error.strerror or error}); choose a "
                     "directory you can write to") from None
  return path


def define_run_flags() -> None:
  """--pretrained, or --official_dir and --config: sample/evaluate a shipped model or the
  official AniFaceGAN weights instead of a training workdir."""
  from ml_collections import config_flags
  flags.DEFINE_string("pretrained", "", "Use a shipped model ('synthfaces') or a folder written "
                      "by `python -m anifacegan_jax.pretrained` instead of a checkpoint in "
                      "--workdir, which then only receives the outputs.")
  flags.DEFINE_string("official_dir", "", "Use the official AniFaceGAN weights from this release "
                      "root (checkpoints/, pretrained_vaes/) instead of a checkpoint in "
                      "--workdir, which then only receives the outputs; needs --config.")
  config_flags.DEFINE_config_file("config", None, "With --official_dir: the sampling settings "
                                  "(resolution, camera prior, ψ, dataset), e.g. configs/ffhq.py.")


def given_run():
  """The `experiment.Run` of --pretrained or of --official_dir/--config; None without them (the
  caller then restores --workdir's checkpoint)."""
  from anifacegan_jax import experiment
  FLAGS = flags.FLAGS
  if FLAGS.pretrained and FLAGS.official_dir:
    raise ValueError("--pretrained and --official_dir both given: use one")
  if not FLAGS.official_dir and FLAGS.config is not None:
    raise ValueError("--config is only used with --official_dir (a run's own config is in its "
                     "checkpoints, a shipped model's in its folder)")
  if FLAGS.pretrained:
    if FLAGS.step is not None:
      raise ValueError("--step selects a checkpoint in --workdir; a --pretrained model has one")
    return experiment.load_pretrained(FLAGS.pretrained)
  if not FLAGS.official_dir:
    return None
  if FLAGS.config is None:
    raise ValueError("--official_dir needs --config (e.g. --config=configs/ffhq.py) for the "
                     "resolution, camera prior and ψ")
  return experiment.official_run(FLAGS.official_dir, FLAGS.config)


def _quiet_library_logs() -> None:
  """Orbax and tfds log every checkpoint and read at INFO/WARNING; keep the run's progress readable."""
  noisy = ("/orbax/", "/tensorstore/", "/tensorflow_datasets/")

  class Filter:
    def filter(self, record) -> bool:
      return record.levelno >= py_logging.ERROR or not any(n in record.pathname for n in noisy)

  logging.get_absl_logger().addFilter(Filter())  # every absl.logging call goes through it


def default_cache_dir() -> pathlib.Path:
  """$XDG_CACHE_HOME/anifacegan_jax/xla (~/.cache/anifacegan_jax/xla)."""
  root = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(root) / "anifacegan_jax" / "xla"


def enable_compilation_cache(directory: str) -> pathlib.Path | None:
  """Turn on JAX's persistent compilation cache in `directory` ('' = $JAX_COMPILATION_CACHE_DIR,
  else `default_cache_dir()`; 'none' = off). A directory that cannot be written only costs the
  cache: a warning, and the run goes on compiling as usual. Returns the directory in use."""
  if directory.strip().lower() in ("none", "off"):
    return None
  path = pathlib.Path(directory or os.environ.get("JAX_COMPILATION_CACHE_DIR")
                      or default_cache_dir()).expanduser()
  try:
    require_writable(path, "--compilation_cache")
  except ValueError as error:
    logging.warning("%s; running without the compilation cache", error)
    return None
  import jax
  jax.config.update("jax_compilation_cache_dir", str(path))
  return path


def run(main: Callable[[list[str]], None]) -> None:
  """app.run(main) with clear config-override errors and one-line user errors."""
  def wrapped(argv):
    from anifacegan_jax import distributed
    _quiet_library_logs()
    try:
      enable_compilation_cache(flags.FLAGS.compilation_cache)
      main(argv)
    except USER_ERRORS as error:
      sys.stderr.write(f"{'stopped' if isinstance(error, Interrupted) else 'error'}: {error}\n")
      code = getattr(error, "exit_code", 2)
      if distributed.started():
        distributed.exit_now(code)
      sys.exit(code)
    except BaseException:
      if not distributed.started():
        raise
      traceback.print_exc()  # then leave without JAX's shutdown barrier: the others stop too
      distributed.exit_now(1)

  app.run(wrapped, flags_parser=parse_flags)
