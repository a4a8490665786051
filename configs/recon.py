"""The face-reconstruction network (`models/recon.py`) trained on SynthFaces' ground truth.

  --config=configs/recon.py        narrow ResNet-18 at 64², 20k training faces (benchmarks/recon.py)
  --config=configs/recon.py:128    the benchmarked setting of BENCHMARKS.md run 4: 128² input (the
                                   stem's pool kept), 30k faces, 11,500 steps (≈ 80 min on 2 cores)
  --config=configs/recon.py:tiny   seconds on a 2-core CPU: 32² images, a minimal network (tests)

Every field has a comment; the variant locks the default before overriding, so a misspelt field
raises instead of being added.
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # root seed: parameter init and data order derive from it

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "synth_faces"  # tfds builder; only SynthFaces has ground-truth coefficients
  config.dataset.config = "64"  # stored resolution of SynthFaces ('32', '64', '128')
  config.dataset.data_dir = ""  # tfds data_dir; '' = tfds default (~/tensorflow_datasets)
  config.dataset.num_train = 20000  # SynthFaces training examples to render
  config.dataset.num_test = 1000  # SynthFaces held-out examples (evaluation)
  config.dataset.shuffle_buffer = 2048  # tf.data shuffle buffer (encoded examples)

  config.face_model = ""  # 3DMM of the landmark loss: '' = the procedural model, or a BFM .mat/.npz

  config.model = ml_collections.ConfigDict()  # ReconNet attributes
  config.model.kind = "basic"  # residual block: 'basic' (ResNet-18) or 'bottleneck' (ResNet-50)
  config.model.stage_sizes = (2, 2, 2, 2)  # blocks per stage; ResNet-50: (3, 4, 6, 3), 'bottleneck'
  config.model.width = 32  # stem and first-stage channels (torchvision: 64)
  config.model.input_size = 64  # network input side; images are resampled to it by the pipeline
  config.model.stem_pool = True  # the stem's max pool; False: 4× compute, finer detail

  config.batch_size = 32  # examples per step
  config.num_steps = 6000  # optimisation steps

  config.optim = ml_collections.ConfigDict()
  config.optim.lr = 1.5e-3  # Adam peak learning rate
  config.optim.warmup_steps = 300  # linear warm-up from 0 to lr
  config.optim.end_lr_factor = 0.01  # cosine decay ends at lr × this at num_steps
  config.optim.b1 = 0.9  # Adam β1
  config.optim.b2 = 0.999  # Adam β2

  config.loss = ml_collections.ConfigDict()
  config.loss.id_weight = 0.3  # MSE on the 80 identity coefficients (landmarks weigh what shows)
  config.loss.exp_weight = 10.0  # MSE on the 64 expression coefficients (smaller values than id)
  config.loss.angle_weight = 10.0  # MSE on the 3 Euler angles (radians)
  config.loss.landmark_weight = 3000.0  # mean squared 3D error of landmarks 17-67 (model units²)

  config.eval_batch_size = 250  # test examples per evaluation batch
  config.log_every = 100  # steps between scalar summaries
  config.eval_every = 1000  # steps between test-split evaluations (and at the end)
  config.checkpoint_every = 1000  # steps between checkpoints (and at the end)
  config.keep_checkpoints = 2  # checkpoints kept on disk
  config.async_checkpoints = True  # write checkpoints in the background
  config.max_nonfinite_steps = 20  # stop after this many skipped (non-finite) steps
  config.lock()
  if variant in ("", "default"):
    return config
  if variant == "128":
    config.dataset.config = "128"
    config.dataset.num_train = 30000
    config.model.input_size = 128
    config.num_steps = 11500
    config.optim.warmup_steps = 500
    config.eval_every = 2000
    config.checkpoint_every = 2000
    return config
  if variant != "tiny":
    raise ValueError(f"unknown recon variant {variant!r}: use '', '128' or 'tiny'")
  config.dataset.config = "32"
  config.dataset.num_train = 32
  config.dataset.num_test = 8
  config.dataset.shuffle_buffer = 32
  config.model.stage_sizes = (1, 1)
  config.model.width = 8
  config.model.input_size = 32
  config.batch_size = 8
  config.num_steps = 4
  config.optim.warmup_steps = 1
  config.eval_batch_size = 8
  config.log_every = 2
  config.eval_every = 1000
  config.checkpoint_every = 2
  config.async_checkpoints = False
  return config
