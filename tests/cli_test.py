"""The entry points' shared plumbing: the persistent compilation cache."""

import jax
import pytest
from absl import logging

from anifacegan_jax import cli


@pytest.fixture
def cache_config():
  """Restore JAX's cache directory after a test that sets it."""
  previous = jax.config.jax_compilation_cache_dir
  yield
  jax.config.update("jax_compilation_cache_dir", previous)


def test_the_compilation_cache_goes_where_asked(tmp_path, monkeypatch, cache_config):
  assert cli.enable_compilation_cache("none") is None
  assert cli.enable_compilation_cache("off") is None
  given = tmp_path / "given"
  assert cli.enable_compilation_cache(str(given)) == given and given.is_dir()
  assert jax.config.jax_compilation_cache_dir == str(given)
  # '' = $JAX_COMPILATION_CACHE_DIR, else the user cache.
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "env"))
  assert cli.enable_compilation_cache("") == tmp_path / "env"
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user"))
  assert cli.enable_compilation_cache("") == tmp_path / "user" / "anifacegan_jax" / "xla"
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / "user" / "anifacegan_jax" / "xla")


def test_an_unwritable_cache_directory_only_costs_the_cache(tmp_path, monkeypatch, cache_config):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  warnings = []
  monkeypatch.setattr(logging, "warning", lambda fmt, *args: warnings.append(fmt % args))
  before = jax.config.jax_compilation_cache_dir
  assert cli.enable_compilation_cache(str(blocker / "xla")) is None
  assert jax.config.jax_compilation_cache_dir == before
  assert len(warnings) == 1 and "--compilation_cache=" in warnings[0]
  assert "running without the compilation cache" in warnings[0]
