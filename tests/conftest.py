"""Test setup: 8 fake CPU devices (set before jax is imported) and the shared reference data."""

import os
import pathlib

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REFERENCE_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> pathlib.Path:
  """../shared/reference beside the repository (the released checkpoints and coefficient files)."""
  if not REFERENCE_DIR.is_dir():
    pytest.skip(f"reference data not found at {REFERENCE_DIR}")
  return REFERENCE_DIR
