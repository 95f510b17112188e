"""The bi-encoder through the shared trainer: full-ranking evaluation, selection on valid, resume.

Tiny preset on the real ML-1M -> ML-100K protocol (`data/bi_prepare.BiPreparedData`, prepared once
per module and shared) through the bi-encoder task (`tasks/bi_encoder.py`).
"""

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from crossrec_jax import config_base
from crossrec_jax import configs
from crossrec_jax import tasks
from crossrec_jax.data import bi_prepare
from crossrec_jax.train import optim
from crossrec_jax.train import state as state_lib
from crossrec_jax.train import trainer

RANKING = {"Recall@10", "MRR@10", "NDCG@10", "Hit@10", "Precision@10"}


def _config(method, items_dir, **train):
  config = configs.load(f"bi_{method}:tiny")
  config.data.bi.item_cache_dir = str(items_dir)
  config.train.update(dict(tensorboard=False, **train))
  return config


@pytest.fixture(scope="module")
def items_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("items")


@pytest.fixture(scope="module")
def data(items_dir):
  return bi_prepare.BiPreparedData(_config("target_only", items_dir))


class _Killed(Exception):
  pass


def _task(config, data):
  return tasks.make_task(config, data=data)


class _KillAfter:
  """A task whose training batches raise after `n` batches (a crash mid-phase)."""

  def __init__(self, task, n):
    self._task, self._n = task, n

  def __getattr__(self, name):
    return getattr(self._task, name)

  def train_batches(self, **kwargs):
    it, n = self._task.train_batches(**kwargs), self._n

    class Dying:
      def __init__(self):
        self.count = 0

      def __iter__(self):
        return self

      def __next__(self):
        self.count += 1
        if self.count > n:
          raise _Killed()
        return next(it)

      def get_state(self):
        return it.get_state()

      def set_state(self, state):
        it.set_state(state)

    return Dying()


class _Scored:
  """A task whose evaluator adds 'stay' = -squared distance of the parameters from `start`: a
  pure function of the parameters that (with Adam's steady steps) is best at the first
  evaluation, so the selection lands before a later resume point."""

  def __init__(self, task, start):
    self._task, self._start = task, start

  def __getattr__(self, name):
    return getattr(self._task, name)

  def make_evaluator(self, *args, **kwargs):
    real = self._task.make_evaluator(*args, **kwargs)
    start = self._start

    class Evaluator:
      refresh = real.refresh

      def __call__(self, split, params, rest):
        dist = sum(float(np.sum((np.asarray(a) - np.asarray(b)) ** 2))
                   for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(start)))
        return {**real(split, params, rest), "stay": -dist}

    return Evaluator()


def _final_state(workdir):
  root = workdir / "checkpoints"
  step = max(int(p.name) for p in root.iterdir() if p.name.isdigit())
  with ocp.CheckpointManager(root) as manager:
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return step, restored.state


def _assert_bitwise_equal(a, b):
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b and len(leaves_a) > 5
  for x, y in zip(leaves_a, leaves_b):
    assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def test_two_phases_rank_select_and_compile_once(tmp_path, data, items_dir):
  config = _config("finetune", items_dir)  # source phase, then target phase
  final = trainer.train_and_evaluate(config, tmp_path, data=data)
  for split in ("target_valid", "target_test"):
    assert set(final[split]) >= RANKING
    assert 0.0 <= final[split]["NDCG@10"] <= 1.0
  assert [p["phase"] for p in final["phases"]] == ["source", "target"]
  assert [p["step_traces"] for p in final["phases"]] == [1, 1]  # one compiled step per phase
  # Selection: the best target-valid evaluation of both phases, and its parameters are tested.
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  evals = [l for l in lines if l["split"] == "target_valid" and l["phase"] != "final"]
  assert len(evals) == 4  # steps 3 and 6 of each phase
  best = max(evals, key=lambda l: l["NDCG@10"])
  assert final["selected_at"] == {"phase": best["phase"], "step": best["step"],
                                  "global_step": best["global_step"]}
  assert final["selected"] == {"metric": "NDCG@10", "value": best["NDCG@10"]}
  assert final["target_valid"]["NDCG@10"] == best["NDCG@10"]
  assert (tmp_path / "checkpoints_best").is_dir()
  assert json.loads((tmp_path / "final_metrics.json").read_text())["selected_at"] == \
      final["selected_at"]
  # The cached encoder has no parameters: its group is frozen (lr 0), the towers train.
  train = [l for l in lines if l["split"] == "train"]
  assert train[-1]["lr_encoder"] == 0.0 and train[-1]["lr_item_tower"] > 0.0


