"""Range checks of every numeric config key (and the values of a few string keys), run by main.py
before any work or any file.

    check_config(config)        # ConfigError naming the first bad key, e.g.
                                # "config.train.log_every = 0: must be an int >= 1"
    check_workdir(path)         # ConfigError when --workdir cannot be a run directory

Every float anywhere in the config (nested phases and model-kind sections included) must be
finite: nothing in this codebase means "infinity" by inf or "unset" by NaN (0 means "off" or
"default", as config_base.py documents). On top of that, the keys of config_base.py (and the
bi-encoder's) have ranges, `RULES` below: an int where a count is meant, a probability in [0, 1],
a positive rate. Keys a config does not have are skipped, so one table serves every experiment.
Phase-level semantics (names, alignments, groups, weight schedules) stay in
`trainer.validate_phases`, which main.py also runs up front.
"""

from __future__ import annotations

import fnmatch
import math
import pathlib
import tempfile
from typing import Any, Callable

import ml_collections

from crossrec_jax import config_base

__all__ = ["ConfigError", "RULES", "check_config", "check_workdir", "flatten", "rule_for"]


class ConfigError(ValueError):
  """A config value out of its range; the message names the key (one line)."""


def _int(lo: int | None = None, *, or_minus_one: bool = False) -> tuple[str, Callable]:
  text = f"an int >= {lo}" if lo is not None else "an int"
  if or_minus_one:
    text += " or -1 (the remaining devices)"

  def ok(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, int):
      return False
    return (or_minus_one and v == -1) or lo is None or v >= lo
  return text, ok


def _one_of(*choices: str) -> tuple[str, Callable]:
  """A string key with a closed set of values (e.g. model.hybrid.neighbour_prior)."""
  return "one of " + ", ".join(repr(c) for c in choices), lambda v: v in choices


