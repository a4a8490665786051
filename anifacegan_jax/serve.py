"""An interactive viewer in the browser: identity, expression and pose controls on a trained
model, with depth and normals views, video recording and mesh download.

  python -m anifacegan_jax.serve --pretrained=synthfaces          # the shipped model
  python -m anifacegan_jax.serve --workdir=W                      # a training run's newest step
  python -m anifacegan_jax.serve --official_dir=AniFaceGAN --config=configs/ffhq.py
  python -m anifacegan_jax.serve --pretrained=synthfaces --port=0 --resolutions=64,128

Then open the printed URL. The server binds 127.0.0.1 (this machine only) unless --host says
otherwise; recordings are written to --out (default <workdir>/viewer, or ./viewer without a
--workdir). Every resolution is compiled once, on its first frame (the default one before the
URL is printed).
"""

import pathlib

from absl import app, flags, logging

from anifacegan_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir to view (newest checkpoint, or --step); "
                    "with --pretrained / --official_dir only the default home of --out.")
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface; the "
                    "viewer has no authentication).")
flags.DEFINE_integer("port", 8000, "Port to listen on (0: any free port).")
flags.DEFINE_string("out", "", "Folder of recorded videos (default <workdir>/viewer, else ./viewer).")
flags.DEFINE_integer("resolution", None, "Default image size (default: the training resolution).")
flags.DEFINE_list("resolutions", [], "Image sizes the page offers (default: the default size "
                  "and twice it).")
flags.DEFINE_float("psi", None, "Initial truncation ψ (default: the run's config.psi).")
flags.DEFINE_integer("seed", 0, "Initial identity seed.")
flags.DEFINE_integer("step", None, "Checkpoint step of --workdir (default: newest).")
flags.DEFINE_bool("warmup", True, "Compile and draw the default frame before printing the URL.")
cli.define_run_flags()


def _resolutions(default: int) -> tuple[int, ...]:
  if not FLAGS.resolutions:
    return (default, 2 * default)
  try:
    sizes = tuple(int(r) for r in FLAGS.resolutions)
  except ValueError:
    raise ValueError(f"--resolutions={','.join(FLAGS.resolutions)}: expected whole numbers such "
                     "as 64,128") from None
  if any(not 16 <= r <= 1024 for r in sizes):
    raise ValueError(f"--resolutions={','.join(FLAGS.resolutions)}: each size must be in "
                     "[16, 1024]")
  return sizes


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from anifacegan_jax import experiment
  from anifacegan_jax.viewer import frames, server

  if not 0 <= FLAGS.port <= 65535:
    raise ValueError(f"--port={FLAGS.port}: expected a port number in [0, 65535]")
  run = cli.given_run()
  if run is None:
    if not FLAGS.workdir:
      raise ValueError("give a model to view: --pretrained=synthfaces, --workdir=<training "
                       "run> or --official_dir=<release> --config=...")
    run = experiment.load_run(FLAGS.workdir, FLAGS.step)
    name = f"{pathlib.Path(FLAGS.workdir).name}"
  else:
    name = FLAGS.pretrained or pathlib.Path(FLAGS.official_dir).name
  out = FLAGS.out or (pathlib.Path(FLAGS.workdir) / "viewer" if FLAGS.workdir else "viewer")
  out = cli.require_writable(out, "--out")
  default = int(FLAGS.resolution or run.config.stages[0].resolution)
  if not 16 <= default <= 1024:
    raise ValueError(f"--resolution={default}: expected a size in [16, 1024]")
  renderer = frames.FrameRenderer(run, resolutions=_resolutions(default), resolution=default,
                                  psi=FLAGS.psi, seed=FLAGS.seed)
  if FLAGS.warmup:
    logging.info("compiling the %d² frame", default)
    renderer.png(renderer.defaults)
  httpd = server.make_server(renderer, host=FLAGS.host, port=FLAGS.port, out_dir=out, name=name)
  print(f"viewer of {name}: open {httpd.url} (Ctrl-C stops it; recordings go to {out})",
        flush=True)
  try:
    httpd.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    httpd.server_close()


if __name__ == "__main__":
  cli.run(main)
