"""Inversion (`python -m anifacegan_jax.invert`): photo checks, a short inversion that lowers the
image loss, and the saved model folder that `sample` animates with its one identity."""

import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from anifacegan_jax import experiment, inversion, pretrained, sampling
from anifacegan_jax.models.generator import render
from anifacegan_jax.types import Camera, Latents
from anifacegan_jax.viewer import frames

RESOLUTION = 16


def test_photos_must_be_readable_square_faces(tmp_path):
  Image.fromarray(np.full((40, 30, 3), 128, np.uint8)).save(tmp_path / "wide.png")
  Image.fromarray(np.full((20, 20, 3), 128, np.uint8)).save(tmp_path / "small.png")
  (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
  for name, message in [("wide.png", "30×40 is not square: crop a square around the face"),
                        ("small.png", "too small"), ("broken.png", "not a readable image")]:
    with pytest.raises(inversion.PhotoError, match=message):
      inversion.load_photo(tmp_path / name, RESOLUTION)
  with pytest.raises(FileNotFoundError, match="no such image"):
    inversion.load_photo(tmp_path / "missing.png", RESOLUTION)
  Image.fromarray(np.zeros((65, 64, 4), np.uint8)).save(tmp_path / "nearly.png")  # RGBA, 1.5 %
  assert inversion.load_photo(tmp_path / "nearly.png", RESOLUTION).shape == (16, 16, 3)
  with pytest.raises(ValueError, match="steps=-1"):
    inversion.Settings(steps=-1).validate()


def test_coefficient_files_are_checked(tmp_path):
  import scipy.io
  scipy.io.savemat(tmp_path / "short.mat", dict(id=np.zeros((1, 80)), exp=np.zeros((1, 10)),
                                                tex=np.zeros((1, 80)), angle=np.zeros((1, 3)),
                                                gamma=np.zeros((1, 27)), trans=np.zeros((1, 3))))
  with pytest.raises(ValueError, match="short.mat.*exp.*expected \\(1, 64\\)"):
    inversion.estimate_from_file(tmp_path / "short.mat")
  with pytest.raises(FileNotFoundError):
    inversion.estimate_from_file(tmp_path / "none.mat")


def test_identity_files_are_checked(tmp_path):
  assert pretrained.read_identity(tmp_path) is None
  np.savez(tmp_path / pretrained.IDENTITY, z_id=np.zeros(80), noise=np.zeros(7))
  with pytest.raises(pretrained.PretrainedError, match="noise has shape"):
    pretrained.read_identity(tmp_path)
  (tmp_path / pretrained.IDENTITY).write_bytes(b"junk")
  with pytest.raises(pretrained.PretrainedError, match="not a readable identity file"):
    pretrained.read_identity(tmp_path)


def test_a_short_inversion_fits_and_sample_animates_its_face(tmp_path):
  run = experiment.load_pretrained("synthfaces")
  # The target: the model's own render of another face, so the loss can go to zero.
  key_id, key_noise = jax.random.split(jax.random.key(3))
  target = render(run.generator, {"params": run.ema_params},
                  Latents(z_id=run.prior.sample_id(key_id, 1), z_exp=np.zeros((1, 64), np.float32),
                          noise=jax.random.normal(key_noise, (1, 80))),
                  Camera(pitch=np.full(1, np.pi / 2, np.float32),
                         yaw=np.full(1, np.pi / 2 + 0.1, np.float32)),
                  resolution=RESOLUTION, lock_view=True).image[0]
  photo = (np.clip(np.asarray(target), -1, 1) + 1) / 2
  estimate = inversion.Estimate(z_id=np.zeros(80, np.float32), z_exp=np.zeros(64, np.float32),
                                pitch=float(np.pi / 2), yaw=float(np.pi / 2), source="test")
  settings = inversion.Settings(steps=8, lr=0.05, perceptual_weight=0.0, finetune_steps=3,
                                finetune_lr=3e-4, resolution=RESOLUTION)
  result = inversion.invert(run, photo, estimate, settings)
  assert result.losses["invert"][-1] < 0.9 * result.losses["invert"][0]  # 0.125 -> 0.109
  assert result.losses["finetune"][-1] < 0.8 * result.losses["finetune"][0]  # 0.109 -> 0.078
  assert abs(result.yaw - np.pi / 2) > 1e-4  # the camera moved too
  for frozen in ("manifold", "deformation"):  # geometry and animation are the model's
    for a, b in zip(jax.tree_util.tree_leaves(result.params[frozen]),
                    jax.tree_util.tree_leaves(run.ema_params[frozen])):
      np.testing.assert_array_equal(a, b)

  out = inversion.save(run, result, photo, tmp_path / "face", estimate=estimate,
                       settings=settings, image_path="target")
  for name in ("input.png", "inversion.png", "loss.png", "inversion.json", pretrained.IDENTITY):
    assert (out / name).is_file(), name
  assert Image.open(out / "inversion.png").size == (4 * RESOLUTION, RESOLUTION)
  face = experiment.load_pretrained(out)
  np.testing.assert_array_equal(face.identity[0], result.z_id)
  assert face.config.psi == 1.0
  paths = sampling.write_animation(out, "video", seeds=(0, 1), num_frames=2, resolution=RESOLUTION,
                                   progress=False, run=face)
  first, second = (Image.open(p) for p in paths)
  assert first.n_frames == 2
  assert np.array_equal(np.asarray(first.convert("RGB")), np.asarray(second.convert("RGB")))
  viewer = frames.FrameRenderer(face, resolutions=(RESOLUTION,))  # `serve` shows the face too
  assert viewer._identity(7) is face.identity and viewer.defaults.psi == 1.0


def test_entry_point_reports_a_bad_photo_in_one_line(tmp_path):
  Image.fromarray(np.zeros((50, 80, 3), np.uint8)).save(tmp_path / "wide.jpg")
  result = subprocess.run(
      [sys.executable, "-m", "anifacegan_jax.invert", "--pretrained=synthfaces",
       f"--image={tmp_path / 'wide.jpg'}", f"--out={tmp_path / 'out'}", "--compilation_cache=none"],
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and "80×50 is not square" in result.stderr, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
