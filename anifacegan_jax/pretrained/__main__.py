"""Pack a trained run into a model folder (see `anifacegan_jax.pretrained`).

  python -m anifacegan_jax.pretrained --workdir=RUN --recon=RECON_RUN --out=DIR [--step=N]

Then `sample` / `evaluate --pretrained=DIR` use it like the shipped models.
"""

from absl import app, flags

from anifacegan_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir whose EMA generator, config and prior to pack.")
flags.DEFINE_string("out", None, "Model folder to write (created; its files are replaced).")
flags.DEFINE_string("recon", "", "A train_recon workdir to pack with it (the network that reads "
                    "the model for control metrics).")
flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
flags.DEFINE_integer("eval_resolution", None, "Render size of the metrics the network reads "
                     "(default: the run's config.eval_resolution).")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from anifacegan_jax import experiment
  if FLAGS.eval_resolution is not None and FLAGS.eval_resolution < 0:
    raise ValueError(f"--eval_resolution={FLAGS.eval_resolution}: expected a size ≥ 0")
  out = experiment.export_pretrained(FLAGS.workdir, FLAGS.out, recon=FLAGS.recon, step=FLAGS.step,
                          eval_resolution=FLAGS.eval_resolution)
  for path in sorted(out.iterdir()):
    print(f"{path}  {path.stat().st_size / 2**20:.2f} MiB")


if __name__ == "__main__":
  cli.run(main)
