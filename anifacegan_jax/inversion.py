"""One photo to an animatable face: GAN inversion of a trained run, saved as a model folder that
`sample` and `serve` animate (`python -m anifacegan_jax.invert`).

1. **Estimate.** The 3DMM identity / expression coefficients and the pose of the photo, read by
   the run's reconstruction network (config.recon), or taken from a Deep3DFaceRecon `.mat`.
2. **Invert.** Adam (cosine-decayed) on the identity code z_id, the appearance noise ε and the camera (pitch,
   yaw) so the render matches the photo: pixel MSE + `perceptual_weight` · a perceptual distance
   (channel-normalised FID Inception features at two depths, as LPIPS without its learned
   weights) + `latent_weight` · (‖ε‖² + ‖z_id − estimate‖²) / 80. z_exp stays at the estimate,
   so the expression can be driven afterwards; ψ = 1 (no truncation).
3. **Fine-tune** (optional, `finetune_steps`): pivotal tuning of the radiance network and its
   mapping network on the photo at the inverted latents. The manifold predictor and the
   deformation field are not tuned: the geometry and the expression control stay the model's.
4. **Save.** A model folder (`pretrained`) whose `identity.npz` fixes the identity: every seed of
   `sample` / `serve` renders the inverted face; config.psi = 1.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image, ImageDraw, UnidentifiedImageError

from anifacegan_jax import pretrained
from anifacegan_jax.experiment import Run
from anifacegan_jax.face3d import geometry, morphable
from anifacegan_jax.metrics import coefficients as cm
from anifacegan_jax.models.generator import render
from anifacegan_jax.sampling import to_uint8
from anifacegan_jax.types import Camera, Latents

PERCEPTUAL_LAYERS = ("Conv2d_4a_3x3", "Mixed_5d")  # 1/4 and 1/8 of the input: shapes, parts
PERCEPTUAL_SIZE = 128  # the Inception input (photo and render upsampled to it; >= 75)
CAMERA_SCALE = 0.1  # radians per unit of the optimised camera offsets (their Adam step)
MIN_PHOTO_SIZE = 32
SQUARE_TOLERANCE = 0.02


class PhotoError(ValueError):
  """A photo the inversion cannot use (not an image, not square, too small)."""


def load_photo(path: str | pathlib.Path, resolution: int) -> np.ndarray:
  """(R, R, 3) float32 in [0, 1]: the photo, resized (Lanczos) to the model's resolution.

  The photo must be a square crop around the face, framed as the training images (SynthFaces:
  the face filling the middle of the frame; FFHQ: Deep3DFaceRecon's alignment).
  """
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such image")
  try:
    with Image.open(path) as image:
      image.load()
      picture = image.convert("RGB")
  except (UnidentifiedImageError, OSError, ValueError) as error:
    raise PhotoError(f"{path}: not a readable image ({type(error).__name__}: {error}); "
                     "expected a PNG or JPEG photo of one face") from None
  width, height = picture.size
  if abs(width / height - 1.0) > SQUARE_TOLERANCE:
    raise PhotoError(f"{path}: {width}×{height} is not square: crop a square around the face, "
                     "framed as the training images (the face filling the middle of the frame, "
                     "e.g. `PIL.Image.crop((left, top, left + s, top + s))` with s the side), "
                     "and pass the crop")
  if min(width, height) < MIN_PHOTO_SIZE:
    raise PhotoError(f"{path}: {width}×{height} is too small; expected at least "
                     f"{MIN_PHOTO_SIZE}×{MIN_PHOTO_SIZE} pixels")
  picture = picture.resize((resolution, resolution), Image.LANCZOS)
  return np.asarray(picture, np.float32) / 255.0


@dataclasses.dataclass(frozen=True)
class Estimate:
  """The starting point: 3DMM coefficients and pose of the photo.

  Attributes:
    z_id: (80,) identity coefficients.
    z_exp: (64,) expression coefficients.
    pitch, yaw: camera polar angle and azimuth, radians (π/2, π/2 = level, frontal).
    source: where they came from (the network, or a file).
  """

  z_id: np.ndarray
  z_exp: np.ndarray
  pitch: float
  yaw: float
  source: str


def estimate_from_file(path: str | pathlib.Path) -> Estimate:
  """An `Estimate` from a Deep3DFaceRecon result `.mat` (id, exp, angle)."""
  coeffs, _ = morphable.read_coefficients_mat(path)
  pitch, yaw = geometry.angles_to_camera(np.asarray(coeffs.angle, np.float32))
  return Estimate(z_id=np.asarray(coeffs.id, np.float32), z_exp=np.asarray(coeffs.exp, np.float32),
                  pitch=float(pitch), yaw=float(yaw), source=str(path))


def estimate_from_photo(run: Run, photo: np.ndarray) -> Estimate:
  """An `Estimate` read from `photo` ((R, R, 3) in [0, 1]) by the run's reconstruction network."""
  from anifacegan_jax import experiment
  if not run.config.recon:
    raise ValueError("this model has no reconstruction network (config.recon) to read the "
                     "photo's coefficients: pass --coefficients=<Deep3DFaceRecon .mat of it>")
  net, variables = experiment.load_recon(run.config)
  out = np.asarray(net.apply(variables, jnp.asarray(photo)[None], train=False))[0]
  pitch, yaw = geometry.angles_to_camera(out[cm.ANGLE])
  return Estimate(z_id=out[cm.ID], z_exp=out[cm.EXP], pitch=float(pitch), yaw=float(yaw),
                  source="the reconstruction network")


@dataclasses.dataclass(frozen=True)
class Settings:
  """Inversion hyperparameters (`invert`'s flags).

  Attributes:
    steps: Adam steps on z_id, ε and the camera.
    lr: their initial learning rate (the camera's in units of CAMERA_SCALE radians), decayed
      along a cosine to a tenth.
    perceptual_weight: weight of the perceptual distance (0: pixels only, no Inception).
    latent_weight: weight of (‖ε‖² + ‖z_id − estimate‖²) / 80.
    finetune_steps: Adam steps of pivotal tuning (0: none).
    finetune_lr: its learning rate.
    resolution: render size (None: the run's training resolution).
  """

  steps: int = 200
  lr: float = 0.03
  perceptual_weight: float = 0.1
  latent_weight: float = 1e-3
  finetune_steps: int = 0
  finetune_lr: float = 1e-4
  resolution: int | None = None

  def validate(self) -> None:
    for name in ("steps", "finetune_steps"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name}={getattr(self, name)}: expected >= 0")
    for name in ("lr", "finetune_lr"):
      if not getattr(self, name) > 0:
        raise ValueError(f"{name}={getattr(self, name)}: expected a positive learning rate")
    for name in ("perceptual_weight", "latent_weight"):
      if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
        raise ValueError(f"{name}={getattr(self, name)}: expected a finite weight >= 0")
    if self.resolution is not None and not 16 <= self.resolution <= 512:
      raise ValueError(f"resolution={self.resolution}: expected a size in [16, 512]")


def perceptual_network():
  """(features, variables): `features(variables, images (B, R, R, 3) in [0, 1])` -> the
  channel-normalised activations of PERCEPTUAL_LAYERS of the FID Inception-v3."""
  from anifacegan_jax.metrics.fid_weights import load_fid_inception
  from anifacegan_jax.metrics.inception import resize_bilinear
  net, variables = load_fid_inception(preprocess="none")

  def features(variables, images):
    x = resize_bilinear(images, PERCEPTUAL_SIZE)
    _, state = net.apply(variables, x, capture_intermediates=lambda m, _: m.name in
                         PERCEPTUAL_LAYERS, mutable=["intermediates"])
    found = state["intermediates"]
    out = []
    for name in PERCEPTUAL_LAYERS:
      f = found[name]["__call__"][0]
      out.append(f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + 1e-8))
    return out

  return features, variables


