"""Albedo of the procedural face: the mean texture and the fields its texture basis is drawn from.

Albedo is linear RGB in [0, 1] per vertex (BFM's 0..255 / 255). Regions are found on the neutral
geometry before recentring (design frame of `procedural_geometry`): lips between the slit and the
vermilion border, brows as a band over the brow ridge, eyes by the angle from the eyeball's axis.
"""

from __future__ import annotations

import numpy as np

from anifacegan_jax.synthfaces import procedural_geometry as pg
from anifacegan_jax.synthfaces import procedural_mesh as pm

SKIN = np.array([0.80, 0.62, 0.52])
LIPS = np.array([0.66, 0.34, 0.34])
BROWS = np.array([0.28, 0.20, 0.15])
LASHES = np.array([0.12, 0.08, 0.07])
SCLERA, IRIS, PUPIL = np.array([0.93, 0.91, 0.88]), np.array([0.38, 0.26, 0.16]), np.full(3, 0.03)
MOUTH, TONGUE, TEETH = np.array([0.16, 0.05, 0.06]), np.array([0.50, 0.20, 0.20]), np.array(
    [0.90, 0.87, 0.78])
INNER_LIP = np.array([0.55, 0.24, 0.25])
NOSTRIL = np.array([0.22, 0.11, 0.09])
IRIS_ANGLE, PUPIL_ANGLE = np.deg2rad(23.0), np.deg2rad(9.5)  # from the eyeball's axis


def _edge(distance, width):
  """Soft inside-indicator of a signed distance (positive inside), `width` wide."""
  return pg.smooth(distance / width + 0.5)


def lip_borders(x, corner_x):
  """Heights of the upper and lower vermilion borders above / below the slit at x (cupid's bow)."""
  lateral = np.sqrt(np.clip(1.0 - (x / corner_x)**2, 0.0, 1.0))
  upper = (0.068 - 0.014 * np.exp(-(x / 0.03)**2)) * lateral**0.6
  return upper, 0.095 * lateral**0.8


def lip_mask(x, y, corner_x):
  """(...,) vermilion: between the slit (y = MOUTH_Y) and the borders, corners at ±corner_x."""
  dy = y - pg.MOUTH_Y
  upper, lower = lip_borders(x, corner_x)
  inside = np.where(dy >= 0, _edge(upper - dy, 0.014), _edge(lower + dy, 0.016))
  return inside * _edge(corner_x - np.abs(x), 0.02)


def brow_mask(x, y):
  """(...,) eyebrows: an arch over each eye, thick medially, tapering to the tail."""
  ax = np.abs(x)
  centre = 0.43 + 0.035 * (1.0 - ((ax - 0.30) / 0.22)**2)
  half = 0.042 - 0.02 * pg.smooth((ax - 0.15) / 0.38)
  along = _edge(ax - 0.11, 0.04) * _edge(0.55 - ax, 0.06)
  return _edge(half - np.abs(y - centre), 0.012) * along


def eye_albedo(direction: np.ndarray) -> np.ndarray:
  """(n, 3) sclera / iris (with a darker limbus) / pupil by the angle from the eye's axis."""
  angle = np.arccos(np.clip(direction[:, 2], -1.0, 1.0))
  iris = _edge(IRIS_ANGLE - angle, np.deg2rad(4.0))[:, None]
  pupil = _edge(PUPIL_ANGLE - angle, np.deg2rad(3.0))[:, None]
  limbus = np.exp(-((angle - IRIS_ANGLE) / np.deg2rad(4.0))**2)[:, None]
  colour = SCLERA * (1 - iris) + IRIS * iris * (1 - 0.4 * limbus)
  return colour * (1 - pupil) + PUPIL * pupil


