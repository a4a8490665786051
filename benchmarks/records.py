"""The JSON record every benchmark script ends with."""

from __future__ import annotations

import json
import pathlib


def write_record(path: str | pathlib.Path, record: dict) -> pathlib.Path:
  """`record` as indented JSON at `path` (its folder made if missing)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(record, indent=1) + "\n")
  return path
