"""3D consistency across views of the same face (same latents, two cameras).

`warp_error`: view A is warped into view B with B's generated depth (Eq. 5): each pixel of B is
lifted to the 3D point at its depth, projected into A, and A's colour is read there (bilinear).
Pixels whose point falls outside A or is hidden in A (A's depth there differs from the point's
distance by more than `tolerance`) are left out. The error is the mean absolute colour
difference over the kept pixels in 8-bit units; a view-consistent generator with correct depth
scores near 0 (bilinear resampling error only).

`landmark_reprojection_px`: landmarks 17-67 detected in both views by the reconstruction
network (projections of S(ẑ_id, ẑ_exp) with the predicted pose) are compared after lifting A's
with A's depth and reprojecting them into B with the cameras the images were rendered with; the
mean distance to B's detections is in pixels of B.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from anifacegan_jax.face3d import geometry
from anifacegan_jax.face3d.morphable import MorphableArrays
from anifacegan_jax.metrics import coefficients as cm
from anifacegan_jax.rendering.camera import (camera_origin, generate_rays, look_at_rotation,
                                             project_points)
from anifacegan_jax.types import Array, Camera

DEFAULT_TOLERANCE = 0.01  # world units (1 cm): depth disagreement that counts as occluded


def pixel_coordinates(camera: Camera, points: Array, resolution: int, fov_degrees: float,
                      radius: float) -> tuple[Array, Array]:
  """(rows, cols) (..., N) of world points (..., N, 3) in an R×R image (pixel centres at integers)."""
  ndc = project_points(camera, points, radius) / jnp.tan(jnp.deg2rad(fov_degrees) / 2)
  size = resolution - 1
  return (1 - ndc[..., 1]) / 2 * size, (ndc[..., 0] + 1) / 2 * size


def pixel_rays(camera: Camera, rows: Array, cols: Array, resolution: int, fov_degrees: float,
               radius: float) -> tuple[Array, Array]:
  """(origins (..., 3), unit directions (..., N, 3)) of sub-pixel positions (..., N)."""
  size, scale = resolution - 1, jnp.tan(jnp.deg2rad(fov_degrees) / 2)
  x, y = (2 * cols / size - 1) * scale, (1 - 2 * rows / size) * scale
  local = jnp.stack([x, y, -jnp.ones_like(x)], axis=-1)
  local = local / jnp.linalg.norm(local, axis=-1, keepdims=True)
  origin = camera_origin(camera.pitch, camera.yaw, radius)
  return origin, jnp.einsum("...ij,...nj->...ni", look_at_rotation(origin), local)


def world_landmarks(face: MorphableArrays, z_id: Array, z_exp: Array) -> Array:
  """(51, 3) landmarks 17-67 of S(z_id, z_exp), placed in the GRAM world."""
  vertices = geometry.face_vertices(face, z_id, z_exp)
  return geometry.model_to_world(geometry.landmarks_3d(face, vertices))[cm.LANDMARKS]


def bilinear(image: Array, rows: Array, cols: Array) -> Array:
  """Bilinear samples (N,) or (N, C) of one (R, R) or (R, R, C) image at (N,) positions."""
  read = lambda channel: jax.scipy.ndimage.map_coordinates(  # noqa: E731
      channel, [rows, cols], order=1, mode="nearest")
  if image.ndim == 2:
    return read(image)
  return jnp.stack([read(image[..., c]) for c in range(image.shape[-1])], axis=-1)


def warp_error(image_a: Array, depth_a: Array, camera_a: Camera, image_b: Array, depth_b: Array,
               camera_b: Camera, *, fov_degrees: float, radius: float,
               tolerance: float = DEFAULT_TOLERANCE) -> tuple[Array, Array]:
  """Per-example (mean |A warped to B − B| in 8-bit units, fraction of B's pixels kept).

  Args:
    image_a, image_b: (B, R, R, 3) in [−1, 1].
    depth_a, depth_b: (B, R, R) distances along each pixel's ray (world units).
    camera_a, camera_b: (B,) the cameras they were rendered with.
  """
  batch, resolution = image_b.shape[0], image_b.shape[1]
  rays = generate_rays(camera_b, resolution, fov_degrees, radius)
  points = rays.origins + depth_b.reshape(batch, -1, 1) * rays.directions  # (B, R·R, 3)
  rows, cols = pixel_coordinates(camera_a, points, resolution, fov_degrees, radius)
  edge = resolution - 0.5  # pixels extend half a pixel beyond their centres
  inside = (rows >= -0.5) & (rows <= edge) & (cols >= -0.5) & (cols <= edge)
  distance = jnp.linalg.norm(
      points - camera_origin(camera_a.pitch, camera_a.yaw, radius)[:, None], axis=-1)
  seen = jax.vmap(bilinear)(depth_a, rows, cols)
  kept = inside & (jnp.abs(seen - distance) < tolerance)
  colour = jax.vmap(bilinear)(image_a, rows, cols)  # (B, R·R, 3)
  diff = jnp.mean(jnp.abs(colour - image_b.reshape(batch, -1, 3)), axis=-1) * 127.5
  count = jnp.sum(kept, axis=-1)
  error = jnp.sum(jnp.where(kept, diff, 0.0), axis=-1) / jnp.maximum(count, 1)
  return error, count / rows.shape[-1]


def detected_landmarks(face: MorphableArrays, pred: Array, resolution: int, fov_degrees: float,
                       radius: float) -> tuple[Array, Array]:
  """(rows, cols) (B, 51) of landmarks 17-67 that coefficients (B, 257) place in the image."""
  points = jax.vmap(lambda c: world_landmarks(face, c[cm.ID], c[cm.EXP]))(pred)
  pitch, yaw = geometry.angles_to_camera(pred[:, cm.ANGLE])
  return pixel_coordinates(Camera(pitch=pitch, yaw=yaw), points, resolution, fov_degrees, radius)


def reproject(rows: Array, cols: Array, depth_a: Array, camera_a: Camera, camera_b: Camera, *,
              fov_degrees: float, radius: float) -> tuple[Array, Array]:
  """(rows, cols) (B, N) in view B of positions (B, N) of view A lifted with A's depth (B, R, R)."""
  resolution = depth_a.shape[-1]
  origin, directions = pixel_rays(camera_a, rows, cols, resolution, fov_degrees, radius)
  depth = jax.vmap(bilinear)(depth_a, rows, cols)
  points = origin[:, None] + depth[..., None] * directions
  return pixel_coordinates(camera_b, points, resolution, fov_degrees, radius)


def landmark_reprojection_px(face: MorphableArrays, pred_a: Array, pred_b: Array, depth_a: Array,
                             camera_a: Camera, camera_b: Camera, *, fov_degrees: float,
                             radius: float) -> Array:
  """(B,) mean pixel distance in B between B's detected landmarks and A's, lifted with A's
  depth and reprojected (see the module docstring). pred_a/pred_b: (B, 257) network outputs."""
  resolution = depth_a.shape[-1]
  rows_a, cols_a = detected_landmarks(face, pred_a, resolution, fov_degrees, radius)
  rows_b, cols_b = detected_landmarks(face, pred_b, resolution, fov_degrees, radius)
  rows, cols = reproject(rows_a, cols_a, depth_a, camera_a, camera_b, fov_degrees=fov_degrees,
                         radius=radius)
  return jnp.mean(jnp.hypot(rows - rows_b, cols - cols_b), axis=-1)
