"""FACS-like expression blendshapes of the procedural face and their sparse sampling prior.

Column k < K of B_exp is the displacement (N, 3) of the named shape `EXPRESSION_NAMES[k]` at
γ_k = 1, a strong but plausible expression (jaw_open 1 parts the inner lips by `JAW_GAP` = 0.3
design units, i.e. 0.3 · FACE_SCALE ≈ 0.24 model units; blink 1 closes the eye). It is built here
in design units (`procedural_geometry`); `procedural.build_model` scales it with the mean shape.
Columns K..63 are zero and unused: they only keep Deep3DFaceRecon's 64-wide layout. `_left` /
`_right` are image sides of a frontal face (x < 0 / x > 0; the subject's right / left), matching
iBUG's "left eye" (landmarks 36-41).

Lid shapes (blinks, squint, wide eyes) re-run the neutral geometry with other lid states, so the
lids slide over the eyeballs; all others are displacement fields sampled at each vertex's anchor
(the lip strips follow their rim, the backplates only the jaw, the eyeballs nothing).
"""

from __future__ import annotations

import numpy as np

from anifacegan_jax.face3d.morphable import NUM_EXP
from anifacegan_jax.synthfaces import procedural_geometry as pg
from anifacegan_jax.synthfaces import procedural_mesh as pm

EXPRESSION_NAMES = (
    "jaw_open", "smile_left", "smile_right", "frown", "brow_up_left", "brow_up_right", "brow_down",
    "brow_inner_up", "blink_left", "blink_right", "squint", "eye_wide", "pucker", "lip_funnel",
    "mouth_stretch", "lip_press", "upper_lip_raise", "lower_lip_depress", "cheek_puff",
    "nose_wrinkle", "jaw_left", "jaw_right", "mouth_left", "mouth_right")
NUM_NAMED = len(EXPRESSION_NAMES)
_TWO_SIDED = ("brow_up_left", "brow_up_right", "cheek_puff")
# True where only γ ≥ 0 is meaningful; negative brow_up lowers a brow, negative cheek_puff sucks in.
ONE_SIDED = tuple(name not in _TWO_SIDED for name in EXPRESSION_NAMES)
# Sampling prior: probability that a shape is active in a synthetic expression.
ACTIVE_PROBABILITY = {
    "jaw_open": 0.35, "smile_left": 0.2, "smile_right": 0.2, "frown": 0.1, "brow_up_left": 0.15,
    "brow_up_right": 0.15, "brow_down": 0.12, "brow_inner_up": 0.1, "blink_left": 0.12,
    "blink_right": 0.12, "squint": 0.1, "eye_wide": 0.1, "pucker": 0.1, "lip_funnel": 0.08,
    "mouth_stretch": 0.08, "lip_press": 0.08, "upper_lip_raise": 0.1, "lower_lip_depress": 0.1,
    "cheek_puff": 0.08, "nose_wrinkle": 0.08, "jaw_left": 0.06, "jaw_right": 0.06,
    "mouth_left": 0.08, "mouth_right": 0.08}
JAW_GAP = 0.3  # inner-lip separation at the mouth's centre for jaw_open = 1, design units
JAW_HINGE = np.array([0.0, -0.15, -0.35])  # effective hinge (rotation + condyle glide)
LID_SHAPES = {
    "blink_left": pg.LidState(closure=np.array([1.0, 0.0])),
    "blink_right": pg.LidState(closure=np.array([0.0, 1.0])),
    "squint": pg.LidState(closure=np.full(2, 0.35), lower_raise=np.full(2, 1.1)),
    "eye_wide": pg.LidState(widen=np.ones(2)),
}


