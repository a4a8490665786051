"""Depth maps and triangle meshes from rendered views: 16-bit PNG, PLY and OBJ (numpy + pillow).

Depth is `RenderOutput.depth`: the distance along the unit pixel ray, world units (SPEC §1). A
mesh from one view puts one vertex per foreground pixel at origin + depth·direction, with the
pixel rays of `rendering.camera`, and joins each fully foreground pixel quad into two triangles.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import pathlib

import numpy as np
from PIL import Image

from anifacegan_jax.rendering import camera as camera_lib

PathLike = str | os.PathLike

MAX_EDGE_PIXELS = 3.0  # default `depth_mesh` edge limit, in pixel footprints
DEFAULT_NEAR = 0.88
DEFAULT_FAR = 1.12
_UINT16_MAX = 65535

# PLY scalar types (both the PLY 1.0 names and the sized aliases) → numpy type codes.
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_PLY_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
_MESH_SUFFIXES = (".ply", ".obj")


@dataclasses.dataclass(frozen=True, eq=False)
class Mesh:
  """A triangle mesh in world units; the arrays are read-only copies.

  Attributes:
    vertices: (V, 3) float32 positions, world units.
    faces: (F, 3) int32 vertex indices, counter-clockwise seen from the front: the normal
      (v1 - v0) × (v2 - v0) points out of the surface (towards the camera for `depth_mesh`).
    colors: (V, 3) uint8 RGB per vertex, or None.
  """

  vertices: np.ndarray
  faces: np.ndarray
  colors: np.ndarray | None = None

  def __post_init__(self):
    vertices = np.asarray(self.vertices)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
      raise ValueError(f"vertices must have shape (V, 3), got {vertices.shape}")
    if not (np.issubdtype(vertices.dtype, np.floating)
            or np.issubdtype(vertices.dtype, np.integer)):
      raise ValueError(f"vertices must be a float array, got dtype {vertices.dtype}")
    if not np.all(np.isfinite(vertices)):
      raise ValueError("vertices must be finite")
    num_vertices = vertices.shape[0]

    faces = np.asarray(self.faces)
    if faces.ndim != 2 or faces.shape[1] != 3:
      raise ValueError(f"faces must have shape (F, 3), got {faces.shape}")
    if faces.size and not np.issubdtype(faces.dtype, np.integer):
      raise ValueError(f"faces must be an integer array, got dtype {faces.dtype}")
    if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
      raise ValueError(f"faces index vertices out of range [0, {num_vertices}): "
                       f"min {faces.min()}, max {faces.max()}")

    colors = self.colors
    if colors is not None:
      colors = np.asarray(colors)
      if colors.shape != (num_vertices, 3):
        raise ValueError(f"colors must have shape (V, 3) = {(num_vertices, 3)}, got "
                         f"{colors.shape}")
      if colors.size and not np.issubdtype(colors.dtype, np.integer):
        raise ValueError(f"colors must be a uint8 array, got dtype {colors.dtype}")
      if colors.size and (colors.min() < 0 or colors.max() > 255):
        raise ValueError("colors must lie in [0, 255]")
      colors = _read_only(colors.astype(np.uint8))

    object.__setattr__(self, "vertices", _read_only(vertices.astype(np.float32)))
    object.__setattr__(self, "faces", _read_only(faces.astype(np.int32)))
    object.__setattr__(self, "colors", colors)


def _read_only(array: np.ndarray) -> np.ndarray:
  array = np.array(array, copy=True)
  array.flags.writeable = False
  return array


def _prepare_path(path: PathLike) -> pathlib.Path:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  return path


# ------------------------------------------------------------------------------------------------
# Depth maps.


def _check_range(near: float, far: float) -> tuple[float, float]:
  near, far = float(near), float(far)
  if not (math.isfinite(near) and math.isfinite(far)) or near >= far:
    raise ValueError(f"near must be < far and both finite, got near={near}, far={far}")
  return near, far


def _check_depth(depth, mask=None) -> np.ndarray:
  """float64 2-D depth, finite everywhere (or where the boolean `mask` is True)."""
  depth = np.asarray(depth)
  if depth.ndim != 2:
    raise ValueError(f"depth must be a 2-D (R, R) array, got shape {depth.shape}")
  if not (np.issubdtype(depth.dtype, np.floating) or np.issubdtype(depth.dtype, np.integer)):
    raise ValueError(f"depth must be a float array, got dtype {depth.dtype}")
  depth = depth.astype(np.float64)
  checked = depth if mask is None else depth[_check_mask(mask, depth.shape)]
  bad = int(np.count_nonzero(~np.isfinite(checked)))
  if bad:
    where = "" if mask is None else " where mask is True"
    raise ValueError(f"depth must be finite{where}, got {bad} NaN or infinite values")
  return depth


def _check_mask(mask, shape: tuple[int, ...]) -> np.ndarray:
  mask = np.asarray(mask)
  if mask.shape != shape:
    raise ValueError(f"mask must have the shape of depth {shape}, got {mask.shape}")
  if mask.dtype != np.bool_:
    raise ValueError(f"mask must be a boolean array (e.g. opacity > 0.5), got dtype {mask.dtype}")
  return mask


def depth_to_uint16(depth, near: float = DEFAULT_NEAR, far: float = DEFAULT_FAR) -> np.ndarray:
  """Quantises depth linearly: near → 0, far → 65535, rounded and clipped.

  Args:
    depth: (H, W) float depth, world units along the ray (as `RenderOutput.depth`).
    near: depth mapped to 0.
    far: depth mapped to 65535.

  Returns:
    (H, W) uint16.

  Raises:
    ValueError: depth not 2-D or not finite, or near >= far.
  """
  near, far = _check_range(near, far)
  depth = _check_depth(depth)
  scaled = np.round((depth - near) / (far - near) * _UINT16_MAX)
  return np.clip(scaled, 0, _UINT16_MAX).astype(np.uint16)


def write_depth_png(path: PathLike, depth, near: float = DEFAULT_NEAR,
                    far: float = DEFAULT_FAR) -> pathlib.Path:
  """Writes `depth_to_uint16(depth, near, far)` as a 16-bit grayscale PNG (mode "I;16").

  Returns:
    The written path; parent directories are created.
  """
  quantised = depth_to_uint16(depth, near, far)
  path = _prepare_path(path)
  Image.fromarray(np.ascontiguousarray(quantised.astype("<u2"))).save(path, format="PNG")
  return path


def read_depth_png(path: PathLike, near: float = DEFAULT_NEAR,
                   far: float = DEFAULT_FAR) -> np.ndarray:
  """Reads a 16-bit depth PNG back to (H, W) float32 depth, within (far - near) / 65535 / 2.

  Raises:
    ValueError: the file is not a single-channel 16-bit image, or near >= far.
  """
  near, far = _check_range(near, far)
  path = pathlib.Path(path)
  with Image.open(path) as image:
    mode = image.mode
    if mode not in ("I;16", "I;16L", "I;16B", "I"):
      raise ValueError(f"{path}: expected a 16-bit grayscale PNG, got mode {mode!r}")
    values = np.asarray(image).astype(np.int64)
  if values.ndim != 2 or (values.size and (values.min() < 0 or values.max() > _UINT16_MAX)):
    raise ValueError(f"{path}: expected 16-bit grayscale values in [0, 65535]")
  return (near + values / _UINT16_MAX * (far - near)).astype(np.float32)


def depth_preview(depth, mask, near: float = DEFAULT_NEAR,
                  far: float = DEFAULT_FAR) -> np.ndarray:
  """An 8-bit visualization of depth: near = 255 (bright), far = 0, background (~mask) = 0.

  Args:
    depth: (H, W) float depth, world units.
    mask: (H, W) bool, True on the foreground.
    near: depth shown white.
    far: depth shown black.

  Returns:
    (H, W) uint8.
  """
  near, far = _check_range(near, far)
  depth = _check_depth(depth)
  mask = _check_mask(mask, depth.shape)
  brightness = np.clip((far - depth) / (far - near), 0.0, 1.0)
  return np.where(mask, np.round(brightness * 255.0), 0).astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# Meshes from one view.


def _scalar(name: str, value) -> float:
  array = np.asarray(value)
  if array.size != 1 or not (np.issubdtype(array.dtype, np.floating)
                             or np.issubdtype(array.dtype, np.integer)):
    raise ValueError(f"{name} must be a real scalar, got shape {array.shape} dtype {array.dtype}")
  result = float(array.reshape(()))
  if not math.isfinite(result):
    raise ValueError(f"{name} must be finite, got {result}")
  return result


def _colors_to_uint8(colors, shape: tuple[int, ...]) -> np.ndarray:
  """uint8 colors as is; floats in [-1, 1] as images: round((x + 1)·127.5), clipped."""
  colors = np.asarray(colors)
  if colors.shape != shape:
    raise ValueError(f"colors must have shape (R, R, 3) = {shape}, got {colors.shape}")
  if colors.dtype == np.uint8:
    return colors
  if not np.issubdtype(colors.dtype, np.floating):
    raise ValueError(f"colors must be uint8 or float in [-1, 1], got dtype {colors.dtype}")
  if not np.all(np.isfinite(colors)):
    raise ValueError("colors must be finite")
  return np.clip(np.round((colors.astype(np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def depth_mesh(depth, camera_pitch, camera_yaw, *, mask, colors=None, fov_degrees: float = 12.0,
               radius: float = 1.0, max_edge: float | None = None) -> Mesh:
  """A triangle mesh of the visible surface of one rendered view.

  Pixel (i, j) has the camera ray of `camera.generate_rays` (row 0 at the top, column 0 at the
  left); its vertex is origin + depth[i, j]·direction. Vertices are the masked pixels in row-major
  order; each pixel quad with 4 masked corners gives the triangles (i,j)-(i+1,j)-(i+1,j+1) and
  (i,j)-(i+1,j+1)-(i,j+1), counter-clockwise as seen from the camera, and a triangle with an edge
  longer than `max_edge` (a depth discontinuity) is dropped.

  Args:
    depth: (R, R) float depth along the unit ray, world units (`RenderOutput.depth[b]`).
    camera_pitch: scalar polar angle φ, radians (π/2 = level).
    camera_yaw: scalar azimuth θ, radians (π/2 = frontal).
    mask: (R, R) bool foreground, e.g. opacity > 0.5.
    colors: optional (R, R, 3) uint8, or float in [-1, 1] converted like images.
    fov_degrees: full field of view of the render.
    radius: camera distance from the origin of the render.
    max_edge: longest kept triangle edge, world units (math.inf keeps every triangle); None:
      `MAX_EDGE_PIXELS` pixel footprints at the largest masked depth (2·tan(fov/2)/(R − 1)·d
      each), which keeps any surface up to ≈ 70° from facing the camera at every resolution.

  Returns:
    Mesh with V = mask.sum() vertices (float32 world units) and colors if given.

  Raises:
    ValueError: on a bad shape, dtype or value, naming the argument.
  """
  shape = np.shape(depth)
  if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 2:
    raise ValueError(f"depth must be a square (R, R) array with R >= 2, got shape {shape}")
  depth = _check_depth(depth, mask)
  mask = np.asarray(mask)
  resolution = depth.shape[0]
  pitch = _scalar("camera_pitch", camera_pitch)
  yaw = _scalar("camera_yaw", camera_yaw)
  fov_degrees = _scalar("fov_degrees", fov_degrees)
  if not 0.0 < fov_degrees < 180.0:
    raise ValueError(f"fov_degrees must be in (0, 180), got {fov_degrees}")
  radius = _scalar("radius", radius)
  if radius <= 0.0:
    raise ValueError(f"radius must be positive, got {radius}")
  if max_edge is None:
    footprint = 2 * math.tan(math.radians(fov_degrees) / 2) / (resolution - 1)
    max_edge = MAX_EDGE_PIXELS * footprint * float(depth[mask].max(initial=radius))
  max_edge = float(max_edge)
  if not max_edge > 0.0:
    raise ValueError(f"max_edge must be positive, got {max_edge}")
  if colors is not None:
    colors = _colors_to_uint8(colors, (resolution, resolution, 3))

  origin = camera_lib.camera_origin(np.float32(pitch), np.float32(yaw), radius)
  rotation = np.asarray(camera_lib.look_at_rotation(origin), np.float64)
  local = np.asarray(camera_lib.pixel_directions(resolution, fov_degrees), np.float64)
  flat_mask = mask.reshape(-1)
  directions = local[flat_mask] @ rotation.T
  vertices = np.asarray(origin, np.float64) + depth.reshape(-1)[flat_mask, None] * directions

  index = np.full(resolution * resolution, -1, np.int64)
  index[flat_mask] = np.arange(vertices.shape[0])
  index = index.reshape(resolution, resolution)
  top_left, top_right = index[:-1, :-1], index[:-1, 1:]
  bottom_left, bottom_right = index[1:, :-1], index[1:, 1:]
  full = mask[:-1, :-1] & mask[:-1, 1:] & mask[1:, :-1] & mask[1:, 1:]
  triangles = np.stack([np.stack([top_left, bottom_left, bottom_right], axis=-1),
                        np.stack([top_left, bottom_right, top_right], axis=-1)], axis=2)
  faces = triangles[full].reshape(-1, 3)
  corners = vertices[faces]
  edges = np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=-1)
  faces = faces[np.all(edges <= max_edge, axis=1)]

  vertex_colors = None if colors is None else colors.reshape(-1, 3)[flat_mask]
  return Mesh(vertices=vertices.astype(np.float32), faces=faces.astype(np.int32),
              colors=vertex_colors)


# ------------------------------------------------------------------------------------------------
# PLY.


def write_ply(path: PathLike, mesh: Mesh, binary: bool = True) -> pathlib.Path:
  """Writes a PLY 1.0 file (binary_little_endian or ascii).

  Properties: vertex float x y z [uchar red green blue]; face list uchar int vertex_indices.

  Returns:
    The written path; parent directories are created.
  """
  path = _prepare_path(path)
  has_colors = mesh.colors is not None
  header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
            "comment written by anifacegan_jax", f"element vertex {len(mesh.vertices)}",
            "property float x", "property float y", "property float z"]
  if has_colors:
    header += ["property uchar red", "property uchar green", "property uchar blue"]
  header += [f"element face {len(mesh.faces)}", "property list uchar int vertex_indices",
             "end_header", ""]
  header_bytes = "\n".join(header).encode("ascii")

  if binary:
    vertex_fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if has_colors:
      vertex_fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.empty(len(mesh.vertices), vertex_fields)
    for axis, name in enumerate("xyz"):
      vertex[name] = mesh.vertices[:, axis]
    if has_colors:
      for channel, name in enumerate(("red", "green", "blue")):
        vertex[name] = mesh.colors[:, channel]
    face = np.empty(len(mesh.faces), [("count", "u1"), ("indices", "<i4", (3,))])
    face["count"] = 3
    face["indices"] = mesh.faces
    path.write_bytes(header_bytes + vertex.tobytes() + face.tobytes())
    return path

  text = io.StringIO()
  if has_colors:
    columns = np.concatenate([mesh.vertices.astype(np.float64), mesh.colors], axis=1)
    np.savetxt(text, columns, fmt=["%.9g"] * 3 + ["%d"] * 3)
  else:
    np.savetxt(text, mesh.vertices.astype(np.float64), fmt="%.9g")
  faces = np.concatenate([np.full((len(mesh.faces), 1), 3, np.int64), mesh.faces], axis=1)
  np.savetxt(text, faces, fmt="%d")
  path.write_bytes(header_bytes + text.getvalue().encode("ascii"))
  return path


@dataclasses.dataclass
class _PlyProperty:
  name: str
  dtype: str  # numpy type code of the value(s)
  count_dtype: str | None = None  # numpy type code of the list length; None for a scalar


@dataclasses.dataclass
class _PlyElement:
  name: str
  count: int
  properties: list[_PlyProperty] = dataclasses.field(default_factory=list)


def _parse_ply_header(path: pathlib.Path, data: bytes) -> tuple[str, list[_PlyElement], int]:
  """(format, elements, offset of the body) of a PLY file's bytes."""
  if not data.startswith(b"ply"):
    raise ValueError(f"{path}: not a PLY file (missing the 'ply' magic line)")
  position, lines = 0, []
  while True:
    newline = data.find(b"\n", position)
    if newline < 0:
      raise ValueError(f"{path}: PLY header has no end_header line")
    try:
      line = data[position:newline].decode("ascii").strip()
    except UnicodeDecodeError as error:
      raise ValueError(f"{path}: PLY header is not ASCII") from error
    position = newline + 1
    if line == "end_header":
      break
    lines.append(line)

  if lines[0] != "ply":
    raise ValueError(f"{path}: not a PLY file (first line is {lines[0]!r})")
  file_format, elements, names = None, [], set()
  for line in lines[1:]:
    tokens = line.split()
    if not tokens or tokens[0] in ("comment", "obj_info"):
      continue
    keyword = tokens[0]
    if keyword == "format":
      if len(tokens) != 3 or tokens[1] not in _PLY_FORMATS or tokens[2] != "1.0":
        raise ValueError(f"{path}: unsupported PLY format line {line!r}")
      file_format = tokens[1]
    elif keyword == "element":
      if len(tokens) != 3 or not tokens[2].isdigit():
        raise ValueError(f"{path}: bad PLY element line {line!r}")
      elements.append(_PlyElement(tokens[1], int(tokens[2])))
      names = set()
    elif keyword == "property":
      if not elements:
        raise ValueError(f"{path}: PLY property before any element: {line!r}")
      if len(tokens) == 3 and tokens[1] in _PLY_TYPES:
        prop = _PlyProperty(tokens[2], _PLY_TYPES[tokens[1]])
      elif (len(tokens) == 5 and tokens[1] == "list" and tokens[2] in _PLY_TYPES
            and _PLY_TYPES[tokens[2]][0] in "iu" and tokens[3] in _PLY_TYPES):
        prop = _PlyProperty(tokens[4], _PLY_TYPES[tokens[3]], _PLY_TYPES[tokens[2]])
      else:
        raise ValueError(f"{path}: unsupported PLY property line {line!r}")
      if prop.name in names:
        raise ValueError(f"{path}: duplicate PLY property {prop.name!r}")
      names.add(prop.name)
      elements[-1].properties.append(prop)
    else:
      raise ValueError(f"{path}: unknown PLY header line {line!r}")
  if file_format is None:
    raise ValueError(f"{path}: PLY header has no format line")
  return file_format, elements, position


