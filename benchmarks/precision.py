"""The generator's matmul precision (`model.precision`): speed and the image's change.

  python benchmarks/precision.py --pretrained=synthfaces --num=8 --resolution=64 \\
      --out=benchmarks/precision_cpu.json

Renders the same `--num` prior faces (frontal-locked view directions, prior cameras) at every
setting of `layers.PRECISIONS`, times the jitted forward (median of --repeats calls after the
compile, timed apart) and compares each image and depth with the 'float32' render: max and mean
|difference| ([−1, 1] image units; depth in world units) and the fraction of pixels whose depth
moved by more than 1 mm (a manifold crossing that flipped).

With --fid_num=N (SynthFaces models), also FID of N generated images per setting (`evaluate`'s
protocol: ψ = 1, prior latents and cameras, the training resolution) against the first N
SynthFaces training faces, rendered in-process and area-resampled as training does (mirrored at
random as `evaluate` does), with the FID Inception network (`--fid_weights`, '' = find them).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # records.py, timing.py, beside this script
from anifacegan_jax import evaluation, experiment, sampling  # noqa: E402
from anifacegan_jax.metrics import fid, fid_weights, inception  # noqa: E402
from anifacegan_jax.metrics.control import MM_PER_WORLD_UNIT  # noqa: E402
from anifacegan_jax.models.generator import render  # noqa: E402
from anifacegan_jax.models.layers import PRECISIONS  # noqa: E402
from anifacegan_jax.models.priors import sample_latents  # noqa: E402
from anifacegan_jax.rendering.camera import sample_camera  # noqa: E402
from records import header, write_record  # noqa: E402
from timing import compile_and_time  # noqa: E402
from train_device import area_resize  # noqa: E402


def real_synthfaces(run, num: int, resolution: int, seed: int) -> np.ndarray:
  """uint8 (num, R, R, 3): SynthFaces training examples 0..num-1, area-resampled, mirrored at
  random as `evaluation.real_images` mirrors them."""
  from anifacegan_jax.synthfaces import synthetic

  if run.config.dataset.name != "synth_faces":
    raise SystemExit(f"--fid_num: the model was trained on {run.config.dataset.name!r}; only "
                     "SynthFaces' real set is rendered here")
  data = synthetic.generate_many("train", num, int(run.config.dataset.config))
  images = sampling.to_uint8(area_resize(data["image"], resolution))
  flips = np.random.default_rng(seed).random(num) < 0.5
  images[flips] = images[flips, :, ::-1]
  return images


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pretrained", default="synthfaces", help="a shipped model or model folder")
  parser.add_argument("--num", type=int, default=8, help="images per render call")
  parser.add_argument("--resolution", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--fid_num", type=int, default=0, help="FID of this many images (0: none)")
  parser.add_argument("--fid_weights", default="", help="FID Inception weights ('' = find them)")
  parser.add_argument("--out", default="", help="JSON record path")
  args = parser.parse_args()
  if args.num < 1 or args.resolution < 1 or args.fid_num < 0:
    parser.error("--num and --resolution must be ≥ 1, --fid_num ≥ 0")
  run = experiment.load_pretrained(args.pretrained)
  key_latents, key_camera = jax.random.split(jax.random.key(args.seed))
  latents = sample_latents(run.prior, key_latents, args.num)
  camera = sample_camera(key_camera, args.num, yaw_std=float(run.config.camera.yaw_std),
                         pitch_std=float(run.config.camera.pitch_std),
                         clamp=float(run.config.camera.clamp))
  variables = {"params": run.ema_params}
  renders, rows = {}, []
  for precision in PRECISIONS:
    generator = run.generator.clone(precision=precision)
    draw = jax.jit(functools.partial(render, generator, resolution=args.resolution,
                                     chunk_size=int(run.config.chunk_size), lock_view=True))
    compile_s, seconds = compile_and_time(draw, variables, latents, camera, repeats=args.repeats)
    renders[precision] = draw(variables, latents, camera)
    rows.append(dict(precision=precision, compile_s=compile_s, seconds=seconds,
                     images_per_second=args.num / seconds))
  if args.fid_num:
    net, net_variables = fid_weights.load_fid_inception(args.fid_weights or None)
    del net
    eval_resolution = int(run.config.stages[0].resolution)  # `evaluate`'s FID resolution
    real = inception.features(net_variables, real_synthfaces(run, args.fid_num, eval_resolution,
                                                              args.seed))
    for row in rows:
      model = dataclasses.replace(run, generator=run.generator.clone(precision=row["precision"]))
      fake = np.concatenate([
          inception.features(net_variables, images) for images in evaluation.generated_images(
              model, args.fid_num, resolution=eval_resolution, seed=args.seed)])
      row.update(fid=fid.fid_from_features(fake, real), fid_num=args.fid_num,
                 fid_resolution=eval_resolution)
      print(f"FID {row['precision']}: {row['fid']:.2f}", flush=True)
  reference = renders["float32"]
  for row in rows:
    out = renders[row["precision"]]
    image = jnp.abs(out.image - reference.image)
    depth = jnp.abs(out.depth - reference.depth)
    row.update(image_max=float(image.max()), image_mean=float(image.mean()),
               depth_max=float(depth.max()),
               depth_moved=float(jnp.mean(depth * MM_PER_WORLD_UNIT > 1.0)),
               speedup=rows[PRECISIONS.index("float32")]["seconds"] / row["seconds"])
  print("| precision | images/s | × float32 | compile s | image max / mean | depth max (mm) | "
        "pixels with depth moved > 1 mm | FID |\n|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['precision']} | {r['images_per_second']:.2f} | {r['speedup']:.2f} | "
          f"{r['compile_s']:.1f} | {r['image_max']:.1e} / {r['image_mean']:.1e} | "
          f"{r['depth_max'] * MM_PER_WORLD_UNIT:.1f} | {100 * r['depth_moved']:.2f} % | "
          f"{r.get('fid', float('nan')):.2f} |")
  if args.out:
    write_record(args.out, dict(**header(args, run), rows=rows))


if __name__ == "__main__":
  main()
