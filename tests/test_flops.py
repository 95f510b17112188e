"""Tests for train/flops.py: analytic FLOPs, the XLA cross-check, peaks and MFU."""

import re
import types

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from crossrec_jax.models import bert
from crossrec_jax.train import flops

SMALL = bert.BertConfig(vocab_size=512, hidden_size=128, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=512, max_position_embeddings=128,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def test_dense_params_are_the_encoder_layers_kernels():
  params = nnx.split(bert.BertModel(SMALL, rngs=nnx.Rngs(0)), nnx.Param, ...)[1]
  kernels = sum(int(x.size) for p, x in jax.tree_util.tree_leaves_with_path(params)
                if re.search(r"layer/\d+/.*kernel", jax.tree_util.keystr(p, simple=True,
                                                                        separator="/")))
  assert kernels == flops.dense_params(SMALL) == 2 * (4 * 128 ** 2 + 2 * 128 * 512)


def test_step_flops_formula_by_hand():
  b, s, d, i, layers = 3, 16, 128, 512, 2
  n_dense = layers * (4 * d * d + 2 * d * i)
  heads = (d * 8 + 8 * 1) + (d * 1)  # one head with hidden (8,), one linear head
  expected = b * s * (6 * n_dense + 12 * layers * s * d) + b * 6 * heads
  assert flops.step_flops(SMALL, b, s, head_widths=((8,), ())) == expected
  assert flops.step_flops(SMALL, b, s, head_widths=(), pooler=True) == (
      b * s * (6 * n_dense + 12 * layers * s * d) + b * 6 * d * d)


def test_analytic_count_agrees_with_xla_cost_analysis():
  """XLA counts every op (LayerNorm, softmax, GELU...): a few % above the matmul-only count."""
  graphdef, params, rest = nnx.split(bert.BertModel(SMALL, rngs=nnx.Rngs(0)), nnx.Param, ...)

  def loss(p, ids, mask):
    return jnp.sum(nnx.merge(graphdef, p, rest)(ids, mask).last_hidden_state[:, 0] ** 2)

  batch, seq = 4, 64
  ids = jnp.ones((batch, seq), jnp.int32)
  compiled = jax.jit(jax.grad(loss)).lower(params, ids, ids).compile()
  measured = flops.xla_flops(compiled)
  analytic = flops.step_flops(SMALL, batch, seq, head_widths=())
  assert measured is not None
  assert 1.0 <= measured / analytic < 1.10, (measured, analytic)


@pytest.mark.parametrize("kind, tflops", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.0),
    ("NVIDIA A100-SXM4-40GB", 312.0), ("TPU v4", 275.0), ("TPU v5 lite", 197.0),
    ("TPU v5p", 459.0), ("TPU v5", 459.0),
])
def test_peak_table(kind, tflops):
  peak, _ = flops.peak_flops(types.SimpleNamespace(device_kind=kind))
  assert peak == tflops * 1e12


def test_cpu_has_no_peak_and_no_mfu():
  peak, name = flops.peak_flops(types.SimpleNamespace(device_kind="cpu"))
  assert peak is None and name == "cpu"
  assert flops.mfu(1e12, 1.0, 1, peak) is None


def test_mfu_arithmetic():
  # 4.945e14 FLOPs in 1 s on one 989 TFLOP/s chip = 50%; on two chips = 25%.
  assert flops.mfu(4.945e14, 1.0, 1, 989e12) == pytest.approx(0.5)
  assert flops.mfu(4.945e14, 1.0, 2, 989e12) == pytest.approx(0.25)