def _read_binary_element(path: pathlib.Path, body: bytes, offset: int, element: _PlyElement,
                         order: str) -> tuple[dict, int]:
  """Values of one binary element ({property: (N,) or (N, n) array, or list of arrays})."""
  props = element.properties
  if element.count == 0:
    return {p.name: np.zeros((0,) if p.count_dtype is None else (0, 0), p.dtype)
            for p in props}, offset

  def truncated():
    return ValueError(f"{path}: PLY data is truncated in element {element.name!r}")

  # Fast path: every list as long as in the first row, one structured array.
  lengths, position = {}, offset
  for p in props:
    if p.count_dtype is not None:
      count_type = np.dtype(order + p.count_dtype)
      if position + count_type.itemsize > len(body):
        raise truncated()
      lengths[p.name] = int(np.frombuffer(body, count_type, 1, position)[0])
      position += count_type.itemsize + lengths[p.name] * np.dtype(p.dtype).itemsize
    else:
      position += np.dtype(p.dtype).itemsize
  fields = []
  for p in props:
    if p.count_dtype is None:
      fields.append((p.name, order + p.dtype))
    else:
      fields += [(f"{p.name} count", order + p.count_dtype),
                 (p.name, order + p.dtype, (lengths[p.name],))]
  row = np.dtype(fields)
  end = offset + row.itemsize * element.count
  if end <= len(body):
    table = np.frombuffer(body, row, element.count, offset)
    if all(np.all(table[f"{name} count"] == length) for name, length in lengths.items()):
      return {p.name: table[p.name] for p in props}, end

  # General path: lists of varying lengths, row by row.
  values = {p.name: [] for p in props}
  position = offset
  for _ in range(element.count):
    for p in props:
      length = 1
      if p.count_dtype is not None:
        count_type = np.dtype(order + p.count_dtype)
        if position + count_type.itemsize > len(body):
          raise truncated()
        length = int(np.frombuffer(body, count_type, 1, position)[0])
        position += count_type.itemsize
      value_type = np.dtype(order + p.dtype)
      if position + length * value_type.itemsize > len(body):
        raise truncated()
      value = np.frombuffer(body, value_type, length, position)
      position += length * value_type.itemsize
      values[p.name].append(value[0] if p.count_dtype is None else value)
  return {p.name: np.array(values[p.name]) if p.count_dtype is None else values[p.name]
          for p in props}, position


