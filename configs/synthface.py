"""SynthFaces, the embedded procedural dataset: trains with no downloads.

  --config=configs/synthface.py        64², the default schedule
  --config=configs/synthface.py:tiny   minutes on a 2-core CPU: 16² images, small networks
"""

import ml_collections

from configs import default


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  config = default.get_config()
  config.lock()
  if variant in ("", "default"):
    return config
  if variant != "tiny":
    raise ValueError(f"unknown synthface variant {variant!r}: use '' or 'tiny'")
  config.dataset.config = "32"
  config.dataset.num_train = 256
  config.dataset.num_test = 16
  config.model.num_samples = 24
  config.model.num_levels = 12
  config.model.manifold_hidden = 32
  config.model.radiance_hidden = 64
  config.model.deform_hidden = 32
  config.discriminator.max_channels = 64
  config.stages = [ml_collections.ConfigDict(dict(
      start_step=0, resolution=16, per_device_batch=2, batch_split=1))]
  config.num_steps = 60
  config.log_every = 10
  config.checkpoint_every = 20
  config.snapshot_every = 30
  config.num_snapshot = 4
  config.chunk_size = 256
  config.imitation.points = 128
  config.psi_samples = 500
  config.async_checkpoints = False
  return config
