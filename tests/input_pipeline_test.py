"""tf.data pipeline: device sharding, resampling, flips that mirror pose and landmarks."""

import math

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from anifacegan_jax.data import ffhq, input_pipeline
from anifacegan_jax.types import Batch
from conftest import write_ffhq_example


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
  root = tmp_path_factory.mktemp("ffhq")
  for i in range(10):
    write_ffhq_example(root / "manual", f"{i:05d}", size=64, angle=(0.1, 0.05 * i, 0.0))
  builder = ffhq.FfhqFaces(config="64", data_dir=str(root / "data"))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(root / "manual")))
  return builder


def test_batches_are_shaped_per_device_and_resampled(builder):
  ds = input_pipeline.create_dataset(builder, "train", global_batch_size=8, resolution=32,
                                     shuffle=False, random_flip=False, repeat=False)
  batch = next(iter(tfds.as_numpy(ds)))
  assert batch["image"].shape == (8, 1, 32, 32, 3)
  assert batch["pose"].shape == (8, 1, 2) and batch["landmarks"].shape == (8, 1, 68, 2)
  raw = next(iter(tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False))))
  box = raw["image"].astype(np.float32).reshape(32, 2, 32, 2, 3).mean((1, 3)) / 127.5 - 1.0
  np.testing.assert_allclose(batch["image"][0, 0], box, atol=1e-5)  # area = 2×2 box mean
  # Landmark x = 111.5 px of the 224 crop is the centre of a 32-px image.
  np.testing.assert_allclose(batch["landmarks"][0, 0, :, 0], 15.5, atol=1e-4)


def test_flip_mirrors_image_pose_and_landmarks():
  rng = np.random.default_rng(0)
  example = dict(image=tf.constant(rng.integers(0, 255, (16, 16, 3)), tf.uint8),
                 pose=tf.constant([1.5, 1.9]), coefficients=tf.constant(rng.normal(size=257), tf.float32),
                 landmarks=tf.constant(rng.uniform(0, 15, (68, 2)), tf.float32))
  plain = input_pipeline.preprocess(example, 16, flip=False)
  flipped = input_pipeline.preprocess(example, 16, flip=True)
  np.testing.assert_allclose(flipped["image"], plain["image"][:, ::-1])
  np.testing.assert_allclose(flipped["pose"], [1.5, math.pi - 1.9], atol=1e-6)
  mirror = input_pipeline.LANDMARK_MIRROR
  np.testing.assert_allclose(flipped["landmarks"][:, 0], 15.0 - plain["landmarks"].numpy()[mirror, 0], atol=1e-5)
  np.testing.assert_allclose(flipped["landmarks"][:, 1], plain["landmarks"].numpy()[mirror, 1])
  np.testing.assert_array_equal(mirror[mirror], np.arange(68))  # an involution
  assert mirror[36] == 45 and mirror[48] == 54 and mirror[8] == 8 and mirror[30] == 30
  c, fc = plain["coefficients"].numpy(), flipped["coefficients"].numpy()
  np.testing.assert_allclose(fc[225:227], -c[225:227])
  np.testing.assert_allclose(fc[:224], c[:224])


def test_random_flip_is_seeded(builder):
  def poses(seed, flip=True):
    ds = input_pipeline.create_dataset(builder, "train", global_batch_size=8, resolution=32,
                                       shuffle=False, random_flip=flip, seed=seed, repeat=False)
    return next(iter(tfds.as_numpy(ds)))["pose"][:, 0, 1]
  np.testing.assert_array_equal(poses(3), poses(3))
  yaws = poses(3, flip=False)
  flipped = np.isclose(poses(3), math.pi - yaws, atol=1e-6) & ~np.isclose(yaws, math.pi / 2)
  kept = np.isclose(poses(3), yaws, atol=1e-6)
  assert (flipped | kept).all() and flipped.any() and (kept & (yaws != math.pi / 2)).any()


def test_indivisible_batch_is_rejected(builder):
  with pytest.raises(ValueError, match="global batch size 6 must be divisible"):
    input_pipeline.create_dataset(builder, "train", global_batch_size=6, resolution=32)


def test_device_batches_land_on_every_device(builder):
  ds = input_pipeline.create_dataset(builder, "train", global_batch_size=16, resolution=32)
  batch = next(input_pipeline.device_batches(ds))
  assert isinstance(batch, Batch)
  assert batch.image.shape == (8, 2, 32, 32, 3)
  assert len(batch.image.sharding.device_set) == jax.local_device_count() == 8
