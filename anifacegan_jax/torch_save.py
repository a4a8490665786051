"""Write PyTorch checkpoints without torch: the zip format `torch.save` has written since 1.6
(`torch_zip` documents the format and reads it back; `torch.load` reads these files).

`save` writes nested dict / OrderedDict / list / tuple / scalars / numpy arrays as a protocol-2
pickle naming torch's tensor-rebuild globals, each array a storage record, atomically (a
temporary file renamed over the target).
"""

from __future__ import annotations

import collections
import io
import os
import pathlib
import pickle  # opcode constants only: nothing is unpickled here
import re
import stat
import struct
import sys
import tempfile
import zipfile
from typing import Any, BinaryIO

import numpy as np

from anifacegan_jax.torch_zip import STORAGE_DTYPES, UnsupportedDtypeError

# numpy dtype name -> storage class name written by `save`.
_SAVE_STORAGE = {dt.name: name for name, dt in STORAGE_DTYPES.items()}


class _PickleWriter:
  """Emits, opcode by opcode, the protocol-2 pickle torch.save would write for nested
  dict/OrderedDict/list/tuple/scalars/arrays. Hand-written because the stdlib Pickler imports
  the module of every global it writes, and we must name torch globals without torch."""

  def __init__(self, path: pathlib.Path):
    self._path, self._out = path, io.BytesIO()
    self.storages: dict[str, bytes] = {}  # key -> little-endian element bytes
    self._keys: dict[int, tuple[str, np.ndarray]] = {}  # id(array) -> (key, array kept alive)

  def dumps(self, obj: Any) -> bytes:
    self._out.write(pickle.PROTO + b"\x02")
    self._save(obj, "obj")
    return self._out.getvalue() + pickle.STOP

  def _global(self, module: str, name: str) -> None:
    self._out.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())

  def _save(self, obj: Any, where: str) -> None:
    w = self._out.write
    if obj is None or isinstance(obj, bool):
      w({None: pickle.NONE, True: pickle.NEWTRUE, False: pickle.NEWFALSE}[obj])
    elif isinstance(obj, np.ndarray | np.generic) or (
        hasattr(obj, "__array__") and hasattr(obj, "dtype")):  # e.g. jax.Array
      self._save_tensor(obj, where)  # before float: np.float64 subclasses float
    elif isinstance(obj, int):
      w(_int_opcode(int(obj)))
    elif isinstance(obj, float):
      w(pickle.BINFLOAT + struct.pack(">d", obj))
    elif isinstance(obj, str):
      w(_str_opcode(obj))
    elif isinstance(obj, bytes):  # as Python's own protocol-2 pickler: _codecs.encode(str, latin1)
      self._global("_codecs", "encode")
      w(_str_opcode(obj.decode("latin1")) + _str_opcode("latin1") + pickle.TUPLE2 + pickle.REDUCE)
    elif isinstance(obj, dict | list | tuple):
      self._save_container(obj, where)
    else:
      raise TypeError(f"{self._path}: cannot save {where} of type {type(obj).__name__}; expected "
                      "dict/OrderedDict/list/tuple/None/bool/int/float/str/bytes/numpy array")

  def _save_container(self, obj: dict | list | tuple, where: str) -> None:
    w = self._out.write
    if isinstance(obj, list | tuple):
      w(pickle.MARK if isinstance(obj, tuple) else pickle.EMPTY_LIST + pickle.MARK)
      for i, item in enumerate(obj):
        self._save(item, f"{where}[{i}]")
      w(pickle.TUPLE if isinstance(obj, tuple) else pickle.APPENDS)
    else:
      if isinstance(obj, collections.OrderedDict):  # what torch writes for state_dicts
        self._global("collections", "OrderedDict")
        w(pickle.EMPTY_TUPLE + pickle.REDUCE + pickle.MARK)
      else:
        w(pickle.EMPTY_DICT + pickle.MARK)
      for key, value in obj.items():
        self._save(key, f"key of {where}")
        self._save(value, f"{where}[{key!r}]")
      w(pickle.SETITEMS)

  def _save_tensor(self, obj: Any, where: str) -> None:
    """`_rebuild_tensor_v2(storage, 0, shape, C strides, False, OrderedDict())`."""
    array = np.asarray(obj)
    storage_type = _SAVE_STORAGE.get(array.dtype.name)
    if storage_type is None:
      raise UnsupportedDtypeError(f"{self._path}: cannot save {where} of dtype {array.dtype}; "
                                  f"expected one of {sorted(_SAVE_STORAGE)}")
    if id(obj) not in self._keys:  # the same array object twice shares one storage
      key = str(len(self.storages))
      little = np.ascontiguousarray(array)
      order = little.dtype.byteorder
      if order == ">" or (order == "=" and sys.byteorder == "big"):
        little = little.byteswap()
      self.storages[key] = little.tobytes()
      self._keys[id(obj)] = (key, obj)
    strides = tuple(int(np.prod(array.shape[i + 1:])) for i in range(array.ndim))
    self._global("torch._utils", "_rebuild_tensor_v2")
    self._out.write(pickle.MARK + pickle.MARK + _str_opcode("storage"))
    self._global("torch", storage_type)
    self._out.write(_str_opcode(self._keys[id(obj)][0]) + _str_opcode("cpu")
                    + _int_opcode(array.size) + pickle.TUPLE + pickle.BINPERSID + _int_opcode(0))
    # shape, strides, requires_grad=False, backward hooks OrderedDict(); then close the call.
    for part in (array.shape, strides, False, collections.OrderedDict()):
      self._save(part, where)
    self._out.write(pickle.TUPLE + pickle.REDUCE)


