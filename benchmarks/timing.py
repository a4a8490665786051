"""Compile time and steady run time of a jitted function, measured apart: a user waits for both."""

from __future__ import annotations

import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp


def compile_and_time(fn, *args, repeats: int) -> tuple[float, float]:
  """(compile s, median s per call) of `fn` (a `jax.jit` / `jax.pmap` function) on `args`.

  Compilation is timed ahead of time (`fn.lower(*args).compile()`, tracing included); the
  compiled function then runs once untimed (first-call allocations) and `repeats` times, each
  call waited for with `block_until_ready`.
  """
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(max(repeats, 1)):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return compile_s, statistics.median(times)


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
  """GFLOP/s of a jitted float32 `size`² matmul on the default device (median of `repeats`): the
  rate the generator's MLPs, all matmuls, could at best run at."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
  _, seconds = compile_and_time(jax.jit(jnp.dot), a, b, repeats=repeats)
  return 2.0 * size**3 / seconds / 1e9


def machine() -> dict:
  """Software and machine fields of a timing record."""
  import jaxlib
  return dict(jax=jax.__version__, jaxlib=jaxlib.__version__, device=jax.devices()[0].device_kind, backend=jax.default_backend(),
              cpu_count=os.cpu_count(), python=platform.python_version(),
              date=time.strftime("%Y-%m-%d"))
