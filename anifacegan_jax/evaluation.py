"""Evaluation of a trained run: FID / KID against its dataset and expression/pose control.

Protocol (AniFaceGAN, SPEC §5.4): N generated images of the EMA generator at the training
resolution with ψ = 1, view direction locked, latents from the run's prior and cameras from its
pose prior (image i from `fold_in(key(seed), i)`, whatever the batch size), against the first N
images of the dataset's training split (each mirrored with probability 1/2, a fixed draw);
both sets quantised to uint8 as image files would be, then the FID Inception's pool3 features
(`metrics.inception`, torch-fidelity's preprocessing by default). FID and KID (unbiased, 100
subsets of 1,000: torch-fidelity's settings) come from `metrics.fid`. Real features are cached in
`<workdir>/eval/` per dataset, size, count and preprocessing.

`control` renders images, reads them with the reconstruction network and compares with the input
codes (`metrics.control.control_errors`). `ds` is DiscoFaceGAN's disentanglement score of
expression and pose (`metrics.disentanglement`), read by the same network. `consistency` renders
each face from two yaws and reports the photometric error of warping one view into the other
with the generated depth and, with a reconstruction network, the landmark reprojection error in
pixels (`metrics.consistency`). `geometry` reports the health of the radiance manifolds on generated
images: the fraction of ray-manifold crossings found and the manifolds' mean opacity (1 − the
background plane's weight); both at 0 mean a generator that paints its faces on the background
plane (a 2D billboard whose control and consistency numbers say nothing about 3D).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from typing import Any, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from anifacegan_jax.experiment import Run
from anifacegan_jax.face3d.morphable import MorphableArrays
from anifacegan_jax.metrics import fid as fid_lib
from anifacegan_jax.metrics import inception
from anifacegan_jax.metrics import rendered
from anifacegan_jax.models.generator import manifold_health
from anifacegan_jax.models.priors import sample_latents
from anifacegan_jax.models.recon import ReconNet
from anifacegan_jax.rendering.camera import sample_camera
from anifacegan_jax.sampling import to_uint8
from anifacegan_jax.types import PyTree

METRICS = ("fid", "kid", "control", "ds", "consistency", "geometry")
NEEDS_RECON = ("control", "ds")


@dataclasses.dataclass(frozen=True)
class Settings:
  """What `evaluate` computes and how.

  Attributes:
    metrics: names from METRICS.
    num_fake: generated images for FID/KID (paper: 5,000).
    num_real: dataset images for FID/KID (paper: 5,000).
    resolution: image size of every metric; None = the training resolution (paper: 128), and
      for control / ds / consistency the run's config.eval_resolution when set.
    batch_size: images rendered per device call.
    fid_weights: FID Inception weights file; None = `fid_weights.find_fid_weights()`.
    preprocess: the Inception's input preprocessing ('torch_fidelity', 'pytorch_fid').
    kid_subsets, kid_subset_size: KID's subsets (clipped to the smaller set).
    control_num: images for the control metrics.
    ds_anchors, ds_variations: DS anchors K and variations M per anchor (DiscoFaceGAN: 1,000 ×
      10).
    consistency_num: faces rendered from both views for `consistency`.
    consistency_yaws: the two views' yaw offsets from frontal (radians).
    geometry_num: images for `geometry`.
    recon: reconstruction network for control / ds / consistency ('' = the run's config.recon).
    seed: fixes latents, cameras and the real images' flips.
  """

  metrics: tuple[str, ...] = ("fid", "kid")
  num_fake: int = 5000
  num_real: int = 5000
  resolution: int | None = None
  batch_size: int = 16
  fid_weights: str | None = None
  preprocess: str = "torch_fidelity"
  kid_subsets: int = 100
  kid_subset_size: int = 1000
  control_num: int = 256
  ds_anchors: int = 100
  ds_variations: int = 10
  consistency_num: int = 64
  consistency_yaws: tuple[float, float] = (-0.25, 0.25)
  geometry_num: int = 64
  recon: str = ""
  seed: int = 0

  def validate(self) -> None:
    unknown = [m for m in self.metrics if m not in METRICS]
    if unknown or not self.metrics:
      raise ValueError(f"metrics {unknown or '(none)'}: expected a comma-separated subset of "
                       f"{', '.join(METRICS)}")
    if self.preprocess not in ("torch_fidelity", "pytorch_fid"):
      raise ValueError(f"preprocess={self.preprocess!r}: expected 'torch_fidelity' or "
                       "'pytorch_fid' (FID needs the 299² resize)")
    for name in ("num_fake", "num_real", "batch_size", "kid_subsets", "kid_subset_size",
                 "control_num", "ds_anchors", "ds_variations", "consistency_num",
                 "geometry_num"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"{name}={getattr(self, name)}: expected a positive count")
    if {"fid", "kid"} & set(self.metrics) and min(self.num_fake, self.num_real) < 2:
      raise ValueError("FID/KID need at least 2 real and 2 generated images")
    if "ds" in self.metrics and min(self.ds_anchors, self.ds_variations) < 2:
      raise ValueError("ds needs at least 2 anchors and 2 variations per anchor")
    if len(self.consistency_yaws) != 2 or self.consistency_yaws[0] == self.consistency_yaws[1]:
      raise ValueError(f"consistency_yaws={self.consistency_yaws}: expected two different yaws")


def protocol_draw(run: Run):
  """key -> (Latents, Camera) of one generated image (unbatched): the run's prior and pose prior."""
  cam = run.config.camera

  def one(key):
    key_latents, key_camera = jax.random.split(key)
    latents = jax.tree_util.tree_map(lambda x: x[0], sample_latents(run.prior, key_latents, 1))
    camera = jax.tree_util.tree_map(lambda x: x[0], sample_camera(
        key_camera, 1, yaw_std=cam.yaw_std, pitch_std=cam.pitch_std, clamp=cam.clamp))
    return latents, camera
  return one


def protocol_latents(run: Run, num: int, seed: int = 0):
  """(Latents, Camera) of the protocol's images 0 .. num-1: image i from fold_in(key(seed), i)."""
  root = jax.random.key(seed)
  keys = jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(num))
  return jax.vmap(protocol_draw(run))(keys)


