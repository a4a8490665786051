"""How well the reconstruction network reads real SynthFaces images at each image size.

  python benchmarks/recon_resolution.py --recon=/tmp/recon128 --data_dir=/tmp/tfds \
      --sizes=16,32,64,128 --out=benchmarks/recon_resolution_cpu.json

The held-out split of the network's own dataset, area-downsampled to each size (as the training
pipeline makes 16² or 64² training images) and resized back to the network's input, read with
`recon_training.evaluate`. This is the floor of `evaluate --metrics=control` for a
generator trained at that size: a generator cannot be read better than the real images it imitates.
The `chance` row predicts zeros for id / exp / angle (the mean face). Writes a JSON record.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from anifacegan_jax import checkpointing, experiment  # noqa: E402
from anifacegan_jax import recon_training as rt  # noqa: E402
from anifacegan_jax.data import datasets  # noqa: E402
from anifacegan_jax.metrics import coefficients as cm  # noqa: E402
import imitation  # noqa: E402  (the machine record)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--recon", required=True, help="a train_recon workdir")
  parser.add_argument("--data_dir", default="", help="tfds data_dir of its dataset ('' = default)")
  parser.add_argument("--sizes", default="16,32,64,128")
  parser.add_argument("--out", default="benchmarks/recon_resolution_cpu.json")
  args = parser.parse_args()
  try:
    sizes = [int(s) for s in args.sizes.split(",")]
  except ValueError:
    raise SystemExit(f"--sizes={args.sizes}: expected comma-separated image sizes") from None
  config = rt.restore_config(args.recon)
  config.dataset.data_dir = args.data_dir
  model, variables = rt.restore_recon(args.recon)
  builder = datasets.make_builder(rt.synthfaces_config(config))
  arrays = cm.landmark_arrays(experiment.load_morphable_model(config))
  record = dict(recon=dict(workdir=args.recon, model=config.model.to_dict(),
                           step=checkpointing.latest_step(args.recon)),
                rows={})
  for size in sizes:
    start = time.time()
    record["rows"][str(size)] = dict(metrics=rt.evaluate(model, variables, builder, arrays, size),
                                     wall_s=round(time.time() - start, 1))
    print(size, json.dumps(record["rows"][str(size)]), flush=True)
  _, target = rt.predict(model, variables, builder, sizes[0])
  chance = cm.per_example_errors(jnp.zeros_like(jnp.asarray(target)), jnp.asarray(target), arrays)
  record["rows"]["chance"] = dict(metrics=cm.summarize_errors(
      {k: np.asarray(v) for k, v in chance.items()}))
  print("chance", json.dumps(record["rows"]["chance"]), flush=True)
  record.update(machine=imitation.machine(), date=time.strftime("%Y-%m-%d"))
  pathlib.Path(args.out).write_text(json.dumps(record, indent=1, default=str) + "\n")


if __name__ == "__main__":
  main()
