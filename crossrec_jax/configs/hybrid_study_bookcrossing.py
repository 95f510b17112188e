"""The hybrid-model transfer study from movies to books: ML-1M (source) -> Book-Crossing (target).

`hybrid_study.py` on the no-overlap pair of `transfer_study_bookcrossing.py`: Book-Crossing's
iterative 5-core (6,564 users, 8,771 books, 110,501 ratings 1-10) from a data directory
(`--config.data_dir`, else $CROSSREC_DATA_DIR, else ../shared/data). No user and no title is
shared with MovieLens, so the text-neighbour prior can only borrow from movies whose texts are
near a book's (a film adaptation's title, a genre word), and the title prior matches no title
and is the target-only bias model.

Run:
  python -m crossrec_jax.demo --study=hybrid_study_bookcrossing --workdir=runs/demo_bookcrossing
  python -m crossrec_jax.study --config=hybrid_study_bookcrossing:cpu --workdir=runs/hybrid_bx

Presets: as hybrid_study.py. Expected result: the README's Book-Crossing table; rerun to reproduce.
"""

from crossrec_jax.configs import hybrid_study
from crossrec_jax.configs import transfer_study_bookcrossing


def get_config(preset: str = "tiny"):
  c = hybrid_study.get_config(preset)
  c.name = f"ML-1M -> Book-Crossing 5-core, hybrid text + ID model ({preset} preset)"
  c.source = transfer_study_bookcrossing.SOURCE
  c.title_with_year = False
  return c
