"""The paper's FFHQ setting: 128², batch 32 = 8 devices × 4, batch_split 4 (SPEC §5.2).

Needs the aligned FFHQ crops and Deep3DFaceRecon results, the BFM and Deep3DFaceRecon's network
(L_lm is on, as in the paper):
  --config.dataset.manual_dir=/path/with/images_and_mats (see anifacegan_jax/data/ffhq.py)
  --config.face_model=/path/BFM/BFM_model_front.mat
  --config.recon=/path/checkpoints/<name>/epoch_20.pth
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
  config.imitation.landmark_weight = 1e4
  return config
