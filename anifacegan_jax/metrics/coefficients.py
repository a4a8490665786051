"""Errors of predicted 3DMM coefficients (257 layout) against the truth, pure and tfds-free.

`landmark_mm` is the mean Euclidean 3D error of landmarks 17-67 (iBUG-68 without the jaw
contour, the set AniFaceGAN's landmark loss uses) of S = S̄ + B_id β + B_exp γ in the model frame,
pose removed, in millimetres (3DMM units ≈ decimetres: mm = 100 × units). Used by the
reconstruction network's training (`recon_training`) and the control metrics.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from anifacegan_jax.face3d import geometry
from anifacegan_jax.face3d.morphable import MorphableArrays, MorphableModel
from anifacegan_jax.types import Array

LANDMARKS = slice(17, 68)  # iBUG-68 without the jaw contour
MM_PER_UNIT = 100.0  # model units ≈ decimetres
ID, EXP, ANGLE = slice(0, 80), slice(80, 144), slice(224, 227)  # the 257 layout


def landmark_arrays(model: MorphableModel) -> MorphableArrays:
  """The model restricted to its 68 landmark vertices (landmarks = 0..67; no triangles).

  `geometry.face_vertices` on it gives exactly the landmarks of the full mesh at a fraction of
  the cost (68 instead of N vertices), which is all the loss and the metrics need.
  """
  lm = np.asarray(model.landmarks)
  small = dataclasses.replace(
      model, mean_shape=model.mean_shape[lm], id_basis=model.id_basis[lm],
      exp_basis=model.exp_basis[lm], mean_tex=model.mean_tex[lm], tex_basis=model.tex_basis[lm],
      triangles=np.zeros((0, 3), np.int32), landmarks=np.arange(len(lm), dtype=np.int32),
      point_buf=np.zeros((len(lm), 0), np.int32))
  return small.arrays()


def face_landmarks(arrays: MorphableArrays, coefficients: Array) -> Array:
  """(B, 68, 3) 3D landmarks of S(β, γ) for (B, 257) coefficients, model frame (no pose)."""
  def one(c):
    return geometry.landmarks_3d(arrays, geometry.face_vertices(arrays, c[ID], c[EXP]))
  return jax.vmap(one)(coefficients)


def coefficient_losses(pred: Array, target: Array, arrays: MorphableArrays) -> dict[str, Array]:
  """Unweighted terms for (B, 257) predictions and targets: MSEs and the landmark loss (units²)."""
  sq = jnp.square(pred - target)
  landmarks = face_landmarks(arrays, pred) - face_landmarks(arrays, target)
  return dict(id=jnp.mean(sq[:, ID]), exp=jnp.mean(sq[:, EXP]), angle=jnp.mean(sq[:, ANGLE]),
              landmark=jnp.mean(jnp.sum(jnp.square(landmarks[:, LANDMARKS]), axis=-1)))


def per_example_errors(pred: Array, target: Array, arrays: MorphableArrays) -> dict[str, Array]:
  """Per-example (B,) terms that `summarize_errors` aggregates: squared errors summed over the id
  (80), exp (64) and angle (3) coefficients, and the mean 3D distance of landmarks 17-67 in mm."""
  sq = jnp.square(pred - target)
  landmarks = face_landmarks(arrays, pred) - face_landmarks(arrays, target)
  distance = jnp.linalg.norm(landmarks[:, LANDMARKS], axis=-1)
  return dict(id_sq=jnp.sum(sq[:, ID], -1), exp_sq=jnp.sum(sq[:, EXP], -1),
              angle_sq=jnp.sum(sq[:, ANGLE], -1),
              landmark_mm=MM_PER_UNIT * jnp.mean(distance, axis=-1))


def summarize_errors(errors: dict[str, np.ndarray]) -> dict[str, float]:
  """Dataset metrics from concatenated `per_example_errors`: RMSEs over examples × coefficients."""
  count = len(errors["exp_sq"])
  rmse = lambda key, size: math.sqrt(float(np.sum(errors[key])) / (count * size))
  return dict(exp_rmse=rmse("exp_sq", 64), id_rmse=rmse("id_sq", 80),
              angle_rmse_deg=math.degrees(rmse("angle_sq", 3)),
              landmark_mm=float(np.mean(errors["landmark_mm"])), num_examples=count)