def _num(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
         hi_open: bool = False) -> tuple[str, Callable]:
  parts = []
  if lo is not None:
    parts.append(f"{'>' if lo_open else '>='} {lo:g}")
  if hi is not None:
    parts.append(f"{'<' if hi_open else '<='} {hi:g}")
  text = "a finite number" + (" " + " and ".join(parts) if parts else "")

  def ok(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
      return False
    if lo is not None and (v <= lo if lo_open else v < lo):
      return False
    return hi is None or (v < hi if hi_open else v <= hi)
  return text, ok


def _ints(lo: int) -> tuple[str, Callable]:
  _, one = _int(lo)
  return f"a list of ints >= {lo}", lambda v: isinstance(v, (list, tuple)) and all(map(one, v))


_PROB = _num(0.0, 1.0)
_DROPOUT = _num(0.0, 1.0, hi_open=True)
# (flattened key pattern, (what it must be, predicate)); fnmatch patterns, first match wins.
RULES: tuple[tuple[str, tuple[str, Callable]], ...] = (
    ("seed", _int(0)),
    ("mesh.*", _int(1, or_minus_one=True)),
    ("data.label_fraction", _PROB), ("data.source_label_fraction", _PROB),
    ("data.max_len", _int(1)), ("data.history_len", _int(0)), ("data.buckets", _ints(1)),
    ("data.id_history_len", _int(0)),
    ("data.history_budget", ("'count' or 'tokens'", lambda v: v in ("count", "tokens"))),
    ("data.history_cap", _int(1)),
    ("data.batch_size", _int(1)), ("data.target_batch_size", _int(0)),
    ("data.eval_batch_size", _int(1)), ("data.users.*", _int(0)),
    ("data.max_examples.*", _int(0)), ("data.worker_count", _int(0)),
    ("data.window", _int(1)), ("data.pair_window", _int(1)),
    # 0 = off for both: every labelled row / the configured buckets.
    ("data.label_count", _int(0)), ("data.auto_buckets", _int(0)),
    ("data.bi.kcore", _int(0)), ("data.bi.batch_size", _int(1)),
    ("data.bi.num_positives", _int(1)), ("data.bi.keep", _PROB),
    ("data.bi.num_negatives", _int(0)), ("data.bi.popularity_alpha", _num(0.0)),
    ("data.bi.item_max_len", _int(1)), ("data.bi.item_batch_size", _int(1)),
    ("data.bi.eval_chunk", _int(1)), ("data.bi.ks", _ints(1)),
    ("model.encoder.num_layers", _int(0)),
    ("model.encoder.*dropout_prob", _DROPOUT),
    ("model.encoder.vocab_size", _int(1)), ("model.encoder.hidden_size", _int(1)),
    ("model.encoder.num_hidden_layers", _int(1)), ("model.encoder.num_attention_heads", _int(1)),
    ("model.encoder.intermediate_size", _int(1)),
    ("model.encoder.max_position_embeddings", _int(1)),
    ("model.encoder.lora.rank", _int(0)), ("model.encoder.lora.alpha", _num(0.0, lo_open=True)),
    ("model.rating_head.hidden", _ints(1)), ("model.rating_head.dropout", _DROPOUT),
    ("model.rating_head.id_dim", _int(0)), ("model.rating_head.id_dropout", _PROB),
    ("model.discriminator.hidden", _ints(1)), ("model.discriminator.dropout", _DROPOUT),
    ("model.bi_encoder.id_dropout", _PROB),  # 1 = always text only at train time
    ("model.bi_encoder.item_item_scale", _num(0.0, lo_open=True)),
    ("model.bi_encoder.*dropout", _DROPOUT), ("model.bi_encoder.temperature", _num(0.0, lo_open=True)),
    ("model.bi_encoder.rating_weight", _num(0.0)), ("model.bi_encoder.num_items", _int(0)),
    ("model.bi_encoder.history_len", _int(1)), ("model.bi_encoder.user_layers", _int(0)),
    ("model.bi_encoder.dim", _int(1)), ("model.bi_encoder.text_dim", _int(1)),
    ("model.bi_encoder.user_heads", _int(1)),
    ("model.bi_encoder.item_hidden", _int(0)), ("model.bi_encoder.user_hidden", _int(0)),
    ("model.hybrid.*dropout", _DROPOUT), ("model.hybrid.dim", _int(1)),
    ("model.hybrid.hidden", _int(1)), ("model.hybrid.neighbours", _int(0)),
    ("model.hybrid.text_dims", _int(0)),
    ("model.hybrid.neighbour_scale", _num(0.0)), ("model.hybrid.init_scale", _num(0.0)),
    ("model.hybrid.source_prior_shrink", _num(0.0)), ("model.hybrid.offset_shrink", _num(0.0)),
    ("model.hybrid.tower_out_scale", _num(0.0)),
    ("model.hybrid.id_domains", _one_of(*config_base.HYBRID_ID_DOMAINS)),
    ("model.hybrid.neighbour_prior", _one_of(*config_base.NEIGHBOUR_PRIORS)),
    ("model.hybrid.item_max_len", _int(1)), ("model.hybrid.item_batch_size", _int(1)),
    ("optimizer.max_grad_norm", _num(0.0)),
    ("train.grad_accum_steps", _int(1)),  # micro-batches per step (1: none)
    ("optimizer.*.lr", _num(0.0)), ("optimizer.*.warmup_steps", _int(0)),
    ("optimizer.*.decay_steps", _int(0)), ("optimizer.*.end_lr_factor", _num(0.0, 1.0)),
    ("optimizer.*.weight_decay", _num(0.0)), ("optimizer.*.b1", _num(0.0, 1.0, hi_open=True)),
    ("optimizer.*.b2", _num(0.0, 1.0, hi_open=True)), ("optimizer.*.eps", _num(0.0, lo_open=True)),
    ("train.log_every", _int(1)), ("train.eval_every", _int(0)),
    ("train.checkpoint_every", _int(0)), ("train.keep_checkpoints", _int(1)),
    ("phases[*].steps", _int(1)), ("phases[*].lr.*", _num(0.0)),
    ("phases[*].gamma", _num(0.0)), ("phases[*].lambda_max", _num(0.0)),
)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
  """{'train.log_every': 5, 'phases[0].lr.encoder': 0.0, ...}: dotted keys of every leaf."""
  if isinstance(value, (ml_collections.ConfigDict, dict)):
    out = {}
    for k, v in value.items():
      out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out
  if isinstance(value, (list, tuple)) and any(
      isinstance(v, (ml_collections.ConfigDict, dict)) for v in value):
    out = {}
    for i, v in enumerate(value):
      out.update(flatten(v, f"{prefix}[{i}]"))
    return out
  return {prefix: value}


def _floats(value: Any) -> list[float]:
  items = value if isinstance(value, (list, tuple)) else [value]
  return [v for v in items if isinstance(v, float)]


def rule_for(key: str) -> tuple[str, Callable] | None:
  """The (what it must be, predicate) of flattened `key`; None for a key without a range."""
  for pattern, rule in RULES:
    if fnmatch.fnmatchcase(key, pattern.replace("[*]", "[[]*[]]")):  # literal [ ] of phases[i]
      return rule
  return None


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises `ConfigError` naming the first key out of range (or any non-finite float)."""
  for key, value in flatten(config).items():
    if any(not math.isfinite(v) for v in _floats(value)):
      raise ConfigError(f"config.{key} = {value!r}: must be finite (NaN and inf are not values "
                        "here; 0 means off / default)")
    rule = rule_for(key)
    if rule is not None and not rule[1](value):
      raise ConfigError(f"config.{key} = {value!r}: must be {rule[0]}")
  _check_id_terms(config)


def _check_id_terms(config: ml_collections.ConfigDict) -> None:
  """The cross-encoder's rating-head ID terms: read by that architecture alone (the hybrid and
  the bi-encoder have their own ID keys), and the ridge start needs biases on a linear head."""
  model = config.get("model")
  head = model.get("rating_head") if model is not None else None
  if head is None:
    return
  biases, dim = bool(head.get("id_biases", False)), int(head.get("id_dim", 0))
  kind = model.get("kind", "cross_encoder")
  if (biases or dim > 0) and kind != "cross_encoder":
    own = {"hybrid": "model.hybrid.id_*", "bi_encoder": "model.bi_encoder.*_id_embedding"}
    raise ConfigError(f"config.model.rating_head.id_biases / id_dim: the cross-encoder's ID "
                      f"terms; model.kind={kind!r} does not read them"
                      + (f" (it has {own[kind]})" if kind in own else ""))
  if bool(head.get("init_id_biases", False)):
    if not biases:
      raise ConfigError("config.model.rating_head.init_id_biases = True: needs "
                        "model.rating_head.id_biases = True (it starts those biases)")
    if head.get("output") != "regression":
      raise ConfigError("config.model.rating_head.init_id_biases = True: needs "
                        "model.rating_head.output = 'regression' (the ridge fit is of ratings)")


def check_workdir(workdir: str) -> None:
  """Raises `ConfigError` unless `workdir` is (or can be made) a writable directory.

  Leaves nothing behind: a temporary file in the nearest existing ancestor proves it writable.
  """
  path = pathlib.Path(workdir).absolute()
  if path.exists() and not path.is_dir():
    raise ConfigError(f"--workdir={workdir}: is a file, not a directory")
  probe = path
  while not probe.exists():
    probe = probe.parent
  if not probe.is_dir():
    raise ConfigError(f"--workdir={workdir}: {probe} is a file, not a directory")
  try:  # os.access trusts mode bits (and says yes to root): try a real file instead
    with tempfile.TemporaryFile(dir=probe):
      pass
  except OSError as e:
    what = "is" if probe == path else f"would be made in {probe}, which is"
    raise ConfigError(f"--workdir={workdir}: {what} not writable ({e.strerror})") from None
