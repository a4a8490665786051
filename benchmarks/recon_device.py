"""The SynthFaces reconstruction network trained on a bare accelerator image (no tf/clu/configs).

  python benchmarks/recon_device.py --resolution=128 --num_train=20000 --num_steps=20000 \
      --batch_size=64 --workdir=$OUT/recon --out=$OUT/recon_device.json

Renders SynthFaces in-process with `--workers` processes (example i of a split is the same image
the tfds builder stores), trains `recon.ReconNet` (narrow ResNet-18 at the rendered resolution)
with the supervised loss of `recon_step` (the same step and loss as `train_recon`), evaluates
the held-out split every `--eval_every` steps (exp RMSE, 3D landmark error of landmarks 17-67 in
mm, the mean-face baseline, the id-only / exp-only error split), and saves an Orbax checkpoint in
`train_recon`'s layout: `recon_training.restore_recon(workdir)` and `--config.recon=workdir`
load it. Needs only jax, flax, optax, orbax, numpy. Acceptance of issue #5: exp RMSE < 0.3 and
landmark error < 2 mm on the held-out split.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from anifacegan_jax import checkpointing  # noqa: E402
from anifacegan_jax import recon_step as rs  # noqa: E402
from anifacegan_jax.metrics import coefficients as cm  # noqa: E402
from anifacegan_jax.models.recon import ReconNet  # noqa: E402
from anifacegan_jax.synthfaces import procedural, synthetic  # noqa: E402

def recon_config(args) -> dict:
  """The run as a `configs/recon.py`-shaped dict (what `restore_recon` reads back)."""
  return dict(
      seed=args.seed,
      dataset=dict(name="synth_faces", config=str(args.resolution), data_dir="",
                   num_train=args.num_train, num_test=args.num_test, shuffle_buffer=2048),
      face_model="",
      model=dict(kind="basic", stage_sizes=[2, 2, 2, 2], width=args.width,
                 input_size=args.resolution, stem_pool=not args.no_stem_pool),
      batch_size=args.batch_size, num_steps=args.num_steps,
      optim=dict(lr=args.lr, warmup_steps=args.warmup_steps, end_lr_factor=0.01, b1=0.9,
                 b2=0.999),
      loss=dict(id_weight=args.id_weight, exp_weight=10.0, angle_weight=10.0,
                landmark_weight=args.landmark_weight),
      eval_batch_size=250, log_every=100, eval_every=args.eval_every,
      checkpoint_every=args.eval_every, keep_checkpoints=2, async_checkpoints=False,
      max_nonfinite_steps=20)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--resolution", type=int, default=128)
  parser.add_argument("--num_train", type=int, default=20000)
  parser.add_argument("--num_test", type=int, default=1000)
  parser.add_argument("--num_steps", type=int, default=20000)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--width", type=int, default=32)
  parser.add_argument("--no_stem_pool", action="store_true",
                      help="drop the stem's max pool (4× compute, finer detail)")
  parser.add_argument("--lr", type=float, default=1.5e-3)
  parser.add_argument("--warmup_steps", type=int, default=500)
  parser.add_argument("--id_weight", type=float, default=0.3)
  parser.add_argument("--landmark_weight", type=float, default=3000.0)
  parser.add_argument("--eval_every", type=int, default=2000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workers", type=int, default=os.cpu_count())
  parser.add_argument("--max_seconds", type=float, default=float("inf"),
                      help="stop training (then evaluate and save) after this many seconds")
  args = parser.parse_args()
  config = recon_config(args)

  start = time.time()
  face_model = procedural.load_procedural()
  train = synthetic.generate_many("train", args.num_train, args.resolution, args.workers)
  test = synthetic.generate_many("test", args.num_test, args.resolution, args.workers)
  train_x, train_y = train["image"], train["coefficients"]
  test_x, test_y = test["image"], test["coefficients"]
  render_s = time.time() - start
  print(f"rendered {len(train_x)} + {len(test_x)} faces at {args.resolution}² in {render_s:.0f} s",
        flush=True)

  arrays = cm.landmark_arrays(face_model)
  model = ReconNet(kind="basic", stage_sizes=(2, 2, 2, 2), width=args.width,
                   input_size=args.resolution, stem_pool=not args.no_stem_pool)
  tx = rs.make_optimizer(args.lr, args.warmup_steps, args.num_steps)
  weights = rs.LossWeights(id=args.id_weight, exp=10.0, angle=10.0,
                           landmark=args.landmark_weight)
  state = rs.create_state(jax.random.key(args.seed), model, tx)
  step_fn = jax.jit(functools.partial(rs.train_step, model=model, tx=tx, weights=weights),
                    donate_argnums=(0,))
  predict = jax.jit(lambda variables, x: model.apply(
      variables, x.astype(jnp.float32) / 255.0, train=False))
  errors_fn = jax.jit(cm.per_example_errors)

  def evaluate(variables, mix=None):
    pred = np.concatenate([np.asarray(predict(variables, test_x[i:i + 250]))
                           for i in range(0, len(test_x), 250)])
    if mix is not None:  # keep only the predicted part, the rest true
      mixed = test_y.copy()
      mixed[:, mix] = pred[:, mix]
      pred = mixed
    return cm.summarize_errors(jax.device_get(errors_fn(jnp.asarray(pred), jnp.asarray(test_y),
                                                        arrays)))

  mean_face = cm.summarize_errors(jax.device_get(errors_fn(
      jnp.zeros_like(jnp.asarray(test_y)), jnp.asarray(test_y), arrays)))
  print("mean-face baseline:", json.dumps(mean_face), flush=True)
  rng = np.random.default_rng(args.seed)
  order, position, evals, logs = rng.permutation(len(train_x)), 0, [], []
  start = time.time()
  step = 0
  while step < args.num_steps and time.time() - start < args.max_seconds:
    if position + args.batch_size > len(order):
      order, position = rng.permutation(len(train_x)), 0
    idx = np.sort(order[position:position + args.batch_size])
    position += args.batch_size
    batch = dict(image=train_x[idx].astype(np.float32) / 127.5 - 1.0, coefficients=train_y[idx])
    state, metrics = step_fn(state, batch, arrays)
    step += 1
    if step % 500 == 0:
      logs.append(dict(step=step, s=round(time.time() - start, 1),
                       **{k: float(v) for k, v in jax.device_get(metrics).items()}))
      print(json.dumps(logs[-1]), flush=True)
    if step % args.eval_every == 0 or step == args.num_steps:
      evals.append(dict(step=step, s=round(time.time() - start, 1), **evaluate(state.variables)))
      print("eval:", json.dumps(evals[-1]), flush=True)
  train_s = time.time() - start
  if not evals or evals[-1]["step"] != step:
    evals.append(dict(step=step, s=round(train_s, 1), **evaluate(state.variables)))
  final = evals[-1]
  split = {f"landmark_mm_{name}": evaluate(state.variables, part)["landmark_mm"]
           for name, part in (("id_only", cm.ID), ("exp_only", cm.EXP))}
  manager = checkpointing.create_manager(args.workdir, max_to_keep=2, async_save=False)
  checkpointing.save(manager, step, jax.device_get(state), config, force=True)
  manager.wait_until_finished()
  device = jax.devices()[0]
  record = dict(
      final=final, steps=step, batch_size=args.batch_size, examples_seen=step * args.batch_size,
      train_wall_s=round(train_s, 1), dataset_render_s=round(render_s, 1), evals=evals, logs=logs,
      mean_face_baseline=mean_face, error_split=split,
      accepted=bool(final["exp_rmse"] < 0.3 and final["landmark_mm"] < 2.0), config=config,
      machine=dict(platform=platform.platform(), cpu_count=os.cpu_count(), jax=jax.__version__,
                   device=f"{device.platform}:{getattr(device, 'device_kind', '')}"),
      date=time.strftime("%Y-%m-%d"))
  pathlib.Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
  print(json.dumps({k: record[k] for k in ("final", "steps", "train_wall_s", "accepted")}))


if __name__ == "__main__":
  main()
