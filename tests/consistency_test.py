"""3D consistency metrics on an analytic scene (a sphere before a plane) with exact depth."""

import jax.numpy as jnp
import numpy as np
import pytest

from anifacegan_jax.metrics import coefficients as cm
from anifacegan_jax.metrics import consistency
from anifacegan_jax.rendering.camera import generate_rays
from anifacegan_jax.synthfaces import procedural
from anifacegan_jax.types import Camera

FOV, RADIUS, RES = 12.0, 1.0, 32


def _scene(camera):
  """(image (B, R, R, 3) in [-1, 1], depth (B, R, R)) of a sphere (r = 0.08) before the plane
  z = -0.12, coloured by a smooth function of the surface point."""
  rays = generate_rays(camera, RES, FOV, RADIUS)
  o, d = rays.origins, rays.directions
  b = jnp.sum(o * d, -1)
  disc = b**2 - (jnp.sum(o * o, -1) - 0.08**2)
  t_sphere = -b - jnp.sqrt(jnp.maximum(disc, 0.0))
  t_plane = (-0.12 - o[..., 2]) / d[..., 2]
  t = jnp.where(disc > 0, t_sphere, t_plane)
  x = o + t[..., None] * d
  colour = jnp.sin(jnp.stack([25 * x[..., 0], 25 * x[..., 1] + 1, 20 * (x[..., 0] + x[..., 2])], -1))
  batch = camera.yaw.shape[0]
  return colour.reshape(batch, RES, RES, 3), t.reshape(batch, RES, RES)


def _camera(yaw):
  return Camera(pitch=jnp.full((1,), jnp.pi / 2), yaw=jnp.full((1,), jnp.pi / 2 + yaw))


def test_same_view_warps_exactly():
  cam = _camera(0.1)
  image, depth = _scene(cam)
  error, kept = consistency.warp_error(image, depth, cam, image, depth, cam, fov_degrees=FOV,
                                       radius=RADIUS)
  assert float(error[0]) < 1e-3 and float(kept[0]) == 1.0


def test_correct_depth_warps_well_and_wrong_depth_does_not():
  cam_a, cam_b = _camera(-0.15), _camera(0.15)
  (image_a, depth_a), (image_b, depth_b) = _scene(cam_a), _scene(cam_b)
  args = dict(fov_degrees=FOV, radius=RADIUS)
  good, kept = consistency.warp_error(image_a, depth_a, cam_a, image_b, depth_b, cam_b, **args)
  flat_b = jnp.full_like(depth_b, 1.0)  # B's depth: a sphere through the origin instead
  bad, _ = consistency.warp_error(image_a, depth_a, cam_a, image_b, flat_b, cam_b, tolerance=1.0,
                                  **args)
  assert float(kept[0]) > 0.5  # the rest leaves A's frame or hides behind the sphere
  assert float(good[0]) < 4.0  # bilinear resampling of a smooth texture, 8-bit units
  assert float(bad[0]) > 4 * float(good[0])


def test_hidden_points_are_left_out():
  cam_a, cam_b = _camera(-0.15), _camera(0.15)
  (image_a, depth_a), (image_b, depth_b) = _scene(cam_a), _scene(cam_b)
  _, kept = consistency.warp_error(image_a, depth_a - 0.05, cam_a, image_b, depth_b, cam_b,
                                   fov_degrees=FOV, radius=RADIUS)
  # A's surface is 5 cm nearer everywhere: all hidden but a few silhouette pixels, where the
  # bilinear read mixes sphere and plane depths.
  assert float(kept[0]) < 0.03


@pytest.fixture(scope="module")
def face():
  return cm.landmark_arrays(procedural.load_procedural())


def _coefficients(camera, seed):
  from anifacegan_jax.face3d import geometry
  rng = np.random.default_rng(seed)
  coefficients = np.zeros((1, 257), np.float32)
  coefficients[:, cm.ID] = 0.5 * rng.standard_normal(80)
  coefficients[:, cm.ANGLE] = np.asarray(geometry.camera_to_angles(camera.pitch, camera.yaw))
  return jnp.asarray(coefficients)


def test_landmark_reprojection_in_the_same_view_is_zero_whatever_the_depth(face):
  cam = _camera(0.2)
  pred = _coefficients(cam, 0)
  depth = jnp.full((1, RES, RES), 0.9) + 0.1 * jnp.linspace(0, 1, RES)[None, :, None]
  px = consistency.landmark_reprojection_px(face, pred, pred, depth, cam, cam, fov_degrees=FOV,
                                            radius=RADIUS)
  assert float(px[0]) < 1e-3


def test_a_landmark_at_its_true_depth_reprojects_onto_its_detection(face):
  from anifacegan_jax.face3d import geometry
  cam_a, cam_b = _camera(-0.2), _camera(0.2)
  pred_a, pred_b = _coefficients(cam_a, 1), _coefficients(cam_b, 1)  # one face, two poses
  rows_a, cols_a = consistency.detected_landmarks(face, pred_a, RES, FOV, RADIUS)
  rows_b, cols_b = consistency.detected_landmarks(face, pred_b, RES, FOV, RADIUS)
  vertices = geometry.face_vertices(face, pred_a[0, cm.ID], pred_a[0, cm.EXP])
  world = geometry.model_to_world(geometry.landmarks_3d(face, vertices))[cm.LANDMARKS]
  origin = consistency.camera_origin(cam_a.pitch, cam_a.yaw, RADIUS)[0]
  distance = jnp.linalg.norm(world - origin, axis=-1)
  for i in (0, 13, 50):  # a brow, the nose tip, a lip
    for depth, close in ((distance[i], True), (distance[i] + 0.03, False)):
      rows, cols = consistency.reproject(rows_a, cols_a, jnp.full((1, RES, RES), depth), cam_a,
                                         cam_b, fov_degrees=FOV, radius=RADIUS)
      off = float(jnp.hypot(rows[0, i] - rows_b[0, i], cols[0, i] - cols_b[0, i]))
      assert (off < 1e-3) if close else (off > 0.1), (i, depth, off)
