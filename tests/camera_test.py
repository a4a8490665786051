"""Camera conventions of SPEC §1: poses, look-at frames, pixel rays, samples, background plane."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anifacegan_jax.rendering import camera as camera_lib
from anifacegan_jax.types import Camera


def test_frontal_camera_is_identity_rotation_at_unit_z():
  c2w = camera_lib.cam2world(Camera.frontal(1))[0]
  np.testing.assert_allclose(c2w[:3, :3], np.eye(3), atol=1e-6)
  np.testing.assert_allclose(c2w[:3, 3], [0.0, 0.0, 1.0], atol=1e-6)
  np.testing.assert_allclose(c2w[3], [0.0, 0.0, 0.0, 1.0])


@pytest.mark.parametrize("pitch,yaw", [(1.2, 1.9), (1.7, 1.3), (np.pi / 2, 2.5)])
def test_look_at_is_orthonormal_and_points_at_origin(pitch, yaw):
  cam = Camera(pitch=jnp.array([pitch]), yaw=jnp.array([yaw]))
  c2w = np.asarray(camera_lib.cam2world(cam, radius=1.0)[0])
  rot, origin = c2w[:3, :3], c2w[:3, 3]
  np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-6)
  assert np.linalg.det(rot) == pytest.approx(1.0, abs=1e-6)
  np.testing.assert_allclose(np.linalg.norm(origin), 1.0, atol=1e-6)
  np.testing.assert_allclose(-rot[:, 2], -origin, atol=1e-6)  # camera looks down its -z at 0
  assert rot[1, 1] > 0  # camera up has a positive world-y component


def test_pixel_directions_span_the_field_of_view():
  dirs = np.asarray(camera_lib.pixel_directions(5, fov_degrees=12.0)).reshape(5, 5, 3)
  np.testing.assert_allclose(dirs[2, 2], [0.0, 0.0, -1.0], atol=1e-7)
  # Pixel centres sit on ±1: the middle of the left edge is exactly half the fov off-axis.
  angle = np.degrees(np.arctan2(-dirs[2, 0, 0], -dirs[2, 0, 2]))
  assert angle == pytest.approx(6.0, abs=1e-4)
  assert dirs[0, 2, 1] > 0 and dirs[4, 2, 1] < 0  # row 0 is the top
  assert dirs[2, 0, 0] < 0 and dirs[2, 4, 0] > 0  # column 0 is the left


def test_centre_ray_of_any_camera_passes_through_origin():
  cam = Camera(pitch=jnp.array([1.3, 1.8]), yaw=jnp.array([2.0, 1.1]))
  rays = camera_lib.generate_rays(cam, resolution=7)
  centre = 3 * 7 + 3
  o, d = rays.origins[:, centre], rays.directions[:, centre]
  t = -jnp.sum(o * d, axis=-1)  # closest approach to the origin
  np.testing.assert_allclose(o + t[:, None] * d, 0.0, atol=1e-6)
  np.testing.assert_allclose(jnp.linalg.norm(rays.directions, axis=-1), 1.0, atol=1e-6)


def test_projection_inverts_the_pixel_rays():
  """A point along any pixel ray projects back to that pixel: (x, y)·tan(fov/2) on the grid."""
  cam = Camera(pitch=jnp.array([1.4, 1.75]), yaw=jnp.array([1.9, 1.2]))
  rays = camera_lib.generate_rays(cam, resolution=5, fov_degrees=12.0, radius=1.0)
  points = rays.origins + 0.97 * rays.directions  # (2, 25, 3)
  projected = camera_lib.project_points(cam, points, radius=1.0)
  coords = np.linspace(-1.0, 1.0, 5)
  y, x = np.meshgrid(-coords, coords, indexing="ij")
  expected = np.tan(np.radians(6.0)) * np.stack([x, y], -1).reshape(1, 25, 2)
  np.testing.assert_allclose(projected, np.broadcast_to(expected, (2, 25, 2)), atol=1e-6)


def test_samples_and_background_plane():
  rays = camera_lib.generate_rays(Camera.frontal(1), resolution=4)
  t = camera_lib.sample_distances(0.88, 1.12, 64)
  assert t.shape == (64,) and float(t[1] - t[0]) == pytest.approx(0.24 / 63, rel=1e-4)
  points = camera_lib.sample_points(rays, t)
  assert points.shape == (1, 16, 64, 3)
  np.testing.assert_allclose(jnp.linalg.norm(points[0, :, 10] - rays.origins[0], axis=-1),
                             t[10], rtol=1e-6)
  background = camera_lib.background_points(rays, plane_z=-0.12)
  np.testing.assert_allclose(background[..., 2], -0.12, atol=1e-6)


def test_pose_prior_is_clamped_and_centred():
  cam = camera_lib.sample_camera(jax.random.key(0), 4096, yaw_std=3.0, pitch_std=3.0, clamp=1.3)
  assert float(jnp.abs(cam.yaw - np.pi / 2).max()) <= 1.3 + 1e-6
  assert float(jnp.abs(cam.pitch - np.pi / 2).max()) <= 1.3 + 1e-6
  cam = camera_lib.sample_camera(jax.random.key(1), 1, yaw_std=0.3, pitch_std=0.155, clamp=1.3)
  assert cam.as_pose().shape == (1, 2)
