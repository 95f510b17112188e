"""Partition rules cover the bi-encoder's towers (train/sharding.py DEFAULT_RULES), and its compiled
step and full-ranking evaluator on an 8-device (data 2, fsdp 2, tensor 2) mesh of fake CPU devices
match one device."""

import textwrap

import jax
import optax
from flax import nnx
from jax.sharding import AbstractMesh, PartitionSpec as P

from conftest import run_on_fake_devices
from crossrec_jax.models import bi_encoder
from crossrec_jax.train import sharding
from crossrec_jax.train import state as state_lib

MESH_222 = AbstractMesh((2, 2, 2), sharding.MESH_AXES)


def _model():
  return bi_encoder.BiEncoderRecommender(
      None, num_items=64, text_dim=32, dim=16, item_hidden=32, user_hidden=32, user_max_len=8,
      user_layers=1, user_heads=4, item_id_embedding=True, history_id_embedding=True,
      use_position=True, rngs=nnx.Rngs(0))


def _specs():
  def init():
    parts = state_lib.split_model(_model())
    return state_lib.init_train_state(parts.params, optax.adamw(1e-3), state_lib.make_rng(0),
                                      parts.rest)

  shardings = sharding.state_shardings(jax.eval_shape(init), MESH_222)
  return {sharding.path_name(p): s.spec for p, s in jax.tree_util.tree_leaves_with_path(shardings)}


def test_rules_split_the_towers():
  specs = _specs()
  block = "params/user_tower/layers/0"
  assert specs[f"{block}/attention/query/kernel"] == P("fsdp", "tensor")  # (in, heads, head_dim)
  assert specs[f"{block}/attention/out/kernel"] == P("tensor", None, "fsdp")
  assert specs[f"{block}/ff_in/kernel"] == P("fsdp", "tensor")
  assert specs[f"{block}/ff_in/bias"] == P("tensor")
  assert specs[f"{block}/ff_out/kernel"] == P("tensor", "fsdp")
  for name in ("item_tower/hidden/kernel", "item_tower/out/kernel", "item_tower/id_embedding/embedding",
               "user_tower/history_embedding/embedding", "user_tower/mlp_in/kernel",
               "user_tower/mlp_out/kernel", "user_tower/position/embedding"):
    assert specs[f"params/{name}"] == P("fsdp"), name
  # The cached item text table rides in the state's rest: its rows are split too.
  assert specs["rest/item_text"] == P("fsdp")
  # (1, D) does not divide over fsdp: replicated; LayerNorms and statistics stay replicated.
  assert specs["params/user_tower/rating/kernel"] == P()
  assert specs[f"{block}/norm1/scale"] == P() and specs["rest/item_tower/text_mean"] == P()
  moments = {k.split("/mu/", 1)[1]: v for k, v in specs.items() if "/mu/" in k}
  assert moments and all(specs["params/" + k] == v for k, v in moments.items())


