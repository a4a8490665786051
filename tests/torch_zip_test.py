"""torch_zip: torch.save zip checkpoints read and written without torch.

Archives that torch itself would write are built here opcode by opcode (the same opcodes real
torch 2.x files use), so strided views, shared storages, foreign classes and damaged files are
covered without torch installed.
"""

import collections
import pathlib
import pickle
import pickletools
import re
import struct
import zipfile

import ml_dtypes
import numpy as np
import pytest

from anifacegan_jax import torch_save, torch_zip

REFERENCE_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "reference"
REFERENCE_DIF = REFERENCE_DIR / "aniface_dif.pth"


# --- pickle opcodes of the torch.save subset (protocol 2) ---------------------------------------

def _str(text: str) -> bytes:
  data = text.encode()
  return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
  return pickle.BININT + struct.pack("<i", value)


def _tuple(*items: bytes) -> bytes:
  return pickle.MARK + b"".join(items) + pickle.TUPLE


def _global(module: str, name: str) -> bytes:
  return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _dict(items: dict[str, bytes]) -> bytes:
  pairs = b"".join(_str(k) + v for k, v in items.items())
  return pickle.EMPTY_DICT + pickle.MARK + pairs + pickle.SETITEMS


def _tensor(storage_type: str, key: str, numel: int, offset: int, size: tuple, stride: tuple,
            rebuild: str = "_rebuild_tensor_v2", extra: bytes = b"") -> bytes:
  """`torch._utils.<rebuild>(('storage', torch.<storage_type>, key, 'cpu', numel), offset, size,
  stride, False, OrderedDict() [+ extra])` — the call torch.save writes for each tensor."""
  module = "torch.storage" if storage_type == "UntypedStorage" else "torch"  # as torch 2.x writes
  storage = _tuple(_str("storage"), _global(module, storage_type), _str(key), _str("cpu"),
                   _int(numel))
  hooks = _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
  tail = b"" if rebuild == "_rebuild_tensor" else pickle.NEWFALSE + hooks + extra
  return (_global("torch._utils", rebuild) + pickle.MARK + storage + pickle.BINPERSID
          + _int(offset) + _tuple(*map(_int, size)) + _tuple(*map(_int, stride)) + tail
          + pickle.TUPLE + pickle.REDUCE)


def _write_archive(path: pathlib.Path, body: bytes, records: dict[str, bytes],
                   folder: str = "dif", byteorder: str | None = "little") -> pathlib.Path:
  """A zip laid out like torch.save's: <folder>/data.pkl, <folder>/data/<key>, version,
  byteorder."""
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr(f"{folder}/data.pkl", pickle.PROTO + b"\x02" + body + pickle.STOP)
    for key, data in records.items():
      archive.writestr(f"{folder}/data/{key}", data)
    archive.writestr(f"{folder}/version", "3\n")
    if byteorder is not None:
      archive.writestr(f"{folder}/byteorder", byteorder)
  return path


# --- round trips ----------------------------------------------------------------------------------

DTYPES = [np.float16, np.float32, np.float64, ml_dtypes.bfloat16, np.int8, np.int16, np.int32,
          np.int64, np.uint8, np.bool_, np.complex64, np.complex128]


def test_round_trip_of_nested_containers_with_every_dtype(tmp_path):
  rng = np.random.default_rng(0)
  arrays = collections.OrderedDict(
      (np.dtype(dt).name, (rng.normal(size=(3, 4)) * 50).astype(dt)) for dt in DTYPES)
  strided = np.arange(24.0).reshape(4, 6)[1:, ::2]  # non-contiguous input is written contiguous
  shared = np.arange(5, dtype=np.int32)
  obj = {"state_dict": arrays, "strided": strided, "pair": [shared, shared],
         "misc": (None, True, False, 0, 255, 65536, -7, 2**31, -2**40, 2**80, 1.5, "héllo ☃",
                  b"\x00\xff"),
         "scalar": np.float32(2.5), "empty": np.zeros((0, 3), np.float32), 3: {"nested": [[]]}}
  path = tmp_path / "ckpt.pth"
  torch_save.save(obj, path)
  back = torch_zip.load(path)

  assert type(back["state_dict"]) is collections.OrderedDict
  assert list(back["state_dict"]) == list(arrays)
  for name, array in arrays.items():
    got = back["state_dict"][name]
    assert got.dtype == array.dtype and got.shape == array.shape, name
    np.testing.assert_array_equal(got, array)
  np.testing.assert_array_equal(back["strided"], strided)
  assert back["strided"].flags.c_contiguous
  np.testing.assert_array_equal(back["pair"][1], shared)
  assert back["misc"] == obj["misc"]
  assert back["scalar"].shape == () and back["scalar"].dtype == np.float32 and back["scalar"] == 2.5
  assert back["empty"].shape == (0, 3)
  assert back[3] == {"nested": [[]]}


