"""Explanation records (`run.ExplainedRun.explain`) as an HTML page, a PNG chart and text.

A record: 'user', 'item', 'prediction', 'truth', 'method', 'units', 'candidate', 'history'
(a list of {'k', 'text', 'attribution'}, k = 0 the newest entry) and, for integrated gradients,
'tokens' ([(token, attribution, segment)]), 'gap', 'complete', 'baseline'. Every text from the
data is escaped (`html.escape`): titles may hold '<' and '&'.
"""

from __future__ import annotations

import html
import pathlib
from collections.abc import Sequence
from typing import Any

__all__ = ["ranked", "summary_lines", "html_fragment", "html_page", "bar_chart"]


def ranked(record: dict[str, Any]) -> list[dict[str, Any]]:
  """History entries by attribution, the most positive first."""
  return sorted(record["history"], key=lambda h: -h["attribution"])


def _entry_name(h: dict[str, Any]) -> str:
  return f"#{h['k']} {h['text']}"


def summary_lines(record: dict[str, Any], top: int = 3) -> list[str]:
  """The console summary: prediction, then the top positive and negative history items."""
  r = ranked(record)
  lines = [f"user {record['user']} item {record['item']} ({record['split']}): predicted "
           f"{record['prediction']:.3f}, true {record['truth']:g}  [{record['method']}, "
           f"attributions in {record['units']}]"]
  if record.get("gap") is not None:
    lines.append(f"  completeness gap {record['gap']:+.4f} "
                 f"({'within' if record['complete'] else 'OUTSIDE'} tolerance); baseline "
                 f"prediction {record['baseline']:.3f}")
  if record.get("candidate_attribution") is not None:
    profile = sum(f["attribution"] for f in record.get("profile", []))
    lines.append(f"  candidate {record['candidate_attribution']:+.4f}, profile {profile:+.4f} "
                 f"({len(record.get('profile', []))} facts), template "
                 f"{record['template_attribution']:+.4f}")
  pos = [h for h in r if h["attribution"] > 0][:top]
  neg = [h for h in reversed(r) if h["attribution"] < 0][:top]
  lines.append("  top positive: " + ("; ".join(f"{_entry_name(h)} {h['attribution']:+.4f}"
                                               for h in pos) or "none"))
  lines.append("  top negative: " + ("; ".join(f"{_entry_name(h)} {h['attribution']:+.4f}"
                                               for h in neg) or "none"))
  return lines


def _shade(value: float, scale: float) -> str:
  """Red for positive, blue for negative attributions; alpha by |value| / scale."""
  alpha = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
  rgb = "214,39,40" if value > 0 else "31,119,180"
  return f"background-color: rgba({rgb},{alpha:.3f})"


def _tokens_html(tokens: Sequence[tuple[str, float, int]]) -> str:
  scale = max((abs(a) for _, a, _ in tokens), default=0.0)
  spans = []
  for token, value, segment in tokens:
    spans.append(f'<span class="tok seg{min(segment, 3)}" style="{_shade(value, scale)}" '
                 f'title="{value:+.5f}">{html.escape(token)}</span>')
  return " ".join(spans)


