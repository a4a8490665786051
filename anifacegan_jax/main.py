"""Train AniFaceGAN.

  python -m anifacegan_jax.main --config=configs/synthface.py:tiny --workdir=/tmp/afg
  python -m anifacegan_jax.main --config=configs/ffhq.py --workdir=... \
      --config.dataset.manual_dir=/data/ffhq_aligned

A workdir with checkpoints is resumed automatically.
"""

from absl import app, flags, logging

from anifacegan_jax import cli
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and samples.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import tensorflow as tf  # tf.data only: keep TensorFlow off the accelerators
  tf.config.set_visible_devices([], "GPU")
  from anifacegan_jax import train
  logging.info("config:\n%s", FLAGS.config)
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  cli.run(main)
