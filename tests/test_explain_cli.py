"""The explanation command on a tiny finished run, and its HTML page."""

import html.parser
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from crossrec_jax import configs
from crossrec_jax.explain import __main__ as cli
from crossrec_jax.explain import render


class Page(html.parser.HTMLParser):
  """Collects the text and checks that every opened element is closed in order."""

  VOID = {"meta", "br", "img", "hr", "input", "link"}

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.stack, self.text, self.tags = [], [], []

  def handle_starttag(self, tag, attrs):
    self.tags.append(tag)
    if tag not in self.VOID:
      self.stack.append(tag)

  def handle_endtag(self, tag):
    assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
    self.stack.pop()

  def handle_data(self, data):
    self.text.append(data)


def parse_page(text):
  page = Page()
  page.feed(text)
  page.close()
  assert not page.stack, f"unclosed elements {page.stack}"
  return page, "".join(page.text)


def _tiny_run(tmp_path_factory, name: str):
  """A finished 4-step run of the packaged config `name`:tiny."""
  from crossrec_jax.train import trainer
  config = configs.load(f"{name}:tiny")
  config.phases[0].steps = 4
  workdir = tmp_path_factory.mktemp(f"explain_{name}")
  trainer.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  return _tiny_run(tmp_path_factory, "target_only")


@pytest.fixture(scope="module")
def hybrid_run(tmp_path_factory):
  return _tiny_run(tmp_path_factory, "hybrid_target_only")


def test_page_escapes_text_and_names_every_history_item():
  record = {"user": "u<1>", "item": "i&2", "split": "test", "method": "ig", "prediction": 3.5,
            "truth": 4.0, "units": "stars", "candidate": "Next movie: <script>x</script>",
            "history": [{"k": 0, "text": "Heat & Dust <1983>", "attribution": 0.2},
                        {"k": 1, "text": "Ran", "attribution": -0.1}],
            "tokens": [("[CLS]", 0.0, 0), ("<b>", 0.3, 3)], "gap": 0.001, "complete": True,
            "baseline": 3.0, "profile": [{"text": "Likes <drama>.", "attribution": 0.05}]}
  page, text = parse_page(render.html_page([record]))
  assert "script" not in page.tags and "b" not in page.tags  # data text never becomes markup
  for needle in ("Heat & Dust <1983>", "Ran", "u<1>", "i&2", "<script>x</script>", "<b>",
                 "Likes <drama>."):
    assert needle in text
  assert text.index("Heat & Dust") < text.index("Ran")  # ranked by attribution
  lines = render.summary_lines(record)
  assert "+0.2000" in lines[2] and "Heat & Dust" in lines[2] and "Ran" in lines[3]