def _rendered(run: Run, latents, camera, read, *, resolution: int, batch_size: int):
  """`metrics.rendered.in_batches` of the run's EMA generator."""
  return rendered.in_batches(run.generator, {"params": run.ema_params}, latents, camera, read,
                             resolution=resolution, chunk_size=int(run.config.chunk_size),
                             batch_size=batch_size)


def gather_run(run: Run, latents, camera, read, *, resolution: int, batch_size: int):
  """`metrics.rendered.gather` of the run's EMA generator (evaluation protocol: view locked) over
  (N,) latents and cameras, reduced per batch by `read`: {name: (N, ...)}."""
  return rendered.gather(run.generator, {"params": run.ema_params}, latents, camera, read,
                         resolution=resolution, chunk_size=int(run.config.chunk_size),
                         batch_size=batch_size)


def generated_images(run: Run, num: int, *, resolution: int, batch_size: int = 16,
                     seed: int = 0) -> Iterator[np.ndarray]:
  """uint8 batches (≤ batch_size·devices, R, R, 3) of `num` images rendered with ψ = 1.

  Image i draws its latents and camera from `fold_in(key(seed), i)`: the set does not depend on
  the batch size or the number of devices.
  """
  latents, camera = protocol_latents(run, num, seed)
  for part in _rendered(run, latents, camera, lambda out, *_: {"image": out.image},
                        resolution=resolution, batch_size=batch_size):
    yield to_uint8(part["image"])


