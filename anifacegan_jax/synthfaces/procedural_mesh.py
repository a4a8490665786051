"""Topology of the procedural face ("SynthFaces" 3DMM): a structured skin sheet with cut openings.

The skin is a regular grid in a parameter plane (s, v), design units (`procedural_geometry`; the
model is `FACE_SCALE` times them): v is height (≈ y) and s is arc length around a vertical cylinder
of radius `WRAP_RADIUS` (x = WRAP_RADIUS·sin(s/WRAP_RADIUS)), so the sheet wraps back towards the
ears at its side edges. Grid quads inside an egg-shaped outline
are kept; a zipper strip joins their staircase border to a smooth loop on the outline, so the mask
ends in one clean closed curve. Openings are slits along grid rows: the nodes strictly between the
two corners of a slit get a second copy used by the quads below the row, so the geometry can open
them (the mouth by the jaw, the eyes by the lids) while the corners stay shared. Behind the openings
sit separate parts: two eyeball caps, a two-row "inner lip" strip hanging from each lip rim and two
mouth backplates (upper jaw, lower jaw). Geometry lives in `procedural_geometry.py`.

Every vertex has an *anchor*: the skin vertex whose displacement it copies (itself for the skin, its
rim vertex for the lip strips, the nearest rim vertex for the backplates, -1 for the eyeballs, which
follow their eye centre). Left/right mean image sides of a frontal face (x < 0 / x > 0).
"""

from __future__ import annotations

import dataclasses

import numpy as np

GRID = 0.026  # skin grid spacing in the parameter plane, design units (≈ 2.1 mm in the model)
WRAP_RADIUS = 0.82  # radius of the cylinder that s wraps around (the face's half width)
OUTLINE_SIDE, OUTLINE_TOP, OUTLINE_BOTTOM = 1.06, 1.12, 1.12  # outline extent in (s, v)
EYE_ROW, MOUTH_ROW = 9, -20  # grid rows of the eye slits (v ≈ 0.234) and the mouth slit (≈ -0.52)
EYE_COLUMNS = (7, 18)  # |column| of the inner and outer eye corners (x ≈ 0.18, 0.44)
MOUTH_CORNER = 10  # |column| of the mouth corners (x ≈ ±0.255)
EYE_ANGLES = ((-72.0, 72.0, 21), (-50.0, 60.0, 15))  # eyeball cap grid: x, y angle ranges (deg), n
PLATE_COLUMNS, STRIP_ROWS = 19, 2
PLATE_ROWS = (11, 13)  # rows of the upper and lower backplate grids

SKIN, EYE_LEFT, EYE_RIGHT, LIP_UPPER, LIP_LOWER, MOUTH_UPPER, MOUTH_LOWER = range(7)


@dataclasses.dataclass(frozen=True)
class FaceTopology:
  """Vertices (by role) and triangles of the procedural face; no geometry.

  Attributes:
    sv: (N, 2) float64 parameter coordinates (s, v); non-skin vertices carry their anchor's.
    part: (N,) int8 SKIN, EYE_LEFT, EYE_RIGHT, LIP_UPPER, LIP_LOWER, MOUTH_UPPER or MOUTH_LOWER.
    above_mouth: (N,) bool on the upper-lip side of the mouth slit (its row's originals count as
      above, their copies below); interior parts by the jaw they belong to.
    above_eyes: (N,) bool the same for the eye slit row.
    local: (N, 3) float64 part-local coordinates: eyeball unit directions (eyes looking down +z),
      strip (column, depth step, 0), backplate (x in [-1, 1], y in [0, 1] bottom→top, 0).
    anchor: (N,) int64 the skin vertex whose displacement a vertex follows, -1 for eyeballs.
    triangles: (T, 3) int64 counter-clockwise in the parameter plane for the skin and the grids of
      the other parts (their orientation is fixed against geometry in `procedural_geometry`).
    mouth_rims: (2, C) int64 upper / lower rim vertex ids from the left corner to the right one.
    eye_rims: (2, 2, E) int64 [eye left/right, upper/lower] rim ids from the image-left corner.
    outline: (M,) int64 the mask's outer boundary loop, counter-clockwise.
  """

  sv: np.ndarray
  part: np.ndarray
  above_mouth: np.ndarray
  above_eyes: np.ndarray
  local: np.ndarray
  anchor: np.ndarray
  triangles: np.ndarray
  mouth_rims: np.ndarray
  eye_rims: np.ndarray
  outline: np.ndarray

  @property
  def num_vertices(self) -> int:
    return int(self.part.shape[0])


