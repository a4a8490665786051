"""Latent priors: Gaussian fit, the official coefficient VAEs (counts, checkpoint layout, fitting,
standardisation folding), prior files and the fit_prior CLI."""

import subprocess
import sys
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anifacegan_jax import torch_save, torch_zip
from anifacegan_jax.models import priors, vae
from conftest import official_keys, write_ffhq_example

REPO = pathlib.Path(__file__).resolve().parents[1]
SMALL = dict(latent_dim=8, hidden=32)  # official depth, narrow layers: fast fits


def _random_params(model, seed):
  """Random float32 params with the model's structure, without compiling an init."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: vae.init_vae(model, jax.random.key(0)))
  return jax.tree_util.tree_map(lambda s: rng.normal(0, 0.05, s.shape).astype(np.float32), shapes)


def _table(rows, dim, seed):
  """(rows, dim) coefficients near a rank-3 subspace, with an offset; the last column constant."""
  rng = np.random.default_rng(seed)
  table = rng.normal(size=(rows, 3)) @ rng.normal(size=(3, dim)) + 0.5
  table += 0.05 * rng.normal(size=(rows, dim))
  table[:, -1] = 0.25
  return table


def test_gaussian_fit_recovers_moments():
  rng = np.random.default_rng(0)
  m = 20_000
  id_mean, exp_mean = rng.normal(size=80), rng.normal(size=64)
  id_l = np.tril(rng.normal(size=(80, 80))) * 0.2 + np.eye(80)
  exp_l = np.tril(rng.normal(size=(64, 64))) * 0.2 + np.eye(64)
  z_id = id_mean + rng.normal(size=(m, 80)) @ id_l.T
  z_exp = exp_mean + rng.normal(size=(m, 64)) @ exp_l.T
  prior = priors.GaussianPrior.fit(z_id, z_exp)
  # Closed form: the ML fit is exactly the sample mean and covariance (+ jitter).
  cov = np.asarray(prior.id_scale_tril, np.float64) @ np.asarray(prior.id_scale_tril, np.float64).T
  np.testing.assert_allclose(prior.id_mean, z_id.mean(0), atol=1e-5)
  np.testing.assert_allclose(cov, np.cov(z_id, rowvar=False), atol=2e-4 * np.abs(cov).max())
  # Against the true parameters: standard errors are σ/√M for a mean and ≤ √2·σ²/√M for a
  # covariance entry (σ² ≤ max variance); 6 standard errors, and the seed is fixed.
  for fit_mean, fit_l, true_mean, true_l in ((prior.id_mean, prior.id_scale_tril, id_mean, id_l),
                                              (prior.exp_mean, prior.exp_scale_tril, exp_mean,
                                               exp_l)):
    true_cov = true_l @ true_l.T
    fit_cov = np.asarray(fit_l, np.float64) @ np.asarray(fit_l, np.float64).T
    max_var = np.diag(true_cov).max()
    np.testing.assert_allclose(fit_mean, true_mean, atol=6 * np.sqrt(max_var / m))
    np.testing.assert_allclose(fit_cov, true_cov, atol=6 * np.sqrt(2 / m) * max_var)


@pytest.mark.parametrize("in_dim,total,decoder", [(80, 3_103_312, 1_748_560),
                                                  (64, 3_086_912, 1_740_352)])
def test_official_parameter_counts(in_dim, total, decoder):
  shapes = jax.eval_shape(lambda: vae.init_vae(vae.CoefficientVAE(in_dim), jax.random.key(0)))
  count = lambda tree: sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(tree))
  assert count(shapes) == total
  assert count(shapes["decoder"]) == decoder


@pytest.mark.parametrize("in_dim,title", [(80, "VAE_ID"), (64, "VAE_EXP")])
def test_official_layout_matches_keys_shapes_file(reference_dir, in_dim, title):
  state = vae.vae_to_torch(_random_params(vae.CoefficientVAE(in_dim), 0))
  assert [(k, v.shape) for k, v in state.items()] == official_keys(reference_dir, title)


def test_official_checkpoints_round_trip(tmp_path):
  id_params = _random_params(vae.CoefficientVAE(80), 1)
  exp_params = _random_params(vae.CoefficientVAE(64), 2)
  id_path, exp_path = vae.save_official_vaes(id_params, exp_params, tmp_path / "pretrained_vaes")
  assert id_path == tmp_path / "pretrained_vaes" / "identity" / "vae.pth"
  state = torch_zip.load(exp_path)
  assert list(state)[:3] == ["encoder.0.0.weight", "encoder.0.0.bias", "encoder.1.0.weight"]
  np.testing.assert_array_equal(state["final_layer.2.weight"],
                                exp_params["decoder"]["output"]["kernel"].T)
  loaded = vae.load_official_vae(id_path, 80)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, id_params)
  prior = vae.load_official_prior(id_path, exp_path)
  jax.tree_util.tree_map(np.testing.assert_array_equal, prior.exp_decoder, exp_params["decoder"])
  n = jax.random.normal(jax.random.key(0), (3, 256))
  expected = vae.CoefficientVAE(80).apply({"params": id_params}, n, method="decode")
  np.testing.assert_allclose(prior.sample_id(jax.random.key(0), 3),
                             vae.decode(id_params["decoder"], n), rtol=1e-6)
  np.testing.assert_allclose(vae.decode(id_params["decoder"], n), expected, rtol=1e-6)


def test_official_checkpoint_errors_name_file_and_key(tmp_path):
  state = vae.vae_to_torch(_random_params(vae.CoefficientVAE(80), 3))
  path = tmp_path / "vae.pth"
  torch_save.save(state, path)
  with pytest.raises(vae.VAECheckpointError, match=r"vae.pth: encoder.0.0.weight has shape "
                     r"\(512, 80\), expected \(512, 64\)"):
    vae.load_official_vae(path, 64)
  broken = {k: v for k, v in state.items() if k != "fc_mu.bias"}
  with pytest.raises(vae.VAECheckpointError, match=r"missing \['fc_mu.bias'\]"):
    vae.vae_from_torch(broken, vae.CoefficientVAE(80), "x.pth")
  nan = dict(state, **{"decoder.3.0.bias": np.full(512, np.nan, np.float32)})
  with pytest.raises(vae.VAECheckpointError, match=r"x.pth: decoder.3.0.bias holds NaN"):
    vae.vae_from_torch(nan, vae.CoefficientVAE(80), "x.pth")
  with pytest.raises(vae.VAECheckpointError, match="expected a VAE state_dict"):
    vae.vae_from_torch([1, 2], vae.CoefficientVAE(80), "x.pth")
  wrapped = {f"module.{k}": v for k, v in state.items()}  # DataParallel checkpoints load too
  assert vae.vae_from_torch(wrapped, vae.CoefficientVAE(80), "x.pth")["encoder"]["fc_mu"]


def test_standardisation_folds_exactly():
  model = vae.CoefficientVAE(6, **SMALL)
  params = _random_params(model, 4)
  x = _table(5, 6, 5)
  mean, inv_std, std = priors._standardisation(x)
  assert inv_std[-1] == 0 and std[-1] == 0  # the constant column
  folded = priors._fold_standardisation(params, mean, inv_std, std)
  key = jax.random.key(6)
  recon, mu, logvar = model.apply({"params": folded}, jnp.asarray(x, jnp.float32), key)
  ref_recon, ref_mu, ref_logvar = model.apply({"params": params},
                                              jnp.asarray((x - mean) * inv_std, jnp.float32), key)
  np.testing.assert_allclose(mu, ref_mu, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(logvar, ref_logvar, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(recon, mean + std * ref_recon, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def small_fit():
  z_id, z_exp = _table(256, 80, 7), _table(256, 64, 8)
  fits = priors.fit_vaes(z_id, z_exp, jax.random.key(0), steps=300, batch_size=64,
                         log_every=300, **SMALL)
  return z_id, z_exp, fits


def test_vae_fit_reduces_the_loss(small_fit):
  _, _, fits = small_fit
  for fit in fits:
    assert fit.losses.shape == (300,) and np.isfinite(fit.losses).all()
    # Standardised data: ≈ 1 is "predict the mean"; below 0.5 the VAE has learnt the subspace.
    assert fit.losses[-20:].mean() < 0.5 * fit.losses[:20].mean()
    assert fit.losses[-20:].mean() < 0.5


def test_vae_prior_samples(small_fit):
  z_id, z_exp, (fit_id, fit_exp) = small_fit
  prior = vae.VAEPrior.from_vaes(fit_id.params, fit_exp.params)
  assert prior.latent_dim == SMALL["latent_dim"]
  z = prior.sample_id(jax.random.key(1), 5)
  e = prior.sample_exp(jax.random.key(2), 5)
  assert z.shape == (5, 80) and e.shape == (5, 64)
  assert np.isfinite(z).all() and np.isfinite(e).all()
  # Constant columns decode to their constant exactly (the folded output scale is 0 there).
  np.testing.assert_allclose(z[:, -1], 0.25, atol=1e-6)
  latents = priors.sample_latents(prior, jax.random.key(3), 4)
  assert latents.z_id.shape == (4, 80) and latents.z_exp.shape == (4, 64)
  assert latents.noise.shape == (4, 80) and np.isfinite(latents.z_exp).all()
  sampled = jax.jit(lambda p, k: priors.sample_latents(p, k, 2).z_id)(prior, jax.random.key(4))
  assert sampled.shape == (2, 80)  # the prior is a pytree: it goes through jit as an argument


def test_gaussian_sample_latents_unchanged():
  prior = priors.GaussianPrior.standard()
  key = jax.random.key(5)
  latents = priors.sample_latents(prior, key, 3)
  key_id, key_exp, key_noise = jax.random.split(key, 3)
  np.testing.assert_array_equal(latents.z_id, jax.random.normal(key_id, (3, 80)))
  np.testing.assert_array_equal(latents.z_exp, jax.random.normal(key_exp, (3, 64)))
  np.testing.assert_array_equal(latents.noise, jax.random.normal(key_noise, (3, 80)))


@pytest.mark.parametrize("kind", ["gaussian", "vae"])
def test_save_load_round_trip(tmp_path, kind):
  if kind == "gaussian":
    prior = priors.GaussianPrior.fit(_table(50, 80, 9), _table(50, 64, 10))
  else:
    prior = vae.VAEPrior.from_vaes(_random_params(vae.CoefficientVAE(80, **SMALL), 0),
                                   _random_params(vae.CoefficientVAE(64, **SMALL), 1))
  path = priors.save_prior(prior, tmp_path / "prior.npz")
  loaded = priors.load_prior(path)
  assert type(loaded) is type(prior)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, prior)
  key = jax.random.key(1)
  np.testing.assert_array_equal(loaded.sample_exp(key, 3), prior.sample_exp(key, 3))


def _npz(path, **arrays):
  with open(path, "wb") as f:
    np.savez(f, **arrays)
  return path


def test_load_prior_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="no such prior file"):
    priors.load_prior(tmp_path / "missing.npz")
  (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
  with pytest.raises(priors.PriorFileError, match="junk.npz: not a prior file"):
    priors.load_prior(tmp_path / "junk.npz")
  with pytest.raises(priors.PriorFileError, match="kind 'gmm'"):
    priors.load_prior(_npz(tmp_path / "a.npz", kind="gmm", format=1))
  good = priors.GaussianPrior.standard()
  arrays = {k: np.asarray(getattr(good, k)) for k in ("id_mean", "id_scale_tril", "exp_mean")}
  with pytest.raises(priors.PriorFileError, match=r"b.npz: Gaussian prior field 'exp_scale_tril'"):
    priors.load_prior(_npz(tmp_path / "b.npz", kind="gaussian", format=1, **arrays))
  arrays["exp_scale_tril"] = np.full((64, 64), np.nan, np.float32)
  with pytest.raises(priors.PriorFileError, match="'exp_scale_tril' must hold finite floats"):
    priors.load_prior(_npz(tmp_path / "c.npz", kind="gaussian", format=1, **arrays))
  swapped = vae.VAEPrior.init(jax.random.key(0), latent_dim=4, hidden=8, depth=1)
  swapped = swapped.replace(exp_decoder=swapped.id_decoder)  # 80 outputs where 64 belong
  priors.save_prior(swapped, tmp_path / "d.npz")
  with pytest.raises(priors.PriorFileError, match=r"'exp_decoder/output/kernel' must have 64"):
    priors.load_prior(tmp_path / "d.npz")


@pytest.mark.parametrize("z_id,z_exp,match", [
    (np.zeros((10, 79)), np.zeros((10, 64)), r"z_id must be a \(M, 80\)"),
    (np.zeros((10, 80)), np.zeros((1, 64)), r"z_exp has 1 rows, need at least 2"),
    (np.zeros((10, 80)), np.where(np.arange(10)[:, None] == 3, np.nan, np.zeros((10, 64))),
     r"z_exp has 1 rows with NaN/inf \(first: row 3\)"),
])
def test_fit_vae_prior_rejects_bad_tables(z_id, z_exp, match):
  with pytest.raises(ValueError, match=match):
    priors.fit_vae_prior(z_id, z_exp, jax.random.key(0), steps=1)


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "anifacegan_jax.fit_prior", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


def test_cli_fits_npz_and_mat_folder(tmp_path):
  z_id, z_exp = _table(40, 80, 11), _table(40, 64, 12)
  source = _npz(tmp_path / "table.npz", id=z_id, exp=z_exp)
  result = _cli(f"--coefficients={source}", f"--out={tmp_path / 'prior.npz'}", "--kind=gaussian")
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == str(tmp_path / "prior.npz")
  loaded = priors.load_prior(tmp_path / "prior.npz")
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded,
                         priors.GaussianPrior.fit(z_id, z_exp))
  manual = tmp_path / "ffhq"
  mats = [write_ffhq_example(manual, f"{i:05d}") for i in range(3)]
  result = _cli(f"--coefficients={manual}", f"--out={tmp_path / 'mats.npz'}", "--kind=gaussian")
  assert result.returncode == 0, result.stderr
  np.testing.assert_allclose(priors.load_prior(tmp_path / "mats.npz").id_mean,
                             np.mean([m["id"][0] for m in mats], axis=0), rtol=1e-5, atol=1e-6)


def test_cli_reports_bad_inputs(tmp_path):
  source = _npz(tmp_path / "only_id.npz", id=np.zeros((5, 80)))
  result = _cli(f"--coefficients={source}", f"--out={tmp_path / 'p.npz'}")
  assert result.returncode == 2
  assert "only_id.npz: missing array 'exp'" in result.stderr
  assert "Traceback" not in result.stderr
