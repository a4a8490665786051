"""Read PyTorch checkpoints (the zip format of `torch.save` since 1.6) without torch; `torch_save`
writes them.

Format: a stored zip whose records sit under one top folder (`archive/`, or the file stem such as
`dif/`): `data.pkl` is a protocol-2 pickle of the saved object in which each tensor is a call
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` and each storage a
persistent id `('storage', torch.FloatStorage, key, location, numel)` naming the record
`data/<key>`; `version` and `byteorder` ("little"/"big") complete it. TorchScript archives
(`torch.jit.save`) add `code/` and `constants.pkl` (tensors in `constants/<key>`), and pickle
their modules as `__torch__.*` objects. Only zipfile, pickle, numpy and ml_dtypes are needed;
tensors load as C-contiguous `numpy.ndarray`s whatever device they were saved from.

Security: pickle can run arbitrary code, so `load` uses a restricted unpickler. Only an allowlist
of globals (torch tensor-rebuild functions, storage/dtype names, OrderedDict, a few inert builtins
and numpy array constructors) has behaviour; any other global (a whole
`torch_ema.ExponentialMovingAverage`, `__torch__.Net`, `os.system`) becomes a `PickledObject`
stub that only records what the pickle hands it. Nothing from the file is executed.
"""

from __future__ import annotations

import collections
import io
import os
import pathlib
import pickle
import struct
import sys
import zipfile
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

# Legacy typed-storage class -> element dtype (torch.storage._dtype_to_storage_type_map); other
# storage classes (QInt8Storage, ...) load as stubs and are rejected as unsupported dtypes.
STORAGE_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(dt) for name, dt in {
        "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
        "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
        "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
        "BoolStorage": np.bool_, "ComplexFloatStorage": np.complex64,
        "ComplexDoubleStorage": np.complex128,
    }.items()}
# `torch.<dtype>` globals numpy can hold; newer dtypes (uint16, float8) come with UntypedStorage.
_TORCH_DTYPES: dict[str, np.dtype] = {
    **{dt.name: dt for dt in STORAGE_DTYPES.values()},
    **{name: np.dtype(name) for name in ("uint16", "uint32", "uint64")},
    **{name: np.dtype(getattr(ml_dtypes, name)) for name in (
        "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu")},
}
# Every `torch.<name>` global that stands for an element dtype (storage classes and dtypes alike).
_TORCH_GLOBALS = {**STORAGE_DTYPES, **_TORCH_DTYPES, "UntypedStorage": np.dtype(np.uint8)}
# ndarray / numpy-scalar reconstructors, taken from numpy itself so both numpy 1 and 2 names work.
_NP_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]
_NP_SCALAR = np.float64(0).__reduce__()[0]


class TorchZipError(ValueError):
  """A file that exists but is not a checkpoint this module can read or write."""


class NotAZipError(TorchZipError):
  """Not a zip archive (e.g. the legacy pre-1.6 `torch.save` format)."""


class MissingDataPklError(TorchZipError):
  """A zip archive without a `*/data.pkl` record."""


class StorageError(TorchZipError):
  """A storage record is missing, or too short for a tensor view on it."""


class UnsupportedDtypeError(TorchZipError):
  """A tensor dtype numpy cannot represent (quantized, complex32, ...) or `save` cannot write."""


class CheckpointLayoutError(ValueError):
  """A checkpoint that reads, but lacks the keys or shapes the model loading it expects."""