def outline_curve(num: int) -> np.ndarray:
  """(num, 2) the mask outline in (s, v), counter-clockwise from the bottom centre.

  Superellipses: a squarish forehead above v = 0, a narrower U-shaped jaw below.
  """
  t = np.linspace(-np.pi / 2, 3 * np.pi / 2, num, endpoint=False)
  c, s = np.cos(t), np.sin(t)
  upper = s > 0
  taper = np.clip(-s / 0.9, 0.0, 1.0)
  width = OUTLINE_SIDE * (1.0 - 0.24 * taper * taper * (3.0 - 2.0 * taper))  # jaw → chin
  exponent = np.where(upper, 2.0 / 2.4, 2.0 / 1.75)
  half_height = np.where(upper, OUTLINE_TOP, OUTLINE_BOTTOM)
  return np.stack([width * np.sign(c) * np.abs(c)**exponent,
                   half_height * np.sign(s) * np.abs(s)**np.where(upper, 1.0, 0.9)], -1)


def outline_radius(points: np.ndarray) -> np.ndarray:
  """(...,) radius of the outline along the polar angle of (..., 2) points (s, v) about 0."""
  curve = outline_curve(4096)
  angle = np.arctan2(curve[:, 1], curve[:, 0])
  order = np.argsort(angle)
  angle, radius = angle[order], np.hypot(curve[order, 0], curve[order, 1])
  query = np.arctan2(points[..., 1], points[..., 0])
  return np.interp(query, angle, radius, period=2 * np.pi)


def _outline_loop() -> np.ndarray:
  """(M, 2) outline points at arc-length spacing ≈ GRID, M even (mirror-symmetric), CCW."""
  dense = outline_curve(8192)
  seg = np.linalg.norm(np.roll(dense, -1, 0) - dense, axis=-1)
  arc = np.concatenate([[0.0], np.cumsum(seg)])
  m = 2 * int(round(arc[-1] / GRID / 2))
  targets = np.arange(m) * arc[-1] / m
  closed = np.concatenate([dense, dense[:1]])
  return np.stack([np.interp(targets, arc, closed[:, k]) for k in range(2)], -1)


def _row_half_widths(rows: np.ndarray) -> np.ndarray:
  """(R,) half width (in columns) of each band of quads between rows j and j+1 (last unused)."""
  cols = np.arange(0, int(OUTLINE_SIDE / GRID) + 2)
  s, v = np.meshgrid(cols * GRID, rows * GRID, indexing="xy")
  pts = np.stack([s, v], -1)
  inside = np.hypot(s, v) < outline_radius(pts) - 0.5 * GRID
  nodes = np.where(inside.all(axis=1), cols[-1], np.argmin(inside, axis=1) - 1)
  return np.minimum(nodes[:-1], nodes[1:])


class _Builder:
  """Accumulates vertices with their attributes."""

  def __init__(self):
    self.columns = {k: [] for k in ("sv", "part", "above_mouth", "above_eyes", "local", "anchor")}

  def add(self, sv, part, above_mouth, above_eyes, local=None, anchor=None) -> np.ndarray:
    sv = np.atleast_2d(np.asarray(sv, np.float64))
    n = sv.shape[0]
    start = sum(len(a) for a in self.columns["part"])
    ids = np.arange(start, start + n)
    self.columns["sv"].append(sv)
    self.columns["part"].append(np.full(n, part, np.int8))
    self.columns["above_mouth"].append(np.broadcast_to(above_mouth, (n,)).astype(bool))
    self.columns["above_eyes"].append(np.broadcast_to(above_eyes, (n,)).astype(bool))
    self.columns["local"].append(np.zeros((n, 3)) if local is None else np.asarray(local, float))
    self.columns["anchor"].append(ids if anchor is None else np.asarray(anchor, np.int64))
    return ids

  def arrays(self) -> dict:
    return {k: np.concatenate(v) for k, v in self.columns.items()}


