"""The FFHQ builder over a tiny manual directory written by the test."""

import math

import numpy as np
import pytest
import tensorflow_datasets as tfds

from anifacegan_jax.data import ffhq
from conftest import write_ffhq_example


def _prepare(manual, data_dir, resolution="64"):
  builder = ffhq.FfhqFaces(config=resolution, data_dir=str(data_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  return builder


def test_builds_examples_with_pose_and_scaled_landmarks(tmp_path):
  manual = tmp_path / "manual"
  mats = {s: write_ffhq_example(manual, s, angle=(0.1 + 0.1 * i, -0.2 * i, 0.0))
          for i, s in enumerate(["00000", "00001", "00002"])}
  builder = _prepare(manual, tmp_path / "data")
  examples = list(tfds.as_numpy(builder.as_dataset(split="train")))
  assert len(examples) == 3
  for ex in examples:
    mat = mats[ex["name"].decode()]
    assert ex["image"].shape == (64, 64, 3)
    ax, ay = mat["angle"][0, 0], mat["angle"][0, 1]
    np.testing.assert_allclose(ex["pose"], [math.pi / 2 - (ax - 0.1), math.pi / 2 + ay], atol=1e-6)
    np.testing.assert_allclose(ex["coefficients"][:80], mat["id"][0], atol=1e-6)
    np.testing.assert_allclose(ex["coefficients"][224:227], mat["angle"][0], atol=1e-6)
    # The 224-px crop's centre column (111.5) is the 64-px image's centre column (31.5).
    np.testing.assert_allclose(ex["landmarks"][:, 0], 31.5, atol=1e-5)


def test_missing_folders_and_files_are_named(tmp_path):
  with pytest.raises(ffhq.DatasetPreparationError, match="images"):
    ffhq.paired_files(tmp_path)
  manual = tmp_path / "manual"
  write_ffhq_example(manual, "00000")
  (manual / "mats" / "00000.mat").unlink()
  with pytest.raises(ffhq.DatasetPreparationError, match=r"00000\.mat not found"):
    ffhq.paired_files(manual)


def test_bad_images_and_coefficients_are_named(tmp_path):
  manual = tmp_path / "manual"
  write_ffhq_example(manual, "small", size=32)
  with pytest.raises(ffhq.DatasetPreparationError, match=r"small\.png.*32×32.*64×64"):
    ffhq.load_image(manual / "images" / "small.png", 64)
  (manual / "images" / "broken.png").write_bytes(b"not a png")
  with pytest.raises(ffhq.DatasetPreparationError, match=r"broken\.png: not a readable image"):
    ffhq.load_image(manual / "images" / "broken.png", 64)
  write_ffhq_example(manual, "nolm", lm=False)
  with pytest.raises(ffhq.DatasetPreparationError, match=r"nolm\.mat: missing 'lm68'"):
    ffhq.load_example(manual / "images" / "nolm.png", manual / "mats" / "nolm.mat", 64)
