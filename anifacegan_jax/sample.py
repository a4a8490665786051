"""Render samples of a trained run from its workdir alone.

  python -m anifacegan_jax.sample --workdir=/tmp/afg [--out=grid.png] [--psi=0.7]

Writes a PNG grid: rows = identities, columns = expressions (neutral first) × yaws.
"""

from absl import app, flags

from anifacegan_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir (holds checkpoints/).")
flags.DEFINE_string("out", "", "Output PNG (default <workdir>/samples/grid_<step>.png).")
flags.DEFINE_integer("num_identities", 4, "Rows of the grid.")
flags.DEFINE_integer("num_expressions", 3, "Expressions per row (the first is neutral).")
flags.DEFINE_list("yaws", ["-0.35", "0", "0.35"], "Yaw offsets from frontal, radians.")
flags.DEFINE_float("psi", None, "Truncation ψ (default: the run's config.psi).")
flags.DEFINE_integer("resolution", None, "Image size (default: the training resolution).")
flags.DEFINE_integer("seed", 0, "Seed of identities, expressions and noise.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from anifacegan_jax import sampling
  path = sampling.write_grid(
      FLAGS.workdir, out=FLAGS.out or None, num_identities=FLAGS.num_identities,
      num_expressions=FLAGS.num_expressions, yaws=[float(y) for y in FLAGS.yaws], psi=FLAGS.psi,
      resolution=FLAGS.resolution, seed=FLAGS.seed, step=FLAGS.step)
  print(path)


if __name__ == "__main__":
  cli.run(main)
