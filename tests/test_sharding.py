"""Tests for train/sharding.py on one device: mesh sizes, partition rules, constraints.

Rules are checked on an `AbstractMesh` (shape only, no devices needed); numerical equivalence on
real multi-device meshes is tests/test_sharding_equivalence.py.
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, AxisType, PartitionSpec as P

from crossrec_jax.models import bert, recommender
from crossrec_jax.train import sharding
from crossrec_jax.train import state as state_lib

MESH_222 = AbstractMesh((2, 2, 2), sharding.MESH_AXES)


def _abstract_state(vocab_size: int = 30522):
  cfg = bert.BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=8, intermediate_size=128, max_position_embeddings=32)

  def init():
    rngs = nnx.Rngs(0)
    model = recommender.CrossEncoderRecommender(bert.BertModel(cfg, rngs=rngs),
                                                rating_hidden=(32,), discriminator_hidden=(6,),
                                                rngs=rngs)
    params = state_lib.split_model(model).params
    return state_lib.init_train_state(params, optax.adamw(1e-3), state_lib.make_rng(0))

  return jax.eval_shape(init)


def _specs(tree, mesh=MESH_222):
  shardings = sharding.state_shardings(tree, mesh)
  return {sharding.path_name(p): s.spec
          for p, s in jax.tree_util.tree_leaves_with_path(shardings)}


# ---------------------------------------------------------------------------- mesh sizes

@pytest.mark.parametrize("sizes, n, expected", [
    ((-1, 1, 1), 8, (8, 1, 1)),
    ((2, -1, 2), 8, (2, 2, 2)),
    ({"fsdp": -1, "tensor": 2}, 8, (1, 4, 2)),
    ({"data": 1}, 1, (1, 1, 1)),
    ((1, 1, -1), 8, (1, 1, 8)),
])
def test_mesh_shape_resolves_minus_one(sizes, n, expected):
  assert sharding.mesh_shape(sizes, n) == expected


@pytest.mark.parametrize("sizes, n, match", [
    ((-1, -1, 1), 8, "at most one"),
    ((3, -1, 1), 8, "do not divide"),
    ((2, 2, 1), 8, "has 4 devices but 8"),
    ((0, 1, 1), 1, "mesh.data=0"),
    ({"model": 2}, 2, "mesh.model"),
    ((1, 1), 1, "needs 3 sizes"),
])
def test_mesh_shape_errors_name_the_axis(sizes, n, match):
  with pytest.raises(ValueError, match=match):
    sharding.mesh_shape(sizes, n)


def test_make_mesh_has_three_auto_axes():
  mesh = sharding.make_mesh({"data": -1})
  assert mesh.axis_names == sharding.MESH_AXES
  assert dict(mesh.shape) == {"data": jax.device_count(), "fsdp": 1, "tensor": 1}
  assert mesh.axis_types == (AxisType.Auto,) * 3


# ---------------------------------------------------------------------------- rules

def test_rules_split_attention_and_mlp_for_tensor_parallelism():
  specs = _specs(_abstract_state())
  layer = "params/encoder/encoder/layer/1"
  assert specs[f"{layer}/attention/query/kernel"] == P("fsdp", "tensor")
  assert specs[f"{layer}/attention/value/kernel"] == P("fsdp", "tensor")
  assert specs[f"{layer}/attention/key/bias"] == P("tensor")
  assert specs[f"{layer}/attention/output/kernel"] == P("tensor", "fsdp")
  assert specs[f"{layer}/attention/output/bias"] == P()
  assert specs[f"{layer}/intermediate/kernel"] == P("fsdp", "tensor")
  assert specs[f"{layer}/intermediate/bias"] == P("tensor")
  assert specs[f"{layer}/output/kernel"] == P("tensor", "fsdp")
  assert specs[f"{layer}/output_layer_norm/scale"] == P()
  assert specs["params/encoder/embeddings/position_embeddings/embedding"] == P(None, "fsdp")
  assert specs["params/rating_head/mlp/hidden/0/kernel"] == P("fsdp")
  assert specs["step"] == P() and specs["rng"] == P()


def test_optimizer_moments_are_sharded_like_their_parameter():
  specs = _specs(_abstract_state())
  params = {k: v for k, v in specs.items() if k.startswith("params/")}
  moments = {k: v for k, v in specs.items() if k.startswith("opt_state/") and "/mu/" in k}
  assert len(moments) == len(params)
  for name, spec in moments.items():
    param = "params/" + name.split("/mu/", 1)[1]
    assert spec == params[param], name


def test_non_divisible_dimension_is_replicated_and_logged(caplog):
  # 30522 tokens do not split over tensor=2 (30522 = 2 x 15261 does; 4 ways does not).
  mesh = AbstractMesh((1, 2, 4), sharding.MESH_AXES)
  with caplog.at_level(logging.INFO, logger="crossrec_jax.train.sharding"):
    specs = _specs(_abstract_state(), mesh)
  assert specs["params/encoder/embeddings/word_embeddings/embedding"] == P()
  assert any("word_embeddings/embedding dim 0 (size 30522)" in r.getMessage()
             for r in caplog.records)
  # The discriminator's output kernel (6, 1): 6 splits over fsdp=2; its (1,) bias is replicated.
  assert specs["params/discriminator/mlp/out/kernel"] == P("fsdp")
  assert specs["params/discriminator/mlp/out/bias"] == P()
  # With a divisible vocabulary the rule applies in full.
  specs = _specs(_abstract_state(vocab_size=128), mesh)
  # (features never over fsdp: see DEFAULT_RULES and test_sharding_equivalence's remat check)
  assert specs["params/encoder/embeddings/word_embeddings/embedding"] == P("tensor")


def test_spec_for_errors():
  with pytest.raises(ValueError, match="no partition rule matches"):
    sharding.spec_for("a/kernel", (4, 4), MESH_222, rules=((r"bias$", P()),))
  with pytest.raises(ValueError, match="has 2 entries"):
    sharding.spec_for("a/kernel", (4,), MESH_222, rules=((r".*", P("data", None)),))
  with pytest.raises(ValueError, match="mesh axis 'model'"):
    sharding.spec_for("a/kernel", (4, 4), MESH_222, rules=((r".*", P("model")),))


def test_first_matching_rule_wins():
  rules = ((r"query/kernel$", P(None, "tensor")), (r"kernel$", P("fsdp")), (r".*", P()))
  assert sharding.spec_for("x/query/kernel", (4, 4), MESH_222, rules) == P(None, "tensor")
  assert sharding.spec_for("x/key/kernel", (4, 4), MESH_222, rules) == P("fsdp")
  assert sharding.spec_for("x/key/bias", (4,), MESH_222, rules) == P()


def test_create_sharded_state_on_one_device_matches_plain_init():
  mesh = sharding.make_mesh((-1, 1, 1))
  init = lambda: {"w": jax.random.normal(jax.random.key(0), (8, 4)), "b": jnp.zeros(4)}
  state, shardings = sharding.create_sharded_state(init, mesh)
  np.testing.assert_array_equal(state["w"], init()["w"])
  assert state["w"].sharding == shardings["w"]


def test_batch_sharding_splits_leading_dim():
  mesh = sharding.make_mesh((-1, 1, 1))
  assert sharding.batch_sharding(mesh).spec == P(("data", "fsdp"))


def test_mesh_partitioner_implements_the_trainer_hook():
  part = sharding.MeshPartitioner.from_config({"data": -1})
  abstract = _abstract_state(vocab_size=128)
  shardings = part.state_sharding(abstract)
  assert jax.tree.structure(shardings) == jax.tree.structure(abstract)
  assert part.batch_sharding().spec == P(("data", "fsdp"))
  rows = 2 * jax.device_count()  # splits over every device (the suite also runs on 8)
  batch = part.put_batch({"input_ids": np.ones((rows, 8), np.int32)})
  assert batch["input_ids"].sharding.is_equivalent_to(part.batch_sharding(), 2)
  assert batch["input_ids"].shape == (rows, 8)


# ---------------------------------------------------------------------------- activations

def test_constrain_is_identity_without_a_mesh():
  x = jnp.ones((4, 8))
  assert sharding.constrain(x, "batch", "embed") is x


def test_constrain_under_a_mesh_keeps_values_and_checks_arity():
  mesh = sharding.make_mesh((-1, 1, 1))
  x = jnp.arange(32.0).reshape(4, 8)
  with jax.set_mesh(mesh):
    y = jax.jit(lambda v: sharding.constrain(v, "batch", "embed") * 2)(x)
    with pytest.raises(ValueError, match="2 logical axes"):
      sharding.constrain(jnp.ones((2, 2, 2)), "batch", "embed")
    with pytest.raises(ValueError, match="unknown logical axis"):
      sharding.constrain(x, "batch", "vocab")
  np.testing.assert_array_equal(y, 2 * x)
