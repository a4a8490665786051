"""Vertex normals and Deep3DFaceRecon's spherical-harmonics lighting of SynthFaces meshes (numpy,
host side): `scene.shade` lights the albedo of every mesh before `raster.render`."""

from __future__ import annotations

import numpy as np


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
  """(N, 3) float32 area-weighted unit vertex normals (outward for counter-clockwise triangles)."""
  v = np.asarray(vertices, np.float64)
  t = np.asarray(triangles, np.int64)
  face = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])  # |face| = 2·area
  normals = np.zeros_like(v)
  for k in range(3):
    np.add.at(normals, t[:, k], face)
  norm = np.linalg.norm(normals, axis=1, keepdims=True)
  return (normals / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def sh_basis(normals: np.ndarray) -> np.ndarray:
  """(N, 9) Deep3DFaceRecon's scaled real SH basis Y of unit normals (N, 3)."""
  a0, a1, a2 = np.pi, 2 * np.pi / np.sqrt(3.0), 2 * np.pi / np.sqrt(8.0)
  c0, c1 = 1 / np.sqrt(4 * np.pi), np.sqrt(3.0) / np.sqrt(4 * np.pi)
  c2 = 3 * np.sqrt(5.0) / np.sqrt(12 * np.pi)
  nx, ny, nz = np.moveaxis(np.asarray(normals, np.float64), -1, 0)
  return np.stack([
      np.full_like(nx, a0 * c0), -a1 * c1 * ny, a1 * c1 * nz, -a1 * c1 * nx, a2 * c2 * nx * ny,
      -a2 * c2 * ny * nz, 0.5 * a2 * c2 / np.sqrt(3.0) * (3 * nz**2 - 1), -a2 * c2 * nx * nz,
      0.5 * a2 * c2 * (nx**2 - ny**2)], axis=-1)


def shade_vertices(albedo: np.ndarray, normals: np.ndarray, gamma: np.ndarray) -> np.ndarray:
  """Deep3DFaceRecon's SH lighting (`compute_color`): albedo ⊙ (Y(n) @ (gamma + 0.8·e_DC)ᵀ).

  Args:
    albedo: (N, 3) in [0, 1].
    normals: (N, 3) unit normals in the lighting frame. For SynthFaces this is the face's model
      frame: Deep3DFaceRecon lights the posed face in camera space, but GRAM moves the camera
      instead of the face, so lighting in the model frame ties the light to the head (it turns
      with the head).
    gamma: (27,) SH coefficients, reshaped (3 colours, 9); 0.8 is added to each DC term.

  Returns:
    (N, 3) float32 shaded colours (not clipped).
  """
  gamma = np.asarray(gamma, np.float64).reshape(3, 9).copy()
  gamma[:, 0] += 0.8
  return (np.asarray(albedo, np.float64) * (sh_basis(normals) @ gamma.T)).astype(np.float32)