def real_images(config, num: int, *, resolution: int, seed: int = 0) -> np.ndarray:
  """uint8 (num, R, R, 3): the first `num` training images of config.dataset at `resolution`
  (area resampling, as training), each mirrored with probability 1/2 (fixed by `seed`)."""
  import tensorflow_datasets as tfds  # here: the metrics themselves need no TensorFlow
  from anifacegan_jax.data import datasets, input_pipeline

  builder = datasets.make_builder(config)
  available = builder.info.splits["train"].num_examples
  if available < num:
    raise ValueError(f"config.dataset ({config.dataset.name}:{config.dataset.config}) has "
                     f"{available} training images; {num} real images were asked for "
                     "(lower --num_real)")
  ds = builder.as_dataset(split="train", shuffle_files=False).take(num)
  ds = ds.map(lambda ex: input_pipeline.preprocess(ex, resolution)["image"]).batch(256)
  images = to_uint8(np.concatenate(list(tfds.as_numpy(ds))))
  flips = np.random.default_rng(seed).random(num) < 0.5
  images[flips] = images[flips, :, ::-1]
  return images


def _real_cache_path(workdir: pathlib.Path, config, settings: Settings, resolution: int,
                     variables) -> pathlib.Path:
  """Keyed by the dataset, the protocol and the network's weights (a checksum of its stem)."""
  data = config.dataset
  stem = np.asarray(variables["params"]["Conv2d_1a_3x3"]["conv"]["kernel"], np.float64)
  key = json.dumps(dict(name=data.name, config=data.config, num_train=int(data.num_train),
                        data_dir=data.data_dir, manual_dir=data.manual_dir,
                        num=settings.num_real, resolution=resolution,
                        preprocess=settings.preprocess, seed=settings.seed,
                        weights=f"{stem.sum():.10e}/{np.abs(stem).sum():.10e}"), sort_keys=True)
  digest = hashlib.sha1(key.encode()).hexdigest()[:10]
  return workdir / "eval" / f"real_{data.name}_{data.config}_{resolution}_{settings.num_real}_{digest}.npz"


def real_features(workdir: pathlib.Path, config, settings: Settings, resolution: int,
                  variables) -> np.ndarray:
  """(num_real, 2048) Inception features of the real set, from the cache when present."""
  path = _real_cache_path(workdir, config, settings, resolution, variables)
  if path.is_file():
    try:
      with np.load(path) as f:
        cached = f["features"]
      if cached.shape == (settings.num_real, inception.FEATURE_DIM) and np.all(np.isfinite(cached)):
        return cached.astype(np.float64)
    except (OSError, ValueError, KeyError):
      pass  # damaged cache: recompute and overwrite it
  images = real_images(config, settings.num_real, resolution=resolution, seed=settings.seed)
  feats = inception.features(variables, images, preprocess=settings.preprocess)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp.npz")
  np.savez(tmp, features=feats.astype(np.float32))
  tmp.replace(path)
  return feats


def fake_features(run: Run, settings: Settings, resolution: int, variables) -> np.ndarray:
  """(num_fake, 2048) Inception features of generated images."""
  parts = [inception.features(variables, images, preprocess=settings.preprocess)
           for images in generated_images(run, settings.num_fake, resolution=resolution,
                                          batch_size=settings.batch_size, seed=settings.seed)]
  return np.concatenate(parts)


class Reader(NamedTuple):
  """What reads generated images: the reconstruction network, its variables and the 3DMM of its
  coefficients."""

  net: ReconNet
  variables: PyTree
  face: MorphableArrays


def load_reader(run: Run, settings: Settings, required: bool = True) -> Reader | None:
  """The `Reader` of --recon or the run's config.recon; None if neither is set and not
  `required`."""
  from anifacegan_jax import experiment

  config = run.config.copy_and_resolve_references()
  if settings.recon:
    with config.unlocked():
      config.recon = settings.recon
  if not config.recon:
    if not required:
      return None
    raise ValueError(f"the metrics {', '.join(NEEDS_RECON)} need a reconstruction network: pass "
                     "--recon=<a train_recon workdir or Deep3DFaceRecon epoch_20.pth> (train one "
                     "with `python -m anifacegan_jax.train_recon --config=configs/recon.py`)")
  net, variables = experiment.load_recon(config)
  return Reader(net, variables, experiment.load_face_model(config))


