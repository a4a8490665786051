"""Does the generated image change the way z_exp asks? Paired renders read by the reconstruction
network, beside the same pairs of SynthFaces ground-truth renders.

  python benchmarks/expression_gain.py --pretrained=M --num=64 --out=benchmarks/x.json

`control/exp_rmse` compares the network's reading ê of one image with its z_exp, so a reading
biased by the generator's look (its faces are not SynthFaces renders) scores at chance even when
the expression moves as asked. Here each face is rendered twice, with z_exp and with z_exp = 0
(same z_id, ε and camera), and the *change* of the reading, Δê = ê(z_exp) − ê(0), is compared
with z_exp:

* `exp_rmse`: ê(z_exp) vs z_exp (as `control`); `zero_rmse`: predicting 0 (chance);
* `change_rmse`: Δê vs z_exp over the same 64 columns;
* `gain`: the least-squares slope of Δê on z_exp over the columns the prior moves (1: the image
  shows the expression at full strength as read on SynthFaces, 0: not at all), and `correlation`.

The reference row applies the same to the SynthFaces test split rendered by the dataset's own
rasteriser (the expression zeroed in a copy of each scene, the rest of the scene equal): the
reading's own floor for each number.

`--code=id` asks the same of the identity: pairs with z_id and with z_id = 0 (the mean face's
shape), the reading's 80 identity coefficients against z_id (the numbers keep their `exp_`
names in the record, which names its `code`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # records.py, beside this script
from anifacegan_jax import evaluation, experiment  # noqa: E402
from anifacegan_jax.metrics import coefficients as cm  # noqa: E402
from anifacegan_jax.metrics import rendered  # noqa: E402
from anifacegan_jax.models.priors import sample_latents  # noqa: E402
from anifacegan_jax.rendering.camera import sample_camera  # noqa: E402
from anifacegan_jax.synthfaces import procedural, synthetic  # noqa: E402
from records import header, write_record  # noqa: E402  (benchmarks/, beside this script)


def summary(read: np.ndarray, read_zero: np.ndarray, z_exp: np.ndarray) -> dict:
  """The numbers of the module docstring from (N, 64) readings of z_exp and of zero, and z_exp."""
  change = read - read_zero
  spread = np.std(z_exp, axis=0)
  moved = spread > 0.01 * spread.max()  # the columns the expressions use (a fitted prior's
  #                                       unused ones only carry its jitter)
  x, y = z_exp[:, moved].ravel(), change[:, moved].ravel()
  rmse = lambda a: float(np.sqrt(np.mean(np.square(a))))  # noqa: E731
  return dict(num=len(z_exp), exp_rmse=rmse(read - z_exp), zero_rmse=rmse(z_exp),
              change_rmse=rmse(change - z_exp), gain=float(np.dot(x, y) / np.dot(x, x)),
              correlation=float(np.corrcoef(x, y)[0, 1]) if np.std(y) > 0 else 0.0,
              column_gain=[float(np.dot(z_exp[:, j], change[:, j]) / np.dot(z_exp[:, j], z_exp[:, j]))
                           for j in np.flatnonzero(moved)])


CODES = {"exp": ("z_exp", "expression", cm.EXP), "id": ("z_id", "identity", cm.ID)}


def generator_pairs(run, reader, num: int, seed: int, resolution: int, batch: int,
                    code: str = "exp") -> dict:
  """Readings of `num` generated faces with their z_exp and with z_exp = 0 (`code` 'id': z_id)."""
  field, _, columns = CODES[code]
  key_latents, key_camera = jax.random.split(jax.random.key(seed))
  latents = sample_latents(run.prior, key_latents, num)
  cam = run.config.camera
  camera = sample_camera(key_camera, num, yaw_std=cam.yaw_std, pitch_std=cam.pitch_std,
                         clamp=cam.clamp)

  def read(out, latents, camera):
    return {"exp": reader.net.apply(reader.variables, rendered.image_01(out.image),
                                    train=False)[:, columns]}

  with_exp = evaluation.gather_run(run, latents, camera, read, resolution=resolution,
                                   batch_size=batch)["exp"]
  neutral = dataclasses.replace(latents, **{field: jnp.zeros_like(getattr(latents, field))})
  without = evaluation.gather_run(run, neutral, camera, read, resolution=resolution,
                                  batch_size=batch)["exp"]
  return summary(with_exp, without, np.asarray(getattr(latents, field)))


def synthfaces_pairs(reader, num: int, resolution: int, code: str = "exp") -> dict:
  """Readings of SynthFaces test examples 0..num-1 and of the same scenes with expression 0
  (`code` 'id': identity 0)."""
  _, scene_field, columns = CODES[code]
  model = procedural.load_procedural()
  images, neutral, z_exp = [], [], []
  for index in range(num):
    rng = np.random.default_rng([synthetic.SEED, synthetic.SPLIT_CODES["test"], index])
    params = synthetic.sample_scene(rng)
    rest = copy.deepcopy(rng)  # the same head, hair and background for the neutral copy
    images.append(synthetic.render_example(model, params, rng, resolution)["image"])
    zero = dataclasses.replace(
        params, **{scene_field: np.zeros_like(getattr(params, scene_field))})
    neutral.append(synthetic.render_example(model, zero, rest, resolution)["image"])
    z_exp.append(getattr(params, scene_field))
  apply = jax.jit(lambda x: reader.net.apply(reader.variables, x, train=False)[:, columns])
  read = lambda x: np.asarray(apply(jnp.asarray(np.stack(x), jnp.float32) / 255.0))  # noqa: E731
  return summary(read(images), read(neutral), np.stack(z_exp))


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pretrained", required=True, help="model folder or a shipped name")
  parser.add_argument("--num", type=int, default=64, help="pairs of each kind")
  parser.add_argument("--resolution", type=int, default=64, help="render size of both kinds")
  parser.add_argument("--batch", type=int, default=8, help="generated images per device call")
  parser.add_argument("--recon", default="synthfaces", help="the reading network")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--code", default="exp", choices=sorted(CODES),
                      help="the code of the pairs: exp (z_exp vs 0) or id (z_id vs 0)")
  parser.add_argument("--skip_reference", action="store_true", help="generator pairs only")
  parser.add_argument("--out", required=True, help="JSON record")
  args = parser.parse_args(argv)
  if args.num < 2 or args.resolution < 8 or args.batch < 1:
    parser.error("--num must be >= 2, --resolution >= 8, --batch >= 1")
  run = experiment.load_pretrained(args.pretrained)
  reader = evaluation.load_reader(run, evaluation.Settings(metrics=("control",), recon=args.recon))
  record = header(args, run, code=args.code)
  tick = time.perf_counter()
  record["generator"] = generator_pairs(run, reader, args.num, args.seed, args.resolution,
                                        args.batch, args.code)
  record["generator_s"] = round(time.perf_counter() - tick, 1)
  print(json.dumps(dict(generator=record["generator"])), flush=True)
  if not args.skip_reference:
    record["synthfaces"] = synthfaces_pairs(reader, args.num, args.resolution, args.code)
    print(json.dumps(dict(synthfaces=record["synthfaces"])), flush=True)
  write_record(args.out, record)
  return record


if __name__ == "__main__":
  main()
