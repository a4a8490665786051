"""Morphable model I/O (face3d/morphable.py) and its jnp geometry (face3d/geometry.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io

from anifacegan_jax.face3d import geometry
from anifacegan_jax.face3d import morphable
from anifacegan_jax.rendering import camera as camera_lib
from anifacegan_jax.types import Camera

ROWS, COLS = 5, 6  # grid mesh: N = 30 vertices, T = 40 triangles


def _grid():
  """(N, 2) xy of a ROWS×COLS grid and (T, 3) 0-based triangles, counter-clockwise seen from +z."""
  y, x = np.meshgrid(np.linspace(1, -1, ROWS), np.linspace(-1, 1, COLS), indexing="ij")
  tri = []
  for r in range(ROWS - 1):
    for c in range(COLS - 1):
      top_left, top_right = r * COLS + c, r * COLS + c + 1
      bottom_left, bottom_right = top_left + COLS, top_right + COLS
      tri += [(top_left, bottom_left, bottom_right), (top_left, bottom_right, top_right)]
  return np.stack([x.ravel(), y.ravel()], axis=-1), np.array(tri)


def _bfm_fields(seed=0):
  """The fields of a tiny BFM_model_front.mat, in the file's own layout and 1-based indices."""
  rng = np.random.default_rng(seed)
  xy, tri = _grid()
  n = xy.shape[0]
  shape = np.concatenate([xy, 0.2 * np.sin(xy[:, :1])], axis=-1) + [0.3, -0.2, 5.0]
  point_buf = np.zeros((n, 8))
  for v in range(n):
    adjacent = np.nonzero((tri == v).any(axis=1))[0] + 1
    point_buf[v, :len(adjacent)] = adjacent
  return {
      "meanshape": shape.reshape(1, -1),
      "idBase": rng.normal(size=(3 * n, 80)) * 0.01,
      "exBase": rng.normal(size=(3 * n, 64)) * 0.01,
      "meantex": rng.uniform(0, 255, size=(1, 3 * n)),
      "texBase": rng.normal(size=(3 * n, 80)),
      "tri": tri + 1.0,  # MATLAB-style doubles
      "point_buf": point_buf,
      "keypoints": rng.integers(1, n + 1, size=(1, 68)).astype(np.float64),
      "frontmask2_idx": np.arange(1, n + 1)[:, None],  # an extra field, ignored
  }


def _write_mat(tmp_path, fields, name="BFM_model_front.mat"):
  path = tmp_path / name
  scipy.io.savemat(path, fields)
  return path


@pytest.fixture(scope="module")
def bfm(tmp_path_factory):
  fields = _bfm_fields()
  path = _write_mat(tmp_path_factory.mktemp("bfm"), fields)
  return fields, morphable.load_bfm_mat(path)


def test_bfm_mat_loads_in_model_conventions(bfm):
  fields, model = bfm
  n = model.num_vertices
  assert (n, model.triangles.shape, model.point_buf.shape) == (30, (40, 3), (30, 8))
  assert model.name == "BFM_model_front" and model.version == ""
  np.testing.assert_allclose(model.mean_shape.mean(axis=0), 0.0, atol=1e-6)
  raw = fields["meanshape"].reshape(n, 3)
  np.testing.assert_allclose(model.mean_shape, raw - raw.mean(axis=0), atol=1e-6)
  # Flat index 3·v + c of the file is vertex v, coordinate c.
  assert model.id_basis[7, 2, 5] == np.float32(fields["idBase"][3 * 7 + 2, 5])
  assert model.exp_basis[4, 1, 63] == np.float32(fields["exBase"][3 * 4 + 1, 63])
  np.testing.assert_allclose(model.mean_tex, fields["meantex"].reshape(n, 3) / 255, rtol=1e-6)
  np.testing.assert_allclose(model.tex_basis[3, 0], fields["texBase"][9] / 255, rtol=1e-6)
  np.testing.assert_array_equal(model.triangles, fields["tri"] - 1)
  np.testing.assert_array_equal(model.landmarks, fields["keypoints"][0] - 1)
  np.testing.assert_array_equal(model.point_buf, fields["point_buf"] - 1)
  assert model.point_buf.min() == -1 and model.triangles.dtype == np.int32
  assert model.mean_shape.dtype == model.id_basis.dtype == np.float32


