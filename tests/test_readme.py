"""The README and docs/ tell the truth.

* Every Python snippet in README.md and docs/*.md runs and prints what its comments say.
* Every shell command in their ```bash blocks is checked: `make` targets and variables exist; a
  `python -m MODULE` / `python SCRIPT` command's flags are flags that program defines (read from
  its own --helpfull / --help), its `--config=NAME:PRESET` (or FILE.py:PRESET) loads with every
  `--config.*` override
  (unknown keys are errors), and the study/preset a `--study` names loads. Commands at the `tiny`
  preset are the ones the suite runs end to end (tests/test_main.py runs every experiment's tiny
  preset through main.py, tests/test_study.py the tiny study); `make demo` runs the demo; the
  larger presets need hours or accelerators, so they are checked, not run, here.
* docs/configuration.md lists every key of `config_base.base_config` with its per-preset default.
"""

import ast
import contextlib
import functools
import io
import re
import shlex
import subprocess
import sys
import tomllib

import pytest
from absl import flags

from conftest import REPO_ROOT

FENCE = re.compile(r"```python\n(.*?)```", re.S)
BASH = re.compile(r"```bash\n(.*?)```", re.S)
# An inline command in the prose: `python ...`, `make ...` (may wrap onto the next line).
INLINE = re.compile(r"`((?:\.venv/bin/)?python3? [^`]+|make [^`]+|crossrec-[a-z]+ [^`]+)`")
DOCS = ("README.md", "docs/extending.md", "docs/configuration.md")


def python_blocks(name: str = "README.md") -> list[str]:
  return FENCE.findall((REPO_ROOT / name).read_text())


def test_readme_has_python_snippets():
  assert python_blocks(), "README.md lost its Python examples"
  assert len(python_blocks("docs/extending.md")) >= 3, "docs/extending.md lost its examples"


@pytest.fixture
def private_registries(monkeypatch):
  """The snippets register a source, a template, a loss and a task: into copies, not the suite's."""
  from crossrec_jax.data import sources, text  # pylint: disable=g-import-not-at-top
  from crossrec_jax.objectives import losses  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(sources, "_REGISTRY", dict(sources._REGISTRY))  # pylint: disable=protected-access
  monkeypatch.setattr(text, "TEMPLATES", dict(text.TEMPLATES))
  monkeypatch.setattr(losses, "ALIGNMENT_LOSSES", dict(losses.ALIGNMENT_LOSSES))
  from crossrec_jax import tasks  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(tasks, "TASKS", dict(tasks.TASKS))
  return losses


@pytest.mark.parametrize("name", ["README.md", "docs/extending.md"])
def test_python_snippets_run_and_print_what_they_claim(name, private_registries):
  for block in python_blocks(name):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      exec(compile(block, name, "exec"), {"__name__": "readme_snippet"})  # pylint: disable=exec-used
    # A `print(...)   # expected` line promises that output.
    promised = [m.group(1).strip() for m in re.finditer(r"^print\(.*\)\s+#\s*(.+)$", block, re.M)]
    printed = out.getvalue().strip().splitlines()
    for want in promised:
      assert want in printed, f"{name} promised {want!r}, printed {printed}"


# ----------------------------------------------------------------------------- shell commands


def shell_commands() -> list[tuple[str, list[str]]]:
  """(document, argv) of every command in the ```bash blocks and inline in the prose; env
  assignments dropped."""
  out = []
  for name in DOCS:
    text = (REPO_ROOT / name).read_text()
    inline = [" ".join(m.split()) for m in INLINE.findall(BASH.sub("", FENCE.sub("", text)))]
    for block in BASH.findall(text) + inline:
      for line in block.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):
          argv = argv[1:]  # XLA_FLAGS=... before the command
        if argv:
          out.append((name, argv))
  return out


def test_every_document_command_is_of_a_checked_kind():
  commands = shell_commands()
  assert any(argv[:2] == ["make", "demo"] for _, argv in commands)
  for name, argv in commands:
    assert argv[0] == "make" or program_of(argv) is not None, (
        f"{name}: `{shlex.join(argv)}` is neither `make` nor a python program: add a check here")


def test_make_commands_name_existing_targets_and_variables():
  makefile = (REPO_ROOT / "Makefile").read_text()
  for name, argv in shell_commands():
    if argv[0] != "make":
      continue
    for arg in argv[1:]:
      if arg == "...":  # `make PYTHON=... ...`: "any target"
        continue
      if "=" in arg:
        var = arg.split("=")[0]
        assert re.search(rf"^{var}\s*\??=", makefile, re.M), f"{name}: no Makefile variable {var}"
      else:
        assert re.search(rf"^{re.escape(arg)}:", makefile, re.M), f"{name}: no make target {arg}"


@functools.lru_cache(maxsize=None)
def console_scripts() -> dict[str, str]:
  """pyproject.toml's console scripts: name -> module (its `run()` is the entry point)."""
  scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
  return {name: target.split(":")[0] for name, target in scripts.items()}


