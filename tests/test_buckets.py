"""config.data.auto_buckets (data/buckets.py): buckets fitted to the data, one trace per bucket,
the real-token share; and config.train.profile_steps through the trainer (one tiny run)."""

import numpy as np
import pytest

from crossrec_jax import config_base
from crossrec_jax.data import buckets
from crossrec_jax.data import pipeline as pl
from crossrec_jax.data import prepare
from crossrec_jax.train import trainer


def _records(lengths):
  n = len(lengths)
  return pl.RecordSource({
      "input_ids": [np.full(l, 7, np.int32) for l in lengths], "label": np.zeros(n, np.float32),
      "label_mask": np.ones(n, np.float32), "rating": np.ones(n, np.float32),
      "domain": np.zeros(n, np.int32), "user": np.zeros(n, np.int32),
      "item": np.zeros(n, np.int32)})


def test_fit_buckets_covers_every_set_and_beats_one_bucket():
  rng = np.random.default_rng(0)
  train = _records(rng.integers(20, 60, 400))
  test = _records([61, 30])  # longest example only in the eval set: still fits
  fitted = buckets.fit_buckets({"train": train, "test": test}, 3)
  assert len(fitted) <= 3 and fitted[-1] >= 61 and all(b % 4 == 0 for b in fitted)
  batches = list(pl.train_batches(train, pl.BatchConfig(16, buckets=fitted), num_epochs=1))
  one = list(pl.train_batches(train, pl.BatchConfig(16, buckets=(64,)), num_epochs=1))
  fitted_share = buckets.token_share(batches)
  assert fitted_share["real_token_share"] > buckets.token_share(one)["real_token_share"] + 0.1
  assert set(fitted_share["seq_lens"]) <= set(fitted)
  with pytest.raises(ValueError, match="auto_buckets"):
    buckets.fit_buckets({"train": train}, 0)


def test_token_share_counts_padding_rows_and_pairs():
  a = {"attention_mask": np.array([[1, 1, 0, 0], [1, 0, 0, 0]])}
  share = buckets.token_share([(a, a)])
  assert share["real_tokens"] == 6 and share["padded_tokens"] == 16 and share["rows"] == 4
  assert share["real_token_share"] == 6 / 16 and share["seq_lens"] == [4]


@pytest.mark.slow
def test_auto_buckets_default_off_and_trainer_traces_once_per_bucket(tmp_path):
  config = config_base.base_config("tiny")
  assert config.data.auto_buckets == 0  # opt-in: the demo's batches are unchanged
  config.data.auto_buckets = 3
  data = prepare.prepare_data(config)
  assert data.report["buckets"] == list(data.buckets) and len(data.buckets) <= 3
  assert data.buckets != (64,)
  config.phases = [config_base.phase("joint", 12, source=1.0, target=1.0)]
  config.train.update(dict(progress_bar=False, tensorboard=False, checkpoint_every=0,
                           log_every=4, final_eval=(), profile_steps="3,4"))
  final = trainer.train_and_evaluate(config, tmp_path, data=data)
  seen = {int(s["input_ids"].shape[1]) for s, _ in data.train_batches(
      use_source=True, use_target=True, seed=config.seed, num_steps=12)}
  assert final["phases"][0]["step_traces"] == len(seen) <= len(data.buckets)
  assert len(list((tmp_path / "profile").rglob("*.xplane.pb"))) == 1