@pytest.mark.parametrize("method", ["ig", "loo"])
def test_cli_explains_a_user_item_of_a_finished_run(finished_run, method, capsys, tmp_path):
  from crossrec_jax.explain import run as run_lib
  explained = run_lib.ExplainedRun.load(finished_run)
  which, i = explained.first(1)[0]
  ex = explained.examples[which]
  user = str(explained.domain.interactions.user_ids[ex["user"][i]])
  item = str(explained.domain.items.ids[ex["item"][i]])
  out = tmp_path / "out"
  records = cli.main([f"--workdir={finished_run}", f"--user={user}", f"--item={item}",
                      f"--method={method}", "--examples=2", "--steps=8", f"--out={out}",
                      "--baseline=mask"])
  printed = capsys.readouterr().out
  assert f"user {user} item {item}" in printed and "top positive" in printed
  assert len(records) == 2 and records[0]["user"] == user and records[0]["item"] == item
  _, text = parse_page((out / "explain.html").read_text())
  for record in records:
    assert record["history"], "the examples picked show a history"
    for h in record["history"]:
      assert h["text"] in text
    assert open(record["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  if method == "ig":
    assert all(abs(r["gap"]) < 0.05 for r in records)
    assert all(r["tokens"] for r in records)
  loo = explained.explain([(which, i)], "loo")[0]
  assert len(loo["history"]) == len(records[0]["history"])


def test_cli_mistakes_are_one_line_and_exit_2(finished_run, capsys):
  for argv, needle in (([f"--workdir={finished_run}", "--user=nobody", "--item=1"], "--user=nobody"),
                       ([f"--workdir={finished_run}", "--examples=1", "--method=shap"], "--method"),
                       ([f"--workdir={finished_run}"], "--examples")):
    with pytest.raises(SystemExit) as e:
      cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and needle in err, err
  from crossrec_jax.explain import run as run_lib
  explained = run_lib.ExplainedRun.load(finished_run)
  user = str(explained.domain.interactions.user_ids[explained.examples["test"]["user"][0]])
  with pytest.raises(ValueError, match="--item=no-such-item"):
    explained.find(user, "no-such-item")
  proc = subprocess.run([sys.executable, "-m", "crossrec_jax.explain", "--workdir=/no/such/run",
                         "--examples=1"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
      "FATAL: --workdir=/no/such/run: no such directory"], proc.stderr


def test_faithfulness_benchmark_table_on_a_tiny_run(finished_run, tmp_path):
  from conftest import experiment_module
  from crossrec_jax.explain import run as run_lib
  bench = experiment_module("explain_faithfulness")
  explained = run_lib.ExplainedRun.load(finished_run, chunk=8)
  picks = explained.first(6)
  lines, results = bench.deletion_table(explained, picks, steps=8, seed=0, cache=tmp_path)
  assert sorted(p.name for p in tmp_path.glob("faithfulness_*.npz")) == [
      "faithfulness_ig8_6_0.npz", "faithfulness_loo_6_0.npz"]
  for name in ("IG top-k", "LOO top-k", "random k", "recent k"):
    assert sum(line.startswith(f"| {name} |") for line in lines) == 1
  # Removing the entry of largest |LOO change| changes the prediction most, by definition.
  assert results["LOO top-k@1"][0] >= max(results[f"{n}@1"][0] for n in
                                          ("IG top-k", "random k", "recent k")) - 1e-9
  again, _ = bench.deletion_table(explained, picks, steps=8, seed=0, cache=tmp_path)
  assert again == lines  # the cached explanations give the same table


def test_cli_explains_a_hybrid_run_over_its_id_history(hybrid_run, capsys, tmp_path):
  """The hybrid reads an ID history, not tokens: each entry is one item of it (newest first,
  named by title with the rating shown), removed by LOO; the ids index the run's own tables."""
  from crossrec_jax.data import prepare
  from crossrec_jax.explain import run as run_lib
  explained = run_lib.ExplainedRun.load(hybrid_run)
  # The examples are the run's: the same subsampled target domain, so the same ID rows.
  data = prepare.prepare_data(explained.config)
  assert list(explained.domain.interactions.user_ids) == list(data.pair.target.interactions.user_ids)
  assert list(explained.domain.items.ids) == list(data.pair.target.items.ids)
  out = tmp_path / "out"
  records = cli.main([f"--workdir={hybrid_run}", "--examples=3", "--method=loo", f"--out={out}"])
  printed = capsys.readouterr().out
  assert len(records) == 3 and printed.count("top positive") == 3
  _, text = parse_page((out / "explain.html").read_text())
  for (which, i), record in zip(explained.first(3), records):
    hist = explained.examples[which]["history_item"][i]
    newest_first = hist[hist >= 0][::-1]
    assert [h["text"].split(" (rated ")[0] for h in record["history"]] == [
        str(explained.item_names[j]) for j in newest_first]
    assert all(h["text"] in text for h in record["history"])
    assert any(h["attribution"] != 0 for h in record["history"])
    assert open(record["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  # LOO's unedited score is the model's prediction; each delta is a re-run without the entry.
  batch = explained.batch(explained.first(1))
  k0 = int(np.flatnonzero(batch["history_item"][0] >= 0)[-1])  # the newest entry's column
  edited = {name: v.copy() for name, v in batch.items()}
  edited["history_item"][0, k0], edited["history_rating"][0, k0] = -1, -1.0
  without = explained.explainer.score_fn(edited)[0]
  span = float(explained.scale.high - explained.scale.low)
  assert records[0]["history"][0]["attribution"] == pytest.approx(
      (explained.explainer.score_fn(batch)[0] - without) * span, abs=1e-5)
  with pytest.raises(SystemExit) as e:  # integrated gradients need a model that reads tokens
    cli.main([f"--workdir={hybrid_run}", "--examples=1", "--method=ig", f"--out={out}"])
  err = capsys.readouterr().err.strip()
  assert e.value.code == 2 and len(err.splitlines()) == 1 and "--method=loo" in err, err
