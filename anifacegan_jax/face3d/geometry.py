"""Pure-jnp geometry of the morphable model: shapes (paper Eq. 1), poses, projection, normals.

Frames (see also `morphable.py` and SPEC §1):
  * model: Deep3DFaceRecon's recentred BFM frame, "3DMM units" ≈ decimetres; x to the image right
    of a frontal face, y up, z towards the camera.
  * Deep3DFaceRecon camera frame: R·v + t of a model-frame point v, R = Rz(az)·Ry(ay)·Rx(ax); the
    camera sits at (0, 0, 10) looking down -z.
  * GRAM world: y up, head at the origin facing +z, camera on the unit sphere;
    world = 0.1 · (Rx(0.1) · v + translation), the 0.1 rad tilt matching GRAM's pose map.

Functions take one face and are vectorised with `jax.vmap` (bases as `in_axes=None`); pose
functions are elementwise and take any leading dims.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from anifacegan_jax.face3d.morphable import MorphableArrays
from anifacegan_jax.types import Array

PITCH_OFFSET = 0.1  # rad; GRAM's read_pose: φ = π/2 - (ax - 0.1) (SPEC §1.1)
HALF_PI = jnp.pi / 2


def face_vertices(arrays: MorphableArrays, id_coeff: Array, exp_coeff: Array) -> Array:
  """The 3DMM mesh S = S̄ + B_id β + B_exp γ (paper Eq. 1).

  Args:
    arrays: the model (N vertices).
    id_coeff: (80,) identity β.
    exp_coeff: (64,) expression γ.

  Returns:
    (N, 3) vertices, model frame (3DMM units).
  """
  return arrays.mean_shape + identity_offsets(arrays, id_coeff) + expression_offsets(arrays, exp_coeff)


def expression_offsets(arrays: MorphableArrays, exp_coeff: Array) -> Array:
  """(N, 3) B_exp γ for γ (64,), model frame: the expression's displacement of every vertex.

  The deformation-imitation loss compares Δx with Δx_ref = -B_exp γ at the nearest mesh vertex
  (target → canonical moves against the expression); convert with `model_to_world(...,
  translation=0)` for world units.
  """
  return jnp.einsum("nck,k->nc", arrays.exp_basis, exp_coeff)


def identity_offsets(arrays: MorphableArrays, id_coeff: Array) -> Array:
  """(N, 3) B_id β for β (80,), model frame: the identity's displacement of every vertex from S̄."""
  return jnp.einsum("nck,k->nc", arrays.id_basis, id_coeff)


def face_albedo(arrays: MorphableArrays, tex_coeff: Array) -> Array:
  """(N, 3) per-vertex albedo T̄ + B_tex δ for δ (80,), on the [0, 1] scale (not clipped)."""
  return arrays.mean_tex + jnp.einsum("nck,k->nc", arrays.tex_basis, tex_coeff)


def landmarks_3d(arrays: MorphableArrays, vertices: Array) -> Array:
  """(68, 3) the iBUG-68 landmark vertices of `vertices` (N, 3), same frame as the input."""
  return vertices[arrays.landmarks]


def _axis_rotation(angle: Array, axis: int) -> Array:
  """(..., 3, 3) right-handed rotation by `angle` (...,) radians about coordinate `axis`."""
  c, s = jnp.cos(angle), jnp.sin(angle)
  one, zero = jnp.ones_like(angle), jnp.zeros_like(angle)
  rows = {
      0: ((one, zero, zero), (zero, c, -s), (zero, s, c)),
      1: ((c, zero, s), (zero, one, zero), (-s, zero, c)),
      2: ((c, -s, zero), (s, c, zero), (zero, zero, one)),
  }[axis]
  return jnp.stack([jnp.stack(row, axis=-1) for row in rows], axis=-2)


def rotation_matrix(angle: Array) -> Array:
  """(..., 3, 3) Deep3DFaceRecon's R = Rz(az)·Ry(ay)·Rx(ax) for angle (..., 3) = (ax, ay, az).

  Acts on column vectors: v' = R v.
  """
  rx = _axis_rotation(angle[..., 0], 0)
  ry = _axis_rotation(angle[..., 1], 1)
  rz = _axis_rotation(angle[..., 2], 2)
  return rz @ ry @ rx


def transform(vertices: Array, angle: Array, trans: Array) -> Array:
  """(N, 3) R·v + t: model frame → Deep3DFaceRecon camera frame, for angle (3,), trans (3,)."""
  return vertices @ rotation_matrix(jnp.asarray(angle)).T + jnp.asarray(trans)


def angles_to_camera(angle: Array) -> tuple[Array, Array]:
  """GRAM pose (pitch φ, yaw θ), each (...,) radians, of Deep3DFaceRecon angles (..., 3).

  φ = π/2 - (ax - 0.1), θ = π/2 + ay; az (camera roll) is dropped: GRAM does not model it.
  """
  return HALF_PI - (angle[..., 0] - PITCH_OFFSET), HALF_PI + angle[..., 1]


def camera_to_angles(pitch: Array, yaw: Array) -> Array:
  """(..., 3) Deep3DFaceRecon angles (π/2 - φ + 0.1, θ - π/2, 0) of a GRAM pose (...,)."""
  pitch, yaw = jnp.broadcast_arrays(jnp.asarray(pitch), jnp.asarray(yaw))
  return jnp.stack([HALF_PI - pitch + PITCH_OFFSET, yaw - HALF_PI, jnp.zeros_like(yaw)], axis=-1)


