"""SynthFaces, the embedded procedural dataset: trains with no downloads.

  --config=configs/synthface.py        64², the default schedule
  --config=configs/synthface.py:small  ≤ 2 h on a 2-core CPU, 16² training (shipped until
                                       2026-11-30)
  --config=configs/synthface.py:small64  the same networks trained at 64² with L_lm through the
                                       shipped reconstruction network: the shipped model (four
                                       minutes of an H200: benchmarks/train_device.py)
  --config=configs/synthface.py:tiny   minutes on a 2-core CPU: 16² images, small networks
"""

import ml_collections

from configs import default


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  config = default.get_config()
  # SynthFaces' expression coefficients are blendshape weights (std ≈ 0.2, against 0.8 for the
  # identity's): ×16 at F's mapping network, or the field learns the jaw and little else
  # (BENCHMARKS.md "The expression code's scale at F").
  config.model.deform_exp_scale = 16.0
  config.imitation.deform_warmup_b1 = 0.9  # a warm-up (when one is asked for) with momentum
  config.lock()
  if variant in ("", "default"):
    return config
  if variant == "small":
    return _small(config)
  if variant == "small64":
    return _small64(_small(config))
  if variant != "tiny":
    raise ValueError(
        f"unknown synthface variant {variant!r}: use '', 'small', 'small64' or 'tiny'")
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


def _small(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """16² training sized for two CPU cores (BENCHMARKS.md "The small SynthFaces model")."""
  config.dataset.config = "128"
  config.dataset.num_train = 30000
  config.dataset.num_test = 1000
  config.model.num_samples = 24
  config.model.num_levels = 12
  config.model.manifold_hidden = 32
  config.model.radiance_hidden = 128
  config.model.deform_hidden = 64
  config.discriminator.max_channels = 256
  config.stages = [ml_collections.ConfigDict(dict(
      start_step=0, resolution=16, per_device_batch=8, batch_split=1))]
  config.optim.g_lr = 1e-4
  config.optim.deform_lr = 1e-4
  config.optim.manifold_lr = 1e-5  # 0.1 × g_lr (BENCHMARKS.md "Keeping the radiance manifolds")
  config.num_steps = 2000
  config.log_every = 50
  config.checkpoint_every = 500
  config.keep_checkpoints = 10
  config.snapshot_every = 500
  config.chunk_size = 1024
  config.imitation.points = 256
  config.psi_samples = 2000
  # The reconstruction network cannot read 16² faces (on real SynthFaces images at 16² its exp
  # RMSE is 0.145, chance 0.131; at 64² 0.094: BENCHMARKS.md): control is read from 64² renders.
  config.eval_resolution = 64
  return config


def _small64(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`small` at 64²: what the reconstruction network can read, so control can be learned (L_lm)
  and measured at the training resolution (BENCHMARKS.md "The small SynthFaces model")."""
  config.stages[0].resolution = 64
  config.imitation.landmark_weight = 1e4  # L_lm, Eq. 7 (O(0.1-1) at this weight)
  config.recon = "synthfaces"  # the shipped model's reconstruction network (128² SynthFaces)
  config.num_steps = 3000
  config.checkpoint_every = 1000
  config.snapshot_every = 1000
  config.eval_resolution = 0  # the training resolution
  return config
