"""Depth maps and triangle meshes from rendered views, written as 16-bit PNG, PLY and OBJ (numpy +
pillow).

Depth is `RenderOutput.depth`: the distance along the unit pixel ray, world units (SPEC §1). A
mesh from one view puts one vertex per foreground pixel at origin + depth·direction, with the
pixel rays of `rendering.camera`, and joins each fully foreground pixel quad into two triangles.
"""

from __future__ import annotations

import io
import math
import os
import pathlib

import numpy as np
from PIL import Image

from anifacegan_jax.rendering import camera as camera_lib
from anifacegan_jax.types import Mesh

PathLike = str | os.PathLike

MAX_EDGE_PIXELS = 3.0  # default `depth_mesh` edge limit, in pixel footprints
DEFAULT_NEAR = 0.88
DEFAULT_FAR = 1.12
_UINT16_MAX = 65535

_MESH_SUFFIXES = (".ply", ".obj")


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


def normal_map(depth, mask, fov_degrees: float = 12.0) -> np.ndarray:
  """An 8-bit visualization of the surface normals of one rendered view, in camera space.

  Each pixel's point is depth·direction along its camera ray (`camera.pixel_directions`: x
  right, y up, looking down −z); its normal is the cross product of the differences along the
  row and the column (central where both neighbours are foreground, one-sided at the mask's
  edge, facing the camera where neither is), turned towards the camera. Colours are the usual normal-map
  encoding, round(255·(n + 1) / 2): a surface facing the camera is (128, 128, 255), one facing
  right reddish, one facing up greenish; the background (~mask) is black.

  Args:
    depth: (R, R) float depth along the unit ray, world units.
    mask: (R, R) bool, True on the foreground.
    fov_degrees: full field of view of the render.

  Returns:
    (R, R, 3) uint8.
  """
  shape = np.shape(depth)
  if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 2:
    raise ValueError(f"depth must be a square (R, R) array with R >= 2, got shape {shape}")
  depth = _check_depth(depth, mask)
  mask = _check_mask(mask, depth.shape)
  fov_degrees = _scalar("fov_degrees", fov_degrees)
  if not 0.0 < fov_degrees < 180.0:
    raise ValueError(f"fov_degrees must be in (0, 180), got {fov_degrees}")
  resolution = depth.shape[0]
  local = np.asarray(camera_lib.pixel_directions(resolution, fov_degrees), np.float64)
  local = local.reshape(resolution, resolution, 3)
  points = np.where(mask, depth, 0.0)[..., None] * local
  down, right = _masked_difference(points, mask, 0), _masked_difference(points, mask, 1)
  normals = np.cross(right, -down)  # right × up: towards the camera for a frontal plane
  normals = np.where((np.sum(normals * local, -1) > 0)[..., None], -normals, normals)
  length = np.linalg.norm(normals, axis=-1, keepdims=True)
  normals = np.where(length > 0, normals / np.maximum(length, 1e-30), -local)
  encoded = np.round((normals + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
  return np.where(mask[..., None], encoded, 0).astype(np.uint8)


def _masked_difference(points: np.ndarray, mask: np.ndarray, axis: int) -> np.ndarray:
  """Per-pixel step of (R, R, 3) `points` along `axis` between foreground pixels: central where
  both neighbours are foreground, one-sided where one is, 0 where none is."""
  size = mask.shape[axis]
  index = np.arange(size).reshape((-1, 1) if axis == 0 else (1, -1))
  forward = np.roll(points, -1, axis) - points
  backward = points - np.roll(points, 1, axis)
  has_next = mask & np.roll(mask, -1, axis) & (index < size - 1)
  has_previous = mask & np.roll(mask, 1, axis) & (index > 0)
  both = (has_next & has_previous)[..., None]
  return np.where(both, (forward + backward) / 2, np.where(
      has_next[..., None], forward, np.where(has_previous[..., None], backward, 0.0)))


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
    Mesh with V = mask.sum() vertices (float32 world units) and, if given, colors in [0, 1]
    (float32 multiples of 1/255: the 8-bit colours a mesh file stores, exactly).

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

  vertex_colors = None
  if colors is not None:
    vertex_colors = colors.reshape(-1, 3)[flat_mask].astype(np.float32) / np.float32(255)
  return Mesh(vertices=vertices.astype(np.float32), faces=faces.astype(np.int32),
              colors=vertex_colors)


# ------------------------------------------------------------------------------------------------
# PLY.


def _colors_uint8(colors: np.ndarray) -> np.ndarray:
  """[0, 1] colours as the 8-bit values of a file: round(255·c), clipped."""
  return np.clip(np.round(colors.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def write_ply(path: PathLike, mesh: Mesh, binary: bool = True) -> pathlib.Path:
  """Writes a PLY 1.0 file (binary_little_endian or ascii).

  Properties: vertex float x y z [uchar red green blue] (colours × 255, rounded); face list
  uchar int vertex_indices.

  Returns:
    The written path; parent directories are created.
  """
  path = _prepare_path(path)
  has_colors = mesh.colors is not None
  colors = _colors_uint8(mesh.colors) if has_colors else None
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
        vertex[name] = colors[:, channel]
    face = np.empty(len(mesh.faces), [("count", "u1"), ("indices", "<i4", (3,))])
    face["count"] = 3
    face["indices"] = mesh.faces
    path.write_bytes(header_bytes + vertex.tobytes() + face.tobytes())
    return path

  text = io.StringIO()
  if has_colors:
    columns = np.concatenate([mesh.vertices.astype(np.float64), colors], axis=1)
    np.savetxt(text, columns, fmt=["%.9g"] * 3 + ["%d"] * 3)
  else:
    np.savetxt(text, mesh.vertices.astype(np.float64), fmt="%.9g")
  faces = np.concatenate([np.full((len(mesh.faces), 1), 3, np.int64), mesh.faces], axis=1)
  np.savetxt(text, faces, fmt="%d")
  path.write_bytes(header_bytes + text.getvalue().encode("ascii"))
  return path


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
    np.savetxt(text, np.concatenate([vertices, mesh.colors.astype(np.float64)], axis=1),
               fmt="v %.9g %.9g %.9g %.6g %.6g %.6g")
  else:
    np.savetxt(text, vertices, fmt="v %.9g %.9g %.9g")
  np.savetxt(text, mesh.faces.astype(np.int64) + 1, fmt="f %d %d %d")
  path.write_bytes(text.getvalue().encode("ascii"))
  return path


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