@dataclasses.dataclass
class Inversion:
  """The result.

  Attributes:
    z_id, noise, z_exp: (80,), (80,), (64,) latents of the photo.
    pitch, yaw: its camera.
    params: the generator's parameters (fine-tuned, or the run's own).
    losses: per stage ('invert', 'finetune'), the total loss of every step.
    seconds: wall time per stage.
    images: uint8 (R, R, 3) renders: 'estimate', 'invert' and, with fine-tuning, 'finetune'.
  """

  z_id: np.ndarray
  noise: np.ndarray
  z_exp: np.ndarray
  pitch: float
  yaw: float
  params: dict
  losses: dict[str, list[float]]
  seconds: dict[str, float]
  images: dict[str, np.ndarray]


class _Objective:
  """The loss of a render against the photo, and jitted Adam steps on the latents and on the
  radiance networks' parameters."""

  def __init__(self, run: Run, photo: np.ndarray, estimate: Estimate, settings: Settings,
               resolution: int):
    self.generator, self.resolution = run.generator, resolution
    self.target = jnp.asarray(photo) * 2.0 - 1.0
    self.estimate = estimate
    self.settings = settings
    self.perceptual = perceptual_network() if settings.perceptual_weight > 0 else None
    self.chunk_size = int(run.config.chunk_size)
    if self.perceptual is not None:
      features, variables = self.perceptual
      self.target_features = features(variables, jnp.asarray(photo)[None])

  def render(self, params, latents: dict, remat: bool = False):
    camera = Camera(pitch=(self.estimate.pitch + CAMERA_SCALE * latents["camera"][0])[None],
                    yaw=(self.estimate.yaw + CAMERA_SCALE * latents["camera"][1])[None])
    codes = Latents(z_id=latents["z_id"][None], z_exp=jnp.asarray(self.estimate.z_exp)[None],
                    noise=latents["noise"][None])
    out = render(self.generator, {"params": params}, codes, camera, resolution=self.resolution,
                 chunk_size=self.chunk_size, lock_view=True, remat=remat)
    return out.image[0]

  def loss(self, params, latents):
    image = self.render(params, latents, remat=True)
    pixel = jnp.mean((image - self.target) ** 2)
    total = pixel
    if self.perceptual is not None:
      features, variables = self.perceptual
      mine = features(variables, ((jnp.clip(image, -1, 1) + 1) / 2)[None])
      distance = sum(jnp.mean(jnp.sum((a - b) ** 2, -1))
                     for a, b in zip(mine, self.target_features))
      total = total + self.settings.perceptual_weight * distance
    prior = (jnp.sum(latents["noise"] ** 2)
             + jnp.sum((latents["z_id"] - jnp.asarray(self.estimate.z_id)) ** 2)) / 80.0
    return total + self.settings.latent_weight * prior

  def latent_step(self, tx):
    @jax.jit
    def step(params, latents, opt_state):
      loss, grads = jax.value_and_grad(lambda l: self.loss(params, l))(latents)
      updates, opt_state = tx.update(grads, opt_state, latents)
      return optax.apply_updates(latents, updates), opt_state, loss
    return step

  def finetune_step(self, tx):
    @jax.jit
    def step(tuned, frozen, latents, opt_state):
      loss, grads = jax.value_and_grad(lambda t: self.loss({**frozen, **t}, latents))(tuned)
      updates, opt_state = tx.update(grads, opt_state, tuned)
      return optax.apply_updates(tuned, updates), opt_state, loss
    return step