def _record_html(record: dict[str, Any], index: int) -> str:
  r = ranked(record)
  scale = max((abs(h["attribution"]) for h in r), default=0.0)
  rows = "".join(
      f'<tr><td>{rank + 1}</td><td>{h["k"]}</td><td style="{_shade(h["attribution"], scale)}">'
      f'{h["attribution"]:+.4f}</td><td class="entry">{html.escape(h["text"])}</td></tr>'
      for rank, h in enumerate(r))
  parts = [f'<section id="example{index}"><h2>User {html.escape(record["user"])}, item '
           f'{html.escape(record["item"])}</h2>',
           f'<p>Predicted <strong>{record["prediction"]:.3f}</strong>, true {record["truth"]:g} '
           f'({html.escape(record["split"])} rating). Method: {html.escape(record["method"])}; '
           f'attributions in {html.escape(record["units"])}.</p>',
           f'<p>Candidate: <span class="entry">{html.escape(record["candidate"])}</span></p>']
  if record.get("gap") is not None:
    parts.append(f'<p>Completeness: sum of attributions - (f(x) - f(baseline)) = '
                 f'{record["gap"]:+.5f} ({"within" if record["complete"] else "outside"} '
                 f'tolerance); baseline prediction {record["baseline"]:.3f}.</p>')
  parts.append('<table><thead><tr><th>rank</th><th>entry (0 = newest)</th><th>attribution</th>'
               f'<th>history item</th></tr></thead><tbody>{rows}</tbody></table>')
  if record.get("profile"):
    fscale = max((abs(f["attribution"]) for f in record["profile"]), default=0.0)
    facts = "".join(f'<tr><td style="{_shade(f["attribution"], fscale)}">{f["attribution"]:+.4f}'
                    f'</td><td>{html.escape(f["text"])}</td></tr>' for f in record["profile"])
    parts.append('<table><thead><tr><th>attribution</th><th>profile fact</th></tr></thead>'
                 f'<tbody>{facts}</tbody></table>')
  if record.get("tokens"):
    parts.append(f'<p class="tokens">{_tokens_html(record["tokens"])}</p>')
  parts.append("</section>")
  return "\n".join(parts)


_STYLE = """.crossrec-explain table { border-collapse: collapse; margin: 1em 0; }
.crossrec-explain td, .crossrec-explain th { border: 1px solid #ccc; padding: 2px 6px; }
.crossrec-explain .tok { padding: 1px 0; } .crossrec-explain .seg2 { text-decoration: underline; }
.crossrec-explain .tokens { line-height: 1.8; }"""


def html_fragment(records: Sequence[dict[str, Any]]) -> str:
  """The records as one <div> with its own (scoped) style: for a notebook's inline HTML."""
  body = "\n".join(_record_html(r, i) for i, r in enumerate(records))
  return (f'<div class="crossrec-explain"><style>{_STYLE}</style>\n<p>Red: pushes the predicted '
          f'rating up; blue: down. Underlined tokens: the candidate.</p>\n{body}\n</div>')


def html_page(records: Sequence[dict[str, Any]], title: str = "crossrec_jax explanations") -> str:
  """A standalone page: every record's prediction, ranked history items and shaded tokens."""
  return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>'
          f'{html.escape(title)}</title><style>body {{ font-family: sans-serif; max-width: 60em; '
          f'margin: 2em auto; }}</style></head><body><h1>{html.escape(title)}</h1>\n'
          f'{html_fragment(records)}\n</body></html>\n')


def bar_chart(record: dict[str, Any], path: str | pathlib.Path, width: int = 48) -> pathlib.Path:
  """A horizontal bar per history item (ranked), written as a PNG (matplotlib, Agg)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")  # before pyplot: files only, never a window
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  r = ranked(record)[::-1]  # the largest at the top
  labels = [(_entry_name(h)[:width] + ("..." if len(_entry_name(h)) > width else "")) for h in r]
  values = [h["attribution"] for h in r]
  fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(r), 1) + 1.4), dpi=90)
  ax.barh(range(len(r)), values, color=["#d62728" if v > 0 else "#1f77b4" for v in values])
  ax.set_yticks(range(len(r)), labels, fontsize=8)
  ax.axvline(0, color="black", linewidth=0.8)
  ax.set_xlabel(f"attribution ({record['units']}, {record['method']})")
  item = record["item"] if len(record["item"]) <= 60 else record["item"][:57] + "..."
  fig.suptitle(f"user {record['user']}, item {item}\npredicted {record['prediction']:.2f}, true "
               f"{record['truth']:g}", fontsize=10)
  fig.tight_layout()
  path = pathlib.Path(path)
  fig.savefig(path)
  plt.close(fig)
  return path