def program_of(argv: list[str]) -> tuple[str, ...] | None:
  """('-m', module) or (script,) of a python command line or a console script; None for
  anything else."""
  if argv[0] in console_scripts():
    return ("-m", console_scripts()[argv[0]])
  if not re.fullmatch(r"(\.venv/bin/)?python3?", argv[0]) or len(argv) < 2:
    return None
  if argv[1] == "-m":
    return ("-m", argv[2])
  return (argv[1],)


def program_args(argv: list[str]) -> list[str]:
  if argv[0] in console_scripts():
    return argv[1:]
  return argv[3:] if argv[1] == "-m" else argv[2:]


def test_console_scripts_are_run_functions_of_their_modules():
  """Read, not imported: main.py and demo.py each define absl flags (--workdir) at import."""
  scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
  assert set(scripts) == {"crossrec-train", "crossrec-study", "crossrec-demo", "crossrec-explain"}
  for target in scripts.values():
    module, _, func = target.partition(":")
    tree = ast.parse((REPO_ROOT / (module.replace(".", "/") + ".py")).read_text())
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.args.args}
    assert func == "run" and func in defined, f"{target}: no argument-free {func}() in {module}"


@functools.lru_cache(maxsize=None)
def defined_flags(program: tuple[str, ...]) -> frozenset[str]:
  """The flag names a program's own help lists (absl --helpfull, or argparse --help)."""
  def run(flag: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, *program, flag], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300, check=False)
    return proc.returncode, proc.stdout + proc.stderr

  code, text = run("--helpfull")  # absl: every flag, those of imported modules included
  if code == 2 and "unrecognized arguments: --helpfull" in text:
    code, text = run("--help")  # argparse
  # absl exits 1 after printing its help, argparse 0; a traceback is a broken program.
  assert code in (0, 1) and "Traceback" not in text, f"{' '.join(program)} help:\n{text[-2000:]}"
  return frozenset(re.findall(r"--(?:\[no\])?([A-Za-z_][\w-]*)", text))


def python_commands() -> list[tuple[str, list[str]]]:
  return [(n, a) for n, a in shell_commands() if a[0] != "make" and program_of(a) is not None]


def test_python_commands_use_flags_their_program_defines():
  for name, argv in python_commands():
    known = defined_flags(program_of(argv))
    for arg in program_args(argv):
      if not arg.startswith("--") or arg.startswith("--config."):
        continue
      flag = arg[2:].split("=")[0]
      assert flag in known or (flag.startswith("no") and flag[2:] in known), (
          f"{name}: `{shlex.join(argv)}` uses --{flag}, which {' '.join(program_of(argv))} "
          f"does not define (it has {sorted(known)})")


def load_config(args: list[str]):
  """The locked config that `--config=FILE:ARG --config.k=v ...` gives, as main.py builds it."""
  from crossrec_jax import configs  # pylint: disable=g-import-not-at-top
  from crossrec_jax import main as main_lib  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  configs.define_config_flag("config", None, "", flag_values=fv, lock_config=True)
  argv = ["prog", *[a for a in args if a.startswith("--config")]]
  saved, sys.argv = sys.argv, argv  # config_flags reads the overrides from sys.argv
  try:
    fv(argv)
  finally:
    sys.argv = saved
  return main_lib.lock_all(fv.config)


def test_config_commands_load_with_their_overrides(monkeypatch):
  monkeypatch.chdir(REPO_ROOT)
  checked = 0
  for name, argv in python_commands():
    args = program_args(argv)
    if not any(a.startswith("--config=") for a in args):
      continue
    try:
      config = load_config(args)
    except Exception as e:  # pylint: disable=broad-except
      pytest.fail(f"{name}: `{shlex.join(argv)}` does not load: {type(e).__name__}: {e}")
    preset = next(a for a in args if a.startswith("--config=")).rsplit(":", 1)[1]
    assert config.preset == preset
    for a in args:
      if a.startswith("--config.") and "[" not in a:  # the override reached the config
        key, value = a[len("--config."):].split("=", 1)
        node = config
        for part in key.split("."):
          node = node[part]
        assert str(node) == value or float(node) == float(value), (name, a, node)
    checked += 1
  assert checked >= 5


def test_demo_commands_name_a_loadable_study():
  from crossrec_jax.eval import study  # pylint: disable=g-import-not-at-top
  for name, argv in python_commands():
    if program_of(argv) != ("-m", "crossrec_jax.demo"):
      continue
    opts = dict(a[2:].split("=", 1) for a in program_args(argv) if "=" in a)
    config = study.load_experiment(opts.get("study", "transfer_study"), opts.get("preset", "cpu"))
    assert config.methods, name


def test_tiny_commands_are_the_ones_the_suite_runs():
  import test_bi_main  # pylint: disable=g-import-not-at-top
  import test_main  # pylint: disable=g-import-not-at-top
  for name, argv in python_commands():
    config = next((a for a in program_args(argv) if a.startswith("--config=")), "")
    if not config.endswith(":tiny"):
      continue
    stem = re.fullmatch(r"--config=(?:crossrec_jax/configs/)?(\w+)(?:\.py)?:tiny", config)[1]
    if program_of(argv) == ("-m", "crossrec_jax.main"):
      runs = test_main.EXPERIMENTS + test_bi_main.CONFIGS
      assert stem in runs, f"{name}: no test runs {stem}:tiny through crossrec_jax.main"
    else:
      study_cli = ("crossrec_jax.eval.study", "crossrec_jax.study", "crossrec_jax.study.runner")
      assert program_of(argv)[1] in study_cli and stem == "transfer_study", (
          f"{name}: no test runs `{shlex.join(argv)}`")