def control(run: Run, settings: Settings, resolution: int, reader: Reader) -> dict[str, float]:
  """`metrics.control.control_errors` of `settings.control_num` images."""
  from anifacegan_jax.metrics.control import control_errors

  batch = min(settings.batch_size, settings.control_num)
  num = settings.control_num - settings.control_num % batch
  cam = run.config.camera
  return control_errors(run.generator, {"params": run.ema_params}, run.prior, reader.net,
                        reader.variables, reader.face, key=jax.random.key(settings.seed + 1),
                        num=num, batch_size=batch,
                        resolution=resolution, chunk_size=int(run.config.chunk_size),
                        yaw_std=cam.yaw_std, pitch_std=cam.pitch_std, clamp=cam.clamp)


def _read_views(reader: Reader | None = None):
  """read(out, ...) -> image, depth and, with a reader, the coefficients its network reads."""
  def read(out, latents, camera):
    values = {"image": out.image, "depth": out.depth}
    if reader is not None:
      values["coefficients"] = reader.net.apply(reader.variables, rendered.image_01(out.image),
                                                train=False)
    return values
  return read


def disentanglement(run: Run, settings: Settings, resolution: int,
                    reader: Reader) -> dict[str, float]:
  """DS of expression and pose (`metrics.disentanglement`)."""
  from anifacegan_jax.metrics import disentanglement as ds

  cam, read = run.config.camera, _read_views(reader)
  key, preds = jax.random.key(settings.seed + 2), {}
  for i, factor in enumerate(("exp", "pose")):
    latents, camera = ds.variations(run.prior, jax.random.fold_in(key, i), factor,
                                    settings.ds_anchors, settings.ds_variations,
                                    yaw_std=cam.yaw_std, pitch_std=cam.pitch_std, clamp=cam.clamp)
    coefficients = gather_run(run, latents, camera, read, resolution=resolution,
                              batch_size=settings.batch_size)["coefficients"]
    preds[factor] = coefficients.reshape(settings.ds_anchors, settings.ds_variations, -1)
  sigma = ds.normalized_variances(preds)
  results = {f"ds/{f}": v for f, v in ds.scores(sigma).items()}
  results.update({f"ds/sigma_{f}_{g}": v for f, row in sigma.items() for g, v in row.items()})
  return results


def consistency(run: Run, settings: Settings, resolution: int,
                reader: Reader | None) -> dict[str, float]:
  """Warp error (and landmark reprojection with a network) between two yaws of each face."""
  from anifacegan_jax.metrics import consistency as cons
  from anifacegan_jax.types import Camera

  num = settings.consistency_num
  latents = sample_latents(run.prior, jax.random.key(settings.seed + 3), num)
  views, read = [], _read_views(reader)
  for yaw in settings.consistency_yaws:
    camera = Camera(pitch=jnp.full((num,), jnp.pi / 2), yaw=jnp.full((num,), jnp.pi / 2 + yaw))
    view = gather_run(run, latents, camera, read, resolution=resolution,
                      batch_size=settings.batch_size)
    views.append((camera, view["image"], view["depth"], view.get("coefficients")))
  (cam_a, image_a, depth_a, pred_a), (cam_b, image_b, depth_b, pred_b) = views
  geometry = dict(fov_degrees=run.generator.fov_degrees, radius=run.generator.camera_radius)
  error, kept = cons.warp_error(image_a, depth_a, cam_a, image_b, depth_b, cam_b, **geometry)
  results = {"consistency/warp_error": float(np.mean(error)),
             "consistency/warp_kept": float(np.mean(kept))}
  if reader is not None:
    face = reader.face
    results["consistency/landmark_reprojection_px"] = float(np.mean(
        cons.landmark_reprojection_px(face, pred_a, pred_b, depth_a, cam_a, cam_b, **geometry)))
  return results


