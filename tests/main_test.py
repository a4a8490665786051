"""End to end on the tiny SynthFaces config: train, resume (also after a kill), sample, CLI errors."""

import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

from anifacegan_jax import sampling, train
from configs import synthface

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


def _config(data_dir, num_steps, checkpoint_every=1):
  config = synthface.get_config("tiny")
  config.dataset.data_dir = str(data_dir)
  config.dataset.num_train = 64
  config.num_steps = num_steps
  config.checkpoint_every = checkpoint_every
  config.log_every = 1
  config.snapshot_every = 1000
  return config


def _assert_same_state(a, b):
  for tree in ("g_params", "d_params", "ema_params"):
    for x, y in zip(jax.tree_util.tree_leaves(getattr(a, tree)),
                    jax.tree_util.tree_leaves(getattr(b, tree))):
      np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp("straight")
  state = train.train_and_evaluate(_config(data_dir, 5), str(workdir))
  return workdir, state


def test_stopped_run_resumes_with_identical_results(tmp_path, data_dir, uninterrupted):
  _, reference = uninterrupted
  first = train.train_and_evaluate(_config(data_dir, 3), str(tmp_path))
  assert int(first.step) == 3
  resumed = train.train_and_evaluate(_config(data_dir, 5), str(tmp_path))
  assert int(resumed.step) == 5
  _assert_same_state(resumed, reference)
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir())[-1] == "5"
  assert list(tmp_path.glob("events.out.tfevents.*"))


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path, data_dir, uninterrupted):
  _, reference = uninterrupted
  command = [sys.executable, "-m", "anifacegan_jax.main", "--config=configs/synthface.py:tiny",
             f"--workdir={tmp_path}", f"--config.dataset.data_dir={data_dir}",
             "--config.dataset.num_train=64", "--config.num_steps=1000",
             "--config.checkpoint_every=1", "--config.snapshot_every=1000"]
  process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  try:
    while not (tmp_path / "checkpoints" / "2").is_dir():
      assert process.poll() is None and time.time() < deadline, "training did not checkpoint"
      time.sleep(0.2)
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait()
  resumed = train.train_and_evaluate(_config(data_dir, 5), str(tmp_path))
  assert int(resumed.step) == 5
  _assert_same_state(resumed, reference)


def test_sample_writes_a_grid_from_the_workdir(tmp_path, uninterrupted):
  workdir, _ = uninterrupted
  out = tmp_path / "grid.png"
  result = subprocess.run(
      [sys.executable, "-m", "anifacegan_jax.sample", f"--workdir={workdir}", f"--out={out}",
       "--num_identities=2", "--num_expressions=2", "--yaws=-0.3,0.3"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  grid = np.asarray(Image.open(out))
  assert grid.shape == (2 * 16, 4 * 16, 3) and grid.std() > 0
  run = sampling.load_run(workdir)
  again = sampling.render_grid(run, num_identities=2, num_expressions=2, yaws=(-0.3, 0.3))
  np.testing.assert_array_equal(grid, again)


def test_config_typo_and_missing_checkpoint_fail_clearly(tmp_path):
  typo = subprocess.run(
      [sys.executable, "-m", "anifacegan_jax.main", "--config=configs/synthface.py:tiny",
       f"--workdir={tmp_path}", "--config.batch_szie=4"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert typo.returncode == 2
  assert "the config has no field 'batch_szie'" in typo.stderr
  assert "Traceback" not in typo.stderr
  empty = subprocess.run([sys.executable, "-m", "anifacegan_jax.sample", f"--workdir={tmp_path}"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
  assert empty.returncode == 2 and "no checkpoint in" in empty.stderr
  assert "Traceback" not in empty.stderr


def test_training_stops_after_too_many_nonfinite_steps(tmp_path, data_dir):
  config = _config(data_dir, 6)
  config.optim.d_lr = float("nan")  # the first D update poisons D; later losses are NaN
  config.max_nonfinite_steps = 0
  with pytest.raises(FloatingPointError, match="non-finite losses or gradients"):
    train.train_and_evaluate(config, str(tmp_path))
  assert (tmp_path / "checkpoints").is_dir()  # the state at the stop is saved
