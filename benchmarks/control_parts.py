"""Where does a model's control error come from? Identity against expression, and where the
rendered surface lies against the 3DMM mesh.

  python benchmarks/control_parts.py --pretrained=M --num=64 --out=benchmarks/x.json

`control/landmark_mm` compares landmarks 17-67 of S(ẑ_id, ẑ_exp), read by the reconstruction
network from a generated image, with those of S(z_id, z_exp). Here the same images are read and
the reading's identity and expression are swapped for the truth one at a time:

* `landmark_mm` (as `control`), `mean_face_mm` (ẑ = 0);
* `read_id_true_exp_mm`: the identity read, the expression true (the identity's share of the
  error); `true_id_read_exp_mm`: the reverse (the expression's share);
* `zero_id_true_exp_mm` and `true_id_zero_exp_mm`: the same with the read part replaced by 0
  (what ignoring that part of the code scores).

And where the surface lies at the landmarks (pixels where landmarks 17-67 of S(z_id, z_exp)
project; signed, + = behind the mesh, seen from the camera; mm):

* `depth_bias_mm`: the rendered depth (Eq. 5, background included) − the landmark's distance;
* `surface_bias_mm`: the same for the depth of the manifold points alone (background weight
  left out), and `peak_bias_mm` for the single point of largest weight on each ray;
* `landmark_opacity`: 1 − the background's weight there.

`identity_depth` renders each face again with z_id = 0 (the mean face's shape) and reads the
depth error (|·|, as `control/landmark_depth_mm`) of both renders against both meshes: a geometry
that follows z_id is nearer its own mesh than the mean face's.
"""

from __future__ import annotations

import argparse
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
from anifacegan_jax.metrics import consistency, rendered  # noqa: E402
from anifacegan_jax.metrics.control import MM_PER_WORLD_UNIT, target_coefficients  # noqa: E402
from anifacegan_jax.models.priors import sample_latents  # noqa: E402
from anifacegan_jax.rendering.camera import camera_origin, sample_camera  # noqa: E402
from records import header, write_record  # noqa: E402  (benchmarks/, beside this script)