class PickledObject:
  """Inert stand-in for an instance of a class outside the allowlist.

  `find_class` makes one subclass per global, so `module`/`name` are the pickled import path
  (e.g. 'torch_ema', 'ExponentialMovingAverage'). Instance attributes: `args`/`kwargs` given to
  the constructor (REDUCE / NEWOBJ), `state` handed to `__setstate__` (usually the instance
  `__dict__`, tensors already numpy arrays; None if never set), and `dictitems`/`listitems`
  filled by SETITEMS/APPENDS when the class subclassed dict/list.
  """

  module: str = ""
  name: str = ""

  def __new__(cls, *args: Any, **kwargs: Any) -> PickledObject:
    self = super().__new__(cls)
    self.args, self.kwargs, self.state = args, kwargs, None
    self.dictitems, self.listitems = {}, []
    return self

  def __init__(self, *args: Any, **kwargs: Any) -> None:
    del args, kwargs  # already recorded by __new__ (NEWOBJ skips __init__, REDUCE calls both)

  def __setstate__(self, state: Any) -> None:
    self.state = state

  def __setitem__(self, key: Any, value: Any) -> None:
    self.dictitems[key] = value

  def append(self, value: Any) -> None:
    self.listitems.append(value)

  def extend(self, values: Any) -> None:
    self.listitems.extend(values)

  def __repr__(self) -> str:
    return f"PickledObject({self.module}.{self.name})"


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickles one `*.pkl` record of an archive. Storages become read-only (numel,) arrays of
  the storage dtype, in native byte order (raw uint8 for UntypedStorage). Allowlisted callables
  are closures of this per-load instance, so a crafted BUILD opcode that sets their attributes
  cannot tamper with later loads."""

  def __init__(self, archive: zipfile.ZipFile, path: pathlib.Path, prefix: str, pickle_name: str):
    super().__init__(io.BytesIO(archive.read(prefix + pickle_name)))
    self._archive, self._path, self._prefix = archive, path, prefix
    self._storage_dir = prefix + pickle_name.removesuffix(".pkl") + "/"
    has_order = prefix + "byteorder" in archive.namelist()  # absent in older files: little
    order = archive.read(prefix + "byteorder").decode() if has_order else "little"
    if order not in ("little", "big"):
      raise TorchZipError(f"{path}: byteorder record says {order!r}; expected 'little' or 'big'")
    self._swap = order != sys.byteorder
    self._storages: dict[str, np.ndarray] = {}  # key -> storage; shared by all views of it
    self._keys: dict[int, str] = {}  # id(storage) -> key: only these may back a tensor
    self._stubs: dict[tuple[str, str], type[PickledObject]] = {}
    first_arg = lambda value, *_: value  # noqa: E731
    self._allowed: dict[str, Any] = {
        "collections.OrderedDict": collections.OrderedDict,
        # (storage, offset, size, stride[, requires_grad, hooks, metadata]); autograd state dropped.
        "torch._utils._rebuild_tensor": lambda st, off, size, stride: (
            self._view(st, off, size, stride)),
        "torch._utils._rebuild_tensor_v2": lambda st, off, size, stride, *_: (
            self._view(st, off, size, stride)),
        # Newer dtypes (uint16, float8): UntypedStorage bytes + (requires_grad, hooks, dtype, ...).
        "torch._utils._rebuild_tensor_v3": lambda st, off, size, stride, _rg, _hooks, dtype, *_: (
            self._view(st, off, size, stride, self._dtype(dtype, self._keys.get(id(st), "?")))),
        "torch._utils._rebuild_parameter": first_arg,  # (data, requires_grad, hooks[, state])
        "torch._utils._rebuild_parameter_with_state": first_arg,
        # (func, type, args, state): func came through find_class too, so calling it is safe.
        "torch._tensor._rebuild_from_type_v2": lambda func, _type, args, _state: func(*args),
        "torch._tensor._rebuild_from_type": lambda func, _type, args, _state: func(*args),
        "torch.Size": tuple,
        "torch.device": lambda kind, index=None: kind if index is None else f"{kind}:{index}",
        "torch.jit._pickle.restore_type_tag": first_arg,  # TorchScript's typed list/dict tags
        **{f"torch.jit._pickle.build_{kind}list": list
           for kind in ("int", "double", "float", "bool", "tensor")},
        # Protocol 2 writes bytes as _codecs.encode(text, 'latin1').
        "_codecs.encode": lambda text, encoding="latin1": str(text).encode("latin1"),
        "builtins.set": set, "builtins.frozenset": frozenset, "builtins.complex": complex,
        "builtins.bytearray": bytearray, "builtins.slice": slice,
        **{f"numpy.{core}.multiarray.{fn.__name__}": fn
           for core in ("core", "_core") for fn in (_NP_RECONSTRUCT, _NP_SCALAR)},
        "numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype,
    }

  def find_class(self, module: str, name: str) -> Any:
    module = "builtins" if module == "__builtin__" else module  # protocol 2 uses Py2 names
    if f"{module}.{name}" in self._allowed:
      return self._allowed[f"{module}.{name}"]
    # Storage classes and dtypes both stand for their element dtype; UntypedStorage is raw bytes
    # whose element dtype _rebuild_tensor_v3 names. Unknown ones (qint8, ...) become stubs.
    if module in ("torch", "torch.storage") and name in _TORCH_GLOBALS:
      return _TORCH_GLOBALS[name]
    if (module, name) not in self._stubs:
      self._stubs[module, name] = type(name, (PickledObject,), {"module": module, "name": name})
    return self._stubs[module, name]

  def persistent_load(self, pid: Any) -> np.ndarray:
    """('storage', storage type, key, location, numel) -> record `<pickle dir>/<key>` as a
    read-only (numel,) array; TorchScript may give keys relative to the archive root instead."""
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
      raise TorchZipError(f"{self._path}: unexpected persistent id {pid!r}; expected "
                          "('storage', type, key, location, numel)")
    _, storage_type, key, _location, numel = pid
    key = key.decode() if isinstance(key, bytes) else str(key)
    if key in self._storages:
      return self._storages[key]
    dtype, numel = self._dtype(storage_type, key), int(numel)
    record = self._prefix + key if "/" in key else self._storage_dir + key
    try:
      raw = self._archive.read(record)
    except KeyError:
      raise StorageError(f"{self._path}: storage record {record!r} is missing; expected one "
                         f"holding {numel} {dtype.name} elements") from None
    if numel < 0 or len(raw) < numel * dtype.itemsize:
      raise StorageError(f"{self._path}: storage record {record!r} has {len(raw)} bytes; "
                         f"expected {numel} {dtype.name} elements ({numel * dtype.itemsize} bytes)")
    storage = np.frombuffer(raw, dtype, count=numel)
    self._storages[key] = storage.byteswap() if self._swap else storage
    self._keys[id(self._storages[key])] = key
    return self._storages[key]

  def _dtype(self, torch_type: Any, key: str) -> np.dtype:
    """The element dtype of a storage class / dtype global (np.dtype after find_class)."""
    if isinstance(torch_type, np.dtype):
      return torch_type
    name = f"{torch_type.module}.{torch_type.name}" if isinstance(torch_type, type) and issubclass(
        torch_type, PickledObject) else repr(torch_type)
    raise UnsupportedDtypeError(f"{self._path}: storage {key} has type {name}, which numpy cannot "
                                f"hold; expected one of {sorted(_TORCH_DTYPES)}")

  def _view(self, storage: Any, offset: int, size: Any, stride: Any,
            dtype: np.dtype | None = None) -> np.ndarray:
    """Tensor of `size` at element `offset` with element `stride` in `storage` (of `dtype`
    elements when given: raw bytes reinterpreted) -> a C-contiguous copy."""
    if id(storage) not in self._keys:
      raise StorageError(f"{self._path}: tensor built from {storage!r}; expected a storage")
    key = self._keys[id(storage)]
    flat = storage
    if dtype is not None:  # reinterpret raw bytes; a trailing partial element is ignored
      flat = storage[:storage.size // dtype.itemsize * dtype.itemsize].view(dtype)
    size, stride, offset = tuple(map(int, size)), tuple(map(int, stride)), int(offset)
    if len(size) != len(stride) or min((offset, *size, *stride)) < 0:
      raise StorageError(f"{self._path}: storage {key}: bad view offset {offset}, size {size}, "
                         f"stride {stride}")
    if 0 in size:
      return np.zeros(size, flat.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
      raise StorageError(
          f"{self._path}: storage {key} holds {flat.size} {flat.dtype.name} elements but the "
          f"tensor view (offset {offset}, size {size}, stride {stride}) needs {last + 1}")
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], size, tuple(s * flat.itemsize for s in stride), writeable=False)
    array = np.array(view, order="C")
    # Typed storages were swapped on read; bytes reinterpreted as wider elements are swapped here.
    return array.byteswap() if self._swap and dtype is not None else array


def _archive_prefix(archive: zipfile.ZipFile, path: pathlib.Path, pickle_name: str) -> str:
  """'archive/' for 'archive/data.pkl': the shallowest folder holding `pickle_name`."""
  found = [n for n in archive.namelist() if n == pickle_name or n.endswith("/" + pickle_name)]
  if not found:
    raise MissingDataPklError(f"{path}: zip archive has no */{pickle_name} record; expected a "
                              "checkpoint written by torch.save (torch >= 1.6) or torch.jit.save")
  return min(found, key=lambda n: n.count("/")).removesuffix(pickle_name)


def load(path: str | os.PathLike[str], *, pickle_name: str = "data.pkl") -> Any:
  """Unpickles a torch.save / torch.jit.save zip archive with every tensor as a numpy array.

  Args:
    path: the checkpoint file.
    pickle_name: the pickle record to read; 'data.pkl' (the saved object, or a TorchScript
      module's attributes) or e.g. 'constants.pkl' (a TorchScript archive's tensor constants).
  Returns:
    The saved object; tensors/Parameters -> C-contiguous `np.ndarray` (float16/32/64, bfloat16,
    int8/16/32/64, uint8, bool, complex, ...), OrderedDict stays OrderedDict, `torch.device` ->
    'cuda:0'-style str, `torch.float32` -> np.dtype, other classes -> `PickledObject`.
  Raises:
    FileNotFoundError; NotAZipError, MissingDataPklError, StorageError, UnsupportedDtypeError
    (all TorchZipError, a ValueError) naming the file.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such file; expected a torch.save checkpoint")
  if not zipfile.is_zipfile(path):
    with open(path, "rb") as f:  # legacy torch.save files are bare pickles: b"\x80\x02..."
      head = f.read(4)
    if head == b"PK\x03\x04":  # a zip archive whose end (the central directory) is missing
      raise NotAZipError(f"{path}: a truncated or damaged zip archive (it starts like a torch.save "
                         "checkpoint but its directory is missing); copy or download it again")
    legacy = " (a pickle: the legacy pre-1.6 torch.save format)" if head[:1] == b"\x80" else ""
    raise NotAZipError(
        f"{path}: not a zip archive{legacy}; expected a torch.save checkpoint in the zip format "
        "of torch >= 1.6. Re-save it with `torch.save(obj, path)` from a recent torch.")
  with zipfile.ZipFile(path) as archive:
    unpickler = _RestrictedUnpickler(
        archive, path, _archive_prefix(archive, path, pickle_name), pickle_name)
    try:
      return unpickler.load()
    except TorchZipError:
      raise
    except Exception as e:  # malformed pickle from an untrusted file: say which file
      raise TorchZipError(f"{path}: cannot unpickle {pickle_name}: {e!r}") from e


