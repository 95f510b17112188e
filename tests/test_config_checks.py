"""Tests for config_checks.py: every shipped config passes; out-of-range values name their key."""

import math

import pytest

from crossrec_jax import config_base
from crossrec_jax import config_checks
from crossrec_jax import configs

EXPERIMENTS = ("source_only", "target_only", "finetune", "dann", "joint", "joint_dann")


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("preset", config_base.PRESETS)
def test_every_experiment_and_preset_passes(name, preset):
  config_checks.check_config(configs.load(f"{name}:{preset}"))


@pytest.mark.parametrize("arg", ["bi_target_only:tiny", "bi_joint:cpu", "bi_dann:gpu"])
def test_the_bi_encoder_configs_pass(arg):
  config_checks.check_config(configs.load(arg))


def test_every_numeric_key_of_the_base_config_has_a_rule():
  config = configs.load("dann:tiny")
  numeric = [k for k, v in config_checks.flatten(config).items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)
             and not k.startswith("phases[0].weights")]  # schedules.py checks weight specs
  ruled = [k for k in numeric if config_checks.rule_for(k) is not None]
  assert ruled == numeric, sorted(set(numeric) - set(ruled))


@pytest.mark.parametrize("key,value,says", [
    ("train.log_every", 0, "an int >= 1"), ("train.log_every", -3, "an int >= 1"),
    ("train.keep_checkpoints", 0, "an int >= 1"), ("train.eval_every", -1, "an int >= 0"),
    ("optimizer.encoder.lr", math.nan, "finite"), ("optimizer.rating_head.lr", math.inf, "finite"),
    ("optimizer.encoder.lr", -1e-3, ">= 0"), ("optimizer.encoder.b2", 1.0, "< 1"),
    ("optimizer.encoder.eps", 0.0, "> 0"), ("optimizer.max_grad_norm", -1.0, ">= 0"),
    ("data.label_fraction", 1.5, "<= 1"), ("data.batch_size", 0, "an int >= 1"),
    ("data.buckets", (64, 0), "a list of ints >= 1"), ("mesh.data", 0, "or -1"),
    ("model.rating_head.dropout", 1.0, "< 1"), ("seed", -1, "an int >= 0"),
    ("phases[0].steps", 0, "an int >= 1"), ("phases[0].lr.encoder", math.nan, "finite"),
    ("phases[0].gamma", -1.0, ">= 0"),
])
def test_out_of_range_values_name_the_key(key, value, says):
  config = configs.load("dann:tiny")
  parent, _, leaf = key.rpartition(".")
  node = config
  for part in filter(None, parent.replace("[", ".").replace("]", "").split(".")):
    node = node[int(part)] if part.isdigit() else node[part]
  node[leaf] = value
  with pytest.raises(config_checks.ConfigError) as e:
    config_checks.check_config(config)
  assert str(e.value).startswith(f"config.{key} = ") and says in str(e.value), str(e.value)


@pytest.mark.parametrize("key,value", [("id_domains", "all"), ("neighbour_prior", "mean"),
                                       ("source_prior_shrink", -1.0), ("offset_shrink", math.nan)])
def test_the_hybrid_models_keys_are_checked(key, value):
  config = configs.load("hybrid_joint:tiny")
  config_checks.check_config(config)
  config.model.hybrid[key] = value
  with pytest.raises(config_checks.ConfigError, match=rf"^config\.model\.hybrid\.{key} = "):
    config_checks.check_config(config)


def test_workdir_checks(tmp_path):
  config_checks.check_workdir(str(tmp_path / "new" / "run"))  # creatable: fine
  assert not (tmp_path / "new").exists()  # and nothing was created
  (tmp_path / "file").write_text("x")
  with pytest.raises(config_checks.ConfigError, match="is a file"):
    config_checks.check_workdir(str(tmp_path / "file"))
  with pytest.raises(config_checks.ConfigError, match="is a file"):
    config_checks.check_workdir(str(tmp_path / "file" / "run"))
