"""The JSON record every benchmark script ends with."""

from __future__ import annotations

import json
import pathlib
import platform
import time

import jax


def write_record(path: str | pathlib.Path, record: dict) -> pathlib.Path:
  """`record` as indented JSON at `path` (its folder made if missing)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(record, indent=1) + "\n")
  return path


def header(args, run, **extra) -> dict:
  """The fields every model benchmark's record opens with: the model, its step, the arguments and
  the software and machine it ran on."""
  return dict(pretrained=str(args.pretrained), step=run.step, args=vars(args), **extra,
              jax=jax.__version__, device=jax.devices()[0].device_kind,
              python=platform.python_version(), date=time.strftime("%Y-%m-%d"))
