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
  data = config.dataset  # the recon configs' SynthFaces sections have no manual_dir
  return prepared_builder(data.name, data.config, data_dir=data.get("data_dir", ""),
                          manual_dir=data.get("manual_dir", ""), num_train=int(data.num_train),
                          num_test=int(data.num_test))


def prepared_builder(name: str, config: str, *, data_dir: str = "", manual_dir: str = "",
                     num_train: int, num_test: int) -> tfds.core.DatasetBuilder:
  """The builder `name` (synth_faces, ffhq_faces) with builder config `config` ('64', ...),
  prepared on first use: SynthFaces is rendered, FFHQ read from `manual_dir`."""
  data_dir = str(pathlib.Path(data_dir).expanduser()) if data_dir else None
  if name == "synth_faces":
    def prepare_synthfaces():
      builder = synthface.unprepared_builder(int(config), int(num_train), int(num_test),
                                             data_dir=data_dir)
      builder.download_and_prepare()
      return builder

    return distributed.first_process_then_others(prepare_synthfaces, "prepare SynthFaces")
  if name == "ffhq_faces":
    if config not in [c.name for c in ffhq.FfhqFaces.BUILDER_CONFIGS]:
      raise ValueError(f"config.dataset.config={config!r} is not an FFHQ config; use one of "
                       f"{[c.name for c in ffhq.FfhqFaces.BUILDER_CONFIGS]}")

    def prepare_ffhq():
      builder = ffhq.FfhqFaces(config=config, data_dir=data_dir)
      if builder.is_prepared():
        return builder
      if not manual_dir:
        raise ffhq.DatasetPreparationError(
            "FFHQ is not prepared yet: set --config.dataset.manual_dir to the directory holding "
            "images/ and mats/ (see anifacegan_jax/data/ffhq.py)")
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=str(pathlib.Path(manual_dir).expanduser())))
      return builder

    return distributed.first_process_then_others(prepare_ffhq, "prepare FFHQ")
  raise ValueError(f"config.dataset.name must be one of {BUILDERS}, got {name!r}")


def coefficient_table(builder: tfds.core.DatasetBuilder, split: str) -> np.ndarray:
  """(M, 257) float32 coefficients of every example of `split` (images are not decoded)."""
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={"image": tfds.decode.SkipDecoding()})
  ds = ds.map(lambda ex: ex["coefficients"]).batch(4096)
  return np.concatenate(list(tfds.as_numpy(ds)), axis=0)
