"""The reconstruction network: shapes, BatchNorm modes, the official checkpoint layout, clear
errors, training with resume and restore, and the evaluation metrics on hand-made cases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anifacegan_jax import recon_training as rt
from anifacegan_jax import torch_save, torch_zip
from anifacegan_jax.face3d import geometry
from anifacegan_jax.metrics import coefficients as cm
from anifacegan_jax.models import recon
from anifacegan_jax.synthfaces import procedural
from anifacegan_jax.torch_zip import CheckpointLayoutError
from configs import recon as recon_config

# A two-stage bottleneck net: every key pattern of ResNet-50 (stem, downsample.0/.1, conv3/bn3).
TINY = recon.ReconNet(kind="bottleneck", stage_sizes=(1, 2), width=4, input_size=16)


def _randomized(variables, seed=0):
  """Variables with random values everywhere (heads start at zero; BN variances stay positive)."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    noise = 0.3 * rng.standard_normal(leaf.shape).astype(np.float32)
    return 0.5 + np.abs(noise) if path[-1].key == "var" else np.asarray(leaf) + noise

  return jax.tree_util.tree_map_with_path(draw, variables)


_JITTED = {}


def _apply(model, variables, images, train=False):
  """model.apply, jitted once per model (`train=True` also returns the updated batch_stats)."""
  if id(model) not in _JITTED:
    _JITTED[id(model)] = jax.jit(model.apply, static_argnames=("train", "mutable"))
  return _JITTED[id(model)](variables, images, train=train,
                            mutable=("batch_stats",) if train else False)


@pytest.fixture(scope="module")
def tiny_variables():
  return _randomized(recon.init_recon(TINY, jax.random.key(0)))


def test_resnet50_has_the_official_size_and_layout():
  model = recon.ReconNet()
  variables = jax.eval_shape(lambda: recon.init_recon(model, jax.random.key(0)))
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 224, 224, 3))), variables)
  assert out.shape == (2, 257)
  count = sum(x.size for x in jax.tree_util.tree_leaves(variables["params"]))
  assert count == 23_508_032 + 2048 * 257 + 257  # torchvision ResNet-50 without fc + 7 heads
  zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), variables)
  state = recon.to_state_dict(zeros)
  assert len(state) == 332  # 161 params + 53 BNs × (running_mean, running_var, counter)
  assert list(state)[:3] == ["backbone.conv1.weight", "backbone.bn1.weight", "backbone.bn1.bias"]
  assert list(state)[-2:] == ["final_layers.6.weight", "final_layers.6.bias"]
  assert state["backbone.layer4.0.downsample.0.weight"].shape == (2048, 1024, 1, 1)
  assert state["backbone.layer3.5.conv2.weight"].shape == (256, 256, 3, 3)
  assert [state[f"final_layers.{k}.bias"].size for k in range(7)] == [80, 64, 80, 3, 27, 2, 1]


def test_small_variant_runs_at_64_and_starts_at_the_mean_face():
  model = recon.small_recon_net(width=4)
  assert (model.kind, tuple(model.stage_sizes), model.input_size) == ("basic", (2, 2, 2, 2), 64)
  variables = recon.init_recon(model, jax.random.key(0))
  out = _apply(model, variables, jax.random.uniform(jax.random.key(1), (2, 64, 64, 3)))
  assert out.shape == (2, 257)
  np.testing.assert_array_equal(out, 0.0)  # zero-initialised heads, as Deep3DFaceRecon


def test_stem_without_max_pool_has_the_same_parameters_and_finer_features():
  pooled = recon.ReconNet(kind="basic", stage_sizes=(1,), width=4, input_size=16)
  unpooled = recon.ReconNet(kind="basic", stage_sizes=(1,), width=4, input_size=16,
                            stem_pool=False)
  variables = recon.init_recon(pooled, jax.random.key(0))
  shapes = lambda v: jax.tree_util.tree_map(jnp.shape, v)
  assert shapes(recon.init_recon(unpooled, jax.random.key(0))) == shapes(variables)
  # The heads start at zero, so compare the backbones' pooled features on the same weights.
  backbone = lambda pool: recon.ResNet("basic", (1,), 4, pool)
  x = jax.random.uniform(jax.random.key(1), (1, 16, 16, 3))
  params = {"params": variables["params"]["backbone"],
            "batch_stats": variables["batch_stats"]["backbone"]}
  a, b = backbone(True).apply(params, x), backbone(False).apply(params, x)
  assert a.shape == b.shape == (1, 4) and float(jnp.abs(a - b).max()) > 0


