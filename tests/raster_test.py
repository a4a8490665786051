"""The numpy rasteriser: camera parity with rendering/camera.py, coverage rules, perspective-correct
barycentrics, depth, z-buffer order, crack-free closed meshes, SH shading, scene determinism."""

import jax.numpy as jnp
import numpy as np
import pytest

from anifacegan_jax.rendering import camera as camera_lib
from anifacegan_jax.synthfaces import raster, scene, shading
from anifacegan_jax.types import Camera, Mesh

HALF_PI = np.pi / 2
FOCAL = 1.0 / np.tan(np.deg2rad(6.0))
POSES = [(HALF_PI, HALF_PI), (HALF_PI - 0.2, HALF_PI + 0.4), (HALF_PI + 0.15, HALF_PI - 0.35)]


def _rays(pitch, yaw, resolution):
  rays = camera_lib.generate_rays(Camera(pitch=jnp.float32(pitch), yaw=jnp.float32(yaw)),
                                  resolution)
  return (np.asarray(rays.origins, np.float64).reshape(resolution, resolution, 3),
          np.asarray(rays.directions, np.float64).reshape(resolution, resolution, 3))


def _frontal_plane_point(px, py, resolution, z=0.0):
  """World point on the plane z (frontal camera at (0, 0, 1)) that projects to pixel (px, py)."""
  half = (resolution - 1) / 2
  distance = 1.0 - z
  return np.array([(px / half - 1) / FOCAL * distance, (1 - py / half) / FOCAL * distance, z])


