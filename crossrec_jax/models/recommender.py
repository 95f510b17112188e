"""Recommenders: an encoder plus the rating head and the domain discriminator, as one NNX module.

Every recommender has the same three top-level attributes, which the optimiser groups key on
(`train.optim.label_params`): `encoder`, `rating_head`, `discriminator`, and the same call:

    out = model(batch, lam, deterministic=...)
    out['features']      [B, H] float32   the vector h the heads (and MMD / CORAL) see
    out['rating']        [B]    float32   rating in [0, 1] ('regression') or a logit ('logit')
    out['domain_logit']  [B]    float32   discriminator(GRL_lam(h)); 0 = source, 1 = target

so the objectives, the phases, checkpoints and sharding do not care which architecture sits
behind it. `model.kind` names the architecture:

  * 'cross_encoder' (`CrossEncoderRecommender`, the seed's model): one BERT pass over the text of
    (user history, candidate item); h = pooled hidden state ('cls' | 'pooler' | 'mean').
  * 'bi_encoder' (`models/bi_encoder.py`): item tower over item text, user tower over history item
    vectors, dot-product scores; the same output dict (h = the user-item interaction vector).

`build_cross_encoder(config.model, rngs=...)` builds the cross-encoder from the config (see
`config_base.py`); `tasks.make_task(config).build_model(rngs)` builds whichever `model.kind` names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from crossrec_jax.models import bert as bert_lib
from crossrec_jax.models import heads as heads_lib
from crossrec_jax.models import id_rating_head as id_head_lib
from crossrec_jax.models import lora as lora_lib

__all__ = [
    "POOLING_KINDS", "pool", "CrossEncoderRecommender", "build_encoder", "build_cross_encoder",
    "build_recommender", "predict_rating", "uses_ids",
]

POOLING_KINDS = ("cls", "pooler", "mean")


def pool(kind: str, output: bert_lib.BertOutput, attention_mask: jax.Array) -> jax.Array:
  """Pooled float32 vector [B, H] from an encoder output.

  'cls': hidden state at position 0 ([CLS]); 'pooler': BERT's tanh(dense(CLS)) (trained for
  next-sentence prediction, so often worse for transfer); 'mean': average of the hidden states
  over the real tokens (attention_mask 1), the sentence-transformers recipe of MiniLM. A row with
  no real token averages to 0 (not NaN).
  """
  if kind == "cls":
    return output.last_hidden_state[:, 0].astype(jnp.float32)
  if kind == "pooler":
    return output.pooler_output.astype(jnp.float32)
  if kind == "mean":
    h = output.last_hidden_state.astype(jnp.float32)
    w = (attention_mask > 0).astype(jnp.float32)[..., None]
    return jnp.sum(h * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)
  raise ValueError(f"model.pooling must be one of {POOLING_KINDS}, got {kind!r}")


class CrossEncoderRecommender(nnx.Module):
  """BERT over the example text -> pooled h -> rating head and (through GRL) discriminator."""

  kind = "cross_encoder"

  def __init__(self, encoder: bert_lib.BertModel, *, pooling: str = "cls",
               rating_hidden: tuple[int, ...] = (256,), rating_output: str = "regression",
               rating_dropout: float = 0.1, discriminator_hidden: tuple[int, ...] = (256,),
               discriminator_dropout: float = 0.1, reverse_gradient: bool = True,
               rating_head: nnx.Module | None = None, rngs: nnx.Rngs):
    """`rating_head`: a head to use instead of the text-only `heads.RatingHead` (the hidden,
    output and dropout arguments are then its own), e.g. `id_rating_head.IdRatingHead`."""
    if pooling not in POOLING_KINDS:
      raise ValueError(f"model.pooling must be one of {POOLING_KINDS}, got {pooling!r}")
    cfg = encoder.config
    hidden = cfg.hidden_size
    self.pooling = pooling
    self.encoder = encoder
    # Heads compute in the encoder's dtype but return float32 (heads.py), so losses stay exact.
    self.rating_head = rating_head if rating_head is not None else heads_lib.RatingHead(
        hidden, tuple(rating_hidden), output=rating_output, dropout=rating_dropout,
        dtype=cfg.dtype, rngs=rngs)
    self.discriminator = heads_lib.DomainDiscriminator(
        hidden, tuple(discriminator_hidden), dropout=discriminator_dropout,
        reverse=reverse_gradient, dtype=cfg.dtype, rngs=rngs)

  def rate(self, h: jax.Array, batch: Mapping[str, jax.Array], *, deterministic: bool = True
           ) -> jax.Array:
    """The rating head on h; a head with ID terms also reads the batch's user / item / domain."""
    if getattr(self.rating_head, "reads_ids", False):
      return self.rating_head(h, batch, deterministic=deterministic)
    return self.rating_head(h, deterministic=deterministic)

  @property
  def rating_output(self) -> str:
    return self.rating_head.output

  def encode(self, batch: Mapping[str, jax.Array], *, deterministic: bool = True) -> jax.Array:
    """The pooled feature vector h: [B, H] float32."""
    out = self.encoder(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                       deterministic=deterministic, domain=batch.get("domain"))
    return pool(self.pooling, out, batch["attention_mask"])

  def __call__(self, batch: Mapping[str, jax.Array], lam: jax.typing.ArrayLike = 0.0, *,
               deterministic: bool = True) -> dict[str, jax.Array]:
    """batch: 'input_ids', 'attention_mask' [B, L] (+ optional 'token_type_ids'; 'user', 'item',
    'domain' for a head with ID terms); lam: GRL scale."""
    h = self.encode(batch, deterministic=deterministic)
    return {
        "features": h,
        "rating": self.rate(h, batch, deterministic=deterministic),
        "domain_logit": self.discriminator(h, lam, deterministic=deterministic),
    }


