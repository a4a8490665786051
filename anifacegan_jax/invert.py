"""One photo to an animated 3D face: invert a square face photo into a trained model, optionally
fine-tune the model on it, and save the result as a model folder that `sample` and `serve` take.

  python -m anifacegan_jax.invert --pretrained=synthfaces --image=face.png --out=DIR
  python -m anifacegan_jax.invert --workdir=W --image=face.png --coefficients=face.mat \\
      --finetune_steps=100 --out=DIR
  python -m anifacegan_jax.sample --pretrained=DIR --workdir=DIR --mode=video --trajectory=blend
  python -m anifacegan_jax.serve --pretrained=DIR

The photo must be a square crop around the face, framed as the model's training images. Without
--coefficients the model's reconstruction network reads the starting coefficients and pose. DIR
receives the model folder (config.json, generator.msgpack, prior.npz, identity.npz, model.json)
and input.png, inversion.png (input | start | inversion | fine-tuned), loss.png (rewritten every
20 steps while it runs: the loss curve), inversion.json.
"""

import pathlib

from absl import app, flags

from anifacegan_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("pretrained", "", "A shipped model ('synthfaces') or a model folder.")
flags.DEFINE_string("workdir", None, "A training workdir (newest checkpoint, or --step).")
flags.DEFINE_integer("step", None, "Checkpoint step of --workdir.")
flags.DEFINE_string("image", None, "The photo: a square PNG / JPEG crop around one face.")
flags.DEFINE_string("coefficients", "", "Its Deep3DFaceRecon .mat (else the reconstruction "
                    "network reads them).")
flags.DEFINE_string("out", None, "Output model folder.")
flags.DEFINE_integer("steps", 200, "Adam steps on z_id, ε and the camera.")
flags.DEFINE_float("lr", 0.03, "Their learning rate.")
flags.DEFINE_float("perceptual_weight", 0.1, "Weight of the perceptual (FID Inception feature) "
                   "distance; 0: pixels only.")
flags.DEFINE_float("latent_weight", 1e-3, "Weight of the latents' distance from the start.")
flags.DEFINE_integer("finetune_steps", 0, "Pivotal-tuning steps of the radiance networks (0: none).")
flags.DEFINE_float("finetune_lr", 1e-4, "Their learning rate.")
flags.DEFINE_integer("resolution", None, "Render size (default: the training resolution).")
flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")
flags.mark_flags_as_required(["image", "out"])

CURVE_EVERY = 20  # steps between updates of <out>/loss.png


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from anifacegan_jax import animation, experiment, inversion

  if bool(FLAGS.pretrained) == bool(FLAGS.workdir):
    raise ValueError("give the model to invert into: --pretrained=synthfaces (or a model folder) "
                     "or --workdir=<training run>, one of them")
  settings = inversion.Settings(
      steps=FLAGS.steps, lr=FLAGS.lr, perceptual_weight=FLAGS.perceptual_weight,
      latent_weight=FLAGS.latent_weight, finetune_steps=FLAGS.finetune_steps,
      finetune_lr=FLAGS.finetune_lr, resolution=FLAGS.resolution)
  settings.validate()
  out = cli.require_writable(FLAGS.out, "--out")
  run = (experiment.load_pretrained(FLAGS.pretrained) if FLAGS.pretrained
         else experiment.load_run(FLAGS.workdir, FLAGS.step))
  resolution = settings.resolution or int(run.config.stages[0].resolution)
  photo = inversion.load_photo(FLAGS.image, resolution)
  estimate = (inversion.estimate_from_file(FLAGS.coefficients) if FLAGS.coefficients
              else inversion.estimate_from_photo(run, photo))
  bars = {}

  def progress(stage, step, steps, losses):
    if FLAGS.progress:
      if stage not in bars:
        bars[stage] = animation.ProgressBar(f"{stage}", steps)
      bars[stage](step)
    if step % CURVE_EVERY == 0 or step == steps:  # the curve so far, to watch while it runs
      inversion.loss_curve(losses).save(out / "loss.png")

  result = inversion.invert(run, photo, estimate, settings, progress=progress)
  folder = inversion.save(run, result, photo, out, estimate=estimate, settings=settings,
                          image_path=str(pathlib.Path(FLAGS.image).expanduser()))
  final = ", ".join(f"{k} {v[-1]:.4g}" for k, v in result.losses.items() if v)
  print(f"{folder}: inverted ({final}); animate it with\n  python -m anifacegan_jax.sample "
        f"--pretrained={folder} --workdir={folder} --mode=video")


if __name__ == "__main__":
  cli.run(main)
