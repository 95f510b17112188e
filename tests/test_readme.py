"""The README tells the truth: every Python snippet in it runs and prints what its comments say."""

import contextlib
import io
import re

from conftest import REPO_ROOT

FENCE = re.compile(r"```python\n(.*?)```", re.S)


def python_blocks() -> list[str]:
  return FENCE.findall((REPO_ROOT / "README.md").read_text())


def test_readme_has_python_snippets():
  assert python_blocks(), "README.md lost its Python examples"


def test_readme_python_snippets_run_and_print_what_they_claim():
  for block in python_blocks():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      exec(compile(block, "README.md", "exec"), {})  # pylint: disable=exec-used
    # A `print(...)   # expected` line promises that output.
    promised = [m.group(1).strip() for m in re.finditer(r"^print\(.*\)\s+#\s*(.+)$", block, re.M)]
    printed = out.getvalue().strip().splitlines()
    for want in promised:
      assert want in printed, f"README promised {want!r}, printed {printed}"
