"""The shipped SynthFaces model (`--pretrained=synthfaces`): it loads from the package, keeps its
radiance manifolds, and its geometry follows its codes (BENCHMARKS.md "The 64² run on an
accelerator" has the full evaluation)."""

import pytest

from anifacegan_jax import evaluation, experiment, pretrained


@pytest.fixture(scope="module")
def shipped():
  return experiment.load_pretrained("synthfaces")


@pytest.fixture(scope="module")
def measured(shipped, tmp_path_factory):
  settings = evaluation.Settings(metrics=("geometry", "control"), control_num=32, geometry_num=16,
                                 batch_size=16)
  return evaluation.evaluate(shipped, tmp_path_factory.mktemp("eval"), settings)


def test_the_shipped_model_fits_its_size_budget(shipped):
  folder = pretrained.model_dir("synthfaces")
  assert sum(p.stat().st_size for p in folder.iterdir()) <= 40 * 2**20
  assert pretrained.has_recon(folder) and shipped.config.recon == str(folder)
  # the step model.json names; the accelerator run stopped on its time budget (BENCHMARKS.md)
  assert shipped.step == pretrained.read_info(folder)["step"]
  assert 0 < shipped.step <= int(shipped.config.num_steps)


def test_the_shipped_model_keeps_its_manifolds(measured):
  assert measured["geometry/crossings"] >= 0.7
  assert measured["geometry/foreground"] >= 0.5


def test_the_shipped_models_geometry_follows_its_codes(measured):
  # The generated depth puts the 3DMM's landmarks of (z_id, z_exp) where the mesh has them.
  assert measured["control/landmark_depth_mm"] <= 25
