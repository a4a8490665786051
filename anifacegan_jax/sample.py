"""Render samples, videos, line textures, depth maps and meshes of a trained run from its workdir
(or of a shipped model: --pretrained=synthfaces, --workdir then only receives the files).

  python -m anifacegan_jax.sample --workdir=W [--psi=0.7]            # PNG grid (the default)
  python -m anifacegan_jax.sample --workdir=W --mode=video           # neutral → expression GIF
  python -m anifacegan_jax.sample --workdir=W --mode=video --trajectory=yaw --expression=jaw_open
  python -m anifacegan_jax.sample --workdir=W --mode=video --trajectory=clip.npz --format=mp4
  python -m anifacegan_jax.sample --workdir=W --mode=reel --num_identities=4  # one video, depth too
  python -m anifacegan_jax.sample --workdir=W --mode=lines --trajectory=yaw
  python -m anifacegan_jax.sample --workdir=W --mode=depth --expression=01626.mat
  python -m anifacegan_jax.sample --workdir=W --mode=mesh --format=obj --num_identities=3
  python -m anifacegan_jax.sample --workdir=OUT --pretrained=synthfaces --mode=video
  python -m anifacegan_jax.sample --workdir=OUT --official_dir=AniFaceGAN --config=configs/ffhq.py

grid: rows = identities, columns = expressions (neutral first) × yaws.
video / reel / lines / depth / mesh render one trajectory per identity (seeds --seed, --seed+1, ...;
reel tiles them into one video, a row per identity, each frame beside its depth):
  --trajectory=blend  neutral → --expression while the yaw sweeps ±--yaw_amplitude (render.py);
  --trajectory=yaw    a yaw sweep at --expression ('' = neutral);
  --trajectory=PATH   driven by a real video: an .npz of exp (T, 64) and angles (T, 3), or a folder
                      of Deep3DFaceRecon .mat files (one per frame, sorted by name).
--expression: '' (drawn from the run's prior), a Deep3DFaceRecon .mat / .npz with 'exp', or
SynthFaces blendshape names ('jaw_open', 'smile_left=0.8,smile_right=0.8').
depth and mesh default to 2 frontal frames (neutral and the expression); video and lines to 50
frames and a ±0.35 yaw sweep. Files land in --out (default <workdir>/samples).
"""

import pathlib

from absl import app, flags

from anifacegan_jax import cli

MODES = ("grid", "video", "reel", "lines", "depth", "mesh")
VIDEO_FORMATS = ("gif", "webp", "mp4")
FORMATS = {"video": VIDEO_FORMATS, "reel": VIDEO_FORMATS, "mesh": ("ply", "obj")}

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir (holds checkpoints/).")
flags.DEFINE_enum("mode", "grid", MODES, "What to write.")
flags.DEFINE_string("out", "", "grid: output PNG (default <workdir>/samples/grid_<step>.png); "
                    "other modes: output folder (default <workdir>/samples).")
flags.DEFINE_integer("num_identities", None, "Grid rows / identities to render (default: grid "
                     "and reel 4, other modes 1).")
flags.DEFINE_integer("num_expressions", 3, "grid: expressions per row (the first is neutral).")
flags.DEFINE_list("yaws", ["-0.35", "0", "0.35"], "grid: yaw offsets from frontal, radians.")
flags.DEFINE_bool("depth", False, "grid: a depth row under each identity's row.")
flags.DEFINE_string("trajectory", "blend", "'blend', 'yaw', or a driving .npz / .mat folder.")
flags.DEFINE_string("expression", "", "Target expression: '' (prior), .mat/.npz, or names.")
flags.DEFINE_integer("frames", None, "Frames of a handcrafted trajectory (default: 50; depth and "
                     "mesh: 2).")
flags.DEFINE_float("yaw_amplitude", None, "Yaw sweep ± radians (default 0.35; depth/mesh 0).")
flags.DEFINE_integer("smooth", 1, "Moving-average window (odd) over a driving sequence's frames.")
flags.DEFINE_bool("use_pose", True, "Drive the camera with a sequence's angles (else frontal).")
flags.DEFINE_string("format", "", "video: gif (default), webp or mp4; mesh: ply (default) or obj.")
flags.DEFINE_float("fps", 25.0, "Video frame rate.")
flags.DEFINE_float("row", 0.6, "lines: the pixel row, as a fraction of the height.")
flags.DEFINE_integer("batch_size", 8, "Frames rendered per device call.")
flags.DEFINE_float("psi", None, "Truncation ψ (default: the run's config.psi).")
flags.DEFINE_integer("resolution", None, "Image size (default: the training resolution).")
flags.DEFINE_integer("seed", 0, "Seed of identities, expressions and noise.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")
cli.define_run_flags()
flags.mark_flags_as_required(["workdir"])



def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from anifacegan_jax import sampling
  if FLAGS.out:
    cli.require_writable(pathlib.Path(FLAGS.out).expanduser().parent
                         if FLAGS.mode == "grid" else FLAGS.out, "--out")
  else:
    cli.require_writable(FLAGS.workdir, "--workdir")
  run = cli.given_run()
  if FLAGS.mode == "grid":
    path = sampling.write_grid(
        FLAGS.workdir, out=FLAGS.out or None, num_identities=FLAGS.num_identities or 4,
        num_expressions=FLAGS.num_expressions, yaws=[float(y) for y in FLAGS.yaws],
        psi=FLAGS.psi, resolution=FLAGS.resolution, seed=FLAGS.seed, depth=FLAGS.depth,
        step=FLAGS.step, run=run)
    print(path)
    return
  still = FLAGS.mode in ("depth", "mesh")
  formats = FORMATS.get(FLAGS.mode, ())
  if FLAGS.format and FLAGS.format not in formats:
    raise ValueError(f"--format={FLAGS.format} does not apply to --mode={FLAGS.mode}"
                     + (f": use one of {', '.join(formats)}" if formats else ""))
  fmt = FLAGS.format or (formats[0] if formats else "")
  paths = sampling.write_animation(
      FLAGS.workdir, FLAGS.mode, out_dir=FLAGS.out or None,
      seeds=tuple(range(FLAGS.seed, FLAGS.seed + (
          FLAGS.num_identities or (4 if FLAGS.mode == "reel" else 1)))),
      trajectory=FLAGS.trajectory, expression=FLAGS.expression,
      num_frames=FLAGS.frames or (2 if still else 50),
      yaw_amplitude=FLAGS.yaw_amplitude if FLAGS.yaw_amplitude is not None else (
          0.0 if still else 0.35),
      smoothing=FLAGS.smooth, use_pose=FLAGS.use_pose, psi=FLAGS.psi,
      resolution=FLAGS.resolution, batch_size=FLAGS.batch_size, fps=FLAGS.fps,
      video_format=fmt if FLAGS.mode in ("video", "reel") else "gif",
      mesh_format=fmt if FLAGS.mode == "mesh" else "ply", row=FLAGS.row,
      progress=FLAGS.progress, step=FLAGS.step, run=run)
  print("\n".join(str(p) for p in paths))


if __name__ == "__main__":
  cli.run(main)
