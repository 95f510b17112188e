"""BertConfig.attention: jax.nn.dot_product_attention ('xla') matches the einsum reference."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from crossrec_jax.models import bert


def _config(**kw):
  return bert.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64,
                         max_position_embeddings=32, attention_probs_dropout_prob=0.0, **kw)


def test_xla_attention_matches_einsum_with_padding():
  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(1, 100, (3, 12)), jnp.int32)
  mask = jnp.asarray(np.arange(12)[None] < np.array([[12], [7], [1]]), jnp.int32)
  ref = bert.BertModel(_config(), rngs=nnx.Rngs(0))
  fused = bert.BertModel(_config(attention="xla"), rngs=nnx.Rngs(0))  # same init
  a, b = ref(ids, mask), fused(ids, mask)
  keep = np.asarray(mask, bool)  # padded positions are meaningless in both
  np.testing.assert_allclose(np.asarray(b.last_hidden_state)[keep],
                             np.asarray(a.last_hidden_state)[keep], atol=2e-5)
  np.testing.assert_allclose(b.pooler_output, a.pooler_output, atol=2e-5)


def test_fused_attention_rejects_attention_dropout():
  with pytest.raises(ValueError, match="attention_probs_dropout_prob"):
    bert.BertConfig(attention="cudnn", attention_probs_dropout_prob=0.1)
  with pytest.raises(ValueError, match="BertConfig.attention"):
    bert.BertConfig(attention="flash", attention_probs_dropout_prob=0.0)