def test_other_image_sizes_are_resized_to_the_input_size(tiny_variables):
  grey = lambda size: jnp.full((1, size, size, 3), 0.4)  # the same image at any size
  np.testing.assert_allclose(_apply(TINY, tiny_variables, grey(12)),
                             _apply(TINY, tiny_variables, grey(16)), atol=1e-5)


def test_batchnorm_train_and_eval_modes(tiny_variables):
  images = jax.random.uniform(jax.random.key(2), (3, 16, 16, 3))
  other = images.at[1:].set(jax.random.uniform(jax.random.key(3), (2, 16, 16, 3)))
  evaluated = _apply(TINY, tiny_variables, images)
  np.testing.assert_allclose(_apply(TINY, tiny_variables, other)[0], evaluated[0],
                             atol=1e-6)  # running averages: each example on its own
  trained, updates = _apply(TINY, tiny_variables, images, train=True)
  trained_other, _ = _apply(TINY, tiny_variables, other, train=True)
  assert np.abs(trained_other[0] - trained[0]).max() > 1e-3  # batch statistics mix examples
  assert np.abs(trained - evaluated).max() > 1e-3
  # torch's running update: new = 0.9·old + 0.1·batch mean, here for the stem's BatchNorm.
  conv = jax.lax.conv_general_dilated(
      images, tiny_variables["params"]["backbone"]["conv1"]["kernel"], (2, 2), ((3, 3), (3, 3)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  old = tiny_variables["batch_stats"]["backbone"]["bn1"]["mean"]
  np.testing.assert_allclose(updates["batch_stats"]["backbone"]["bn1"]["mean"],
                             0.9 * old + 0.1 * conv.mean(axis=(0, 1, 2)), atol=1e-5)


def test_official_checkpoint_round_trip(tmp_path, tiny_variables):
  path = tmp_path / "epoch_20.pth"
  recon.save_deep3d_recon(tiny_variables, path)
  state = torch_zip.load(path)["net_recon"]
  assert state["backbone.layer2.0.downsample.0.weight"].shape == (32, 16, 1, 1)
  assert state["backbone.layer2.0.downsample.1.num_batches_tracked"].dtype == np.int64
  kernel = tiny_variables["params"]["backbone"]["conv1"]["kernel"]  # (kh, kw, in, out)
  np.testing.assert_array_equal(state["backbone.conv1.weight"], np.transpose(kernel, (3, 2, 0, 1)))
  loaded = recon.load_deep3d_recon(path, TINY)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, tiny_variables)
  images = jax.random.uniform(jax.random.key(4), (2, 16, 16, 3))
  np.testing.assert_array_equal(_apply(TINY, loaded, images), _apply(TINY, tiny_variables, images))


def _save_state(path, state):
  torch_save.save({"net_recon": state, "epoch": 20}, path)


def test_bad_checkpoints_fail_clearly(tmp_path, tiny_variables):
  state = recon.to_state_dict(tiny_variables)
  with pytest.raises(FileNotFoundError, match="missing.pth"):
    recon.load_deep3d_recon(tmp_path / "missing.pth", TINY)
  _save_state(tmp_path / "drop.pth", {k: v for k, v in state.items()
                                      if k != "backbone.layer1.0.bn2.running_var"})
  with pytest.raises(CheckpointLayoutError, match=r"drop\.pth.*missing \['backbone\.layer1\.0"
                     r"\.bn2\.running_var'\]"):
    recon.load_deep3d_recon(tmp_path / "drop.pth", TINY)
  bad = dict(state, **{"final_layers.1.weight": np.zeros((63, 32, 1, 1), np.float32)})
  _save_state(tmp_path / "shape.pth", bad)
  with pytest.raises(CheckpointLayoutError, match=r"shape\.pth: final_layers\.1\.weight has shape "
                     r"\(63, 32, 1, 1\), expected \(64, 32, 1, 1\)"):
    recon.load_deep3d_recon(tmp_path / "shape.pth", TINY)
  _save_state(tmp_path / "extra.pth", dict(state, **{"backbone.fc.weight": np.zeros(2)}))
  with pytest.raises(CheckpointLayoutError, match=r"unexpected \['backbone\.fc\.weight'\]"):
    recon.load_deep3d_recon(tmp_path / "extra.pth", TINY)
  torch_save.save(state, tmp_path / "bare.pth")
  with pytest.raises(CheckpointLayoutError, match="bare.pth: expected .*'net_recon'"):
    recon.load_deep3d_recon(tmp_path / "bare.pth", TINY)


@pytest.fixture(scope="module")
def face_model():
  return procedural.load_procedural()


def test_landmark_arrays_give_the_full_mesh_landmarks(face_model):
  coefficients = jax.random.normal(jax.random.key(5), (2, 257))
  full = face_model.arrays()
  expected = jnp.stack([geometry.landmarks_3d(full, geometry.face_vertices(full, c[:80], c[80:144]))
                        for c in coefficients])
  np.testing.assert_allclose(cm.face_landmarks(cm.landmark_arrays(face_model), coefficients),
                             expected, atol=1e-5)


def test_metrics_on_hand_made_predictions(face_model):
  arrays = cm.landmark_arrays(face_model)
  target = jax.random.normal(jax.random.key(6), (4, 257))
  perfect = cm.summarize_errors(jax.device_get(cm.per_example_errors(target, target, arrays)))
  assert perfect["exp_rmse"] == 0 and perfect["landmark_mm"] == 0
  assert perfect["angle_rmse_deg"] == 0 and perfect["num_examples"] == 4
  pred = target.at[:, 80].add(0.5).at[:, 224].add(0.03)  # exp γ0 off by 0.5, pitch by 0.03 rad
  metrics = cm.summarize_errors(jax.device_get(cm.per_example_errors(pred, target, arrays)))
  assert metrics["exp_rmse"] == pytest.approx(math.sqrt(0.25 / 64), rel=1e-5)
  assert metrics["angle_rmse_deg"] == pytest.approx(math.degrees(math.sqrt(0.03**2 / 3)), rel=1e-4)
  assert metrics["id_rmse"] == pytest.approx(0.0, abs=1e-6)
  # Landmarks move by 0.5·B_exp[:, :, 0]; model units are decimetres: 1 unit = 100 mm.
  shift = 0.5 * np.linalg.norm(face_model.exp_basis[face_model.landmarks[17:], :, 0], axis=-1)
  assert metrics["landmark_mm"] == pytest.approx(100 * shift.mean(), rel=1e-4)
  losses = cm.coefficient_losses(pred, target, arrays)
  assert float(losses["exp"]) == pytest.approx(0.25 / 64, rel=1e-5)
  assert float(losses["landmark"]) == pytest.approx(float(np.mean(shift**2)), rel=1e-4)


def _tiny_config(data_dir, num_steps):
  config = recon_config.get_config("tiny")
  config.dataset.data_dir = str(data_dir)
  config.num_steps = num_steps
  return config


def test_train_resume_and_restore(tmp_path):
  data_dir, workdir = tmp_path / "tfds", tmp_path / "run"
  first, _ = rt.train_and_evaluate(_tiny_config(data_dir, 2), str(workdir))
  assert int(first.step) == 2 and (workdir / "checkpoints" / "2").is_dir()
  state, metrics = rt.train_and_evaluate(_tiny_config(data_dir, 4), str(workdir))
  assert int(state.step) == 4 and int(state.nonfinite) == 0
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4"]
  assert metrics["num_examples"] == 8 and np.isfinite(metrics["landmark_mm"])
  model, variables = rt.restore_recon(str(workdir))
  assert model == rt.build_model(_tiny_config(data_dir, 4))
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables, state.variables)
  other = _tiny_config(data_dir, 6)
  other.model.width = 16
  with pytest.raises(rt.ReconConfigError, match="config.model.width=8, now 16"):
    rt.train_and_evaluate(other, str(workdir))


def test_restore_without_checkpoint_fails_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match="no checkpoint in .*train_recon"):
    rt.restore_recon(str(tmp_path))


def test_128_variant_is_the_benchmarked_setting():
  """configs/recon.py:128 trains what benchmarks/recon_cpu_128.json measured (< 2 mm)."""
  import json
  import pathlib
  record = json.loads((pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
                       / "recon_cpu_128.json").read_text())
  config, ran = recon_config.get_config("128"), record["config"]
  assert record["accepted"] and record["final"]["landmark_mm"] < 2.0
  assert config.dataset.config == ran["dataset"]["config"] and config.num_steps == record["steps"]
  assert config.dataset.num_train == ran["dataset"]["num_train"]
  assert config.batch_size == record["batch_size"]
  for field in ("kind", "width", "input_size", "stem_pool"):
    assert config.model[field] == ran["model"][field], field
  assert list(config.model.stage_sizes) == ran["model"]["stage_sizes"]
  for field in ("lr", "warmup_steps", "end_lr_factor"):
    assert config.optim[field] == ran["optim"][field], field
  for field in ("id_weight", "exp_weight", "angle_weight", "landmark_weight"):
    assert config.loss[field] == ran["loss"][field], field
