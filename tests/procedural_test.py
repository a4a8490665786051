"""The embedded procedural 3DMM: determinism, mesh invariants, landmarks, bases, cache, prior."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from anifacegan_jax.face3d import geometry
from anifacegan_jax.face3d import morphable
from anifacegan_jax.synthfaces import procedural
from anifacegan_jax.synthfaces import procedural_mesh as pm
from anifacegan_jax.synthfaces import raster

K = len(procedural.EXPRESSION_NAMES)
S = procedural.FACE_SCALE  # the absolute sizes below are design sizes × S, in model units
CROP = 224  # Deep3DFaceRecon's crop, pixels
ARRAYS = ("mean_shape", "id_basis", "exp_basis", "mean_tex", "tex_basis", "triangles", "landmarks",
          "point_buf")


@pytest.fixture(scope="module")
def model():
  return procedural.build_model(seed=0)


def _exp(model, **gamma):
  coeffs = np.zeros(morphable.NUM_EXP, np.float32)
  for name, value in gamma.items():
    coeffs[procedural.EXPRESSION_NAMES.index(name)] = value
  return model.mean_shape + model.exp_basis @ coeffs


def test_build_is_deterministic(model):
  again = procedural.build_model(seed=0)
  for field in ARRAYS:
    np.testing.assert_array_equal(getattr(model, field), getattr(again, field), err_msg=field)
  assert (again.name, again.version) == ("procedural", procedural.PROCEDURAL_VERSION)


def test_shapes_dtypes_and_size(model):
  morphable.validate(model)
  n = model.num_vertices
  assert 5000 <= n <= 8000
  expected = {"mean_shape": (n, 3), "id_basis": (n, 3, 80), "exp_basis": (n, 3, 64),
              "mean_tex": (n, 3), "tex_basis": (n, 3, 80), "landmarks": (68,),
              "point_buf": (n, 8)}
  for field, shape in expected.items():
    assert getattr(model, field).shape == shape, field
  for field in ("mean_shape", "id_basis", "exp_basis", "mean_tex", "tex_basis"):
    assert getattr(model, field).dtype == np.float32, field
  for field in ("triangles", "landmarks", "point_buf"):
    assert getattr(model, field).dtype == np.int32, field
  np.testing.assert_allclose(model.mean_shape.astype(np.float64).mean(0), 0.0, atol=1e-5)
  assert 0.0 <= model.mean_tex.min() and model.mean_tex.max() <= 1.0


def test_face_proportions(model):
  skin = model.mean_shape[pm.build_topology().part == pm.SKIN]
  width = np.ptp(skin[:, 0])
  height = np.ptp(skin[:, 1])
  tip = model.mean_shape[model.landmarks[30]]
  assert 1.45 * S < width < 1.75 * S and 2.0 * S < height < 2.4 * S
  edge_z = skin[np.abs(skin[:, 0]) > 0.75 * S, 2].mean()
  assert 0.85 * S < tip[2] - edge_z < 1.15 * S


def _brow_to_chin(points):
  """Vertical span from the brows' middle (mean of landmarks 19 and 24) to the chin (8), (68, 2)."""
  return abs(points[[19, 24], 1].mean() - points[8, 1])


def test_mean_face_fills_the_frame_like_deep3d_crops(model, reference_dir):
  """Frontal GRAM render at 224²: brow-to-chin within 3 % of a real FFHQ face in its 224 crop."""
  path = reference_dir / "aniface_01626.mat"
  if not path.is_file():
    pytest.skip(f"{path} not found")
  _, lm68 = morphable.read_coefficients_mat(path)
  target = _brow_to_chin(lm68) / CROP  # ≈ 0.571
  world = np.asarray(geometry.model_to_world(jnp.asarray(model.mean_shape[model.landmarks])))
  xy, _ = raster.project_points(world, np.pi / 2, np.pi / 2, CROP)
  assert _brow_to_chin(xy) / CROP == pytest.approx(target, rel=0.03)


def test_triangles_valid_and_point_buf_consistent(model):
  tri, n = model.triangles, model.num_vertices
  assert tri.min() >= 0 and tri.max() < n
  assert np.all((tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2]))
  v = model.mean_shape.astype(np.float64)
  area = 0.5 * np.linalg.norm(np.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]]),
                              axis=1)
  assert area.min() > 1e-6
  assert np.bincount(tri.ravel(), minlength=n).max() <= 8  # nothing dropped from point_buf
  buf = model.point_buf
  valence = np.bincount(tri.ravel(), minlength=n)
  np.testing.assert_array_equal((buf >= 0).sum(1), valence)
  rows, cols = np.nonzero(buf >= 0)
  assert np.all(np.any(tri[buf[rows, cols]] == rows[:, None], axis=1))