def require_finite(value: Any, source: str, key: str) -> np.ndarray:
  """`value` (a loaded tensor) as an array, or a TorchZipError naming `source` and `key` when it
  holds NaN or Inf (a damaged or diverged checkpoint would otherwise load silently)."""
  array = np.asarray(value)
  floating = array.dtype.kind in "fc" or array.dtype == ml_dtypes.bfloat16
  if floating and not np.all(np.isfinite(array.astype(np.complex128 if array.dtype.kind == "c"
                                                      else np.float32))):
    raise TorchZipError(f"{source}: {key} holds NaN or infinite values (a damaged or diverged "
                        "checkpoint)")
  return array


# --- the legacy (pre-1.6) format --------------------------------------------------------------------

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class _LegacyUnpickler(pickle.Unpickler):
  """The main pickle of a legacy torch.save state_dict. Only tensors and OrderedDicts are built;
  a tensor is ('tensor', (storage key, element offset of its view), offset, size, stride)."""

  def __init__(self, f):
    super().__init__(f)
    self.storages: dict[str, tuple[np.dtype, int]] = {}

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
      return lambda storage, offset, size, stride, *_: ("tensor", storage, offset, size, stride)
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
      return lambda data, *_: data
    if module == "torch" and name in STORAGE_DTYPES:
      return STORAGE_DTYPES[name]
    raise pickle.UnpicklingError(f"global {module}.{name} is not part of a state_dict")

  def persistent_load(self, pid: Any) -> tuple[str, int]:
    _, dtype, key, _location, numel, *view = pid
    self.storages.setdefault(str(key), (dtype, int(numel)))
    offset = view[0][1] if view and view[0] is not None else 0  # (view key, offset, size)
    return str(key), int(offset)


