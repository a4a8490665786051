"""A run's config turned into its parts, and trained runs loaded for inference, with no
TensorFlow, tfds or clu on the import path.

The training loop (`train`), inference (`sampling`), evaluation and the accelerator scripts of
benchmarks/ build the same objects from the same config fields here: the generator and
discriminator, the optimizers, the structure of the latent prior a checkpoint holds, the 3DMM of
the imitation losses and the reconstruction network of L_lm. A `Run` (config, generator, EMA
weights, prior) comes from a training workdir (`load_run`), a model folder (`load_pretrained`,
written by `export_pretrained`) or the official release (`official_run`).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from anifacegan_jax import checkpointing, pretrained, recon_step
from anifacegan_jax import train_step as ts
from anifacegan_jax.curriculum import ConfigError
from anifacegan_jax.face3d import morphable
from anifacegan_jax.face3d.morphable import MorphableArrays
from anifacegan_jax.models.discriminator import Discriminator
from anifacegan_jax.models.generator import AnimatableGenerator, init_generator
from anifacegan_jax.models.priors import GaussianPrior, Prior, load_prior
from anifacegan_jax.models.recon import ReconNet, load_deep3d_recon
from anifacegan_jax.synthfaces import procedural
from anifacegan_jax.types import PyTree

PRIOR_FILE = "file:"


def build_generator(config: ml_collections.ConfigDict) -> AnimatableGenerator:
  """The generator of config.model."""
  return AnimatableGenerator(**config.model.to_dict())


def generator_params_shape(generator: AnimatableGenerator) -> PyTree:
  """The generator's parameter tree as ShapeDtypeStructs (what a restore fills in)."""
  return jax.eval_shape(lambda: init_generator(generator, jax.random.key(0))["params"])


def build_models(config: ml_collections.ConfigDict) -> tuple[AnimatableGenerator, Discriminator]:
  """The generator from config.model and the discriminator for the stages' resolution."""
  generator = build_generator(config)
  discriminator = Discriminator(resolution=int(config.stages[0].resolution),
                                fade_in=bool(config.discriminator.fade_in),
                                max_channels=int(config.discriminator.max_channels))
  return generator, discriminator


def build_optimizers(config: ml_collections.ConfigDict):
  o = config.optim
  # Configs saved before optim.manifold_lr existed trained the manifolds at g_lr.
  return ts.make_optimizers(g_lr=o.g_lr, deform_lr=o.deform_lr, d_lr=o.d_lr,
                            clip_norm=o.clip_norm, b1=o.b1, b2=o.b2,
                            manifold_lr=o.get("manifold_lr", o.g_lr))


def prior_template(config: ml_collections.ConfigDict) -> Prior:
  """A prior with the structure a checkpoint of this config holds (for restore targets)."""
  if config.prior.startswith(PRIOR_FILE):
    return load_prior(pathlib.Path(config.prior[len(PRIOR_FILE):]).expanduser())
  return GaussianPrior.standard()


def load_morphable_model(config: ml_collections.ConfigDict) -> morphable.MorphableModel:
  """The 3DMM of the run (numpy): config.face_model (a BFM .mat / .npz), or the embedded
  procedural model when it is empty and the data are SynthFaces."""
  if config.face_model:
    return morphable.load_model(pathlib.Path(config.face_model).expanduser())
  if config.dataset.name != "synth_faces":
    raise ConfigError(
        "config.face_model is empty but the dataset is not SynthFaces: give the BFM file "
        "(Deep3DFaceRecon's BFM/BFM_model_front.mat) or set the imitation weights to 0")
  return procedural.load_procedural()


def load_face_model(config: ml_collections.ConfigDict) -> MorphableArrays:
  """The 3DMM the imitation losses follow, as the arrays the training step takes."""
  return load_morphable_model(config).arrays()


def load_recon(config: ml_collections.ConfigDict) -> tuple[ReconNet, PyTree]:
  """The face-reconstruction network of L_lm named by config.recon (model, variables).

  A shipped model's name ('synthfaces') or a directory: a model folder holding its
  reconstruction network (`anifacegan_jax.pretrained`)
  or a `python -m anifacegan_jax.train_recon` workdir (its newest checkpoint; it must
  have been trained for this run's 3DMM, config.face_model); a file is Deep3DFaceRecon's
  `epoch_20.pth` (the official ResNet-50 at 224², BFM coefficients).
  """
  path = pathlib.Path(config.recon).expanduser()
  if config.recon in pretrained.SHIPPED:  # a shipped model's network, by name
    path = pretrained.model_dir(config.recon)
  if path.is_dir() and pretrained.has_recon(path):  # a model folder's own network
    return pretrained.read_recon(path)
  if path.is_dir():
    model, variables, saved = recon_step.load_trained(path)
    if saved.get("face_model", "") != config.face_model:
      raise ConfigError(
          f"config.recon={config.recon} was trained for the 3DMM "
          f"face_model={saved.get('face_model', '')!r} but this run imitates "
          f"face_model={config.face_model!r}: the coefficients would not match")
    return model, variables
  if path.is_file():
    model = ReconNet()
    return model, load_deep3d_recon(path, model)
  raise ConfigError(f"config.recon={config.recon}: no such file or directory (expected "
                    "a train_recon workdir or Deep3DFaceRecon's epoch_20.pth)")


