"""Depth PNGs, depth meshes and PLY / OBJ files of `anifacegan_jax.export`, closed-form checks
(read back with the tests' own readers, `mesh_files.py`)."""

import math

import numpy as np
import pytest
from PIL import Image

from anifacegan_jax import export
from anifacegan_jax.types import Mesh
from mesh_files import read_depth_png, read_mesh, read_obj, read_ply

HALF_PI = math.pi / 2
STEP = (export.DEFAULT_FAR - export.DEFAULT_NEAR) / 65535


def _expected_frontal_vertices(depth, fov_degrees=12.0):
  """(R, R, 3) origin + depth·direction of a frontal camera at (0, 0, 1), rays in closed form."""
  resolution = depth.shape[0]
  coords = np.linspace(-1.0, 1.0, resolution)
  y, x = np.meshgrid(-coords, coords, indexing="ij")
  z = np.full_like(x, -1.0 / math.tan(math.radians(fov_degrees) / 2))
  directions = np.stack([x, y, z], -1)
  directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
  return np.array([0.0, 0.0, 1.0]) + depth[..., None] * directions


def _normals(mesh):
  corners = mesh.vertices.astype(np.float64)[mesh.faces]
  return np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])


def _sample_mesh(colors=True):
  depth = np.full((4, 4), 0.97, np.float32)
  depth[1:3, 1:3] = 0.95
  mask = np.ones((4, 4), bool)
  mask[0, 3] = False
  rgb = np.random.default_rng(0).integers(0, 256, (4, 4, 3), np.uint8) if colors else None
  return export.depth_mesh(depth, 1.4, 1.9, mask=mask, colors=rgb, max_edge=math.inf)


# ------------------------------------------------------------------------------------------------
# Depth maps.


def test_depth_to_uint16_maps_near_and_far_to_the_ends_and_clips():
  depth = np.array([[0.88, 1.12, 0.5], [3.0, 0.88 + 1000 * STEP, 1.12 - 7 * STEP]])
  np.testing.assert_array_equal(export.depth_to_uint16(depth),
                                [[0, 65535, 0], [65535, 1000, 65528]])
  assert export.depth_to_uint16(depth).dtype == np.uint16
  assert export.depth_to_uint16(np.array([[2.0]]), near=1.0, far=3.0)[0, 0] in (32767, 32768)


def test_depth_png_round_trip_is_within_quantisation(tmp_path):
  depth = np.random.default_rng(1).uniform(0.85, 1.15, (6, 7)).astype(np.float32)
  path = export.write_depth_png(tmp_path / "a" / "b" / "depth.png", depth)
  assert path == tmp_path / "a" / "b" / "depth.png"
  with Image.open(path) as image:
    assert image.mode == "I;16" and image.size == (7, 6)
  restored = read_depth_png(path, export.DEFAULT_NEAR, export.DEFAULT_FAR)
  assert restored.dtype == np.float32 and restored.shape == (6, 7)
  clipped = np.clip(depth, export.DEFAULT_NEAR, export.DEFAULT_FAR)
  assert np.max(np.abs(restored - clipped)) <= STEP / 2 + 1e-7


def test_depth_png_custom_range_round_trip(tmp_path):
  depth = np.linspace(2.0, 4.0, 12).reshape(3, 4)
  path = export.write_depth_png(tmp_path / "depth.png", depth, near=2.0, far=4.0)
  restored = read_depth_png(path, near=2.0, far=4.0)
  assert np.max(np.abs(restored - depth)) <= 2.0 / 65535 / 2 + 1e-6


def test_depth_preview_is_bright_near_and_black_background():
  depth = np.array([[0.88, 1.0], [1.12, 0.9]])
  mask = np.array([[True, True], [True, False]])
  preview = export.depth_preview(depth, mask, 0.88, 1.12)
  assert preview.dtype == np.uint8
  np.testing.assert_array_equal(preview, [[255, 128], [0, 0]])


@pytest.mark.parametrize("depth,match", [
    (np.ones((2, 2, 2)), "depth must be a 2-D"),
    (np.array([[1.0, np.nan]]), "depth must be finite"),
    (np.array([[1.0, np.inf]]), "depth must be finite"),
])
def test_bad_depth_raises(depth, match):
  with pytest.raises(ValueError, match=match):
    export.depth_to_uint16(depth)


