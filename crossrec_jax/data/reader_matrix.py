"""The reader fault matrix: every reader x every fault kind, run for real, checked, tabulated.

For each (reader, fault) of `reader_matrix_cases`, a clean tiny folder is written, corrupted and
read with on_error="raise" and with on_error="skip". An outcome is acceptable when it is

* a `DataError` naming the corrupted file, and the corrupted line and field for a line fault
  (under "skip" only for faults of the whole file: a header, a JSON document, a gzip stream), or
* a read whose report counts the fault (skipped or kept, under its own reason, naming the line)
  and that lost no more rows than it reports;

never a silent acceptance, never another exception. `python -m crossrec_jax.data.reader_matrix
--markdown` prints the table of docs/reliability.md ("## Readers"); `--write PATH` replaces it
there; `--check` lists unacceptable outcomes (tests/test_reader_matrix.py runs both checks).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gzip
import os
import re
import sys
import tempfile

from crossrec_jax.data.reader_matrix_cases import FAULTS, SPECS, Fault, Spec
from crossrec_jax.data.schema import DataError, SkipReport

BEGIN, END = "<!-- reader-matrix:begin -->", "<!-- reader-matrix:end -->"


@dataclasses.dataclass(frozen=True)
class Outcome:
  text: str  # what the table shows
  problems: tuple[str, ...]  # why it is unacceptable (empty: acceptable)


@dataclasses.dataclass(frozen=True)
class Cell:
  reader: str
  fault: str
  outcomes: dict[str, Outcome] | None  # on_error -> outcome; None: not applicable
  not_applicable: str = ""


def corrupt(spec: Spec, fault: Fault, directory: str) -> tuple[str, int | None]:
  """Applies `fault` in `directory`; returns (corrupted file name, the line to be named)."""
  name = fault.file or spec.data
  path = os.path.join(directory, name)
  with open(path, "rb") as f:
    data = f.read()
  lines = data.split(b"\n")
  if lines and lines[-1] == b"":
    lines.pop()
  line = fault.line
  if fault.gzip:
    packed = gzip.compress(data)
    os.remove(path)
    name, path, data = name + ".gz", path + ".gz", packed[:len(packed) // 2]
  elif fault.edit is None:  # cut: the last line loses its newline and its last character
    data, line = data[:-2], len(lines)
  else:
    edited = fault.edit(lines)
    line = len(edited) if fault.appended else line
    data = b"".join(l + b"\n" for l in edited)
  with open(path, "wb") as f:
    f.write(data)
  return name, line


def _place(examples: list[str] | None) -> str:
  """' `file:line`' of a report's first example ('/tmp/x/u.data:3, field ...' -> 'u.data:3')."""
  return f" `{os.path.basename(examples[0].split(', field')[0])}`" if examples else ""


def _reason(message: str) -> str:
  """The reason part of a DataError message, without paths, values or advice."""
  m = re.match(r"(?:domain '[^']*': )?(.+?) at \S+:\d+", message)
  if m is None:
    m = re.match(r"\S*?(?::\d+)?: (.+)", message)
  # Cut at the first aside (" (pass on_error=...", " (first at ...") but not "(user, item)".
  text = re.split(r" \((?![uU]ser)|;|: value", m.group(1) if m else message)[0]
  return text if len(text) <= 70 else text[:67] + "..."