def test_npz_round_trip_and_load_model_dispatch(bfm, tmp_path):
  _, model = bfm
  path = tmp_path / "bfm.npz"
  morphable.save_npz(model, path)
  assert [p.name for p in tmp_path.iterdir()] == ["bfm.npz"]  # no temp file left behind
  for loaded in (morphable.load_npz(path), morphable.load_model(path)):
    for field in ("mean_shape", "id_basis", "exp_basis", "mean_tex", "tex_basis", "triangles",
                  "landmarks", "point_buf"):
      np.testing.assert_array_equal(getattr(loaded, field), getattr(model, field))
      assert getattr(loaded, field).dtype == getattr(model, field).dtype
    assert (loaded.name, loaded.version) == (model.name, model.version)


def test_face_vertices_is_eq1(bfm):
  _, model = bfm
  arrays = model.arrays()
  rng = np.random.default_rng(1)
  id_a, id_b = rng.normal(size=(2, 80)).astype(np.float32)
  exp_a, exp_b = rng.normal(size=(2, 64)).astype(np.float32)
  zeros_id, zeros_exp = np.zeros(80, np.float32), np.zeros(64, np.float32)
  mean = geometry.face_vertices(arrays, zeros_id, zeros_exp)
  np.testing.assert_allclose(mean, model.mean_shape, atol=1e-7)
  shape = jax.jit(geometry.face_vertices)  # bases are arguments, not baked-in constants
  combined = shape(arrays, 2 * id_a - id_b, exp_a + 3 * exp_b)
  expected = (mean + 2 * (shape(arrays, id_a, zeros_exp) - mean)
              - (shape(arrays, id_b, zeros_exp) - mean)
              + geometry.expression_offsets(arrays, exp_a)
              + 3 * geometry.expression_offsets(arrays, exp_b))
  np.testing.assert_allclose(combined, expected, atol=1e-5)
  np.testing.assert_allclose(
      geometry.expression_offsets(arrays, exp_a),
      np.einsum("nck,k->nc", model.exp_basis, exp_a), atol=1e-5)
  batched = jax.vmap(geometry.face_vertices, in_axes=(None, 0, 0))(
      arrays, np.stack([id_a, id_b]), np.stack([exp_a, exp_b]))
  np.testing.assert_allclose(batched[1], shape(arrays, id_b, exp_b), atol=1e-6)
  np.testing.assert_array_equal(geometry.landmarks_3d(arrays, mean),
                                model.mean_shape[model.landmarks])
  np.testing.assert_allclose(geometry.face_albedo(arrays, np.zeros(80)), model.mean_tex)


def _explicit_rotation(ax, ay, az):
  rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
  ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
  rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
  return rz @ ry @ rx


def test_rotation_matrix():
  angles = np.array([[0.3, -0.5, 0.2], [-1.1, 0.7, 2.5], [0.1083, -0.1102, -0.0026]])
  rot = np.asarray(geometry.rotation_matrix(jnp.asarray(angles, jnp.float32)))
  for r, a in zip(rot, angles):
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-6)
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(r, _explicit_rotation(*a), atol=1e-6)
  quarter = np.pi / 2
  for angle, source, target in (((quarter, 0, 0), [0, 1, 0], [0, 0, 1]),  # Rx: y → z
                                ((0, quarter, 0), [0, 0, 1], [1, 0, 0]),  # Ry: z → x
                                ((0, 0, quarter), [1, 0, 0], [0, 1, 0])):  # Rz: x → y
    np.testing.assert_allclose(geometry.rotation_matrix(jnp.array(angle)) @ jnp.array(source),
                               target, atol=1e-6)
  points = np.array([[0.1, 0.2, 0.3], [-1.0, 0.5, 2.0]], np.float32)
  np.testing.assert_allclose(geometry.transform(points, angles[0], [1.0, 2.0, 3.0]),
                             points @ _explicit_rotation(*angles[0]).T + [1, 2, 3], atol=1e-5)


