"""Explanations: which history items, profile facts and words drove a prediction.

    from crossrec_jax import explain
    ex = explain.CrossEncoderExplainer(model, keep_ids=(cls_id, sep_id), baseline_id=pad_id)
    got = ex.explain(batch, method='ig')    # or 'loo'; batch from explain.collate_tokens

  * `gradients`: integrated gradients over the input word embeddings (cross-encoder), jitted and
    batched, with the completeness check (`gap`, `complete`) per example;
  * `units`: token attributions summed per history entry, profile facts, candidate, template;
  * `removal`: leave-one-out and deletion for any model (a score function over a batch that
    `edits.drop_entries` can edit: token rows or history arrays);
  * `bi_encoder`: each history item's contribution to a bi-encoder's user vector and score;
  * `run` / `render` / `__main__`: a finished run's examples explained into HTML and a PNG
    (`python -m crossrec_jax.explain --workdir=RUN --user=ID --item=ID`).
"""

from crossrec_jax.explain.cross_encoder import METHODS, CrossEncoderExplainer
from crossrec_jax.explain.edits import drop_entries, entry_counts
from crossrec_jax.explain.gradients import IntegratedGradients, TOLERANCE
from crossrec_jax.explain.removal import leave_one_out, score_without
from crossrec_jax.explain.segments import example_segments
from crossrec_jax.explain.units import collate_tokens, unit_sums

__all__ = ["METHODS", "CrossEncoderExplainer", "IntegratedGradients", "TOLERANCE",
           "leave_one_out", "score_without", "drop_entries", "entry_counts",
           "example_segments", "collate_tokens", "unit_sums"]
