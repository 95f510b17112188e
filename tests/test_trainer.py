"""Tests for train/trainer.py on the real default pair (tiny preset) and for its config checks."""

import json

import jax
import numpy as np
import pytest

from conftest import require_shared_data  # noqa: F401  (the default pair needs no shared data)

from crossrec_jax import config_base
from crossrec_jax.data import prepare
from crossrec_jax.train import optim
from crossrec_jax.train import trainer


def tiny(*phases, **train):
  config = config_base.base_config("tiny")
  config.phases = list(phases)
  config.train.update(dict(progress_bar=False, tensorboard=False, **train))
  return config


@pytest.fixture(scope="module")
def tiny_data():
  """The tiny preset's data (ML-1M -> ML-100K, a few hundred examples), prepared once."""
  return prepare.prepare_data(config_base.base_config("tiny"))


def read_metrics(workdir, split="train"):
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [l for l in lines if l["split"] == split]


def test_prepared_tiny_data_is_subsampled_and_reported(tiny_data):
  report = tiny_data.report
  assert report["source"]["users"] == 40 and report["target"]["users"] == 40
  assert {k: v["examples"] for k, v in report["examples"].items()} == {
      "source_train": 512, "target_train": 256, "target_valid": 128, "target_test": 128}
  assert all(v["built"] >= v["examples"] for v in report["examples"].values())
  src, tgt = next(tiny_data.train_batches(use_source=True, use_target=True, seed=0))
  assert src["input_ids"].shape == tgt["input_ids"].shape == (16, 64)
  assert (src["domain"] == 0).all() and (tgt["domain"] == 1).all()


def test_rating_loss_goes_down_on_real_data(tmp_path, tiny_data):
  config = tiny(config_base.phase("target", 40, target=1.0), log_every=5, checkpoint_every=0)
  final = trainer.train_and_evaluate(config, tmp_path, data=tiny_data)
  train = read_metrics(tmp_path)
  assert [l["step"] for l in train] == list(range(5, 41, 5))
  losses = [l["loss_target"] for l in train]
  assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
  assert all("lr_encoder" in l and "grad_norm" in l and "rmse_target" in l for l in train)
  # Evaluation is on the target's own 1-5 scale, over every valid example.
  assert final["target_valid"]["n"] == 128.0 and 0.3 < final["target_valid"]["rmse"] < 2.0
  assert final["target_test"]["n"] == 128.0
  assert json.loads((tmp_path / "final_metrics.json").read_text())["global_step"] == 40
  assert (tmp_path / "checkpoints" / "40").is_dir()  # end-of-phase checkpoint
  # One bucket length in the tiny preset: the 40 steps compiled the step exactly once.
  assert final["phases"][0]["step_traces"] == 1


def test_non_finite_loss_stops_with_phase_and_step(tmp_path, tiny_data):
  config = tiny(config_base.phase("blowup", 5, target=1.0), check_finite_every_step=True,
                checkpoint_every=1)
  for group in config_base.GROUPS:
    config.optimizer[group].lr = 1e30  # the first update overflows the parameters
  with pytest.raises(trainer.NonFiniteLossError,
                     match=r"non-finite .*param_norm.* in phases\[0\] \('blowup'\) at step 1 of 5"
                           r".*last good checkpoint is none"):
    trainer.train_and_evaluate(config, tmp_path, data=tiny_data)
  assert not any(p.name.isdigit() for p in (tmp_path / "checkpoints").iterdir())


def test_resume_with_another_config_names_the_keys(tmp_path, tiny_data):
  config = tiny(config_base.phase("target", 2, target=1.0))
  trainer.train_and_evaluate(config, tmp_path, data=tiny_data)
  config.optimizer.encoder.lr = 5e-4
  config.train.log_every = 1  # runtime keys may change
  with pytest.raises(ValueError, match=r"differing keys: \['optimizer.encoder.lr'\]"):
    trainer.train_and_evaluate(config, tmp_path, data=tiny_data)


def test_kept_optimizer_needs_the_same_groups(tmp_path, tiny_data):
  config = tiny(config_base.phase("a", 2, target=1.0),
                config_base.phase("b", 2, target=1.0, frozen=("encoder",),
                                  reset_optimizer=False))
  with pytest.raises(ValueError, match=r"phases\[1\] \('b'\).reset_optimizer=False"):
    trainer.train_and_evaluate(config, tmp_path, data=tiny_data)


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p.update({"alignment": "wasserstein"}), r"phases\[0\].alignment: unknown"),
    (lambda p: p.update({"frozen": ("decoder",)}), r"phases\[0\].frozen: unknown group"),
    (lambda p: p.update({"steps": 0}), r"phases\[0\].steps must be a positive int"),
    (lambda p: p.weights.update({"source": 0.0}), r"phases\[0\].weights: every loss weight is 0"),
])
def test_phase_config_errors_name_the_key(mutate, message):
  phase = config_base.phase("p", 3, source=1.0)
  mutate(phase)
  with pytest.raises(ValueError, match=message):
    trainer.validate_phases(tiny(phase))


