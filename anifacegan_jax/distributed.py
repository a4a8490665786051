"""JAX's multi-process runtime: start it from flags or the environment, and per-process helpers.

Training scales past one machine by running the same command once per host (or per GPU group):
every process drives its local devices, `jax.pmap` collectives span all processes, each process
reads its own shard of the data, process 0 alone writes summaries, and Orbax writes checkpoints
cooperatively. `initialize` picks the settings from, in order:

  1. explicit arguments (the `--coordinator_address`, `--num_processes`, `--process_id` flags);
  2. the environment: JAX_COORDINATOR_ADDRESS (host:port), JAX_NUM_PROCESSES, JAX_PROCESS_ID;
  3. a cluster JAX detects itself: SLURM (`srun` with several tasks) or a Cloud TPU pod slice.

Nothing is started for a single process. On CPU the collectives run over gloo (TCP). A process
that dies stops sending heartbeats; the others then abort within `heartbeat_timeout_seconds`
("Terminating process because the JAX distributed service detected fatal errors ... another task
died") instead of waiting forever in a collective.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Mapping, TypeVar

import jax
from absl import logging

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
MODES = ("auto", "on", "off")
_started = False  # set by `initialize`


T = TypeVar("T")


class DistributedConfigError(ValueError):
  """The multi-process settings are incomplete or inconsistent."""


@dataclasses.dataclass(frozen=True)
class Settings:
  """What `initialize` starts: explicit addresses, or auto-detection of a cluster (all None)."""

  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None

  @property
  def explicit(self) -> bool:
    return self.coordinator_address is not None


def _int(value: str | int | None, name: str) -> int | None:
  if value is None or value == "":
    return None
  try:
    return int(value)
  except (TypeError, ValueError):
    raise DistributedConfigError(f"{name} must be an integer, got {value!r}") from None


def detected_cluster(env: Mapping[str, str]) -> str | None:
  """'slurm' or 'tpu' when the environment is a multi-process job JAX configures itself."""
  if (_int(env.get("SLURM_NTASKS") or env.get("SLURM_NPROCS"), "SLURM_NTASKS") or 0) > 1:
    return "slurm"
  hosts = env.get("TPU_WORKER_HOSTNAMES", "")
  if len([h for h in hosts.split(",") if h.strip()]) > 1:
    return "tpu"
  return None


def resolve(mode: str = "auto", coordinator_address: str | None = None,
            num_processes: int | None = None, process_id: int | None = None,
            env: Mapping[str, str] | None = None) -> Settings | None:
  """The settings to start with, or None for a single process.

  Args:
    mode: 'auto' (start when addresses are given or a SLURM / TPU pod job is detected), 'on'
      (always; without addresses JAX detects the cluster itself or fails), 'off' (never).
    coordinator_address, num_processes, process_id: explicit settings (flags); missing ones are
      read from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID.
    env: the environment (default os.environ).
  """
  if mode not in MODES:
    raise DistributedConfigError(f"distributed mode must be one of {MODES}, got {mode!r}")
  if mode == "off":
    return None
  env = os.environ if env is None else env
  address = coordinator_address or env.get(ENV_COORDINATOR) or None
  count = num_processes if num_processes is not None else _int(env.get(ENV_NUM_PROCESSES),
                                                                ENV_NUM_PROCESSES)
  index = process_id if process_id is not None else _int(env.get(ENV_PROCESS_ID), ENV_PROCESS_ID)
  if address is not None:
    if count is None or index is None:
      raise DistributedConfigError(
          f"coordinator address {address} given but not the number of processes and this "
          f"process's id: set --num_processes/--process_id (or {ENV_NUM_PROCESSES}/"
          f"{ENV_PROCESS_ID})")
    if count < 1 or not 0 <= index < count:
      raise DistributedConfigError(f"process id {index} must be in [0, num_processes={count})")
    if ":" not in address:
      raise DistributedConfigError(f"coordinator address must be host:port, got {address!r}")
    return Settings(address, count, index)
  if count is not None or index is not None:
    raise DistributedConfigError(
        f"the number of processes / process id are set but no coordinator address: set "
        f"--coordinator_address (or {ENV_COORDINATOR}) to host:port of process 0")
  if mode == "on" or detected_cluster(env) is not None:
    return Settings()  # jax.distributed finds the cluster (SLURM, TPU pod, ...) or says why not
  return None


def initialize(mode: str = "auto", coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None, *,
               heartbeat_timeout_seconds: int = 100, initialization_timeout: int = 300,
               cpu_collectives: str = "gloo", env: Mapping[str, str] | None = None,
               start: Callable[..., None] | None = None) -> bool:
  """Start jax.distributed when `resolve` says so (before any other JAX call); True if started.

  `heartbeat_timeout_seconds` bounds how long the others wait for a dead process;
  `initialization_timeout` how long the processes wait for each other at start-up.
  `start` replaces jax.distributed.initialize (tests).
  """
  settings = resolve(mode, coordinator_address, num_processes, process_id, env)
  if settings is None:
    return False
  if cpu_collectives:  # no effect on GPU/TPU; CPU devices need it for cross-process collectives
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  global _started
  _started = start is None
  start = start or jax.distributed.initialize
  start(coordinator_address=settings.coordinator_address,
        num_processes=settings.num_processes, process_id=settings.process_id,
        heartbeat_timeout_seconds=int(heartbeat_timeout_seconds),
        initialization_timeout=int(initialization_timeout))
  return True


def started() -> bool:
  """jax.distributed was started by `initialize` in this process."""
  return _started


def exit_now(code: int) -> None:
  """Leave at once: a process of a multi-process job that fails must not wait in JAX's shutdown
  barrier (up to 5 minutes) for peers that wait for it; they stop on the missed heartbeats."""
  import sys
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


def describe() -> str:
  """One line: this process, the process count and the devices (global and local)."""
  local = jax.local_devices()
  return (f"process {jax.process_index()}/{jax.process_count()}: {len(local)} local "
          f"{local[0].platform} devices of {jax.device_count()}")


def barrier(name: str) -> None:
  """Wait until every process reaches `name` (a no-op for one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def first_process_then_others(fn: Callable[[], T], name: str) -> T:
  """Run `fn` on process 0, then (after a barrier) on the others, and return its result: e.g.
  preparing a dataset on a shared disk once, while hosts with local disks still prepare their own
  copy. Build objects that read the disk inside `fn`, so the others see what process 0 wrote."""
  if jax.process_count() == 1:
    return fn()
  result = None
  if jax.process_index() == 0:
    logging.info("%s on process 0 first", name)
    result = fn()
  barrier(name)
  if jax.process_index() != 0:
    result = fn()
  return result
