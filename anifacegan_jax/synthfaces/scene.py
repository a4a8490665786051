"""Procedural scene pieces around a 3DMM face for the SynthFaces dataset (host-side numpy).

A 3DMM only models the front face mask. `head_mesh` adds what a portrait also shows: a closed head
shell behind the mask, hair, a neck and ears, sized from the face's vertices. `random_background`
draws smooth backgrounds. Everything is in GRAM world units (metres: the face ≈ 0.16 wide, centred
near the origin, looking down +z) and deterministic for a given `np.random.Generator`.

Meshes come back with *albedo* vertex colours; `shade` lights them (with the face) before `render`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from anifacegan_jax.synthfaces.shading import shade_vertices, vertex_normals
from anifacegan_jax.types import Mesh

PITCH_OFFSET = 0.1  # rad; model_to_world tilts the face by Rx(0.1) (geometry.model_to_world)

# Skin albedo from light to dark, and hair from black to blond (BFM-like linear albedo in [0, 1]).
_SKIN_TONES = np.array([[0.86, 0.69, 0.60], [0.78, 0.58, 0.47], [0.66, 0.46, 0.34],
                        [0.53, 0.36, 0.25], [0.39, 0.25, 0.17], [0.25, 0.16, 0.11]])
_HAIR_TONES = np.array([[0.04, 0.035, 0.03], [0.12, 0.08, 0.055], [0.26, 0.16, 0.09],
                        [0.42, 0.26, 0.13], [0.62, 0.47, 0.28], [0.80, 0.67, 0.45]])


# --------------------------------------------------------------------------------- mesh helpers


def _lerp_palette(palette: np.ndarray, t: float) -> np.ndarray:
  position = np.clip(t, 0.0, 1.0) * (len(palette) - 1)
  low = min(int(position), len(palette) - 2)
  return palette[low] + (position - low) * (palette[low + 1] - palette[low])


def random_skin_albedo(rng: np.random.Generator) -> np.ndarray:
  """(3,) a skin albedo drawn along a light→dark continuum."""
  return _lerp_palette(_SKIN_TONES, rng.random()) * rng.uniform(0.95, 1.05, 3)


def random_hair_albedo(rng: np.random.Generator) -> np.ndarray:
  """(3,) a hair albedo from black over browns and auburn to blond."""
  colour = _lerp_palette(_HAIR_TONES, rng.random() ** 1.3)  # darker hair is more common
  return np.clip(colour * rng.uniform(0.9, 1.1, 3), 0.0, 1.0)


def _grid_triangles(rows: int, cols: int, wrap: bool) -> np.ndarray:
  """(T, 3) two triangles per cell of a rows×cols vertex grid; columns wrap around if `wrap`.

  Rows whose vertices coincide (a pole) give zero-area triangles, which the rasteriser skips.
  """
  i, j = np.meshgrid(np.arange(rows - 1), np.arange(cols if wrap else cols - 1), indexing="ij")
  a = i * cols + j
  b = i * cols + (j + 1) % cols
  c, d = a + cols, b + cols
  return np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3),
                         np.stack([b, c, d], -1).reshape(-1, 3)]).astype(np.int32)


def _directions(u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """(..., 3) unit directions at azimuth u (0 = +z, the face; π/2 = +x), polar angle v from +y."""
  return np.stack([np.sin(v) * np.sin(u), np.cos(v), np.sin(v) * np.cos(u)], axis=-1)


def _angles(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Azimuth, polar angle and length of (..., 3) offsets from the head centre."""
  radius = np.linalg.norm(offsets, axis=-1)
  u = np.arctan2(offsets[..., 0], offsets[..., 2])
  v = np.arccos(np.clip(offsets[..., 1] / np.maximum(radius, 1e-12), -1.0, 1.0))
  return u, v, radius


def _smoothstep(x):
  x = np.clip(x, 0.0, 1.0)
  return x * x * (3.0 - 2.0 * x)


def _smooth_noise(rng: np.random.Generator, n: int, scale: float, sigma: float) -> np.ndarray:
  """(n,) periodic smooth noise with standard deviation ≈ `scale` (sigma in samples)."""
  noise = ndimage.gaussian_filter1d(rng.normal(size=n), sigma, mode="wrap")
  return noise * scale / max(noise.std(), 1e-12)


