"""The run record fingerprints the data actually used (data/fingerprint.py): resuming a run on
other tables under the same config is an error naming both."""

import dataclasses
import json

import pytest

from crossrec_jax import config_base
from crossrec_jax.data import examples
from crossrec_jax.data import fingerprint
from crossrec_jax.data import prepare
from crossrec_jax.train import trainer


@pytest.fixture(scope="module")
def tiny_data():
  return prepare.prepare_data(config_base.base_config("tiny"))


def other_tables(data):
  """Same config and sizes, other labels: what a re-registered source or a hand-built
  PreparedData gives (the batch iterator's own state check sees only sizes)."""
  src = data.sources["target_train"]
  flipped = examples.ExampleSet({**src.columns, "label": 1.0 - src.columns["label"]}, src.info)
  return dataclasses.replace(data, sources={**data.sources, "target_train": flipped})


def test_fingerprint_follows_the_tables_not_the_config(tiny_data):
  again = prepare.prepare_data(config_base.base_config("tiny"))
  assert fingerprint.data_fingerprint(again) == fingerprint.data_fingerprint(tiny_data)
  assert fingerprint.data_fingerprint(other_tables(tiny_data)) != fingerprint.data_fingerprint(
      tiny_data)


@pytest.mark.slow
def test_resuming_on_other_data_names_both_fingerprints(tmp_path, tiny_data):
  config = config_base.base_config("tiny")
  config.phases = [config_base.phase("target", 2, target=1.0)]
  config.train.update(dict(progress_bar=False, tensorboard=False))
  final = trainer.train_and_evaluate(config, tmp_path, data=tiny_data)
  ours = fingerprint.data_fingerprint(tiny_data)
  assert final["data_fingerprint"] == ours
  assert json.loads((tmp_path / "final_metrics.json").read_text())["data_fingerprint"] == ours
  other = other_tables(tiny_data)
  theirs = fingerprint.data_fingerprint(other)
  with pytest.raises(ValueError, match=f"trained on data {ours}.*prepared data {theirs}"):
    trainer.train_and_evaluate(config, tmp_path, data=other)
  trainer.train_and_evaluate(config, tmp_path, data=tiny_data)  # the same data resumes
