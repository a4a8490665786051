"""Trajectories, driving sequences, line textures and video files (no generator needed)."""

import numpy as np
import pytest
import scipy.io
from PIL import Image

from anifacegan_jax import animation
from anifacegan_jax.face3d import geometry

from conftest import write_ffhq_example


def test_handcrafted_trajectories():
  sweep = animation.yaw_sweep(5, amplitude=0.3)
  np.testing.assert_allclose(sweep.yaw - np.pi / 2, [-0.3, -0.15, 0.0, 0.15, 0.3], atol=1e-6)
  assert np.all(sweep.z_exp == 0) and np.allclose(sweep.pitch, np.pi / 2)
  target = np.arange(64, dtype=np.float32) / 64
  blend = animation.expression_blend(target, 3, yaw_amplitude=0.35)  # render.py's path
  np.testing.assert_allclose(blend.z_exp, [0 * target, 0.5 * target, target], atol=1e-7)
  np.testing.assert_allclose(blend.yaw - np.pi / 2, [-0.35, 0.0, 0.35], atol=1e-6)
  np.testing.assert_allclose(animation.expression_blend(target[None], 2).z_exp[1], target)
  with pytest.raises(ValueError, match="num_frames must be >= 1"):
    animation.yaw_sweep(0)
  with pytest.raises(ValueError, match=r"target: exp has shape \(63,\); expected \(64,\)"):
    animation.expression_blend(np.zeros(63), 4)


def test_npz_sequence_drives_expression_and_pose(tmp_path):
  rng = np.random.default_rng(0)
  exp = rng.normal(size=(6, 64)).astype(np.float32)
  angles = np.stack([np.linspace(0.0, 0.2, 6), np.linspace(-0.3, 0.3, 6), np.zeros(6)], 1)
  np.savez(tmp_path / "clip.npz", exp=exp, angles=angles)
  path = animation.load_sequence(tmp_path / "clip.npz")
  np.testing.assert_array_equal(path.z_exp, exp)
  pitch, yaw = geometry.angles_to_camera(angles.astype(np.float32))
  np.testing.assert_allclose(path.pitch, pitch, atol=1e-6)
  np.testing.assert_allclose(path.yaw, yaw, atol=1e-6)
  frontal = animation.load_sequence(tmp_path / "clip.npz", use_pose=False)
  assert np.allclose(frontal.yaw, np.pi / 2) and np.allclose(frontal.pitch, np.pi / 2)
  np.savez(tmp_path / "only_exp.npz", exp=exp)
  assert np.allclose(animation.load_sequence(tmp_path / "only_exp.npz").yaw, np.pi / 2)


def test_bad_sequences_fail_clearly(tmp_path):
  np.savez(tmp_path / "short.npz", exp=np.zeros((5, 63)), angles=np.zeros((5, 3)))
  with pytest.raises(ValueError, match=r"short.npz: exp has shape \(5, 63\); expected \(T, 64\)"):
    animation.load_sequence(tmp_path / "short.npz")
  np.savez(tmp_path / "angles.npz", exp=np.zeros((5, 64)), angles=np.zeros((4, 3)))
  with pytest.raises(ValueError, match=r"angles.npz: angles has shape \(4, 3\); expected \(5, 3\)"):
    animation.load_sequence(tmp_path / "angles.npz")
  np.savez(tmp_path / "nan.npz", exp=np.full((2, 64), np.nan))
  with pytest.raises(ValueError, match="nan.npz: exp has NaN"):
    animation.load_sequence(tmp_path / "nan.npz")
  np.savez(tmp_path / "other.npz", expression=np.zeros((2, 64)))
  with pytest.raises(ValueError, match=r"missing array 'exp'.*\['expression'\]"):
    animation.load_sequence(tmp_path / "other.npz")
  (tmp_path / "corrupt.npz").write_bytes(b"garbage")
  with pytest.raises(ValueError, match="corrupt.npz: not a readable .npz"):
    animation.load_sequence(tmp_path / "corrupt.npz")
  with pytest.raises(FileNotFoundError, match="missing.npz: no such file"):
    animation.load_sequence(tmp_path / "missing.npz")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no .mat files"):
    animation.load_sequence(tmp_path / "empty")