class _Fields:
  """Weights of the neutral face that the displacement fields are built from."""

  def __init__(self, topo: pm.FaceTopology, neutral: np.ndarray):
    self.topo = topo
    a = pg.anchors(topo, neutral)
    self.x, self.y, self.z = a[:, 0], a[:, 1], a[:, 2]
    part = topo.part
    self.soft = ((part == pm.SKIN) | (part == pm.LIP_UPPER) | (part == pm.LIP_LOWER)).astype(float)
    rims = topo.mouth_rims
    self.corner_x = neutral[rims[0, -1], 0]
    self.mouth_y = neutral[rims[0, rims.shape[1] // 2], 1]
    self.upper = topo.above_mouth
    self.lens = np.clip(1.0 - (self.x / self.corner_x)**2, 0.0, 1.0)**0.7  # 0 at the corners
    self.dy = self.y - self.mouth_y

  def vec(self, weight, dx=0.0, dy=0.0, dz=0.0, soft=True):
    w = weight * (self.soft if soft else 1.0)
    return np.stack([w * dx, w * dy, w * dz], -1)

  def side(self, sign):
    """1 on the image side `sign` (-1 left, +1 right), 0 on the other, smooth across x = 0."""
    return pg.smooth((sign * self.x + 0.15) / 0.3)

  def corner(self, sign, reach=0.17):
    return np.exp(-((self.x - sign * self.corner_x)**2 + self.dy**2) / reach**2)

  def lips(self, sx=0.28, sy=0.16):
    return np.exp(-(self.x / sx)**2 - (self.dy / sy)**2)

  def brow(self, sign=None, height=0.10):
    """Brow region of one side (or both): 0 at the upper lid, 1 over the brow, less above."""
    w = pg.smooth((self.y - 0.31) / 0.2) * (1 - 0.6 * pg.smooth((self.y - 0.6) / 0.5))
    w = w * pg.smooth((0.65 - np.abs(self.x)) / 0.15)
    return w * (1.0 if sign is None else self.side(sign)) * height

  def jaw_weight(self):
    below = pg.smooth(-self.dy / 0.35)
    lip = np.where(self.upper, 0.0, self.lens)
    w = (below + (1 - below) * lip) * self.soft
    return np.where(self.topo.part == pm.MOUTH_LOWER, 1.0, w)

  def jaw_open(self, angle):
    c, s = np.cos(angle), np.sin(angle)
    rel = np.stack([self.y - JAW_HINGE[1], self.z - JAW_HINGE[2]], -1)
    rotated = np.stack([c * rel[:, 0] - s * rel[:, 1], s * rel[:, 0] + c * rel[:, 1]], -1)
    d = (rotated - rel) * self.jaw_weight()[:, None]
    return np.stack([np.zeros_like(self.x), d[:, 0], d[:, 1]], -1)

  def opening(self, upper_amount, lower_amount, reach=0.12):
    """Parts the lips: the upper side up, the lower side down, most at the centre."""
    fall = np.exp(-(self.dy / reach)**2) * self.lens
    return self.vec(np.where(self.upper, upper_amount, -lower_amount) * fall, dy=1.0)


def _displacement(name: str, f: _Fields) -> np.ndarray:
  """(N, 3) the displacement of non-lid shape `name` at γ = 1."""
  x, y = f.x, f.y
  sign = {"left": -1.0, "right": 1.0}.get(name.rsplit("_", 1)[-1], 0.0)
  if name == "jaw_open":
    angle = JAW_GAP / np.hypot(f.mouth_y - JAW_HINGE[1], 0.9 - JAW_HINGE[2])
    return f.jaw_open(angle)  # scaled to JAW_GAP exactly in `expression_basis`
  if name.startswith("smile"):
    cheek = pg.bump(x, y, sign * 0.38, -0.2, 0.14, 0.14)
    return f.vec(f.corner(sign), sign * 0.07, 0.1, -0.04) + f.vec(cheek, 0.0, 0.035, 0.02)
  if name == "frown":
    return f.vec(f.corner(-1) + f.corner(1), 0.02 * np.tanh(x / 0.1), -0.08) + f.vec(
        f.lips(0.2, 0.1) * (~f.upper), dz=0.02)
  if name.startswith("brow_up"):
    return f.vec(f.brow(sign), dy=1.0, dz=-0.1)
  if name == "brow_down":
    w = pg.pair(x, y, 0.2, 0.43, 0.16, 0.12) * pg.smooth((y - 0.31) / 0.12)
    return f.vec(w, -0.035 * np.tanh(x / 0.1), -0.06, 0.012)
  if name == "brow_inner_up":
    w = pg.pair(x, y, 0.15, 0.46, 0.13, 0.16) * pg.smooth((y - 0.31) / 0.15)
    return f.vec(w, dy=0.075)
  if name == "squint":
    return f.vec(pg.pair(x, y, 0.36, -0.02, 0.16, 0.12), dy=0.04, dz=0.015)
  if name == "eye_wide":
    return f.vec(f.brow(None, 0.03), dy=1.0)
  if name == "pucker":
    w = f.lips()
    return f.vec(w, -0.5 * x, 0.0, 0.13)
  if name == "lip_funnel":
    return f.vec(f.lips(), -0.25 * x, 0.0, 0.08) + f.opening(0.05, 0.05, 0.09)
  if name == "mouth_stretch":
    return f.vec(f.corner(-1) + f.corner(1), 0.07 * np.tanh(x / 0.1), -0.03) + f.opening(0.0, 0.03)
  if name == "lip_press":
    d = np.abs(f.dy)
    squeeze = pg.smooth(d / 0.07) * np.exp(-((d - 0.07) / 0.1)**2) * f.lens**0.5
    return f.vec(squeeze * np.where(f.upper, -1.0, 1.0), dy=0.045) + f.vec(f.lips(), dz=-0.04)
  if name == "upper_lip_raise":
    return f.opening(0.065, 0.0) + f.vec(f.lips(0.25, 0.12) * f.upper, dz=0.015)
  if name == "lower_lip_depress":
    return f.opening(0.0, 0.075) + f.vec(f.lips(0.25, 0.12) * (~f.upper), dz=0.015)
  if name == "cheek_puff":
    w = pg.pair(x, y, 0.36, f.mouth_y + 0.12, 0.16, 0.17)
    return f.vec(w, 0.09 * np.tanh(x / 0.1), 0.0, 0.06) + f.vec(f.lips(), dz=0.02)
  if name == "nose_wrinkle":
    return (f.vec(pg.pair(x, y, 0.1, -0.1, 0.09, 0.14), dy=0.065, dz=0.01) +
            f.vec(pg.pair(x, y, 0.18, 0.42, 0.12, 0.1) * pg.smooth((y - 0.31) / 0.12), dy=-0.05) +
            f.vec(pg.pair(x, y, 0.32, 0.1, 0.12, 0.08), dy=0.02) + f.opening(0.02, 0.0))
  if name.startswith("jaw_"):
    return np.outer(f.jaw_weight(), [sign * 0.09, 0.0, 0.0])
  if name.startswith("mouth_"):
    return f.vec(np.exp(-(x / 0.35)**2 - (f.dy / 0.2)**2), dx=sign * 0.11)
  raise ValueError(f"unknown expression '{name}'")


def expression_basis(topo: pm.FaceTopology, positions) -> np.ndarray:
  """(N, 3, 64) float64 B_exp in design units, columns in `EXPRESSION_NAMES` order, the rest zero.

  Args:
    topo: the face's topology.
    positions: callable LidState -> (N, 3) final neutral-identity positions (design frame).
  """
  neutral = positions(pg.LidState())
  fields = _Fields(topo, neutral)
  basis = np.zeros((topo.num_vertices, 3, NUM_EXP))
  for k, name in enumerate(EXPRESSION_NAMES):
    if name in LID_SHAPES:
      basis[:, :, k] = positions(LID_SHAPES[name]) - neutral
    if name not in LID_SHAPES or name in ("squint", "eye_wide"):
      basis[:, :, k] += _displacement(name, fields)
  rims = topo.mouth_rims[:, topo.mouth_rims.shape[1] // 2]
  gap = np.linalg.norm(neutral[rims[0]] + basis[rims[0], :, 0] - neutral[rims[1]] -
                       basis[rims[1], :, 0])
  basis[:, :, 0] *= JAW_GAP / gap  # the rotation's gap is nearly linear in its angle
  return basis


def sample_expressions(rng: np.random.Generator, n: int) -> np.ndarray:
  """(n, 64) float32 sparse expression coefficients for the synthetic dataset.

  Each named shape is active independently with `ACTIVE_PROBABILITY`; an active one-sided shape
  draws γ ~ U(0.15, 1), a two-sided one ±U(0.15, 0.6) (lowered brows, sucked cheeks are milder).
  Bilateral coupling: with probability 0.5 an active smile / brow raise / blink is mirrored on the
  other side with the same γ (symmetric expressions are common). Exclusions keep combinations
  plausible: at most one of jaw_left / jaw_right and of mouth_left / mouth_right; a blink removes
  squint and eye_wide. Columns K..63 are zero.
  """
  names = EXPRESSION_NAMES
  index = {name: k for k, name in enumerate(names)}
  prob = np.array([ACTIVE_PROBABILITY[name] for name in names])
  active = rng.random((n, NUM_NAMED)) < prob
  one_sided = np.array(ONE_SIDED)
  magnitude = np.where(one_sided, rng.uniform(0.15, 1.0, (n, NUM_NAMED)),
                       rng.uniform(0.15, 0.6, (n, NUM_NAMED)) * rng.choice([-1.0, 1.0],
                                                                           (n, NUM_NAMED)))
  gamma = np.where(active, magnitude, 0.0)
  mirror = rng.random((n, 3)) < 0.5
  for k, (left, right) in enumerate((("smile_left", "smile_right"),
                                     ("brow_up_left", "brow_up_right"),
                                     ("blink_left", "blink_right"))):
    il, ir = index[left], index[right]
    source = np.where(gamma[:, il] != 0, gamma[:, il], gamma[:, ir])
    gamma[mirror[:, k], il] = source[mirror[:, k]]
    gamma[mirror[:, k], ir] = source[mirror[:, k]]
  for left, right in (("jaw_left", "jaw_right"), ("mouth_left", "mouth_right")):
    both = (gamma[:, index[left]] != 0) & (gamma[:, index[right]] != 0)
    drop = np.where(rng.random(n) < 0.5, index[left], index[right])
    gamma[both, drop[both]] = 0.0
  blink = (gamma[:, index["blink_left"]] != 0) | (gamma[:, index["blink_right"]] != 0)
  gamma[blink, index["squint"]] = 0.0
  gamma[blink, index["eye_wide"]] = 0.0
  out = np.zeros((n, NUM_EXP), np.float32)
  out[:, :NUM_NAMED] = gamma
  return out