@dataclasses.dataclass(frozen=True)
class Run:
  """A trained run: its config, generator definition, EMA weights and latent prior; `identity`
  (z_id (80,), ε (80,)) when the run is one face (an inversion), else None."""

  config: ml_collections.ConfigDict
  generator: AnimatableGenerator
  ema_params: PyTree
  prior: Prior
  step: int
  identity: tuple[np.ndarray, np.ndarray] | None = None


def load_run(workdir: str | pathlib.Path, step: int | None = None) -> Run:
  """Config, EMA generator and prior of `workdir` (newest checkpoint unless `step`)."""
  config = checkpointing.restore_config(workdir, step)
  generator = build_generator(config)
  target = dict(step=jax.ShapeDtypeStruct((), jnp.int32), prior=prior_template(config),
                ema_params=generator_params_shape(generator))
  state = checkpointing.restore_fields(workdir, target, step)  # no D, no optimizer states
  return Run(config=config, generator=generator, ema_params=state["ema_params"],
             prior=state["prior"], step=int(state["step"]))


# The official release's files, relative to its root (the AniFaceGAN repository layout).
OFFICIAL_FILES = dict(generator="checkpoints/generator.pth", ema="checkpoints/ema.pth",
                      deformation="checkpoints/dif.pth",
                      identity_vae="pretrained_vaes/identity/vae.pth",
                      expression_vae="pretrained_vaes/expression/vae.pth")


def official_run(release_dir: str | pathlib.Path, config: ml_collections.ConfigDict) -> Run:
  """A Run of the official AniFaceGAN weights (`porting.official_generator`: double warp).

  Args:
    release_dir: the release's root: checkpoints/{generator,ema,dif}.pth (ema.pth optional,
      preferred: the released samples use the EMA weights) and pretrained_vaes/{identity,
      expression}/vae.pth. Without the VAEs, config.prior = 'file:<path>' (a `fit_prior` file)
      supplies the latent prior.
    config: sampling settings (resolution from stages[0], camera prior, psi, chunk_size; e.g.
      configs/ffhq.py); its model fields are ignored.
  Raises:
    FileNotFoundError naming the missing files; porting.CheckpointLayoutError for bad ones.
  """
  from anifacegan_jax import porting
  from anifacegan_jax.models.vae import load_official_prior

  root = pathlib.Path(release_dir).expanduser()
  paths = {name: root / rel for name, rel in OFFICIAL_FILES.items()}
  missing = [str(paths[n]) for n in ("generator", "deformation") if not paths[n].is_file()]
  if missing:
    raise FileNotFoundError(f"official weights not found: {', '.join(missing)}; expected the "
                            f"AniFaceGAN release layout under {root}: "
                            + ", ".join(OFFICIAL_FILES.values()))
  ema = paths["ema"] if paths["ema"].is_file() else None
  generator, variables = porting.load_official(paths["generator"], paths["deformation"],
                                               ema_path=ema)
  if paths["identity_vae"].is_file() and paths["expression_vae"].is_file():
    prior = load_official_prior(paths["identity_vae"], paths["expression_vae"])
  elif config.prior.startswith(PRIOR_FILE):
    prior = prior_template(config)  # the file itself
  else:
    raise FileNotFoundError(
        f"{paths['identity_vae']} / {paths['expression_vae']} not found: the official latent "
        "prior is its two VAEs; give them, or a prior fitted with `python -m "
        "anifacegan_jax.fit_prior` as --config.prior=file:<path>")
  return Run(config=config, generator=generator, ema_params=variables["params"], prior=prior,
             step=0)


def load_pretrained(name: str | os.PathLike) -> Run:
  """The Run of a shipped model ('synthfaces') or a model folder (`export_pretrained`).

  Raises:
    FileNotFoundError naming the folder or file; pretrained.PretrainedError for a file that
    does not fit.
  """
  path = pretrained.model_dir(name)
  config = pretrained.read_config(path)
  try:
    generator = build_generator(config)
  except (AttributeError, KeyError, TypeError) as error:
    raise pretrained.PretrainedError(
        f"{path / pretrained.CONFIG}: not a run config this version reads ({error!r})") from error
  return Run(config=config, generator=generator,
             ema_params=pretrained.read_generator(path, generator_params_shape(generator)),
             prior=pretrained.read_prior(path), step=int(pretrained.read_info(path).get("step", 0)),
             identity=pretrained.read_identity(path))


def export_pretrained(workdir: str | os.PathLike, out: str | os.PathLike, *, recon: str = "",
                      step: int | None = None,
                      eval_resolution: int | None = None) -> pathlib.Path:
  """Pack the EMA generator, config and prior of the run in `workdir` (newest checkpoint unless
  `step`), and the `train_recon` network in `recon` if given, into the model folder `out`;
  `eval_resolution` replaces the config's (the render size the network reads)."""
  run = load_run(workdir, step)
  recon_parts = None
  if recon:  # read before anything is written
    _, variables, recon_config = recon_step.load_trained(recon)
    recon_parts = (recon_config, variables, str(pathlib.Path(recon).name))
  return pretrained.write(out, run.config, run.ema_params, run.prior, step=run.step,
                          source=str(pathlib.Path(workdir).name), recon=recon_parts,
                          eval_resolution=eval_resolution)