def test_saved_layout_is_torch_s(tmp_path):
  """<stem>/data.pkl (protocol 2, _rebuild_tensor_v2 + storage persistent ids), data/<key>,
  version "3\\n", byteorder "little"; the same array object twice shares one storage."""
  shared = np.ones((2, 3), np.float32)
  torch_save.save(collections.OrderedDict(a=shared, b=shared, c=np.zeros(4, np.int64)),
                 tmp_path / "dif.pth")
  with zipfile.ZipFile(tmp_path / "dif.pth") as archive:
    assert sorted(archive.namelist()) == [
        "dif/byteorder", "dif/data.pkl", "dif/data/0", "dif/data/1", "dif/version"]
    assert archive.read("dif/version") == b"3\n" and archive.read("dif/byteorder") == b"little"
    assert archive.read("dif/data/1") == bytes(32)
    data_pkl = archive.read("dif/data.pkl")
  assert data_pkl[:2] == b"\x80\x02"
  globals_ = {arg for op, arg, _ in pickletools.genops(data_pkl) if op.name == "GLOBAL"}
  assert globals_ == {"collections OrderedDict", "torch._utils _rebuild_tensor_v2",
                      "torch FloatStorage", "torch LongStorage"}
  assert sum(op.name == "BINPERSID" for op, _, _ in pickletools.genops(data_pkl)) == 3


def test_save_is_atomic(tmp_path, monkeypatch):
  path = tmp_path / "model.pth"
  torch_save.save({"w": np.ones(3, np.float32)}, path)
  original = path.read_bytes()

  def interrupted_write(f, folder, records):
    f.write(b"partial zip")
    raise KeyboardInterrupt

  monkeypatch.setattr(torch_save, "_write_zip", interrupted_write)
  with pytest.raises(KeyboardInterrupt):
    torch_save.save({"w": np.zeros(3, np.float32)}, path)
  assert path.read_bytes() == original
  assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]  # no temp file left behind


def test_save_rejects_unsupported_values_before_writing(tmp_path):
  path = tmp_path / "bad.pth"
  with pytest.raises(TypeError, match=re.escape(str(path)) + r".*\['x'\].*set"):
    torch_save.save({"x": {1, 2}}, path)
  with pytest.raises(torch_zip.UnsupportedDtypeError, match=re.escape(str(path)) + ".*uint16"):
    torch_save.save({"x": np.zeros(2, np.uint16)}, path)
  assert not list(tmp_path.iterdir())


# --- reading archives as torch writes them --------------------------------------------------------

def test_strided_views_and_shared_storages(tmp_path):
  """`t` (4, 6) saved alongside `t[1:, ::2]`, `t.T`, `t.view(-1)[5:11]`: one storage, four views."""
  t = np.arange(24, dtype=np.float32).reshape(4, 6)
  body = _dict({
      "t": _tensor("FloatStorage", "0", 24, 0, (4, 6), (6, 1)),
      "v": _tensor("FloatStorage", "0", 24, 6, (3, 3), (6, 2)),
      "tt": _tensor("FloatStorage", "0", 24, 0, (6, 4), (1, 6)),
      "off": _tensor("FloatStorage", "0", 24, 5, (6,), (1,), rebuild="_rebuild_tensor"),
      "bcast": _tensor("FloatStorage", "0", 24, 2, (3, 2), (0, 1)),  # expand(): stride 0
      "p": _global("torch._utils", "_rebuild_parameter")
           + _tuple(_tensor("LongStorage", "1", 2, 1, (1,), (1,)), pickle.NEWTRUE,
                    _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE)
           + pickle.REDUCE,
  })
  path = _write_archive(tmp_path / "views.pth", body,
                        {"0": t.tobytes(), "1": np.array([7, -9]).tobytes()})
  got = torch_zip.load(path)
  wants = {"t": t, "v": t[1:, ::2], "tt": t.T, "off": t.reshape(-1)[5:11],
           "bcast": np.broadcast_to(t.reshape(-1)[2:4], (3, 2)), "p": np.array([-9])}
  for name, want in wants.items():
    np.testing.assert_array_equal(got[name], want, err_msg=name)
    assert got[name].flags.c_contiguous and got[name].dtype == want.dtype, name
  got["v"][0, 0] = -1.0  # copies, not views into one another
  assert got["t"][1, 0] == 6.0