def _int_opcode(value: int) -> bytes:
  if -2**31 <= value < 2**31:
    return pickle.BININT + struct.pack("<i", value)
  encoded = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
  return pickle.LONG1 + bytes([len(encoded)]) + encoded


def _str_opcode(text: str) -> bytes:
  encoded = text.encode("utf-8", "surrogatepass")
  return pickle.BINUNICODE + struct.pack("<I", len(encoded)) + encoded


def _write_zip(f: BinaryIO, folder: str, records: dict[str, bytes]) -> None:
  """Stored zip whose record data start on 64-byte boundaries, as torch's writer does (via a
  padding extra field 'FB'), so torch.load(mmap=True) can map them."""
  with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as archive:
    for name, data in records.items():
      info = zipfile.ZipInfo(f"{folder}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
      header_end = f.tell() + 30 + len(info.filename.encode()) + 4
      pad = -header_end % 64
      info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
      archive.writestr(info, data)


def save(obj: Any, path: str | os.PathLike[str]) -> None:
  """Writes `obj` as a zip checkpoint `torch.load(path, weights_only=True)` reads.

  Args:
    obj: nested dict / OrderedDict / list / tuple (tuples, incl. namedtuples, load as tuples) of
      None/bool/int/float/str/bytes and arrays (np.ndarray, numpy scalars or anything with
      `__array__`, e.g. jax.Array) of dtype float16/32/64, bfloat16, int8/16/32/64, uint8, bool,
      complex64/128; each becomes a contiguous CPU tensor.
    path: destination; written to a temp file beside it then renamed, so an interrupted save
      leaves any existing checkpoint intact. The archive folder is the file stem, like torch.
  Raises:
    TypeError (unsupported object), UnsupportedDtypeError (unsupported dtype), OSError.
  """
  path = pathlib.Path(path)
  writer = _PickleWriter(path)
  records = {"data.pkl": writer.dumps(obj),  # before touching the disk: fail early
             **{f"data/{key}": data for key, data in writer.storages.items()},
             "version": b"3\n", "byteorder": b"little"}
  folder = path.stem if re.fullmatch(r"[A-Za-z0-9_.-]+", path.stem) else "archive"
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      _write_zip(f, folder, records)
      f.flush()
      os.fsync(f.fileno())
    # mkstemp makes 0600 files; keep an existing checkpoint's mode, else the usual 0644.
    os.chmod(tmp, stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644)
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise
