"""Tests for crossrec_jax/eval/plots.py: the figures' structure (panels, lines, styles, legend)."""

import matplotlib.colors as mcolors
import numpy as np
import pytest

from crossrec_jax.eval import plots


@pytest.fixture
def figures(monkeypatch):
  """The figures the plot functions save, kept open for inspection."""
  saved = []
  real = plots._save  # pylint: disable=protected-access

  def keep(fig, path):
    saved.append(fig)
    fig.canvas.draw()  # lay out (legend positions, tick labels) as the saved file has them
    fig.test_renderer = fig.canvas.get_renderer()  # closing the figure drops its Agg canvas
    return real(fig, path)

  monkeypatch.setattr(plots, "_save", keep)
  return saved


def _records(steps, w_domain, w_source, w_target, seed):
  rng = np.random.default_rng(seed)
  out = []
  for s in steps:
    out.append({"split": "train", "global_step": s, "loss": 1.0, "loss_source": 1 / s,
                "loss_target": 2 / s, "loss_domain": 0.7 + rng.normal(0, 0.01),
                "w_source": w_source, "w_target": w_target, "w_domain": w_domain})
    if s % 10 == 0:
      out.append({"split": "target_valid", "global_step": s, "rmse": 1.0 + 1 / s})
  return out


def test_every_known_method_has_its_own_colour_and_marker():
  styles = [plots.method_style(m) for m in plots.KNOWN_METHODS]
  colours = {mcolors.to_hex(s["color"]) for s in styles}
  assert len(colours) == len(plots.KNOWN_METHODS) == len({s["marker"] for s in styles})
  new = [plots.method_style(m, ["mine", "yours"]) for m in ("mine", "yours")]
  assert new[0] != new[1] and not {mcolors.to_hex(s["color"]) for s in new} & colours
  with pytest.raises(ValueError, match="distinct colour"):
    plots.method_style("z", [f"m{k}" for k in range(10)] + ["z"])


def test_learning_curves_one_panel_per_loss_term_lines_and_legend_outside(tmp_path, figures):
  curves = {"target_only": _records(range(5, 41, 5), 0.0, 0.0, 1.0, 0),
            "source_only": _records(range(5, 41, 5), 0.0, 1.0, 0.0, 1),
            "dann": _records(range(5, 41, 5), 0.1, 1.0, 0.0, 2)}
  path = plots.learning_curves(curves, tmp_path / "lc.png", title="t")
  assert path.stat().st_size > 1000
  (fig,) = figures
  axes = fig.axes
  assert [a.get_title() for a in axes] == [
      "source rating loss", "target rating loss", "domain loss (discriminator / penalty)",
      "target valid RMSE"]
  labels = lambda ax: [l.get_label() for l in ax.lines]
  assert labels(axes[0]) == ["source_only", "dann"]  # target_only trains no source loss
  assert labels(axes[2]) == ["dann"]
  for line in axes[3].lines:  # the periodic valid evaluations: lines, not single dots
    assert len(line.get_xdata()) == 4 and line.get_linestyle() == "-"
  # Coinciding curves stay visible: later methods are drawn thinner.
  widths = [l.get_linewidth() for l in axes[3].lines]
  assert widths == sorted(widths, reverse=True) and len(set(widths)) == 3
  legend = axes[-1].get_legend()
  assert [t.get_text() for t in legend.get_texts()] == ["target_only", "source_only", "dann"]
  renderer = fig.test_renderer
  assert legend.get_window_extent(renderer).x0 > axes[-1].get_window_extent(renderer).x1


def test_learning_curves_plot_the_metric_a_ranking_run_evaluates(tmp_path, figures):
  """A bi-encoder evaluates NDCG@10, not RMSE: its valid panel shows that metric, and its loss
  panels can say what the losses are."""
  records = _records(range(5, 41, 5), 0.0, 1.0, 1.0, 0)
  for r in records:
    if r["split"] == "target_valid":
      r["NDCG@10"] = 0.1 + 0.001 * r.pop("rmse")
  plots.learning_curves({"joint": records}, tmp_path / "lc.png", valid_metric="NDCG@10",
                        loss_titles={"loss_source": "source retrieval loss"})
  (fig,) = figures
  assert [a.get_title() for a in fig.axes] == [
      "source retrieval loss", "target rating loss", "target valid NDCG@10"]
  assert len(fig.axes[-1].lines[0].get_xdata()) == 4 and fig.axes[-1].get_ylabel() == "NDCG@10"


def test_metric_vs_fraction_sixteen_methods_are_told_apart(tmp_path, figures):
  rows = [{"method": m, "kind": "baseline" if k >= 6 else "lm", "label_fraction": f, "seed": s,
           "test/rmse": 1.0 + 0.01 * k + 0.001 * s}
          for k, m in enumerate(plots.KNOWN_METHODS) for f in (0.0, 0.1, 1.0) for s in (0, 1)]
  plots.metric_vs_fraction(rows, "test/rmse", tmp_path / "m.png")
  (fig,) = figures
  ax = fig.axes[0]
  lines = [c.lines[0] for c in ax.containers]  # each errorbar's line of means (not its caps)
  assert len(lines) == 16
  assert len({mcolors.to_hex(l.get_color()) for l in lines}) == 16
  assert len({l.get_marker() for l in lines}) == 16
  assert {l.get_linestyle() for l in lines[6:]} == {"--"} and {l.get_linestyle() for l in lines[:6]} == {"-"}
  legend = ax.get_legend()
  renderer = fig.test_renderer
  assert legend.get_window_extent(renderer).x0 > ax.get_window_extent(renderer).x1


def test_pca_ticks_are_few_and_short(tmp_path, figures):
  rng = np.random.default_rng(0)
  src = rng.normal(0, 1, (50, 8)) * 12345.678  # large coordinates: long tick labels before
  tgt = rng.normal(3, 1, (40, 8)) * 12345.678
  plots.feature_pca({"a": (src, tgt, {"domain_acc": 0.9, "pad": 1.6}),
                     "b": (src * 1e-4, tgt * 1e-4, {"domain_acc": 0.5, "pad": 0.0})},
                    tmp_path / "p.png")
  (fig,) = figures
  for ax in fig.axes:
    for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
      texts = [t.get_text() for t in labels if t.get_text()]
      assert 2 <= len(texts) <= 7 and max(len(t) for t in texts) <= 8, texts
