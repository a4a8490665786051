"""SynthFaces: deterministic examples whose landmarks, pose and expression match the render."""

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from anifacegan_jax.data import synthface
from anifacegan_jax.face3d import geometry
from anifacegan_jax.rendering import camera as camera_lib
from anifacegan_jax.synthfaces import procedural, raster, synthetic
from anifacegan_jax.types import Camera


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  return procedural.load_procedural(cache_dir=tmp_path_factory.mktemp("cache"))


def _project_with_generator_camera(points, pitch, yaw, resolution):
  """Pixel coordinates of world points through the generator's camera (camera.py only)."""
  c2w = np.asarray(camera_lib.cam2world(Camera(pitch=jnp.array([pitch]), yaw=jnp.array([yaw]))))[0]
  local = (points - c2w[:3, 3]) @ c2w[:3, :3]  # world → camera frame (rotation is orthonormal)
  focal = 1.0 / math.tan(math.radians(6.0))
  ndc = focal * local[:, :2] / -local[:, 2:3]
  return np.stack([(ndc[:, 0] + 1) * (resolution - 1) / 2, (1 - ndc[:, 1]) * (resolution - 1) / 2], -1)


def test_landmarks_pose_and_coefficients_match_the_scene(model):
  rng = np.random.default_rng([synthetic.SEED, 0, 3])
  params = synthetic.sample_scene(rng)
  example = synthetic.generate(model, "train", 3, 64)
  _, landmarks_world = synthetic.face_mesh(model, params)
  expected = _project_with_generator_camera(landmarks_world, params.pitch, params.yaw, 64)
  np.testing.assert_allclose(example["landmarks"], expected, atol=1.0)
  np.testing.assert_allclose(example["landmarks"], expected, atol=1e-3)
  np.testing.assert_allclose(example["pose"], [params.pitch, params.yaw], atol=1e-6)
  c = example["coefficients"]
  np.testing.assert_allclose(c[:80], params.identity)
  np.testing.assert_allclose(c[80:144], params.expression)
  pitch, yaw = geometry.angles_to_camera(jnp.asarray(c[224:227]))
  np.testing.assert_allclose([float(pitch), float(yaw)], example["pose"], atol=1e-6)
  np.testing.assert_array_equal(c[254:], 0.0)


def test_visible_landmarks_lie_on_the_rendered_surface(model):
  params = dataclasses.replace(synthetic.sample_scene(np.random.default_rng(5)),
                               pitch=math.pi / 2, yaw=math.pi / 2)
  face, landmarks_world = synthetic.face_mesh(model, params)
  fragments = raster.rasterize(face.vertices, face.faces, params.pitch, params.yaw, 128)
  xy, depth = raster.project_points(landmarks_world, params.pitch, params.yaw, 128)
  pixels = np.clip(np.round(xy).astype(int), 0, 127)
  surface = fragments.depth[pixels[:, 1], pixels[:, 0]]
  # Nose, eyes and lips are visible from the front; the surface there is the landmark's depth
  # (up to the pixel's footprint on a slanted surface). Mouth corners sit on the slit's edge,
  # where the pixel may already show the mouth interior.
  for index in list(range(27, 48)) + [49, 50, 51, 52, 53, 55, 56, 57, 58, 59]:
    assert abs(surface[index] - depth[index]) < 0.004, index


def test_jaw_open_moves_mouth_landmarks_and_neutral_is_the_mean(model):
  base = dataclasses.replace(synthetic.sample_scene(np.random.default_rng(7)),
                             expression=np.zeros(64, np.float32), pitch=math.pi / 2,
                             yaw=math.pi / 2)
  jaw = np.zeros(64, np.float32)
  jaw[procedural.EXPRESSION_NAMES.index("jaw_open")] = 1.0
  opened = dataclasses.replace(base, expression=jaw)
  neutral_face, neutral_lm = synthetic.face_mesh(model, base)
  _, open_lm = synthetic.face_mesh(model, opened)
  np.testing.assert_allclose(
      neutral_face.vertices,
      synthetic.model_to_world(model.mean_shape + model.id_basis @ base.identity), atol=1e-7)
  xy_neutral, _ = raster.project_points(neutral_lm, base.pitch, base.yaw, 64)
  xy_open, _ = raster.project_points(open_lm, base.pitch, base.yaw, 64)
  moved = np.linalg.norm(xy_open - xy_neutral, axis=-1)
  assert moved[[57, 65, 66, 67, 8]].min() > 3.0  # lower lip and chin move down visibly
  assert moved[17:48].max() < 0.5  # brows and eyes stay
  a = synthetic.render_example(model, base, np.random.default_rng(0), 64)["image"].astype(float)
  b = synthetic.render_example(model, opened, np.random.default_rng(0), 64)["image"].astype(float)
  mouth = np.round(xy_open[60:68].mean(0)).astype(int)
  assert np.abs(a - b)[mouth[1] - 2:mouth[1] + 3, mouth[0] - 3:mouth[0] + 4].mean() > 20
  brow_y = int(xy_neutral[[19, 24], 1].min())
  forehead = np.abs(a - b)[brow_y - 6:brow_y - 1, int(xy_neutral[19, 0]):int(xy_neutral[24, 0])]
  assert forehead.max() < 2.0  # the forehead is unchanged (the hair around it may re-fit)


def test_builder_prepares_small_dataset_deterministically(tmp_path):
  builder = synthface.unprepared_builder(32, num_train=16, num_test=4, data_dir=str(tmp_path))
  builder.download_and_prepare()
  train = list(tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False)))
  assert len(train) == 16 and builder.info.splits["test"].num_examples == 4
  ex = next(e for e in train if e["name"] == b"train_000003")
  again = synthetic.generate(procedural.load_procedural(), "train", 3, 32)
  np.testing.assert_array_equal(ex["image"], again["image"])
  np.testing.assert_allclose(ex["landmarks"], again["landmarks"])
  assert ex["image"].shape == (32, 32, 3) and ex["image"].std() > 10


def test_bad_sizes_are_rejected():
  with pytest.raises(ValueError, match="resolution must be 32, 64 or 128"):
    synthface.unprepared_builder(48)
  with pytest.raises(ValueError, match="num_train ≥ 1"):
    synthface.unprepared_builder(32, num_train=0)


def test_generate_many_renders_the_builder_examples_in_worker_processes(model):
  data = synthetic.generate_many("test", 3, 16, workers=2)
  assert data["image"].shape == (3, 16, 16, 3) and data["coefficients"].shape == (3, 257)
  for i in range(3):
    one = synthetic.generate(model, "test", i, 16)
    for key in one:
      np.testing.assert_array_equal(data[key][i], one[key])
