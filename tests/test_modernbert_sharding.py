"""ModernBERT on a tensor-parallel mesh: its weights are sharded by the partition rules
(train/sharding.py) and a sharded train step equals the single-device one.

One subprocess with 8 fake CPU devices (mesh data=2, fsdp=2, tensor=2) prints a JSON line; the
tests assert on it. Also: the analytic FLOPs of a ModernBERT step (models/bert_flops.py) against
XLA's count of the compiled forward + backward.
"""

from __future__ import annotations

import json
import re
import textwrap

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from conftest import run_on_fake_devices
from crossrec_jax.models import modernbert
from crossrec_jax.train import flops

WORKER = textwrap.dedent("""
  import json
  import jax, numpy as np, optax
  from flax import nnx
  from crossrec_jax.data import pipeline
  from crossrec_jax.models import modernbert, recommender
  from crossrec_jax.objectives import cross_encoder as ce_objective, losses
  from crossrec_jax.train import optim, sharding, state as state_lib, step as step_lib

  cfg = modernbert.ModernBertConfig(vocab_size=128, hidden_size=64, intermediate_size=96,
                                    num_hidden_layers=3, num_attention_heads=4,
                                    local_attention=8, pad_token_id=0, max_position_embeddings=32)
  def build():
    rngs = nnx.Rngs(0)
    return recommender.CrossEncoderRecommender(modernbert.ModernBertModel(cfg, rngs=rngs),
                                               rating_hidden=(32,), discriminator_hidden=(32,),
                                               rngs=rngs)
  parts = state_lib.split_model(build())
  opt = optim.Optimizer(optax.sgd(1.0), {})  # new params - old = -grads: compares the gradients
  init = lambda: state_lib.init_train_state(parts.params, opt.tx, state_lib.make_rng(0))
  data = np.random.default_rng(0)
  def batch(n=16, seq=16):
    mask = (np.arange(seq)[None] < data.integers(4, seq + 1, n)[:, None]).astype(np.int32)
    return {"input_ids": data.integers(1, 128, (n, seq)).astype(np.int32) * mask,
            "attention_mask": mask, "token_type_ids": np.zeros((n, seq), np.int32),
            "label": data.random(n).astype(np.float32), "label_mask": np.ones(n, np.float32),
            "valid": np.ones(n, np.float32)}
  src, tgt = batch(), batch()
  dann = losses.make_alignment("dann")
  kw = dict(weights={k: optax.constant_schedule(1.0) for k in ("source", "target", "domain")},
            lam=optax.constant_schedule(0.5), alignment=dann,
            objective=ce_objective.objective(dann, "regression"), donate=False)
  ref_state, ref_m = step_lib.make_train_step(parts.graphdef, parts.rng_state, opt, **kw)(
      jax.jit(init)(), src, tgt)
  mesh = sharding.make_mesh((2, 2, 2))
  state, shardings = sharding.create_sharded_state(init, mesh)
  specs = {sharding.path_name(p): list(s.spec) for p, s in
           jax.tree_util.tree_flatten_with_path(shardings.params)[0]}
  fn = step_lib.make_train_step(parts.graphdef, parts.rng_state, opt, state_sharding=shardings,
                                batch_sharding=sharding.batch_sharding(mesh), **kw)
  with jax.set_mesh(mesh):
    new, m = fn(state, pipeline.shard_batch(src, mesh), pipeline.shard_batch(tgt, mesh))
  shard_shape = lambda x: list(x.addressable_shards[0].data.shape)
  wqkv = new.params["encoder"]["layers"][1]["attn"]["Wqkv"]["kernel"][...]
  diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in
             zip(jax.tree.leaves(jax.device_get(new.params)), jax.tree.leaves(ref_state.params)))
  print(json.dumps({"devices": jax.device_count(), "specs": specs,
                    "wqkv_shard": shard_shape(wqkv), "wqkv_shape": list(wqkv.shape),
                    "loss": float(m["loss"]), "ref_loss": float(ref_m["loss"]),
                    "param_diff": diff, "grad_norm": float(m["grad_norm"]),
                    "ref_grad_norm": float(ref_m["grad_norm"])}))
""")

pytestmark = pytest.mark.slow  # one subprocess, three compiles (~1 min on 2 cores)


@pytest.fixture(scope="module")
def tensor_parallel():
  proc = run_on_fake_devices(WORKER, devices=8, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  out["rematerializations"] = proc.stderr.count("Involuntary full rematerialization")
  return out


def test_modernbert_weights_are_split_over_tensor_and_fsdp(tensor_parallel):
  specs = {name: tuple(spec) + (None,) * (2 - len(spec))
           for name, spec in tensor_parallel["specs"].items()}
  assert tensor_parallel["devices"] == 8
  for layer in range(3):
    base = f"encoder/layers/{layer}"
    assert specs[f"{base}/attn/Wqkv/kernel"] == ("fsdp", "tensor")
    assert specs[f"{base}/attn/Wo/kernel"] == ("tensor", "fsdp")
    assert specs[f"{base}/mlp/Wi/kernel"] == ("fsdp", "tensor")
    assert specs[f"{base}/mlp/Wo/kernel"] == ("tensor", "fsdp")
  assert specs["encoder/embeddings/tok_embeddings/embedding"] == ("tensor", None)
  # Each device holds a quarter of the fused QKV kernel (64 x 192 -> 32 x 96).
  assert tensor_parallel["wqkv_shape"] == [64, 192] and tensor_parallel["wqkv_shard"] == [32, 96]


def test_modernbert_tensor_parallel_step_equals_single_device(tensor_parallel):
  out = tensor_parallel
  assert abs(out["loss"] - out["ref_loss"]) < 1e-5
  # SGD with lr 1: the parameters after the step differ by the gradients' difference.
  assert out["grad_norm"] > 1e-3 and out["grad_norm"] == pytest.approx(out["ref_grad_norm"], rel=1e-5)
  assert out["param_diff"] < 1e-5
  assert tensor_parallel["rematerializations"] == 0


def test_modernbert_analytic_flops_agree_with_xla():
  cfg = modernbert.ModernBertConfig(vocab_size=512, hidden_size=128, intermediate_size=384,
                                    num_hidden_layers=3, num_attention_heads=4,
                                    local_attention=16, pad_token_id=0)
  graphdef, params, rest = nnx.split(modernbert.ModernBertModel(cfg, rngs=nnx.Rngs(0)),
                                     nnx.Param, ...)
  kernels = sum(int(x.size) for p, x in jax.tree_util.tree_leaves_with_path(params)
                if re.search(r"layers/\d+/.*kernel", jax.tree_util.keystr(p, simple=True,
                                                                         separator="/")))
  assert kernels == flops.dense_params(cfg) == 3 * (4 * 128 ** 2 + 3 * 128 * 384)

  def loss(p, ids, mask):
    return jnp.sum(nnx.merge(graphdef, p, rest)(ids, mask).last_hidden_state[:, 0] ** 2)

  batch, seq = 4, 64
  ids = jnp.ones((batch, seq), jnp.int32)
  measured = flops.xla_flops(jax.jit(jax.grad(loss)).lower(params, ids, ids).compile())
  analytic = flops.step_flops(cfg, batch, seq, head_widths=())
  assert measured is not None and 1.0 <= measured / analytic < 1.10, (measured, analytic)
