"""Camera poses, look-at matrices, pixel rays and ray samples (SPEC §1).

World frame: right-handed, y up, the head at the origin facing +z. The camera sits on a sphere of
radius `radius` at o = (r sinφ cosθ, r cosφ, r sinφ sinθ) and looks at the origin down its own -z
(OpenGL convention); camera +x is image right, camera +y is image up. φ = θ = π/2 is frontal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from anifacegan_jax.types import Array, Camera, PRNGKey, Rays

HALF_PI = jnp.pi / 2


def sample_camera(
    key: PRNGKey,
    batch: int,
    *,
    yaw_std: float,
    pitch_std: float,
    clamp: float,
    yaw_mean: float = float(HALF_PI),
    pitch_mean: float = float(HALF_PI),
) -> Camera:
  """Gaussian pose prior of AniFaceGAN's FFHQ curriculum (SPEC §1.1): the spreads are a run's
  config.camera (configs/default.py: 0.3, 0.155, 1.3).

  θ ~ N(yaw_mean, yaw_std²), φ ~ N(pitch_mean, pitch_std²), each clamped to mean ± clamp, and
  φ to [1e-5, π - 1e-5] so the look-at frame never degenerates.

  Returns:
    Camera with (batch,) float32 pitch and yaw, radians.
  """
  key_yaw, key_pitch = jax.random.split(key)
  yaw = yaw_mean + yaw_std * jax.random.normal(key_yaw, (batch,), jnp.float32)
  pitch = pitch_mean + pitch_std * jax.random.normal(key_pitch, (batch,), jnp.float32)
  yaw = jnp.clip(yaw, yaw_mean - clamp, yaw_mean + clamp)
  pitch = jnp.clip(pitch, pitch_mean - clamp, pitch_mean + clamp)
  pitch = jnp.clip(pitch, 1e-5, jnp.pi - 1e-5)
  return Camera(pitch=pitch, yaw=yaw)


def camera_origin(pitch: Array, yaw: Array, radius: float = 1.0) -> Array:
  """(..., 3) camera centre in world units for polar angle `pitch` and azimuth `yaw` (radians)."""
  return radius * jnp.stack(
      [jnp.sin(pitch) * jnp.cos(yaw), jnp.cos(pitch), jnp.sin(pitch) * jnp.sin(yaw)], axis=-1)


def _normalize(v: Array) -> Array:
  return v / jnp.linalg.norm(v, axis=-1, keepdims=True)


def look_at_rotation(origin: Array) -> Array:
  """(..., 3, 3) camera-to-world rotation of a camera at `origin` (world) looking at the origin.

  Columns are (camera x, camera y, camera z) in world coordinates = (-left, up, -forward), with
  forward = -origin/|origin|, left = (0,1,0) × forward, up = forward × left.
  """
  forward = _normalize(-origin)
  world_up = jnp.broadcast_to(jnp.array([0.0, 1.0, 0.0], origin.dtype), origin.shape)
  left = _normalize(jnp.cross(world_up, forward))
  up = _normalize(jnp.cross(forward, left))
  return jnp.stack([-left, up, -forward], axis=-1)


def cam2world(camera: Camera, radius: float = 1.0) -> Array:
  """(..., 4, 4) homogeneous camera-to-world matrices: translate(origin) · rotate."""
  origin = camera_origin(camera.pitch, camera.yaw, radius)
  rotation = look_at_rotation(origin)
  top = jnp.concatenate([rotation, origin[..., :, None]], axis=-1)
  bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0], origin.dtype), top.shape[:-2] + (1, 4))
  return jnp.concatenate([top, bottom], axis=-2)


def project_points(camera: Camera, points: Array, radius: float = 1.0) -> Array:
  """(..., N, 2) image-plane coordinates of world points (..., N, 3) seen by `camera` (...,).

  (x_c, y_c) / (-z_c) in the camera frame (+x image right, +y image up), i.e. the tangent of the
  angle off the optical axis; multiply by 1/tan(fov/2) for the [-1, 1] pixel grid of
  `pixel_directions`.
  """
  matrix = cam2world(camera, radius)
  local = jnp.einsum("...ji,...nj->...ni", matrix[..., :3, :3],
                     points - matrix[..., None, :3, 3])
  return local[..., :2] / (-local[..., 2:3])


def pixel_directions(resolution: int, fov_degrees: float = 12.0) -> Array:
  """(R·R, 3) unit ray directions in camera space, row-major with row 0 at the top.

  Pixel centres sit on x = linspace(-1, 1, R) (left→right), y = linspace(1, -1, R) (top→bottom);
  direction = normalize(x, y, -1/tan(fov/2)).
  """
  coords = jnp.linspace(-1.0, 1.0, resolution, dtype=jnp.float32)
  y, x = jnp.meshgrid(-coords, coords, indexing="ij")
  z = jnp.full_like(x, -1.0 / jnp.tan(jnp.deg2rad(fov_degrees) / 2))
  return _normalize(jnp.stack([x, y, z], axis=-1).reshape(-1, 3))


def generate_rays(camera: Camera, resolution: int, fov_degrees: float = 12.0,
                  radius: float = 1.0) -> Rays:
  """Pixel rays of `camera` (leading dims ...): origins and unit directions (..., R·R, 3), world."""
  origin = camera_origin(camera.pitch, camera.yaw, radius)
  rotation = look_at_rotation(origin)
  local = pixel_directions(resolution, fov_degrees)
  directions = jnp.einsum("...ij,nj->...ni", rotation, local)
  origins = jnp.broadcast_to(origin[..., None, :], directions.shape)
  return Rays(origins=origins, directions=directions)


def sample_distances(near: float = 0.88, far: float = 1.12, num_samples: int = 64) -> Array:
  """(S,) distances along each unit ray: linspace(near, far, S), no jitter (SPEC §1.2)."""
  return jnp.linspace(near, far, num_samples, dtype=jnp.float32)


def sample_points(rays: Rays, distances: Array) -> Array:
  """(..., S, 3) points origin + t·direction for t in `distances` (S,), world units."""
  return rays.origins[..., None, :] + distances[:, None] * rays.directions[..., None, :]


def background_points(rays: Rays, plane_z: float = -0.12) -> Array:
  """(..., 3) intersection of each ray with the world plane z = plane_z (SPEC §1.3).

  Rays are assumed to point towards the plane (d_z < 0), which holds for every camera of the
  clamped pose prior.
  """
  t = (plane_z - rays.origins[..., 2]) / rays.directions[..., 2]
  return rays.origins + t[..., None] * rays.directions
