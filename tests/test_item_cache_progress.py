"""Encoding the item catalogue reports its progress (issue 17: it ran silently for minutes)."""

import logging

from crossrec_jax.tasks import item_cache
from test_item_cache import TEXTS, _encoder, tokenizer  # noqa: F401  (a pytest fixture)


def test_encode_items_logs_items_done_and_eta(tokenizer, caplog):  # noqa: F811
  tokens = item_cache.tokenize_items(tokenizer, TEXTS, max_len=24)
  with caplog.at_level(logging.INFO, logger="crossrec_jax.tasks.item_cache"):
    item_cache.encode_items(_encoder(), tokens, batch_size=2, progress_every_s=0.0)
  lines = [r.getMessage() for r in caplog.records]
  assert [l.split(",")[0] for l in lines] == [f"item cache: encoded {k}/5 items" for k in (2, 4, 5)]
  assert all("ETA" in l for l in lines) and lines[-1].endswith("ETA 0 s")
  caplog.clear()
  with caplog.at_level(logging.INFO, logger="crossrec_jax.tasks.item_cache"):
    item_cache.encode_items(_encoder(), tokens, batch_size=2)  # seconds apart only: quiet
  assert not caplog.records