def predict_rating(out: Mapping[str, jax.Array], rating_output: str) -> jax.Array:
  """The head's output mapped to [0, 1] (a probability for 'logit' heads)."""
  return jax.nn.sigmoid(out["rating"]) if rating_output == "logit" else out["rating"]


# ---------------------------------------------------------------------------- builders

_RANDOM_ENCODER_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                        "intermediate_size", "max_position_embeddings")


def _set_dropout(encoder: bert_lib.BertModel, hidden: float, attention: float) -> None:
  """Sets the dropout rates of a built BERT (and its config) in place."""
  for path, node in nnx.iter_graph(encoder):
    if isinstance(node, nnx.Dropout):
      node.rate = attention if "attention_dropout" in path else hidden
  encoder.config = dataclasses.replace(encoder.config, hidden_dropout_prob=hidden,
                                       attention_probs_dropout_prob=attention)


def build_encoder(cfg: Any, *, rngs: nnx.Rngs) -> bert_lib.BertModel:
  """The BERT encoder from `config.model.encoder`.

  init='pretrained': an HF BERT directory (`path`, '' = the packaged all-MiniLM-L6-v2), keeping
  the first `num_layers` layers (0 = all); the size fields of the config are then ignored (the
  checkpoint's config.json decides). init='random': a freshly initialised BERT with the sizes
  given in the config (use vocab_size 30522 so the real tokenizer's ids are valid). Dropout
  rates, compute dtype and remat apply to both. `lora` (rank > 0) adds LoRA adapters
  (`models/lora.py`).
  """
  from crossrec_jax.models import hf_import  # pylint: disable=g-import-not-at-top

  hidden, attention = float(cfg.hidden_dropout_prob), float(cfg.attention_probs_dropout_prob)
  if cfg.init == "pretrained":
    # Dropout is set after loading: `load_pretrained(..., hidden_dropout_prob=...)` collides
    # with the same field read from config.json in BertConfig.from_hf_dict.
    encoder = hf_import.load_pretrained(cfg.path or None, num_layers=int(cfg.num_layers) or None,
                                        dtype=cfg.dtype, remat=bool(cfg.remat), rngs=rngs)
    _set_dropout(encoder, hidden, attention)
  elif cfg.init == "random":
    sizes = {k: int(cfg[k]) for k in _RANDOM_ENCODER_KEYS}
    encoder = bert_lib.BertModel(bert_lib.BertConfig(
        **sizes, dtype=cfg.dtype, remat=bool(cfg.remat), hidden_dropout_prob=hidden,
        attention_probs_dropout_prob=attention), rngs=rngs)
  else:
    raise ValueError(f"model.encoder.init must be 'pretrained' or 'random', got {cfg.init!r}")
  lora = lora_lib.from_config(cfg.get("lora"))
  return lora_lib.apply_lora(encoder, lora, rngs=rngs) if lora else encoder


def uses_ids(cfg: Any) -> bool:
  """Whether `config.model`'s rating head has ID terms (`id_rating_head.py`): it then needs the
  domains' user and item counts to be built (`tasks/cross_encoder.py` has them)."""
  head = cfg.rating_head
  return bool(head.get("id_biases", False)) or int(head.get("id_dim", 0)) > 0


def build_cross_encoder(cfg: Any, *, rngs: nnx.Rngs,
                        num_users: tuple[int, int] | None = None,
                        num_items: tuple[int, int] | None = None) -> CrossEncoderRecommender:
  """A CrossEncoderRecommender from `config.model` (see `config_base.py`). With ID terms in the
  rating head (`uses_ids`), `num_users` / `num_items` are the (source, target) counts."""
  encoder = build_encoder(cfg.encoder, rngs=rngs)
  head = None
  if uses_ids(cfg):
    if num_users is None or num_items is None:
      raise ValueError("model.rating_head.id_biases / id_dim: the ID tables need the domains' "
                       "user and item counts; build the model through its task "
                       "(crossrec_jax.tasks.make_task(config).build_model(rngs))")
    h = cfg.rating_head
    head = id_head_lib.IdRatingHead(
        encoder.config.hidden_size, tuple(h.hidden), output=h.output, num_users=num_users,
        num_items=num_items, biases=bool(h.get("id_biases", False)), dim=int(h.get("id_dim", 0)),
        dropout=float(h.dropout), id_dropout=float(h.get("id_dropout", 0.0)),
        dtype=encoder.config.dtype, rngs=rngs)
  return CrossEncoderRecommender(
      encoder, pooling=cfg.pooling, rating_head=head,
      rating_hidden=tuple(cfg.rating_head.hidden), rating_output=cfg.rating_head.output,
      rating_dropout=float(cfg.rating_head.dropout),
      discriminator_hidden=tuple(cfg.discriminator.hidden),
      discriminator_dropout=float(cfg.discriminator.dropout),
      reverse_gradient=bool(cfg.discriminator.reverse_gradient), rngs=rngs)


def build_recommender(cfg: Any, *, rngs: nnx.Rngs) -> CrossEncoderRecommender:
  """`build_cross_encoder` for `model.kind='cross_encoder'` configs (the name studies and
  benchmarks use); another kind is built by its task (`tasks.make_task(config).build_model`)."""
  if cfg.kind != "cross_encoder":
    raise ValueError(f"model.kind={cfg.kind!r}: build it through its task "
                     "(crossrec_jax.tasks.make_task(config).build_model(rngs))")
  return build_cross_encoder(cfg, rngs=rngs)