FINETUNED = ("radiance", "mapping")  # the radiance network and its mapping network


def invert(run: Run, photo: np.ndarray, estimate: Estimate, settings: Settings = Settings(),
           progress: Callable[[str, int, int, dict], None] | None = None) -> Inversion:
  """Invert `photo` ((R, R, 3) in [0, 1], R the render size) into the run's generator.

  Args:
    run: the trained run (EMA generator).
    photo: the target.
    estimate: the starting coefficients and camera.
    settings: hyperparameters.
    progress: called as progress(stage, step, steps, losses) after every step, `losses` the
      curves so far ({stage: [loss per step]}).
  """
  settings.validate()
  resolution = settings.resolution or int(run.config.stages[0].resolution)
  if photo.shape != (resolution, resolution, 3):
    raise ValueError(f"photo of shape {photo.shape}; expected ({resolution}, {resolution}, 3)")
  objective = _Objective(run, photo, estimate, settings, resolution)
  latents = dict(z_id=jnp.asarray(estimate.z_id, jnp.float32), noise=jnp.zeros(80, jnp.float32),
                 camera=jnp.zeros(2, jnp.float32))
  params = run.ema_params
  draw = jax.jit(objective.render)
  images = {"estimate": to_uint8(draw(params, latents))}
  losses: dict[str, list[float]] = {"invert": []}
  seconds: dict[str, float] = {}

  start = time.perf_counter()
  # Cosine decay to a tenth: large steps find the face, small ones settle it.
  tx = optax.adam(optax.cosine_decay_schedule(settings.lr, max(settings.steps, 1), alpha=0.1))
  opt_state, step = tx.init(latents), objective.latent_step(tx)
  for i in range(settings.steps):
    latents, opt_state, loss = step(params, latents, opt_state)
    losses["invert"].append(_finite(float(loss), "invert", i))
    if progress:
      progress("invert", i + 1, settings.steps, losses)
  seconds["invert"] = time.perf_counter() - start
  images["invert"] = to_uint8(draw(params, latents))

  if settings.finetune_steps:
    start = time.perf_counter()
    tuned = {k: params[k] for k in FINETUNED}
    frozen = {k: v for k, v in params.items() if k not in FINETUNED}
    tx = optax.adam(settings.finetune_lr)
    opt_state, step = tx.init(tuned), objective.finetune_step(tx)
    losses["finetune"] = []
    for i in range(settings.finetune_steps):
      tuned, opt_state, loss = step(tuned, frozen, latents, opt_state)
      losses["finetune"].append(_finite(float(loss), "finetune", i))
      if progress:
        progress("finetune", i + 1, settings.finetune_steps, losses)
    params = {**frozen, **tuned}
    seconds["finetune"] = time.perf_counter() - start
    images["finetune"] = to_uint8(draw(params, latents))

  camera = np.asarray(latents["camera"]) * CAMERA_SCALE
  return Inversion(z_id=np.asarray(latents["z_id"]), noise=np.asarray(latents["noise"]),
                   z_exp=np.asarray(estimate.z_exp, np.float32),
                   pitch=estimate.pitch + float(camera[0]), yaw=estimate.yaw + float(camera[1]),
                   params=jax.device_get(params), losses=losses, seconds=seconds, images=images)