def _read_ascii_element(path: pathlib.Path, tokens: list[str], offset: int,
                        element: _PlyElement) -> tuple[dict, int]:
  """Values of one ascii element from the whitespace-separated body tokens."""
  props = element.properties

  def convert(strings, code):
    try:
      values = np.array(strings, dtype=np.float64)
    except ValueError as error:
      raise ValueError(f"{path}: bad number in PLY element {element.name!r}") from error
    if code[0] in "iu":
      limits = np.iinfo(code)
      if not np.all((values == np.round(values)) & (values >= limits.min)
                    & (values <= limits.max)):
        raise ValueError(f"{path}: bad value of an integer PLY property in element "
                         f"{element.name!r}")
    return values.astype(code)

  def truncated():
    return ValueError(f"{path}: PLY data is truncated in element {element.name!r}")

  if element.count == 0:
    return {p.name: np.zeros((0,) if p.count_dtype is None else (0, 0), p.dtype)
            for p in props}, offset
  # Fast path: every list as long as in the first row.
  lengths, position, columns = {}, offset, []
  for p in props:
    if p.count_dtype is not None:
      if position >= len(tokens):
        raise truncated()
      lengths[p.name] = int(convert([tokens[position]], p.count_dtype)[0])
      columns.append((p, position - offset + 1, lengths[p.name]))
      position += 1 + lengths[p.name]
    else:
      columns.append((p, position - offset, 1))
      position += 1
  width = position - offset
  end = offset + width * element.count
  if end <= len(tokens):
    table = np.array(tokens[offset:end], dtype=object).reshape(element.count, width)
    counts_match = all(
        np.all(convert(table[:, start - 1], p.count_dtype) == length)
        for p, start, length in columns if p.count_dtype is not None)
    if counts_match:
      result = {}
      for p, start, length in columns:
        block = convert(table[:, start:start + length].reshape(-1), p.dtype)
        result[p.name] = block if p.count_dtype is None else block.reshape(element.count, length)
      return result, end

  # General path: lists of varying lengths, row by row.
  values = {p.name: [] for p in props}
  position = offset
  for _ in range(element.count):
    for p in props:
      length = 1
      if p.count_dtype is not None:
        if position >= len(tokens):
          raise truncated()
        length = int(convert([tokens[position]], p.count_dtype)[0])
        position += 1
      if position + length > len(tokens):
        raise truncated()
      value = convert(tokens[position:position + length], p.dtype)
      position += length
      values[p.name].append(value[0] if p.count_dtype is None else value)
  return {p.name: np.array(values[p.name]) if p.count_dtype is None else values[p.name]
          for p in props}, position


