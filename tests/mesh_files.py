"""Readers of the files `anifacegan_jax.export` writes (its own PLY, OBJ and 16-bit depth PNG
layouts), for round-trip tests; not general-purpose readers."""

import pathlib

import numpy as np
from PIL import Image

from anifacegan_jax.types import Mesh


def read_depth_png(path, near: float, far: float) -> np.ndarray:
  """(H, W) float32 depth of a 16-bit PNG: 0 → near, 65535 → far."""
  with Image.open(path) as image:
    assert image.mode in ("I;16", "I;16L", "I;16B", "I"), image.mode
    values = np.asarray(image).astype(np.float64)
  return (near + values / 65535 * (far - near)).astype(np.float32)


def read_ply(path) -> Mesh:
  """A PLY of `export.write_ply`: binary little-endian or ascii, optional uchar colours."""
  data = pathlib.Path(path).read_bytes()
  head, body = data.split(b"end_header\n", 1)
  lines = head.decode("ascii").splitlines()
  binary = "format binary_little_endian 1.0" in lines
  num_vertices = int(next(l for l in lines if l.startswith("element vertex")).split()[-1])
  num_faces = int(next(l for l in lines if l.startswith("element face")).split()[-1])
  has_colors = "property uchar red" in lines
  if binary:
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")] if has_colors else []
    vertex = np.frombuffer(body, fields, num_vertices)
    face = np.frombuffer(body, [("count", "u1"), ("indices", "<i4", (3,))], num_faces,
                         offset=vertex.nbytes)
    assert vertex.nbytes + face.nbytes == len(body) and np.all(face["count"] == 3)
    vertices = np.stack([vertex[n] for n in "xyz"], axis=1)
    colors = np.stack([vertex[n] for n in ("red", "green", "blue")], axis=1) if has_colors else None
    faces = face["indices"]
  else:
    rows = [r.split() for r in body.decode("ascii").splitlines() if r.strip()]
    assert len(rows) == num_vertices + num_faces
    values = np.array(rows[:num_vertices], np.float64).reshape(num_vertices,
                                                               6 if has_colors else 3)
    vertices = values[:, :3]
    colors = values[:, 3:6] if has_colors else None
    faces = np.array(rows[num_vertices:], np.int64).reshape(num_faces, 4)[:, 1:]
  return Mesh(vertices=vertices.astype(np.float32), faces=faces,
              colors=None if colors is None else colors.astype(np.float32) / np.float32(255))


def read_obj(path) -> Mesh:
  """An OBJ of `export.write_obj`: `v x y z [r g b]`, `f a b c` (1-based)."""
  vertices, faces = [], []
  for line in pathlib.Path(path).read_text().splitlines():
    tokens = line.split()
    if tokens and tokens[0] == "v":
      vertices.append([float(x) for x in tokens[1:]])
    elif tokens and tokens[0] == "f":
      faces.append([int(x) - 1 for x in tokens[1:]])
  values = np.array(vertices, np.float64).reshape(len(vertices), -1 if vertices else 3)
  return Mesh(vertices=values[:, :3].astype(np.float32),
              faces=np.array(faces, np.int64).reshape(-1, 3),
              colors=values[:, 3:6].astype(np.float32) if values.shape[1] == 6 else None)


def read_mesh(path) -> Mesh:
  return read_ply(path) if pathlib.Path(path).suffix.lower() == ".ply" else read_obj(path)
