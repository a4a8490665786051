"""Test setup: 8 fake CPU devices (set before jax is imported) and the shared reference data."""

import atexit
import collections
import os
import pathlib
import re
import shutil
import tempfile
import zlib

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The end-to-end tests compile the same tiny training step in several runs (and subprocesses,
# which inherit the environment): a persistent compilation cache per test session makes that
# once. The process that makes it (pytest, or with -n its controller, whose environment the
# workers inherit) removes it at exit.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="anifacegan_jax_test_cache_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.io  # noqa: E402
from PIL import Image  # noqa: E402

from configs import default as default_config  # noqa: E402

REFERENCE_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "reference"


# The slowest files, slowest first (end-to-end runs and compiled training steps). CI runs the
# suite in two processes that take whole files (`-n 2 --dist loadfile --no-loadscope-reorder`,
# in the order collected): started first, a long file cannot be left running alone at the end.
SLOWEST_FIRST = ("main_test.py", "training_test.py", "train_step_test.py", "reliability_test.py",
                 "generator_test.py", "distributed_test.py", "pretrained_test.py",
                 "inversion_test.py", "recon_test.py", "warmup_test.py", "control_test.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest in order


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """tfds data_dir of the end-to-end tests (the tiny SynthFaces set is prepared on first use)."""
  return tmp_path_factory.mktemp("tfds")


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


# configs/default.py's camera pose prior, for the functions that take one.
POSE_PRIOR = default_config.get_config().camera.to_dict()

IMITATION_OFF = dict(chamfer_weight=0.0, deform_weight=0.0, reg_weight=0.0, smooth_weight=0.0,
                     landmark_weight=0.0)


def step_config(**fields):
  """Step settings of configs/default.py with every imitation term off, then `fields`."""
  from anifacegan_jax import curriculum
  return curriculum.step_config(default_config.get_config(), **{**IMITATION_OFF, **fields})


def save_recon_run(workdir, face_model="", random_head=False):
  """An untrained tiny reconstruction network saved as a `train_recon` workdir checkpoint; its
  zero-initialised output layers are made random with `random_head` (outputs that vary)."""
  import jax
  from anifacegan_jax import checkpointing
  from anifacegan_jax import recon_training as rt
  from configs import recon as recon_config
  recon = recon_config.get_config("tiny")
  recon.face_model = face_model
  model, tx = rt.build_model(recon), rt.build_optimizer(recon)
  state = rt.create_state(jax.random.key(0), model, tx)
  if random_head:
    params = dict(state.params)
    for i, name in enumerate(n for n in params if n.startswith("final_layers_")):
      kernel = params[name]["kernel"]
      params[name] = {**params[name], "kernel": 0.3 * jax.random.normal(
          jax.random.key(10 + i), kernel.shape, kernel.dtype)}
    state = state.replace(params=params)
  manager = checkpointing.create_manager(workdir, async_save=False)
  checkpointing.save(manager, 3, state, recon)
  manager.wait_until_finished()
  return model, state


# --- FID Inception variables without the real weights ---------------------------------------

def random_inception_variables():
  """FIDInception variables with He-normal kernels and BN statistics near the identity."""
  import jax
  import jax.numpy as jnp
  from anifacegan_jax.metrics import inception
  shapes = jax.eval_shape(inception.FIDInception(preprocess="none").init, jax.random.key(0),
                          jnp.zeros((1, 75, 75, 3)))
  rng = np.random.default_rng(8)

  def draw(path, s):
    if path[-1].key == "kernel":
      return (rng.normal(size=s.shape) * np.sqrt(2 / np.prod(s.shape[:3]))).astype(np.float32)
    low, high = (0.5, 1.5) if path[-1].key in ("scale", "var") else (-0.1, 0.1)
    return rng.uniform(low, high, s.shape).astype(np.float32)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def inception_layers(variables):
  """Torchvision layer name -> (params, batch_stats) of one BasicConv2d."""
  import jax
  flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
  names = sorted({".".join(k.key for k in path[:-2]) for path, _ in flat})
  get = lambda tree, name: [tree := tree[key] for key in name.split(".")][-1]  # noqa: E731
  return {name: (get(variables["params"], name), get(variables["batch_stats"], name))
          for name in names}


def inception_pth_state_dict(variables):
  """pytorch-fid's naming (torchvision Inception3 with BasicConv2d conv/bn), plus fc and the BN
  step counters it also holds."""
  sd = collections.OrderedDict()
  for name, (p, s) in inception_layers(variables).items():
    sd[f"{name}.conv.weight"] = np.asarray(p["conv"]["kernel"]).transpose(3, 2, 0, 1).copy()
    sd[f"{name}.bn.weight"] = np.asarray(p["bn"]["scale"])
    sd[f"{name}.bn.bias"] = np.asarray(p["bn"]["bias"])
    sd[f"{name}.bn.running_mean"] = np.asarray(s["bn"]["mean"])
    sd[f"{name}.bn.running_var"] = np.asarray(s["bn"]["var"])
    sd[f"{name}.bn.num_batches_tracked"] = np.zeros((), np.int64)
  sd["fc.weight"], sd["fc.bias"] = np.zeros((1008, 2048), np.float32), np.zeros(1008, np.float32)
  sd._metadata = collections.OrderedDict(fc=dict(version=1))  # as torch's state_dict() carries
  return sd
