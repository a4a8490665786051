"""The package's layering, read from the code's own imports (docs/architecture.md).

Every `import` / `from ... import` is counted, those inside functions too. A node is a top-level
module (`training`, `experiment`, ...) or a subpackage (`models`, `face3d`, ...); a `__main__.py` is a
command of its own, above its package.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "anifacegan_jax"


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set[str]:
  """Dotted names of the anifacegan_jax modules `path` imports (`from a import b`: a.b if that
  is a module, else a)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names if a.name.startswith("anifacegan_jax"))
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      if not node.module.startswith("anifacegan_jax"):
        continue
      for alias in node.names:
        candidate = f"{node.module}.{alias.name}"
        as_path = ROOT.joinpath(*candidate.split("."))
        is_module = as_path.with_suffix(".py").exists() or (as_path / "__init__.py").exists()
        names.add(candidate if is_module else node.module)
  return names


def _node(module: str) -> str:
  """The layer a module belongs to: its subpackage, or itself when top level / a command."""
  parts = module.split(".")[1:]
  if not parts:
    return "anifacegan_jax"
  if parts[-1] == "__main__":
    return ".".join(parts)
  if (PACKAGE / parts[0]).is_dir():
    return parts[0]
  return parts[0]


def _graph() -> dict[str, set[str]]:
  graph: dict[str, set[str]] = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    source = _node(_module_name(path))
    graph.setdefault(source, set())
    for name in _imports(path):
      target = _node(name)
      if target != source and target != "anifacegan_jax":
        graph[source].add(target)
  return graph


def test_only_the_training_command_imports_the_training_loop():
  importers = []
  for path in sorted(list(PACKAGE.rglob("*.py")) + list((ROOT / "benchmarks").glob("*.py"))):
    if path.name == "training.py" and path.parent == PACKAGE:
      continue
    if "anifacegan_jax.training" in _imports(path):
      importers.append(str(path.relative_to(ROOT)))
  assert importers == ["anifacegan_jax/main.py"]


def test_commands_are_verbs_and_their_libraries_nouns():
  # main/training, sample/sampling, evaluate/evaluation, train_recon/recon_training, serve/viewer,
  # invert/inversion: a module with a command line (absl flags) is named for what the user asks;
  # the code it runs, for the work.
  commands = {p.stem for p in PACKAGE.glob("*.py") if '__name__ == "__main__"' in p.read_text()}
  assert {"main", "sample", "evaluate", "train_recon", "serve", "invert"} <= commands
  assert (PACKAGE / "viewer" / "__init__.py").exists()
  for library in ("training", "sampling", "evaluation", "recon_training", "inversion"):
    assert (PACKAGE / f"{library}.py").exists(), library
    assert library not in commands, library
  assert not (PACKAGE / "train.py").exists()


def test_the_layers_form_no_import_cycle():
  graph = _graph()
  assert {"models", "face3d", "synthfaces", "metrics", "data", "rendering", "training"} <= set(graph)
  state: dict[str, int] = {}  # 1: on the current path, 2: done
  path: list[str] = []

  def visit(node: str):
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
      if nxt not in state:
        visit(nxt)
    path.pop()
    state[node] = 2

  for node in sorted(graph):
    if node not in state:
      visit(node)


def test_the_morphable_model_stands_below_the_world_and_the_networks_that_use_it():
  graph = _graph()
  assert graph["face3d"] <= {"types"}
  assert "synthfaces" in graph["data"] and "face3d" in graph["synthfaces"]
  assert not graph["synthfaces"] & {"data", "metrics", "models", "recon_step", "recon_training"}