def test_skin_faces_outward_and_eyeballs_face_out(model):
  topo = pm.build_topology()
  tri, v = model.triangles, model.mean_shape.astype(np.float64)
  normal = np.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]])
  centroid = v[tri].mean(1)
  part = topo.part[tri].max(1)
  skin = part == pm.SKIN
  # Consistent: every edge shared by two skin triangles is walked once in each direction ...
  edges = tri[skin][:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
  undirected, count = np.unique(np.sort(edges, 1), axis=0, return_counts=True)
  directed = np.unique(edges, axis=0)
  assert len(directed) == len(edges)  # no directed edge twice
  assert np.all(count <= 2) and len(undirected) == len(edges) - np.sum(count == 2)
  # ... and outward: away from a point inside the head (all but the walls of the eye corners).
  inner = np.array([0.0, 0.0, -1.0]) * S
  assert np.mean(np.sum(normal[skin] * (centroid[skin] - inner), axis=1) > 0) > 0.999
  for p in (pm.EYE_LEFT, pm.EYE_RIGHT):
    centre = v[topo.part == p].mean(0) - 0.5 * S * np.array([0, 0, 1.0])  # behind the cap
    assert np.all(np.sum(normal[part == p] * (centroid[part == p] - centre), axis=1) > 0)


def test_landmark_order(model):
  lm = model.mean_shape[model.landmarks]
  y = lm[:, 1]
  brows, eyes, mouth = y[17:27].mean(), y[36:48].mean(), y[48:68].mean()
  assert brows > eyes > y[30] > mouth > y[8]
  assert y[27] > y[28] > y[29] > y[30]  # nose bridge, top to tip
  assert lm[0, 0] < 0 < lm[16, 0] and lm[8, 0] == pytest.approx(0, abs=1e-6)
  assert np.all(lm[36:42, 0] < 0) and np.all(lm[42:48, 0] > 0)
  assert np.all(np.diff(lm[17:27, 0]) > 0) and np.all(np.diff(lm[31:36, 0]) > 0)
  assert lm[36, 0] < lm[39, 0] < lm[42, 0] < lm[45, 0]
  assert lm[48, 0] < lm[51, 0] < lm[54, 0] and lm[60, 0] < lm[62, 0] < lm[64, 0]
  assert np.all(y[[37, 38]] > y[[41, 40]]) and y[51] > y[62] >= y[66] > y[57]


def test_jaw_open_parts_the_inner_lips(model):
  upper, lower = model.landmarks[[61, 62, 63]], model.landmarks[[67, 66, 65]]
  for gamma, check in ((0.0, lambda d: d < 0.03 * S), (1.0, lambda d: d > 0.2 * S)):
    s = _exp(model, jaw_open=gamma)
    gap = np.linalg.norm(s[upper] - s[lower], axis=1)
    assert np.all(check(gap)), (gamma, gap)
  s = _exp(model, jaw_open=1.0)
  gap = np.linalg.norm(s[model.landmarks[62]] - s[model.landmarks[66]])
  assert gap == pytest.approx(0.3 * S, 0.05)


@pytest.mark.parametrize("name,upper,lower", [("blink_left", [37, 38], [41, 40]),
                                              ("blink_right", [43, 44], [47, 46])])
def test_blink_closes_the_eye(model, name, upper, lower):
  lm = model.landmarks
  rest = np.linalg.norm(model.mean_shape[lm[upper]] - model.mean_shape[lm[lower]], axis=1)
  assert np.all(rest > 0.06 * S)
  s = _exp(model, **{name: 1.0})
  assert np.all(np.linalg.norm(s[lm[upper]] - s[lm[lower]], axis=1) < 0.03 * S)
  other = [43, 44] if name == "blink_left" else [37, 38]
  np.testing.assert_allclose(s[lm[other]], model.mean_shape[lm[other]], atol=1e-6)


def test_expression_columns(model):
  b = model.exp_basis
  assert len(procedural.ONE_SIDED) == K and 20 <= K <= 30
  np.testing.assert_array_equal(b[:, :, K:], 0.0)
  assert np.all(np.abs(b[:, :, :K]).max(axis=(0, 1)) > 0.02 * S)  # every named shape moves


@pytest.mark.parametrize("name", procedural.EXPRESSION_NAMES)
def test_expressions_keep_openings_ordered(model, name):
  """No shape (at the prior's extremes) pushes a lower rim above its upper rim."""
  topo = pm.build_topology()
  one_sided = procedural.ONE_SIDED[procedural.EXPRESSION_NAMES.index(name)]
  for gamma in (0.5, 1.0) if one_sided else (-0.6, 1.0):
    s = _exp(model, **{name: gamma})
    rims = [topo.mouth_rims] + list(topo.eye_rims)
    for upper, lower in rims:
      assert np.all(s[upper, 1] >= s[lower, 1] - 1e-4 * S), (name, gamma)


def test_identity_basis_spreads_variance_and_keeps_size(model):
  var = np.sum(model.id_basis.astype(np.float64)**2, axis=(0, 1))
  assert var.max() < 0.3 * var.sum()
  assert np.all(np.diff(var) <= 1e-9)  # sorted by variance
  lm = model.landmarks
  size = lambda s: (np.linalg.norm(s[lm[0]] - s[lm[16]]), np.linalg.norm(s[lm[8]] - s[lm[27]]))
  base = np.array(size(model.mean_shape))
  beta = np.random.default_rng(0).standard_normal((16, 80)).astype(np.float32)
  for b in beta:
    ratio = np.array(size(model.mean_shape + model.id_basis @ b)) / base
    assert np.all(np.abs(ratio - 1) < 0.25), ratio


def test_texture_basis_stays_in_range(model):
  tex = np.clip(np.random.default_rng(0).standard_normal((8, 80)), -2, 2).astype(np.float32)
  for t in tex:
    albedo = model.mean_tex + model.tex_basis @ t
    assert -0.1 < albedo.min() and albedo.max() < 1.1


def test_cache_round_trip_and_rebuilds(model, tmp_path, monkeypatch):
  builds = []

  def fake_build(seed=0):
    builds.append(seed)
    return dataclasses.replace(model, version=procedural.PROCEDURAL_VERSION)

  monkeypatch.setattr(procedural, "build_model", fake_build)
  first = procedural.load_procedural(tmp_path, seed=3)
  path = tmp_path / "procedural_seed3.npz"
  assert path.is_file() and builds == [3]
  cached = procedural.load_procedural(tmp_path, seed=3)
  assert builds == [3]  # read from the cache
  for field in ARRAYS:
    np.testing.assert_array_equal(getattr(cached, field), getattr(first, field), err_msg=field)
  assert (cached.name, cached.version) == ("procedural", procedural.PROCEDURAL_VERSION)
  monkeypatch.setattr(procedural, "PROCEDURAL_VERSION", "test-bump")
  assert procedural.load_procedural(tmp_path, seed=3).version == "test-bump"
  assert builds == [3, 3]
  path.write_bytes(b"not a zip archive")
  procedural.load_procedural(tmp_path, seed=3)
  assert builds == [3, 3, 3]
  assert morphable.load_npz(path).version == "test-bump"
  assert not list(tmp_path.glob("*.tmp"))


def test_cache_dir_defaults_to_environment(tmp_path, monkeypatch):
  monkeypatch.setenv("ANIFACEGAN_CACHE", str(tmp_path / "c"))
  assert procedural.default_cache_dir() == tmp_path / "c"


def test_sample_expressions_prior():
  coeffs = procedural.sample_expressions(np.random.default_rng(0), 500)
  again = procedural.sample_expressions(np.random.default_rng(0), 500)
  np.testing.assert_array_equal(coeffs, again)
  assert coeffs.shape == (500, 64) and coeffs.dtype == np.float32
  np.testing.assert_array_equal(coeffs[:, K:], 0.0)
  one_sided = np.array(procedural.ONE_SIDED)
  assert np.all(coeffs[:, :K][:, one_sided] >= 0)
  assert np.abs(coeffs).max() <= 1.0
  assert np.any(coeffs[:, :K][:, ~one_sided] < 0)
  assert 0.0 < np.mean(coeffs[:, :K] != 0) < 0.5  # sparse
  names = procedural.EXPRESSION_NAMES
  blink = (coeffs[:, names.index("blink_left")] != 0) | (coeffs[:, names.index("blink_right")] != 0)
  assert np.all(coeffs[blink, names.index("squint")] == 0)
