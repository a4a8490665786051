"""One process of the multi-process test (tests/distributed_test.py): 4 CPU devices per process.

  python tests/multiprocess_worker.py --process_id=0 --num_processes=2 --port=P --out=DIR

Starts jax.distributed through `anifacegan_jax.distributed`, builds the tiny GAN of
train_step_test from key 0, runs `--steps` pmapped train steps on its slice of a fixed global
batch (devices [4k, 4k + 4) of 8), saves the state with Orbax into DIR/checkpoints (all processes
together) and writes its parameters to DIR/params_<k>.npz. `--die_at_step=N` makes process 1 exit
abruptly before step N, to check that the others stop instead of hanging.
"""

import argparse
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

LOCAL_DEVICES = 4


def tiny_setup(num_devices):
  """Models, optimizers, the initial state and the global batch (num_devices, 2, 8, 8, 3)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from anifacegan_jax import train_step as ts
  from anifacegan_jax.models.discriminator import Discriminator
  from anifacegan_jax.models.generator import AnimatableGenerator
  from anifacegan_jax.types import Batch

  generator = AnimatableGenerator(radiance_hidden=32, manifold_hidden=32, deform_hidden=32,
                                  num_samples=16, num_levels=6)
  discriminator = Discriminator(8)
  # Plain SGD: Adam's first step is lr·sign(g), which turns the float noise of different
  # all-reduce orders (in-process vs gloo) on near-zero gradients into ±lr differences.
  tx = optax.chain(optax.clip_by_global_norm(0.3), optax.sgd(1e-3))
  g_tx, d_tx = tx, tx
  state = ts.create_state(jax.random.key(0), generator, discriminator, g_tx, d_tx)
  rng = np.random.default_rng(0)
  batch = Batch(
      image=jnp.asarray(rng.uniform(-1, 1, (num_devices, 2, 8, 8, 3)), jnp.float32),
      pose=jnp.asarray(np.pi / 2 + rng.normal(0, 0.1, (num_devices, 2, 2)), jnp.float32),
      coefficients=jnp.zeros((num_devices, 2, 257)),
      landmarks=jnp.zeros((num_devices, 2, 68, 2)))
  from anifacegan_jax import curriculum
  from configs import default
  cfg = curriculum.step_config(default.get_config(), resolution=8, per_device_batch=2,
                               batch_split=2, chunk_size=64, chamfer_weight=0.0,
                               deform_weight=0.0, reg_weight=0.0, smooth_weight=0.0)
  p_step = ts.make_train_step(generator, discriminator, g_tx, d_tx, cfg)
  return state, batch, p_step


def run_steps(state, batch, p_step, steps, before_step=None):
  """`steps` iterations from `state` on the (local devices, ...) batch; returns the host state."""
  import jax
  from anifacegan_jax import train_step as ts
  replicated = ts.replicate(state)
  key = ts.replicate(jax.random.key(1))
  for step in range(steps):
    if before_step is not None:
      before_step(step)
    replicated, _ = p_step(replicated, batch, key)
  return ts.unreplicate(replicated)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--process_id", type=int, required=True)
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--port", type=int, required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--die_at_step", type=int, default=-1)
  parser.add_argument("--heartbeat_timeout", type=int, default=100)
  args = parser.parse_args()

  # Before JAX starts (importing this module from a test must not change the test's devices).
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={LOCAL_DEVICES}"
  os.environ["JAX_PLATFORMS"] = "cpu"
  from anifacegan_jax import distributed
  distributed.initialize("on", f"127.0.0.1:{args.port}", args.num_processes, args.process_id,
                         heartbeat_timeout_seconds=args.heartbeat_timeout,
                         initialization_timeout=120)
  import jax
  import ml_collections
  import numpy as np
  from anifacegan_jax import checkpointing
  print(distributed.describe(), flush=True)
  assert jax.local_device_count() == LOCAL_DEVICES, jax.local_devices()

  # Dataset preparation order: process 0 writes first, the others find its file after the barrier.
  marker = pathlib.Path(args.out) / "prepared.txt"

  def prepare():
    seen = marker.read_text() if marker.exists() else "nothing"
    if args.process_id == 0:
      marker.write_text("written by process 0")
    return seen

  seen = distributed.first_process_then_others(prepare, "prepare")
  print(f"process {args.process_id} saw {seen}", flush=True)

  state, batch, p_step = tiny_setup(LOCAL_DEVICES * args.num_processes)
  start = args.process_id * LOCAL_DEVICES
  local = jax.tree_util.tree_map(lambda x: x[start:start + LOCAL_DEVICES], batch)

  def before_step(step):
    if step == args.die_at_step and args.process_id == 1:
      print(f"process 1 exits abruptly before step {step}", flush=True)
      os._exit(3)
    print(f"process {args.process_id}: step {step}", flush=True)

  host = run_steps(state, local, p_step, args.steps, before_step)
  out = pathlib.Path(args.out)
  flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(host.g_params)[0]}
  np.savez(out / f"params_{args.process_id}.npz", **flat)
  manager = checkpointing.create_manager(out, async_save=False)
  checkpointing.save(manager, args.steps, host, ml_collections.ConfigDict({"test": 1}))
  manager.wait_until_finished()
  distributed.barrier("worker done")
  print(f"process {args.process_id}: done", flush=True)


if __name__ == "__main__":
  main()