# ------------------------------------------------------------------------------------ the head


class _Head:
  """A closed 'octant ellipsoid' skull: semi-axes differ above/below and in front of/behind c.

  Fitted to the face: as wide as the face, its widest section at the height and depth of the face's
  lateral extremes (so the mask's side edges sit on it), the top above the forehead, the bottom at
  jaw level, and the front flattened until every face vertex is on or in front of it.
  """

  def __init__(self, face: np.ndarray, rng: np.random.Generator):
    lo, hi = face.min(0), face.max(0)
    width, height = hi[0] - lo[0], hi[1] - lo[1]
    self.face_height = height
    centre_x = 0.5 * (lo[0] + hi[0])
    lateral = face[np.abs(face[:, 0] - centre_x) > 0.45 * width]
    self.centre = np.array([centre_x, np.median(lateral[:, 1]), np.median(lateral[:, 2])])
    self.ax = 0.5 * width * rng.uniform(0.98, 1.04)
    self.ay_top = hi[1] + height * rng.uniform(0.2, 0.3) - self.centre[1]
    self.ay_bottom = self.centre[1] - (lo[1] + 0.2 * height)
    self.az_back = width * rng.uniform(0.68, 0.78)
    self.az_front = self._front_axis(face)

  def _front_axis(self, face: np.ndarray) -> float:
    """The largest front semi-axis (≤ back) that keeps the shell behind every face vertex."""
    d = face - self.centre
    dy = d[:, 1] / np.where(d[:, 1] > 0, self.ay_top, self.ay_bottom)
    rest = 1.0 - (d[:, 0] / self.ax) ** 2 - dy**2
    inner = (rest > 0.15) & (d[:, 2] > 0)  # near the rim the slot behind the mask is never seen
    if not np.any(inner):
      return 0.5 * self.az_back
    limit = np.min(d[inner, 2] / np.sqrt(rest[inner]))
    return float(np.clip(0.97 * limit, 0.2 * self.az_back, self.az_back))

  def radius(self, directions: np.ndarray) -> np.ndarray:
    """(...,) distance from the centre to the shell along unit `directions` (..., 3)."""
    ay = np.where(directions[..., 1] > 0, self.ay_top, self.ay_bottom)
    az = np.where(directions[..., 2] > 0, self.az_front, self.az_back)
    q = (directions[..., 0] / self.ax) ** 2 + (directions[..., 1] / ay) ** 2 + (
        directions[..., 2] / az) ** 2
    return 1.0 / np.sqrt(q)

  def shell(self, albedo: np.ndarray, rows: int = 24, cols: int = 48) -> Mesh:
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, cols, endpoint=False),
                       np.linspace(0, np.pi, rows), indexing="xy")
    d = _directions(u, v)
    vertices = self.centre + d * self.radius(d)[..., None]
    return Mesh(vertices.reshape(-1, 3), _grid_triangles(rows, cols, wrap=True),
                np.tile(albedo, (rows * cols, 1)), closed=True)


def _face_envelope(head: _Head, face: np.ndarray, bins_u: int = 96, bins_v: int = 48):
  """(bins_v, bins_u) head-centred radius of max(shell, face), dilated: hair lies outside it."""
  u, v, r = _angles(face - head.centre)
  iu = np.clip(((u + np.pi) / (2 * np.pi) * bins_u).astype(int), 0, bins_u - 1)
  iv = np.clip((v / np.pi * bins_v).astype(int), 0, bins_v - 1)
  grid = np.zeros((bins_v, bins_u))
  np.maximum.at(grid, (iv, iu), r)
  grid = ndimage.maximum_filter(grid, size=3, mode=("nearest", "wrap"))
  return ndimage.gaussian_filter(grid, 0.7, mode=("nearest", "wrap"))


