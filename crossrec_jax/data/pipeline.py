"""Batches for the compiled steps: length buckets, paired source/target, resumable, on the mesh.

Input: any random-access source of prepared records ('input_ids' int32 [L], [CLS]...[SEP], no
padding; 'label', 'label_mask', 'rating', 'domain', 'user', 'item'): a TFDS data source
(`tfds_builder.load_prepared`), an `ExampleSet`, or in-memory columns via `RecordSource`.

Batches (numpy dicts, then `shard_batch` onto a mesh): 'input_ids', 'attention_mask',
'token_type_ids' int32 [B, Lb] (from the records' 'segments' when they have them: 1 on the
candidate, BERT's segment B); 'label', 'label_mask', 'rating', 'valid' float32 [B]; 'domain',
'user', 'item', 'index' int32 [B] ('index' = record position in its source, -1 on padding rows).

Length bucketing. Lb is the smallest of a few fixed lengths (`buckets`) that fits the batch's
longest example, so a step compiles once per bucket, never per batch. Train plan, per epoch and
deterministic from (seed, stream, epoch): shuffle all examples; drop the last N % B of that
shuffled order (train drops the remainder, a different one each epoch); sort each window of
`window` x B examples by length and cut it into batches, so a batch holds examples of similar
length; shuffle the batch order. Eval plan: every example exactly once, sorted by length, the last
batch filled to B with padding rows (`valid` = 0, `label_mask` = 0, copies of a real row so that
nothing downstream divides by zero). Paired (source, target) batches share one length, the larger
of their buckets; to keep that cheap, the batches of each window of `pair_window` steps are paired
by length rank (see `_Pairing`). Measured: experiments/bench_pipeline.py.

Grain: one `MapDataset` element is one batch (step -> plan -> records -> padded arrays);
`ReadOptions` threads and `mp_prefetch` workers (`worker_count`) load batches ahead. Resuming: the
iterator counts consumed batches; `get_state()` is plain ints (seed, step, epoch, position, ...)
and `set_state()` restarts grain at that step (`dataset[step:]`), which works the same for any
worker count (grain's own iterator state is per worker, not plain ints).

Multi-host: each process computes the same global plan and loads only its `process_index`-th slice
of every global batch (bucket lengths come from the global batch, so all processes agree);
`shard_batch` assembles the global `jax.Array` with `make_array_from_process_local_data`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import sys
import threading
from typing import Any, Callable, Iterator, Mapping, Sequence

import grain
from absl import flags
import jax
import numpy as np

# Batch plans and device placement live in their own modules, re-exported here (public API).
from crossrec_jax.data.batch_plan import (BatchPlan, bucket_of, choose_buckets, eval_plan,  # noqa: F401
                                          train_plan)
from crossrec_jax.data.device_batches import DevicePrefetch, shard_batch  # noqa: F401

Batch = dict[str, np.ndarray]
RECORD_FIELDS = ("input_ids", "label", "label_mask", "rating", "domain", "user", "item")
_SCALARS = {"label": np.float32, "label_mask": np.float32, "rating": np.float32,
            "domain": np.int32, "user": np.int32, "item": np.int32}
# Fixed-width per-example arrays, batched when the examples carry them (`build_examples`'
# id_history_len): [B, K].
_ARRAYS = {"history_item": np.int32, "history_rating": np.float32}
SOURCE_STREAM, TARGET_STREAM = 0, 1


# ---------------------------------------------------------------------------- sources
class RecordSource:
  """Random access over in-memory columns ('input_ids': list of 1-D arrays, others 1-D arrays)."""

  def __init__(self, columns: Mapping[str, Any]):
    missing = [f for f in RECORD_FIELDS if f not in columns]
    if missing:
      raise KeyError(f"columns lack field(s) {missing}; have {sorted(columns)}")
    ragged = ("input_ids", "segments")  # per-token columns: lists of 1-D arrays
    self.columns = {k: (v if k in ragged else np.asarray(v)) for k, v in columns.items()}
    sizes = {k: len(v) for k, v in self.columns.items()}
    if len(set(sizes.values())) != 1:
      raise ValueError(f"columns differ in length: {sizes}")
    self._n = sizes["input_ids"]
    self.lengths = np.array([len(x) for x in self.columns["input_ids"]], np.int32)

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, i: int) -> dict[str, Any]:
    if not -self._n <= i < self._n:
      raise IndexError(f"record {i} out of range for {self._n} records")
    return {k: v[i] for k, v in self.columns.items()}

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    return [self[int(i)] for i in indices]


class _RecordMethodSource:
  """Adapter for objects exposing `record(i)` (ExampleSet) instead of `[i]`."""

  def __init__(self, examples: Any):
    self.examples = examples

  def __len__(self) -> int:
    return len(self.examples)

  def __getitem__(self, i: int) -> dict[str, Any]:
    return self.examples.record(int(i))


def as_source(data: Any) -> Any:
  """A random-access record source for a data source, ExampleSet, sequence or column dict."""
  if isinstance(data, Mapping):
    return RecordSource(data)
  if isinstance(getattr(data, "columns", None), Mapping):  # ExampleSet: its columns, batched reads
    return RecordSource(data.columns)
  if hasattr(data, "record"):
    return _RecordMethodSource(data)
  if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
    return data
  raise TypeError(f"{type(data).__name__} is not a record source: need __len__ and __getitem__(i), "
                  "record(i), or a dict of columns")


def source_lengths(source: Any) -> np.ndarray:
  """Token count per record: the source's `lengths` when it has them, else read every record."""
  lengths = getattr(source, "lengths", None)
  if lengths is None and hasattr(source, "examples"):
    lengths = getattr(source.examples, "lengths", None)
  if lengths is None:
    lengths = [len(source[i]["input_ids"]) for i in range(len(source))]
  lengths = np.asarray(lengths, np.int32)
  if lengths.shape != (len(source),):
    raise ValueError(f"lengths shape {lengths.shape} != ({len(source)},)")
  return lengths