class _PlainUnpickler(pickle.Unpickler):
  """The legacy format's header and key-list pickles: ints, strings, lists and dicts only. No
  global is looked up and no persistent id resolved, so nothing from the file can run."""

  def find_class(self, module: str, name: str) -> Any:
    raise pickle.UnpicklingError(f"global {module}.{name} in a header record (expected plain data)")

  def persistent_load(self, pid: Any) -> Any:
    raise pickle.UnpicklingError("persistent id in a header record (expected plain data)")


def _plain_load(f: BinaryIO) -> Any:
  return _PlainUnpickler(f).load()


def _read_legacy(f: BinaryIO) -> dict[str, np.ndarray]:
  """Magic, protocol and sys-info pickles, the object (storages as persistent ids), the sorted
  storage keys, then each storage as little-endian int64 numel + raw data. Every pickle goes
  through a restricted unpickler (`_PlainUnpickler`, `_LegacyUnpickler`)."""
  if _plain_load(f) != _LEGACY_MAGIC or _plain_load(f) != _LEGACY_PROTOCOL:
    raise ValueError("no legacy torch.save magic number")
  info = _plain_load(f)
  if not isinstance(info, dict) or not info.get("little_endian", True):
    raise ValueError("big-endian legacy files are not supported")
  unpickler = _LegacyUnpickler(f)
  obj = unpickler.load()
  if not isinstance(obj, dict):
    raise ValueError(f"the saved object is a {type(obj).__name__}; expected a state_dict")
  data, file_size = {}, os.fstat(f.fileno()).st_size
  keys = _plain_load(f)
  if not isinstance(keys, list):
    raise ValueError(f"the storage key record is a {type(keys).__name__}; expected a list")
  for key in keys:
    dtype, numel = unpickler.storages[str(key)]
    (count,) = struct.unpack("<q", f.read(8))
    if count != numel or not 0 <= count * dtype.itemsize <= file_size - f.tell():
      raise ValueError(f"storage {key} holds {count} elements; expected {numel} within the file")
    data[str(key)] = np.frombuffer(f.read(count * dtype.itemsize), dtype)
  tensors = {}
  for name, t in obj.items():
    if not (isinstance(t, tuple) and t[:1] == ("tensor",)):
      continue
    (key, base), offset = t[1], int(t[2])
    size, stride = tuple(map(int, t[3])), tuple(map(int, t[4]))
    flat = data[key][base + offset:]
    last = sum((n - 1) * s for n, s in zip(size, stride)) if 0 not in size else -1
    if len(size) != len(stride) or min((base, offset, *size, *stride)) < 0 or last >= flat.size:
      raise ValueError(f"tensor {name} (offset {offset}, size {size}, stride {stride}) does not "
                       "fit its storage")
    tensors[str(name)] = np.lib.stride_tricks.as_strided(
        flat, size, tuple(s * flat.itemsize for s in stride)).copy()
  return tensors


def load_legacy(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """The tensors of a state_dict saved by torch < 1.6 (a bare pickle stream, not a zip), by name.

  Only state_dicts (a flat mapping name -> tensor) are read; entries that are not tensors are
  dropped. The same restrictions as `load`: no global outside torch's tensor rebuilding runs.
  Raises:
    FileNotFoundError; TorchZipError (a ValueError) naming the file.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such file; expected a torch.save checkpoint")
  try:
    with open(path, "rb") as f:
      return _read_legacy(f)
  except Exception as e:  # malformed or hostile file: one message naming it
    raise TorchZipError(f"{path}: cannot read a legacy (pre-1.6) torch.save state_dict: {e}") from None
