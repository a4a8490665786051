"""The example schema shared by every dataset builder (SynthFaces, FFHQ)."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

NUM_COEFFICIENTS = 257
NUM_LANDMARKS = 68


def example_features(resolution: int) -> tfds.features.FeaturesDict:
  """Features of one example at `resolution`² pixels.

  image: uint8 RGB PNG; pose: (pitch φ, yaw θ) radians, GRAM camera; coefficients: Deep3DFaceRecon
  257 layout (id 80 | exp 64 | tex 80 | angle 3 | gamma 27 | trans 3); landmarks: (68, 2) iBUG
  points in pixels of this image (x right, y down, pixel centres at integers); name: source id.
  """
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(resolution, resolution, 3)),
      "pose": tfds.features.Tensor(shape=(2,), dtype=tf.float32),
      "coefficients": tfds.features.Tensor(shape=(NUM_COEFFICIENTS,), dtype=tf.float32),
      "landmarks": tfds.features.Tensor(shape=(NUM_LANDMARKS, 2), dtype=tf.float32),
      "name": tfds.features.Text(),
  })
