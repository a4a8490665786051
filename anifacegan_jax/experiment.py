"""A run's config turned into its parts, with no TensorFlow, tfds or clu on the import path.

The training loop (`train`), inference (`sampling`, `pretrained`), evaluation and the
accelerator scripts of benchmarks/ build the same objects from the same config fields here:
the generator and discriminator, the optimizers, the structure of the latent prior a checkpoint
holds, the 3DMM of the imitation losses and the reconstruction network of L_lm.
"""

from __future__ import annotations

import pathlib

import ml_collections

from anifacegan_jax import pretrained
from anifacegan_jax import train_step as ts
from anifacegan_jax.curriculum import ConfigError
from anifacegan_jax.face3d import morphable, procedural, recon_step
from anifacegan_jax.face3d.morphable import MorphableArrays
from anifacegan_jax.face3d.recon import ReconNet, load_deep3d_recon
from anifacegan_jax.models.discriminator import Discriminator
from anifacegan_jax.models.generator import AnimatableGenerator
from anifacegan_jax.models.priors import GaussianPrior, Prior, load_prior
from anifacegan_jax.types import PyTree

PRIOR_FILE = "file:"


def build_models(config: ml_collections.ConfigDict) -> tuple[AnimatableGenerator, Discriminator]:
  """The generator from config.model and the discriminator for the stages' resolution."""
  generator = AnimatableGenerator(**config.model.to_dict())
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


def load_face_model(config: ml_collections.ConfigDict) -> MorphableArrays:
  """The 3DMM the imitation losses follow: config.face_model, or the procedural model."""
  if config.face_model:
    return morphable.load_model(pathlib.Path(config.face_model).expanduser()).arrays()
  if config.dataset.name != "synth_faces":
    raise ConfigError(
        "config.face_model is empty but the dataset is not SynthFaces: give the BFM file "
        "(Deep3DFaceRecon's BFM/BFM_model_front.mat) or set the imitation weights to 0")
  return procedural.load_procedural().arrays()


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
    return pretrained.load_recon(path)
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