def test_angles_camera_round_trip_and_01626_pose():
  pitch, yaw = np.meshgrid(np.linspace(np.pi / 2 - 1.3, np.pi / 2 + 1.3, 7),
                           np.linspace(np.pi / 2 - 1.3, np.pi / 2 + 1.3, 9), indexing="ij")
  angle = geometry.camera_to_angles(pitch, yaw)
  assert angle.shape == (7, 9, 3) and np.all(angle[..., 2] == 0)
  back_pitch, back_yaw = geometry.angles_to_camera(angle)
  np.testing.assert_allclose(back_pitch, pitch, atol=1e-6)
  np.testing.assert_allclose(back_yaw, yaw, atol=1e-6)
  np.testing.assert_allclose(geometry.camera_to_angles(back_pitch, back_yaw), angle, atol=1e-6)
  pitch_01626, yaw_01626 = geometry.angles_to_camera(jnp.array([0.1083, -0.1102, -0.0026]))
  assert float(pitch_01626) == pytest.approx(np.pi / 2 - (0.1083 - 0.1), abs=1e-6)
  assert float(yaw_01626) == pytest.approx(np.pi / 2 - 0.1102, abs=1e-6)


@pytest.mark.parametrize("angle", [(0.35, 0.0), (-0.2, 0.0), (0.1, 0.4), (0.1, -0.3)])
def test_deep3d_view_equals_gram_view_of_the_world_face(angle):
  """Pure pitch or pure yaw: Deep3DFaceRecon's camera sees R·v exactly as the GRAM camera at
  angles_to_camera(angle) sees model_to_world(v) (camera-frame coordinates, ×0.1)."""
  angle = jnp.array([angle[0], angle[1], 0.0])
  v = jnp.array([[0.0, 0.0, 1.0], [0.7, -0.4, 0.2], [-0.5, 0.9, 0.4]])
  deep3d = 0.1 * (v @ geometry.rotation_matrix(angle).T) - jnp.array([0.0, 0.0, 1.0])
  pitch, yaw = geometry.angles_to_camera(angle)
  c2w = camera_lib.cam2world(Camera(pitch=pitch, yaw=yaw))
  gram = (geometry.model_to_world(v) - c2w[:3, 3]) @ c2w[:3, :3]
  np.testing.assert_allclose(gram, deep3d, atol=1e-6)


def test_model_to_world_and_back():
  points = jnp.asarray(np.random.default_rng(2).normal(size=(4, 5, 3)), jnp.float32)
  translation = (0.05, -0.2, 0.3)
  world = geometry.model_to_world(points, translation)
  assert world.shape == (4, 5, 3)
  np.testing.assert_allclose(geometry.world_to_model(world, translation), points, atol=1e-5)
  # The nose direction (model +z) tilts down by the pitch offset; lengths scale by 0.1.
  np.testing.assert_allclose(geometry.model_to_world(jnp.array([0.0, 0.0, 1.0])),
                             [0.0, -0.1 * np.sin(0.1), 0.1 * np.cos(0.1)], atol=1e-7)


def test_split_join_coefficients():
  coeffs = jnp.arange(2 * 257, dtype=jnp.float32).reshape(2, 257)
  parts = morphable.split_coefficients(coeffs)
  assert [getattr(parts, n).shape for n, _ in morphable.COEFFICIENT_SPLIT] == [
      (2, 80), (2, 64), (2, 80), (2, 3), (2, 27), (2, 3)]
  assert float(parts.angle[0, 0]) == 224 and float(parts.trans[1, 2]) == 257 + 256
  np.testing.assert_array_equal(morphable.join_coefficients(parts), coeffs)
  assert morphable.Coefficients.dummy(3).gamma.shape == (3, 27)
  with pytest.raises(ValueError, match="257"):
    morphable.split_coefficients(jnp.zeros((256,)))


def test_project_deep3d_on_hand_made_points():
  points = jnp.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 5.0], [-2.0, -1.0, 2.0]])
  expected = [[112.0, 111.0], [213.5, 111.0], [112.0, 223 - 315.0],
              [112 - 1015 * 2 / 8, 223 - (112 - 1015 / 8)]]
  np.testing.assert_allclose(geometry.project_deep3d(points), expected, rtol=1e-6)


