"""The released deformation checkpoint `aniface_dif.pth` loaded into DeformationField (SPEC §3.3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io

from anifacegan_jax import porting
from anifacegan_jax.models.deformation import DeformationField
from anifacegan_jax.rendering import camera as camera_lib
from anifacegan_jax.types import Camera


@pytest.fixture(scope="module")
def released(reference_dir):
  model = porting.official_generator()
  deformation = porting.load_deformation(reference_dir / "aniface_dif.pth", model)
  coeffs = scipy.io.loadmat(reference_dir / "aniface_01626.mat")
  return deformation, coeffs


def _deltas(deformation, z_id, z_exp, resolution=96):
  """Δ (R·R·64, 3) on the 64 samples of every frontal pixel ray, and those points (world)."""
  rays = camera_lib.generate_rays(Camera.frontal(1), resolution)
  points = camera_lib.sample_points(rays, camera_lib.sample_distances())[0].reshape(-1, 3)
  field = DeformationField(final_bias_init="torch")
  variables = {"params": deformation}

  @jax.jit
  def delta(z_id, z_exp):
    freq, phase = field.apply(variables, z_id[0], z_exp[0], method=DeformationField.code)
    return field.apply(variables, points, freq, phase)

  return (np.asarray(delta(jnp.asarray(z_id, jnp.float32), jnp.asarray(z_exp, jnp.float32))),
          np.asarray(points))


def test_released_expression_deformation_matches_spec(released):
  deformation, coeffs = released
  neutral, points = _deltas(deformation, coeffs["id"], np.zeros((1, 64)))
  smile, _ = _deltas(deformation, coeffs["id"], coeffs["exp"])
  magnitude = np.linalg.norm(smile - neutral, axis=-1)
  # SPEC §3.3 (numpy re-derivation of the official code, 96² frontal rays × 64 samples):
  # |Δ(exp) − Δ(0)| mean 5e-4, p99 0.0025, max 0.0086 at world (−0.003, −0.066, +0.023).
  assert magnitude.max() <= 0.02
  assert magnitude.mean() == pytest.approx(5e-4, rel=0.1)
  assert np.percentile(magnitude, 99) == pytest.approx(2.5e-3, abs=1e-4)
  assert magnitude.max() == pytest.approx(0.0086, abs=1e-4)
  location = points[np.argmax(magnitude)]
  assert location[1] < -0.03  # mouth / chin
  np.testing.assert_allclose(location, [-0.003, -0.066, 0.023], atol=2e-3)
  # The neutral code is not an identity map: |Δ(0)| mean 5e-4, p99 0.0018, max 0.0081 (§8.11).
  neutral_norm = np.linalg.norm(neutral, axis=-1)
  assert neutral_norm.mean() == pytest.approx(5e-4, rel=0.1)
  assert np.percentile(neutral_norm, 99) == pytest.approx(1.8e-3, abs=1e-4)
  assert neutral_norm.max() == pytest.approx(0.0081, abs=1e-4)
  # Doubling the expression code: max 0.0155.
  double, _ = _deltas(deformation, coeffs["id"], 2 * coeffs["exp"])
  assert np.linalg.norm(double - neutral, axis=-1).max() == pytest.approx(0.0155, abs=2e-4)
