"""Neutral geometry of the procedural face: skin surface, eyelids on eyeballs, mouth interior.

Design frame: the model frame before recentring and before `FACE_SCALE` (x image right, y up, z
towards the camera). Every length in the procedural_* modules (constants, field centres and widths,
displacements) is in design units; the model hands out `to_model` of the design geometry, i.e. one
uniform scale, so all proportions and expression magnitudes stay as designed. In design units the
mask's side edges lie near z ≈ 0.2 and the nose tip near z ≈ 1.2. The skin is a wrapped cylinder
(`procedural_mesh`) plus anatomical relief z(x, y) (brow ridge, eye sockets, nose, cheekbones,
lips, chin) and a curl of the border backwards (under the jaw, the forehead's top).

The eyelids are the only *sliding* tissue: lid states (blink, squint, wide eyes) move skin vertices
in y before the relief is evaluated, and `conform` then lays the skin around the openings onto the
eyeballs. Everything else (identity, mouth expressions) is a displacement of these positions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from anifacegan_jax.synthfaces import procedural_mesh as pm

# Model units per design unit (Deep3DFaceRecon's ≈ dm). Deep3DFaceRecon's fit of a real aligned
# FFHQ face (aniface_01626.mat) has its brow-to-chin span (landmarks 19/24 → 8) at 57.1 % of the
# crop; rendered with the GRAM camera (fov 12°, distance 1, `geometry.model_to_world`), the design
# mean face's spans 70.3 % of the frame, the scaled one 57.0 % (tests/procedural_test.py checks it).
FACE_SCALE = 0.81
DEPTH = 0.90  # z of the wrap cylinder's front: the cheeks' front plane before relief
EYE_RADIUS = 0.15  # eyeballs are spheres (a little larger than life: the fissure is 0.26 wide)
EYE_PROTRUSION = 0.05  # eyeball front in front of the socket's relief
LID_GAP = 0.006  # lids lie this far in front of the eyeball
LID_OPEN = (0.072, 0.036)  # upper / lower rim travel from the slit at mid-eye, rest pose
LID_FALLOFF = (0.11, 0.07)  # how far above / below the slit the lid motion reaches
RIM_REACH = 0.05  # skin within this parameter distance of an eye slit is laid onto the eyeball
MOUTH_Y = pm.MOUTH_ROW * pm.GRID
EYE_Y = pm.EYE_ROW * pm.GRID
STRIP_STEP = np.array([0.0, 0.012, -0.035])  # inner lip strips: per row, upper lip (y mirrored)
# Backplates: (bottom, top) in y relative to the mouth slit and an offset in z. The lower (jaw)
# plate sits behind the upper one: it shows below the upper teeth when the jaw drops.
PLATE_SPANS = {pm.MOUTH_UPPER: (-0.12, 0.25, 0.0), pm.MOUTH_LOWER: (-0.26, 0.30, -0.03)}


def to_model(design: np.ndarray) -> np.ndarray:
  """(...) positions or displacements in model units of (...) ones in design units."""
  return FACE_SCALE * np.asarray(design)


def smooth(x):
  """C¹ smoothstep of x clipped to [0, 1]."""
  x = np.clip(x, 0.0, 1.0)
  return x * x * (3.0 - 2.0 * x)


def bump(x, y, cx, cy, sx, sy):
  """Gaussian bump centred at (cx, cy) with widths (sx, sy)."""
  return np.exp(-((x - cx) / sx)**2 - ((y - cy) / sy)**2)


def pair(x, y, cx, cy, sx, sy):
  """Mirror-symmetric pair of bumps at (±cx, cy) (a sum: smooth across x = 0)."""
  return bump(x, y, cx, cy, sx, sy) + bump(x, y, -cx, cy, sx, sy)


def lip_window(x):
  """Lateral extent of the lips: 1 at the centre, ≈ 0.07 at the corners (|x| ≈ 0.255)."""
  return np.exp(-(x / 0.2)**4)


def _segment_distance(x, y, p, q):
  d = np.subtract(q, p)
  t = np.clip(((x - p[0]) * d[0] + (y - p[1]) * d[1]) / (d @ d), 0.0, 1.0)
  return np.hypot(x - p[0] - t * d[0], y - p[1] - t * d[1])


def nose(x, y):
  """(...,) relief of the nose: dorsum, tip and alae."""
  t = smooth((0.36 - y) / 0.46)  # 0 above the nasion, 1 at the tip
  underside = smooth((y + 0.25) / 0.14)  # the columella drops to the subnasale (y ≈ -0.25)
  width = 0.05 + 0.05 * t
  dorsum = 0.25 * t**1.3 * underside * np.exp(-(x / width)**2)
  tip = 0.07 * bump(x, y, 0, -0.10, 0.065, 0.055)
  return dorsum + tip + 0.10 * pair(x, y, 0.11, -0.175, 0.05, 0.05)


def relief(x, y):
  """(...,) anatomical relief added to the cylinder's depth at frontal position (x, y)."""
  ym = MOUTH_Y
  z = nose(x, y)
  z += -0.17 * pair(x, y, 0.31, 0.23, 0.15, 0.11)  # eye sockets
  z += 0.07 * pair(x, y, 0.27, 0.44, 0.22, 0.07)  # brow ridge
  z += -0.02 * bump(x, y, 0.0, 0.31, 0.07, 0.06)  # nasion
  z += 0.07 * pair(x, y, 0.46, 0.02, 0.17, 0.12) + 0.03 * pair(x, y, 0.36, -0.33, 0.15, 0.15)
  z += 0.13 * bump(x, y, 0.0, ym - 0.08, 0.30, 0.30)  # the dental arch pushes the mouth forward
  z += lip_window(x) * (0.05 * np.exp(-((y - ym - 0.035) / 0.035)**2) +
                        0.055 * np.exp(-((y - ym + 0.05) / 0.04)**2))
  z += -0.03 * bump(x, y, 0.0, ym - 0.17, 0.18, 0.035)  # mentolabial sulcus
  z += 0.09 * bump(x, y, 0.0, -0.93, 0.17, 0.10)  # chin
  z += -0.012 * bump(x, y, 0.0, -0.35, 0.025, 0.06) + 0.006 * pair(x, y, 0.04, -0.35, 0.02, 0.06)
  z += -0.05 * pair(x, y, 0.68, 0.48, 0.12, 0.22)  # temples
  z += 0.03 * bump(x, y, 0.0, 0.75, 0.45, 0.30)  # forehead
  fold = _segment_distance(np.abs(x), y, (0.16, -0.22), (0.30, -0.55))
  return z - 0.01 * np.exp(-(fold / 0.025)**2)  # nasolabial folds