def _skin_grid(builder: _Builder):
  """Grid nodes, slit copies and quads.

  Returns:
    ids, copies: (R, C) node ids per (row, column + ncol), -1 outside; `copies` differs on slits.
    triangles (T, 3), rows (R,) grid row numbers, band (R - 1,) quad half widths, ncol.
  """
  rows = np.arange(int(np.floor(-OUTLINE_BOTTOM / GRID)), int(np.ceil(OUTLINE_TOP / GRID)) + 1)
  band = _row_half_widths(rows)
  keep = band >= 1
  first, last = np.argmax(keep), len(keep) - np.argmax(keep[::-1])  # bands first..last-1
  rows, band = rows[first:last + 1], band[first:last]
  node_half = np.maximum(np.concatenate([band, [0]]), np.concatenate([[0], band]))
  ncol = int(node_half.max())
  ids = -np.ones((len(rows), 2 * ncol + 1), np.int64)
  for r, j in enumerate(rows):
    i = np.arange(-node_half[r], node_half[r] + 1)
    ids[r, i + ncol] = builder.add(np.stack([i * GRID, np.full(i.shape, j * GRID)], -1), SKIN,
                                   j >= MOUTH_ROW, j >= EYE_ROW)
  copies = ids.copy()  # the node ids that the quads *below* a row use
  for row, spans in ((MOUTH_ROW, [(-MOUTH_CORNER, MOUTH_CORNER)]),
                     (EYE_ROW, [(-EYE_COLUMNS[1], -EYE_COLUMNS[0]), EYE_COLUMNS])):
    for lo, hi in spans:
      i = np.arange(lo + 1, hi)
      sv = np.stack([i * GRID, np.full(i.shape, row * GRID)], -1)
      copies[row - rows[0], i + ncol] = builder.add(sv, SKIN, row > MOUTH_ROW, row > EYE_ROW)
  tris = []
  for r in range(len(band)):
    i = np.arange(-band[r], band[r]) + ncol
    a, b = ids[r, i], ids[r, i + 1]  # quads lie above their bottom row: originals
    d, c = copies[r + 1, i], copies[r + 1, i + 1]  # and below their top row: copies
    right = (i >= ncol)[:, None]  # mirrored diagonals keep the mesh left/right symmetric
    tris.append(np.where(right, np.stack([a, b, d], -1), np.stack([a, b, c], -1)))
    tris.append(np.where(right, np.stack([b, c, d], -1), np.stack([a, c, d], -1)))
  return ids, copies, np.concatenate(tris), rows, band, ncol


def _staircase(ids: np.ndarray, band: np.ndarray, ncol: int) -> np.ndarray:
  """(K,) border nodes of the kept quads, counter-clockwise from the bottom centre."""
  right = [(0, i) for i in range(band[0] + 1)]  # (row, column): bottom row, then up the right
  for r in range(1, len(band) + 1):
    cur = band[r - 1]
    right.append((r, cur))
    target = band[r] if r < len(band) else 0  # the top row is walked back to the centre
    step = 1 if target > cur else -1
    right.extend((r, i) for i in range(cur + step, target + step, step))
  loop = right + [(r, -i) for r, i in reversed(right[1:-1])]  # the left half mirrors it
  return np.array([ids[r, i + ncol] for r, i in loop], np.int64)


def _zipper(inner: np.ndarray, outer: np.ndarray, sv: np.ndarray) -> np.ndarray:
  """(T, 3) triangles joining two CCW loops that start at matching points (shorter diagonal)."""
  tris, i, j = [], 0, 0
  ni, no = len(inner), len(outer)
  while i < ni or j < no:
    a, b = inner[i % ni], outer[j % no]
    if i == ni:
      advance_outer = True
    elif j == no:
      advance_outer = False
    else:
      d_outer = np.linalg.norm(sv[a] - sv[outer[(j + 1) % no]])
      d_inner = np.linalg.norm(sv[inner[(i + 1) % ni]] - sv[b])
      advance_outer = d_outer < d_inner
    if advance_outer:
      tris.append((a, b, outer[(j + 1) % no]))
      j += 1
    else:
      tris.append((a, b, inner[(i + 1) % ni]))
      i += 1
  return np.array(tris, np.int64)


def _grid_tris(ids: np.ndarray) -> np.ndarray:
  """(T, 3) two CCW triangles per cell of an (rows, cols) id grid (row = +y, column = +x)."""
  a, b = ids[:-1, :-1].ravel(), ids[:-1, 1:].ravel()
  d, c = ids[1:, :-1].ravel(), ids[1:, 1:].ravel()
  return np.concatenate([np.stack([a, b, c], -1), np.stack([a, c, d], -1)])