def _icosphere(subdivisions, radius=0.08):
  """A closed, consistently wound sphere with shared vertices."""
  t = (1 + 5**0.5) / 2
  vertices = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t),
              (0, 1, -t), (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
  faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4),
           (11, 10, 2), (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8),
           (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
  vertices = [np.array(v, float) / np.linalg.norm(v) for v in vertices]
  for _ in range(subdivisions):
    midpoint, new_faces = {}, []

    def middle(i, j):
      key = (min(i, j), max(i, j))
      if key not in midpoint:
        m = vertices[i] + vertices[j]
        vertices.append(m / np.linalg.norm(m))
        midpoint[key] = len(vertices) - 1
      return midpoint[key]

    for a, b, c in faces:
      ab, bc, ca = middle(a, b), middle(b, c), middle(c, a)
      new_faces += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
    faces = new_faces
  return radius * np.array(vertices), np.array(faces, np.int32)


def _standin_face():
  """A front half-ellipsoid with a nose bump, world units (0.16 wide, facing +z): (N, 3), (T, 3)."""
  r, a = np.meshgrid(np.linspace(0.05, 1, 12), np.linspace(0, 2 * np.pi, 24, endpoint=False),
                     indexing="ij")
  x, y = 0.08 * r * np.cos(a), 0.1 * r * np.sin(a) - 0.01
  z = -0.05 + 0.09 * np.sqrt(np.clip(1 - (x / 0.08) ** 2, 0, 1)) * (1 - 0.35 * ((y + 0.01) / 0.1)
                                                                      ** 2)
  z += 0.035 * np.exp(-((x / 0.013) ** 2 + ((y + 0.01) / 0.028) ** 2))
  i, j = np.meshgrid(np.arange(11), np.arange(24), indexing="ij")
  a, b = i * 24 + j, i * 24 + (j + 1) % 24
  triangles = np.concatenate([np.stack([a, b, a + 24], -1), np.stack([b, b + 24, a + 24], -1)])
  return np.stack([x, y, z], -1).reshape(-1, 3), triangles.reshape(-1, 3)


# ------------------------------------------------------------------------------------------ camera


@pytest.mark.parametrize("pitch,yaw", POSES)
def test_project_points_lands_on_the_generators_rays(pitch, yaw):
  resolution = 9
  origins, directions = _rays(pitch, yaw, resolution)
  rows, cols = np.meshgrid(np.arange(resolution), np.arange(resolution), indexing="ij")
  t = 0.8 + 0.4 * np.random.default_rng(0).random((resolution, resolution))
  points = origins + t[..., None] * directions
  xy, depth = raster.project_points(points, pitch, yaw, resolution)
  np.testing.assert_allclose(xy[..., 0], cols, atol=2e-4)
  np.testing.assert_allclose(xy[..., 1], rows, atol=2e-4)
  np.testing.assert_allclose(depth, t, atol=1e-6)


def test_camera_frame_matches_cam2world():
  for pitch, yaw in POSES:
    c2w = np.asarray(camera_lib.cam2world(Camera(pitch=jnp.float32(pitch), yaw=jnp.float32(yaw))))
    origin, rotation = raster.camera_frame(pitch, yaw)
    np.testing.assert_allclose(rotation, c2w[:3, :3], atol=1e-6)
    np.testing.assert_allclose(origin, c2w[:3, 3], atol=1e-6)


# ------------------------------------------------------------------------------------- rasteriser


def test_single_triangle_coverage_and_barycentrics():
  resolution = 16
  corners_px = np.array([[1.5, 1.5], [12.7, 1.5], [1.5, 12.7]])  # no pixel centre on an edge
  vertices = np.stack([_frontal_plane_point(x, y, resolution) for x, y in corners_px])
  frags = raster.rasterize(vertices, [[0, 1, 2]], HALF_PI, HALF_PI, resolution)
  i, j = np.meshgrid(np.arange(resolution), np.arange(resolution), indexing="ij")
  inside = (i >= 2) & (j >= 2) & ((j - 1.5) + (i - 1.5) < 11.2)
  np.testing.assert_array_equal(frags.triangle_id >= 0, inside)
  # A fronto-parallel triangle: perspective-correct = screen-linear barycentrics.
  for row, col in [(2, 2), (5, 9), (10, 3)]:
    b1, b2 = (col - 1.5) / 11.2, (row - 1.5) / 11.2
    np.testing.assert_allclose(frags.barycentric[row, col], [1 - b1 - b2, b1, b2], atol=1e-5)
  assert np.all(np.isinf(frags.depth[~inside])) and np.all(frags.barycentric[~inside] == 0)


@pytest.mark.parametrize("pitch,yaw", POSES)
def test_perspective_correct_barycentrics_recover_points_on_the_rays(pitch, yaw):
  resolution = 24
  # A tilted quad: depth varies strongly across it, so screen-linear weights would be off.
  quad = np.array([[-0.3, -0.25, -0.2], [0.3, -0.3, 0.15], [0.3, 0.3, 0.05], [-0.3, 0.3, -0.15]])
  triangles = np.array([[0, 1, 2], [0, 2, 3]])
  frags = raster.rasterize(quad, triangles, pitch, yaw, resolution)
  hit = frags.triangle_id >= 0
  assert hit.sum() > 0.8 * resolution**2
  points = np.einsum("hwk,hwkc->hwc", frags.barycentric,
                     quad[triangles[np.maximum(frags.triangle_id, 0)]])
  origins, directions = _rays(pitch, yaw, resolution)
  on_ray = origins + frags.depth[..., None] * directions
  np.testing.assert_allclose(points[hit], on_ray[hit], atol=2e-5)


def test_depth_of_a_fronto_parallel_plane_at_the_centre_pixel():
  for pitch, yaw in POSES:
    origin, rotation = raster.camera_frame(pitch, yaw)
    forward = -rotation[:, 2]
    centre = origin + 0.93 * forward  # plane through this point, facing the camera
    u, v = rotation[:, 0], rotation[:, 1]
    quad = centre + 0.5 * np.array([-u - v, u - v, u + v, -u + v])
    frags = raster.rasterize(quad, [[0, 1, 2], [0, 2, 3]], pitch, yaw, 15)
    assert frags.depth[7, 7] == pytest.approx(0.93, abs=1e-6)
    # Off-centre pixels are further away along their (oblique) rays: t = 0.93 / cos(angle).
    _, directions = _rays(pitch, yaw, 15)
    np.testing.assert_allclose(frags.depth, 0.93 / (directions @ forward), rtol=1e-6)


def test_nearer_triangle_wins_regardless_of_order():
  resolution = 12
  near = np.array([[-0.1, -0.1, 0.05], [0.1, -0.1, 0.05], [0.0, 0.1, 0.05]])
  far = np.array([[-0.1, 0.1, -0.05], [0.1, 0.1, -0.05], [0.0, -0.1, -0.05]])
  for first, second, near_id in [(near, far, 0), (far, near, 1)]:
    frags = raster.rasterize(np.concatenate([first, second]), [[0, 1, 2], [3, 4, 5]], HALF_PI,
                             HALF_PI, resolution)
    centre = frags.triangle_id[5:7, 5:7]
    np.testing.assert_array_equal(centre, near_id)
    np.testing.assert_allclose(frags.depth[5:7, 5:7], 0.95, atol=2e-3)
  # Coplanar duplicates: the lower triangle index wins, deterministically.
  frags = raster.rasterize(np.concatenate([near, near]), [[3, 4, 5], [0, 1, 2]], HALF_PI,
                           HALF_PI, resolution)
  assert set(np.unique(frags.triangle_id)) == {-1, 0}


@pytest.mark.parametrize("pitch,yaw", POSES)
def test_closed_sphere_has_no_cracks(pitch, yaw):
  vertices, triangles = _icosphere(3)  # 1280 triangles, shared edges everywhere
  frags = raster.rasterize(vertices, triangles, pitch, yaw, 64, supersample=2)
  # Every sample whose ray passes well inside the polyhedron's inscribed sphere is covered.
  origin, rotation = raster.camera_frame(pitch, yaw)
  samples = (np.arange(128) + 0.5) / 2 - 0.5
  ndc = samples / (63 / 2) - 1
  x, y = np.meshgrid(ndc, -ndc, indexing="xy")
  dirs = np.stack([x, y, -np.full_like(x, FOCAL)], -1) @ rotation.T
  dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
  miss = np.linalg.norm(np.cross(dirs, -origin), axis=-1)  # distance of the ray from the centre
  must_cover = miss < 0.95 * 0.08
  assert must_cover.sum() > 1000
  assert np.all(frags.triangle_id[must_cover] >= 0)
  assert np.all(frags.triangle_id[miss > 0.0801] < 0)


def test_shared_edges_through_pixel_centres_are_covered_exactly_once():
  resolution, cells = 17, 8
  # A frontal grid whose vertices and edges pass exactly through pixel centres (top-left rule).
  grid = np.stack([_frontal_plane_point(2 * c, 2 * r, resolution) for r in range(cells + 1)
                   for c in range(cells + 1)])
  a = (np.arange(cells)[:, None] * (cells + 1) + np.arange(cells)[None, :]).reshape(-1)
  triangles = np.concatenate([np.stack([a, a + 1, a + cells + 2], -1),
                              np.stack([a, a + cells + 2, a + cells + 1], -1)])
  counts = sum((raster.rasterize(grid, [t], HALF_PI, HALF_PI, resolution).triangle_id >= 0)
               .astype(int) for t in triangles)
  # Interior samples (not on the outer boundary) each belong to exactly one triangle.
  np.testing.assert_array_equal(counts[1:16, 1:16], 1)
  together = raster.rasterize(grid, triangles, HALF_PI, HALF_PI, resolution)
  assert np.all(together.triangle_id[1:16, 1:16] >= 0)


def test_triangles_behind_the_camera_and_off_screen_are_skipped():
  behind = np.array([[-0.1, -0.1, 1.5], [0.1, -0.1, 1.5], [0.0, 0.1, 1.5]])
  crossing = np.array([[-0.1, -0.1, 1.5], [0.1, -0.1, 0.0], [0.0, 0.1, 0.0]])
  off_screen = np.array([[0.5, 0.5, 0.0], [0.7, 0.5, 0.0], [0.6, 0.7, 0.0]])
  for triangle in (behind, crossing, off_screen):
    frags = raster.rasterize(triangle, [[0, 1, 2]], HALF_PI, HALF_PI, 16)
    assert np.all(frags.triangle_id == -1)


# ----------------------------------------------------------------------------------------- shading


def test_sh_shading_with_zero_gamma_is_ambient():
  rng = np.random.default_rng(0)
  albedo = rng.random((20, 3))
  normals = rng.normal(size=(20, 3))
  normals /= np.linalg.norm(normals, axis=1, keepdims=True)
  shaded = shading.shade_vertices(albedo, normals, np.zeros(27))
  np.testing.assert_allclose(shaded, albedo * 0.8 * np.pi / np.sqrt(4 * np.pi), rtol=1e-6)


def test_sh_shading_first_order_term_follows_the_normal():
  gamma = np.zeros(27)
  gamma[[2, 11, 20]] = 0.3  # Y_2 ∝ +n_z: a light from +z (in front of the face)
  normals = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
  shaded = shading.shade_vertices(np.ones((2, 3)), normals, gamma)
  assert np.all(shaded[0] > shaded[1])


def test_vertex_normals_of_a_sphere_are_radial():
  vertices, triangles = _icosphere(2)
  normals = shading.vertex_normals(vertices, triangles)
  np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, rtol=1e-6)
  cosine = np.sum(normals * vertices, axis=1) / np.linalg.norm(vertices, axis=1)
  assert cosine.min() > 0.999  # outward (counter-clockwise faces), radial up to tessellation


