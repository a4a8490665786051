"""Test setup: 8 fake CPU devices (set before jax is imported) and the shared reference data."""

import os
import pathlib
import re
import tempfile
import zlib

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The end-to-end tests compile the same tiny training step in several runs (and subprocesses,
# which inherit the environment): a per-session persistent compilation cache makes that once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      tempfile.mkdtemp(prefix="anifacegan_jax_test_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.io  # noqa: E402
from PIL import Image  # noqa: E402

REFERENCE_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> pathlib.Path:
  """../shared/reference beside the repository (the released checkpoints and coefficient files)."""
  if not REFERENCE_DIR.is_dir():
    pytest.skip(f"reference data not found at {REFERENCE_DIR}")
  return REFERENCE_DIR


def write_ffhq_example(manual, stem, size=96, angle=(0.1, 0.2, 0.0), lm=True):
  """Write images/<stem>.png and mats/<stem>.mat (Deep3DFaceRecon keys) into `manual`."""
  rng = np.random.default_rng(zlib.crc32(stem.encode()))
  (manual / "images").mkdir(parents=True, exist_ok=True)
  (manual / "mats").mkdir(parents=True, exist_ok=True)
  Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)).save(manual / "images" / f"{stem}.png")
  mat = dict(id=rng.normal(size=(1, 80)).astype(np.float32),
             exp=rng.normal(size=(1, 64)).astype(np.float32),
             tex=rng.normal(size=(1, 80)).astype(np.float32),
             angle=np.array([angle], np.float32), gamma=np.zeros((1, 27), np.float32),
             trans=np.array([[0.01, -0.15, -0.5]], np.float32))
  if lm:
    mat["lm68"] = np.tile(np.array([[111.5, 50.0]], np.float32), (68, 1))[None]
  scipy.io.savemat(manual / "mats" / f"{stem}.mat", mat)
  return mat


def official_keys(reference_dir, title):
  """Keys and shapes of one section of keys_shapes.txt, in file order."""
  lines = (reference_dir / "keys_shapes.txt").read_text().splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith(f"## {title}"))
  entries = []
  for line in lines[start + 1:]:
    if line.startswith("##"):
      break
    match = re.match(r"\s+(\S+)\s+\(([\d, ]*)\)", line)
    if match:
      shape = tuple(int(v) for v in match.group(2).replace(" ", "").split(",") if v)
      entries.append((match.group(1), shape))
  return entries


def save_recon_run(workdir, face_model=""):
  """An untrained tiny reconstruction network saved as a `train_recon` workdir checkpoint."""
  import jax
  from anifacegan_jax import checkpointing
  from anifacegan_jax.face3d import recon_training as rt
  from configs import recon as recon_config
  recon = recon_config.get_config("tiny")
  recon.face_model = face_model
  model, tx = rt.build_model(recon), rt.build_optimizer(recon)
  state = rt.create_state(jax.random.key(0), model, tx)
  manager = checkpointing.create_manager(workdir, async_save=False)
  checkpointing.save(manager, 3, state, recon)
  manager.wait_until_finished()
  return model, state