def read_ply(path: PathLike) -> Mesh:
  """Reads a triangle mesh from a PLY 1.0 file (ascii or binary, either byte order).

  The vertex element needs scalar x, y, z and may have red, green, blue (integers in 0..255);
  the optional face element needs a list property vertex_indices (or vertex_index) of triangles.
  Other properties and elements are read and ignored.

  Raises:
    ValueError: naming the file, for a malformed, truncated or unsupported file.
  """
  path = pathlib.Path(path)
  data = path.read_bytes()
  file_format, elements, offset = _parse_ply_header(path, data)
  body = data[offset:]
  order = _PLY_FORMATS[file_format]
  values = {}
  if order is None:
    try:
      tokens = body.decode("ascii").split()
    except UnicodeDecodeError as error:
      raise ValueError(f"{path}: ascii PLY data is not ASCII") from error
    position = 0
    for element in elements:
      values[element.name], position = _read_ascii_element(path, tokens, position, element)
    if position != len(tokens):
      raise ValueError(f"{path}: {len(tokens) - position} unexpected trailing PLY values")
  else:
    position = 0
    for element in elements:
      values[element.name], position = _read_binary_element(path, body, position, element, order)
    if position != len(body):
      raise ValueError(f"{path}: {len(body) - position} unexpected trailing PLY bytes")

  kinds = {element.name: {p.name: p for p in element.properties} for element in elements}
  if "vertex" not in kinds:
    raise ValueError(f"{path}: PLY file has no vertex element")
  vertex_props = kinds["vertex"]
  for name in "xyz":
    if name not in vertex_props or vertex_props[name].count_dtype is not None:
      raise ValueError(f"{path}: PLY vertex element needs scalar properties x, y, z")
  vertices = np.stack([values["vertex"][name] for name in "xyz"], axis=1)
  color_names = [name for name in ("red", "green", "blue") if name in vertex_props]
  colors = None
  if color_names:
    if len(color_names) != 3 or any(vertex_props[name].count_dtype is not None
                                     or vertex_props[name].dtype[0] not in "iu"
                                     for name in color_names):
      raise ValueError(f"{path}: PLY vertex colors need integer properties red, green, blue")
    colors = np.stack([values["vertex"][name] for name in color_names], axis=1)

  faces = np.zeros((0, 3), np.int64)
  if "face" in kinds:
    face_props = kinds["face"]
    name = next((n for n in ("vertex_indices", "vertex_index") if n in face_props), None)
    if name is None or face_props[name].count_dtype is None:
      raise ValueError(f"{path}: PLY face element needs a list property vertex_indices")
    if face_props[name].dtype[0] not in "iu":
      raise ValueError(f"{path}: PLY vertex_indices must be integers")
    indices = values["face"][name]
    if isinstance(indices, list) or (indices.size and indices.shape[1] != 3):
      raise ValueError(f"{path}: only triangle faces are supported")
    faces = indices.reshape(-1, 3).astype(np.int64)
  try:
    return Mesh(vertices=vertices, faces=faces, colors=colors)
  except ValueError as error:
    raise ValueError(f"{path}: {error}") from error


