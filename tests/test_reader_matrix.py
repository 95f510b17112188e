"""The reader fault matrix (crossrec_jax/data/reader_matrix.py): every reader x every fault kind
gives an error naming file:line:field or a counted skip, and docs/reliability.md shows the table
that the matrix generates."""

import dataclasses
import pathlib

import pytest

from crossrec_jax.data import reader_matrix
from crossrec_jax.data.reader_matrix_cases import FAULTS, RECBOLE, SPECS
from crossrec_jax.data.schema import DataError, SkipReport

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "reliability.md"


@pytest.fixture(scope="module")
def cells():
  return reader_matrix.run()


def test_every_cell_is_an_error_naming_the_line_or_a_counted_skip(cells):
  assert reader_matrix.problems(cells) == []
  assert len(cells) == len(SPECS) * len(FAULTS)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_fault_is_tried_or_explained(spec):
  assert set(spec.faults) | set(spec.not_applicable) == set(FAULTS)
  assert not set(spec.faults) & set(spec.not_applicable)


def test_the_doc_table_is_the_generated_one(cells):
  table = reader_matrix.doc_table(DOC.read_text(encoding="utf-8"))
  assert table == reader_matrix.markdown(cells), (
      "docs/reliability.md is stale: run python -m crossrec_jax.data.reader_matrix "
      "--write docs/reliability.md")


def test_the_check_catches_silent_acceptance_lost_rows_and_raw_errors():
  clean_rows, clean_report = 3, SkipReport()
  silent = dataclasses.replace(RECBOLE, read=lambda d, on_error: (clean_rows, clean_report))
  bad = reader_matrix.problems(reader_matrix.run([silent]))
  assert any("non-numeric (on_error='skip'): silent acceptance" in p for p in bad)
  assert any("header only (on_error='raise'): silent acceptance" in p for p in bad)

  def lossy(directory, on_error):  # with a bad line, drops one more row than it reports
    rows, report = RECBOLE.read(directory, "skip")
    return (rows - 1 if report.total else rows), report

  bad = reader_matrix.problems(reader_matrix.run([dataclasses.replace(RECBOLE, read=lossy)]))
  assert any("2 rows lost, 1 reported" in p for p in bad)

  def raw(directory, on_error):  # a reader whose bad input ends in a bare exception
    try:
      return RECBOLE.read(directory, on_error)
    except DataError as e:
      raise KeyError(str(e)) from None

  bad = reader_matrix.problems(reader_matrix.run([dataclasses.replace(RECBOLE, read=raw)]))
  assert "read_recbole_atomic x non-numeric (on_error='raise'): raw KeyError" in "\n".join(bad)


def test_write_doc_replaces_only_the_table(tmp_path):
  doc = tmp_path / "r.md"
  doc.write_text(f"# T\n\nintro\n{reader_matrix.BEGIN}\nold\n{reader_matrix.END}\nafter\n")
  reader_matrix.write_doc(str(doc), "| new |\n")
  assert doc.read_text() == (f"# T\n\nintro\n{reader_matrix.BEGIN}\n| new |\n"
                             f"{reader_matrix.END}\nafter\n")
  with pytest.raises(ValueError, match="no <!-- reader-matrix:begin -->"):
    reader_matrix.doc_table("no markers")
