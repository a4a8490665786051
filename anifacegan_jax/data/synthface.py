"""SynthFaces as a tfds builder: examples of `synthfaces.synthetic` (the procedural 3DMM rendered with
the GRAM camera, with ground-truth coefficients, poses and landmarks). Nothing is downloaded; each
example is deterministic in (split, index), so the dataset is the same on every machine.
"""

from __future__ import annotations

from typing import Iterator

import tensorflow_datasets as tfds

from anifacegan_jax.data.schema import example_features
from anifacegan_jax.synthfaces import procedural, synthetic

DEFAULT_COUNTS = (20_000, 1_000)


class SynthFacesConfig(tfds.core.BuilderConfig):
  """Resolution and size of a SynthFaces variant."""

  def __init__(self, *, resolution: int, num_train: int = DEFAULT_COUNTS[0],
               num_test: int = DEFAULT_COUNTS[1], **kwargs):
    name = str(resolution)
    if (num_train, num_test) != DEFAULT_COUNTS:
      name = f"{resolution}_n{num_train}_{num_test}"
    super().__init__(name=name, description=f"SynthFaces at {resolution}², procedural model "
                     f"{procedural.PROCEDURAL_VERSION}", **kwargs)
    self.resolution, self.num_train, self.num_test = resolution, num_train, num_test


class SynthFaces(tfds.core.GeneratorBasedBuilder):
  """Procedural faces with ground-truth 3DMM coefficients, poses and landmarks (see
  `synthfaces/synthetic.py` for the scene prior)."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [SynthFacesConfig(resolution=r) for r in (32, 64, 128)]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=example_features(self.builder_config.resolution), supervised_keys=None,
        homepage="https://github.com/anifacegan-jax")

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    cfg = self.builder_config
    return {"train": self._generate_examples("train", cfg.num_train),
            "test": self._generate_examples("test", cfg.num_test)}

  def _generate_examples(self, split: str, count: int) -> Iterator[tuple[str, dict]]:
    model = procedural.load_procedural()
    for index in range(count):
      example = synthetic.generate(model, split, index, self.builder_config.resolution)
      yield f"{split}_{index:06d}", dict(example, name=f"{split}_{index:06d}")


def unprepared_builder(resolution: int, num_train: int = DEFAULT_COUNTS[0],
                 num_test: int = DEFAULT_COUNTS[1], data_dir: str | None = None) -> SynthFaces:
  """A SynthFaces builder (not yet prepared) for the given size."""
  if resolution not in (32, 64, 128):
    raise ValueError(f"SynthFaces resolution must be 32, 64 or 128, got {resolution}")
  if num_train < 1 or num_test < 0:
    raise ValueError(f"SynthFaces needs num_train ≥ 1 and num_test ≥ 0, got {num_train}, {num_test}")
  if (num_train, num_test) == DEFAULT_COUNTS:
    return SynthFaces(config=str(resolution), data_dir=data_dir)
  config = SynthFacesConfig(resolution=resolution, num_train=num_train, num_test=num_test)
  return SynthFaces(config=config, data_dir=data_dir)