def mean_albedo(topo: pm.FaceTopology, pos: np.ndarray) -> np.ndarray:
  """(N, 3) float64 the mean texture on neutral positions `pos` (N, 3) (before recentring)."""
  x, y = pos[:, 0], pos[:, 1]
  corner_x = pos[topo.mouth_rims[0, -1], 0]
  colour = np.tile(SKIN, (topo.num_vertices, 1))
  colour += np.outer(pg.pair(x, y, 0.38, -0.18, 0.14, 0.12), [0.03, -0.03, -0.03])  # cheeks
  colour += np.outer(pg.pair(x, y, 0.31, 0.30, 0.14, 0.06), [-0.05, -0.05, -0.04])  # lid crease
  lips = lip_mask(x, y, corner_x)[:, None]
  colour = colour * (1 - lips) + LIPS * lips
  slit = np.exp(-((y - pg.MOUTH_Y) / 0.01)**2)[:, None] * pg.lip_window(x)[:, None]
  colour = colour * (1 - 0.35 * slit)
  brows = brow_mask(x, y)[:, None]
  colour = colour * (1 - brows) + BROWS * brows
  nostrils = pg.pair(x, y, 0.055, -0.232, 0.026, 0.016)[:, None]
  colour = colour * (1 - nostrils) + NOSTRIL * nostrils
  upper_rims = topo.eye_rims[:, 0].ravel()
  near = np.zeros(topo.num_vertices)
  near[upper_rims] = 1.0
  lash = np.minimum(1.0, pg.rim_weights(topo).sum(0)**3 * topo.above_eyes + near)[:, None]
  colour = colour * (1 - 0.8 * lash) + LASHES * 0.8 * lash
  for part in (pm.EYE_LEFT, pm.EYE_RIGHT):
    m = topo.part == part
    colour[m] = eye_albedo(topo.local[m])
  colour[(topo.part == pm.LIP_UPPER) | (topo.part == pm.LIP_LOWER)] = INNER_LIP
  for part, teeth in ((pm.MOUTH_UPPER, (-0.065, 0.03)), (pm.MOUTH_LOWER, (0.05, 0.13))):
    m = topo.part == part
    bottom, top, _ = pg.PLATE_SPANS[part]
    px, dy = topo.local[m, 0], bottom + (top - bottom) * topo.local[m, 1]  # y above the slit
    teeth = (_edge(dy - teeth[0], 0.02) * _edge(teeth[1] - dy, 0.02) *
             _edge(0.75 - np.abs(px), 0.1))[:, None]
    tongue = (part == pm.MOUTH_LOWER) * (_edge(0.0 - dy, 0.05) *
                                         _edge(0.6 - np.abs(px), 0.2))[:, None]
    base = MOUTH * (1 - tongue) + TONGUE * tongue
    colour[m] = base * (1 - teeth) + TEETH * teeth
  return np.clip(colour, 0.0, 1.0)


NUM_TEXTURE_NOISE = 66  # freckle-like smooth albedo noise fields (seeded): 14 named + 66 = 80


def texture_fields(topo: pm.FaceTopology, pos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """(P, N, 3) float64 albedo variations at one standard deviation, on neutral positions (N, 3).

  Skin tone (lightness, redness, yellowness), lip colour and darkness, brow darkness, iris colour,
  blush, beard shadow, eye-socket darkness, nose redness, teeth tint, then seeded smooth noise.
  """
  x, y = pos[:, 0], pos[:, 1]
  corner_x = pos[topo.mouth_rims[0, -1], 0]
  skin = (topo.part == pm.SKIN).astype(float)
  lips, brows = lip_mask(x, y, corner_x) * skin, brow_mask(x, y) * skin
  face = skin * (1 - lips) * (1 - brows)
  eyes = (topo.part == pm.EYE_LEFT) | (topo.part == pm.EYE_RIGHT)
  angle = np.arccos(np.clip(topo.local[:, 2], -1.0, 1.0))
  iris = eyes * _edge(IRIS_ANGLE - angle, np.deg2rad(4.0)) * _edge(angle - PUPIL_ANGLE, 0.05)
  teeth = ((topo.part == pm.MOUTH_UPPER) | (topo.part == pm.MOUTH_LOWER)).astype(float)
  lower_face = face * pg.smooth((pg.MOUTH_Y + 0.12 - y) / 0.3) * pg.smooth((0.55 - np.abs(x)) / 0.2)
  named = [
      (face + 0.8 * lips, [0.07, 0.062, 0.055]),  # lightness
      (face, [0.025, -0.01, -0.01]),  # redness
      (face, [0.012, 0.012, -0.03]),  # yellowness
      (lips, [0.05, -0.03, -0.01]),  # lip redness
      (lips, [-0.05, -0.04, -0.035]),  # lip darkness
      (brows, [-0.06, -0.045, -0.035]),  # brow darkness
      (brows, [0.03, 0.02, 0.005]),  # brow warmth
      (iris, [-0.05, 0.0, 0.08]),  # blue ↔ brown eyes
      (iris, [-0.06, -0.05, -0.03]),  # iris darkness
      (face * pg.pair(x, y, 0.38, -0.18, 0.14, 0.12), [0.04, -0.01, -0.01]),  # blush
      (lower_face, [-0.05, -0.04, -0.03]),  # beard shadow
      (face * pg.pair(x, y, 0.31, 0.27, 0.14, 0.08), [-0.04, -0.04, -0.03]),  # socket darkness
      (face * pg.bump(x, y, 0, -0.1, 0.1, 0.12), [0.04, -0.01, -0.01]),  # nose redness
      (teeth, [0.0, -0.01, -0.03]),  # teeth and mouth tint
  ]
  fields = [np.outer(w, c) for w, c in named]
  centre = rng.uniform([-0.7, -1.0], [0.7, 1.1], (NUM_TEXTURE_NOISE, 2))
  width = rng.uniform(0.05, 0.15, (NUM_TEXTURE_NOISE, 1))
  spots = np.exp(-((x - centre[:, :1])**2 + (y - centre[:, 1:])**2) / width**2) * face
  return np.concatenate([np.stack(fields), 0.02 * spots[..., None] * [1.0, 1.1, 1.2]])
