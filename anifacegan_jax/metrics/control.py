"""Expression, identity and pose control: a face-reconstruction network reads generated images.

Images are rendered from latents (z_id, z_exp, ε) of the run's prior and cameras of the pose
prior; the reconstruction network predicts coefficients ẑ from them, which are compared with the
inputs: `exp_rmse` and `id_rmse` (coefficient units), `angle_rmse_deg` (the camera as
Deep3DFaceRecon angles), and `landmark_mm`, the mean 3D distance of landmarks 17-67 of
S(ẑ_id, ẑ_exp) and S(z_id, z_exp) in millimetres, pose removed (the network's own test error on
real images is the floor). `mean_face_landmark_mm` is the same distance for ẑ = 0: a generator
whose faces ignore their codes scores about that.

`landmark_depth_mm` needs no network: landmarks 17-67 of S(z_id, z_exp), placed in the world by
`geometry.model_to_world`, are projected into the image and the generated depth (Eq. 5) is read
there (bilinear); the metric is the mean |depth − distance of the landmark along that ray|, in
mm (world units are metres: the model's decimetres × 0.1). It says whether the generated
geometry follows the 3DMM the codes describe.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from anifacegan_jax.face3d import geometry
from anifacegan_jax.face3d.morphable import MorphableArrays
from anifacegan_jax.metrics import coefficients as cm
from anifacegan_jax.metrics import consistency, rendered
from anifacegan_jax.models.generator import AnimatableGenerator
from anifacegan_jax.models.priors import Prior, sample_latents
from anifacegan_jax.models.recon import NUM_COEFFICIENTS, ReconNet
from anifacegan_jax.rendering.camera import camera_origin, sample_camera
from anifacegan_jax.types import PRNGKey, PyTree


def target_coefficients(z_id, z_exp, pitch, yaw):
  """(B, 257) coefficients a perfect reconstruction would return: id, exp and the camera angles."""
  target = jnp.zeros((z_id.shape[0], NUM_COEFFICIENTS), jnp.float32)
  target = target.at[:, cm.ID].set(z_id).at[:, cm.EXP].set(z_exp)
  return target.at[:, cm.ANGLE].set(geometry.camera_to_angles(pitch, yaw))


MM_PER_WORLD_UNIT = 1000.0


def landmark_depth_errors(face: MorphableArrays, latents, camera, depth, fov_degrees: float,
                          radius: float) -> jax.Array:
  """(B,) mean |generated depth − true distance| at the pixels of landmarks 17-67, in mm."""
  points = jax.vmap(lambda i, e: consistency.world_landmarks(face, i, e))(
      latents.z_id, latents.z_exp)  # (B, L, 3)
  rows, cols = consistency.pixel_coordinates(camera, points, depth.shape[-1], fov_degrees, radius)
  generated = jax.vmap(consistency.bilinear)(depth, rows, cols)
  origin = camera_origin(camera.pitch, camera.yaw, radius)
  true = jnp.linalg.norm(points - origin[:, None], axis=-1)
  return MM_PER_WORLD_UNIT * jnp.mean(jnp.abs(generated - true), axis=-1)


def control_errors(generator: AnimatableGenerator, variables: PyTree, prior: Prior,
                   recon: ReconNet, recon_variables: PyTree, face: MorphableArrays, *,
                   key: PRNGKey, num: int = 256, batch_size: int = 16, resolution: int = 64,
                   chunk_size: int = 0, yaw_std: float, pitch_std: float,
                   clamp: float) -> dict[str, float]:
  """Control metrics of `num` generated images (see the module docstring).

  Args:
    generator, variables: the generator and its (EMA) variables {'params': ...}.
    prior: the latent prior of the run.
    recon, recon_variables: the reconstruction network and its variables.
    face: the 3DMM of the coefficients (full model or `recon_training.landmark_arrays`).
    key: fixes latents and cameras.
    num: images (a multiple of batch_size).
    batch_size: images drawn per key (and rendered per device call).
    resolution: render size (the network resizes to its input).
    yaw_std, pitch_std, clamp: the camera prior (a run's config.camera).
  """
  if num % batch_size:
    raise ValueError(f"num={num} must be a multiple of batch_size={batch_size}")
  draws = []
  for batch_key in jax.random.split(key, num // batch_size):  # batch by batch: fixed by `key`
    key_latents, key_camera = jax.random.split(batch_key)
    draws.append((sample_latents(prior, key_latents, batch_size),
                  sample_camera(key_camera, batch_size, yaw_std=yaw_std, pitch_std=pitch_std,
                                clamp=clamp)))
  latents, camera = jax.tree_util.tree_map(lambda *x: jnp.concatenate(x), *draws)

  def read(out, latents, camera):
    pred = recon.apply(recon_variables, rendered.image_01(out.image), train=False)
    target = target_coefficients(latents.z_id, latents.z_exp, camera.pitch, camera.yaw)
    errors = cm.per_example_errors(pred, target, face)
    errors["mean_face_landmark_mm"] = cm.per_example_errors(
        jnp.zeros_like(target), target, face)["landmark_mm"]
    errors["landmark_depth_mm"] = landmark_depth_errors(
        face, latents, camera, out.depth, generator.fov_degrees, generator.camera_radius)
    return errors

  errors = rendered.gather(generator, variables, latents, camera, read, resolution=resolution,
                           chunk_size=chunk_size, batch_size=batch_size)
  metrics = cm.summarize_errors(errors)
  for name in ("mean_face_landmark_mm", "landmark_depth_mm"):
    metrics[name] = float(np.mean(errors[name]))
  return metrics
