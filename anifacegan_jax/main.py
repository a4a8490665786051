"""Train AniFaceGAN.

  python -m anifacegan_jax.main --config=configs/synthface.py:tiny --workdir=/tmp/afg
  python -m anifacegan_jax.main --config=configs/ffhq.py --workdir=... \
      --config.dataset.manual_dir=/data/ffhq_aligned

A workdir with checkpoints is resumed automatically. Several processes (hosts) train together
when given a coordinator (or under SLURM / on a TPU pod, detected): run the same command in each,

  python -m anifacegan_jax.main ... --coordinator_address=host0:12345 --num_processes=2 \
      --process_id=0      # and --process_id=1 on the other; see launch/ and distributed.py
"""

from absl import app, flags, logging

from anifacegan_jax import cli
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and samples.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                  "Multi-process training: 'auto' starts it when a coordinator is given or a "
                  "SLURM / TPU pod job is detected.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (env "
                    "JAX_COORDINATOR_ADDRESS).")
flags.DEFINE_integer("num_processes", None, "Number of processes (env JAX_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", None, "This process's id in [0, num_processes) (env "
                     "JAX_PROCESS_ID).")
flags.DEFINE_integer("heartbeat_timeout", 100, "Seconds after which the other processes stop "
                     "with an error when one has died.")
flags.DEFINE_integer("step", None, "Resume from the workdir's checkpoint at this step instead "
                     "of the newest; newer checkpoints are moved to <workdir>/checkpoints_after_"
                     "<step>_<n>/, not deleted.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.require_writable(FLAGS.workdir, "--workdir")
  from anifacegan_jax import distributed
  distributed.initialize(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes,
                         FLAGS.process_id, heartbeat_timeout_seconds=FLAGS.heartbeat_timeout)
  logging.info("%s", distributed.describe())
  logging.info("config:\n%s", FLAGS.config)
  train(FLAGS.config, FLAGS.workdir, step=FLAGS.step)


def train(config, workdir: str, step: int | None = None) -> None:
  """Train (or resume) `config` in `workdir`, as the command line does; the way in for scripts
  (benchmarks/) that build their configs in Python. TensorFlow (tf.data only) is kept off the
  accelerators before the training loop is imported."""
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  from anifacegan_jax import training
  training.train_and_evaluate(config, workdir, step=step)


if __name__ == "__main__":
  cli.run(main)