def _outcome(spec: Spec, fault: Fault, on_error: str, clean: tuple[int, SkipReport]) -> Outcome:
  with tempfile.TemporaryDirectory(prefix="reader-matrix-") as directory:
    spec.write(directory)
    name, line = corrupt(spec, fault, directory)
    where = f"{name}:{line}" if line is not None else name
    try:
      rows, report = spec.read(directory, on_error)
    except DataError as e:
      message = str(e).replace(directory + os.sep, "")
      named = re.search(re.escape(name) + r"(?::(\d+))?", message)
      field = re.search(r"field '([^']+)'", message)
      problems = []
      if named is None or (line is not None and where not in message):
        problems.append(f"the error does not name {where}: {message}")
      if line is not None and not fault.whole and field is None:
        problems.append(f"the error names no field: {message}")
      if on_error == "skip" and not fault.whole:
        problems.append("on_error='skip' rejected the whole file for a one-line fault")
      shown = f"`{named.group(0)}`" if named else "(no file)"
      text = f"error {shown}" + (f", field `{field.group(1)}`" if field else "")
      return Outcome(f"{text}: {_reason(message)}", tuple(problems))
    except Exception as e:  # pylint: disable=broad-except
      return Outcome(f"raw {type(e).__name__}", (f"raw {type(e).__name__}: {e}",))
  clean_rows, clean_report = clean
  skips = collections.Counter(report.counts) - collections.Counter(clean_report.counts)
  kept = collections.Counter(report.kept) - collections.Counter(clean_report.kept)
  lost = clean_rows + fault.added - rows
  problems = []
  if not skips and not kept:
    problems.append(f"silent acceptance ({rows} rows, nothing reported)")
  if lost > sum(skips.values()):
    problems.append(f"{lost} rows lost, {sum(skips.values())} reported")
  examples = [w for reason in skips for w in report.examples.get(reason, [])]
  if skips and line is not None and not any(f"{where}," in w or w.endswith(where)
                                            for w in examples):
    problems.append(f"the skip report does not name {where}: {examples}")
  parts = [f"skipped {n}{_place(report.examples.get(r))}: {r}" for r, n in sorted(skips.items())]
  parts += [f"kept {n}, counted: {r}" for r, n in sorted(kept.items())]
  return Outcome("; ".join(parts) or "accepted", tuple(problems))


def run(specs=SPECS) -> list[Cell]:
  """Every (reader, fault) cell, in table order."""
  cells = []
  for spec in specs:
    with tempfile.TemporaryDirectory(prefix="reader-matrix-") as directory:
      spec.write(directory)
      clean = spec.read(directory, "raise")
    for fault_name in FAULTS:
      fault = spec.faults.get(fault_name)
      if fault is None:
        cells.append(Cell(spec.name, fault_name, None, spec.not_applicable[fault_name]))
        continue
      cells.append(Cell(spec.name, fault_name, {
          mode: _outcome(spec, fault, mode, clean) for mode in ("raise", "skip")}))
  return cells


def problems(cells: list[Cell]) -> list[str]:
  return [f"{c.reader} x {c.fault} (on_error={mode!r}): {p}" for c in cells if c.outcomes
          for mode, o in c.outcomes.items() for p in o.problems]


def markdown(cells: list[Cell]) -> str:
  rows = ["| reader | fault | `on_error=\"raise\"` | `on_error=\"skip\"` |",
          "|---|---|---|---|"]
  for c in cells:
    if c.outcomes is None:
      rows.append(f"| {c.reader} | {c.fault} | n/a: {c.not_applicable} | |")
    else:
      rows.append(f"| {c.reader} | {c.fault} | {c.outcomes['raise'].text} | "
                  f"{c.outcomes['skip'].text} |")
  return "\n".join(rows) + "\n"


def doc_table(text: str) -> str:
  """The generated part of a document, between the BEGIN and END markers."""
  if BEGIN not in text or END not in text:
    raise ValueError(f"no {BEGIN} ... {END} block in the document")
  return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def write_doc(path: str, table: str) -> None:
  with open(path, encoding="utf-8") as f:
    text = f.read()
  doc_table(text)  # the markers must be there
  head, rest = text.split(BEGIN, 1)
  with open(path, "w", encoding="utf-8") as f:
    f.write(f"{head}{BEGIN}\n{table}{END}{rest.split(END, 1)[1]}")


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--markdown", action="store_true", help="print the table")
  parser.add_argument("--write", metavar="PATH", help="replace the table in PATH")
  parser.add_argument("--check", action="store_true", help="list unacceptable outcomes")
  args = parser.parse_args(argv)
  cells = run()
  if args.markdown:
    sys.stdout.write(markdown(cells))
  if args.write:
    write_doc(args.write, markdown(cells))
  bad = problems(cells)
  if args.check:
    print("\n".join(bad) or f"all {sum(c.outcomes is not None for c in cells)} cells acceptable")
  return 1 if args.check and bad else 0


if __name__ == "__main__":
  sys.exit(main())
