"""The same recommender and train step in PyTorch + transformers: the reference for the benchmark.

Not an experiment config (no get_config), and not used by the library: `bench_train_step.py`
times it against our jitted JAX step. The model is `transformers.BertModel` with the *same
weights* as a given `CrossEncoderRecommender` (exported with `export_torch_state`), the same
pooling (CLS or the masked mean), rating head (MLP -> sigmoid) and domain discriminator (MLP behind gradient
reversal), the same loss

    L = w_s * MSE(src, labelled) + w_t * MSE(tgt, labelled) + w_d * BCE(domain, src u tgt)

over ONE forward of the concatenated source and target batches, global-norm clipping at 1.0 and
AdamW with per-group learning rates (encoder / rating head / discriminator), no weight decay on
biases and LayerNorm parameters -- what `train/step.py` + `train/optim.py` compute.

Needs torch (the tests' reference, `torch==2.13.0` CPU) and transformers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import transformers
from flax import nnx

from crossrec_jax.models import hf_import
from crossrec_jax.models import recommender as recommender_lib


def export_torch_state(model: recommender_lib.CrossEncoderRecommender) -> dict[str, np.ndarray]:
  """HF/torch-named float32 arrays of the encoder (BertModel names) and of both heads."""
  params = {p: np.asarray(v[...]) for p, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)}
  out = {}
  # hf_import's (HF name -> our path, transpose?) table, read in the other direction.
  for name, (path, transpose) in hf_import._name_map(model.encoder.config).items():  # pylint: disable=protected-access
    array = params[("encoder",) + tuple(path)]
    out[f"bert.{name}"] = array.T if transpose else array
  for head in ("rating_head", "discriminator"):
    layers = [k for k in params if k[:3] == (head, "mlp", "hidden") and k[-1] == "kernel"]
    for i in range(len(layers)):
      out[f"{head}.hidden.{i}.weight"] = params[(head, "mlp", "hidden", i, "kernel")].T
      out[f"{head}.hidden.{i}.bias"] = params[(head, "mlp", "hidden", i, "bias")]
    out[f"{head}.out.weight"] = params[(head, "mlp", "out", "kernel")].T
    out[f"{head}.out.bias"] = params[(head, "mlp", "out", "bias")]
  return out


class GradientReversal(torch.autograd.Function):
  """Identity forward, -lam * grad backward."""

  @staticmethod
  def forward(ctx, x, lam):  # pylint: disable=arguments-differ
    ctx.lam = lam
    return x.view_as(x)

  @staticmethod
  def backward(ctx, grad):  # pylint: disable=arguments-differ
    return -ctx.lam * grad, None


class MLP(torch.nn.Module):
  """Dropout -> [Linear -> ReLU -> Dropout]* -> Linear(1), as heads.MLP."""

  def __init__(self, d_in: int, hidden: tuple[int, ...], dropout: float):
    super().__init__()
    widths = [d_in, *hidden]
    self.hidden = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
    self.out = torch.nn.Linear(widths[-1], 1)
    self.dropout = torch.nn.Dropout(dropout)

  def forward(self, x):
    x = self.dropout(x)
    for layer in self.hidden:
      x = self.dropout(torch.relu(layer(x)))
    return self.out(x)[..., 0]


class TorchRecommender(torch.nn.Module):
  """BertModel -> CLS -> rating head (sigmoid) and discriminator (behind GRL)."""

  def __init__(self, model: recommender_lib.CrossEncoderRecommender):
    super().__init__()
    cfg = model.encoder.config
    hf = transformers.BertConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size, hidden_act=cfg.hidden_act,
        hidden_dropout_prob=cfg.hidden_dropout_prob,
        attention_probs_dropout_prob=cfg.attention_probs_dropout_prob,
        max_position_embeddings=cfg.max_position_embeddings,
        type_vocab_size=cfg.type_vocab_size, layer_norm_eps=cfg.layer_norm_eps)
    self.bert = transformers.BertModel(hf)
    if model.pooling not in ("cls", "mean"):
      raise ValueError(f"the reference implements 'cls' and 'mean' pooling, not {model.pooling!r}")
    self.pooling = model.pooling
    dims = lambda head: tuple(l.out_features for l in head.mlp.hidden)  # noqa: E731
    self.rating_head = MLP(cfg.hidden_size, dims(model.rating_head),
                           model.rating_head.mlp.dropout.rate)
    self.discriminator = MLP(cfg.hidden_size, dims(model.discriminator),
                             model.discriminator.mlp.dropout.rate)
    state = {k: torch.from_numpy(np.array(v, np.float32))  # a writable copy
             for k, v in export_torch_state(model).items()}
    missing, unexpected = self.load_state_dict(state, strict=False)
    if unexpected or any("position_ids" not in k for k in missing):
      raise ValueError(f"weights do not fit: missing {missing}, unexpected {unexpected}")

  def forward(self, batch: dict[str, torch.Tensor], lam: float):
    hidden = self.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       token_type_ids=batch["token_type_ids"]).last_hidden_state
    if self.pooling == "cls":
      h = hidden[:, 0]
    else:  # `recommender.pool('mean')`: the average over real tokens, 0 for a row with none
      w = (batch["attention_mask"] > 0).to(hidden.dtype)[..., None]
      h = (hidden * w).sum(1) / w.sum(1).clamp(min=1.0)
    rating = torch.sigmoid(self.rating_head(h))
    return h, rating, self.discriminator(GradientReversal.apply(h, lam))


def _masked_mse(pred, target, mask):
  return (mask * (pred - target) ** 2).sum() / mask.sum().clamp(min=1.0)


class TorchTrainStep:
  """One optimiser step of the joint + DANN loss, as `train/step.py` computes it."""

  def __init__(self, model: recommender_lib.CrossEncoderRecommender, *, lrs: dict[str, float],
               weight_decay: float = 0.01, max_grad_norm: float = 1.0):
    self.model = TorchRecommender(model).train()
    groups = []
    for name, module in (("encoder", self.model.bert), ("rating_head", self.model.rating_head),
                         ("discriminator", self.model.discriminator)):
      named = list(module.named_parameters())
      no_decay = [p for n, p in named if p.ndim < 2 or "LayerNorm" in n or n.endswith("bias")]
      decay = [p for n, p in named if not (p.ndim < 2 or "LayerNorm" in n or n.endswith("bias"))]
      groups += [{"params": decay, "lr": lrs[name], "weight_decay": weight_decay},
                 {"params": no_decay, "lr": lrs[name], "weight_decay": 0.0}]
    self.optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
    self.max_grad_norm = max_grad_norm

  def __call__(self, src: dict[str, Any], tgt: dict[str, Any], *, lam: float,
               weights: tuple[float, float, float]) -> dict[str, float]:
    n_src = src["input_ids"].shape[0]
    joint = {k: torch.cat([src[k], tgt[k]]) for k in ("input_ids", "attention_mask",
                                                      "token_type_ids")}
    _, rating, logits = self.model(joint, lam)
    l_s = _masked_mse(rating[:n_src], src["label"], src["label_mask"] * src["valid"])
    l_t = _masked_mse(rating[n_src:], tgt["label"], tgt["label_mask"] * tgt["valid"])
    labels = torch.cat([torch.zeros(n_src), torch.ones(rating.shape[0] - n_src)])
    valid = torch.cat([src["valid"], tgt["valid"]])
    l_d = (valid * torch.nn.functional.binary_cross_entropy_with_logits(
        logits, labels, reduction="none")).sum() / valid.sum()
    loss = weights[0] * l_s + weights[1] * l_t + weights[2] * l_d
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
    self.optimizer.step()
    return {"loss": float(loss.detach()), "loss_source": float(l_s.detach()),
            "loss_target": float(l_t.detach()), "loss_domain": float(l_d.detach())}


def to_torch(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
  return {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}
