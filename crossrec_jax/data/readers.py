"""One reader per raw data format: raw files -> validated `Domain` tables (see schema.py).

Every reader streams its input line by line (`.gz` is gunzipped on the fly; a truncated gzip is a
`DataError` naming the file), builds its tables with `schema.build_domain`, and takes
`on_error="raise"|"skip"`: a malformed line (a bad field, bytes that are not the file's encoding,
an interaction file's last line without its newline) raises a `DataError` naming file:line and
field, or is dropped and counted in `Domain.skipped`. Duplicate (user, item, time) rows and
(user, item) repeats at another time follow `on_duplicate` / `on_repeat`. docs/reliability.md
("## Readers") tabulates every reader against every fault kind (`reader_matrix.py`). Item text fields use the names in `ITEM_TEXT_FIELDS`
(title, year, genres, author, publisher, category, brand) wherever the source has them.

| reader                   | format                                           | scale | time      |
|--------------------------|--------------------------------------------------|-------|-----------|
| read_recbole_atomic      | RecBole `.inter` + `.item` (embedded ML-1M/100K)  | given | timestamp |
| read_movielens_dat       | GroupLens ML-1M `ratings.dat`, `movies.dat`       | 1-5   | timestamp |
| read_movielens_100k      | GroupLens ML-100K `u.data`, `u.item`              | 1-5   | timestamp |
| read_amazon2018          | `*_5.json.gz` (+ `meta_*.json.gz`)                | 1-5   | seconds   |
| read_amazon2023          | `*.jsonl(.gz)` (+ `meta_*.jsonl(.gz)`)            | 1-5   | ms        |
| read_bookcrossing        | `BX-Books.csv`, `BX-Ratings.csv`                  | 1-10  | permuted  |
| read_food_kitchen        | LLMCDSR food-kitchen sequences (two domains)      | impl. | sequence  |
"""

from crossrec_jax.data.readers_amazon import read_amazon2018, read_amazon2023
from crossrec_jax.data.readers_bookcrossing import permuted_times, read_bookcrossing
from crossrec_jax.data.readers_food_kitchen import (HeldOutSequences, SequenceCrossDomainData,
                                                    read_food_kitchen)
from crossrec_jax.data.readers_io import ITEM_TEXT_FIELDS, iter_lines, split_title_year
from crossrec_jax.data.readers_movielens import (read_movielens_100k, read_movielens_dat,
                                                 read_recbole_atomic)

__all__ = [
    "ITEM_TEXT_FIELDS", "HeldOutSequences", "SequenceCrossDomainData", "iter_lines",
    "permuted_times", "read_amazon2018", "read_amazon2023", "read_bookcrossing",
    "read_food_kitchen", "read_movielens_100k", "read_movielens_dat", "read_recbole_atomic",
    "split_title_year",
]
