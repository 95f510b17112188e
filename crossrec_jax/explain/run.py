"""A finished rating run (cross-encoder or hybrid), restored for explanation, with its examples.

    run = ExplainedRun.load('runs/target_only_cpu')       # model: the run's selected parameters
    rows = run.find('196', '242')                        # (raw user id, raw item id) -> indices
    records = run.explain(rows, method='ig', steps=32)   # one dict per example (render.py)

The two rating kinds read a user's history differently, and each is explained over what it reads:
  * `cross_encoder`: the example text; a history entry is the tokens of its segment (IG or LOO).
  * `hybrid` (`models/hybrid.py`): the ID history ('history_item' / 'history_rating', up to
    `data.id_history_len` entries, not cut by the token budget); a history entry is one item of
    it, named by its title, and removed by emptying its column (LOO only: the model reads frozen
    item-text vectors, not word embeddings, so integrated gradients over tokens do not apply).
    Its model is built by its task over the run's prepared data (`data/prepare.py`, as the run
    did), so loading a hybrid run prepares that data first.

The examples are rebuilt exactly as `data/prepare.py` builds the run's target sets (same users
subsampled with seed + 1, same split, `examples.config_kw` keywords and tokenizer), before the
per-set example cap, so any test rating of the run's users can be explained; their 'segments'
column marks the units (history entries, profile facts, candidate).
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import ml_collections
import numpy as np

__all__ = ["ExplainedRun", "load_config", "readable"]

WHICH = ("test", "valid")  # where a (user, item) pair is looked for, in this order
BASELINES = ("pad", "mask")  # integrated gradients' baseline token
KINDS = ("cross_encoder", "hybrid")  # the model kinds this explains (the bi-encoder: bi_encoder.py)
ID_KEYS = ("domain", "user", "item", "history_item", "history_rating")  # what a hybrid reads


def load_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
  """The run's config.json as a ConfigDict (phases as ConfigDicts)."""
  path = workdir / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"--workdir={workdir}: not a trainer run directory (no config.json)")
  config = ml_collections.ConfigDict(json.loads(path.read_text()))
  config.phases = [ml_collections.ConfigDict(p) for p in config.phases]  # JSON gave dicts
  return config


def readable(text: str) -> str:
  """WordPiece decoding spaces punctuation out ('heat ( 1995 ) ; genres : x'): put it back."""
  text = re.sub(r"\s+([)\];:,.!?])", r"\1", text)
  text = re.sub(r"(\w) ([-'/]) (\w)", r"\1\2\3", text)  # "sci - fi", "children ' s"
  return re.sub(r"([(\[])\s+", r"\1", text).strip()


