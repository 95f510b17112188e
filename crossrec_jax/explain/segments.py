"""Which unit of the example text each token belongs to (the data's `segments` column).

Per token of a cross-encoder example (`data/examples.build_examples`, its 'segments' column):
  0 = special tokens and the template text, 1 = the user-profile facts, 2 = the candidate,
  3 + k = history entry k (k = 0 the newest entry shown; the data caps the id at 127, so entries
  from the 125th newest on would share one unit).
Explanations read this column; they never re-derive spans from text, so the units are exactly
the pieces the example was assembled from.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crossrec_jax.data import examples as examples_lib

__all__ = ["SPECIAL", "PROFILE", "CANDIDATE", "HISTORY", "example_segments", "num_entries",
           "fact_spans"]

SPECIAL, PROFILE, CANDIDATE, HISTORY = (examples_lib.SEG_TEMPLATE, examples_lib.SEG_PROFILE,
                                        examples_lib.SEG_CANDIDATE, examples_lib.SEG_HISTORY)
# Tokens that end one profile fact (a sentence, or one item of the top / bottom lists).
FACT_ENDS = (".", ";")


def example_segments(examples: Any) -> np.ndarray:
  """[N] object array of int [L_i] segment rows of `examples` (an ExampleSet or columns)."""
  if "segments" not in examples.keys():
    raise ValueError("these examples have no 'segments' column (built by hand, or prepared "
                     "before segments existed): rebuild them with data/examples.build_examples")
  return examples["segments"]


def num_entries(segments: np.ndarray) -> int:
  """History entries in one example's segment row (their ids are HISTORY + 0 .. n - 1)."""
  segments = np.asarray(segments)
  hist = segments[segments >= HISTORY]
  return int(hist.max() - HISTORY + 1) if len(hist) else 0


def fact_spans(segments: np.ndarray, tokens: list[str]) -> list[np.ndarray]:
  """Token positions of each profile fact: the profile's tokens cut after every '.' or ';'
  token (a title holding one would split in two; the facts' sum is the profile's either way)."""
  positions = np.flatnonzero(np.asarray(segments) == PROFILE)
  spans, current = [], []
  for p in positions:
    current.append(p)
    if tokens[p] in FACT_ENDS:
      spans.append(np.array(current))
      current = []
  if current:
    spans.append(np.array(current))
  return spans