@dataclasses.dataclass(frozen=True)
class LidState:
  """Per-eye lid controls, arrays (2,) for [left, right] (image sides); zeros = rest pose.

  Attributes:
    closure: 1 brings the upper rim down onto the lower rim (a blink).
    widen: 1 lifts the upper rim by 60 % more than its rest opening.
    lower_raise: 1 lifts the lower rim to the slit line (squint), above it beyond 1.
  """

  closure: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2))
  widen: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2))
  lower_raise: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2))


def _eye_sigma(s: np.ndarray, eye: int) -> np.ndarray:
  """Position along eye `eye`'s slit: 0 at the inner corner, 1 at the outer one (any s)."""
  inner, outer = (c * pm.GRID for c in pm.EYE_COLUMNS)
  return ((1 - 2 * eye) * -s - inner) / (outer - inner)


def _profile(sigma, power):
  return np.where((sigma > 0) & (sigma < 1), np.sin(np.pi * np.clip(sigma, 0, 1))**power, 0.0)


def lid_offsets(topo: pm.FaceTopology, state: LidState) -> np.ndarray:
  """(N,) y displacement of the skin by the lids (zero away from the eyes and off the skin)."""
  s, v = topo.sv[:, 0], topo.sv[:, 1]
  dy = np.zeros(topo.num_vertices)
  for eye in range(2):
    sigma = _eye_sigma(s, eye)
    lower = LID_OPEN[1] * (1 - state.lower_raise[eye]) * _profile(sigma, 0.9)
    upper = LID_OPEN[0] * (1 + 0.6 * state.widen[eye]) * _profile(sigma, 0.7)
    upper = (1 - state.closure[eye]) * upper - state.closure[eye] * lower
    above = np.exp(-((v - EYE_Y) / LID_FALLOFF[0])**2)
    below = np.exp(-((v - EYE_Y) / LID_FALLOFF[1])**2)
    dy += np.where(topo.above_eyes, upper * above, -lower * below)
  return np.where(topo.part == pm.SKIN, dy, 0.0)


def rim_weights(topo: pm.FaceTopology) -> np.ndarray:
  """(2, N) how strongly each skin vertex is laid onto each eyeball (1 on the rims)."""
  inner, outer = (c * pm.GRID for c in pm.EYE_COLUMNS)
  w = []
  for sign in (-1, 1):
    d = _segment_distance(sign * topo.sv[:, 0], topo.sv[:, 1], (inner, EYE_Y), (outer, EYE_Y))
    w.append(np.where(topo.part == pm.SKIN, np.exp(-(d / RIM_REACH)**2), 0.0))
  return np.stack(w)


def _half_width(y):
  """Radius of the wrap in x at height y: the jaw narrows below the cheekbones."""
  return pm.WRAP_RADIUS * (1.0 - 0.1 * smooth((-0.2 - y) / 0.8))


