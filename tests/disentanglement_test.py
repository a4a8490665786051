"""Disentanglement score: which factor varies within an anchor, and the score's closed forms."""

import jax
import numpy as np
import pytest

from anifacegan_jax.metrics import coefficients as cm
from anifacegan_jax.metrics import disentanglement as ds
from anifacegan_jax.models.priors import GaussianPrior
from conftest import POSE_PRIOR


@pytest.fixture(scope="module")
def prior():
  rng = np.random.default_rng(0)
  return GaussianPrior.fit(rng.standard_normal((50, 80)), rng.standard_normal((50, 64)))


@pytest.mark.parametrize("factor", ds.VARIED)
def test_only_the_factor_varies_within_an_anchor(prior, factor):
  latents, camera = ds.variations(prior, jax.random.key(0), factor, 3, 4, **POSE_PRIOR)
  fields = dict(id=latents.z_id, exp=latents.z_exp, noise=latents.noise, pitch=camera.pitch,
                yaw=camera.yaw)
  changing = {"id": {"id"}, "exp": {"exp"}, "pose": {"pitch", "yaw"}}[factor]
  for name, x in fields.items():
    x = np.asarray(x).reshape((3, 4) + np.shape(x)[1:])
    spread = np.max(np.abs(x - x[:, :1]))
    assert (spread > 0) == (name in changing), (factor, name)
    assert np.max(np.abs(x[0] - x[1])) > 0  # anchors differ in everything


def _preds(rng, within):
  """{factor: (K, M, 257)}: anchors N(0, 1) in every column, within-anchor noise of std
  within[f][g] on group g when f varies."""
  out = {}
  for f, stds in within.items():
    base = rng.standard_normal((40, 1, 257))
    noise = np.zeros((40, 20, 257))
    for g, std in stds.items():
      cols = ds.GROUPS[g]
      noise[..., cols] = std * rng.standard_normal(noise[..., cols].shape)
    out[f] = base + noise
  return out


def test_scores_follow_the_definition():
  rng = np.random.default_rng(1)
  preds = _preds(rng, {"exp": dict(exp=1.0, id=0.1, pose=0.2), "pose": dict(pose=1.0, id=0.1,
                                                                             exp=0.3)})
  sigma = ds.normalized_variances(preds)
  pooled = np.concatenate([p.reshape(-1, 257) for p in preds.values()])
  for f, p in preds.items():
    for g, cols in ds.GROUPS.items():
      within = np.mean([np.var(p[k][:, cols], axis=0).sum() for k in range(p.shape[0])])
      assert sigma[f][g] == pytest.approx(within / np.var(pooled[:, cols], axis=0).sum(), rel=1e-9)
  scores = ds.scores(sigma)
  assert scores["exp"] == pytest.approx(
      sigma["exp"]["exp"] ** 2 / (sigma["exp"]["id"] * sigma["exp"]["pose"]))
  assert scores["pose"] == pytest.approx(
      sigma["pose"]["pose"] ** 2 / (sigma["pose"]["id"] * sigma["pose"]["exp"]))


def test_scores_reward_disentanglement_and_ignore_units():
  rng = np.random.default_rng(2)
  clean = ds.scores(ds.normalized_variances(_preds(rng, {"exp": dict(exp=1.0, id=0.05,
                                                                     pose=0.05)})))
  leaky = ds.scores(ds.normalized_variances(_preds(rng, {"exp": dict(exp=1.0, id=0.5,
                                                                     pose=0.5)})))
  assert clean["exp"] > 50 * leaky["exp"]
  preds = _preds(np.random.default_rng(3), {"exp": dict(exp=1.0, id=0.2, pose=0.2)})
  scaled = {f: p.copy() for f, p in preds.items()}
  scaled["exp"][..., cm.ANGLE] *= 57.3  # degrees instead of radians: σ is normalised
  np.testing.assert_allclose(ds.scores(ds.normalized_variances(scaled))["exp"],
                             ds.scores(ds.normalized_variances(preds))["exp"], rtol=1e-9)


def test_constant_predictions_are_rejected():
  preds = {"exp": np.zeros((2, 2, 257))}
  with pytest.raises(ValueError, match="do not vary"):
    ds.normalized_variances(preds)
  with pytest.raises(ValueError, match="factor='light'"):
    ds.variations(None, jax.random.key(0), "light", 2, 2, **POSE_PRIOR)
