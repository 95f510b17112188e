"""Shared pytest fixtures.

Real data lives in ../shared/data beside the repository. Tests that need it skip with a reason
where it is absent (a fresh clone on a user's machine) but FAIL when CI=true, so a wrong path can
never turn them silently green.
"""

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("CROSSREC_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


def require_shared_data(*parts: str) -> pathlib.Path:
  """Path under ../shared/data; skip when missing locally, fail when CI=true."""
  path = SHARED_DATA.joinpath(*parts)
  if not path.exists():
    msg = f"real data not found at {path} (set CROSSREC_DATA_DIR or place ../shared/data beside the repo)"
    if os.environ.get("CI", "").lower() == "true":
      pytest.fail(msg + " -- CI=true, so this is an error, not a skip")
    pytest.skip(msg)
  return path


@pytest.fixture
def shared_data():
  """Callable fixture: shared_data('bookcrossing', 'BX-Ratings.csv') -> Path."""
  return require_shared_data
