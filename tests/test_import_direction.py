"""The layers run one way: every import in crossrec_jax/ (top-level and deferred, parsed with ast)
points down this chain or stays in its own layer:

    base (config_base, leaf helpers) < data < models < objectives (+ the pure metric functions)
    < tasks < train < eval < study, configs, main, demo

data/ is numpy and grain only (nothing from models/, train/, eval/); models/ are NNX modules (no
objectives, no trainer); only tasks/ wires data, models and objectives together, and train/
sees tasks through their Protocol.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "crossrec_jax"

# Layer -> module prefixes (longest prefix wins). A module may import its own layer and below.
LAYERS = (
    ("base", ("crossrec_jax", "crossrec_jax.config_base", "crossrec_jax.hf_files")),
    ("data", ("crossrec_jax.data",)),
    ("models", ("crossrec_jax.models",)),
    # Metrics are pure array math like the losses: the tasks' evaluators use them.
    ("objectives", ("crossrec_jax.objectives", "crossrec_jax.eval.metrics",
                    "crossrec_jax.eval.ranking", "crossrec_jax.eval.full_ranking")),
    ("tasks", ("crossrec_jax.tasks",)),
    ("train", ("crossrec_jax.train",)),
    ("eval", ("crossrec_jax.eval",)),
    ("study", ("crossrec_jax.study", "crossrec_jax.eval.study", "crossrec_jax.configs",
               "crossrec_jax.explain", "crossrec_jax.main", "crossrec_jax.demo")),
)
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}
# Edges that run up the chain today, each with who removes it. Allowed, never required: a fixed
# edge simply stops matching.
PENDING = {
    # Tokenizer loading moves to the leaf module crossrec_jax/hf_files.py (issue 12, h17lm).
    ("crossrec_jax.data.tokenize", "crossrec_jax.models.hf_import"),
}


def layer_of(module: str) -> str:
  best, layer = -1, None
  for name, prefixes in LAYERS:
    for p in prefixes:
      if (module == p or module.startswith(p + ".")) and len(p) > best:
        best, layer = len(p), name
  if layer is None:
    raise ValueError(f"{module} is in no layer of tests/test_import_direction.py")
  return layer


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
  parts = list(path.relative_to(root.parent).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def imports(path: pathlib.Path, module: str) -> list[tuple[int, str]]:
  """(line, imported crossrec_jax module) of every import statement in the file."""
  tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
  package = module if path.name == "__init__.py" else module.rpartition(".")[0]
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [(node.lineno, a.name) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        up = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(up + ([base] if base else []))
      # `from pkg import mod` imports pkg.mod when it is a module: name both, check the deeper.
      out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
  return [(line, m) for line, m in out if m == "crossrec_jax" or m.startswith("crossrec_jax.")]


def _resolve(name: str, root: pathlib.Path) -> str:
  """`name` cut back to the longest prefix that is a module or package under `root`."""
  parts = name.split(".")
  while len(parts) > 1:
    rel = pathlib.Path(root.parent, *parts)
    if rel.with_suffix(".py").is_file() or (rel / "__init__.py").is_file():
      return ".".join(parts)
    parts = parts[:-1]
  return "crossrec_jax"


def violations(root: pathlib.Path = PACKAGE) -> list[str]:
  found = []
  for path in sorted(root.rglob("*.py")):
    module = module_name(path, root)
    here = layer_of(module)
    for line, name in imports(path, module):
      target = _resolve(name, root)
      there = layer_of(target)
      if RANK[there] > RANK[here] and (module, target) not in PENDING:
        found.append(f"{path.relative_to(root.parent)}:{line}: {module} ({here}) imports "
                     f"{target} ({there}), up the chain")
  return found


def cycles(root: pathlib.Path = PACKAGE) -> list[list[str]]:
  """Import cycles between modules (deferred imports included: they hide a cycle, not cut it)."""
  graph: dict[str, set[str]] = {}
  for path in sorted(root.rglob("*.py")):
    module = module_name(path, root)
    graph[module] = {t for _, n in imports(path, module)
                     if (t := _resolve(n, root)) != module and not module.startswith(t + ".")
                     and t != "crossrec_jax"}
  found, state = [], {}

  def visit(node: str, stack: list[str]) -> None:
    state[node] = 1
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        found.append(stack[stack.index(nxt):] + [nxt])
      elif nxt not in state:
        visit(nxt, stack + [nxt])
    state[node] = 2

  for node in sorted(graph):
    if node not in state:
      visit(node, [node])
  return found


def test_no_import_cycles():
  # e.g. models/recommender.py and models/bi_encoder.py once imported each other.
  assert not cycles(), cycles()


def test_no_module_imports_up_the_chain():
  found = violations()
  assert not found, "\n".join(found)


def test_every_module_is_in_a_layer():
  for path in PACKAGE.rglob("*.py"):
    layer_of(module_name(path, PACKAGE))


def test_a_planted_violation_is_caught(tmp_path):
  root = tmp_path / "crossrec_jax"
  for sub in ("data", "models", "train"):
    (root / sub).mkdir(parents=True)
    (root / sub / "__init__.py").write_text("")
  (root / "__init__.py").write_text("")
  (root / "models" / "heads.py").write_text("X = 1\n")
  (root / "train" / "step.py").write_text("from crossrec_jax.models import heads\n")
  # Deferred inside a function, as the old cycles hid theirs.
  (root / "data" / "prepare.py").write_text(
      "def f():\n  from crossrec_jax.train import step\n  return step\n")
  (root / "models" / "bi.py").write_text("from ..train.step import X\n")
  (root / "models" / "other.py").write_text(
      "def f():\n  from crossrec_jax.models import cyc\n")
  (root / "models" / "cyc.py").write_text("from crossrec_jax.models import other\n")
  assert cycles(root) == [["crossrec_jax.models.cyc", "crossrec_jax.models.other",
                           "crossrec_jax.models.cyc"]]
  found = violations(root)
  assert len(found) == 2, found
  assert found[0].startswith("crossrec_jax/data/prepare.py:2: crossrec_jax.data.prepare (data) "
                             "imports crossrec_jax.train.step (train)")
  assert "crossrec_jax/models/bi.py:1" in found[1] and "crossrec_jax.train.step" in found[1]


@pytest.mark.parametrize("module,layer", [("crossrec_jax.eval.full_ranking", "objectives"),
                                          ("crossrec_jax.eval.evaluate", "eval"),
                                          ("crossrec_jax.eval.plan", "eval"),
                                          ("crossrec_jax.tasks.bi_encoder", "tasks"),
                                          ("crossrec_jax.config_base", "base")])
def test_layers_by_longest_prefix(module, layer):
  assert layer_of(module) == layer