def test_killed_mid_phase_resumes_to_the_same_selection_and_params(tmp_path, data, items_dir):
  config = _config("target_only", items_dir, eval_every=1, checkpoint_every=3,
                   select="target_valid/stay")
  task = _task(config, data)
  model = task.build_model(nnx.Rngs(int(config.seed)))
  start = jax.device_get(state_lib.split_model(model).params)
  scored = _Scored(task, start)

  reference = trainer.train_and_evaluate(config, tmp_path / "reference", task=scored)
  # The premise: the best evaluation (step 1) comes before the resume point (step 3), so only
  # the stored best checkpoint can tell the resumed run about it.
  assert reference["selected_at"] == {"phase": "target", "step": 1, "global_step": 1}

  resumed_dir = tmp_path / "resumed"
  with pytest.raises(_Killed):  # prefetch is 2 ahead: steps 1-4 ran, checkpoint 3 was written
    trainer.train_and_evaluate(config, resumed_dir, task=_KillAfter(scored, 6))
  assert sorted(int(p.name) for p in (resumed_dir / "checkpoints").iterdir()
                if p.name.isdigit()) == [3]
  assert not (resumed_dir / "final_metrics.json").exists()

  resumed = trainer.train_and_evaluate(config, resumed_dir, task=scored)
  assert resumed["selected_at"] == reference["selected_at"]
  assert resumed["selected"] == reference["selected"]
  assert resumed["target_test"] == reference["target_test"]
  assert resumed["target_valid"] == reference["target_valid"]
  assert [p["target_valid"] for p in resumed["phases"]] == \
      [p["target_valid"] for p in reference["phases"]]
  step_a, state_a = _final_state(tmp_path / "reference")
  step_b, state_b = _final_state(resumed_dir)
  assert step_a == step_b == 6
  _assert_bitwise_equal(state_a, state_b)


def test_resumable_batches_fast_forward(data):
  a = data.train_batches(use_source=True, use_target=True, seed=7)
  for _ in range(3):
    next(a)
  state = a.get_state()
  assert state == {"seed": 7, "step": 3} and json.loads(json.dumps(state)) == state
  want = next(a)
  b = data.train_batches(use_source=True, use_target=True, seed=7)
  b.set_state(state)
  got = next(b)
  for side in (0, 1):
    assert sorted(want[side]) == sorted(got[side])
    for k in want[side]:
      np.testing.assert_array_equal(want[side][k], got[side][k])
  with pytest.raises(ValueError, match="seed 7"):
    data.train_batches(use_source=True, use_target=False, seed=8).set_state(state)


def test_selection_key_and_groups(items_dir):
  config = _config("target_only", items_dir)
  assert trainer.selection_metric(config) == "NDCG@10"
  config.train.select = "target_valid/MRR@10"
  assert trainer.selection_metric(config) == "MRR@10"
  config.train.select = "target_test/NDCG@10"
  with pytest.raises(ValueError, match="train.select"):
    trainer.selection_metric(config)
  assert trainer.selection_metric(config_base.base_config("tiny")) is None
  groups = trainer.optimizer_groups(config)
  n = len(config_base.GROUPS)
  assert groups[:n] == config_base.GROUPS and set(groups[n:]) == {"item_tower", "user_tower"}
  assert trainer.optimizer_groups(config_base.base_config("tiny")) == config_base.GROUPS
  # A phase may freeze a bi-encoder group; an unknown group is an error naming the phase key.
  config.phases[0].frozen = ("user_tower",)
  trainer.validate_phases(config)
  labels = {"item_tower": {"w": "item_tower"}, "user_tower": {"w": "user_tower"},
            "rating_head": {"w": "rating_head"}, "discriminator": {"w": "discriminator"}}
  opt = trainer.phase_optimizer(config, config.phases[0], labels, "phases[0]")
  lrs = {k: float(v) for k, v in opt.learning_rates(0).items()}
  assert lrs["user_tower"] == 0.0 and lrs["encoder"] == 0.0  # frozen, and without parameters
  assert lrs["item_tower"] == pytest.approx(config.optimizer.item_tower.lr)
  assert isinstance(opt, optim.Optimizer)
  config.phases[0].frozen = ("tower",)
  with pytest.raises(ValueError, match=r"phases\[0\]\.frozen: unknown group"):
    trainer.validate_phases(config)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_trainable_item_tower_trains_the_encoder_and_refreshes_the_table(tmp_path, items_dir):
  config = _config("target_only", items_dir)
  config.model.bi_encoder.cached_only = False  # the item tower's BERT runs inside the step
  with pytest.raises(ValueError, match=r"data.bi.mode='interaction'"):
    bi_prepare.BiPreparedData(config)
  config.data.bi.update(dict(mode="interaction", negatives="uniform", num_negatives=8))
  data = bi_prepare.BiPreparedData(config)
  task = _task(config, data)
  initial = task.load_items()  # the same seed and cache: what build_model starts from
  encoder_before = _leaves(nnx.state(initial["encoder"], nnx.Param))
  table_before = np.asarray(initial["table"])
  final = trainer.train_and_evaluate(config, tmp_path, task=task)
  assert set(final["target_test"]) >= RANKING
  assert [p["step_traces"] for p in final["phases"]] == [1]
  _, state = _final_state(tmp_path)
  encoder_after = _leaves(state["params"]["encoder"])
  assert len(encoder_after) == len(encoder_before) > 5
  assert any(not np.array_equal(a, b) for a, b in zip(encoder_before, encoder_after))
  # The evaluation re-encoded every item with the trained encoder, and the state carries it.
  tables = [np.asarray(x) for x in jax.tree.leaves(state["rest"])
            if np.ndim(x) == 2 and np.shape(x) == table_before.shape]
  assert tables and not np.allclose(tables[0], table_before)