def geometry(run: Run, settings: Settings, resolution: int) -> dict[str, float]:
  """Crossings found and manifold opacity of `settings.geometry_num` generated images (prior
  latents, pose prior), means over rays."""
  cam = run.config.camera
  key_latents, key_camera = jax.random.split(jax.random.key(settings.seed + 4))
  latents = sample_latents(run.prior, key_latents, settings.geometry_num)
  camera = sample_camera(key_camera, settings.geometry_num, yaw_std=cam.yaw_std,
                         pitch_std=cam.pitch_std, clamp=cam.clamp)

  def health(out, *_):
    crossings, foreground = manifold_health(out)
    return {"crossings": crossings, "foreground": foreground}

  values = gather_run(run, latents, camera, health, resolution=resolution,
                      batch_size=settings.batch_size)
  return {"geometry/crossings": float(np.mean(values["crossings"])),
          "geometry/foreground": float(np.mean(values["foreground"]))}


def evaluate(run: Run, workdir: str | pathlib.Path, settings: Settings) -> dict[str, Any]:
  """The metrics of `settings` for `run` as a flat dict of floats (plus counts and settings)."""
  settings.validate()
  workdir = pathlib.Path(workdir)
  resolution = int(settings.resolution or run.config.stages[0].resolution)
  # What the reconstruction network reads: the config's eval_resolution when it asks for more
  # pixels than a low-resolution training run has (the network's floor, BENCHMARKS.md).
  read_resolution = int(settings.resolution or run.config.get("eval_resolution", 0) or resolution)
  results: dict[str, Any] = {}
  if {"fid", "kid"} & set(settings.metrics):
    from anifacegan_jax.metrics import fid_weights
    _, variables = fid_weights.load_fid_inception(settings.fid_weights,
                                                  preprocess=settings.preprocess)
    real = real_features(workdir, run.config, settings, resolution, variables)
    fake = fake_features(run, settings, resolution, variables)
    if "fid" in settings.metrics:
      results["fid"] = fid_lib.fid_from_features(real, fake)
    if "kid" in settings.metrics:
      mean, std = fid_lib.kid(real, fake, num_subsets=settings.kid_subsets,
                              subset_size=settings.kid_subset_size, seed=settings.seed)
      results["kid"], results["kid_std"] = mean, std
  reader = None
  if {"control", "ds", "consistency"} & set(settings.metrics):
    reader = load_reader(run, settings, required=bool(set(NEEDS_RECON) & set(settings.metrics)))
  if "control" in settings.metrics:
    results.update({f"control/{k}": v for k, v in control(run, settings, read_resolution,
                                                           reader).items()})
  if "ds" in settings.metrics:
    results.update(disentanglement(run, settings, read_resolution, reader))
  if "consistency" in settings.metrics:
    results.update(consistency(run, settings, read_resolution, reader))
  if "geometry" in settings.metrics:
    results.update(geometry(run, settings, resolution))
  return results


def write_results(workdir: str | pathlib.Path, step: int, results: dict[str, Any],
                  settings: Settings, out: str | pathlib.Path | None = None) -> pathlib.Path:
  """JSON `<workdir>/eval/metrics_<step>.json` (or `out`) and scalars `eval/<name>` in the run's
  TensorBoard events; returns the JSON path."""
  from clu import metric_writers

  path = pathlib.Path(out) if out else pathlib.Path(workdir) / "eval" / f"metrics_{step}.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  record = dict(step=step, metrics=results, settings=dataclasses.asdict(settings))
  path.write_text(json.dumps(record, indent=1) + "\n")
  writer = metric_writers.create_default_writer(str(workdir), just_logging=jax.process_index() > 0)
  scalars = {f"eval/{k}": float(v) for k, v in results.items()
             if isinstance(v, (int, float)) and not k.endswith("num_examples")}
  writer.write_scalars(step, scalars)
  writer.flush()
  writer.close()
  return path
