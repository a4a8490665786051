"""Hostile and damaged inputs: nothing read from a file runs code, and each gives one clear line."""

import os
import pickle

import jax
import numpy as np
import pytest

from anifacegan_jax import torch_save, torch_zip
from anifacegan_jax.metrics import fid_weights

MAGIC, PROTOCOL = 0x1950A86A20F9469CFC6C, 1001


class _RunsCode:
  """Unpickling this calls os.system: what a crafted checkpoint would do."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


def _legacy_file(path, records):
  with open(path, "wb") as f:
    for record in records:
      pickle.dump(record, f, protocol=2)
  return path


@pytest.mark.parametrize("where", ["magic", "sys_info", "object", "storage_keys"])
def test_legacy_torch_file_runs_no_code(tmp_path, where):
  marker = tmp_path / "ran"
  evil = _RunsCode(marker)
  records = {"magic": [evil], "sys_info": [MAGIC, PROTOCOL, evil],
             "object": [MAGIC, PROTOCOL, dict(little_endian=True), evil],
             "storage_keys": [MAGIC, PROTOCOL, dict(little_endian=True), {}, evil]}[where]
  path = _legacy_file(tmp_path / "weights.pth", records)
  with pytest.raises(torch_zip.TorchZipError, match="weights.pth") as error:
    torch_zip.load_legacy(path)
  assert len(str(error.value).splitlines()) == 1
  with pytest.raises(ValueError, match="weights.pth"):  # the path `evaluate --fid_weights` takes
    fid_weights.read_weights(path)
  assert not marker.exists()


def test_zip_torch_file_runs_no_code(tmp_path):
  marker = tmp_path / "ran"
  torch_save.save({"w": np.zeros(2, np.float32)}, tmp_path / "weights.pth")
  import zipfile
  with zipfile.ZipFile(tmp_path / "weights.pth") as z:
    records = {n: z.read(n) for n in z.namelist()}
  name = next(n for n in records if n.endswith("data.pkl"))
  records[name] = pickle.dumps({"w": _RunsCode(marker)}, protocol=2)
  with zipfile.ZipFile(tmp_path / "evil.pth", "w") as z:
    for n, data in records.items():
      z.writestr(n, data)
  loaded = torch_zip.load(tmp_path / "evil.pth")  # an inert stand-in, never a call
  assert isinstance(loaded["w"], torch_zip.PickledObject)
  assert not marker.exists()


# --- checkpoints -------------------------------------------------------------------------------

from anifacegan_jax import checkpointing, curriculum  # noqa: E402
from configs import synthface  # noqa: E402


def _state(value):  # random data: Orbax compresses, so a constant array leaves no bytes to damage
  w = np.random.default_rng(value).normal(size=(64, 64)).astype(np.float32)
  return {"w": w, "step": np.array(value, np.int32)}


def _saved_run(workdir, steps=(1, 2, 3)):
  manager = checkpointing.create_manager(workdir, max_to_keep=5, async_save=False)
  for step in steps:
    checkpointing.save(manager, step, _state(step), {"seed": 0})
  manager.wait_until_finished()
  return workdir


def _data_files(workdir, step):
  files = [p for p in (checkpointing.checkpoint_dir(workdir) / str(step) / "state").rglob("*")
           if p.is_file() and p.stat().st_size > 1000]
  assert files, "no data file to damage"
  return files


def test_flipped_bytes_are_caught_and_resume_falls_back(tmp_path, caplog):
  _saved_run(tmp_path)
  for path in _data_files(tmp_path, 3):
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
      data[i] ^= 0xFF
    path.write_bytes(bytes(data))
  target = jax.eval_shape(lambda: _state(0))
  with pytest.raises(checkpointing.CheckpointCorruptError, match="checkpoints/3") as error:
    checkpointing.restore_state(tmp_path, target, 3)
  assert len(str(error.value).splitlines()) == 1
  with caplog.at_level("WARNING"):
    state = checkpointing.restore_newest_good(tmp_path, target)
  assert int(state["step"]) == 2
  np.testing.assert_array_equal(state["w"], _state(2)["w"])
  assert "resuming from step 2" in caplog.text
  assert (checkpointing.checkpoint_dir(tmp_path) / "3").is_dir()  # kept for inspection


def test_named_fields_are_read_alone_and_checked(tmp_path):
  _saved_run(tmp_path)
  target = {"w": jax.eval_shape(lambda: _state(0))["w"]}
  fields = checkpointing.restore_fields(tmp_path, target, 2)
  assert set(fields) == {"w"}
  np.testing.assert_array_equal(fields["w"], _state(2)["w"])
  for path in _data_files(tmp_path, 3):
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
      data[i] ^= 0xFF
    path.write_bytes(bytes(data))
  with pytest.raises(checkpointing.CheckpointCorruptError, match="checkpoints/3") as error:
    checkpointing.restore_fields(tmp_path, target, 3)
  assert len(str(error.value).splitlines()) == 1
  with pytest.raises(checkpointing.CheckpointMismatchError, match=r"does not hold \['nope'\]"):
    checkpointing.restore_fields(tmp_path, {"nope": target["w"]}, 2)


def test_truncated_checkpoint_falls_back_and_all_damaged_is_one_line(tmp_path):
  _saved_run(tmp_path, steps=(1, 2))
  for step in (2, 1):
    for path in _data_files(tmp_path, step):
      path.write_bytes(path.read_bytes()[:100])
    if step == 2:
      target = jax.eval_shape(lambda: _state(0))
      assert int(checkpointing.restore_newest_good(tmp_path, target)["step"]) == 1
  with pytest.raises(checkpointing.CheckpointCorruptError, match="no intact checkpoint") as error:
    checkpointing.restore_newest_good(tmp_path, jax.eval_shape(lambda: _state(0)))
  assert len(str(error.value).splitlines()) == 1


def test_a_nonfinite_state_is_never_saved(tmp_path):
  manager = checkpointing.create_manager(tmp_path, async_save=False)
  bad = _state(1)
  bad["w"][3, 4] = np.nan
  with pytest.raises(checkpointing.NonFiniteStateError, match=r"state\['w'\]"):
    checkpointing.save(manager, 1, bad, {"seed": 0})
  manager.wait_until_finished()
  assert checkpointing.latest_step(tmp_path) is None


def test_keeping_zero_checkpoints_is_refused(tmp_path):
  _saved_run(tmp_path)
  with pytest.raises(ValueError, match="must be >= 1"):
    checkpointing.create_manager(tmp_path, max_to_keep=0)
  config = synthface.get_config("tiny")
  config.keep_checkpoints = 0
  with pytest.raises(curriculum.ConfigError, match="config.keep_checkpoints must be >= 1"):
    curriculum.validate(config)
  assert checkpointing.saved_steps(tmp_path) == [1, 2, 3]


@pytest.mark.parametrize("field,value", [("log_every", 0), ("checkpoint_every", 0),
                                         ("num_steps", 0), ("max_nonfinite_steps", -1)])
def test_loop_fields_are_checked_before_compiling(field, value):
  config = synthface.get_config("tiny")
  config[field] = value
  with pytest.raises(curriculum.ConfigError, match=f"config.{field}"):
    curriculum.validate(config)


def test_zero_batch_split_is_a_config_error():
  config = synthface.get_config("tiny")
  config.stages[0].batch_split = 0
  with pytest.raises(curriculum.ConfigError, match=r"stages\[0\].batch_split must be >= 1"):
    curriculum.validate(config)


def test_truncated_metadata_and_config_name_the_checkpoint(tmp_path):
  _saved_run(tmp_path)
  where = checkpointing.checkpoint_dir(tmp_path)
  (where / "3" / "state" / "_METADATA").write_text('{"tree_metadata": {"')
  (where / "2" / "config" / "metadata").write_text('{"se')
  target = jax.eval_shape(lambda: _state(0))
  with pytest.raises(checkpointing.CheckpointCorruptError, match="checkpoints/3: cannot be read"):
    checkpointing.restore_state(tmp_path, target, 3)
  with pytest.raises(checkpointing.CheckpointCorruptError, match="checkpoints/2/config"):
    checkpointing.restore_config(tmp_path, 2)
  assert int(checkpointing.restore_newest_good(tmp_path, target)["step"]) == 2


# --- signals ------------------------------------------------------------------------------------

import pathlib  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from anifacegan_jax import cli  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_a_second_ctrl_c_stops_at_once():
  stop = cli.SignalStop()
  stop.handle(signal.SIGINT)
  assert stop.requested == "SIGINT"
  with pytest.raises(KeyboardInterrupt):
    stop.handle(signal.SIGINT)


def _train_until_running(workdir, data_dir):
  command = [sys.executable, "-m", "anifacegan_jax.main", "--config=configs/synthface.py:tiny",
             f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}",
             "--config.dataset.num_train=64", "--config.num_steps=100000",
             "--config.checkpoint_every=100000", "--config.log_every=1",
             "--config.snapshot_every=100000"]
  before = set(workdir.glob("events.out.tfevents.*"))  # a resumed run writes a new file
  process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
  deadline = time.time() + 300
  while sum(p.stat().st_size for p in set(workdir.glob("events.out.tfevents.*")) - before) < 2000:
    assert process.poll() is None, process.communicate()[1][-2000:]
    assert time.time() < deadline, "training did not start"
    time.sleep(0.2)
  return process


def test_sigterm_and_ctrl_c_save_the_current_step_and_exit_in_one_line(tmp_path, data_dir):
  from anifacegan_jax.data import datasets
  config = synthface.get_config("tiny")
  config.dataset.data_dir, config.dataset.num_train = str(data_dir), 64
  datasets.make_builder(config)  # prepared here, not in the subprocess
  stopped = []
  for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):  # the second run resumes
    process = _train_until_running(tmp_path, data_dir)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"stopped: {signal.Signals(signum).name} at step ")
    step = int(last.split(" at step ")[1].split(":")[0])
    assert checkpointing.latest_step(tmp_path) == step
    stopped.append(step)
  assert stopped[1] > stopped[0]  # resumed from the saved step, not from scratch


# --- damaged or wrong input files ---------------------------------------------------------------

from anifacegan_jax import animation, porting  # noqa: E402


def _deformation_state_dict():
  model = porting.official_generator()
  params = porting._expected_params(model)["deformation"]
  zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, np.float32), params)
  return porting.to_torch(zeros, porting.DEFORMATION_LAYOUT)


def test_torch_files_that_do_not_fit_give_one_line(tmp_path):
  state = _deformation_state_dict()
  torch_save.save(state, tmp_path / "dif.pth")
  assert porting.load_deformation(tmp_path / "dif.pth")  # the intact file loads
  data = (tmp_path / "dif.pth").read_bytes()
  (tmp_path / "truncated.pth").write_bytes(data[:len(data) // 2])
  key = next(iter(state))
  state[key] = state[key].copy()
  state[key].flat[0] = np.nan
  torch_save.save(state, tmp_path / "nan.pth")
  torch_save.save([np.zeros(3, np.float32)], tmp_path / "list.pth")
  for name, error, message in (("truncated.pth", torch_zip.NotAZipError, "truncated or damaged"),
                               ("nan.pth", torch_zip.TorchZipError, f"{key} holds NaN"),
                               ("list.pth", ValueError, "holds a list; expected a state_dict")):
    with pytest.raises(error, match=message) as raised:
      porting.load_deformation(tmp_path / name)
    assert str(tmp_path / name) in str(raised.value)
    assert len(str(raised.value).splitlines()) == 1


def test_driving_files_are_checked_and_named(tmp_path):
  angles = np.zeros((5, 3), np.float32)
  np.savez(tmp_path / "good.npz", exp=np.zeros((5, 64), np.float32), angles=angles)
  data = (tmp_path / "good.npz").read_bytes()
  (tmp_path / "truncated.npz").write_bytes(data[:len(data) // 2])
  angles[2, 1] = np.nan
  np.savez(tmp_path / "nan.npz", exp=np.zeros((5, 64), np.float32), angles=angles)
  assert len(animation.load_sequence(tmp_path / "good.npz").yaw) == 5
  for name, message in (("truncated.npz", "not a readable .npz"),
                        ("nan.npz", "angles has NaN or infinite values")):
    with pytest.raises(ValueError, match=message) as raised:
      animation.load_sequence(tmp_path / name)
    assert str(tmp_path / name) in str(raised.value)
  with pytest.raises(ValueError, match="truncated.npz: not a readable .npz"):
    animation.load_expression(str(tmp_path / "truncated.npz"))


def test_command_line_mistakes_give_one_line_before_any_work(tmp_path):
  (tmp_path / "file").write_text("")
  main = [sys.executable, "-m", "anifacegan_jax.main", f"--workdir={tmp_path / 'w'}"]
  cases = [
      (main + ["--config=configs/nosuch.py"], "no such config file configs/nosuch.py"),
      (main + ["--config=configs/synthface.py:tinyy"], "unknown synthface variant 'tinyy'"),
      (main + ["--config=configs/synthface.py:tiny", "--config.log_every=0"],
       "config.log_every must be >= 1"),
      (main + ["--config=configs/synthface.py:tiny", "--config.stages[0].batch_split=0"],
       "batch_split must be >= 1"),
      (main + ["--config=configs/synthface.py:tiny", "--config.keep_checkpoints=0"],
       "config.keep_checkpoints must be >= 1"),
      ([sys.executable, "-m", "anifacegan_jax.main", "--config=configs/synthface.py:tiny",
        f"--workdir={tmp_path / 'file' / 'w'}"], "cannot write there"),
      ([sys.executable, "-m", "anifacegan_jax.sample", "--pretrained=synthfaces",
        f"--workdir={tmp_path / 'file' / 'w'}"], "cannot write there"),
  ]
  processes = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for command, _ in cases]
  for process, (command, message) in zip(processes, cases):
    _, stderr = process.communicate(timeout=300)
    last = stderr.strip().splitlines()[-1]
    assert process.returncode == 2 and last.startswith("error: ") and message in last, (
        command, stderr[-1500:])
    assert "Traceback" not in stderr
  assert not (tmp_path / "w").exists() or not any((tmp_path / "w").rglob("*.tfevents*"))


def test_fid_weights_with_nan_are_refused(tmp_path):
  from conftest import inception_pth_state_dict, random_inception_variables
  state = inception_pth_state_dict(random_inception_variables())
  state["Mixed_5b.branch1x1.bn.running_var"] = np.full_like(
      state["Mixed_5b.branch1x1.bn.running_var"], np.nan)
  torch_save.save(state, tmp_path / "pt_inception.pth")
  with pytest.raises(fid_weights.FidWeightsError,
                     match="Mixed_5b.branch1x1.bn.running_var holds NaN") as error:
    fid_weights.load_fid_inception(tmp_path / "pt_inception.pth")
  assert "pt_inception.pth" in str(error.value)


def test_checkpoints_written_before_checksums_still_restore(tmp_path):
  import orbax.checkpoint as ocp
  options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
  old = ocp.CheckpointManager(checkpointing.checkpoint_dir(tmp_path), options=options,
                              item_names=("state", "config"))  # the layout before checksums
  old.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(_state(7)),
                                      config=ocp.args.JsonSave({"seed": 0})))
  old.wait_until_finished()
  state = checkpointing.restore_newest_good(tmp_path, jax.eval_shape(lambda: _state(0)))
  np.testing.assert_array_equal(state["w"], _state(7)["w"])
  assert checkpointing.restore_config(tmp_path)["seed"] == 0


def test_every_documented_module_command_exists():
  import importlib.util
  import re
  texts = [REPO / "README.md", REPO / "BENCHMARKS.md", *REPO.glob("anifacegan_jax/**/*.py"),
           *REPO.glob("configs/*.py"), *REPO.glob("benchmarks/*.py"), *REPO.glob("launch/*")]
  named = {m for path in texts for m in re.findall(r"python3? -m (anifacegan_jax[\w.]*)",
                                                   path.read_text())}
  assert "anifacegan_jax.main" in named and "anifacegan_jax.sample" in named
  missing = sorted(m for m in named if importlib.util.find_spec(m) is None)
  assert not missing, f"documented but missing: {missing}"