def _lookup(grid: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  bins_v, bins_u = grid.shape
  coords = [v / np.pi * bins_v - 0.5, (u + np.pi) / (2 * np.pi) * bins_u - 0.5]
  return ndimage.map_coordinates(grid, coords, order=1, mode="nearest")


def _hairline(head: _Head, face: np.ndarray, bins: int):
  """(bins,) polar angle of the face's top edge per azimuth bin over [−π, π) (+inf where there is
  no face), and the azimuth half-width of the face."""
  u, v, _ = _angles(face - head.centre)
  iu = np.clip(((u + np.pi) / (2 * np.pi) * bins).astype(int), 0, bins - 1)
  top = np.full(bins, np.inf)
  np.minimum.at(top, iu, v)
  return ndimage.minimum_filter1d(top, 3, mode="wrap"), np.quantile(np.abs(u), 0.98)


@dataclasses.dataclass(frozen=True)
class _HairStyle:
  """Random hair style parameters (angles are polar angles from the head's top, radians)."""

  length: float  # how far hair hangs below the cap beside and behind the face, world units
  volume: float  # thickness over the scalp, world units
  fringe: float  # extra reach over the forehead (0: no fringe)
  sides: float  # where short hair ends at the sides (π/2 ≈ the top of the ears) ...
  back: float  # ... and at the back (the nape)


def _hair_style(rng: np.random.Generator, face_height: float) -> _HairStyle:
  length = rng.choice([0.0, 0.0, rng.uniform(0.2, 0.6), rng.uniform(0.6, 1.6)]) * face_height
  return _HairStyle(length=float(length), volume=rng.uniform(0.004, 0.022),
                    fringe=rng.uniform(0.22, 0.45) if rng.random() < 0.4 else 0.0,
                    sides=0.5 * np.pi + rng.uniform(-0.05, 0.35),
                    back=0.5 * np.pi + rng.uniform(0.35, 0.75))


def _hair_ends(style: _HairStyle, head: _Head, face: np.ndarray, u: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Per column (azimuth u): the polar angle where the cap ends and the length that hangs below.

  Over the face the cap ends just below the face's top edge (hiding that edge) or, with a fringe,
  near the brows; beside and behind the face it ends at the style's side/back angle and hangs.
  """
  top, face_u = _hairline(head, face, len(u))
  away = _smoothstep((np.abs(u) - face_u + 0.15) / 0.5)  # 0 over the face, 1 beside/behind it
  end = np.where(np.isfinite(top), top + 0.08, np.pi)
  fringe_width = _smoothstep((0.7 * face_u - np.abs(u)) / 0.3)
  end = end + style.fringe * fringe_width * (1.0 + 0.2 * rng.uniform(-1, 1, len(u)))
  outside = style.sides + (style.back - style.sides) * _smoothstep(
      (np.abs(u) - 0.5 * np.pi) / (0.5 * np.pi))
  end = (1 - away) * np.minimum(end, outside) + away * outside
  end = end + _smooth_noise(rng, len(u), 0.04, 1.0)  # ragged tips
  hang = away * style.length * (1.0 + 0.15 * _smooth_noise(rng, len(u), 1.0, 2.0))
  return end, np.maximum(hang, 0.0)


def _hair(head: _Head, face: np.ndarray, albedo: np.ndarray, rng: np.random.Generator,
          rows: int = 32, cols: int = 96) -> Mesh:
  """A hair cap over the top and back of the head with a random style (open: two-sided).

  Each grid column (azimuth u) runs from the crown down the head's envelope (shell or face,
  whichever is further out) to its end angle, then, for long hair, hangs straight down.
  """
  style = _hair_style(rng, head.face_height)
  u = np.linspace(-np.pi, np.pi, cols, endpoint=False)
  end, hang = _hair_ends(style, head, face, u, rng)
  mean_radius = float(np.mean([head.ax, head.ay_top, head.az_back]))
  thickness = style.volume * (1.0 + 0.3 * _smooth_noise(rng, cols, 1.0, 4.0))
  cap = mean_radius * end
  t = np.linspace(0.0, 1.0, rows)[:, None]
  arc = t * (cap + hang)
  v = np.minimum(arc / mean_radius, end)
  d = _directions(u[None, :], v)
  envelope = _lookup(_face_envelope(head, face), np.broadcast_to(u, v.shape), v)
  radius = np.maximum(head.radius(d), envelope)
  taper = _smoothstep((end - v) / 0.25) * 0.85 + 0.15  # thin at the hairline: no step to skin
  points = head.centre + d * (radius + thickness * taper)[..., None]
  drop = np.maximum(arc - cap, 0.0)
  flare = 1.0 + 0.25 * style.volume / 0.02 * drop / head.face_height
  points[..., 0] = head.centre[0] + (points[..., 0] - head.centre[0]) * flare
  points[..., 1] -= drop

  strands = 1.0 + 0.12 * _smooth_noise(rng, cols, 1.0, 0.7)
  roots = 0.75 + 0.25 * t  # darker near the scalp reads as depth
  colors = np.clip(albedo * (strands * roots)[..., None], 0.0, 1.0)
  return Mesh(points.reshape(-1, 3), _grid_triangles(rows, cols, wrap=True),
              colors.reshape(-1, 3))


def _neck(head: _Head, face: np.ndarray, albedo: np.ndarray, rng: np.random.Generator,
          rows: int = 6, cols: int = 32) -> Mesh:
  """An elliptic tube from inside the head down to well below the image, leaning slightly back."""
  top_y = head.centre[1] - 0.3 * head.ay_bottom
  bottom_y = face[:, 1].min() - 0.35
  y = np.linspace(top_y, bottom_y, rows)[:, None]
  angle = np.linspace(0, 2 * np.pi, cols, endpoint=False)[None, :]
  fall = (top_y - y) / (top_y - bottom_y)
  rx = head.ax * rng.uniform(0.62, 0.76) * (1.0 + 0.6 * fall**2)  # widens towards the shoulders
  rz = head.ax * rng.uniform(0.7, 0.82) * (1.0 + 0.2 * fall**2)
  z = head.centre[2] - 0.25 * head.az_back - 0.08 * fall
  points = np.stack(np.broadcast_arrays(head.centre[0] + rx * np.sin(angle), y,
                                        z + rz * np.cos(angle)), axis=-1)
  return Mesh(points.reshape(-1, 3), _grid_triangles(rows, cols, wrap=True),
              np.tile(albedo * 0.93, (rows * cols, 1)), closed=True)  # its ends are never seen


def _rotation(axis: int, angle: float) -> np.ndarray:
  """(3, 3) right-handed rotation about coordinate `axis`, for column vectors."""
  c, s = np.cos(angle), np.sin(angle)
  i, j = [k for k in range(3) if k != axis]
  m = np.eye(3)
  m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
  return m if axis != 1 else m.T  # about y the sign convention is z → x


def _ears(head: _Head, albedo: np.ndarray, rng: np.random.Generator, n: int = 12) -> Mesh:
  """Two flattened ellipsoids on the sides of the head at eye-to-nose height, behind the mask's
  side edge, tilted back and opening forwards like real auricles."""
  u, v = np.meshgrid(np.linspace(0, 2 * np.pi, n, endpoint=False), np.linspace(0, np.pi, n))
  size = head.face_height * rng.uniform(0.12, 0.15)  # semi-height: ears ≈ 0.27 face heights tall
  local = _directions(u, v).reshape(-1, 3) * np.array([0.15 * size, size, 0.6 * size])
  tilt, flare = rng.uniform(0.1, 0.3), rng.uniform(0.25, 0.5)
  height = head.centre[1] - 0.1 * head.ay_bottom
  meshes = []
  for side in (-1.0, 1.0):
    # Tilt the top back (about x), then swing the back edge outwards (about y).
    rotation = _rotation(1, -side * flare) @ _rotation(0, -tilt)
    anchor = np.array([head.centre[0] + side * (head.ax * 0.96 + 0.1 * size), height,
                       head.centre[2] - 0.15 * head.az_back])
    meshes.append(anchor + local @ rotation.T)
  triangles = _grid_triangles(n, n, wrap=True)
  return Mesh(np.concatenate(meshes), np.concatenate([triangles, triangles + n * n]),
              np.tile(albedo * np.array([1.0, 0.93, 0.93]), (2 * n * n, 1)), closed=True)


def head_mesh(face_vertices_world: np.ndarray, rng: np.random.Generator,
              skin_albedo: np.ndarray | None = None,
              hair_albedo: np.ndarray | None = None) -> list[Mesh]:
  """Head shell, neck, ears (most of the time) and hair around a face mask.

  Args:
    face_vertices_world: (N, 3) the face mask's vertices, world units (after model_to_world).
    rng: all random choices (hair style and colour, proportions, ears) come from it.
    skin_albedo: (3,) albedo of shell, neck and ears; match it to the face where they meet (e.g.
      the median albedo of the mask's rearmost vertices); a random skin tone if None.
    hair_albedo: (3,) hair albedo; random dark-to-blond if None.

  Returns:
    [shell, neck, (ears,) hair] with albedo vertex colours, world units.
  """
  face = np.asarray(face_vertices_world, np.float64)
  skin = random_skin_albedo(rng) if skin_albedo is None else np.asarray(skin_albedo, np.float64)
  hair = random_hair_albedo(rng) if hair_albedo is None else np.asarray(hair_albedo, np.float64)
  head = _Head(face, rng)
  meshes = [head.shell(skin), _neck(head, face, skin, rng)]
  if rng.random() < 0.85:
    meshes.append(_ears(head, skin, rng))
  meshes.append(_hair(head, face, hair, rng))
  return meshes


def shade(meshes: list[Mesh], gamma: np.ndarray, pitch_offset: float = PITCH_OFFSET) -> list[Mesh]:
  """Light albedo meshes with Deep3DFaceRecon SH `gamma` (27,) in the face's model frame.

  World normals are rotated back by Rx(pitch_offset)ᵀ into the model frame, so the light is fixed to
  the head (see `shading.shade_vertices`). Returns meshes with colours clipped to [0, 1].
  """
  c, s = np.cos(pitch_offset), np.sin(pitch_offset)
  rx = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
  out = []
  for mesh in meshes:
    normals = vertex_normals(mesh.vertices, mesh.faces) @ rx  # row-vector form of Rxᵀ·n
    colors = shade_vertices(mesh.colors, normals, gamma)
    out.append(dataclasses.replace(mesh, colors=np.clip(colors, 0.0, 1.0)))
  return out


# ------------------------------------------------------------------------------------ background


def _random_colour(rng: np.random.Generator) -> np.ndarray:
  """(3,) a muted colour: random grey level plus a random tint."""
  grey = rng.uniform(0.1, 0.9)
  return np.clip(grey + rng.normal(0.0, 0.12, 3), 0.0, 1.0)


def random_background(rng: np.random.Generator, resolution: int) -> np.ndarray:
  """(R, R, 3) float32 in [0, 1]: a solid colour, a linear or radial gradient, or blurred blobs."""
  y, x = np.meshgrid(np.linspace(-1, 1, resolution), np.linspace(-1, 1, resolution),
                     indexing="ij")
  kind = rng.integers(4)
  a, b = _random_colour(rng), _random_colour(rng)
  if kind == 0:
    image = np.broadcast_to(a, (resolution, resolution, 3))
  elif kind == 1:
    angle = rng.uniform(0, 2 * np.pi)
    t = _smoothstep(0.5 + 0.5 * (np.cos(angle) * x + np.sin(angle) * y) / np.sqrt(2))
    image = a + t[..., None] * (b - a)
  elif kind == 2:
    centre = rng.uniform(-1, 1, 2)
    t = np.clip(np.hypot(x - centre[0], y - centre[1]) / rng.uniform(1.0, 2.5), 0, 1)
    image = a + t[..., None] * (b - a)
  else:
    image = np.broadcast_to(a, (resolution, resolution, 3)).copy()
    for _ in range(rng.integers(3, 9)):
      centre, size = rng.uniform(-1.2, 1.2, 2), rng.uniform(0.15, 0.7)
      weight = np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * size**2))
      image += weight[..., None] * (_random_colour(rng) - image) * rng.uniform(0.4, 0.9)
  return np.clip(image, 0.0, 1.0).astype(np.float32)