def model_to_world(vertices: Array, translation=(0.0, 0.0, 0.0), scale: float = 0.1,
                   pitch_offset: float = PITCH_OFFSET) -> Array:
  """(..., 3) GRAM world points of model-frame points (..., 3): scale·(Rx(pitch_offset)·v + t).

  The tilt puts the face that Deep3DFaceRecon sees at ax = 0.1 in front of GRAM's frontal
  camera (φ = π/2); scale 0.1 matches camera distance 10 vs 1. For offsets (e.g.
  `expression_offsets`) pass translation=0.
  """
  rotation = _axis_rotation(jnp.asarray(pitch_offset, jnp.float32), 0)
  return scale * (vertices @ rotation.T + jnp.asarray(translation, jnp.float32))


def world_to_model(points: Array, translation=(0.0, 0.0, 0.0), scale: float = 0.1,
                   pitch_offset: float = PITCH_OFFSET) -> Array:
  """(..., 3) model-frame points of GRAM world points (..., 3); inverse of `model_to_world`."""
  rotation = _axis_rotation(jnp.asarray(pitch_offset, jnp.float32), 0)
  return (points / scale - jnp.asarray(translation, jnp.float32)) @ rotation


def project_deep3d(points: Array, focal: float = 1015.0, center: float = 112.0,
                   camera_distance: float = 10.0, image_size: int = 224) -> Array:
  """(..., 2) pixel coordinates (u right, v down) in the 224-px crop of camera-frame points.

  Deep3DFaceRecon's perspective camera at (0, 0, camera_distance) looking down -z:
  u = f·x / (d - z) + c, v = (H - 1) - (f·y / (d - z) + c). The H - 1 flip is the one
  Deep3DFaceRecon's `save_coeff` applies before storing `lm68`, so these pixels compare to it.

  Args:
    points: (..., 3) R·v + t, Deep3DFaceRecon camera frame (3DMM units).
  """
  depth = camera_distance - points[..., 2]
  u = focal * points[..., 0] / depth + center
  v = (image_size - 1) - (focal * points[..., 1] / depth + center)
  return jnp.stack([u, v], axis=-1)


def nearest_vertices(points: Array, vertices: Array, chunk: int = 256) -> tuple[Array, Array]:
  """Exact nearest neighbour of every point among `vertices`, by brute force in chunks.

  lax.map runs over chunks of `chunk` points, so at most chunk·N distances exist at once (M·N
  never does). The returned distance is recomputed from the chosen vertex, so its gradient
  (w.r.t. points and vertices) flows through one gather, not through the search.

  Args:
    points: (M, 3) query points; vertices: (N, 3) candidates, same frame and units.
    chunk: points per step; M need not be a multiple of it.

  Returns:
    index (M,) int32 into `vertices`; squared_distance (M,) in squared input units.
  """
  m = points.shape[0]
  chunk = max(1, min(chunk, m))
  num_chunks = -(-m // chunk)
  padded = jnp.pad(points, ((0, num_chunks * chunk - m), (0, 0)))
  frozen = jax.lax.stop_gradient(vertices)

  def search(block):  # (chunk, 3) -> (chunk,)
    block = jax.lax.stop_gradient(block)
    distance = jnp.sum(jnp.square(block[:, None, :] - frozen[None, :, :]), axis=-1)
    return jnp.argmin(distance, axis=-1).astype(jnp.int32)

  index = jax.lax.map(search, padded.reshape(num_chunks, chunk, 3)).reshape(-1)[:m]
  squared_distance = jnp.sum(jnp.square(points - vertices[index]), axis=-1)
  return index, squared_distance


def _normalize(v: Array) -> Array:
  # rsqrt of a clamped square norm: zero vectors stay zero with finite gradients.
  return v * jax.lax.rsqrt(jnp.maximum(jnp.sum(v * v, axis=-1, keepdims=True), 1e-24))


def vertex_normals(arrays: MorphableArrays, vertices: Array, area_weighted: bool = False) -> Array:
  """(N, 3) unit vertex normals of `vertices` (N, 3), same frame, as Deep3DFaceRecon computes them.

  Face normals (v0 - v1) × (v1 - v2) point outwards for counter-clockwise triangles; each vertex
  sums the normals of its adjacent triangles (`point_buf`; padding -1 adds zero) and normalises.
  Deep3DFaceRecon's `compute_norm` normalises the face normals first (every adjacent triangle
  counts equally, the default); `area_weighted=True` keeps their length 2·area instead.
  """
  corners = vertices[arrays.triangles]  # (T, 3 corners, 3)
  face = jnp.cross(corners[:, 0] - corners[:, 1], corners[:, 1] - corners[:, 2])
  if not area_weighted:
    face = _normalize(face)
  face = jnp.concatenate([face, jnp.zeros((1, 3), face.dtype)], axis=0)
  # Padding -1 points at the appended zero row explicitly rather than through index wrapping.
  buf = jnp.where(arrays.point_buf >= 0, arrays.point_buf, arrays.triangles.shape[0])
  return _normalize(jnp.sum(face[buf], axis=1))
