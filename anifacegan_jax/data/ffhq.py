"""FFHQ as a tfds builder over a manual directory of aligned images and Deep3DFaceRecon results.

The layout mirrors the official datasets (SPEC §5.3): aligned face crops (GRAM's preprocessing,
256² PNGs) and, for each image, a Deep3DFaceRecon `.mat` with id, exp, tex, angle, gamma, trans
and lm68. Pose: φ = π/2 − (angle_x − 0.1), θ = π/2 + angle_y (SPEC §1.1).

    <manual_dir>/images/00000.png ...      aligned RGB crops (square, any size ≥ the config's)
    <manual_dir>/mats/00000.mat ...        Deep3DFaceRecon results, same stems

Training prepares it on first use: `python -m anifacegan_jax.main --config=configs/ffhq.py
--workdir=W --config.dataset.manual_dir=<manual_dir>` (README "Real data"). By hand:
`FfhqFaces(config='128', data_dir=...).download_and_prepare(
download_config=tfds.download.DownloadConfig(manual_dir=...))`. Landmarks are stored scaled from Deep3DFaceRecon's 224-px
crop to the image size (the aligned crops share that crop's framing).
"""

from __future__ import annotations

import pathlib
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from anifacegan_jax.data.schema import example_features
from anifacegan_jax.face3d import geometry, morphable

DEEP3D_CROP = 224.0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class DatasetPreparationError(ValueError):
  """A manual directory, image or coefficient file is missing or malformed."""


class FfhqConfig(tfds.core.BuilderConfig):
  """Resolution-specific FFHQ config."""

  def __init__(self, *, resolution: int, **kwargs):
    super().__init__(name=str(resolution), description=f"{resolution}² aligned FFHQ", **kwargs)
    self.resolution = resolution


class FfhqFaces(tfds.core.GeneratorBasedBuilder):
  """Aligned FFHQ with Deep3DFaceRecon coefficients and GRAM poses."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [FfhqConfig(resolution=r) for r in (64, 128, 256)]
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=example_features(self.builder_config.resolution),
        supervised_keys=None, homepage="https://github.com/NVlabs/ffhq-dataset")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    return {"train": self._generate_examples(pathlib.Path(dl_manager.manual_dir))}

  def _generate_examples(self, manual_dir: pathlib.Path) -> Iterator[tuple[str, dict]]:
    for image_path, mat_path in paired_files(manual_dir):
      yield image_path.stem, load_example(image_path, mat_path, self.builder_config.resolution)


def paired_files(manual_dir: pathlib.Path) -> list[tuple[pathlib.Path, pathlib.Path]]:
  """(image, mat) pairs sorted by stem; every image must have its `.mat`."""
  images_dir, mats_dir = manual_dir / "images", manual_dir / "mats"
  for folder in (images_dir, mats_dir):
    if not folder.is_dir():
      raise DatasetPreparationError(
          f"{folder} not found: the FFHQ manual dir must hold images/ (aligned crops) and mats/ "
          "(Deep3DFaceRecon results with the same file stems)")
  images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
  if not images:
    raise DatasetPreparationError(f"{images_dir} holds no {'/'.join(IMAGE_SUFFIXES)} images")
  pairs = []
  for image_path in images:
    mat_path = mats_dir / f"{image_path.stem}.mat"
    if not mat_path.is_file():
      raise DatasetPreparationError(f"{mat_path} not found: expected the Deep3DFaceRecon result "
                                    f"for {image_path}")
    pairs.append((image_path, mat_path))
  return pairs


def load_image(path: pathlib.Path, resolution: int) -> np.ndarray:
  """(R, R, 3) uint8 RGB, LANCZOS-resized from a square image of at least R pixels."""
  try:
    with Image.open(path) as image:
      image = image.convert("RGB")
      image.load()
  except (OSError, ValueError) as error:
    raise DatasetPreparationError(f"{path}: not a readable image ({error})") from error
  width, height = image.size
  if width != height or width < resolution:
    raise DatasetPreparationError(
        f"{path}: image is {width}×{height}, expected a square aligned crop of at least "
        f"{resolution}×{resolution}")
  if width != resolution:
    image = image.resize((resolution, resolution), Image.LANCZOS)
  return np.asarray(image, np.uint8)


def load_example(image_path: pathlib.Path, mat_path: pathlib.Path, resolution: int) -> dict:
  """One example in the shared schema."""
  coefficients, lm68 = morphable.read_coefficients_mat(mat_path)
  angle = np.asarray(coefficients.angle, np.float32)
  pitch, yaw = (np.asarray(v, np.float32) for v in geometry.angles_to_camera(angle))
  if lm68 is None:
    raise DatasetPreparationError(f"{mat_path}: missing 'lm68' (68 × 2 landmarks)")
  scale = resolution / DEEP3D_CROP
  landmarks = (np.asarray(lm68, np.float32).reshape(68, 2) + 0.5) * scale - 0.5
  return dict(image=load_image(image_path, resolution),
              pose=np.stack([pitch, yaw]).astype(np.float32).reshape(2),
              coefficients=np.asarray(morphable.join_coefficients(coefficients),
                                      np.float32).reshape(257),
              landmarks=landmarks, name=image_path.stem)