# ------------------------------------------------------------------------------------------------
# OBJ.


def write_obj(path: PathLike, mesh: Mesh) -> pathlib.Path:
  """Writes a Wavefront OBJ: `v x y z [r g b]` (colors as floats in 0..1), `f a b c` (1-based).

  Returns:
    The written path; parent directories are created.
  """
  path = _prepare_path(path)
  text = io.StringIO()
  text.write("# written by anifacegan_jax\n")
  vertices = mesh.vertices.astype(np.float64)
  if mesh.colors is not None:
    np.savetxt(text, np.concatenate([vertices, mesh.colors / 255.0], axis=1),
               fmt="v %.9g %.9g %.9g %.6g %.6g %.6g")
  else:
    np.savetxt(text, vertices, fmt="v %.9g %.9g %.9g")
  np.savetxt(text, mesh.faces.astype(np.int64) + 1, fmt="f %d %d %d")
  path.write_bytes(text.getvalue().encode("ascii"))
  return path


def read_obj(path: PathLike) -> Mesh:
  """Reads the vertices (`v x y z [w]` or `v x y z r g b`) and faces of a Wavefront OBJ.

  Face references may be `i`, `i/t`, `i//n` or `i/t/n`, negative (relative) or positive; polygons
  are fan-triangulated. Other statements (vt, vn, o, g, usemtl, ...) are ignored.

  Raises:
    ValueError: naming the file and line, for a malformed vertex or face.
  """
  path = pathlib.Path(path)
  try:
    text = path.read_bytes().decode("utf-8")
  except UnicodeDecodeError as error:
    raise ValueError(f"{path}: OBJ file is not UTF-8 text") from error
  vertices, colors, faces = [], [], []
  for number, raw in enumerate(text.splitlines(), start=1):
    tokens = raw.split("#", 1)[0].split()
    if not tokens:
      continue
    keyword, arguments = tokens[0], tokens[1:]
    if keyword == "v":
      try:
        numbers = [float(value) for value in arguments]
      except ValueError as error:
        raise ValueError(f"{path}:{number}: bad vertex {raw.strip()!r}") from error
      if len(numbers) not in (3, 4, 6):
        raise ValueError(f"{path}:{number}: a vertex needs 3, 4 or 6 numbers, got {raw.strip()!r}")
      vertices.append(numbers[:3])
      colors.append(numbers[3:] if len(numbers) == 6 else None)
    elif keyword == "f":
      if len(arguments) < 3:
        raise ValueError(f"{path}:{number}: a face needs at least 3 vertices, got "
                         f"{raw.strip()!r}")
      indices = []
      for reference in arguments:
        try:
          index = int(reference.split("/", 1)[0])
        except ValueError as error:
          raise ValueError(f"{path}:{number}: bad face {raw.strip()!r}") from error
        if index == 0:
          raise ValueError(f"{path}:{number}: OBJ indices are 1-based, got 0")
        indices.append(index - 1 if index > 0 else len(vertices) + index)
      faces += [[indices[0], indices[k], indices[k + 1]] for k in range(1, len(indices) - 1)]

  with_colors = sum(color is not None for color in colors)
  if with_colors not in (0, len(vertices)):
    raise ValueError(f"{path}: {with_colors} of {len(vertices)} vertices have colors; "
                     "need all or none")
  mesh_colors = None
  if vertices and with_colors:
    mesh_colors = np.clip(np.round(np.array(colors, np.float64) * 255.0), 0, 255)
  try:
    return Mesh(vertices=np.array(vertices, np.float64).reshape(-1, 3),
                faces=np.array(faces, np.int64).reshape(-1, 3),
                colors=None if mesh_colors is None else mesh_colors.astype(np.uint8))
  except ValueError as error:
    raise ValueError(f"{path}: {error}") from error


# ------------------------------------------------------------------------------------------------
# Dispatch on the suffix.


def _suffix(path: pathlib.Path) -> str:
  suffix = path.suffix.lower()
  if suffix not in _MESH_SUFFIXES:
    raise ValueError(f"unsupported mesh suffix {path.suffix!r} of {path}; supported: "
                     f"{', '.join(_MESH_SUFFIXES)}")
  return suffix


def write_mesh(path: PathLike, mesh: Mesh) -> pathlib.Path:
  """Writes `mesh` as binary PLY (.ply) or OBJ (.obj), chosen by the suffix of `path`."""
  path = pathlib.Path(path)
  if _suffix(path) == ".ply":
    return write_ply(path, mesh)
  return write_obj(path, mesh)


def read_mesh(path: PathLike) -> Mesh:
  """Reads a PLY (.ply) or OBJ (.obj) mesh, chosen by the suffix of `path`."""
  path = pathlib.Path(path)
  if _suffix(path) == ".ply":
    return read_ply(path)
  return read_obj(path)
