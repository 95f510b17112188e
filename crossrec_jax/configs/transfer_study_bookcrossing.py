"""The transfer study from movies to books: MovieLens-1M (source) -> Book-Crossing (target).

Book-Crossing (ratings 1-10, no timestamps: each user's order is a seeded permutation, see
`data/readers_bookcrossing.py`) is read from a data directory (`--config.data_dir`, else
$CROSSREC_DATA_DIR, else ../shared/data) and cut to its iterative 5-core (6,564 users, 8,771
books, 110,501 ratings). No user is shared with MovieLens: transfer can only go through item
text. The title-prior baseline matches titles without years here (a book shares its film
adaptation's title, not its year); AUC counts like = rating > 5.5.

Run:
  python -m crossrec_jax.eval.study --config=transfer_study_bookcrossing:cpu \\
      --workdir=runs/study_bookcrossing
  python -m crossrec_jax.demo --study=transfer_study_bookcrossing --workdir=runs/demo_bookcrossing

Presets: as transfer_study.py (the same truncations). Expected result: the table in
the issue note of this study; rerun to reproduce.
"""

import functools

from crossrec_jax.configs import transfer_study
from crossrec_jax.data import sources

SOURCE = "movielens_to_bookcrossing_5core"
# A registry name for the 5-core cut, so the trainer's data preparation loads the same pair.
sources.register_source(
    SOURCE, functools.partial(sources.movielens_to_bookcrossing, kcore=5),
    "MovieLens-1M -> Book-Crossing, iterative 5-core", overwrite=True)


def get_config(preset: str = "tiny"):
  c = transfer_study.get_config(preset)
  c.name = f"ML-1M -> Book-Crossing 5-core ({preset} preset)"
  c.source = SOURCE
  c.title_with_year = False
  return c
