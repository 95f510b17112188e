"""The packaged configs: one `get_config(preset)` form, names or paths, the methods written once."""

import json
import subprocess
import sys

import pytest
from absl import flags

from conftest import REPO_ROOT
from crossrec_jax import config_base
from crossrec_jax import configs
from crossrec_jax.configs import methods

# lora: finetune's phases with the encoder frozen (its own phase list, LoRA adapters training).
RUN_CONFIGS = [n for n in configs.names()
               if not n.startswith("transfer_study") and "_study" not in n and n != "lora"]


def test_every_packaged_config_takes_a_preset_and_only_that():
  assert set(RUN_CONFIGS) == {*methods.METHODS, *(f"bi_{m}" for m in methods.METHODS),
                              *(f"hybrid_{m}" for m in methods.METHODS)}
  for name in configs.names():
    for preset in config_base.PRESETS:
      assert configs.load(f"{name}:{preset}").preset == preset, name
    with pytest.raises(ValueError, match="unknown preset"):
      configs.load(f"{name}:target_only,tiny")  # the bi-encoder's old "METHOD,PRESET" form


def test_both_architectures_share_each_methods_phases():
  """One method -> phases mapping: the same phase names, weights and alignment in both kinds
  (only the lengths are the architecture's)."""
  def shape(config):
    return [(p.name, p.weights.to_dict(), p.alignment) for p in config.phases]

  for method in methods.METHODS:
    cross, bi = configs.load(f"{method}:cpu"), configs.load(f"bi_{method}:cpu")
    hyb = configs.load(f"hybrid_{method}:cpu")
    assert cross.method == bi.method == hyb.method == method
    assert cross.model.kind == "cross_encoder" and bi.model.kind == "bi_encoder"
    assert hyb.model.kind == "hybrid"
    assert shape(cross) == shape(bi) == shape(hyb) == shape(methods.apply(config_base.base_config(), method,
                                                            source=1, target=1, joint=1))
  with pytest.raises(ValueError, match="needs joint steps"):
    methods.phases("joint", source=5)
  with pytest.raises(ValueError, match="unknown method 'jont'"):
    methods.phases("jont", joint=5)


def test_a_name_and_a_path_load_the_same_config(tmp_path):
  by_name = configs.load("finetune:cpu").to_dict()
  by_path = configs.load(f"{REPO_ROOT}/crossrec_jax/configs/finetune.py:cpu").to_dict()
  assert json.dumps(by_name, default=str) == json.dumps(by_path, default=str)
  own = tmp_path / "mine.py"
  own.write_text("from crossrec_jax.configs import dann\n\n\ndef get_config(preset='tiny'):\n"
                 "  c = dann.get_config(preset)\n  c.phases[0].steps = 3\n  return c\n")
  assert configs.load(f"{own}:gpu").phases[0].steps == 3


def test_the_old_experiments_path_and_unknown_names_are_one_line_errors():
  with pytest.raises(ValueError, match=r"no file experiments/dann\.py; the configs ship in the "
                                       r"package: --config=dann:tiny"):
    configs.load("experiments/dann.py:tiny")
  with pytest.raises(ValueError, match="'dan' is neither a config file nor a packaged config"):
    configs.resolve("dan:tiny")
  assert configs.resolve("dann:gpu") == f"{configs.CONFIG_DIR / 'dann'}.py:gpu"


def test_the_config_flag_takes_names_and_overrides():
  fv = flags.FlagValues()
  configs.define_config_flag("config", flag_values=fv)
  argv = ["prog", "--config=bi_joint:tiny", "--config.model.bi_encoder.dim=24"]
  saved, sys.argv = sys.argv, argv  # config_flags reads the override names from sys.argv
  try:
    fv(argv)
  finally:
    sys.argv = saved
  assert fv.config.method == "joint" and fv.config.model.bi_encoder.dim == 24


def test_main_names_the_packaged_spelling_of_an_old_config_path(tmp_path):
  out = subprocess.run([sys.executable, "-m", "crossrec_jax.main",
                        "--config=experiments/dann.py:tiny", f"--workdir={tmp_path}"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode != 0 and "Traceback" not in out.stderr
  assert "the configs ship in the package: --config=dann:tiny" in out.stderr


def test_every_packaged_config_documents_its_command_hardware_and_result():
  for name in configs.names():
    doc = (configs.CONFIG_DIR / f"{name}.py").read_text().split('"""')[1]
    assert f"--config={name}:" in doc, f"configs/{name}.py: no command with --config={name}:"
    assert "Expected result" in doc and ("Hardware" in doc or "Presets" in doc), name