def test_new_dtype_form_untyped_storage_with_dtype_global(tmp_path):
  """uint16 / float8: `_rebuild_tensor_v3(UntypedStorage bytes, ..., dtype=torch.uint16)`."""
  values = np.array([1, 65535, 300], np.uint16)
  body = _dict({"u": _tensor("UntypedStorage", "0", 6, 0, (3,), (1,), rebuild="_rebuild_tensor_v3",
                             extra=_global("torch", "uint16"))})
  got = torch_zip.load(_write_archive(tmp_path / "u16.pth", body, {"0": values.tobytes()}))
  np.testing.assert_array_equal(got["u"], values)
  assert got["u"].dtype == np.uint16


def test_big_endian_archive(tmp_path):
  values = np.array([[1.5, -2.0], [3.25, 1e-3]], np.float32)
  body = _dict({"w": _tensor("FloatStorage", "0", 4, 0, (2, 2), (1, 2))})
  path = _write_archive(tmp_path / "be.pth", body, {"0": values.T.astype(">f4").tobytes()},
                        byteorder="big")
  np.testing.assert_array_equal(torch_zip.load(path)["w"], values)


def test_unknown_classes_load_as_inert_pickled_objects(tmp_path):
  """A whole torch_ema.ExponentialMovingAverage (NEWOBJ + BUILD) and a global that would run
  code if called (REDUCE of os.system) both come back as PickledObject records."""
  ema = (_global("torch_ema", "ExponentialMovingAverage") + pickle.EMPTY_TUPLE + pickle.NEWOBJ
         + _dict({"decay": pickle.BINFLOAT + struct.pack(">d", 0.999),
                  "shadow_params": pickle.EMPTY_LIST + pickle.MARK
                  + _tensor("HalfStorage", "0", 3, 0, (3,), (1,)) + pickle.APPENDS})
         + pickle.BUILD)
  marker = tmp_path / "pwned"
  evil = _global("os", "system") + _tuple(_str(f"touch {marker}")) + pickle.REDUCE
  path = _write_archive(tmp_path / "ema.pth", _dict({"ema": ema, "evil": evil}),
                        {"0": np.array([1, 2, 3], np.float16).tobytes()})
  got = torch_zip.load(path)

  assert isinstance(got["ema"], torch_zip.PickledObject)
  assert (got["ema"].module, got["ema"].name) == ("torch_ema", "ExponentialMovingAverage")
  assert got["ema"].state["decay"] == 0.999
  np.testing.assert_array_equal(got["ema"].state["shadow_params"][0],
                                np.array([1, 2, 3], np.float16))
  assert isinstance(got["evil"], torch_zip.PickledObject)
  evil = got["evil"]
  assert (evil.module, evil.name, evil.args) == ("os", "system", (f"touch {marker}",))
  assert not marker.exists()


def test_allowlisted_python_and_numpy_values(tmp_path):
  """Sets, bytes, complex (protocol 2 names them `__builtin__.*` / `_codecs.encode`) and numpy
  scalars/arrays as training scripts pickle them alongside tensors."""
  value = {"s": {1, 2}, "b": b"ab", "c": 1 + 2j, "epoch": np.float64(0.5), "arr": np.arange(3)}
  path = _write_archive(tmp_path / "misc.pth", pickle.dumps(value, protocol=2)[2:-1], {})
  got = torch_zip.load(path)
  for key in ("s", "b", "c", "epoch"):
    assert got[key] == value[key], key
  assert type(got["epoch"]) is np.float64
  np.testing.assert_array_equal(got["arr"], value["arr"])