def test_bad_weight_schedule_names_the_key():
  bad_schedule = config_base.phase("p", 3, source={"kind": "ramp"})
  with pytest.raises(ValueError, match=r"phases\[0\].weights.source.kind: unknown schedule kind"):
    trainer.validate_phases(tiny(bad_schedule))


def test_unknown_phase_key_and_empty_phases():
  phase = config_base.phase("p", 3, source=1.0)
  phase.unlock()
  phase.weight_decay = 0.1
  with pytest.raises(ValueError, match=r"unknown key\(s\) \['phases\[0\].weight_decay'\]"):
    trainer.validate_phases(tiny(phase))
  with pytest.raises(ValueError, match="config.phases is empty"):
    trainer.validate_phases(tiny())


def test_phase_uses_and_optimizer():
  src_only = config_base.phase("s", 10, source=1.0)
  dann = config_base.phase("d", 10, source=1.0, domain=0.1, alignment="dann")
  idle_align = config_base.phase("i", 10, target=1.0, alignment="mmd")  # domain weight 0
  assert trainer.phase_uses(src_only) == (True, False)
  assert trainer.phase_uses(dann) == (True, True)
  assert trainer.phase_uses(idle_align) == (False, True)
  assert trainer.phase_alignment(idle_align).kind == "none"
  assert trainer.phase_alignment(dann).uses_discriminator
  config = tiny()
  phase = config_base.phase("f", 10, target=1.0, lr={"rating_head": 0.5}, frozen=("encoder",))
  labels = {"encoder": {"w": "encoder"}, "rating_head": {"w": "rating_head"},
            "discriminator": {"w": "discriminator"}}
  opt = trainer.phase_optimizer(config, phase, labels, "phases[0]")
  lrs = {k: float(v) for k, v in opt.learning_rates(0).items()}
  assert lrs["encoder"] == 0.0 and lrs["rating_head"] == 0.5
  assert lrs["discriminator"] == pytest.approx(config.optimizer.discriminator.lr)
  # decay_steps 0 means the phase length: linear decay reaches 0 at step 10.
  assert float(opt.learning_rates(10)["rating_head"]) == 0.0
  assert isinstance(opt, optim.Optimizer)


def test_config_hash_ignores_runtime_keys():
  a, b = tiny(), tiny()
  b.train.log_every = 99
  b.train.progress_bar = True
  assert trainer.config_hash(a) == trainer.config_hash(b)
  b.seed = 1
  assert trainer.config_hash(a) != trainer.config_hash(b)
  assert jax.devices()  # the trainer runs on whatever JAX sees


def test_mesh_partitioner_run_logs_tflops_and_matches_the_default_device(tmp_path, tiny_data):
  from crossrec_jax.train import sharding  # pylint: disable=g-import-not-at-top
  config = tiny(config_base.phase("target", 3, target=1.0), log_every=1, checkpoint_every=0)
  plain = trainer.train_and_evaluate(config, tmp_path / "plain", data=tiny_data)
  partitioner = sharding.MeshPartitioner.from_config(config.mesh)
  meshed = trainer.train_and_evaluate(config, tmp_path / "mesh", data=tiny_data,
                                      partitioner=partitioner)
  # Same trajectory whether the state was created by the jitted, sharded init or eagerly.
  a, b = read_metrics(tmp_path / "plain"), read_metrics(tmp_path / "mesh")
  assert [l["loss"] for l in a] == pytest.approx([l["loss"] for l in b], abs=1e-6)
  assert meshed["target_valid"]["rmse"] == pytest.approx(plain["target_valid"]["rmse"], abs=1e-5)
  # Analytic model FLOPs per second on every line; no MFU without a known peak (a CPU).
  assert all(l["tflops_per_s"] > 0 for l in b)
  assert all("mfu" not in l for l in b) == (jax.devices()[0].platform == "cpu")


def test_metric_writer_of_another_process_writes_nothing(tmp_path):
  writer = trainer.MetricWriter(tmp_path, tensorboard=True, enabled=False)
  writer.write("train", 1, {"phase": "p"}, {"loss": 1.0})
  writer.close()
  assert list(tmp_path.iterdir()) == []