def test_near_not_below_far_raises(tmp_path):
  with pytest.raises(ValueError, match="near must be < far"):
    export.depth_to_uint16(np.ones((2, 2)), near=1.0, far=1.0)
  with pytest.raises(ValueError, match="near must be < far"):
    export.depth_preview(np.ones((2, 2)), np.ones((2, 2), bool), near=1.2, far=1.0)
  with pytest.raises(ValueError, match="mask must have the shape"):
    export.depth_preview(np.ones((2, 2)), np.ones((3, 2), bool))


# ------------------------------------------------------------------------------------------------
# Meshes from one view.


def _plane_depth(normal, offset=-1.0, resolution=16, fov=12.0):
  """Depth along each camera ray (x right, y up, looking down −z) of the plane n·p = offset."""
  from anifacegan_jax.rendering import camera
  directions = np.asarray(camera.pixel_directions(resolution, fov)).reshape(
      resolution, resolution, 3)
  return offset / (directions @ np.asarray(normal, np.float64))


@pytest.mark.parametrize("normal", [(0.0, 0.0, 1.0), (1.0, 0.0, 1.0), (0.0, -1.0, 2.0)])
def test_normal_map_of_a_plane_is_its_normal(normal):
  normal = np.asarray(normal) / np.linalg.norm(normal)
  mask = np.ones((16, 16), bool)
  mask[:4, :5] = False
  mask[9, 9] = False  # a hole: its neighbours take one-sided differences
  colors = export.normal_map(_plane_depth(normal), mask)
  assert colors.dtype == np.uint8 and colors.shape == (16, 16, 3)
  expected = np.round((normal + 1) * 127.5)
  np.testing.assert_allclose(colors[mask], np.broadcast_to(expected, colors[mask].shape), atol=1)
  assert (colors[~mask] == 0).all()


def test_normal_map_turns_normals_towards_the_camera_and_checks_its_input():
  depth = _plane_depth((0.0, 0.0, 1.0))
  one_pixel = np.zeros((16, 16), bool)
  one_pixel[3, 3] = True  # no foreground neighbour: faces the camera
  assert abs(int(export.normal_map(depth, one_pixel)[3, 3, 2]) - 255) <= 1
  with pytest.raises(ValueError, match="mask must have the shape"):
    export.normal_map(depth, np.ones((8, 8), bool))
  with pytest.raises(ValueError, match="fov_degrees"):
    export.normal_map(depth, np.ones((16, 16), bool), fov_degrees=200)
  with pytest.raises(ValueError, match="square"):
    export.normal_map(depth[:, :8], np.ones((16, 8), bool))


def test_frontal_constant_depth_mesh_is_a_sphere_cap():
  resolution, distance = 5, 0.95
  depth = np.full((resolution, resolution), distance, np.float32)
  mask = np.ones((resolution, resolution), bool)
  mesh = export.depth_mesh(depth, HALF_PI, HALF_PI, mask=mask)
  assert mesh.vertices.dtype == np.float32 and mesh.faces.dtype == np.int32
  assert mesh.vertices.shape == (resolution**2, 3) and mesh.colors is None
  np.testing.assert_allclose(np.linalg.norm(mesh.vertices - [0.0, 0.0, 1.0], axis=1), distance,
                             rtol=1e-6)
  np.testing.assert_allclose(mesh.vertices[12], [0.0, 0.0, 1.0 - distance], atol=1e-6)
  np.testing.assert_allclose(mesh.vertices, _expected_frontal_vertices(depth).reshape(-1, 3),
                             atol=1e-6)
  assert mesh.vertices[0, 0] < 0 < mesh.vertices[0, 1]  # row 0 is the top, column 0 the left
  assert mesh.faces.shape == (2 * (resolution - 1)**2, 3)
  normals = _normals(mesh)
  assert np.all(normals[:, 2] > 0)  # counter-clockwise seen from the camera at +z
  np.testing.assert_array_equal(mesh.faces[:2], [[0, 5, 6], [0, 6, 1]])


def test_mask_with_a_hole_removes_the_four_quads_around_it():
  resolution = 5
  mask = np.ones((resolution, resolution), bool)
  mask[2, 2] = False
  mesh = export.depth_mesh(np.full(mask.shape, 1.0), HALF_PI, HALF_PI, mask=mask, max_edge=0.1)
  assert len(mesh.vertices) == mask.sum() == 24
  pixels = np.argwhere(mask)  # row-major, the vertex numbering
  np.testing.assert_allclose(mesh.vertices, _expected_frontal_vertices(
      np.ones(mask.shape))[mask], atol=1e-6)
  quads = {}
  for face in mesh.faces:
    rows, cols = pixels[face, 0], pixels[face, 1]
    corner = (rows.min(), cols.min())
    assert rows.max() - corner[0] == 1 and cols.max() - corner[1] == 1
    quads[corner] = quads.get(corner, 0) + 1
  expected = {(i, j) for i in range(4) for j in range(4)} - {(1, 1), (1, 2), (2, 1), (2, 2)}
  assert set(quads) == expected and set(quads.values()) == {2}
  assert np.all(_normals(mesh)[:, 2] > 0)


