"""One frame of the viewer: its settings (`ViewState`, parsed and checked from a request) and
the renderer that draws it (`FrameRenderer`).

A state is an identity (seed of z_id and ε, truncation ψ), an expression z_exp (64,) (SynthFaces
blendshape weights in its first 24 columns, or Deep3DFaceRecon coefficients), a camera (yaw and
pitch offsets from frontal, radians), a view (RGB, depth or normals) and a resolution. Every
state of one resolution is drawn by the same compiled function: ψ, the expression and the camera
are traced values, so moving a slider never recompiles.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
import pathlib
import tempfile
import threading
import time
from typing import Mapping, Sequence

import jax
import numpy as np
from PIL import Image

from anifacegan_jax import animation, export

VIEWS = ("rgb", "depth", "normals")
NUM_EXP = animation.NUM_EXP
MAX_SEED = 2**31 - 1
PSI_RANGE = (0.0, 1.5)
YAW_RANGE = (-0.8, 0.8)  # radians from frontal (the training prior spans ≈ ±0.3)
PITCH_RANGE = (-0.5, 0.5)
EXP_LIMIT = 10.0  # |coefficient|; Deep3DFaceRecon's lie within ≈ ±3, SynthFaces' weights in [0, 1]
MAX_RECORD_FRAMES = 600
VIDEO_FORMATS = tuple(suffix[1:] for suffix in animation.VIDEO_SUFFIXES)
MESH_FORMATS = ("ply", "obj")
MAX_UPLOAD_BYTES = 16 << 20


class ViewError(ValueError):
  """A request the viewer cannot draw (a value out of range, a malformed upload): its message
  names the field and what was expected, and is shown on the page."""


@dataclasses.dataclass(frozen=True)
class ViewState:
  """Everything one frame depends on.

  Attributes:
    seed: identity seed: z_id from the run's prior and ε ~ N(0, I), as `sample` draws them.
    psi: truncation ψ of the radiance codes towards their mean.
    z_exp: (64,) expression coefficients.
    yaw: azimuth offset from frontal, radians (camera azimuth π/2 + yaw).
    pitch: polar offset from level, radians (camera polar angle π/2 + pitch).
    view: 'rgb', 'depth' (near bright) or 'normals' (camera space, normal-map colours).
    resolution: image size R.
  """

  seed: int = 0
  psi: float = 0.7
  z_exp: tuple[float, ...] = (0.0,) * NUM_EXP
  yaw: float = 0.0
  pitch: float = 0.0
  view: str = "rgb"
  resolution: int = 64

  def query(self) -> str:
    """The state as the query string `from_query` reads (trailing zero coefficients left out)."""
    exp = list(self.z_exp)
    while exp and exp[-1] == 0.0:
      exp.pop()
    return (f"seed={self.seed}&psi={self.psi:g}&yaw={self.yaw:g}&pitch={self.pitch:g}"
            f"&view={self.view}&res={self.resolution}&exp={','.join(f'{v:g}' for v in exp)}")


def _one(query: Mapping[str, Sequence[str]], name: str) -> str | None:
  values = query.get(name)
  if not values:
    return None
  if len(values) > 1:
    raise ViewError(f"{name}: given {len(values)} times; give it once")
  return values[0].strip()


def _number(query, name: str, default: float, bounds: tuple[float, float]) -> float:
  text = _one(query, name)
  if text is None or text == "":
    return default
  try:
    value = float(text)
  except ValueError:
    raise ViewError(f"{name}={text!r}: expected a number in [{bounds[0]:g}, {bounds[1]:g}]") from None
  if not (math.isfinite(value) and bounds[0] <= value <= bounds[1]):
    raise ViewError(f"{name}={text}: out of range; expected a number in "
                    f"[{bounds[0]:g}, {bounds[1]:g}]")
  return value


def _seed(query, default: int) -> int:
  text = _one(query, "seed")
  if text is None or text == "":
    return default
  if not text.isdigit() or int(text) > MAX_SEED:
    raise ViewError(f"seed={text!r}: unknown identity; an identity is a whole number in "
                    f"[0, {MAX_SEED}]")
  return int(text)


def parse_expression(text: str, names: Sequence[str]) -> tuple[float, ...]:
  """(64,) coefficients from 'v0,v1,...' (up to 64 numbers, the rest 0) or, for a SynthFaces
  run (`names` non-empty), blendshape weights 'jaw_open=0.5,smile_left=1'."""
  text = text.strip()
  if not text:
    return (0.0,) * NUM_EXP
  parts = [p.strip() for p in text.split(",")]
  if any("=" in p for p in parts) or not _is_number(parts[0]):
    if not names:
      raise ViewError("exp: blendshape names belong to SynthFaces' procedural model; this model "
                      "takes 64 Deep3DFaceRecon coefficients (or an uploaded .mat / .npz)")
    values = [0.0] * NUM_EXP
    for part in parts:
      name, _, weight = part.partition("=")
      if name not in names:
        raise ViewError(f"exp: unknown blendshape {name!r}; this model's are {', '.join(names)}")
      try:
        values[names.index(name)] = float(weight) if weight else 1.0
      except ValueError:
        raise ViewError(f"exp: {part!r}: the weight after '=' must be a number") from None
    return _check_coefficients(values)
  if len(parts) > NUM_EXP:
    raise ViewError(f"exp: {len(parts)} coefficients; expected at most {NUM_EXP}")
  try:
    values = [float(p) if p else 0.0 for p in parts]
  except ValueError:
    raise ViewError(f"exp={text[:60]!r}: expected up to {NUM_EXP} comma-separated numbers") from None
  return _check_coefficients(values + [0.0] * (NUM_EXP - len(values)))


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return text == ""
  return True


def _check_coefficients(values: list[float]) -> tuple[float, ...]:
  bad = [i for i, v in enumerate(values) if not (math.isfinite(v) and abs(v) <= EXP_LIMIT)]
  if bad:
    raise ViewError(f"exp: coefficient {bad[0]} is {values[bad[0]]}; expected finite numbers "
                    f"within ±{EXP_LIMIT:g}")
  return tuple(values)


def parse_state(query: Mapping[str, Sequence[str]], defaults: ViewState,
                resolutions: Sequence[int], names: Sequence[str] = ()) -> ViewState:
  """A checked `ViewState` from a parsed query string (`urllib.parse.parse_qs`); fields not
  given keep `defaults`'.

  Raises:
    ViewError naming the field and what was expected.
  """
  view = _one(query, "view") or defaults.view
  if view not in VIEWS:
    raise ViewError(f"view={view!r}: expected one of {', '.join(VIEWS)}")
  res_text = _one(query, "res")
  resolution = defaults.resolution
  if res_text:
    if not res_text.isdigit() or int(res_text) not in resolutions:
      raise ViewError(f"res={res_text!r}: this viewer renders "
                      f"{', '.join(str(r) for r in resolutions)}")
    resolution = int(res_text)
  exp_text = _one(query, "exp")
  return ViewState(
      seed=_seed(query, defaults.seed), psi=_number(query, "psi", defaults.psi, PSI_RANGE),
      z_exp=defaults.z_exp if exp_text is None else parse_expression(exp_text, names),
      yaw=_number(query, "yaw", defaults.yaw, YAW_RANGE),
      pitch=_number(query, "pitch", defaults.pitch, PITCH_RANGE), view=view,
      resolution=resolution)


def read_uploaded_expression(data: bytes, filename: str) -> np.ndarray:
  """(64,) z_exp of an uploaded Deep3DFaceRecon .mat or an .npz with 'exp' (64,) / (1, 64).

  Raises:
    ViewError naming the file and what was expected (never runs code from it: no pickle).
  """
  suffix = pathlib.PurePath(filename or "").suffix.lower()
  if suffix not in (".mat", ".npz"):
    raise ViewError(f"{filename or 'upload'}: expected a Deep3DFaceRecon .mat or an .npz with "
                    "'exp' (64,)")
  if not data:
    raise ViewError(f"{filename}: the file is empty")
  if len(data) > MAX_UPLOAD_BYTES:
    raise ViewError(f"{filename}: {len(data)} bytes; the limit is {MAX_UPLOAD_BYTES >> 20} MiB")
  with tempfile.TemporaryDirectory() as folder:
    path = pathlib.Path(folder) / f"upload{suffix}"
    path.write_bytes(data)
    try:
      exp = animation.load_expression(str(path))
    except (ValueError, OSError) as error:
      raise ViewError(str(error).replace(str(path), filename)) from None
    except Exception as error:  # a reader's own failure on a malformed file
      raise ViewError(f"{filename}: not a readable {suffix} file ({type(error).__name__})") from None
  exp = np.asarray(exp, np.float32)
  if np.abs(exp).max(initial=0.0) > EXP_LIMIT:
    raise ViewError(f"{filename}: expression coefficients beyond ±{EXP_LIMIT:g}")
  return exp


class FrameRenderer:
  """Draws `ViewState`s of a run (`experiment.Run`) with its EMA generator; thread-safe (one
  render at a time).

  Attributes:
    run: the run.
    names: the SynthFaces blendshape names of z_exp's first columns (empty for a run that
      imitates a real 3DMM: its expressions are Deep3DFaceRecon coefficients).
    name_minimum: each name's smallest weight on the page: 0 for one-sided shapes (a smile),
      −1 for two-sided ones (lowered or raised brows); the largest is 1.
    resolutions: the image sizes it renders.
    defaults: the state of a request that gives nothing.
  """

  def __init__(self, run, *, resolutions: Sequence[int] | None = None,
               resolution: int | None = None, psi: float | None = None, seed: int = 0,
               chunk_size: int | None = None, identity_cache: int = 64):
    config = run.config
    resolution = int(resolution or config.stages[0].resolution)
    self.resolutions = tuple(sorted({int(r) for r in (resolutions or (resolution,))}
                                    | {resolution}))
    if min(self.resolutions) < 2:
      raise ValueError(f"resolutions must be >= 2, got {self.resolutions}")
    psi = float(config.psi if psi is None else psi)
    if not PSI_RANGE[0] <= psi <= PSI_RANGE[1]:
      raise ValueError(f"psi={psi}: expected a value in [{PSI_RANGE[0]}, {PSI_RANGE[1]}]")
    if not 0 <= seed <= MAX_SEED:
      raise ValueError(f"seed={seed}: expected a whole number in [0, {MAX_SEED}]")
    self.run = run
    if config.face_model:
      self.names: tuple[str, ...] = ()
      self.name_minimum: tuple[float, ...] = ()
    else:
      from anifacegan_jax.synthfaces import procedural_expressions as shapes
      self.names = tuple(shapes.EXPRESSION_NAMES)
      self.name_minimum = tuple(0.0 if one_sided else -1.0 for one_sided in shapes.ONE_SIDED)
    self.defaults = ViewState(seed=seed, psi=psi, resolution=resolution)
    self.chunk_size = int(config.chunk_size if chunk_size is None else chunk_size)
    self._mean = animation.truncation_centre(run, jax.random.fold_in(jax.random.key(0), 1))
    self._identities: collections.OrderedDict[int, tuple] = collections.OrderedDict()
    self._identity_cache = identity_cache
    self._lock = threading.Lock()

  def parse(self, query: Mapping[str, Sequence[str]]) -> ViewState:
    """`parse_state` with this renderer's defaults, resolutions and names."""
    return parse_state(query, self.defaults, self.resolutions, self.names)

  def _identity(self, seed: int) -> tuple:
    if self.run.identity is not None:  # one face (an inversion): every seed shows it
      return self.run.identity
    if seed not in self._identities:
      self._identities[seed] = animation.identity_latents(self.run.prior, seed)
      while len(self._identities) > self._identity_cache:
        self._identities.popitem(last=False)
    self._identities.move_to_end(seed)
    return self._identities[seed]

  def frame(self, state: ViewState) -> animation.Frames:
    """The frame of `state`: Frames with one image (1, R, R, 3) uint8, depth and mask."""
    if state.resolution not in self.resolutions:
      raise ViewError(f"res={state.resolution}: this viewer renders "
                      f"{', '.join(str(r) for r in self.resolutions)}")
    with self._lock:
      z_id, noise = self._identity(state.seed)
      image, depth, mask = jax.device_get(animation.draw_frames(
          self.run.generator, self.run.ema_params, z_id, noise,
          np.asarray(state.z_exp, np.float32)[None], np.full(1, np.pi / 2 + state.pitch, np.float32),
          np.full(1, np.pi / 2 + state.yaw, np.float32), self._mean, np.float32(state.psi),
          resolution=state.resolution, chunk_size=self.chunk_size))
    return animation.Frames(images=image, depth=depth, mask=mask)

  def picture(self, state: ViewState, frame: animation.Frames | None = None) -> np.ndarray:
    """uint8 (R, R, 3) picture of `state`'s view."""
    frame = frame or self.frame(state)
    generator = self.run.generator
    if state.view == "rgb":
      return frame.images[0]
    if state.view == "depth":
      gray = export.depth_preview(frame.depth[0], frame.mask[0], generator.near, generator.far)
      return np.repeat(gray[..., None], 3, axis=-1)
    return export.normal_map(frame.depth[0], frame.mask[0], generator.fov_degrees)

  def png(self, state: ViewState) -> bytes:
    """The picture of `state` as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(self.picture(state)).save(buffer, format="PNG")
    return buffer.getvalue()

  def mesh(self, state: ViewState, fmt: str = "ply") -> bytes:
    """The visible surface of `state`'s frame (`export.depth_mesh`, RGB colours) as a PLY
    (binary) or OBJ file's bytes."""
    if fmt not in MESH_FORMATS:
      raise ViewError(f"format={fmt!r}: a mesh is one of {', '.join(MESH_FORMATS)}")
    frame = self.frame(state)
    generator = self.run.generator
    mesh = export.depth_mesh(frame.depth[0], np.pi / 2 + state.pitch, np.pi / 2 + state.yaw,
                             mask=frame.mask[0], colors=frame.images[0],
                             fov_degrees=generator.fov_degrees, radius=generator.camera_radius)
    with tempfile.TemporaryDirectory() as folder:
      path = export.write_mesh(pathlib.Path(folder) / f"mesh.{fmt}", mesh)
      return path.read_bytes()

  def record(self, states: Sequence[ViewState], out_dir: str | pathlib.Path, *,
             fmt: str = "gif", fps: float = 25.0) -> pathlib.Path:
    """Render `states` (each its own view, all at the first's resolution) and write them as a
    video `out_dir`/record_<time>.<fmt>; returns its path."""
    if not states:
      raise ViewError("record: no frames; move a control while recording")
    if len(states) > MAX_RECORD_FRAMES:
      raise ViewError(f"record: {len(states)} frames; the limit is {MAX_RECORD_FRAMES}")
    if fmt not in VIDEO_FORMATS:
      raise ViewError(f"format={fmt!r}: a video is one of {', '.join(VIDEO_FORMATS)}")
    if not (math.isfinite(fps) and 1 <= fps <= 60):
      raise ViewError(f"fps={fps}: expected a number in [1, 60]")
    size = states[0].resolution
    pictures = np.stack([self.picture(dataclasses.replace(s, resolution=size)) for s in states])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = pathlib.Path(out_dir) / f"record_{stamp}.{fmt}"
    suffix = 1
    while path.exists():
      path = path.with_name(f"record_{stamp}_{suffix}.{fmt}")
      suffix += 1
    try:
      return animation.write_video(path, pictures, fps)
    except ValueError as error:  # e.g. mp4 without imageio-ffmpeg
      raise ViewError(str(error)) from None