def _read(source: Any, indices: np.ndarray) -> list[Mapping[str, Any]]:
  if hasattr(source, "__getitems__"):
    return list(source.__getitems__([int(i) for i in indices]))
  return [source[int(i)] for i in indices]


def token_types(segments: np.ndarray) -> np.ndarray:
  """BERT token types of one example from its `segments` (examples.py): 1 on segment B, the
  candidate (segment 2) and the [SEP] closing it, 0 elsewhere, as a tokenizer encodes a pair."""
  segments = np.asarray(segments)
  cand = np.flatnonzero(segments == 2)
  types = np.zeros(len(segments), np.int32)
  if cand.size:
    types[cand[0]:cand[-1] + 2] = 1  # +2: through the [SEP] after the candidate
  return types


def collate(rows: Sequence[Mapping[str, Any]], indices: np.ndarray, seq_len: int) -> Batch:
  """One record per row of `indices` (rows at -1 are padding: copies of a real record) -> batch."""
  b = len(indices)
  if len(rows) != b:
    raise ValueError(f"{len(rows)} records for {b} batch rows")
  out = {"input_ids": np.zeros((b, seq_len), np.int32)}
  mask = np.zeros((b, seq_len), np.int32)
  for k, r in enumerate(rows):
    ids = np.asarray(r["input_ids"])
    if len(ids) > seq_len:
      raise ValueError(f"record {int(indices[k])} has {len(ids)} tokens > bucket {seq_len}")
    out["input_ids"][k, :len(ids)] = ids
    mask[k, :len(ids)] = 1
  out["attention_mask"] = mask
  types = np.zeros((b, seq_len), np.int32)
  if "segments" in rows[0]:  # records prepared before segments existed keep all-zero types
    for k, r in enumerate(rows):
      t = token_types(r["segments"])
      types[k, :len(t)] = t
  out["token_type_ids"] = types
  for name, dt in _SCALARS.items():
    out[name] = np.array([r[name] for r in rows], dt)
  for name, dt in _ARRAYS.items():
    if name in rows[0]:
      out[name] = np.stack([np.asarray(r[name]) for r in rows]).astype(dt)
  valid = (np.asarray(indices) >= 0).astype(np.float32)
  out["label_mask"] *= valid  # padding rows never count in a loss or metric
  out["valid"] = valid
  out["index"] = np.asarray(indices, np.int32)
  return out