# ------------------------------------------------------------------------------------------ render


def test_render_shapes_ranges_and_compositing():
  vertices, triangles = _icosphere(2)
  mesh = Mesh(vertices, triangles, np.full((len(vertices), 3), 0.25), closed=True)
  result = raster.render([mesh], HALF_PI, HALF_PI, 32, np.array([1.0, 0.0, 0.0]))
  assert result.image.shape == (32, 32, 3) and result.image.dtype == np.float32
  assert result.mask.shape == result.depth.shape == (32, 32)
  assert result.mesh_coverage.shape == (1, 32, 32)
  assert 0 <= result.image.min() and result.image.max() <= 1
  np.testing.assert_allclose(result.image[16, 16], 0.25, atol=1e-6)  # fully covered: mesh colour
  np.testing.assert_allclose(result.image[0, 0], [1, 0, 0])  # empty: background
  np.testing.assert_allclose(result.mesh_coverage[0], result.mask)
  assert np.isinf(result.depth[0, 0]) and 0.9 < result.depth[16, 16] < 0.93


def test_anti_aliased_edge_pixel_gets_fractional_coverage():
  resolution = 16
  # A large triangle whose right edge is the vertical line x = 7.1 (pixel coordinates): with 2×2
  # samples at ±0.25 around pixel 7's centre, exactly half of pixel column 7 is covered.
  vertices = np.stack([_frontal_plane_point(x, y, resolution)
                       for x, y in [(-20.0, -20.0), (7.1, -20.0), (7.1, 40.0)]])
  mesh = Mesh(vertices, np.array([[0, 1, 2]]), np.ones((3, 3)))
  result = raster.render([mesh], HALF_PI, HALF_PI, resolution, np.zeros(3), supersample=2)
  row = 12  # well inside the triangle's vertical extent
  np.testing.assert_allclose(result.mask[row, :7], 1.0)
  assert result.mask[row, 7] == pytest.approx(0.5)
  np.testing.assert_allclose(result.mask[row, 8:], 0.0)
  assert result.image[row, 7, 0] == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------- scene


