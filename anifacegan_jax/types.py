"""Array aliases, the typed pytrees passed between rendering, models and training, and the
one triangle mesh (SynthFaces' rasteriser, mesh export).

Frames used throughout (SPEC §1):
  * world: right-handed, y up, head at the origin facing +z, camera on the unit sphere; the
    sample box is about ±0.12 world units.
  * warped: world × 1/0.12·2 = 8.3333 (GRAM's UniformBoxWarp), the input scale of every MLP.
  * target space: where rays live (the animated face); canonical (template) space: target + Δ.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
PRNGKey = jax.Array
PyTree = Any

ID_DIM = 80
EXP_DIM = 64
NOISE_DIM = 80


@flax.struct.dataclass
class Latents:
  """Per-image codes of the animatable generator.

  Attributes:
    z_id: (..., 80) 3DMM identity coefficients β.
    z_exp: (..., 64) 3DMM expression coefficients γ; zeros are the neutral face.
    noise: (..., 80) ε ~ N(0, I): appearance, lighting, background.
  """

  z_id: Array
  z_exp: Array
  noise: Array

  @classmethod
  def dummy(cls, batch: int = 1) -> "Latents":
    return cls(
        z_id=jnp.zeros((batch, ID_DIM), jnp.float32),
        z_exp=jnp.zeros((batch, EXP_DIM), jnp.float32),
        noise=jnp.zeros((batch, NOISE_DIM), jnp.float32),
    )


@flax.struct.dataclass
class Camera:
  """Camera poses on the sphere of radius `radius` around the origin.

  Attributes:
    pitch: (...,) polar angle φ from +y, radians (π/2 = level).
    yaw: (...,) azimuth θ, radians (π/2 = frontal).
  """

  pitch: Array
  yaw: Array

  @classmethod
  def frontal(cls, batch: int = 1) -> "Camera":
    half_pi = jnp.full((batch,), jnp.pi / 2, jnp.float32)
    return cls(pitch=half_pi, yaw=half_pi)

  def as_pose(self) -> Array:
    """(..., 2) the (φ, θ) pair that the discriminator's pose head regresses (SPEC §1.1)."""
    return jnp.stack([self.pitch, self.yaw], axis=-1)


@flax.struct.dataclass
class Rays:
  """Rays in world units.

  Attributes:
    origins: (..., 3) ray origins (the camera centre), world.
    directions: (..., 3) unit directions, world.
  """

  origins: Array
  directions: Array

  @classmethod
  def dummy(cls, num: int = 1) -> "Rays":
    return cls(
        origins=jnp.tile(jnp.array([[0.0, 0.0, 1.0]], jnp.float32), (num, 1)),
        directions=jnp.tile(jnp.array([[0.0, 0.0, -1.0]], jnp.float32), (num, 1)),
    )


@flax.struct.dataclass
class Codes:
  """Outputs of the two mapping networks for one image (or a batch with leading dims).

  Attributes:
    radiance_freq: (..., 9, 256) FiLM frequencies f of the radiance net (ω = 15 f + 30).
    radiance_phase: (..., 9, 256) FiLM phase shifts of the radiance net.
    deform_freq: (..., 3, 128) FiLM frequencies of the deformation net.
    deform_phase: (..., 3, 128) FiLM phase shifts of the deformation net.
  """

  radiance_freq: Array
  radiance_phase: Array
  deform_freq: Array
  deform_phase: Array


@flax.struct.dataclass
class RenderOutput:
  """A rendered batch. P = 24 points per ray (23 manifold intersections + background plane).

  Attributes:
    image: (B, R, R, 3) RGB in [-1, 1] (≈ ±1.002 with the widened sigmoid).
    depth: (B, R, R) Σ w·z / Σ w, world units along the ray (Eq. 5).
    weights: (B, R·R, P) compositing weights α·T in the input point order (background last).
    points_target: (B, R·R, P, 3) intersections in target space, world.
    points_canonical: (B, R·R, P, 3) the same points warped to the template, world.
    valid: (B, R·R, P) bool, the manifold was crossed (background always valid).
  """

  image: Array
  depth: Array
  weights: Array
  points_target: Array
  points_canonical: Array
  valid: Array


@flax.struct.dataclass
class Batch:
  """Real training examples (leading dims: devices, per-device batch, or a flat batch).

  Attributes:
    image: (..., R, R, 3) float32 RGB in [-1, 1].
    pose: (..., 2) float32 camera (pitch φ, yaw θ), radians, GRAM convention.
    coefficients: (..., 257) float32 3DMM coefficients (id|exp|tex|angle|gamma|trans).
    landmarks: (..., 68, 2) float32 2-D landmarks in pixels of `image` (x right, y down, pixel
      centres at integers).
  """

  image: Array
  pose: Array
  coefficients: Array
  landmarks: Array

  @classmethod
  def dummy(cls, batch: int = 1, resolution: int = 32) -> "Batch":
    return cls(image=jnp.zeros((batch, resolution, resolution, 3), jnp.float32),
               pose=jnp.full((batch, 2), jnp.pi / 2, jnp.float32),
               coefficients=jnp.zeros((batch, 257), jnp.float32),
               landmarks=jnp.zeros((batch, 68, 2), jnp.float32))


def _read_only(array: np.ndarray) -> np.ndarray:
  array = np.array(array, copy=True)
  array.flags.writeable = False
  return array


@dataclasses.dataclass(frozen=True, eq=False)
class Mesh:
  """A triangle mesh (numpy, host side); the arrays are read-only copies.

  Attributes:
    vertices: (V, 3) float positions, world units (float32 or float64, kept).
    faces: (F, 3) int32 vertex indices, counter-clockwise seen from outside (from the camera for
      `export.depth_mesh`): the normal (v1 - v0) × (v2 - v0) points out of the surface.
    colors: (V, 3) float RGB per vertex in [0, 1] (dtype kept), or None.
    closed: the inside is never seen, so a rasteriser may cull back faces (a speed-up only).
  """

  vertices: np.ndarray
  faces: np.ndarray
  colors: np.ndarray | None = None
  closed: bool = False

  def __post_init__(self):
    vertices = np.asarray(self.vertices)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
      raise ValueError(f"vertices must have shape (V, 3), got {vertices.shape}")
    if np.issubdtype(vertices.dtype, np.integer):
      vertices = vertices.astype(np.float64)
    if not np.issubdtype(vertices.dtype, np.floating):
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
      if not np.issubdtype(colors.dtype, np.floating):
        raise ValueError(f"colors must be floats in [0, 1], got dtype {colors.dtype}")
      colors = _read_only(colors)

    object.__setattr__(self, "vertices", _read_only(vertices))
    object.__setattr__(self, "faces", _read_only(faces.astype(np.int32)))
    object.__setattr__(self, "colors", colors)
    object.__setattr__(self, "closed", bool(self.closed))