SCRIPT = textwrap.dedent("""
  import jax, numpy as np, optax, sys
  from flax import nnx
  from jax.sharding import PartitionSpec as P
  sys.path.insert(0, "tests")
  from test_bi_pipeline import make_domain
  from crossrec_jax.data import bi_pipeline as bp, pipeline
  from crossrec_jax.models import bi_encoder
  from crossrec_jax.objectives import bi_encoder as bi_objective, losses
  from crossrec_jax.train import optim, schedules, sharding, state as state_lib, step as step_lib
  assert jax.device_count() == 8
  dom = make_domain("movies", [f"film {i}" for i in range(16)], 12, 6, 0)
  cat = bp.build_catalogue([dom])
  hist = bp.domain_history(dom, np.arange(len(dom.interactions)), cat)
  cfg = bp.BiBatchConfig(batch_size=4, history_len=4, num_positives=4)
  its = bp.train_batches(hist, cfg, seed=0)
  batches = [next(its) for _ in range(3)]
  table = np.random.default_rng(0).standard_normal((len(cat), 8)).astype(np.float32)

  def run(mesh):
    model = bi_encoder.BiEncoderRecommender(None, num_items=len(cat), text_dim=8, dim=8,
        item_hidden=16, user_hidden=16, user_max_len=4, user_layers=1, user_heads=2,
        rating_dropout=0.0, discriminator_dropout=0.0, rngs=nnx.Rngs(0))
    model.set_item_text(table)
    parts = state_lib.split_model(model)
    # SGD: Adam would blow the rounding noise of exactly-zero gradients (attention key biases)
    # up to full-size steps that differ between summation orders.
    opt = optim.Optimizer(optax.sgd(0.01), {})
    init = lambda p, r: state_lib.init_train_state(p, opt.tx, state_lib.make_rng(0), r)
    kw, put = {}, lambda b: b
    if mesh is not None:
      state, shardings = sharding.create_sharded_state(init, mesh, sharding.DEFAULT_RULES,
                                                       parts.params, parts.rest)
      kw = dict(state_sharding=shardings)
      # Rows split over (data, fsdp); the shared keys (the domain's item rows) replicated: the
      # trainer's put (`partitioner.put_batch(shared=task.shared_batch_keys)`).
      put = lambda b: pipeline.shard_batch(b, mesh, shared=bp.SHARED_KEYS)
    else:
      state = init(parts.params, parts.rest)
    align = losses.make_alignment("none")
    fn = step_lib.make_train_step(parts.graphdef, parts.rng_state, opt,
        objective=bi_objective.objective(align, bi_objective.RankLoss()),
        weights={k: schedules.loss_weight_schedule(v) for k, v in
                 {"source": 0.0, "target": 1.0, "domain": 0.0}.items()},
        lam=schedules.dann_lambda(3), alignment=align, use_source=False, **kw)
    losses_ = []
    for b in batches:
      state, m = fn(state, put(b), put(b))
      losses_.append(float(m["loss"]))
    return state, losses_, fn

  mesh = sharding.make_mesh((2, 2, 2))
  ref, ref_losses, _ = run(None)
  got, got_losses, fn = run(mesh)
  np.testing.assert_allclose(got_losses, ref_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(jax.device_get(got.params)), jax.tree.leaves(ref.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
  spec = got.params["user_tower"]["layers"][0]["ff_in"]["kernel"][...].sharding.spec
  table_spec = got.rest["item_text"][...].sharding.spec
  assert fn.num_traces == 1
  # The full-ranking evaluator gathers the sharded state: the same metrics as on one device.
  from types import SimpleNamespace
  import ml_collections
  from crossrec_jax.data import recbole_protocol as rp
  from crossrec_jax.tasks import bi_encoder as bi_task
  split = rp.recbole_split(dom, seed=0)
  task = SimpleNamespace(
      data=SimpleNamespace(eval_sets={"valid": rp.eval_sets(dom, split, "valid")},
                           eval_hist={"valid": bp.domain_history(dom, split.train, cat)},
                           cached=True),
      config=ml_collections.ConfigDict({"data": {"bi": {"eval_chunk": 8, "ks": (5,)}},
                                        "model": {"bi_encoder": {"history_len": 4}}}))
  graphdef, _, rng_state, _ = state_lib.split_model(bi_encoder.BiEncoderRecommender(
      None, num_items=len(cat), text_dim=8, dim=8, item_hidden=16, user_hidden=16,
      user_max_len=4, user_layers=1, user_heads=2, rngs=nnx.Rngs(0)))
  evaluator = bi_task.BiEvaluator(task, graphdef, rng_state)
  one = evaluator("target_valid", ref.params, ref.rest)
  with jax.set_mesh(mesh):
    sharded = evaluator("target_valid", got.params, got.rest)
  assert set(one) >= {"NDCG@5", "Recall@5"} and sorted(one) == sorted(sharded)
  for k in one:
    np.testing.assert_allclose(sharded[k], one[k], rtol=1e-5, err_msg=k)
  put_b = pipeline.shard_batch(batches[0], mesh, shared=bp.SHARED_KEYS)
  assert put_b["item_rows"].sharding.is_fully_replicated
  assert put_b["hist_item"].sharding.spec == P(("data", "fsdp"))
  print("OK", spec, table_spec, ref_losses[-1] < ref_losses[0])
""")


def test_sharded_bi_encoder_step_matches_one_device():
  out = run_on_fake_devices(SCRIPT, 8, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  # Sharded as the rules say (a tower's feed-forward, the item table), and the loss fell.
  assert "OK P('fsdp', 'tensor') P('fsdp',) True" in out.stdout, out.stdout
