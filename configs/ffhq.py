"""The paper's FFHQ setting: 128², batch 32 = 8 devices × 4, batch_split 4 (SPEC §5.2).

Needs the aligned FFHQ crops and Deep3DFaceRecon results: set
--config.dataset.manual_dir=/path/with/images_and_mats (see anifacegan_jax/data/ffhq.py).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.lock()
  config.dataset.name = "ffhq_faces"
  config.dataset.config = "128"
  config.stages = [ml_collections.ConfigDict(dict(
      start_step=0, resolution=128, per_device_batch=4, batch_split=4))]
  config.num_steps = 150_000
  return config