def _eyeballs(builder: _Builder) -> list[np.ndarray]:
  """Two eyeball caps: grids of unit directions at equal angular steps around +z (`EYE_ANGLES`)."""
  (x0, x1, nx), (y0, y1, ny) = EYE_ANGLES
  ax, ay = np.meshgrid(np.deg2rad(np.linspace(x0, x1, nx)), np.deg2rad(np.linspace(y0, y1, ny)))
  d = np.stack([np.tan(ax), np.tan(ay), np.ones_like(ax)], -1)
  d = (d / np.linalg.norm(d, axis=-1, keepdims=True)).reshape(-1, 3)
  tris = []
  for part, sign in ((EYE_LEFT, -1), (EYE_RIGHT, 1)):
    centre = (sign * 0.5 * (EYE_COLUMNS[0] + EYE_COLUMNS[1]) * GRID, EYE_ROW * GRID)
    ids = builder.add(np.tile(centre, (len(d), 1)), part, True, True, d, -np.ones(len(d), int))
    tris.append(_grid_tris(ids.reshape(ny, nx)))
  return tris


def _mouth_interior(builder: _Builder, rims: np.ndarray, sv: np.ndarray) -> list[np.ndarray]:
  """Inner-lip strips (hanging from the rims) and the two backplates."""
  tris = []
  for k, (rim, part) in enumerate(((rims[0], LIP_UPPER), (rims[1], LIP_LOWER))):
    inner = rim[1:-1]
    prev = inner
    for step in range(1, STRIP_ROWS + 1):
      local = np.stack([np.arange(len(inner)), np.full(len(inner), step), np.zeros(len(inner))], -1)
      row = builder.add(sv[inner], part, k == 0, True, local, inner)
      tris.append(_grid_tris(np.stack([prev, row])))
      if step == 1:  # fan to the shared corners once: keeps their valence at 8
        tris.append(np.array([(rim[0], prev[0], row[0]), (rim[-1], row[-1], prev[-1])]))
      prev = row
  rim_s = sv[rims[0], 0]
  for part, nrows in zip((MOUTH_UPPER, MOUTH_LOWER), PLATE_ROWS):
    px, py = np.meshgrid(np.linspace(-1, 1, PLATE_COLUMNS), np.linspace(0, 1, nrows))
    nearest = np.argmin(np.abs(px.reshape(-1, 1) * 0.9 * rim_s[-1] - rim_s), axis=1)
    anchor = np.where(part == MOUTH_UPPER, rims[0][nearest], rims[1][nearest])
    local = np.stack([px.ravel(), py.ravel(), np.zeros(px.size)], -1)
    ids = builder.add(sv[anchor], part, part == MOUTH_UPPER, True, local, anchor)
    tris.append(_grid_tris(ids.reshape(nrows, PLATE_COLUMNS)))
  return tris


def build_topology() -> FaceTopology:
  """The procedural face's vertices and triangles (deterministic, no randomness)."""
  builder = _Builder()
  ids, copies, skin_tris, rows, band, ncol = _skin_grid(builder)
  stair = _staircase(ids, band, ncol)
  loop = _outline_loop()
  outline = builder.add(loop, SKIN, loop[:, 1] >= MOUTH_ROW * GRID, loop[:, 1] >= EYE_ROW * GRID)
  sv = builder.arrays()["sv"]
  band_tris = _zipper(stair, outline, sv)
  rm, re = MOUTH_ROW - rows[0], EYE_ROW - rows[0]
  mouth = np.arange(-MOUTH_CORNER, MOUTH_CORNER + 1) + ncol
  mouth_rims = np.stack([ids[rm, mouth], copies[rm, mouth]])
  eye_rims = []
  for lo, hi in ((-EYE_COLUMNS[1], -EYE_COLUMNS[0]), EYE_COLUMNS):
    cols = np.arange(lo, hi + 1) + ncol
    eye_rims.append(np.stack([ids[re, cols], copies[re, cols]]))
  tris = [skin_tris, band_tris] + _eyeballs(builder) + _mouth_interior(builder, mouth_rims, sv)
  arrays = builder.arrays()
  return FaceTopology(**arrays, triangles=np.concatenate(tris), mouth_rims=mouth_rims,
                      eye_rims=np.stack(eye_rims), outline=outline)
