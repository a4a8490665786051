"""Control metrics: a reconstruction network reads generated images; closed form at ẑ = 0."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anifacegan_jax.face3d import geometry
from anifacegan_jax.metrics import coefficients as cm
from anifacegan_jax.metrics import control
from anifacegan_jax.models import recon
from anifacegan_jax.models.generator import AnimatableGenerator, init_generator
from anifacegan_jax.models.priors import GaussianPrior, sample_latents
from anifacegan_jax.rendering.camera import sample_camera
from anifacegan_jax.synthfaces import procedural
from conftest import POSE_PRIOR


def test_untrained_network_scores_the_mean_face(tmp_path):
  """Zero heads predict ẑ = 0 and angle 0: every error is the size of the input itself."""
  face = cm.landmark_arrays(procedural.load_procedural(cache_dir=tmp_path))
  generator = AnimatableGenerator(radiance_hidden=16, manifold_hidden=16, deform_hidden=16,
                                  num_samples=8, num_levels=4)
  variables = init_generator(generator, jax.random.key(0))
  model = recon.ReconNet(kind="basic", stage_sizes=(1,), width=8, input_size=16)
  recon_variables = recon.init_recon(model, jax.random.key(1))
  prior = GaussianPrior.standard()
  key = jax.random.key(2)
  metrics = control.control_errors(generator, variables, prior, model, recon_variables, face,
                                   key=key, num=4, batch_size=2, resolution=8, chunk_size=64,
                                   **POSE_PRIOR)
  assert metrics["num_examples"] == 4
  assert metrics["landmark_mm"] == pytest.approx(metrics["mean_face_landmark_mm"], rel=1e-6)
  # The same latents and cameras, drawn as control_errors draws them.
  z_exp, angles = [], []
  for batch_key in jax.random.split(key, 2):
    key_latents, key_camera = jax.random.split(batch_key)
    z_exp.append(sample_latents(prior, key_latents, 2).z_exp)
    camera = sample_camera(key_camera, 2, **POSE_PRIOR)
    angles.append(geometry.camera_to_angles(camera.pitch, camera.yaw))
  z_exp, angles = np.concatenate(z_exp), np.concatenate(angles)
  assert metrics["exp_rmse"] == pytest.approx(math.sqrt(np.mean(z_exp**2)), rel=1e-5)
  assert metrics["angle_rmse_deg"] == pytest.approx(
      math.degrees(math.sqrt(np.sum(angles**2) / (4 * 3))), rel=1e-5)
  assert metrics["landmark_mm"] > 0 and np.isfinite(metrics["landmark_depth_mm"])
  with pytest.raises(ValueError, match="multiple of batch_size"):
    control.control_errors(generator, variables, prior, model, recon_variables, face, key=key,
                           num=3, batch_size=2, **POSE_PRIOR)


def test_target_coefficients_layout():
  target = control.target_coefficients(jnp.ones((1, 80)), 2 * jnp.ones((1, 64)),
                                       jnp.array([np.pi / 2]), jnp.array([np.pi / 2 + 0.2]))
  assert target.shape == (1, 257)
  np.testing.assert_allclose(target[0, :80], 1.0)
  np.testing.assert_allclose(target[0, 80:144], 2.0)
  np.testing.assert_allclose(target[0, 224:227], [0.1, 0.2, 0.0], atol=1e-6)
  assert float(jnp.abs(target[0, 144:224]).max()) == 0.0


def test_landmark_depth_reads_the_depth_map_at_the_projected_landmarks(tmp_path):
  """Frontal camera at (0, 0, 1): pixel of a point = (x, y) / (1 − z) / tan 6°; a depth map
  linear in row and column is sampled exactly by the bilinear lookup."""
  from anifacegan_jax.types import Camera, Latents
  face = cm.landmark_arrays(procedural.load_procedural(cache_dir=tmp_path))
  rng = np.random.default_rng(0)
  latents = Latents(z_id=jnp.asarray(rng.normal(size=(2, 80)), jnp.float32),
                    z_exp=jnp.asarray(rng.normal(size=(2, 64)), jnp.float32),
                    noise=jnp.zeros((2, 80)))
  size = 33
  rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  depth = np.stack([0.95 + 0.001 * rows + 0.002 * cols, 1.0 - 0.0005 * cols]).astype(np.float32)
  errors = control.landmark_depth_errors(face, latents, Camera.frontal(2), jnp.asarray(depth),
                                         fov_degrees=12.0, radius=1.0)
  for b in range(2):
    vertices = geometry.face_vertices(face, latents.z_id[b], latents.z_exp[b])
    points = np.asarray(geometry.model_to_world(vertices))[17:68]
    scale = 1 / np.tan(np.radians(6.0)) / (1 - points[:, 2])
    col = (points[:, 0] * scale + 1) / 2 * (size - 1)
    row = (1 - points[:, 1] * scale) / 2 * (size - 1)
    read = (0.95 + 0.001 * row + 0.002 * col) if b == 0 else (1.0 - 0.0005 * col)
    true = np.linalg.norm(points - np.array([0.0, 0.0, 1.0]), axis=-1)
    assert float(errors[b]) == pytest.approx(1000 * np.mean(np.abs(read - true)), rel=1e-4)


def _benchmark(name):
  """benchmarks/<name>.py imported as a module."""
  import importlib.util
  import pathlib
  path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_expression_gain_summary_separates_bias_from_following():
  # benchmarks/expression_gain.py: a reading biased by the generator's look, and one that shows
  # half of each expression.
  gain = _benchmark("expression_gain")
  rng = np.random.default_rng(0)
  z = np.zeros((200, 64))
  z[:, :4] = rng.uniform(0, 1, (200, 4))
  z[:, 10:] = 1e-4 * rng.standard_normal((200, 54))  # a fitted prior's jitter: not a used column
  bias = rng.normal(0, 0.3, (1, 64))
  out = gain.summary(bias + 0.5 * z, bias + 0 * z, z)
  assert out["gain"] == pytest.approx(0.5, abs=1e-3) and out["correlation"] > 0.99
  assert len(out["column_gain"]) == 4
  assert out["exp_rmse"] > out["zero_rmse"] > out["change_rmse"]
  ignored = gain.summary(bias + 0 * z, bias + 0 * z, z)
  assert ignored["gain"] == 0.0 and ignored["change_rmse"] == pytest.approx(ignored["zero_rmse"])


def test_control_parts_split_the_landmark_error_by_code(tmp_path):
  # benchmarks/control_parts.py: a reading with the true expression and a wrong identity owes
  # its whole error to the identity, and each "zero" part is what ignoring that code scores.
  from anifacegan_jax.synthfaces import procedural
  parts = _benchmark("control_parts")
  face = procedural.load_procedural(cache_dir=tmp_path).arrays()
  rng = np.random.default_rng(1)
  target = np.zeros((4, 257), np.float32)
  target[:, cm.ID] = rng.normal(0, 0.8, (4, 80))
  target[:, cm.EXP] = rng.uniform(0, 0.5, (4, 64))
  pred = target.copy()
  pred[:, cm.ID] = rng.normal(0, 0.8, (4, 80))
  out = parts.landmark_parts(jnp.asarray(pred), jnp.asarray(target), face)
  assert out["true_id_read_exp_mm"] == pytest.approx(0.0, abs=1e-4)
  assert out["read_id_true_exp_mm"] == pytest.approx(out["landmark_mm"], rel=1e-6)
  assert out["landmark_mm"] > out["zero_id_true_exp_mm"] > 0
  assert out["mean_face_mm"] > out["true_id_zero_exp_mm"] > 0
