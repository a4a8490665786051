"""Official checkpoint layouts ↔ Flax trees: key tables, round trips, EMA lists, clear errors."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anifacegan_jax import porting, torch_zip
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
  torch_zip.save({"decay": 0.999, "num_updates": 7, "shadow_params": shadow,
                  "collected_params": None}, tmp_path / "ema.pth")
  _, loaded = porting.load_official(gen_path, dif_path, ema_path=tmp_path / "ema.pth")
  np.testing.assert_allclose(loaded["params"]["radiance"]["film_0"]["linear"]["kernel"],
                             variables["params"]["radiance"]["film_0"]["linear"]["kernel"] + 1.0)


def test_ddp_prefix_is_accepted(tmp_path, official):
  _, variables = official
  state = porting.to_torch(variables["params"]["deformation"], porting.DEFORMATION_LAYOUT)
  torch_zip.save(collections.OrderedDict((f"module.{k}", v) for k, v in state.items()),
                 tmp_path / "dif.pth")
  loaded = porting.load_deformation(tmp_path / "dif.pth")
  np.testing.assert_array_equal(loaded["output"]["kernel"],
                                variables["params"]["deformation"]["output"]["kernel"])


def test_bad_checkpoints_name_the_file_and_key(tmp_path, official):
  _, variables = official
  state = porting.to_torch(variables["params"]["deformation"], porting.DEFORMATION_LAYOUT)
  missing = collections.OrderedDict(list(state.items())[1:])
  torch_zip.save(missing, tmp_path / "missing.pth")
  with pytest.raises(porting.CheckpointLayoutError, match=r"missing\.pth.*network\.0\.layer\.weight"):
    porting.load_deformation(tmp_path / "missing.pth")
  wrong = collections.OrderedDict(state)
  wrong["final_layer.weight"] = np.zeros((3, 128), np.float32)
  torch_zip.save(wrong, tmp_path / "wrong.pth")
  with pytest.raises(porting.CheckpointLayoutError, match=r"wrong\.pth.*final_layer\.weight.*\(7, 128\)"):
    porting.load_deformation(tmp_path / "wrong.pth")
  with pytest.raises(porting.CheckpointLayoutError, match="shadow_params"):
    torch_zip.save({"decay": 0.999}, tmp_path / "ema.pth")
    porting.load_official(tmp_path / "missing.pth", tmp_path / "missing.pth",
                          ema_path=tmp_path / "ema.pth")