# ---------------------------------------------------------------------------- batch sources
@dataclasses.dataclass(frozen=True)
class BatchConfig:
  """How batches are cut. `batch_size` is global (all processes); ml_collections can splat it."""

  batch_size: int
  # One compiled step shape per bucket. A 16-token grid keeps padding under ~15% for any length
  # distribution; `choose_buckets(train_lengths, n)` fits fewer buckets to the data.
  buckets: tuple[int, ...] = (16, 32, 48, 64, 80, 96, 112, 128)
  window: int = 32           # train: batches per length-sorted window (bigger = less padding)
  pair_window: int = 128     # paired: steps whose source/target batches are paired by length
  seed: int = 0
  worker_count: int = 0      # grain mp_prefetch processes (0 in tests)
  num_threads: int = 2       # grain threads loading batches ahead
  prefetch_batches: int = 4  # grain prefetch buffer, in batches


class _Stream:
  """Global batch index -> this process's rows of that batch. Picklable (grain workers)."""

  def __init__(self, source: Any, cfg: BatchConfig, *, train: bool, stream: int,
               process_index: int, process_count: int, lengths: np.ndarray | None = None):
    if cfg.batch_size % process_count:
      raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {process_count} processes")
    self.source, self.cfg, self.train, self.stream = source, cfg, train, stream
    self.lengths = source_lengths(source) if lengths is None else lengths
    bucket_of(self.lengths, cfg.buckets)  # fail early, naming the too-long example
    local = cfg.batch_size // process_count
    self.rows = slice(process_index * local, (process_index + 1) * local)
    self.per_epoch = (len(self.lengths) // cfg.batch_size if train
                      else -(-len(self.lengths) // cfg.batch_size))
    if self.per_epoch == 0:
      raise ValueError(f"{len(self.lengths)} examples give no batch of batch_size {cfg.batch_size}")
    self._plans: collections.OrderedDict[int, BatchPlan] = collections.OrderedDict()
    self._lock = threading.Lock()

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_plans"], state["_lock"] = collections.OrderedDict(), None
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def plan(self, epoch: int) -> BatchPlan:
    with self._lock:
      if epoch not in self._plans:
        if self.train:
          self._plans[epoch] = train_plan(self.lengths, self.cfg.batch_size, self.cfg.buckets,
                                          seed=self.cfg.seed, epoch=epoch, window=self.cfg.window,
                                          stream=self.stream)
        else:
          self._plans[epoch] = eval_plan(self.lengths, self.cfg.batch_size, self.cfg.buckets)
        while len(self._plans) > 3:  # loader threads and pair windows straddle epoch boundaries
          self._plans.popitem(last=False)
      return self._plans[epoch]

  def seq_len(self, step: int) -> int:
    epoch, pos = divmod(step, self.per_epoch)
    return int(self.plan(epoch).seq_len[pos])

  def load(self, step: int, seq_len: int | None = None) -> Batch:
    epoch, pos = divmod(step, self.per_epoch)
    plan = self.plan(epoch)
    idx = plan.indices[pos, self.rows]
    real = _read(self.source, idx[idx >= 0])
    # Padding rows (eval's last batch) copy a real record; row 0 of a global batch is always real,
    # even when this process's whole slice is padding.
    filler = real[0] if real else _read(self.source, plan.indices[pos, :1])[0]
    records = iter(real)
    rows = [next(records) if i >= 0 else filler for i in idx]
    return collate(rows, idx, int(plan.seq_len[pos]) if seq_len is None else seq_len)

  def position(self, step: int) -> tuple[int, int]:
    return divmod(step, self.per_epoch)


class _Steps:
  """Sequence view (len + getitem) of a function of the step, for `grain.MapDataset.source`."""

  def __init__(self, fn: Callable[[int], Any], length: int):
    self.fn, self.length = fn, length

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, step: int) -> Any:
    return self.fn(step)


def _single(stream: _Stream, step: int) -> Batch:
  return stream.load(step)


class _Pairing:
  """Step -> (source batch, target batch), lengths matched within windows of `window` steps.

  Independent shuffles would pair a short batch with a long one and pad both to the longer bucket.
  Instead, within each window of steps, the window's source batches and target batches are each
  ranked by bucket, paired rank by rank, and the pairs shuffled (seeded by the window). Each domain
  still consumes its own batch sequence exactly once per window, so its epochs are unchanged.
  """

  def __init__(self, src: _Stream, tgt: _Stream, window: int, seed: int):
    self.src, self.tgt, self.window, self.seed = src, tgt, max(1, window), seed
    self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
    self._lock = threading.Lock()

  __getstate__ = _Stream.__getstate__

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._cache, self._lock = collections.OrderedDict(), threading.Lock()

  def _pairs(self, w: int) -> np.ndarray:
    with self._lock:
      if w not in self._cache:
        steps = np.arange(w * self.window, (w + 1) * self.window)
        by_len = [steps[np.argsort([s.seq_len(int(g)) for g in steps], kind="stable")]
                  for s in (self.src, self.tgt)]
        order = np.random.default_rng([self.seed, 2, w]).permutation(self.window)
        self._cache[w] = np.stack(by_len, axis=1)[order]
        while len(self._cache) > 2:
          self._cache.popitem(last=False)
      return self._cache[w]

  def __call__(self, step: int) -> tuple[Batch, Batch]:
    w, offset = divmod(step, self.window)
    src_step, tgt_step = (int(g) for g in self._pairs(w)[offset])
    # One length for both halves (the larger bucket): one compiled joint step per bucket.
    seq_len = max(self.src.seq_len(src_step), self.tgt.seq_len(tgt_step))
    return self.src.load(src_step, seq_len), self.tgt.load(tgt_step, seq_len)


# ---------------------------------------------------------------------------- iterators
class BatchIterator:
  """Checkpointable iterator over batches; `get_state()`/`set_state()` take plain-int dicts."""

  def __init__(self, streams: dict[str, _Stream], fn: Callable[[int], Any], length: int,
               cfg: BatchConfig):
    self._streams, self._cfg, self._length = streams, cfg, length
    self._steps = _Steps(fn, length)
    self._step, self._it = 0, None

  def _dataset(self) -> grain.IterDataset:
    ds = grain.MapDataset.source(self._steps)[self._step:]
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=self._cfg.num_threads,
                                              prefetch_buffer_size=self._cfg.prefetch_batches))
    if self._cfg.worker_count > 0:
      if not flags.FLAGS.is_parsed():
        # grain 0.2.x reads an absl flag in mp_prefetch and raises UnparsedFlagAccessError outside
        # absl.app (scripts, Colab): google/grain#1355. Their workaround: use the flag defaults.
        flags.FLAGS.mark_as_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self._cfg.worker_count))
    return ds

  def __iter__(self) -> "BatchIterator":
    return self

  def __next__(self) -> Any:
    if self._step >= self._length:
      raise StopIteration
    if self._it is None:
      self._it = iter(self._dataset())
    batch = next(self._it)
    self._step += 1
    return batch

  def __len__(self) -> int:
    return self._length

  def _prefix(self, name: str) -> str:
    return "" if len(self._streams) == 1 else f"{name}_"

  def get_state(self) -> dict[str, int]:
    state = {"seed": self._cfg.seed, "step": self._step}
    for name, s in self._streams.items():
      epoch, pos = s.position(self._step)
      p = self._prefix(name)
      state.update({f"{p}epoch": epoch, f"{p}position": pos, f"{p}batch_size": s.cfg.batch_size,
                    f"{p}num_examples": len(s.lengths)})
    return state

  def set_state(self, state: Mapping[str, int]) -> None:
    """Resume at `state` (from `get_state`); a changed seed, batch size or dataset is an error."""
    mine = self.get_state()
    missing = [k for k in mine if k not in state]
    if missing:
      raise KeyError(f"iterator state lacks {missing}: {dict(state)}")
    for key in mine:
      if key == "seed" or key.endswith(("batch_size", "num_examples")):
        if int(state[key]) != mine[key]:
          raise ValueError(f"iterator state {key}={state[key]} but this pipeline has {mine[key]}")
    step = int(state["step"])
    for name, s in self._streams.items():
      p = self._prefix(name)
      if s.position(step) != (int(state[f"{p}epoch"]), int(state[f"{p}position"])):
        raise ValueError(f"iterator state {dict(state)} is inconsistent at step {step}")
    self.close()
    self._step = step

  def close(self) -> None:
    if self._it is not None and hasattr(self._it, "close"):
      self._it.close()
    self._it = None


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  return (jax.process_index() if process_index is None else process_index,
          jax.process_count() if process_count is None else process_count)


