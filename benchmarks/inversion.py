"""Inversion scored against ground truth: held-out SynthFaces identities, one frontal neutral photo
each, inverted into a model; its renders of the same identity at yaw ±0.3 and with three
expressions compared with the SynthFaces rasteriser's renders of that identity.

  cd benchmarks && python inversion.py --pretrained=synthfaces --num=4 --out=inversion_cpu.json \\
      --figure=../docs/inversion_synthfaces.png

Figure: per face, a row of ground truth (input, yaw −0.3, +0.3, jaw, smile, brows), then the
inversion's renders of the same, then the fine-tuned model's.

Per face and stage ('copy': the input photo shown as every view, the reference a novel view
must beat; 'start': the network's reading of the photo and ε = 0, no optimisation; 'invert';
'finetune'): PSNR and SSIM of the input view and of the novel views / expressions, and
the identity-coefficient RMSE that the reconstruction network reads from the novel renders
against the true identity (beside the same reading of the ground-truth renders: the reading's
own error). The novel views keep the inverted camera and turn it by ±0.3; the expressions are
the true blendshape weights. Held-out: the 'test' split's scenes (hair, background, lighting
and texture of example i), re-rendered frontal and neutral.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from anifacegan_jax import animation, experiment, inversion
from anifacegan_jax.metrics import coefficients as cm
from anifacegan_jax.synthfaces import procedural, synthetic
from records import header, write_record

HALF_PI = math.pi / 2
YAWS = (-0.3, 0.3)
EXPRESSIONS = ("jaw_open=0.8", "smile_left=0.8,smile_right=0.8",
               "brow_up_left=0.8,brow_up_right=0.8")


def ground_truth(model, index: int, resolution: int) -> dict:
  """uint8 renders of test scene `index`: 'input' (frontal, neutral), 'yaw-0.3', 'yaw+0.3' and
  one per expression (frontal); and its identity coefficients (80,)."""
  rng = np.random.default_rng([synthetic.SEED, synthetic.SPLIT_CODES["test"], index])
  params = synthetic.sample_scene(rng)
  state = rng.bit_generator.state

  def draw(expression, yaw):
    again = np.random.default_rng()
    again.bit_generator.state = state  # the same hair and background in every view
    scene = dataclasses.replace(params, expression=expression, pitch=HALF_PI, yaw=HALF_PI + yaw)
    return synthetic.render_example(model, scene, again, resolution)["image"]

  neutral = np.zeros(64, np.float32)
  views = {"input": draw(neutral, 0.0)}
  for yaw in YAWS:
    views[f"yaw{yaw:+.1f}"] = draw(neutral, yaw)
  for spec in EXPRESSIONS:
    views[spec.split("=")[0]] = draw(animation.named_expression(spec), 0.0)
  return dict(views=views, identity=params.identity)


def renders(run, params, z_id, noise, z_exp_input, pitch, yaw, resolution) -> dict:
  """uint8 renders of the same views by the generator (camera relative to the fitted one)."""
  cases = [("input", z_exp_input, 0.0)] + [(f"yaw{y:+.1f}", np.zeros(64, np.float32), y)
                                           for y in YAWS]
  cases += [(spec.split("=")[0], animation.named_expression(spec), 0.0) for spec in EXPRESSIONS]
  images, _, _ = animation.draw_frames(
      run.generator, params, jnp.asarray(z_id), jnp.asarray(noise),
      jnp.asarray(np.stack([c[1] for c in cases])), jnp.full((len(cases),), pitch, jnp.float32),
      jnp.asarray([yaw + c[2] for c in cases], jnp.float32), None, 1.0, resolution=resolution,
      chunk_size=int(run.config.chunk_size))
  images = np.asarray(images)
  return {c[0]: images[i] for i, c in enumerate(cases)}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  mse = np.mean((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2)
  return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
  """Mean SSIM (Wang et al. 2004: 11-tap Gaussian window, σ 1.5, K = 0.01, 0.03) over pixels and
  channels of two uint8 images, 'valid' windows only."""
  x, y = a.astype(np.float64) / 255, b.astype(np.float64) / 255
  taps = np.exp(-0.5 * (np.arange(11) - 5) ** 2 / 1.5 ** 2)
  taps /= taps.sum()

  def blur(z):
    z = np.apply_along_axis(lambda r: np.convolve(r, taps, "valid"), 0, z)
    return np.apply_along_axis(lambda r: np.convolve(r, taps, "valid"), 1, z)

  c1, c2 = 0.01 ** 2, 0.03 ** 2
  mx, my = blur(x), blur(y)
  sxx, syy, sxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
  value = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
  return float(value.mean())


def score(views: dict, truth: dict, identity: np.ndarray, read) -> dict:
  novel = [k for k in views if k != "input"]
  ours = read(np.stack([views[k] for k in novel]))
  theirs = read(np.stack([truth[k] for k in novel]))
  return dict(
      psnr_input=psnr(views["input"], truth["input"]), ssim_input=ssim(views["input"], truth["input"]),
      psnr_novel=float(np.mean([psnr(views[k], truth[k]) for k in novel])),
      ssim_novel=float(np.mean([ssim(views[k], truth[k]) for k in novel])),
      **{f"psnr_{k}": psnr(views[k], truth[k]) for k in novel},
      id_rmse=float(np.sqrt(np.mean((ours[:, cm.ID] - identity) ** 2))),
      id_rmse_truth_read=float(np.sqrt(np.mean((theirs[:, cm.ID] - identity) ** 2))))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pretrained", default="synthfaces")
  parser.add_argument("--num", type=int, default=4, help="held-out identities")
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--finetune_steps", type=int, default=100)
  parser.add_argument("--perceptual_weight", type=float, default=0.1)
  parser.add_argument("--out", default="")
  parser.add_argument("--figure", default="")
  args = parser.parse_args()
  run = experiment.load_pretrained(args.pretrained)
  resolution = int(run.config.stages[0].resolution)
  net, net_variables = experiment.load_recon(run.config)
  apply = jax.jit(lambda v, x: net.apply(v, x, train=False))
  read = lambda images: np.asarray(apply(net_variables, jnp.asarray(images, jnp.float32) / 255))
  model = procedural.load_procedural()
  settings = inversion.Settings(steps=args.steps, finetune_steps=args.finetune_steps,
                                perceptual_weight=args.perceptual_weight)
  faces, rows = [], []
  for index in range(args.num):
    truth = ground_truth(model, index, resolution)
    photo = truth["views"]["input"].astype(np.float32) / 255
    estimate = inversion.estimate_from_photo(run, photo)
    start = time.perf_counter()
    result = inversion.invert(run, photo, estimate, settings)  # latents fixed while fine-tuning
    total = time.perf_counter() - start
    latents = (result.z_id, result.noise, result.pitch, result.yaw)
    stages = {"start": (run.ema_params, estimate.z_id, np.zeros(80, np.float32), estimate.pitch,
                        estimate.yaw),
              "invert": (run.ema_params, *latents)}
    if args.finetune_steps:
      stages["finetune"] = (result.params, *latents)
    face = dict(index=index, seconds=dict(result.seconds, total=total),
                final_loss={k: v[-1] for k, v in result.losses.items()})
    # The reference a novel view must beat: the input photo itself, shown for every view.
    face["copy"] = score({k: truth["views"]["input"] for k in truth["views"]}, truth["views"],
                         truth["identity"], read)
    shown = {}
    for stage, (params, z_id, noise, pitch, yaw) in stages.items():
      views = renders(run, params, z_id, noise, estimate.z_exp, pitch, yaw, resolution)
      face[stage] = score(views, truth["views"], truth["identity"], read)
      shown[stage] = views
    faces.append(face)
    print(f"face {index}: " + "; ".join(
        f"{s} PSNR {face[s]['psnr_input']:.2f} / novel {face[s]['psnr_novel']:.2f}, id RMSE "
        f"{face[s]['id_rmse']:.3f}" for s in stages) + f"; {total:.0f} s", flush=True)
    # Rows: the ground truth, then each optimised stage, views in the order of `truth`.
    rows.append(np.concatenate(list(truth["views"].values()), axis=1))
    for stage in ("invert", "finetune"):
      if stage in shown:
        rows.append(np.concatenate([shown[stage][k] for k in truth["views"]], axis=1))
  summary = {}
  for stage in ("copy", "start", "invert", "finetune"):
    if stage in faces[0]:
      summary[stage] = {k: float(np.mean([f[stage][k] for f in faces])) for k in faces[0][stage]}
  record = dict(header(args, run), resolution=resolution, views=list(truth["views"]),
                faces=faces, summary=summary,
                seconds_per_face=float(np.mean([f["seconds"]["total"] for f in faces])))
  print("| stage | PSNR input | SSIM input | PSNR novel | SSIM novel | id RMSE (renders) | id RMSE "
        "(truth read) |\n|---|---|---|---|---|---|---|")
  for stage, m in summary.items():
    print(f"| {stage} | {m['psnr_input']:.2f} | {m['ssim_input']:.3f} | {m['psnr_novel']:.2f} | "
          f"{m['ssim_novel']:.3f} | {m['id_rmse']:.3f} | {m['id_rmse_truth_read']:.3f} |")
  if args.out:
    write_record(args.out, record)
  if args.figure:
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.figure)


if __name__ == "__main__":
  main()
