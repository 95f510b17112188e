"""Glue from a config to batches: source pair -> (subsample) -> splits -> example sets -> pipelines.

    data = prepare_data(config)             # config.data + config.seed (see config_base.py)
    it = data.train_batches(use_source=True, use_target=True, seed=..., num_steps=...)
    for src, tgt in it: ...                 # checkpointable: it.get_state() / it.set_state()
    for batch in data.eval_batches('target_valid'): ...

Subsampling (tiny / cpu presets) happens here, deterministically from `config.seed`, and is
reported in `data.report`: first `data.users.<domain>` users per domain (all their rows, so their
histories are complete), then at most `data.max_examples.<set>` examples per example set, drawn
after the examples are built (so a kept example's history is the one of the full user).

Example sets: 'source_train', 'target_train' (rows whose rating is hidden by the label fraction
keep label_mask 0: they feed only the domain loss), 'target_valid', 'target_test'.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Iterator, Mapping

import numpy as np

from crossrec_jax.data import examples as examples_lib
from crossrec_jax.data import pipeline
from crossrec_jax.data import schema
from crossrec_jax.data import sources
from crossrec_jax.data import splits as splits_lib

__all__ = ["PreparedData", "SamePair", "prepare_data", "subsample_users", "subsample_examples"]

_log = logging.getLogger(__name__)
EXAMPLE_SETS = {  # name -> (domain id, split part)
    "source_train": (0, "train"), "target_train": (1, "train"),
    "target_valid": (1, "valid"), "target_test": (1, "test"),
}


def _load_source(name: str, data_dir: str | None, cache_dir: str) -> schema.CrossDomainData:
  # Memoised per process by `sources.load_cached` (re-registering a source forgets it).
  return sources.load_cached(name, data_dir, cache_dir)


@functools.lru_cache(maxsize=2)
def _default_tokenizer() -> Any:
  from crossrec_jax.data import tokenize as tokenize_lib  # pylint: disable=g-import-not-at-top
  return tokenize_lib.load_tokenizer()


def subsample_users(domain: schema.Domain, num_users: int, seed: int) -> schema.Domain:
  """The domain restricted to `num_users` users drawn with default_rng(seed) (0 = all)."""
  inter = domain.interactions
  present = np.unique(inter.user)
  if num_users <= 0 or num_users >= len(present):
    return domain
  keep_users = np.random.default_rng(seed).choice(present, num_users, replace=False)
  return dataclasses.replace(domain, interactions=inter.take(np.isin(inter.user, keep_users)))


def subsample_examples(examples: examples_lib.ExampleSet, max_examples: int,
                       seed: int) -> examples_lib.ExampleSet:
  """At most `max_examples` examples drawn with default_rng(seed), in their original order."""
  n = len(examples)
  if max_examples <= 0 or max_examples >= n:
    return examples
  keep = np.sort(np.random.default_rng(seed).choice(n, max_examples, replace=False))
  columns = {k: v[keep] for k, v in examples.columns.items()}
  return examples_lib.ExampleSet(columns, dict(examples.info, subsampled_from=n))


class SamePair:
  """Wraps a single-domain batch iterator to yield (batch, batch): the step's signature is fixed,
  and a phase that does not use one side never encodes it (step.py)."""

  def __init__(self, iterator: pipeline.BatchIterator):
    self._it = iterator

  def __iter__(self) -> "SamePair":
    return self

  def __next__(self) -> tuple[pipeline.Batch, pipeline.Batch]:
    batch = next(self._it)
    return batch, batch

  def __len__(self) -> int:
    return len(self._it)

  def get_state(self) -> dict[str, int]:
    return self._it.get_state()

  def set_state(self, state: Mapping[str, int]) -> None:
    self._it.set_state(state)

  def close(self) -> None:
    self._it.close()


@dataclasses.dataclass
class PreparedData:
  """Example sets (or prepared TFDS sources) of a run, with their batching settings.

  sources: set name -> random-access record source (ExampleSet or TFDS PreparedSplit).
  scales: 'source' / 'target' -> RatingScale (predictions in [0, 1] map back with `denormalise`).
  report: what was loaded and subsampled (JSON-serialisable).
  """
  sources: dict[str, Any]
  scales: dict[str, schema.RatingScale]
  report: dict[str, Any]
  batch_size: int
  target_batch_size: int
  eval_batch_size: int
  buckets: tuple[int, ...]
  window: int = 32
  pair_window: int = 128
  worker_count: int = 0
  pair: schema.CrossDomainData | None = None  # the subsampled domains (catalogues, ID ranges)

  def _cfg(self, batch_size: int, seed: int) -> pipeline.BatchConfig:
    return pipeline.BatchConfig(batch_size=batch_size, buckets=self.buckets, window=self.window,
                                pair_window=self.pair_window, seed=seed,
                                worker_count=self.worker_count)

  def train_batches(self, *, use_source: bool, use_target: bool, seed: int,
                    num_steps: int | None = None) -> Any:
    """(source batch, target batch) per step; checkpointable (get_state / set_state).

    When a phase uses one domain only, that domain's batches are yielded as both halves.
    """
    if use_source and use_target:
      return pipeline.paired_batches(
          self.sources["source_train"], self.sources["target_train"],
          self._cfg(self.batch_size, seed), self._cfg(self.target_batch_size, seed),
          num_steps=num_steps)
    if not (use_source or use_target):
      raise ValueError("a phase must use the source or the target training set")
    name, batch_size, stream = (("source_train", self.batch_size, pipeline.SOURCE_STREAM)
                                if use_source else
                                ("target_train", self.target_batch_size, pipeline.TARGET_STREAM))
    it = pipeline.train_batches(self.sources[name], self._cfg(batch_size, seed), stream=stream)
    return SamePair(it)

  def eval_batches(self, name: str) -> Iterator[pipeline.Batch]:
    """One pass over an example set, every example once ('valid' marks padding rows)."""
    if name not in self.sources:
      raise KeyError(f"no example set {name!r}; have {sorted(self.sources)}")
    return pipeline.eval_batches(self.sources[name], self._cfg(self.eval_batch_size, 0))

  def scale_of(self, name: str) -> schema.RatingScale:
    return self.scales["source" if name.startswith("source") else "target"]


def _preparation(cfg: Any, seed: int, tokenizer_id: str) -> dict[str, Any]:
  """Everything that changes the records (names the TFDS dataset)."""
  return dict(dataset=cfg.source, split=cfg.split, label_fraction=float(cfg.label_fraction),
              source_label_fraction=float(cfg.source_label_fraction), template=cfg.template,
              max_len=int(cfg.max_len), history_k=int(cfg.history_len), seed=int(seed),
              users=cfg.users.to_dict(), max_examples=cfg.max_examples.to_dict(),
              tokenizer=tokenizer_id,
              # only when set, so that existing TFDS dataset names stay what they were
              **({"label_count": int(cfg.label_count)} if cfg.get("label_count", 0) else {}),
              **({"id_history_len": int(cfg.id_history_len)}
                 if cfg.get("id_history_len", 0) else {}),
              **({"history_budget": "tokens", "history_cap": int(cfg.history_cap)}
                 if cfg.get("history_budget", "count") == "tokens" else {}),
              **({"profile": cfg.profile} if cfg.get("profile", "") else {}))


def prepare_data(config: Any, *, tokenizer: Any = None) -> PreparedData:
  """Builds (or loads from the TFDS cache) the example sets of `config.data` and their batching.

  Args:
    config: the run config (uses `config.data` and `config.seed`).
    tokenizer: a fast tokenizer; default: the packaged MiniLM tokenizer (`tokenize.py`).
  """
  from crossrec_jax.data import tokenize as tokenize_lib  # pylint: disable=g-import-not-at-top

  cfg, seed = config.data, int(config.seed)
  cache_dir = sources.default_cache_dir(cfg.cache_dir or None)
  tokenizer = _default_tokenizer() if tokenizer is None else tokenizer
  tokenizer_id = tokenize_lib.tokenizer_identity(tokenizer)
  preparation = _preparation(cfg, seed, tokenizer_id)
  report: dict[str, Any] = {"source": cfg.source, "seed": seed}

  tfds_name = tfds_dir = None
  if cfg.use_tfds and int(cfg.get("id_history_len", 0)):
    raise ValueError("data.use_tfds=True cannot store the ID history yet (data.id_history_len="
                     f"{int(cfg.id_history_len)}): set data.use_tfds=False")
  if cfg.use_tfds:
    from crossrec_jax.data import tfds_builder  # pylint: disable=g-import-not-at-top
    tfds_dir = cfg.tfds_dir or str(cache_dir / "tfds")
    tfds_name = tfds_builder.config_name(preparation)

  data = _load_source(cfg.source, cfg.data_dir or None, str(cache_dir))
  domains, splits = {}, {}
  for domain_id, side in enumerate(("source", "target")):
    domain = data.domains()[domain_id]
    before = domain.interactions.num_users
    domain = subsample_users(domain, int(cfg.users[side]), seed=seed + domain_id)
    fraction = cfg.source_label_fraction if side == "source" else cfg.label_fraction
    count = int(cfg.get("label_count", 0)) if side == "target" else 0  # K-shot target labels
    split = splits_lib.make_split(domain, cfg.split, seed=seed, label_fraction=float(fraction),
                                  label_count=count)
    domains[side], splits[side] = domain, split
    report[side] = dict(domain=domain.name, users=int(len(np.unique(domain.interactions.user))),
                        users_before=int(before), interactions=len(domain.interactions),
                        scale=[domain.scale.low, domain.scale.high],
                        implicit=bool(domain.scale.implicit), split=split.summary())
  pair = schema.CrossDomainData(domains["source"], domains["target"], name=data.name)
  scales = {"source": pair.source.scale, "target": pair.target.scale}

  if tfds_name is not None:
    from crossrec_jax.data import tfds_builder  # pylint: disable=g-import-not-at-top
    path = tfds_builder.dataset_dir(tfds_dir, tfds_name)
    if not (path / "dataset_info.json").exists():
      built = _build_sets(pair, splits, cfg, tokenizer, cache_dir, seed, report)
      tfds_builder.build_prepared_dataset(tfds_dir, tfds_name, built, preparation)
    loaded = tfds_builder.load_prepared(tfds_dir, tfds_name, list(EXAMPLE_SETS))
    report["tfds"] = str(path)
    report["examples"] = {k: len(v) for k, v in loaded.items()}
    sets: dict[str, Any] = dict(loaded)
  else:
    sets = _build_sets(pair, splits, cfg, tokenizer, cache_dir, seed, report)
  buckets = tuple(int(b) for b in cfg.buckets)
  if int(cfg.get("auto_buckets", 0)):  # opt-in: bucket lengths fitted to these examples
    from crossrec_jax.data import buckets as buckets_lib  # pylint: disable=g-import-not-at-top
    buckets = buckets_lib.fit_buckets(sets, int(cfg.auto_buckets))
    report["buckets"] = list(buckets)
  _log.info("prepared data: %s", report)
  return PreparedData(
      sources=sets, scales=scales, report=report, batch_size=int(cfg.batch_size),
      target_batch_size=int(cfg.target_batch_size or cfg.batch_size),
      eval_batch_size=int(cfg.eval_batch_size), buckets=buckets,
      window=int(cfg.window), pair_window=int(cfg.pair_window),
      worker_count=int(cfg.worker_count), pair=pair)


def _build_sets(pair: schema.CrossDomainData, splits: dict[str, splits_lib.Split], cfg: Any,
                tokenizer: Any, cache_dir: Any, seed: int,
                report: dict[str, Any]) -> dict[str, examples_lib.ExampleSet]:
  from crossrec_jax.data import tokenize as tokenize_lib  # pylint: disable=g-import-not-at-top

  cache = tokenize_lib.TokenCache(tokenizer, cache_dir / "tokens")
  sets, counts = {}, {}
  for i, (name, (domain_id, which)) in enumerate(EXAMPLE_SETS.items()):
    side = "source" if domain_id == 0 else "target"
    built = examples_lib.build_examples(
        pair, splits[side], domain_id=domain_id, tokenizer=tokenizer, which=which, cache=cache,
        **examples_lib.config_kw(cfg))
    sets[name] = subsample_examples(built, int(cfg.max_examples[name]), seed=seed * 100 + i)
    counts[name] = dict(examples=len(sets[name]), built=len(built),
                        labelled=int(np.sum(sets[name]["label_mask"])),
                        candidates_truncated=built.info["candidates_truncated"],
                        examples_with_history_dropped=built.info["examples_with_history_dropped"],
                        history_shown=built.info["history_shown"])
  report["examples"] = counts
  return sets