def test_max_edge_drops_triangles_across_a_depth_step():
  depth = np.full((6, 6), 0.9)
  depth[:, 3:] = 1.0
  mask = np.ones((6, 6), bool)
  # Neighbouring pixels are ≈ 0.042 apart (2·tan 6°/5 at depth ≈ 1): the step adds 0.1.
  kept = export.depth_mesh(depth, HALF_PI, HALF_PI, mask=mask, max_edge=0.08)
  assert len(kept.faces) == 2 * (25 - 5)
  pixel_cols = np.argwhere(mask)[:, 1]
  face_cols = pixel_cols[kept.faces]
  assert np.all((face_cols.max(1) <= 2) | (face_cols.min(1) >= 3))
  everything = export.depth_mesh(depth, HALF_PI, HALF_PI, mask=mask, max_edge=math.inf)
  assert len(everything.faces) == 50
  # The default limit is 3 pixel footprints (3 · 0.042): it keeps this 0.1 step, not a 0.3 one.
  assert len(export.depth_mesh(depth, HALF_PI, HALF_PI, mask=mask).faces) == 50
  depth[:, 3:] = 1.2
  assert len(export.depth_mesh(depth, HALF_PI, HALF_PI, mask=mask).faces) == 40


@pytest.mark.parametrize("pitch,yaw", [(1.3, 1.9), (1.75, 1.2)])
def test_oblique_view_centre_pixel_and_normals(pitch, yaw):
  radius, distance = 1.2, 1.05
  depth = np.full((5, 5), distance)
  mesh = export.depth_mesh(depth, pitch, yaw, mask=np.ones((5, 5), bool), radius=radius,
                           max_edge=math.inf)
  assert len(mesh.faces) == 32
  origin = radius * np.array([math.sin(pitch) * math.cos(yaw), math.cos(pitch),
                              math.sin(pitch) * math.sin(yaw)])
  np.testing.assert_allclose(mesh.vertices[12], origin * (1 - distance / radius), atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(mesh.vertices - origin, axis=1), distance, rtol=1e-6)
  centroids = mesh.vertices.astype(np.float64)[mesh.faces].mean(axis=1)
  assert np.all(np.sum(_normals(mesh) * (origin - centroids), axis=1) > 0)


def test_colors_float_and_uint8():
  mask = np.ones((3, 3), bool)
  mask[0, 0] = False
  image = np.zeros((3, 3, 3), np.float32)
  image[0, 1] = [-1.0, 1.0, 0.0]
  image[2, 2] = [-2.0, 2.0, 0.5]
  mesh = export.depth_mesh(np.ones((3, 3)), HALF_PI, HALF_PI, mask=mask, colors=image)
  assert mesh.colors.dtype == np.float32 and mesh.colors.shape == (8, 3)
  np.testing.assert_array_equal(mesh.colors[0] * 255, [0, 255, 128])
  np.testing.assert_array_equal(mesh.colors[-1] * 255, [0, 255, 191])
  rgb = np.arange(27, dtype=np.uint8).reshape(3, 3, 3)
  mesh = export.depth_mesh(np.ones((3, 3)), HALF_PI, HALF_PI, mask=mask, colors=rgb)
  np.testing.assert_array_equal(mesh.colors * np.float32(255), rgb[mask])


@pytest.mark.parametrize("kwargs,match", [
    (dict(depth=np.ones((3, 3, 1))), r"depth must be a square \(R, R\)"),
    (dict(depth=np.ones((3, 4))), r"depth must be a square \(R, R\)"),
    (dict(depth=np.full((3, 3), np.nan)), "depth must be finite"),
    (dict(mask=np.ones((4, 3), bool)), r"mask must have the shape of depth \(3, 3\)"),
    (dict(mask=np.ones((3, 3))), "mask must be a boolean"),
    (dict(colors=np.zeros((3, 3))), r"colors must have shape \(R, R, 3\)"),
    (dict(colors=np.zeros((3, 3, 3), np.int32)), "colors must be uint8 or float"),
    (dict(camera_pitch=np.ones(2)), "camera_pitch must be a real scalar"),
    (dict(max_edge=0.0), "max_edge must be positive"),
])
def test_depth_mesh_bad_inputs_raise(kwargs, match):
  arguments = dict(depth=np.ones((3, 3)), camera_pitch=HALF_PI, camera_yaw=HALF_PI,
                   mask=np.ones((3, 3), bool))
  arguments.update(kwargs)
  with pytest.raises(ValueError, match=match):
    export.depth_mesh(arguments.pop("depth"), arguments.pop("camera_pitch"),
                      arguments.pop("camera_yaw"), **arguments)