# ----------------------------------------------------------------------------- configuration.md


def flat(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


# The section of each non-default kind: its own keys, and every shared key whose default it
# changes (any other key: as the main tables, which are the cross-encoder's).
SECTIONS = {"bi_encoder": "## Bi-encoder (`kind='bi_encoder'`)",
            "hybrid": "## Hybrid text + ID model (`kind='hybrid'`)"}
BI_SECTION = SECTIONS["bi_encoder"]


def doc_rows(text: str) -> dict[str, list[str]]:
  """key -> the cells after it, for every table row of `text` keyed `like.this`."""
  rows = {}
  for line in text.splitlines():
    m = re.match(r"\| `([\w.<>]+)` \|(.*)\|\s*$", line)
    if m:
      rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
  return rows


def group_value(cell: str, group: str) -> str:
  """The value an `optimizer.<group>.*` cell gives `group`: the cell itself, or, where it names
  groups ("encoder `5e-05`, heads `0.001`"), the group's own, else `heads` (every group but the
  encoder), else `others` (every group not named)."""
  named = dict(re.findall(r"(\w+) `([^`]*)`", cell))
  if not named:
    return cell
  if group in named:
    return named[group]
  if "heads" in named and group != "encoder":
    return named["heads"]
  return named.get("others", cell)


def _check_defaults(doc_key, key, cells, presets, where):
  from crossrec_jax import config_base  # pylint: disable=g-import-not-at-top
  for i, preset in enumerate(config_base.PRESETS):
    cell = cells[i] or cells[0]  # an empty cell: same as tiny
    want = presets[preset][key]
    if doc_key != key:  # optimizer.<group>.*
      cell = group_value(cell, key.split(".")[1])
    assert cell.strip("`") == repr(want), (
        f"docs/configuration.md{where}: `{doc_key}` at {preset} says {cell}, base_config has "
        f"{want!r}")


def test_configuration_doc_lists_every_key_with_its_defaults():
  """Every kind: the cross-encoder's keys in the main tables; each other kind's own keys and every
  shared key whose default it changes in its section (SECTIONS; any other key: as the main
  tables)."""
  from crossrec_jax import config_base  # pylint: disable=g-import-not-at-top
  text = (REPO_ROOT / "docs" / "configuration.md").read_text()
  assert set(SECTIONS) == set(config_base.KINDS) - {"cross_encoder"}, (
      f"tests/test_readme.py SECTIONS {sorted(SECTIONS)} do not match config_base.KINDS "
      f"{config_base.KINDS}: give each non-default kind its section")
  section_rows = {}
  for kind, title in SECTIONS.items():
    head, found, body = text.partition(title)
    assert found, f"docs/configuration.md lost its section {title!r}"
    body, sep, tail = body.partition("\n## ")
    section_rows[kind] = doc_rows(body)
    text = head + sep + tail  # the main tables: everything outside the sections
  rows = doc_rows(text)
  groups = "|".join(config_base.GROUPS + config_base.BI_GROUPS)
  documented = {kind: set() for kind in config_base.KINDS}
  for kind in config_base.KINDS:
    presets = {p: flat(config_base.base_config(p, kind).to_dict()) for p in config_base.PRESETS}
    own = section_rows.get(kind, {})
    where = SECTIONS.get(kind, "## ")[3:]
    for key in presets["tiny"]:
      doc_key = re.sub(rf"^optimizer\.({groups})\.", "optimizer.<group>.", key)
      if doc_key in own:
        _check_defaults(doc_key, key, own[doc_key], presets, f" ({where})")
      else:
        assert doc_key in rows, f"docs/configuration.md does not list `{doc_key}` ({kind})"
        _check_defaults(doc_key, key, rows[doc_key], presets,
                        "" if kind == "cross_encoder" else f" (not in {where})")
      documented[kind].add(doc_key)
  stale = {k for k in rows if "." in k or k in ("preset", "seed", "phases", "method")} - {
      "phases"} - documented["cross_encoder"]
  stale = {k for k in stale if not k.startswith(("weights.", "lr."))}
  assert not stale, f"docs/configuration.md lists keys base_config does not have: {sorted(stale)}"
  for kind, title in SECTIONS.items():
    stale = set(section_rows[kind]) - documented[kind]
    assert not stale, f"{title[3:]} lists keys the {kind} kind does not have: {sorted(stale)}"
  phase_table = (REPO_ROOT / "docs" / "configuration.md").read_text().split("## A phase")[1]
  for key in config_base.PHASE_KEYS:
    assert re.search(rf"`{key}[`.]", phase_table), f"phase key {key!r} missing from the docs"