def landmark_parts(pred: jax.Array, target: jax.Array, face) -> dict:
  """The landmark errors (mm) of the module docstring for (N, 257) readings and truths."""
  def mm(coefficients):
    return float(np.mean(cm.per_example_errors(coefficients, target, face)["landmark_mm"]))
  zero = jnp.zeros_like(target)
  return dict(
      landmark_mm=mm(pred), mean_face_mm=mm(zero),
      read_id_true_exp_mm=mm(pred.at[:, cm.EXP].set(target[:, cm.EXP])),
      true_id_read_exp_mm=mm(pred.at[:, cm.ID].set(target[:, cm.ID])),
      zero_id_true_exp_mm=mm(zero.at[:, cm.EXP].set(target[:, cm.EXP])),
      true_id_zero_exp_mm=mm(zero.at[:, cm.ID].set(target[:, cm.ID])))


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pretrained", required=True, help="model folder or a shipped name")
  parser.add_argument("--num", type=int, default=64, help="generated faces")
  parser.add_argument("--resolution", type=int, default=64)
  parser.add_argument("--batch", type=int, default=8, help="generated images per device call")
  parser.add_argument("--recon", default="synthfaces", help="the reading network")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", required=True, help="JSON record")
  args = parser.parse_args(argv)
  if args.num < 2 or args.resolution < 8 or args.batch < 1:
    parser.error("--num must be >= 2, --resolution >= 8, --batch >= 1")
  run = experiment.load_pretrained(args.pretrained)
  reader = evaluation.load_reader(run, evaluation.Settings(metrics=("control",), recon=args.recon))
  face = reader.face
  g = run.generator
  key_latents, key_camera = jax.random.split(jax.random.key(args.seed))
  latents = sample_latents(run.prior, key_latents, args.num)
  cam = run.config.camera
  camera = sample_camera(key_camera, args.num, yaw_std=cam.yaw_std, pitch_std=cam.pitch_std,
                         clamp=cam.clamp)

  def at_landmarks(latents, camera, image):
    """Bilinear samples (B, 51) of per-pixel maps (B, R, R) at the landmarks of S(z_id, z_exp),
    and the landmarks' distances from the camera."""
    points = jax.vmap(lambda i, e: consistency.world_landmarks(face, i, e))(
        latents.z_id, latents.z_exp)
    rows, cols = consistency.pixel_coordinates(camera, points, image.shape[-1], g.fov_degrees,
                                               g.camera_radius)
    origin = camera_origin(camera.pitch, camera.yaw, g.camera_radius)
    return (jax.vmap(consistency.bilinear)(image, rows, cols),
            jnp.linalg.norm(points - origin[:, None], axis=-1))

  def read(out, latents, camera):
    size = out.depth.shape[-1]
    origin = camera_origin(camera.pitch, camera.yaw, g.camera_radius)
    weights = out.weights[..., :-1]  # the background plane is last
    distance = jnp.linalg.norm(out.points_target[..., :-1, :] - origin[:, None, None], axis=-1)
    opacity = jnp.sum(weights, -1)
    surface = jnp.sum(weights * distance, -1) / jnp.maximum(opacity, 1e-6)
    peak = jnp.take_along_axis(distance, jnp.argmax(weights, -1)[..., None], -1)[..., 0]
    maps = lambda x: x.reshape(x.shape[0], size, size)  # noqa: E731
    result = {"pred": reader.net.apply(reader.variables, rendered.image_01(out.image),
                                       train=False)}
    for name, image in (("depth", out.depth), ("surface", maps(surface)), ("peak", maps(peak))):
      sampled, true = at_landmarks(latents, camera, image)
      result[name] = MM_PER_WORLD_UNIT * jnp.mean(sampled - true, -1)
    result["opacity"] = jnp.mean(at_landmarks(latents, camera, maps(opacity))[0], -1)
    return result

  def depth_only(out, latents, camera):
    return {"depth": out.depth}

  tick = time.perf_counter()
  got = evaluation.gather_run(run, latents, camera, read, resolution=args.resolution,
                              batch_size=args.batch)
  target = target_coefficients(latents.z_id, latents.z_exp, camera.pitch, camera.yaw)
  record = header(args, run)
  record["landmarks"] = landmark_parts(jnp.asarray(got["pred"]), target, face)
  record["surface"] = dict(depth_bias_mm=float(np.mean(got["depth"])),
                           surface_bias_mm=float(np.mean(got["surface"])),
                           peak_bias_mm=float(np.mean(got["peak"])),
                           landmark_opacity=float(np.mean(got["opacity"])))
  # Does the geometry follow z_id? Both renders against both meshes.
  mean_face = dataclasses.replace(latents, z_id=jnp.zeros_like(latents.z_id))
  own = jnp.asarray(evaluation.gather_run(run, latents, camera, depth_only,
                                          resolution=args.resolution,
                                          batch_size=args.batch)["depth"])
  mean = jnp.asarray(evaluation.gather_run(run, mean_face, camera, depth_only,
                                           resolution=args.resolution,
                                           batch_size=args.batch)["depth"])

  def error(mesh_latents, depth):
    sampled, true = at_landmarks(mesh_latents, camera, depth)
    return float(MM_PER_WORLD_UNIT * jnp.mean(jnp.abs(sampled - true)))

  record["identity_depth"] = dict(
      own_render_own_mesh_mm=error(latents, own), own_render_mean_mesh_mm=error(mean_face, own),
      mean_render_own_mesh_mm=error(latents, mean), mean_render_mean_mesh_mm=error(mean_face, mean))
  record["seconds"] = round(time.perf_counter() - tick, 1)
  print(json.dumps({k: record[k] for k in ("landmarks", "surface", "identity_depth")}, indent=1))
  write_record(args.out, record)
  return record


if __name__ == "__main__":
  main()