def test_folder_of_deep3d_mats_is_a_sequence_in_name_order(tmp_path):
  mats = [write_ffhq_example(tmp_path, f"frame_{i:02d}", angle=(0.1, 0.05 * i, 0.0))
          for i in (2, 0, 1)]
  path = animation.load_sequence(tmp_path / "mats")
  order = [1, 2, 0]  # frame_00, frame_01, frame_02
  np.testing.assert_allclose(path.z_exp, np.concatenate([mats[i]["exp"] for i in order]))
  np.testing.assert_allclose(path.yaw - np.pi / 2, [0.0, 0.05, 0.1], atol=1e-6)
  one = animation.load_sequence(tmp_path / "mats" / "frame_01.mat")
  assert one.num_frames == 1
  scipy.io.savemat(tmp_path / "mats" / "frame_03.mat", dict(exp=np.zeros((1, 63))))
  with pytest.raises(ValueError, match="frame_03.mat"):
    animation.load_sequence(tmp_path / "mats")


def test_smoothing_is_a_centred_moving_average():
  path = animation.Trajectory(z_exp=np.eye(5, 64, dtype=np.float32) * 3,
                              pitch=np.full(5, np.pi / 2), yaw=np.pi / 2 + np.arange(5.0))
  smooth = animation.smooth(path, 3)
  np.testing.assert_allclose(smooth.yaw - np.pi / 2, [1 / 3, 1, 2, 3, 11 / 3], atol=1e-6)
  np.testing.assert_allclose(smooth.z_exp[2, 1:4], [1, 1, 1], atol=1e-6)
  assert animation.smooth(path, 1) is path
  with pytest.raises(ValueError, match="must be odd"):
    animation.smooth(path, 4)


def test_named_expressions():
  from anifacegan_jax.synthfaces.procedural_expressions import EXPRESSION_NAMES
  z = animation.named_expression("jaw_open, smile_left=0.5")
  assert z[EXPRESSION_NAMES.index("jaw_open")] == 1.0
  assert z[EXPRESSION_NAMES.index("smile_left")] == 0.5 and np.count_nonzero(z) == 2
  with pytest.raises(ValueError, match="unknown expression 'grin'"):
    animation.named_expression("grin")
  with pytest.raises(ValueError, match="must be a number"):
    animation.named_expression("jaw_open=wide")


def test_line_texture_stacks_one_row_per_frame():
  frames = np.zeros((3, 5, 4, 3), np.uint8)
  for t in range(3):
    frames[t, 2] = 10 * (t + 1)
  texture = animation.line_texture(frames, 0.5)
  assert texture.shape == (3, 4, 3)
  np.testing.assert_array_equal(texture[:, 0, 0], [10, 20, 30])
  np.testing.assert_array_equal(animation.line_texture(frames, 2), texture)
  with pytest.raises(ValueError, match="outside the image"):
    animation.line_texture(frames, 5)


@pytest.mark.parametrize("suffix", [".gif", ".webp", ".mp4"])
def test_videos_have_every_frame(tmp_path, suffix):
  rng = np.random.default_rng(1)
  frames = np.repeat(rng.integers(0, 255, (4, 1, 1, 3), dtype=np.uint8), 16, 1)
  frames = np.repeat(frames, 16, 2)  # 4 flat-coloured 16×16 frames
  path = animation.write_video(tmp_path / f"clip{suffix}", frames, fps=10)
  if suffix == ".mp4":
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    decoded = [np.frombuffer(f, np.uint8).reshape(16, 16, 3) for f in reader]
    assert meta["size"] == (16, 16) and len(decoded) == 4
    assert np.abs(decoded[2].astype(int) - frames[2]).mean() < 8  # lossy H.264
    return
  with Image.open(path) as video:
    assert video.n_frames == 4
    video.seek(2)
    colour = np.asarray(video.convert("RGB"))[8, 8]
  assert np.abs(colour.astype(int) - frames[2, 8, 8]).max() <= (0 if suffix == ".webp" else 8)


def test_bad_video_requests_fail_clearly(tmp_path):
  frames = np.zeros((2, 8, 8, 3), np.uint8)
  with pytest.raises(ValueError, match="unsupported video format '.avi'"):
    animation.write_video(tmp_path / "clip.avi", frames)
  with pytest.raises(ValueError, match="uint8"):
    animation.write_video(tmp_path / "clip.gif", frames.astype(np.float32))
