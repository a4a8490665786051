"""Anatomical identity variation of the procedural face, the samples B_id is a PCA of.

Each variation is a displacement field (N, 3), design units (`procedural_geometry`), at one
standard deviation of its anatomical parameter, sampled at the vertices' anchors on the neutral face
(so eyeballs, inner lips and backplates move with the skin around them). A random identity is the
neutral face plus a N(0, 1)-weighted sum of the fields, after which the lids are laid onto the
moved eyeballs again (`procedural_geometry.conform`): only that step is non-linear.
"""

from __future__ import annotations

import numpy as np

from anifacegan_jax.synthfaces import procedural_geometry as pg
from anifacegan_jax.synthfaces import procedural_mesh as pm

EYE_X, EYE_Y = 0.31, pg.EYE_Y + 0.01
NUM_RANDOM_FIELDS = 48  # smooth random bumps (seeded) on top of the named variations
RANDOM_FIELD_SCALE = 0.016


def _named_fields(x, y, z):
  """(P, N, 3) named variations at anchors (x, y, z) (N,), each at one standard deviation."""
  ym, zero = pg.MOUTH_Y, np.zeros_like(x)
  eyes = pg.pair(x, y, EYE_X, EYE_Y, 0.2, 0.16)
  eye_l, eye_r = (pg.bump(x, y, sign * EYE_X, EYE_Y, 0.15, 0.11) for sign in (-1, 1))
  lat = np.tanh(x / 0.1)  # sign of x, smooth across the midline
  cheekbones = pg.pair(x, y, 0.46, 0.02, 0.17, 0.13)
  cheeks = pg.pair(x, y, 0.38, -0.35, 0.15, 0.18)
  upper_lip = pg.lip_window(x) * np.exp(-((y - ym - 0.035) / 0.04)**2)
  lower_lip = pg.lip_window(x) * np.exp(-((y - ym + 0.05) / 0.045)**2)
  mouth = np.exp(-(x / 0.4)**2 - ((y - ym) / 0.15)**2)
  fields = {
      "face_width": (0.03 * x, zero, zero),
      "face_height": (zero, 0.025 * y, zero),
      "face_depth": (zero, zero, 0.03 * (z - 0.5)),
      "jaw_width": (0.07 * x * pg.smooth((-0.2 - y) / 0.6), zero, zero),
      "chin_length": (zero, -0.06 * pg.smooth((ym - 0.05 - y) / 0.35), zero),
      "chin_protrusion": (zero, zero, 0.05 * pg.bump(x, y, 0.0, -0.92, 0.22, 0.15)),
      "cheekbones": (0.025 * lat * cheekbones, zero, 0.04 * cheekbones),
      "nose_length": (zero, -0.04 * pg.bump(x, y, 0.0, -0.18, 0.16, 0.14), zero),
      "nose_width": (0.3 * x * pg.bump(x, y, 0.0, -0.17, 0.16, 0.1), zero, zero),
      "nose_projection": (zero, zero, 0.25 * pg.nose(x, y)),
      "nose_bridge": (zero, zero, 0.04 * np.exp(-(x / 0.06)**2) * pg.bump(0, y, 0, 0.15, 1, 0.12)),
      "nose_tip": (zero, -0.015 * pg.bump(x, y, 0, -0.11, 0.07, 0.06),
                   0.03 * pg.bump(x, y, 0, -0.11, 0.06, 0.05)),
      "eye_spacing": (0.03 * lat * eyes, zero, zero),
      "eye_size": (0.06 * ((x + EYE_X) * eye_l + (x - EYE_X) * eye_r),
                   0.08 * (y - EYE_Y) * (eye_l + eye_r), zero),
      "eye_depth": (zero, zero, -0.04 * eyes),
      "eye_height": (zero, 0.035 * eyes, zero),
      "eye_tilt": (zero, 0.3 * (np.abs(x) - EYE_X) * (eye_l + eye_r), zero),
      "brow_ridge": (zero, zero, 0.035 * pg.pair(x, y, 0.27, 0.44, 0.22, 0.08)),
      "upper_lip": (zero, 0.02 * upper_lip, 0.025 * upper_lip),
      "lower_lip": (zero, -0.02 * lower_lip, 0.025 * lower_lip),
      "mouth_width": (0.12 * x * mouth, zero, zero),
      "mouth_height": (zero, 0.04 * np.exp(-(x / 0.45)**2 - ((y - ym) / 0.25)**2), zero),
      "mouth_depth": (zero, zero, 0.04 * pg.bump(x, y, 0.0, ym, 0.3, 0.18)),
      "midface": (zero, zero, 0.04 * pg.bump(x, y, 0.0, -0.3, 0.3, 0.25)),
      "forehead_slope": (zero, zero, -0.07 * pg.smooth((y - 0.5) / 0.6)**2),
      "roundness": (zero, zero, 0.025 * (1 - (x / 0.8)**2) * np.exp(-y**2)),
      "cheek_fullness": (0.03 * lat * cheeks, zero, 0.03 * cheeks),
      "temples": (-0.03 * lat * pg.pair(x, y, 0.65, 0.5, 0.15, 0.25), zero, zero),
  }
  return np.stack([np.stack(f, -1) for f in fields.values()])


def _random_fields(x, y, rng: np.random.Generator):
  """(NUM_RANDOM_FIELDS, N, 3) smooth random bumps, mostly in depth."""
  n = NUM_RANDOM_FIELDS
  centre = rng.uniform([-0.7, -1.0], [0.7, 1.0], (n, 2))
  width = rng.uniform(0.12, 0.3, (n, 1))
  direction = rng.normal(size=(n, 3)) * [0.4, 0.4, 1.0]
  direction /= np.linalg.norm(direction, axis=1, keepdims=True)
  w = np.exp(-((x - centre[:, :1])**2 + (y - centre[:, 1:])**2) / width**2)
  return RANDOM_FIELD_SCALE * w[..., None] * direction[:, None, :]


def identity_fields(topo: pm.FaceTopology, raw: np.ndarray, rng: np.random.Generator):
  """(P, N, 3) float64 all variation fields at the anchors of the raw neutral face (N, 3)."""
  a = pg.anchors(topo, raw)
  x, y, z = a[:, 0], a[:, 1], a[:, 2]
  return np.concatenate([_named_fields(x, y, z), _random_fields(x, y, rng)])


def identity_samples(topo: pm.FaceTopology, raw: np.ndarray, fields: np.ndarray,
                     params: np.ndarray) -> np.ndarray:
  """(B, N, 3) random faces: raw (N, 3) + params (B, P) · fields (P, N, 3), lids re-conformed."""
  pos = raw + (params @ fields.reshape(len(fields), -1)).reshape(-1, *raw.shape)
  eye_vertex = [np.argmax(topo.part == part) for part in (pm.EYE_LEFT, pm.EYE_RIGHT)]
  centres = pg.eye_centres() + pos[:, eye_vertex] - raw[eye_vertex]
  return pg.conform(pos, centres, pg.rim_weights(topo))
