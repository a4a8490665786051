"""Official checkpoint layouts ↔ Flax trees: key tables, round trips, EMA lists, clear errors."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anifacegan_jax import experiment, porting, torch_save
from anifacegan_jax.models.generator import init_generator, render
from anifacegan_jax.types import Camera, Latents
from conftest import official_keys


@pytest.fixture(scope="module")
def official():
  model = porting.official_generator()
  return model, init_generator(model, jax.random.key(1))


def test_template_layout_matches_keys_shapes_file(reference_dir, official):
  _, variables = official
  template = {k: v for k, v in variables["params"].items() if k != "deformation"}
  state = porting.to_torch(template, porting.TEMPLATE_LAYOUT)
  expected = official_keys(reference_dir, "AniFaceGAN generator.pth")
  assert [(k, v.shape) for k, v in state.items()] == expected
  assert sum(v.size for v in state.values()) == 1_926_045


def test_synthetic_official_checkpoints_round_trip(tmp_path, official):
  model, variables = official
  gen_path, dif_path = tmp_path / "generator.pth", tmp_path / "dif.pth"
  porting.save_official(variables, gen_path, dif_path)
  loaded_model, loaded = porting.load_official(gen_path, dif_path)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded["params"], variables["params"])
  latents = Latents.dummy(1).replace(z_id=jnp.ones((1, 80)))
  a = render(model, variables, latents, Camera.frontal(1), resolution=8)
  b = render(loaded_model, loaded, latents, Camera.frontal(1), resolution=8)
  np.testing.assert_array_equal(a.image, b.image)
  assert np.isfinite(b.image).all()


def test_ema_shadow_list_replaces_generator_weights(tmp_path, official):
  _, variables = official
  gen_path, dif_path = tmp_path / "generator.pth", tmp_path / "dif.pth"
  porting.save_official(variables, gen_path, dif_path)
  template = {k: v for k, v in variables["params"].items() if k != "deformation"}
  shadow = [v + 1.0 for v in porting.to_torch(template, porting.TEMPLATE_LAYOUT).values()]
  torch_save.save({"decay": 0.999, "num_updates": 7, "shadow_params": shadow,
                  "collected_params": None}, tmp_path / "ema.pth")
  _, loaded = porting.load_official(gen_path, dif_path, ema_path=tmp_path / "ema.pth")
  np.testing.assert_allclose(loaded["params"]["radiance"]["film_0"]["linear"]["kernel"],
                             variables["params"]["radiance"]["film_0"]["linear"]["kernel"] + 1.0)


def test_ddp_prefix_is_accepted(tmp_path, official):
  _, variables = official
  state = porting.to_torch(variables["params"]["deformation"], porting.DEFORMATION_LAYOUT)
  torch_save.save(collections.OrderedDict((f"module.{k}", v) for k, v in state.items()),
                 tmp_path / "dif.pth")
  loaded = porting.load_deformation(tmp_path / "dif.pth")
  np.testing.assert_array_equal(loaded["output"]["kernel"],
                                variables["params"]["deformation"]["output"]["kernel"])


def test_bad_checkpoints_name_the_file_and_key(tmp_path, official):
  _, variables = official
  state = porting.to_torch(variables["params"]["deformation"], porting.DEFORMATION_LAYOUT)
  missing = collections.OrderedDict(list(state.items())[1:])
  torch_save.save(missing, tmp_path / "missing.pth")
  with pytest.raises(porting.CheckpointLayoutError, match=r"missing\.pth.*network\.0\.layer\.weight"):
    porting.load_deformation(tmp_path / "missing.pth")
  wrong = collections.OrderedDict(state)
  wrong["final_layer.weight"] = np.zeros((3, 128), np.float32)
  torch_save.save(wrong, tmp_path / "wrong.pth")
  with pytest.raises(porting.CheckpointLayoutError, match=r"wrong\.pth.*final_layer\.weight.*\(7, 128\)"):
    porting.load_deformation(tmp_path / "wrong.pth")
  with pytest.raises(porting.CheckpointLayoutError, match="shadow_params"):
    torch_save.save({"decay": 0.999}, tmp_path / "ema.pth")
    porting.load_official(tmp_path / "missing.pth", tmp_path / "missing.pth",
                          ema_path=tmp_path / "ema.pth")


def _write_release(root, variables, with_vaes=True):
  """A synthetic official release: checkpoints/{generator,ema,dif}.pth (+ pretrained_vaes/)."""
  from anifacegan_jax.models import vae
  (root / "checkpoints").mkdir(parents=True)
  porting.save_official(variables, root / "checkpoints" / "generator.pth",
                        root / "checkpoints" / "dif.pth")
  template = {k: v for k, v in variables["params"].items() if k != "deformation"}
  shadow = [v * 0.5 for v in porting.to_torch(template, porting.TEMPLATE_LAYOUT).values()]
  torch_save.save({"decay": 0.999, "num_updates": 3, "shadow_params": shadow,
                  "collected_params": None}, root / "checkpoints" / "ema.pth")
  if with_vaes:
    vae.save_official_vaes(vae.init_vae(vae.CoefficientVAE(80), jax.random.key(2)),
                           vae.init_vae(vae.CoefficientVAE(64), jax.random.key(3)),
                           root / "pretrained_vaes")


def test_official_release_samples_through_the_cli(tmp_path, official):
  import subprocess
  import sys
  from configs import synthface
  model, variables = official
  _write_release(tmp_path / "release", variables)
  config = synthface.get_config("tiny")
  run = experiment.official_run(tmp_path / "release", config)
  assert run.generator == model and run.generator.warp == "double"
  np.testing.assert_allclose(run.ema_params["radiance"]["film_0"]["linear"]["kernel"],
                             variables["params"]["radiance"]["film_0"]["linear"]["kernel"] * 0.5)
  assert run.prior.sample_exp(jax.random.key(0), 2).shape == (2, 64)
  repo = porting.__file__.rsplit("/anifacegan_jax/", 1)[0]
  result = subprocess.run(
      [sys.executable, "-m", "anifacegan_jax.sample", f"--workdir={tmp_path / 'out'}",
       f"--official_dir={tmp_path / 'release'}", "--config=configs/synthface.py:tiny",
       "--num_identities=1", "--num_expressions=2", "--yaws=0", "--psi=1"],
      cwd=repo, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  from PIL import Image
  grid = np.asarray(Image.open(result.stdout.strip().splitlines()[-1]))
  assert grid.shape == (16, 2 * 16, 3) and grid.std() > 0  # tiny config: 16², 2 expressions


def test_official_release_errors_name_the_missing_files(tmp_path, official):
  from configs import synthface
  config = synthface.get_config("tiny")
  with pytest.raises(FileNotFoundError, match=r"checkpoints/generator\.pth.*release layout"):
    experiment.official_run(tmp_path / "nothing", config)
  _write_release(tmp_path / "release", official[1], with_vaes=False)
  with pytest.raises(FileNotFoundError, match=r"identity/vae\.pth.*--config\.prior=file:"):
    experiment.official_run(tmp_path / "release", config)