def test_nan_depth_outside_the_mask_is_ignored():
  depth = np.ones((3, 3))
  depth[0, 0] = np.nan
  mask = np.ones((3, 3), bool)
  mask[0, 0] = False
  mesh = export.depth_mesh(depth, HALF_PI, HALF_PI, mask=mask)
  assert len(mesh.vertices) == 8 and np.all(np.isfinite(mesh.vertices))


# ------------------------------------------------------------------------------------------------
# Files.


def _assert_same(mesh, restored, rtol=0.0):
  assert restored.vertices.dtype == np.float32 and restored.faces.dtype == np.int32
  if rtol:
    np.testing.assert_allclose(restored.vertices, mesh.vertices, rtol=rtol, atol=0)
  else:
    np.testing.assert_array_equal(restored.vertices, mesh.vertices)
  np.testing.assert_array_equal(restored.faces, mesh.faces)
  if mesh.colors is None:
    assert restored.colors is None
  else:  # the files hold 8-bit colours (PLY) or six digits (OBJ)
    np.testing.assert_array_equal(np.round(restored.colors * 255), np.round(mesh.colors * 255))


@pytest.mark.parametrize("colors", [True, False])
@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trip(tmp_path, binary, colors):
  mesh = _sample_mesh(colors)
  assert len(mesh.faces) > 0
  path = export.write_ply(tmp_path / "out" / "mesh.ply", mesh, binary=binary)
  header = path.read_bytes().split(b"end_header\n")[0].decode()
  assert ("binary_little_endian" if binary else "ascii") in header
  assert ("property uchar red" in header) == colors
  _assert_same(mesh, read_ply(path), rtol=0.0 if binary else 1e-6)


@pytest.mark.parametrize("colors", [True, False])
def test_obj_round_trip(tmp_path, colors):
  mesh = _sample_mesh(colors)
  path = export.write_obj(tmp_path / "out" / "mesh.obj", mesh)
  first_face = next(line for line in path.read_text().splitlines() if line.startswith("f "))
  assert first_face == "f " + " ".join(str(i + 1) for i in mesh.faces[0])
  _assert_same(mesh, read_obj(path), rtol=1e-6)


def test_write_mesh_dispatches_on_the_suffix(tmp_path):
  mesh = _sample_mesh()
  for name in ("a.ply", "b.OBJ"):
    path = export.write_mesh(tmp_path / name, mesh)
    _assert_same(mesh, read_mesh(path), rtol=1e-6)
  assert (tmp_path / "a.ply").read_bytes().startswith(b"ply\nformat binary_little_endian")
  with pytest.raises(ValueError, match=r"unsupported mesh suffix '\.stl'.*\.ply, \.obj"):
    export.write_mesh(tmp_path / "c.stl", mesh)


def test_empty_mesh_round_trips(tmp_path):
  mesh = Mesh(vertices=np.zeros((0, 3), np.float32), faces=np.zeros((0, 3), np.int32))
  for path in (tmp_path / "e.ply", tmp_path / "e.obj"):
    _assert_same(mesh, read_mesh(export.write_mesh(path, mesh)))
  _assert_same(mesh, read_ply(export.write_ply(tmp_path / "a.ply", mesh, binary=False)))


def test_mesh_checks_its_arrays():
  with pytest.raises(ValueError, match=r"faces index vertices out of range \[0, 3\)"):
    Mesh(np.zeros((3, 3)), np.array([[0, 1, 3]]))
  with pytest.raises(ValueError, match="colors must be floats in \\[0, 1\\]"):
    Mesh(np.zeros((3, 3)), np.array([[0, 1, 2]]), colors=np.zeros((3, 3), np.uint8))
  with pytest.raises(ValueError, match="vertices must be finite"):
    Mesh(np.full((3, 3), np.nan), np.array([[0, 1, 2]]))
  mesh = Mesh(np.zeros((3, 3)), np.array([[0, 1, 2]]), colors=np.ones((3, 3)), closed=True)
  assert mesh.vertices.dtype == np.float64 and mesh.faces.dtype == np.int32 and mesh.closed
  with pytest.raises(ValueError):
    mesh.vertices[0, 0] = 1.0  # read-only