def train_batches(source: Any, cfg: BatchConfig, *, num_epochs: int | None = None,
                  stream: int = SOURCE_STREAM, process_index: int | None = None,
                  process_count: int | None = None) -> BatchIterator:
  """Shuffled, length-bucketed training batches (drop remainder); endless when num_epochs=None."""
  s = _Stream(as_source(source), cfg, train=True, stream=stream,
              process_index=_process(process_index, process_count)[0],
              process_count=_process(process_index, process_count)[1])
  length = sys.maxsize if num_epochs is None else num_epochs * s.per_epoch
  return BatchIterator({"train": s}, functools.partial(_single, s), length, cfg)


def eval_batches(source: Any, cfg: BatchConfig, *, process_index: int | None = None,
                 process_count: int | None = None) -> BatchIterator:
  """One pass, every example exactly once (sorted by length), fixed B with `valid` padding rows."""
  s = _Stream(as_source(source), cfg, train=False, stream=0,
              process_index=_process(process_index, process_count)[0],
              process_count=_process(process_index, process_count)[1])
  return BatchIterator({"eval": s}, functools.partial(_single, s), s.per_epoch, cfg)


def paired_batches(source: Any, target: Any, cfg: BatchConfig,
                   target_cfg: BatchConfig | None = None, *, num_steps: int | None = None,
                   process_index: int | None = None,
                   process_count: int | None = None) -> BatchIterator:
  """(source_batch, target_batch) pairs for joint steps; each domain cycles its own epochs.

  `target_cfg` may set another batch size for the target half; its buckets must equal `cfg`'s.
  Both halves of a pair are padded to the larger of their two buckets.
  """
  target_cfg = cfg if target_cfg is None else target_cfg
  if tuple(target_cfg.buckets) != tuple(cfg.buckets) or target_cfg.seed != cfg.seed:
    raise ValueError("target_cfg must share cfg's buckets and seed (one shape set, one state)")
  pi, pc = _process(process_index, process_count)
  src = _Stream(as_source(source), cfg, train=True, stream=SOURCE_STREAM, process_index=pi,
                process_count=pc)
  tgt = _Stream(as_source(target), target_cfg, train=True, stream=TARGET_STREAM, process_index=pi,
                process_count=pc)
  length = sys.maxsize if num_steps is None else num_steps
  return BatchIterator({"source": src, "target": tgt},
                       _Pairing(src, tgt, cfg.pair_window, cfg.seed), length, cfg)


def padding_efficiency(batches: Iterator[Batch]) -> tuple[float, int]:
  """(real tokens / total tokens incl. padding rows, examples seen) over batches (or pairs)."""
  real = total = n = 0
  for batch in batches:
    for b in batch if isinstance(batch, tuple) else (batch,):
      mask = np.asarray(b["attention_mask"]) * np.asarray(b["valid"])[:, None]
      real += int(mask.sum())
      total += mask.size
      n += int(np.asarray(b["valid"]).sum())
  return real / max(total, 1), n
