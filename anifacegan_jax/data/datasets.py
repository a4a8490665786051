"""Dataset builders by config: SynthFaces (prepared on first use) or FFHQ (from a manual dir)."""

from __future__ import annotations

import pathlib

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from anifacegan_jax import distributed
from anifacegan_jax.data import ffhq, synthface

BUILDERS = ("synth_faces", "ffhq_faces")


def make_builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The prepared builder named by config.dataset (prepares it if it is not on disk yet)."""
  data = config.dataset
  data_dir = str(pathlib.Path(data.data_dir).expanduser()) if data.data_dir else None
  if data.name == "synth_faces":
    def prepare_synthfaces():
      builder = synthface.unprepared_builder(int(data.config), int(data.num_train),
                                       int(data.num_test), data_dir=data_dir)
      builder.download_and_prepare()
      return builder

    return distributed.first_process_then_others(prepare_synthfaces, "prepare SynthFaces")
  if data.name == "ffhq_faces":
    if data.config not in [c.name for c in ffhq.FfhqFaces.BUILDER_CONFIGS]:
      raise ValueError(f"config.dataset.config={data.config!r} is not an FFHQ config; use one of "
                       f"{[c.name for c in ffhq.FfhqFaces.BUILDER_CONFIGS]}")

    def prepare_ffhq():
      builder = ffhq.FfhqFaces(config=data.config, data_dir=data_dir)
      if builder.is_prepared():
        return builder
      if not data.manual_dir:
        raise ffhq.DatasetPreparationError(
            "FFHQ is not prepared yet: set --config.dataset.manual_dir to the directory holding "
            "images/ and mats/ (see anifacegan_jax/data/ffhq.py)")
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=str(pathlib.Path(data.manual_dir).expanduser())))
      return builder

    return distributed.first_process_then_others(prepare_ffhq, "prepare FFHQ")
  raise ValueError(f"config.dataset.name must be one of {BUILDERS}, got {data.name!r}")


def coefficient_table(builder: tfds.core.DatasetBuilder, split: str) -> np.ndarray:
  """(M, 257) float32 coefficients of every example of `split` (images are not decoded)."""
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={"image": tfds.decode.SkipDecoding()})
  ds = ds.map(lambda ex: ex["coefficients"]).batch(4096)
  return np.concatenate(list(tfds.as_numpy(ds)), axis=0)
