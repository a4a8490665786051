"""Default hyperparameters: the paper's setting on the embedded SynthFaces data at 64².

Every field has a comment. Variants (`synthface.py`, `ffhq.py`) import this, lock it and override,
so a misspelt field raises instead of being silently added.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # root PRNG seed: parameters, latents, cameras and data order derive from it

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "synth_faces"  # tfds builder: 'synth_faces' (embedded) or 'ffhq_faces'
  config.dataset.config = "64"  # builder config = stored resolution ('32', '64', '128'; FFHQ '256')
  config.dataset.data_dir = ""  # tfds data_dir; '' = tfds default (~/tensorflow_datasets)
  config.dataset.manual_dir = ""  # FFHQ only: dir with images/ and mats/ (see data/ffhq.py)
  config.dataset.num_train = 20000  # SynthFaces only: training examples to render
  config.dataset.num_test = 1000  # SynthFaces only: held-out examples to render
  config.dataset.random_flip = True  # mirror images with their yaw (official augmentation)
  config.dataset.shuffle_buffer = 2048  # tf.data shuffle buffer (encoded examples)

  config.model = ml_collections.ConfigDict()  # AnimatableGenerator attributes
  config.model.warp = "single"  # 'single' (Δ in world units) or 'double' (released quirk)
  config.model.crossing = "decreasing"  # first-crossing rule: 'decreasing' (GRAM) or 'either'
  config.model.min_gap = 0.05  # GRAM's |s_hi − s_lo| guard for the intersection
  config.model.num_samples = 64  # samples per ray in [near, far]
  config.model.near = 0.88  # first sample distance along the ray (world units)
  config.model.far = 1.12  # last sample distance along the ray (world units)
  config.model.num_levels = 23  # radiance manifolds (+ 1 background plane)
  config.model.levels_start = 23.0  # iso-value of the nearest manifold
  config.model.levels_end = 8.0  # iso-value of the farthest manifold
  config.model.white_background = False  # paint the background point white (released semantics)
  config.model.fov_degrees = 12.0  # camera field of view
  config.model.manifold_hidden = 128  # manifold predictor width
  config.model.radiance_hidden = 256  # radiance trunk and mapping width
  config.model.deform_hidden = 128  # deformation net and its mapping width
  config.model.deform_final_bias_init = "zeros"  # 'zeros' (Δ = 0 at init) or 'torch' (released)
  config.model.deform_exp_scale = 1.0  # z_exp's factor at F's mapping network (1: released)
  config.model.expression = "deformation"  # where z_exp enters: 'deformation' (AniFaceGAN, F) or
  #                                         'template' (DiscoFaceGRAM: no F, the radiance mapping
  #                                         reads cat(z_id, deform_exp_scale·z_exp, ε))
  config.model.depth_gradient = False  # z of Eq. 4-5 with gradient (official: without; ablation)
  config.model.sine = "auto"  # FiLM sine: xla, polynomial (4× faster on CPU), auto (CPU: poly)
  # Generator matmuls: default (XLA's), float32, tf32, bfloat16 (operands; float32 accumulation)
  config.model.precision = "default"

  config.discriminator = ml_collections.ConfigDict()
  config.discriminator.fade_in = False  # pi-GAN fade-in path over `fade_steps` from each stage start
  config.discriminator.max_channels = 400  # channel cap c(i) = min(this, 2^i) (GRAM: 400)

  config.stages = [  # curriculum: a stage applies from its start_step on (one resolution for all)
      ml_collections.ConfigDict(dict(
          start_step=0,  # first iteration of the stage
          resolution=64,  # training image size
          per_device_batch=4,  # images per device (global batch = devices × this)
          batch_split=4,  # generator sub-batches accumulated per step (GRAM batch_split)
      )),
  ]
  config.num_steps = 150_000  # total iterations (one D and one G step each)
  config.fade_steps = 10_000  # fade-in length when discriminator.fade_in is set

  config.optim = ml_collections.ConfigDict()
  config.optim.g_lr = 2e-5  # template field learning rate (paper)
  config.optim.deform_lr = 2e-5  # deformation field learning rate (paper)
  config.optim.manifold_lr = 2e-5  # manifold predictor learning rate (paper: g_lr; CARLA 0.1×)
  config.optim.d_lr = 2e-4  # discriminator learning rate (paper)
  config.optim.clip_norm = 0.3  # global-norm clip per network (AniFaceGAN curriculum)
  config.optim.b1 = 0.0  # Adam β1
  config.optim.b2 = 0.9  # Adam β2
  config.ema_decay = 0.999  # generator EMA decay (with torch_ema's warm-up)

  config.loss = ml_collections.ConfigDict()
  config.loss.r1_gamma = 1.0  # R1 weight γ (loss adds 0.5·γ·E‖∇D(real)‖²)
  config.loss.pos_lambda = 15.0  # pose loss weight on fakes (D and G)
  config.loss.real_pos_lambda = 15.0  # pose loss weight on reals (D)

  config.imitation = ml_collections.ConfigDict()  # 3D imitation of the 3DMM (paper §3.4)
  # No published weights exist (SPEC §8.2): these make each term O(0.1-1) at the start, next to the
  # adversarial loss; squared distances are in world units (the face is ≈0.13 wide).
  config.imitation.chamfer_weight = 100.0  # L_Ch, Eq. 6 (0 switches it off: 'w/o L_Ch')
  config.imitation.deform_weight = 1e4  # L_3DMM, Eq. 8-9 (0: 'w/o L_3DMM')
  config.imitation.reg_weight = 10.0  # L_reg, Eq. 10
  config.imitation.smooth_weight = 1e3  # L_smooth, Eq. 11
  config.imitation.points = 1024  # query points per image for Eq. 8-11 (around mesh vertices)
  config.imitation.noise = 0.003  # std of the query points around their vertex (world units)
  config.imitation.smooth_radius = 0.001  # ξ ~ U(±radius)³ for L_smooth (world units)
  config.imitation.chamfer_opacity = 0.0  # min non-background opacity for a pixel to join S′; 0
  #                                         uses every pixel, so a still transparent face is
  #                                         pulled towards the mesh from the first step
  config.imitation.landmark_weight = 0.0  # L_lm, Eq. 7 (paper: on; 1e4 makes it O(0.1-1)); needs
  #                                         config.recon, so it is off by default ('w/o L_lm')
  config.imitation.landmark_dims = 3  # 3: 3D landmarks (paper); 2: the '2D landmarks' ablation
  config.imitation.deform_image_gradient = True  # the image's losses (adversarial, pose, L_Ch,
  #                                                L_lm) train the deformation network (paper);
  #                                                False: only Eq. 8-11 do (BENCHMARKS.md "The 64²
  #                                                run": the field then follows the 3DMM)
  config.imitation.deform_identity = False  # Eq. 8's field also undoes the identity's shape
  #                                           (−B_id β − B_exp γ: warps to the mean face S̄); False:
  #                                           the paper's −B_exp γ
  config.imitation.deform_warmup_steps = 0  # before a fresh run's first iteration, this many
  #                                           Adam steps of the deformation network alone on
  #                                           Eq. 8-11 (optim.deform_lr; stage 0's per-device
  #                                           batch): the template then trains through a field
  #                                           that already follows the 3DMM (0: none, the paper)
  config.imitation.deform_warmup_b1 = 0.0  # Adam β1 of that warm-up (optim.b1 is the GAN's)
  config.face_model = ""  # 3DMM file (.mat BFM_model_front or .npz); '' = the procedural model
  config.recon = ""  # face-reconstruction network of L_lm: a `train_recon` workdir (Orbax) or
  #                    Deep3DFaceRecon's epoch_20.pth (ResNet-50, 224², BFM coefficients)

  config.camera = ml_collections.ConfigDict()
  config.camera.yaw_std = 0.3  # yaw prior N(π/2, σ²) (radians)
  config.camera.pitch_std = 0.155  # pitch prior N(π/2, σ²)
  config.camera.clamp = 1.3  # clamp both angles to mean ± this

  config.prior = "fit"  # latent prior of z_id/z_exp: 'fit' (Gaussian fitted to the training
  #                       set's coefficients), 'standard' (N(0, I)) or 'file:<path>' (a prior
  #                       from `python -m anifacegan_jax.fit_prior`, e.g. the coefficient VAEs)
  config.chunk_size = 0  # rays per lax.map step when rendering; 0 = 256 on CPU, 4096 otherwise
  config.eval_resolution = 0  # render size of the metrics read by the reconstruction network
  #                             (control, ds, consistency); 0 = the training resolution

  config.log_every = 50  # steps between scalar summaries and progress lines
  config.checkpoint_every = 1000  # steps between checkpoints (and at the end)
  config.keep_checkpoints = 3  # checkpoints kept on disk
  config.async_checkpoints = True  # write checkpoints in the background
  config.snapshot_every = 1000  # steps between sample grids in TensorBoard
  config.num_snapshot = 8  # fixed latents rendered in each snapshot
  config.psi = 0.7  # truncation ψ for snapshots and `sample`
  config.psi_samples = 10_000  # mapped codes averaged for the truncation centre
  config.max_nonfinite_steps = 20  # stop after this many consecutive skipped iterations
  config.collapse_crossings = 0.2  # warn when the logged fraction of ray-manifold crossings falls
  #                                  under this (the manifolds are leaving [near, far]); 0: never
  config.stop_on_collapse = False  # and then stop (state saved) instead of training on
  return config
