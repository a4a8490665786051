"""End to end on the tiny SynthFaces config: train, resume (also after a kill), sample, CLI errors."""

import dataclasses
import json
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

from anifacegan_jax import animation, experiment, export, sampling, training
from configs import synthface

from conftest import save_recon_run
from mesh_files import read_depth_png, read_obj, read_ply

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(data_dir, num_steps, checkpoint_every=1):
  config = synthface.get_config("tiny")
  config.dataset.data_dir = str(data_dir)
  config.dataset.num_train = 64
  config.num_steps = num_steps
  config.checkpoint_every = checkpoint_every
  config.log_every = 1
  config.snapshot_every = 1000
  return config


def _assert_same_state(a, b):
  for tree in ("g_params", "d_params", "ema_params"):
    for x, y in zip(jax.tree_util.tree_leaves(getattr(a, tree)),
                    jax.tree_util.tree_leaves(getattr(b, tree))):
      np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp("straight")
  state = training.train_and_evaluate(_config(data_dir, 5), str(workdir))
  return workdir, state


def test_stopped_run_resumes_with_identical_results(tmp_path, data_dir, uninterrupted):
  _, reference = uninterrupted
  first = training.train_and_evaluate(_config(data_dir, 3), str(tmp_path))
  assert int(first.step) == 3
  resumed = training.train_and_evaluate(_config(data_dir, 5), str(tmp_path))
  assert int(resumed.step) == 5
  _assert_same_state(resumed, reference)
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir())[-1] == "5"
  assert list(tmp_path.glob("events.out.tfevents.*"))


def test_resume_from_an_older_step_sets_newer_checkpoints_aside(tmp_path, data_dir,
                                                                uninterrupted):
  import shutil
  workdir, reference = uninterrupted
  shutil.copytree(workdir, tmp_path / "run")
  saved = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir())
  assert saved[-1] == 5 and 3 in saved
  with pytest.raises(FileNotFoundError, match="--step=1: no such checkpoint"):
    training.train_and_evaluate(_config(data_dir, 5), str(tmp_path / "run"), step=1)
  resumed = training.train_and_evaluate(_config(data_dir, 5), str(tmp_path / "run"), step=3)
  _assert_same_state(resumed, reference)  # steps 4 and 5 again, bit for bit
  aside = tmp_path / "run" / "checkpoints_after_3_0"
  assert sorted(p.name for p in aside.iterdir()) == [str(s) for s in saved if s > 3]


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path, data_dir, uninterrupted):
  _, reference = uninterrupted
  command = [sys.executable, "-m", "anifacegan_jax.main", "--config=configs/synthface.py:tiny",
             f"--workdir={tmp_path}", f"--config.dataset.data_dir={data_dir}",
             "--config.dataset.num_train=64", "--config.num_steps=1000",
             "--config.checkpoint_every=1", "--config.snapshot_every=1000"]
  process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  try:
    while not (tmp_path / "checkpoints" / "2").is_dir():
      assert process.poll() is None and time.time() < deadline, "training did not checkpoint"
      time.sleep(0.2)
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait()
  resumed = training.train_and_evaluate(_config(data_dir, 5), str(tmp_path))
  assert int(resumed.step) == 5
  _assert_same_state(resumed, reference)