def _skin_base(topo: pm.FaceTopology):
  """(N,) x, y, z of the wrap cylinder with its border curled back; y before the lids."""
  s, v = topo.sv[:, 0], topo.sv[:, 1]
  phi = s / pm.WRAP_RADIUS
  inset = pm.outline_radius(topo.sv) - np.hypot(s, v)
  curl = np.clip(1.0 - inset / 0.22, 0.0, 1.0)**2
  lower = smooth(-v / 0.6)
  z = DEPTH * np.cos(phi) - 0.22 * smooth((v - 0.5) / 0.62)**2 - (0.12 + 0.25 * lower) * curl
  return _half_width(v) * np.sin(phi), v + 0.05 * lower * curl, z


def eye_centres() -> np.ndarray:
  """(2, 3) eyeball centres [left, right] of the neutral face."""
  inner, outer = (pm.WRAP_RADIUS * np.sin(c * pm.GRID / pm.WRAP_RADIUS) for c in pm.EYE_COLUMNS)
  x = np.array([-1.0, 1.0]) * 0.5 * (inner + outer)
  y = np.full(2, EYE_Y + 0.01)
  z = DEPTH * np.cos(np.arcsin(x / pm.WRAP_RADIUS)) + relief(x, y) + EYE_PROTRUSION - EYE_RADIUS
  return np.stack([x, y, z], -1)


def _front_depth(x, y):
  """(...,) z of the skin at frontal (x, y) away from the border (the curl is ignored)."""
  return DEPTH * np.sqrt(1.0 - np.clip(x / _half_width(y), -1, 1)**2) + relief(x, y)


def _mouth_interior(topo, pos):
  """Places inner-lip strips and backplates behind the lips' rim positions `pos` (N, 3)."""
  rims = topo.mouth_rims
  centre = pos[rims[0, rims.shape[1] // 2]]
  half = 1.6 * pos[rims[0, -1], 0]
  local = topo.local
  for part, sign in ((pm.LIP_UPPER, 1.0), (pm.LIP_LOWER, -1.0)):
    m = topo.part == part
    pos[m] = pos[topo.anchor[m]] + local[m, 1:2] * STRIP_STEP * [1.0, sign, 1.0]
  for part, (bottom, top, forward) in PLATE_SPANS.items():
    m = topo.part == part
    t = local[m, 1]
    x, y = half * local[m, 0] * (0.7 + 0.3 * t), centre[1] + bottom + (top - bottom) * t
    # A bowl towards the palate above and the floor below, never closer than 0.09 to the skin
    # in front of it, so that rays through the opening at an angle still end on it.
    bowl = centre[2] - 0.16 + forward - 0.9 * (y - centre[1] + 0.02)**2
    pos[m] = np.stack([x, y, np.minimum(bowl, _front_depth(x, y) - 0.09 + forward)], -1)
  return pos


def raw_positions(topo: pm.FaceTopology, state: LidState | None = None) -> np.ndarray:
  """(N, 3) float64 all vertices before `conform` (lids not yet laid onto the eyeballs)."""
  state = state or LidState()
  x, y, z = _skin_base(topo)
  y = y + lid_offsets(topo, state)
  pos = np.stack([x, y, z + relief(x, y)], -1)
  centres = eye_centres()
  for eye, part in enumerate((pm.EYE_LEFT, pm.EYE_RIGHT)):
    m = topo.part == part
    pos[m] = centres[eye] + EYE_RADIUS * topo.local[m]
  return _mouth_interior(topo, pos)


def anchors(topo: pm.FaceTopology, pos: np.ndarray) -> np.ndarray:
  """(N, 3) where each vertex samples displacement fields: its anchor's position, eyes: centre."""
  out = pos[np.maximum(topo.anchor, 0)]
  for eye, part in enumerate((pm.EYE_LEFT, pm.EYE_RIGHT)):
    out[topo.part == part] = eye_centres()[eye]
  return out


def conform(pos: np.ndarray, centres: np.ndarray, weights: np.ndarray, softness: float = 0.008):
  """Lays the skin onto the eyeballs: rims onto the spheres, nothing sinks into them.

  Args:
    pos: (..., N, 3) positions, design frame.
    centres: (..., 2, 3) eyeball centres.
    weights: (2, N) `rim_weights`.
  Returns:
    (..., N, 3) with z of the skin near the eyes replaced (x, y unchanged).
  """
  near = np.flatnonzero(weights.sum(0) > 1e-9)  # beyond, neither pull nor push acts
  p = pos[..., near, :]
  z = p[..., 2]
  for eye in range(2):
    c = centres[..., eye, :]
    r2 = (p[..., 0] - c[..., None, 0])**2 + (p[..., 1] - c[..., None, 1])**2
    gap = np.sqrt(np.maximum(EYE_RADIUS**2 - r2, 0.0))
    behind = np.sqrt(r2) - EYE_RADIUS  # outside the sphere's outline: fall back steeply
    surface = c[..., None, 2] + LID_GAP + np.where(behind < 0, gap, -2.0 * behind)
    z = z + weights[eye, near] * (surface - z)
    z = surface + softness * np.logaddexp(0.0, (z - surface) / softness)
  out = pos.copy()
  out[..., near, 2] = z
  return out
