"""Pooled features of held-out source and target examples: the PCA panels and proxy A-distance.

For the untrained model and each finished run in `study.pca.methods` at one cell (their
checkpoints are kept for this): how far apart the encoder puts the two domains.
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable

import ml_collections

from crossrec_jax.data import schema
from crossrec_jax.eval import evaluate
from crossrec_jax.study import cell as cell_lib
from crossrec_jax.study import finished
from crossrec_jax.study import grid


def feature_panels(study: ml_collections.ConfigDict, workdir: pathlib.Path,
                   cell: cell_lib.Cell, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Pooled features of held-out source and target examples for the untrained model and each
  finished run in `study.pca.methods` (at `cell`), with their discriminator accuracy / PAD."""
  from crossrec_jax.data import examples as examples_lib  # pylint: disable=g-import-not-at-top
  from crossrec_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from crossrec_jax.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
  n = int(study.pca.examples)
  pair = schema.CrossDomainData(cell.source, cell.target)
  kw = cell.example_kw()
  sets = []
  for domain_id, split, which in ((0, cell.source_split, "valid"), (1, cell.split, "test")):
    ex = examples_lib.build_examples(pair, split, domain_id=domain_id, which=which, **kw)
    sets.append(prepare_lib.subsample_examples(ex, n, seed=int(study.pca.seed) + domain_id))
  batch = cell.batch_config()
  models = {"pretrained (untrained heads)": finished.initial_model(cell.config, cell.prepared)}
  for method in study.pca.methods:
    run_dir = workdir / "runs" / method / grid.tag(cell.fraction, cell.seed)
    if not (run_dir / "checkpoints").exists():
      log(f"  pca: no checkpoint for {method} at {grid.tag(cell.fraction, cell.seed)} "
          "(set study.keep_checkpoints or study.pca.methods); panel left out")
      continue
    config = grid.run_config(study, method, cell.fraction, cell.seed, workdir)
    models[method] = finished.restore_final(config, run_dir, data=cell.prepared)
  panels = {}
  for name, (eval_step, params) in models.items():
    fn = evaluate.score_fn_from_eval_step(eval_step, params, key="features")
    src, tgt = (evaluate.collect(fn, pipeline.eval_batches(ex, batch), len(ex)) for ex in sets)
    panels[name] = (src, tgt, evaluate.proxy_a_distance(src, tgt, seed=int(study.pca.seed)))
  return panels

