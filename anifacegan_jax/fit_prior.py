"""Fit the z_id / z_exp prior (coefficient VAEs or a Gaussian) to 3DMM coefficients.

  python -m anifacegan_jax.fit_prior --coefficients=synth_faces:64 --out=/tmp/prior.npz
  python -m anifacegan_jax.fit_prior --coefficients=/data/ffhq/mats --out=prior.npz \
      --official_dir=/tmp/pretrained_vaes
  python -m anifacegan_jax.fit_prior --coefficients=table.npz --out=prior.npz --kind=gaussian

--coefficients is one of:
  * `<name>:<config>` a tfds dataset of this package (`synth_faces:64`, `ffhq_faces:128`; with
    --data_dir, --split, and --num_train/--num_test for SynthFaces or --manual_dir for FFHQ);
  * a folder of Deep3DFaceRecon `.mat` results (or a folder whose `mats/` holds them);
  * an `.npz` with arrays `id` (M, 80) and `exp` (M', 64).
Writes the prior with `models.priors.save_prior` (an .npz that `load_prior` reads) and prints its
path; --official_dir also writes both VAEs as official `{identity,expression}/vae.pth`.
"""

from __future__ import annotations

import pathlib

from absl import app, flags, logging

from anifacegan_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("coefficients", None, "Coefficient source: tfds 'name:config', a folder of "
                    ".mat files, or an .npz with 'id' and 'exp'.")
flags.DEFINE_string("out", None, "Output prior file (.npz).")
flags.DEFINE_enum("kind", "vae", ["vae", "gaussian"], "Coefficient VAEs or a full Gaussian.")
flags.DEFINE_string("data_dir", "", "tfds data_dir ('' = tfds default).")
flags.DEFINE_string("split", "train", "tfds split to read.")
flags.DEFINE_integer("num_train", 20_000, "SynthFaces: training examples (as config.dataset).")
flags.DEFINE_integer("num_test", 1_000, "SynthFaces: held-out examples (as config.dataset).")
flags.DEFINE_string("manual_dir", "", "FFHQ: images/ + mats/ dir, to prepare the dataset.")
flags.DEFINE_integer("steps", 20_000, "VAE: Adam steps per VAE.")
flags.DEFINE_integer("batch_size", 256, "VAE: minibatch rows.")
flags.DEFINE_float("beta", 2.5e-4, "VAE: KL weight (see models/priors.py vae_loss).")
flags.DEFINE_float("learning_rate", 1e-3, "VAE: peak Adam rate (cosine-decayed to 1%).")
flags.DEFINE_integer("log_every", 1000, "VAE: steps between progress logs.")
flags.DEFINE_integer("seed", 0, "VAE: initialisation and minibatch seed.")
flags.DEFINE_string("official_dir", "", "VAE: also export <dir>/{identity,expression}/vae.pth.")
flags.mark_flags_as_required(["coefficients", "out"])


def _from_npz(path: pathlib.Path):
  import numpy as np
  try:
    with np.load(path, allow_pickle=False) as contents:
      arrays = {k: contents[k] for k in contents.files}
  except (OSError, ValueError, EOFError) as error:
    raise ValueError(f"{path}: not a readable .npz ({error})") from error
  for field in ("id", "exp"):
    if field not in arrays:
      raise ValueError(f"{path}: missing array '{field}'; expected 'id' (M, 80) and 'exp' (M, 64)")
  return arrays["id"], arrays["exp"]


def _from_mats(folder: pathlib.Path):
  import numpy as np
  from anifacegan_jax.face3d import morphable
  paths = sorted(folder.glob("*.mat")) or sorted((folder / "mats").glob("*.mat"))
  if not paths:
    raise FileNotFoundError(f"{folder}: no .mat files (nor in {folder / 'mats'}); expected "
                            "Deep3DFaceRecon results")
  coefficients = [morphable.read_coefficients_mat(p)[0] for p in paths]
  return (np.stack([np.asarray(c.id) for c in coefficients]),
          np.stack([np.asarray(c.exp) for c in coefficients]))


def _from_tfds(spec: str, data_dir: str, split: str, num_train: int, num_test: int,
               manual_dir: str):
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")  # tf.data only: keep TensorFlow off the accelerators
  from anifacegan_jax.data import datasets, ffhq
  name, config = spec.split(":", 1)
  if name not in datasets.BUILDERS:
    raise ValueError(f"--coefficients={spec}: dataset must be one of {datasets.BUILDERS}")
  try:
    builder = datasets.prepared_builder(name, config, data_dir=data_dir, manual_dir=manual_dir,
                                        num_train=num_train, num_test=num_test)
  except ffhq.DatasetPreparationError as error:
    raise ValueError(f"{error} (fit_prior: pass --manual_dir)") from error
  table = datasets.coefficient_table(builder, split)
  return table[:, :80], table[:, 80:144]


def read_coefficients(source: str, data_dir: str = "", split: str = "train",
                      num_train: int = 20_000, num_test: int = 1_000, manual_dir: str = ""):
  """(z_id (M, 80), z_exp (M', 64)) numpy tables from a --coefficients source (see module doc)."""
  path = pathlib.Path(source).expanduser()
  if path.suffix == ".npz":
    if not path.is_file():
      raise FileNotFoundError(f"{path}: no such .npz file")
    return _from_npz(path)
  if path.is_dir():
    return _from_mats(path)
  if ":" in source:
    return _from_tfds(source, data_dir, split, num_train, num_test, manual_dir)
  raise FileNotFoundError(f"--coefficients={source}: not an .npz file, a folder of .mat files, "
                          "or a tfds dataset such as 'synth_faces:64' or 'ffhq_faces:128'")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax
  from anifacegan_jax.models import priors, vae
  z_id, z_exp = read_coefficients(FLAGS.coefficients, FLAGS.data_dir, FLAGS.split,
                                  FLAGS.num_train, FLAGS.num_test, FLAGS.manual_dir)
  z_id = priors.check_table(z_id, 80, f"{FLAGS.coefficients}: identity coefficients")
  z_exp = priors.check_table(z_exp, 64, f"{FLAGS.coefficients}: expression coefficients")
  logging.info("fitting a %s prior to %d identity / %d expression rows", FLAGS.kind,
               len(z_id), len(z_exp))
  if FLAGS.kind == "gaussian":
    prior = priors.GaussianPrior.fit(z_id, z_exp)
  else:
    fit_id, fit_exp = priors.fit_vaes(
        z_id, z_exp, jax.random.key(FLAGS.seed), steps=FLAGS.steps, batch_size=FLAGS.batch_size,
        beta=FLAGS.beta, learning_rate=FLAGS.learning_rate, log_every=FLAGS.log_every)
    prior = vae.VAEPrior.from_vaes(fit_id.params, fit_exp.params)
    if FLAGS.official_dir:
      for path in vae.save_official_vaes(fit_id.params, fit_exp.params, FLAGS.official_dir):
        logging.info("wrote %s", path)
  print(priors.save_prior(prior, FLAGS.out))


if __name__ == "__main__":
  cli.run(main)
