"""A 3D morphable model in Deep3DFaceRecon's conventions: S = S̄ + B_id β + B_exp γ (paper Eq. 1).

Model frame ("3DMM units", ≈ decimetres): Deep3DFaceRecon's recentred BFM frame, x to the image
right of a frontal face, y up, z towards the camera; the face looks down +z. Deep3DFaceRecon's
camera sits at (0, 0, 10) with focal 1015 px for a 224-px image.

This module holds the data: the host-side `MorphableModel` (numpy) with its loaders and savers, the
`MorphableArrays` pytree that jitted code takes as an argument, and the per-image `Coefficients`.
The pure-jnp geometry (Eq. 1, poses, projection, nearest vertices, normals) is in `geometry.py`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import tempfile

import flax.struct
import jax.numpy as jnp
import numpy as np
import scipy.io

from anifacegan_jax.types import Array

NUM_ID = 80
NUM_EXP = 64
NUM_TEX = 80
NUM_LANDMARKS = 68
# 257 = id 80 | exp 64 | tex 80 | angle 3 | gamma 27 | trans 3 (SPEC §3.2).
COEFFICIENT_SPLIT = (("id", 80), ("exp", 64), ("tex", 80), ("angle", 3), ("gamma", 27),
                     ("trans", 3))
NUM_COEFFICIENTS = sum(size for _, size in COEFFICIENT_SPLIT)

PathLike = str | os.PathLike


class MorphableModelError(ValueError):
  """A model or coefficient file is unreadable or inconsistent; the message names file and field."""


class MorphableModelNotFoundError(MorphableModelError, FileNotFoundError):
  """The model or coefficient file does not exist."""


@flax.struct.dataclass
class MorphableArrays:
  """The arrays of a `MorphableModel` as a pytree, passed to jitted code as an argument.

  Passing the bases as arguments (not closing over them) keeps ~30 MB of BFM bases out of the
  compiled program as constants. Fields and frames as in `MorphableModel`; float32 / int32.
  """

  mean_shape: Array  # (N, 3)
  id_basis: Array  # (N, 3, 80)
  exp_basis: Array  # (N, 3, 64)
  mean_tex: Array  # (N, 3)
  tex_basis: Array  # (N, 3, 80)
  triangles: Array  # (T, 3)
  landmarks: Array  # (68,)
  point_buf: Array  # (N, K), -1 = padding

  @property
  def num_vertices(self) -> int:
    return int(self.mean_shape.shape[0])


@dataclasses.dataclass(frozen=True)
class MorphableModel:
  """Arrays of a 3DMM, 0-based indices, model frame.

  Attributes:
    mean_shape: (N, 3) float32 S̄, recentred on the vertex centroid.
    id_basis: (N, 3, 80) float32 B_id.
    exp_basis: (N, 3, 64) float32 B_exp.
    mean_tex: (N, 3) float32 mean albedo in [0, 1] (BFM's 0..255 divided by 255).
    tex_basis: (N, 3, 80) float32 albedo basis, same scale as mean_tex.
    triangles: (T, 3) int32 vertex indices, counter-clockwise seen from outside.
    landmarks: (68,) int32 vertex indices of the iBUG 68 landmarks.
    point_buf: (N, 8) int32 indices of the triangles adjacent to each vertex, -1 = padding.
    name: short description ('BFM_model_front', 'procedural').
    version: version string of the data (the procedural model's generator version).
  """

  mean_shape: np.ndarray
  id_basis: np.ndarray
  exp_basis: np.ndarray
  mean_tex: np.ndarray
  tex_basis: np.ndarray
  triangles: np.ndarray
  landmarks: np.ndarray
  point_buf: np.ndarray
  name: str = ""
  version: str = ""

  @property
  def num_vertices(self) -> int:
    return int(self.mean_shape.shape[0])

  def arrays(self) -> MorphableArrays:
    """The device arrays (float32 / int32) as a pytree for jitted code."""
    floats = {f: jnp.asarray(getattr(self, f), jnp.float32) for f in _FLOAT_FIELDS}
    ints = {f: jnp.asarray(getattr(self, f), jnp.int32) for f in _INDEX_FIELDS}
    return MorphableArrays(**floats, **ints)


_FLOAT_FIELDS = ("mean_shape", "id_basis", "exp_basis", "mean_tex", "tex_basis")
_INDEX_FIELDS = ("triangles", "landmarks", "point_buf")


@flax.struct.dataclass
class Coefficients:
  """Deep3DFaceRecon coefficients of one image (or a batch with leading dims ...).

  Attributes:
    id: (..., 80) identity β.
    exp: (..., 64) expression γ; zeros are the neutral face.
    tex: (..., 80) albedo coefficients.
    angle: (..., 3) Euler angles (ax, ay, az), radians; R = Rz(az)·Ry(ay)·Rx(ax).
    gamma: (..., 27) SH lighting, 3 colours × 9 bands (before the +0.8 ambient offset).
    trans: (..., 3) translation in the model frame, applied after the rotation.
  """

  id: Array
  exp: Array
  tex: Array
  angle: Array
  gamma: Array
  trans: Array

  @classmethod
  def dummy(cls, batch: int = 1) -> "Coefficients":
    return split_coefficients(jnp.zeros((batch, NUM_COEFFICIENTS), jnp.float32))


def split_coefficients(coeffs: Array) -> Coefficients:
  """(..., 257) Deep3DFaceRecon vector → Coefficients, in the order of COEFFICIENT_SPLIT."""
  if coeffs.shape[-1] != NUM_COEFFICIENTS:
    raise ValueError(f"coefficient vector has shape {coeffs.shape}, expected (..., 257)")
  parts, start = {}, 0
  for name, size in COEFFICIENT_SPLIT:
    parts[name] = coeffs[..., start:start + size]
    start += size
  return Coefficients(**parts)


def join_coefficients(coeffs: Coefficients) -> Array:
  """Coefficients → (..., 257) vector, the inverse of `split_coefficients`."""
  return jnp.concatenate([getattr(coeffs, name) for name, _ in COEFFICIENT_SPLIT], axis=-1)


# ---------------------------------------------------------------------------------------------
# Host-side validation: every failure names the file and the field and says what was expected.


def _fail(path: PathLike, field: str, message: str) -> MorphableModelError:
  return MorphableModelError(f"{path}: field '{field}' {message}")


def _check_shape(path, field, array, expected, form="", note=""):
  """`form` is the symbolic shape ('(3N, 80)'), `note` where N came from."""
  if tuple(array.shape) != tuple(expected):
    form = f"{form} = " if form else ""
    raise _fail(path, field,
                f"has shape {tuple(array.shape)}, expected {form}{tuple(expected)}{note}")


def _check_finite(path, field, array):
  if not np.all(np.isfinite(array)):
    count = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
    raise _fail(path, field, f"holds {count} NaN/inf values, expected finite numbers")


def _as_indices(path, field, array, low, high):
  """Integer-valued `array` with every entry in [low, high] → int32."""
  if not np.issubdtype(array.dtype, np.number):
    raise _fail(path, field, f"has dtype {array.dtype}, expected integer indices")
  _check_finite(path, field, array)
  if array.size and not np.all(array == np.round(array)):
    raise _fail(path, field, "holds non-integer values, expected integer indices")
  if array.size and (array.min() < low or array.max() > high):
    raise _fail(path, field, f"holds indices in [{array.min():g}, {array.max():g}], "
                f"expected [{low}, {high}]")
  return array.astype(np.int32)


def _require(path, contents, field, what):
  if field not in contents:
    raise _fail(path, field, f"is missing, expected {what}")
  array = np.asarray(contents[field])
  if not np.issubdtype(array.dtype, np.number):
    raise _fail(path, field, f"has dtype {array.dtype}, expected {what}")
  return array


def _check_exists(path: PathLike) -> pathlib.Path:
  path = pathlib.Path(path)
  if not path.is_file():
    raise MorphableModelNotFoundError(f"{path}: no such file")
  return path


def _read_mat(path: pathlib.Path) -> dict:
  try:
    return scipy.io.loadmat(path)
  except Exception as e:  # scipy raises ValueError, TypeError, OSError, zlib errors, ...
    raise MorphableModelError(f"{path}: cannot read as a MATLAB v5 .mat file ({e})") from e


def validate(model: MorphableModel, source: PathLike = "<memory>") -> MorphableModel:
  """Checks shapes, finiteness and index ranges of `model` (0-based); returns it unchanged."""
  n = model.num_vertices
  if model.mean_shape.ndim != 2 or model.mean_shape.shape[1] != 3 or n == 0:
    raise _fail(source, "mean_shape", f"has shape {model.mean_shape.shape}, expected (N, 3)")
  note = f" for N = {n} vertices from mean_shape"
  for field, width in (("id_basis", NUM_ID), ("exp_basis", NUM_EXP), ("tex_basis", NUM_TEX)):
    _check_shape(source, field, getattr(model, field), (n, 3, width), f"(N, 3, {width})", note)
  _check_shape(source, "mean_tex", model.mean_tex, (n, 3), "(N, 3)", note)
  for field in _FLOAT_FIELDS:
    _check_finite(source, field, getattr(model, field))
  tri, buf = model.triangles, model.point_buf
  if tri.ndim != 2 or tri.shape[1] != 3 or tri.shape[0] == 0:
    raise _fail(source, "triangles", f"has shape {tri.shape}, expected (T, 3) with T > 0")
  if buf.ndim != 2 or buf.shape[0] != n:
    raise _fail(source, "point_buf", f"has shape {buf.shape}, expected (N, K){note}")
  _check_shape(source, "landmarks", model.landmarks, (NUM_LANDMARKS,))
  _as_indices(source, "triangles", tri, 0, n - 1)
  _as_indices(source, "point_buf", buf, -1, tri.shape[0] - 1)
  _as_indices(source, "landmarks", model.landmarks, 0, n - 1)
  return model


# ---------------------------------------------------------------------------------------------
# Loaders and savers.


def load_bfm_mat(path: PathLike) -> MorphableModel:
  """Reads Deep3DFaceRecon's `BFM_model_front.mat` (MATLAB v5, scipy.io.loadmat).

  File fields (flat vertex arrays interleave as 3·v + c): meanshape (1, 3N), idBase (3N, 80),
  exBase (3N, 64), meantex (1, 3N) in 0..255, texBase (3N, 80) on the 0..255 scale, tri (T, 3),
  point_buf (N, K) 1-based with 0 as padding, keypoints (1, 68) 1-based. Other fields are ignored.
  As Deep3DFaceRecon with `recenter=True`, the mean shape is moved to its vertex centroid; textures
  are divided by 255 and indices become 0-based int32 (point_buf padding → -1).

  Raises:
    MorphableModelNotFoundError, MorphableModelError: naming the file and the field.
  """
  path = _check_exists(path)
  contents = _read_mat(path)
  mean = _require(path, contents, "meanshape", "the (1, 3N) mean shape")
  if mean.ndim != 2 or 1 not in mean.shape or mean.size % 3 or mean.size == 0:
    raise _fail(path, "meanshape", f"has shape {mean.shape}, expected (1, 3N)")
  n = mean.size // 3
  for_n = f"for N = {n} vertices from meanshape"
  fields = {}
  for field, cols in (("idBase", NUM_ID), ("exBase", NUM_EXP), ("texBase", NUM_TEX)):
    fields[field] = _require(path, contents, field, f"the (3N, {cols}) basis")
    _check_shape(path, field, fields[field], (3 * n, cols), f"(3N, {cols})", f" {for_n}")
  tex = _require(path, contents, "meantex", "the (1, 3N) mean albedo")
  if tex.size != 3 * n or 1 not in tex.shape:
    raise _fail(path, "meantex",
                f"has shape {tex.shape}, expected (1, 3N) = (1, {3 * n}) {for_n}")
  for field, array in (("meanshape", mean), ("meantex", tex), *fields.items()):
    _check_finite(path, field, array)
  tri = _require(path, contents, "tri", "(T, 3) 1-based triangle indices")
  if tri.ndim != 2 or tri.shape[1] != 3 or tri.shape[0] == 0:
    raise _fail(path, "tri", f"has shape {tri.shape}, expected (T, 3) with T > 0")
  buf = _require(path, contents, "point_buf", "(N, K) 1-based adjacent triangles")
  if buf.ndim != 2 or buf.shape[0] != n:
    raise _fail(path, "point_buf", f"has shape {buf.shape}, expected (N, K) = ({n}, K) {for_n}")
  keypoints = _require(path, contents, "keypoints", "(1, 68) 1-based landmark vertices")
  if keypoints.size != NUM_LANDMARKS:
    raise _fail(path, "keypoints", f"has shape {keypoints.shape}, expected (1, 68)")
  vertices = mean.reshape(n, 3).astype(np.float64)
  return MorphableModel(
      mean_shape=(vertices - vertices.mean(axis=0)).astype(np.float32),
      id_basis=fields["idBase"].reshape(n, 3, NUM_ID).astype(np.float32),
      exp_basis=fields["exBase"].reshape(n, 3, NUM_EXP).astype(np.float32),
      mean_tex=(tex.reshape(n, 3) / 255.0).astype(np.float32),
      tex_basis=(fields["texBase"].reshape(n, 3, NUM_TEX) / 255.0).astype(np.float32),
      triangles=_as_indices(path, "tri", tri, 1, n) - 1,
      landmarks=_as_indices(path, "keypoints", keypoints.reshape(-1), 1, n) - 1,
      point_buf=_as_indices(path, "point_buf", buf, 0, tri.shape[0]) - 1,
      name="BFM_model_front",
      version="",
  )


def save_npz(model: MorphableModel, path: PathLike) -> None:
  """Writes `model` as .npz (arrays under the field names, plus name/version), atomically."""
  path = pathlib.Path(path)
  arrays = {f.name: np.asarray(getattr(model, f.name)) for f in dataclasses.fields(model)}
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)  # readers never see a half-written file
  except BaseException:
    os.unlink(tmp)
    raise


def load_npz(path: PathLike) -> MorphableModel:
  """Reads a model written by `save_npz`, validated as in `validate`."""
  path = _check_exists(path)
  try:
    with np.load(path, allow_pickle=False) as contents:
      contents = {key: contents[key] for key in contents.files}
  except Exception as e:  # zipfile.BadZipFile, OSError, ValueError (pickled arrays), ...
    raise MorphableModelError(f"{path}: cannot read as a .npz archive ({e})") from e
  values = {}
  for field in _FLOAT_FIELDS + _INDEX_FIELDS:
    values[field] = _require(path, contents, field, "an array (see MorphableModel)")
  strings = {key: str(contents[key]) if key in contents else "" for key in ("name", "version")}
  model = validate(MorphableModel(**values, **strings), path)
  return dataclasses.replace(
      model,
      **{f: values[f].astype(np.float32) for f in _FLOAT_FIELDS},
      **{f: values[f].astype(np.int32) for f in _INDEX_FIELDS})


def load_model(path: PathLike) -> MorphableModel:
  """Loads a .mat (Deep3DFaceRecon `BFM_model_front.mat`) or .npz (`save_npz`) model."""
  suffix = pathlib.Path(path).suffix.lower()
  if suffix == ".mat":
    return load_bfm_mat(path)
  if suffix == ".npz":
    return load_npz(path)
  raise MorphableModelError(f"{path}: unknown morphable model format '{suffix}', expected .mat "
                            "(Deep3DFaceRecon BFM_model_front.mat) or .npz (save_npz)")


def read_coefficients_mat(path: PathLike) -> tuple[Coefficients, np.ndarray | None]:
  """Reads a Deep3DFaceRecon per-image result .mat.

  Keys: id (1, 80), exp (1, 64), tex (1, 80), angle (1, 3), gamma (1, 27), trans (1, 3), or a
  single coeff (1, 257); optional lm68 (1, 68, 2), pixels of the 224-px crop, y down.

  Returns:
    (Coefficients of float32 numpy arrays (80,), (64,), …, lm68 (68, 2) float32 or None).
  """
  path = _check_exists(path)
  contents = _read_mat(path)
  names = [name for name, _ in COEFFICIENT_SPLIT]
  if "coeff" in contents and not any(name in contents for name in names):
    coeff = _require(path, contents, "coeff", "(1, 257) coefficients")
    if coeff.size != NUM_COEFFICIENTS:
      raise _fail(path, "coeff", f"has shape {coeff.shape}, expected (1, 257)")
    _check_finite(path, "coeff", coeff)
    coeffs = split_coefficients(coeff.reshape(-1).astype(np.float32))
  else:
    parts = {}
    for name, size in COEFFICIENT_SPLIT:
      parts[name] = _require(path, contents, name, f"(1, {size}) coefficients (or one (1, 257) "
                             "'coeff')")
      if parts[name].size != size:
        raise _fail(path, name, f"has shape {parts[name].shape}, expected (1, {size})")
      _check_finite(path, name, parts[name])
      parts[name] = parts[name].reshape(-1).astype(np.float32)
    coeffs = Coefficients(**parts)
  lm68 = None
  if "lm68" in contents:
    lm68 = _require(path, contents, "lm68", "(1, 68, 2) landmarks in pixels")
    if lm68.size != 2 * NUM_LANDMARKS:
      raise _fail(path, "lm68", f"has shape {lm68.shape}, expected (1, 68, 2)")
    _check_finite(path, "lm68", lm68)
    lm68 = lm68.reshape(NUM_LANDMARKS, 2).astype(np.float32)
  return coeffs, lm68