class ExplainedRun:
  """A restored model, its explainer, and the target examples of its run."""

  def __init__(self, config: ml_collections.ConfigDict, model: Any, *, steps: int = 32,
               chunk: int = 16, baseline: str = "pad"):
    from crossrec_jax.data import examples as examples_lib  # pylint: disable=g-import-not-at-top
    from crossrec_jax.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
    from crossrec_jax.data import sources  # pylint: disable=g-import-not-at-top
    from crossrec_jax.data import splits as splits_lib  # pylint: disable=g-import-not-at-top
    from crossrec_jax.data import text as text_lib  # pylint: disable=g-import-not-at-top
    from crossrec_jax.data import tokenize as tokenize_lib  # pylint: disable=g-import-not-at-top
    from crossrec_jax.explain import cross_encoder  # pylint: disable=g-import-not-at-top
    from crossrec_jax.explain import segments  # pylint: disable=g-import-not-at-top

    self.config, self.model = config, model
    self.kind = str(config.model.kind)
    cfg, seed = config.data, int(config.seed)
    cache_dir = sources.default_cache_dir(cfg.cache_dir or None)
    pair = sources.load_cached(cfg.source, cfg.data_dir or None, str(cache_dir))
    # As prepare_data: target users drawn with seed + 1, then the split with the seed.
    self.domain = prepare_lib.subsample_users(pair.target, int(cfg.users.target), seed=seed + 1)
    self.split = splits_lib.make_split(self.domain, cfg.split, seed=seed,
                                       label_fraction=float(cfg.label_fraction),
                                       label_count=int(cfg.get("label_count", 0)))
    self.scale = self.domain.scale
    self.tokenizer = tokenize_lib.load_tokenizer()  # prepare_data's default tokenizer
    cache = tokenize_lib.TokenCache(self.tokenizer, cache_dir / "tokens")
    # The ID history's names: title and year (the id where there is no title), short to read.
    self.item_names = text_lib.item_texts(self.domain.items, (("title", "{}"), ("year", " ({})")))
    self.examples, self.segments = {}, {}
    for which in WHICH:  # the keywords prepare_data builds the run's examples with
      ex = examples_lib.build_examples(self.domain, self.split, domain_id=1,
                                       tokenizer=self.tokenizer, which=which, cache=cache,
                                       **examples_lib.config_kw(cfg))
      self.examples[which] = ex
      self.segments[which] = segments.example_segments(ex)
    cls_id, sep_id = tokenize_lib.special_ids(self.tokenizer)
    if baseline not in BASELINES:
      raise ValueError(f"--baseline={baseline}: choose one of {BASELINES}")
    base_id = (self.tokenizer.pad_token_id if baseline == "pad" else self.tokenizer.mask_token_id)
    self.buckets = tuple(int(b) for b in cfg.buckets)
    self.explainer = cross_encoder.CrossEncoderExplainer(
        model, steps=steps, baseline_id=int(base_id or 0), keep_ids=(cls_id, sep_id), chunk=chunk)

  @classmethod
  def load(cls, workdir: str | pathlib.Path, **kw: Any) -> "ExplainedRun":
    """The run in `workdir` with its selected parameters (best checkpoint, else final)."""
    from flax import nnx  # pylint: disable=g-import-not-at-top
    from crossrec_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
    from crossrec_jax.train import warm_start  # pylint: disable=g-import-not-at-top
    workdir = pathlib.Path(workdir)
    config = load_config(workdir)
    if config.model.kind not in KINDS:
      raise ValueError(f"--workdir={workdir}: model.kind={config.model.kind!r}; this command "
                       f"explains {' and '.join(KINDS)} runs (a bi-encoder: "
                       "crossrec_jax.explain.bi_encoder.BiEncoderExplainer)")
    from crossrec_jax.study import finished  # pylint: disable=g-import-not-at-top
    model = finished.build_model(config)  # the hybrid: through its task, its data prepared again
    graphdef, params, rng_state, rest = state_lib.split_model(model)
    params, rest = warm_start.restore_params(workdir, params, rest)
    return cls(config, nnx.merge(graphdef, params, rng_state, rest), **kw)

  # -------------------------------------------------------------------------- lookup

  def find(self, user: str, item: str) -> tuple[str, int]:
    """(split part, example index) of the raw ids' target rating; ValueError naming the flag."""
    inter, items = self.domain.interactions, self.domain.items
    users = {u: i for i, u in enumerate(inter.user_ids.tolist())}
    if str(user) not in users:
      raise ValueError(f"--user={user}: no such user in the target domain {self.domain.name!r}")
    u = users[str(user)]
    if not np.any(inter.user == u):
      raise ValueError(f"--user={user}: not one of the run's {len(np.unique(inter.user))} target "
                       f"users (data.users.target subsamples them)")
    index = items.index()
    if str(item) not in index:
      raise ValueError(f"--item={item}: no such item in the target domain {self.domain.name!r}")
    for which in WHICH:
      ex = self.examples[which]
      hit = np.flatnonzero((ex["user"] == u) & (ex["item"] == index[str(item)]))
      if len(hit):
        return which, int(hit[0])
    held = sorted({str(items.ids[i]) for w in WHICH
                   for i in self.examples[w]["item"][self.examples[w]["user"] == u]})
    raise ValueError(f"--item={item}: user {user} has no held-out (test or valid) rating of it; "
                     f"their held-out items: {held[:10]}")

  def first(self, n: int, which: str = "test") -> list[tuple[str, int]]:
    """The first `n` examples of `which` that show a history the model reads (example order)."""
    if self.kind == "hybrid":
      with_history = np.flatnonzero(np.any(self.examples[which]["history_item"] >= 0, axis=1))
    else:
      segs = self.segments[which]
      with_history = [i for i in range(len(segs)) if np.any(segs[i] >= 3)]
    return [(which, int(i)) for i in with_history[:n]]

  # -------------------------------------------------------------------------- explain

  def batch(self, picks: list[tuple[str, int]]) -> dict[str, np.ndarray]:
    """The model's inputs of `picks`: token rows (cross-encoder) or the ID columns (hybrid)."""
    from crossrec_jax.explain import units  # pylint: disable=g-import-not-at-top
    if self.kind == "hybrid":  # no tokens: LOO then edits the ID history alone
      return {name: np.stack([self.examples[w][name][i] for w, i in picks]) for name in ID_KEYS}
    ids = [self.examples[w]["input_ids"][i] for w, i in picks]
    segs = [self.segments[w][i] for w, i in picks]
    batch = units.collate_tokens(ids, segs, buckets=self.buckets)
    for name in ("history_item", "history_rating"):  # an ID history, where the data has one
      if name in self.examples[picks[0][0]].keys():
        batch[name] = np.stack([self.examples[w][name][i] for w, i in picks])
    return batch

  def explain(self, picks: list[tuple[str, int]], method: str = "ig") -> list[dict[str, Any]]:
    """One record per example: ids, prediction and truth in stars, units and tokens (render)."""
    from crossrec_jax.explain import segments  # pylint: disable=g-import-not-at-top
    if self.kind == "hybrid" and method != "loo":
      raise ValueError(f"--method={method}: a hybrid run is explained by leave-one-out "
                       "(--method=loo); integrated gradients need a model that reads tokens")
    batch = self.batch(picks)
    got = self.explainer.explain(batch, method)
    span = 1.0 if self.scale.implicit else float(self.scale.high - self.scale.low)
    inter, items = self.domain.interactions, self.domain.items
    out = []
    for b, (which, i) in enumerate(picks):
      ex = self.examples[which]
      record = {
          "user": str(inter.user_ids[ex["user"][i]]), "item": str(items.ids[ex["item"][i]]),
          "split": which, "method": method,
          "prediction": float(self.scale.denormalise(got["score"][b])),
          "truth": float(ex["rating"][i]),
          "units": "stars" if not self.scale.implicit else "probability",
      }
      if self.kind == "hybrid":
        record["candidate"] = str(self.item_names[ex["item"][i]])
        record["history"] = self._id_history(ex["history_item"][i], ex["history_rating"][i],
                                             got["history"][b] * span)
        out.append(record)
        continue
      ids, seg = ex["input_ids"][i], self.segments[which][i]
      n = segments.num_entries(seg)
      record["candidate"] = readable(self.tokenizer.decode(ids[seg == segments.CANDIDATE].tolist()))
      record["history"] = [{"k": k, "text": readable(self.tokenizer.decode(
                                ids[seg == segments.HISTORY + k].tolist())),
                            "attribution": float(got["history"][b, k]) * span} for k in range(n)]
      if method == "ig":
        tokens = self.tokenizer.convert_ids_to_tokens(ids.tolist())
        record["tokens"] = [(t, float(a) * span, int(s)) for t, a, s in
                            zip(tokens, got["tokens"][b, :len(ids)], seg)]
        record["gap"] = float(got["gap"][b]) * span
        record["complete"] = bool(got["complete"][b])
        record["baseline"] = float(self.scale.denormalise(got["baseline_score"][b]))
        record["profile"] = [
            {"text": readable(self.tokenizer.decode(ids[p].tolist())),
             "attribution": float(got["tokens"][b, p].sum()) * span}
            for p in segments.fact_spans(seg, tokens)]
        record["candidate_attribution"] = float(got["candidate"][b]) * span
        record["template_attribution"] = float(got["template"][b]) * span
      out.append(record)
    return out

  def _id_history(self, hist_item: np.ndarray, hist_rating: np.ndarray,
                  attribution: np.ndarray) -> list[dict[str, Any]]:
    """The ID history's entries, newest first (k = 0, as `edits.py` numbers them): the item's
    title with the rating the model was shown (none where the example hides it)."""
    entries = []
    for k, col in enumerate(np.flatnonzero(hist_item >= 0)[::-1]):
      text = str(self.item_names[hist_item[col]])
      if hist_rating[col] >= 0:
        text += f" (rated {self.scale.denormalise(hist_rating[col]):g})"
      entries.append({"k": k, "text": text, "attribution": float(attribution[k])})
    return entries