def test_head_mesh_and_background_are_deterministic():
  face, _ = _standin_face()
  first = scene.head_mesh(face, np.random.default_rng(7))
  second = scene.head_mesh(face, np.random.default_rng(7))
  assert len(first) == len(second) >= 3
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a.vertices, b.vertices)
    np.testing.assert_array_equal(a.faces, b.faces)
    np.testing.assert_array_equal(a.colors, b.colors)
  other = scene.head_mesh(face, np.random.default_rng(8))
  assert not np.array_equal(first[-1].vertices, other[-1].vertices)
  backgrounds = [scene.random_background(np.random.default_rng(seed), 24) for seed in (3, 3, 4)]
  np.testing.assert_array_equal(backgrounds[0], backgrounds[1])
  assert backgrounds[0].shape == (24, 24, 3) and backgrounds[0].dtype == np.float32
  assert 0 <= min(b.min() for b in backgrounds) and max(b.max() for b in backgrounds) <= 1


def test_head_scene_renders_a_solid_head():
  face, triangles = _standin_face()
  meshes = [Mesh(face, triangles, np.full_like(face, 0.6))]
  meshes += scene.head_mesh(face, np.random.default_rng(0), skin_albedo=np.array([0.7, 0.5, 0.4]))
  shaded = scene.shade(meshes, np.zeros(27))
  for pitch, yaw in POSES:
    result = raster.render(shaded, pitch, yaw, 32, np.zeros(3))
    # The head is centred and solid: the middle of the image is fully covered.
    assert np.all(result.mask[8:24, 8:24] == 1.0)
    assert np.all((result.image >= 0) & (result.image <= 1))


def test_chunking_does_not_change_the_result(monkeypatch):
  vertices, triangles = _icosphere(2)
  reference = raster.rasterize(vertices, triangles, HALF_PI - 0.2, HALF_PI + 0.4, 32)
  monkeypatch.setattr(raster, "_MAX_FRAGMENTS", 50)  # dozens of chunks
  chunked = raster.rasterize(vertices, triangles, HALF_PI - 0.2, HALF_PI + 0.4, 32)
  np.testing.assert_array_equal(chunked.triangle_id, reference.triangle_id)
  np.testing.assert_array_equal(chunked.depth, reference.depth)