def test_nearest_vertices_matches_numpy_brute_force():
  rng = np.random.default_rng(3)
  points = rng.normal(size=(203, 3)).astype(np.float32)
  vertices = rng.normal(size=(57, 3)).astype(np.float32)
  index, squared = jax.jit(geometry.nearest_vertices, static_argnames="chunk")(
      points, vertices, chunk=16)  # 203 = 12·16 + 11
  distances = ((points[:, None] - vertices[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(index, distances.argmin(axis=1))
  np.testing.assert_allclose(squared, distances.min(axis=1), rtol=1e-5)
  grad = jax.grad(lambda p: geometry.nearest_vertices(p, vertices, chunk=16)[1].sum())(points)
  np.testing.assert_allclose(grad, 2 * (points - vertices[index]), atol=1e-5)


def test_vertex_normals_of_flat_and_tilted_grids(bfm):
  _, model = bfm
  arrays = model.arrays()
  xy, _ = _grid()
  flat = jnp.asarray(np.concatenate([xy, np.zeros_like(xy[:, :1])], axis=-1), jnp.float32)
  for weighted in (False, True):
    normals = geometry.vertex_normals(arrays, flat, area_weighted=weighted)
    np.testing.assert_allclose(normals, np.tile([0.0, 0.0, 1.0], (30, 1)), atol=1e-6)
  mirrored = flat * jnp.array([-1.0, 1.0, 1.0])  # reverses the winding
  np.testing.assert_allclose(geometry.vertex_normals(arrays, mirrored)[:, 2], -1.0, atol=1e-6)
  tilted = flat.at[:, 2].set(0.5 * flat[:, 0])  # the plane z = x/2
  np.testing.assert_allclose(geometry.vertex_normals(arrays, tilted),
                             np.tile([-0.5, 0.0, 1.0] / np.sqrt(1.25), (30, 1)), atol=1e-6)


def test_read_coefficients_of_01626(reference_dir, tmp_path):
  path = reference_dir / "aniface_01626.mat"
  if not path.is_file():
    pytest.skip(f"{path} not found")
  coeffs, lm68 = morphable.read_coefficients_mat(path)
  np.testing.assert_allclose(coeffs.angle, [0.1083, -0.1102, -0.0026], atol=1e-4)
  np.testing.assert_allclose(coeffs.trans, [0.0112, -0.1534, -0.5428], atol=1e-4)
  assert coeffs.id.shape == (80,) and coeffs.exp.shape == (64,) and coeffs.gamma.shape == (27,)
  assert lm68.shape == (68, 2) and 50 < lm68.min() and lm68.max() < 210
  single = tmp_path / "coeff.mat"
  scipy.io.savemat(single, {"coeff": np.asarray(morphable.join_coefficients(coeffs))[None]})
  again, no_landmarks = morphable.read_coefficients_mat(single)
  assert no_landmarks is None
  np.testing.assert_array_equal(again.exp, coeffs.exp)
  np.testing.assert_array_equal(again.trans, coeffs.trans)


def _edit(change):
  fields = _bfm_fields()
  change(fields)
  return fields


def _nan_tex(f):
  f["texBase"][3, 4] = np.nan


def _fractional_tri(f):
  f["tri"][0, 0] += 0.5


@pytest.mark.parametrize("change,field,expected", [
    (lambda f: f.pop("exBase"), "exBase", "missing"),
    (lambda f: f.update(idBase=f["idBase"][:87]), "idBase",
     r"shape \(87, 80\), expected \(3N, 80\) = \(90, 80\) for N = 30 vertices from meanshape"),
    (lambda f: f.update(meanshape=f["meanshape"][:, :89]), "meanshape", r"expected \(1, 3N\)"),
    (lambda f: f.update(meantex=f["meantex"][:, :60]), "meantex", r"\(1, 90\)"),
    (lambda f: f.update(tri=f["tri"] * 2), "tri", r"expected \[1, 30\]"),
    (lambda f: f.update(tri=f["tri"] - 1), "tri", r"expected \[1, 30\]"),
    (_fractional_tri, "tri", "non-integer"),
    (lambda f: f.update(point_buf=f["point_buf"] + 5), "point_buf", r"expected \[0, 40\]"),
    (lambda f: f.update(point_buf=f["point_buf"][:20]), "point_buf", r"\(30, K\)"),
    (lambda f: f.update(keypoints=f["keypoints"][:, :51]), "keypoints", r"expected \(1, 68\)"),
    (lambda f: f.update(keypoints=f["keypoints"] + 30), "keypoints", r"expected \[1, 30\]"),
    (_nan_tex, "texBase", "NaN"),
])
def test_bad_bfm_files_name_the_file_and_field(tmp_path, change, field, expected):
  path = _write_mat(tmp_path, _edit(change), "bad_model.mat")
  with pytest.raises(morphable.MorphableModelError, match=f"bad_model.mat: field '{field}'") as e:
    morphable.load_model(path)
  assert e.match(expected)


def test_unreadable_and_missing_files(tmp_path, bfm):
  with pytest.raises(FileNotFoundError, match="absent.mat: no such file") as e:
    morphable.load_bfm_mat(tmp_path / "absent.mat")
  assert isinstance(e.value, morphable.MorphableModelError)
  for name in ("garbage.mat", "garbage.npz"):
    (tmp_path / name).write_bytes(b"not a model at all" * 10)
    with pytest.raises(morphable.MorphableModelError, match=f"{name}: cannot read"):
      morphable.load_model(tmp_path / name)
  with pytest.raises(morphable.MorphableModelError, match=r"model.obj: unknown .*'\.obj'"):
    morphable.load_model(tmp_path / "model.obj")
  with pytest.raises(morphable.MorphableModelNotFoundError, match="absent.npz"):
    morphable.load_npz(tmp_path / "absent.npz")


def test_bad_npz_files_name_the_file_and_field(tmp_path, bfm):
  _, model = bfm
  arrays = {f: getattr(model, f) for f in ("mean_shape", "id_basis", "exp_basis", "mean_tex",
                                           "tex_basis", "triangles", "landmarks", "point_buf")}
  cases = [
      ({k: v for k, v in arrays.items() if k != "landmarks"}, "landmarks", "missing"),
      ({**arrays, "exp_basis": arrays["exp_basis"][:, :, :60]}, "exp_basis",
       r"expected \(N, 3, 64\) = \(30, 3, 64\) for N = 30"),
      ({**arrays, "triangles": arrays["triangles"] + 30}, "triangles", r"expected \[0, 29\]"),
      ({**arrays, "mean_shape": arrays["mean_shape"] * np.inf}, "mean_shape", "NaN/inf"),
  ]
  for contents, field, expected in cases:
    path = tmp_path / "bad.npz"
    np.savez(path, **contents)
    with pytest.raises(morphable.MorphableModelError, match=f"bad.npz: field '{field}'") as e:
      morphable.load_npz(path)
    assert e.match(expected)


@pytest.mark.parametrize("contents,field,expected", [
    ({"coeff": np.zeros((1, 256))}, "coeff", r"expected \(1, 257\)"),
    ({"id": np.zeros((1, 80))}, "exp", "missing"),
    ({n: np.zeros((1, 60 if n == "exp" else s)) for n, s in morphable.COEFFICIENT_SPLIT},
     "exp", r"shape \(1, 60\), expected \(1, 64\)"),
    ({**{n: np.zeros((1, s)) for n, s in morphable.COEFFICIENT_SPLIT}, "lm68": np.zeros((1, 5))},
     "lm68", r"expected \(1, 68, 2\)"),
    ({n: np.full((1, s), np.nan) for n, s in morphable.COEFFICIENT_SPLIT}, "id", "NaN"),
])
def test_bad_coefficient_files(tmp_path, contents, field, expected):
  path = tmp_path / "bad_coeffs.mat"
  scipy.io.savemat(path, contents)
  with pytest.raises(morphable.MorphableModelError, match=f"bad_coeffs.mat: field '{field}'") as e:
    morphable.read_coefficients_mat(path)
  assert e.match(expected)
  with pytest.raises(FileNotFoundError, match="nothing.mat"):
    morphable.read_coefficients_mat(tmp_path / "nothing.mat")