def test_sample_writes_a_grid_from_the_workdir(tmp_path, uninterrupted):
  workdir, _ = uninterrupted
  out = tmp_path / "grid.png"
  result = subprocess.run(
      [sys.executable, "-m", "anifacegan_jax.sample", f"--workdir={workdir}", f"--out={out}",
       "--num_identities=2", "--num_expressions=2", "--yaws=-0.3,0.3"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  grid = np.asarray(Image.open(out))
  assert grid.shape == (2 * 16, 4 * 16, 3) and grid.std() > 0
  run = experiment.load_run(workdir)
  again = sampling.render_grid(run, num_identities=2, num_expressions=2, yaws=(-0.3, 0.3))
  np.testing.assert_array_equal(grid, again)
  # With depth: each identity's row, then its depth row (gray).
  both = sampling.render_grid(run, num_identities=2, num_expressions=2, yaws=(-0.3, 0.3),
                              depth=True).reshape(2, 2, 16, 4 * 16, 3)
  np.testing.assert_array_equal(both[:, 0].reshape(grid.shape), grid)
  assert (both[:, 1, ..., 0] == both[:, 1, ..., 2]).all()


def test_sample_writes_a_video_from_the_workdir(tmp_path, uninterrupted):
  workdir, _ = uninterrupted
  result = subprocess.run(
      [sys.executable, "-m", "anifacegan_jax.sample", f"--workdir={workdir}", "--mode=video",
       "--frames=4", "--trajectory=yaw", "--expression=jaw_open", f"--out={tmp_path}",
       "--seed=3"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "seed 3: frames [" in result.stderr and "4/4" in result.stderr  # the progress bar
  path = tmp_path / "video_s3.gif"
  assert result.stdout.strip() == str(path)
  with Image.open(path) as video:
    assert video.n_frames == 4 and video.size == (16, 16)
  # The same seed renders identical frames; another seed another face.
  run = experiment.load_run(workdir)
  trajectory = sampling.make_trajectory(run, "yaw", expression="jaw_open", num_frames=4)
  first = animation.render_frames(run, trajectory, seed=3, batch_size=3)
  again = animation.render_frames(run, trajectory, seed=3, batch_size=4)
  np.testing.assert_array_equal(first.images, again.images)
  # Other batch sizes compile other programs: depth agrees to float rounding.
  np.testing.assert_allclose(first.depth, again.depth, atol=1e-6)
  other = animation.render_frames(run, trajectory, seed=4)
  assert np.abs(other.images.astype(int) - first.images).max() > 0
  # The reel: one video, a row per identity, each frame beside its depth.
  reel, = sampling.write_animation(workdir, "reel", out_dir=tmp_path, seeds=(3, 4),
                                   trajectory="yaw", expression="jaw_open", num_frames=4,
                                   batch_size=4, progress=False, run=run)
  assert reel.name == "reel_s3-4.gif"
  with Image.open(reel) as video:
    assert video.n_frames == 4 and video.size == (32, 32)
    video.seek(1)
    tile = np.asarray(video.convert("RGB"))
  expected = np.concatenate([first.images[1], other.images[1]], axis=0)
  assert np.abs(tile[:, :16].astype(int) - expected).mean() < 8  # GIF palette rounding
  previews = [export.depth_preview(f.depth[1], f.mask[1], run.generator.near, run.generator.far)
              for f in (first, other)]
  assert np.abs(tile[:, 16:].astype(int) - np.concatenate(previews)[..., None]).mean() < 8


def test_a_packed_run_loads_samples_and_reads_like_its_workdir(tmp_path, uninterrupted):
  from anifacegan_jax import evaluation, pretrained
  from anifacegan_jax import recon_training
  workdir, _ = uninterrupted
  save_recon_run(tmp_path / "recon", random_head=True)
  folder = tmp_path / "model"
  packed = subprocess.run(
      [sys.executable, "-m", "anifacegan_jax.pretrained", f"--workdir={workdir}",
       f"--recon={tmp_path / 'recon'}", f"--out={folder}"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert packed.returncode == 0, packed.stderr[-2000:]
  assert sorted(p.name for p in folder.iterdir()) == [
      "config.json", "generator.msgpack", "model.json", "prior.npz", "recon.json", "recon.msgpack"]
  run, reference = experiment.load_pretrained(folder), experiment.load_run(workdir)
  assert run.step == reference.step == 5 and run.config.recon == str(folder)
  for a, b in zip(jax.tree_util.tree_leaves((run.ema_params, run.prior)),
                  jax.tree_util.tree_leaves((reference.ema_params, reference.prior))):
    np.testing.assert_array_equal(a, b)
  _, variables = recon_training.restore_recon(str(tmp_path / "recon"))
  shipped = evaluation.load_reader(run, evaluation.Settings(metrics=("control",))).variables
  for a, b in zip(jax.tree_util.tree_leaves(shipped), jax.tree_util.tree_leaves(variables)):
    np.testing.assert_array_equal(a, b)
  # `sample --pretrained` renders what the workdir renders; --workdir only receives the file.
  out = tmp_path / "outputs"
  result = subprocess.run(
      [sys.executable, "-m", "anifacegan_jax.sample", f"--pretrained={folder}",
       f"--workdir={out}", "--num_identities=2", "--num_expressions=2", "--yaws=-0.3,0.3"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  grid = np.asarray(Image.open(out / "samples" / "grid_00000005.png"))
  np.testing.assert_array_equal(grid, sampling.render_grid(
      reference, num_identities=2, num_expressions=2, yaws=(-0.3, 0.3)))
  # Damaged or mismatched files are named; nothing is half-loaded.
  (folder / "generator.msgpack").write_bytes(b"not msgpack")
  with pytest.raises(pretrained.PretrainedError, match="generator.msgpack: not a msgpack file"):
    experiment.load_pretrained(folder)
  experiment.export_pretrained(workdir, folder)  # repacked without a network: the old one goes
  assert not pretrained.has_recon(folder) and experiment.load_pretrained(folder).config.recon == ""
  config = json.loads((folder / "config.json").read_text())
  config["model"]["radiance_hidden"] = 32
  (folder / "config.json").write_text(json.dumps(config))
  with pytest.raises(pretrained.PretrainedError, match=r"generator.msgpack: .* has shape"):
    experiment.load_pretrained(folder)
  with pytest.raises(FileNotFoundError, match="neither a shipped model"):
    experiment.load_pretrained(tmp_path / "nowhere")


def test_sample_writes_depth_maps_and_meshes(tmp_path, uninterrupted):
  workdir, _ = uninterrupted
  run = experiment.load_run(workdir)
  depth_files = sampling.write_animation(workdir, "depth", out_dir=tmp_path, num_frames=2,
                                         yaw_amplitude=0.0, expression="smile_left",
                                         progress=False)
  assert [p.name for p in depth_files] == ["depth_s0_f000.png", "depth_s0_f000_preview.png",
                                           "depth_s0_f001.png", "depth_s0_f001_preview.png"]
  trajectory = sampling.make_trajectory(run, "blend", expression="smile_left", num_frames=2,
                                        yaw_amplitude=0.0)
  frames = animation.render_frames(run, trajectory)
  depth = read_depth_png(depth_files[2], run.generator.near, run.generator.far)
  np.testing.assert_allclose(depth, np.clip(frames.depth[1], run.generator.near,
                                            run.generator.far), atol=(0.24 / 65535))
  for fmt in ("ply", "obj"):
    meshes = sampling.write_animation(workdir, "mesh", out_dir=tmp_path, num_frames=2,
                                      yaw_amplitude=0.0, expression="smile_left",
                                      mesh_format=fmt, progress=False)
    assert [p.name for p in meshes] == [f"mesh_s0_f000.{fmt}", f"mesh_s0_f001.{fmt}"]
    mesh = read_ply(meshes[1]) if fmt == "ply" else read_obj(meshes[1])
    assert len(mesh.vertices) == int(frames.mask[1].sum())


def test_sample_rejects_a_wrong_coefficient_file(tmp_path, uninterrupted):
  workdir, _ = uninterrupted
  np.savez(tmp_path / "clip.npz", exp=np.zeros((5, 63)), angles=np.zeros((5, 3)))
  result = subprocess.run(
      [sys.executable, "-m", "anifacegan_jax.sample", f"--workdir={workdir}", "--mode=video",
       f"--trajectory={tmp_path / 'clip.npz'}", f"--out={tmp_path}"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert "clip.npz: exp has shape (5, 63); expected (T, 64)" in result.stderr
  bad_format = subprocess.run(
      [sys.executable, "-m", "anifacegan_jax.sample", f"--workdir={workdir}", "--mode=depth",
       "--format=mp4"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert bad_format.returncode == 2
  assert "--format=mp4 does not apply to --mode=depth" in bad_format.stderr


def test_config_typo_and_missing_checkpoint_fail_clearly(tmp_path):
  typo = subprocess.run(
      [sys.executable, "-m", "anifacegan_jax.main", "--config=configs/synthface.py:tiny",
       f"--workdir={tmp_path}", "--config.batch_szie=4"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert typo.returncode == 2
  assert "the config has no field 'batch_szie'" in typo.stderr
  assert "Fields must exist in configs/synthface.py" in typo.stderr
  assert "Traceback" not in typo.stderr
  empty = subprocess.run([sys.executable, "-m", "anifacegan_jax.sample", f"--workdir={tmp_path}"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
  assert empty.returncode == 2 and "no checkpoint in" in empty.stderr
  assert "Traceback" not in empty.stderr


def test_training_stops_after_consecutive_nonfinite_steps_with_the_last_good_state(tmp_path,
                                                                                  data_dir):
  config = _config(data_dir, 6)
  config.optim.g_lr = 1e39  # finite gradients, an overflowing update: every G step is skipped
  config.max_nonfinite_steps = 2
  with pytest.raises(training.NonFiniteStop, match="step 2: 2 consecutive iterations") as stop:
    training.train_and_evaluate(config, str(tmp_path))
  assert len(str(stop.value).splitlines()) == 1
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [1, 2]
  from anifacegan_jax import checkpointing
  generator, discriminator = training.build_models(config)
  g_tx, d_tx = training.build_optimizers(config)
  target = jax.eval_shape(lambda: training.ts.create_state(
      jax.random.key(0), generator, discriminator, g_tx, d_tx, training.prior_template(config)))
  initial = training.ts.create_state(jax.random.key(config.seed), generator, discriminator, g_tx,
                                  d_tx, training.prior_template(config))
  for step in (1, 2):  # checksummed, finite, and the generator never took the bad update
    saved = checkpointing.restore_state(tmp_path, target, step)
    for a, b in zip(jax.tree_util.tree_leaves(saved.g_params),
                    jax.tree_util.tree_leaves(initial.g_params)):
      np.testing.assert_array_equal(a, b)
    assert int(saved.nonfinite) == step


def test_training_with_the_landmark_loss_logs_it(tmp_path, data_dir):
  save_recon_run(tmp_path / "recon")
  config = _config(data_dir, 2, checkpoint_every=2)
  config.imitation.landmark_weight = 1e4
  config.recon = str(tmp_path / "recon")
  state = training.train_and_evaluate(config, str(tmp_path / "run"))
  assert int(state.step) == 2 and int(state.nonfinite) == 0
  import tensorflow as tf
  values = [v.simple_value or float(tf.make_ndarray(v.tensor))
            for path in (tmp_path / "run").glob("events.out.tfevents.*")
            for event in tf.compat.v1.train.summary_iterator(str(path))
            for v in event.summary.value if v.tag == "landmark"]
  assert len(values) == 2 and all(np.isfinite(values)) and min(values) > 0


@pytest.fixture(scope="module")
def fid_weights_file(tmp_path_factory):
  """Random FID Inception weights in pytorch-fid's naming (the real ones may not be installed)."""
  from anifacegan_jax import torch_save
  from conftest import inception_pth_state_dict, random_inception_variables
  path = tmp_path_factory.mktemp("fid") / "pt_inception.pth"
  torch_save.save(inception_pth_state_dict(random_inception_variables()), path)
  return path


def test_evaluate_writes_fid_kid_and_control(tmp_path, uninterrupted, fid_weights_file,
                                             monkeypatch):
  import tensorflow as tf
  from anifacegan_jax import evaluation
  workdir, _ = uninterrupted
  save_recon_run(tmp_path / "recon", random_head=True)  # outputs that vary: DS is defined
  settings = evaluation.Settings(
      metrics=("fid", "kid", "control", "ds", "consistency", "geometry"), num_fake=4,
      num_real=4, batch_size=2, fid_weights=str(fid_weights_file), kid_subsets=5,
      kid_subset_size=3, control_num=8, ds_anchors=2, ds_variations=2, consistency_num=2,
      geometry_num=2, recon=str(tmp_path / "recon"))
  run = experiment.load_run(workdir)
  results = evaluation.evaluate(run, workdir, settings)
  assert results["fid"] > 0 and np.isfinite(results["kid"]) and results["kid_std"] >= 0
  assert {"control/exp_rmse", "control/landmark_mm", "control/landmark_depth_mm"} <= set(results)
  assert results["ds/exp"] > 0 and results["ds/pose"] > 0
  assert results["consistency/warp_error"] >= 0 and 0 < results["consistency/warp_kept"] <= 1
  assert np.isfinite(results["consistency/landmark_reprojection_px"])
  assert 0 < results["geometry/crossings"] <= 1 and 0 < results["geometry/foreground"] <= 1
  # A manifold predictor whose scalar field lies above every level: no crossing, nothing opaque
  # (the collapse `geometry` exists to flag).
  params = jax.tree_util.tree_map(lambda x: x, run.ema_params)  # a copy of the nesting
  params["manifold"]["output"]["bias"] = params["manifold"]["output"]["bias"] + 1e3
  collapsed = evaluation.geometry(dataclasses.replace(run, ema_params=params),
                                  dataclasses.replace(settings, geometry_num=2), 16)
  assert collapsed == {"geometry/crossings": 0.0, "geometry/foreground": 0.0}
  path = evaluation.write_results(workdir, run.step, results, settings)
  record = json.loads(path.read_text())
  assert path.name == "metrics_5.json" and record["step"] == 5
  assert record["metrics"]["fid"] == pytest.approx(results["fid"])
  logged = {v.tag: v.simple_value or float(tf.make_ndarray(v.tensor))
            for events in workdir.glob("events.out.tfevents.*")
            for event in tf.compat.v1.train.summary_iterator(str(events))
            for v in event.summary.value if v.tag.startswith("eval/")}
  assert logged["eval/fid"] == pytest.approx(results["fid"], rel=1e-5)
  assert "eval/control/landmark_mm" in logged

  # The real features are cached (no dataset read the second time); the generated set does not
  # depend on the batch size.
  def no_dataset(*args, **kwargs):
    raise AssertionError("the cached real features were not used")
  monkeypatch.setattr(evaluation, "real_images", no_dataset)
  from anifacegan_jax.metrics import fid_weights
  _, variables = fid_weights.load_fid_inception(fid_weights_file)
  cached = evaluation.real_features(workdir, run.config, settings, 16, variables)
  assert cached.shape == (4, 2048) and np.isfinite(cached).all()
  one, two = (np.concatenate(list(evaluation.generated_images(run, 3, resolution=16,
                                                              batch_size=b))) for b in (1, 2))
  assert one.shape == (3, 16, 16, 3) and one.dtype == np.uint8
  np.testing.assert_array_equal(one, two)

  with pytest.raises(ValueError, match=r"metrics \['lpips'\]: expected a comma-separated subset"):
    dataclasses.replace(settings, metrics=("fid", "lpips")).validate()
