"""Train the face-reconstruction network on SynthFaces' ground-truth coefficients.

  python -m anifacegan_jax.train_recon --config=configs/recon.py --workdir=/tmp/recon
  python -m anifacegan_jax.train_recon --config=configs/recon.py:tiny --workdir=/tmp/recon_tiny

A workdir with checkpoints is resumed automatically; the held-out metrics (exp RMSE, 3D landmark
error in mm) are logged, written to TensorBoard and printed as JSON at the end. Other code loads
the result with `recon_training.restore_recon(workdir)`.
"""

import json

from absl import app, flags, logging

from anifacegan_jax import cli
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints and TensorBoard events.")
config_flags.DEFINE_config_file("config", None, "Recon training configuration file.",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import tensorflow as tf  # tf.data only: keep TensorFlow off the accelerators
  tf.config.set_visible_devices([], "GPU")
  from anifacegan_jax import recon_training
  logging.info("config:\n%s", FLAGS.config)
  _, metrics = recon_training.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  print(json.dumps(metrics))


if __name__ == "__main__":
  cli.run(main)
