"""tf.data input pipeline: tfds split → this process's shard → preprocessing → batches shaped
(local_devices, per_device_batch, ...) → prefetch onto the devices.

Images are returned in [-1, 1] at the training resolution (area resampling, which equals 2×2 box
averaging for an exact 2× reduction, as the official FFHQ128 loader). A random horizontal flip
mirrors the image, the yaw (θ → π − θ), the landmarks (x → R − 1 − x with the iBUG left/right
permutation) and the pose part of the coefficients (angle_y, angle_z, trans_x change sign);
identity, expression, texture and lighting coefficients are left as they are, since a 3DMM basis
is not exactly mirror symmetric.
"""

from __future__ import annotations

import math
from typing import Iterator

import flax.jax_utils
import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from anifacegan_jax.types import Batch

# iBUG-68 index of each landmark's mirror image (0-based).
LANDMARK_MIRROR = np.array(
    list(range(16, -1, -1))                                   # jaw 0..16
    + list(range(26, 16, -1))                                 # brows 17..26
    + [27, 28, 29, 30]                                        # nose bridge
    + [35, 34, 33, 32, 31]                                    # nostrils
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]        # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]        # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65],                       # inner lips
    dtype=np.int32)
ANGLE_SLICE = slice(224, 227)  # angle (x, y, z) in the 257 layout
TRANS_X = 254


def _flip(example: dict, resolution: int) -> dict:
  """Mirror an example left ↔ right (image, yaw, landmarks, pose coefficients)."""
  image = example["image"][:, ::-1]
  pitch, yaw = example["pose"][0], example["pose"][1]
  landmarks = tf.gather(example["landmarks"], LANDMARK_MIRROR)
  landmarks = tf.stack([resolution - 1.0 - landmarks[:, 0], landmarks[:, 1]], axis=-1)
  sign = np.ones(257, np.float32)
  sign[ANGLE_SLICE.start + 1] = sign[ANGLE_SLICE.start + 2] = sign[TRANS_X] = -1.0
  return dict(image=image, pose=tf.stack([pitch, math.pi - yaw]), landmarks=landmarks,
              coefficients=example["coefficients"] * sign)


def preprocess(example: dict, resolution: int, flip: tf.Tensor | bool = False) -> dict:
  """Decoded tfds example → float32 image in [-1, 1] at `resolution`, pose, coefficients, landmarks."""
  image = tf.cast(example["image"], tf.float32) / 127.5 - 1.0
  source = int(example["image"].shape[0])
  landmarks = tf.cast(example["landmarks"], tf.float32)
  if source != resolution:
    image = tf.image.resize(image, (resolution, resolution), method="area")
    # Pixel centres at integers: x_new + 0.5 = (x_old + 0.5)·scale.
    landmarks = (landmarks + 0.5) * (resolution / source) - 0.5
  out = dict(image=image, pose=tf.cast(example["pose"], tf.float32),
             coefficients=tf.cast(example["coefficients"], tf.float32), landmarks=landmarks)
  flipped = _flip(out, resolution)
  return {k: tf.where(flip, flipped[k], out[k]) if isinstance(flip, tf.Tensor)
          else (flipped[k] if flip else out[k]) for k in out}


def create_dataset(builder: tfds.core.DatasetBuilder, split: str, *, global_batch_size: int,
                   resolution: int, shuffle: bool = True, random_flip: bool = True,
                   seed: int = 0, repeat: bool = True, shuffle_buffer: int = 2048,
                   process_index: int | None = None, process_count: int | None = None,
                   local_device_count: int | None = None,
                   skip_examples: int = 0) -> tf.data.Dataset:
  """Batches of this process's shard of `split`, shaped (local_devices, per_device, ...).

  `skip_examples` drops that many of this process's examples first (before decoding), so a
  resumed run sees exactly the data an uninterrupted run would have seen.

  Raises:
    ValueError: the global batch does not divide over processes and devices.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  local_devices = jax.local_device_count() if local_device_count is None else local_device_count
  if global_batch_size % (process_count * local_devices):
    raise ValueError(
        f"global batch size {global_batch_size} must be divisible by processes × local devices "
        f"= {process_count} × {local_devices}")
  local_batch = global_batch_size // process_count
  per_device = local_batch // local_devices
  shard = tfds.even_splits(split, n=process_count, drop_remainder=True)[process_index]
  read_config = tfds.ReadConfig(shuffle_seed=seed + process_index)
  # Shuffle encoded PNGs (small) and decode afterwards.
  ds = builder.as_dataset(split=shard, shuffle_files=shuffle, read_config=read_config,
                          decoders={"image": tfds.decode.SkipDecoding()})
  image_feature = builder.info.features["image"]
  source = image_feature.shape[0]
  if repeat:
    ds = ds.repeat()
  if shuffle:
    ds = ds.shuffle(shuffle_buffer, seed=seed + process_index)
  flip_seed = tf.constant(seed * 1_000_003 + process_index, tf.int64)

  def prepare(index, example):
    example = dict(example)
    example["image"] = tf.ensure_shape(image_feature.decode_example(example["image"]),
                                       (source, source, 3))
    flip = False
    if random_flip:
      flip = tf.random.stateless_uniform((), seed=tf.stack([flip_seed, index])) < 0.5
    return preprocess(example, resolution, flip)

  ds = ds.enumerate().skip(skip_examples).map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local_batch, drop_remainder=True)
  ds = ds.map(lambda b: {k: tf.reshape(v, (local_devices, per_device) + tuple(v.shape[1:]))
                         for k, v in b.items()})
  return ds.prefetch(tf.data.AUTOTUNE)


def device_batches(ds: tf.data.Dataset, prefetch: int = 2) -> Iterator[Batch]:
  """numpy batches of `ds` placed on the local devices ahead of use (leading axis = device)."""
  batches = (Batch(**b) for b in tfds.as_numpy(ds))
  return flax.jax_utils.prefetch_to_device(batches, prefetch)