def _finite(loss: float, stage: str, step: int) -> float:
  if not math.isfinite(loss):
    raise ValueError(f"{stage}: the loss became {loss} at step {step}; lower the "
                             "learning rate")
  return loss


def loss_curve(losses: dict[str, list[float]], size: tuple[int, int] = (560, 280)) -> Image.Image:
  """A log-scale plot of each stage's loss per step (stages one after another), for the output
  folder (pillow only)."""
  width, height = size
  canvas = Image.new("RGB", size, "white")
  pen = ImageDraw.Draw(canvas)
  values = [v for series in losses.values() for v in series]
  if not values:
    return canvas
  low, high = math.log10(max(min(values), 1e-12)), math.log10(max(max(values), 1e-12))
  high = high if high > low else low + 1.0
  left, right, top, bottom = 60, width - 10, 20, height - 30
  pen.rectangle((left, top, right, bottom), outline="black")
  pen.text((4, top), f"{10 ** high:.3g}", fill="black")
  pen.text((4, bottom - 10), f"{10 ** low:.3g}", fill="black")
  total, offset = len(values), 0
  for series, color in zip(losses.values(), ("#1f5fbf", "#c0392b", "#27ae60")):
    points = [(left + (right - left) * (offset + i) / max(1, total - 1),
               bottom - (bottom - top) * (math.log10(max(v, 1e-12)) - low) / (high - low))
              for i, v in enumerate(series)]
    if len(points) > 1:
      pen.line(points, fill=color, width=2)
    offset += len(series)
  pen.text((left, bottom + 8), "steps (" + ", then ".join(
      f"{name} {len(series)}" for name, series in losses.items()) + "); loss, log scale",
      fill="black")
  return canvas


def save(run: Run, inversion: Inversion, photo: np.ndarray, out: str | pathlib.Path, *,
         estimate: Estimate, settings: Settings, image_path: str = "") -> pathlib.Path:
  """Write the inverted face as a model folder (`pretrained.write` + identity.npz) with its
  pictures: input.png, inversion.png (input | estimate | inversion [| fine-tuned]), loss.png and
  inversion.json (settings, final losses, times)."""
  out = pathlib.Path(out).expanduser()
  config = run.config.copy_and_resolve_references()
  with config.unlocked():
    config.psi = 1.0  # the inversion is not truncated
  pretrained.write(out, config, inversion.params, run.prior, step=run.step,
                   source=f"inversion of {image_path or 'a photo'}")
  pretrained.write_identity(out, inversion.z_id, inversion.noise, z_exp=inversion.z_exp,
                            pitch=inversion.pitch, yaw=inversion.yaw)
  Image.fromarray(np.round(photo * 255).astype(np.uint8)).save(out / "input.png")
  row = [np.round(photo * 255).astype(np.uint8)] + list(inversion.images.values())
  Image.fromarray(np.concatenate(row, axis=1)).save(out / "inversion.png")
  loss_curve(inversion.losses).save(out / "loss.png")
  record = dict(image=image_path, estimate=dict(source=estimate.source, pitch=estimate.pitch,
                                                yaw=estimate.yaw),
                camera=dict(pitch=inversion.pitch, yaw=inversion.yaw),
                settings=dataclasses.asdict(settings), seconds=inversion.seconds,
                final_loss={k: v[-1] for k, v in inversion.losses.items() if v},
                pictures=["input"] + list(inversion.images))
  (out / "inversion.json").write_text(json.dumps(record, indent=1) + "\n")
  return out