def test_top_folder_is_found_whatever_its_name(tmp_path):
  body = _dict({"b": _tensor("BoolStorage", "0", 2, 0, (2,), (1,))})
  path = _write_archive(tmp_path / "x.pth", body, {"0": b"\x01\x00"}, folder="archive",
                        byteorder=None)
  np.testing.assert_array_equal(torch_zip.load(path)["b"], [True, False])


# --- errors name the file and say what was expected -----------------------------------------------

def test_missing_file(tmp_path):
  path = tmp_path / "nope.pth"
  with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
    torch_zip.load(path)


def test_legacy_non_zip_file(tmp_path):
  path = tmp_path / "legacy.pth"
  path.write_bytes(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.")  # pre-1.6 torch.save magic
  expected = re.escape(str(path)) + r".*torch\.save\(obj, path\)"
  with pytest.raises(torch_zip.NotAZipError, match=expected):
    torch_zip.load(path)


def test_zip_without_data_pkl(tmp_path):
  path = tmp_path / "other.zip"
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/readme.txt", "hi")
  with pytest.raises(torch_zip.MissingDataPklError, match=re.escape(str(path)) + ".*data.pkl"):
    torch_zip.load(path)


@pytest.mark.parametrize("records,numel,size,match", [
    ({}, 4, (4,), "missing"),  # storage record absent
    ({"0": bytes(8)}, 4, (4,), "has 8 bytes"),  # shorter than its declared numel
    ({"0": bytes(16)}, 4, (5,), "needs 5"),  # view reaches past the storage
])
def test_bad_storage(tmp_path, records, numel, size, match):
  body = _dict({"w": _tensor("FloatStorage", "0", numel, 0, size, (1,))})
  path = _write_archive(tmp_path / "bad.pth", body, records)
  with pytest.raises(torch_zip.StorageError, match=re.escape(str(path)) + ".*" + match):
    torch_zip.load(path)


def test_unsupported_dtype(tmp_path):
  body = _dict({"q": _tensor("QInt8Storage", "0", 2, 0, (2,), (1,))})
  path = _write_archive(tmp_path / "q.pth", body, {"0": bytes(2)})
  expected = re.escape(str(path)) + ".*QInt8Storage"
  with pytest.raises(torch_zip.UnsupportedDtypeError, match=expected):
    torch_zip.load(path)
  assert issubclass(torch_zip.UnsupportedDtypeError, ValueError)


# --- the released checkpoint ----------------------------------------------------------------------

def test_released_deformation_checkpoint():
  if not REFERENCE_DIF.is_file():
    pytest.skip(f"released checkpoint not found at {REFERENCE_DIF}")
  state = torch_zip.load(REFERENCE_DIF)
  shapes = {
      "network.0.layer.weight": (128, 7), "network.0.layer.bias": (128,),
      "network.1.layer.weight": (128, 128), "network.1.layer.bias": (128,),
      "network.2.layer.weight": (128, 128), "network.2.layer.bias": (128,),
      "final_layer.weight": (7, 128), "final_layer.bias": (7,),
      **{f"mapping_network.network.{i}.weight": s
         for i, s in zip((0, 2, 4, 6), [(128, 144), (128, 128), (128, 128), (768, 128)])},
      **{f"mapping_network.network.{i}.bias": (s,)
         for i, s in zip((0, 2, 4, 6), (128, 128, 128, 768))},
  }
  assert type(state) is collections.OrderedDict
  assert {k: v.shape for k, v in state.items()} == shapes
  assert all(v.dtype == np.float32 for v in state.values())
  assert sum(v.size for v in state.values()) == 185_607
  np.testing.assert_allclose(state["final_layer.bias"][:3], [0.0283, 0.0217, -0.0451], atol=1e-4)
  weight = state["network.0.layer.weight"]
  assert weight.mean() == pytest.approx(1.39e-3, abs=1e-4)
  assert weight.std() == pytest.approx(0.121, abs=1e-3)
