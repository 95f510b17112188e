"""The train-step benchmark's PyTorch reference computes our step: first-step losses agree for
every pooling the reference implements, and its --set overrides reach the config."""

import pathlib
import sys

import pytest

pytest.importorskip("torch", reason="torch is the numerical reference (tests only)")
pytest.importorskip("transformers")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "experiments"))
import bench_train_step as bench  # noqa: E402  pylint: disable=wrong-import-position
import torch_reference_step as torch_ref  # noqa: E402  pylint: disable=wrong-import-position
from flax import nnx  # noqa: E402  pylint: disable=wrong-import-position

from crossrec_jax import config_base  # noqa: E402  pylint: disable=wrong-import-position
from crossrec_jax.models import recommender  # noqa: E402  pylint: disable=wrong-import-position


def _tiny(pooling: str):
  config = config_base.base_config("tiny")
  config.model.pooling = pooling
  return config


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_first_step_losses_agree(pooling):
  src, tgt = bench.batches(4, 16, seed=0)
  src["attention_mask"][:, 10:] = 0  # padded tokens: the mean must skip them on both sides
  assert bench.check(_tiny(pooling), src, tgt) < 1e-5


def test_the_reference_pools_as_configured():
  src, tgt = bench.batches(4, 16, seed=0)
  losses = {}
  for pooling in ("cls", "mean"):
    config = bench.no_dropout(_tiny(pooling))
    model = recommender.build_cross_encoder(config.model, rngs=nnx.Rngs(0))
    losses[pooling] = bench.torch_step(config, model)(
        torch_ref.to_torch(src), torch_ref.to_torch(tgt), 1)["loss"]
  assert abs(losses["cls"] - losses["mean"]) > 1e-6


def test_the_reference_refuses_the_pooler():
  model = recommender.build_cross_encoder(_tiny("pooler").model, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="'pooler'"):
    torch_ref.TorchRecommender(model)


def test_set_overrides_parse_and_apply():
  overrides = bench.parse_set(["train.dropout_rng_impl=philox4x32", "data.batch_size=8"])
  assert overrides == {"train": {"dropout_rng_impl": "philox4x32"}, "data": {"batch_size": 8}}
  with pytest.raises(SystemExit, match="KEY=VALUE"):
    bench.parse_set(["train.dropout_rng_impl"])
  with pytest.raises(KeyError, match="--set.train.no_such_key"):
    bench.bench_preset("tiny", 1, 1, 0, False, overrides={"train": {"no_such_key": 1}})
