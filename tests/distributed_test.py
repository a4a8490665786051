"""Multi-process training on jax.distributed: 2 local CPU processes × 4 devices (gloo)."""

import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from anifacegan_jax import checkpointing, distributed

import multiprocess_worker as worker

WORKER = pathlib.Path(__file__).with_name("multiprocess_worker.py")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(process_id, port, out, *extra):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.Popen(
      [sys.executable, str(WORKER), f"--process_id={process_id}", f"--port={port}",
       f"--out={out}", *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)


def _flat(tree):
  return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_two_processes_match_one_process_with_eight_devices(tmp_path):
  port = _free_port()
  procs = [_start(k, port, tmp_path) for k in (0, 1)]
  logs = [p.communicate(timeout=540)[0] for p in procs]
  for k, (proc, log) in enumerate(zip(procs, logs)):
    assert proc.returncode == 0, f"process {k}:\n{log[-3000:]}"
    assert f"process {k}/2: 4 local cpu devices of 8" in log and f"process {k}: done" in log
  assert "process 0 saw nothing" in logs[0]  # it prepares first ...
  assert "process 1 saw written by process 0" in logs[1]  # ... the others after the barrier
  # The same two iterations in this process on its 8 devices, from the same state and batch.
  state, batch, p_step = worker.tiny_setup(jax.local_device_count())
  reference = worker.run_steps(state, batch, p_step, steps=2)
  expected = _flat(reference.g_params)
  moved = max(np.abs(expected[k] - np.asarray(v)).max() for k, v in _flat(state.g_params).items())
  assert moved > 1e-5  # the steps changed the generator far beyond the tolerance below
  for k in (0, 1):
    with np.load(tmp_path / f"params_{k}.npz") as got:
      assert set(got.files) == set(expected)
      for name in expected:  # gloo sums in another order than the in-process all-reduce
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-7, err_msg=name)
  # Both processes wrote one Orbax checkpoint together; it restores in a single process.
  assert checkpointing.latest_step(tmp_path) == 2
  target = jax.eval_shape(lambda: state)
  restored = checkpointing.restore_state(tmp_path, target)
  assert int(restored.step) == 2
  for name, value in _flat(restored.d_params).items():
    np.testing.assert_allclose(value, _flat(reference.d_params)[name], rtol=1e-5, atol=1e-7)


def test_a_dead_process_stops_the_other_instead_of_hanging(tmp_path):
  port = _free_port()
  extra = ("--die_at_step=0", "--heartbeat_timeout=5")
  procs = [_start(k, port, tmp_path, *extra) for k in (0, 1)]
  log1 = procs[1].communicate(timeout=300)[0]
  assert procs[1].returncode == 3 and "process 1 exits abruptly before step 0" in log1
  died = time.time()
  log0 = procs[0].communicate(timeout=120)[0]  # hangs forever without the heartbeat check
  assert time.time() - died < 60
  assert procs[0].returncode != 0
  assert "another task died" in log0 and "done" not in log0


def test_settings_from_flags_environment_and_clusters():
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
         "JAX_PROCESS_ID": "2"}
  assert distributed.resolve("auto", env=env) == distributed.Settings("10.0.0.1:1234", 4, 2)
  assert distributed.resolve("auto", process_id=3, env=env).process_id == 3  # flags win
  assert distributed.resolve("auto", env={}) is None
  assert distributed.resolve("off", env=env) is None
  slurm = distributed.resolve("auto", env={"SLURM_NTASKS": "16"})
  assert slurm == distributed.Settings() and not slurm.explicit  # JAX detects SLURM itself
  assert distributed.resolve("auto", env={"SLURM_NTASKS": "1"}) is None
  assert distributed.resolve("auto", env={"TPU_WORKER_HOSTNAMES": "a,b,c,d"}) is not None
  with pytest.raises(distributed.DistributedConfigError, match="not the number of processes"):
    distributed.resolve("auto", coordinator_address="h:1", env={})
  with pytest.raises(distributed.DistributedConfigError, match=r"process id 4 must be in \[0, "):
    distributed.resolve("auto", "h:1", 4, 4, env={})
  with pytest.raises(distributed.DistributedConfigError, match="must be host:port"):
    distributed.resolve("auto", "h", 2, 0, env={})
  with pytest.raises(distributed.DistributedConfigError, match="no coordinator address"):
    distributed.resolve("auto", env={"JAX_PROCESS_ID": "1"})
  with pytest.raises(distributed.DistributedConfigError, match="JAX_NUM_PROCESSES must be an int"):
    distributed.resolve("auto", env={"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "x"})
  assert distributed.resolve("on", env={}) == distributed.Settings()  # JAX detects or fails
  started = {}
  assert distributed.initialize("auto", "h:1", 2, 1, heartbeat_timeout_seconds=7, env={},
                                cpu_collectives="", start=lambda **kw: started.update(kw))
  assert started == dict(coordinator_address="h:1", num_processes=2, process_id=1,
                         heartbeat_timeout_seconds=7, initialization_timeout=300)
  assert not distributed.initialize("auto", env={}, start=lambda **kw: started.clear())
  assert started  # not called for a single process
