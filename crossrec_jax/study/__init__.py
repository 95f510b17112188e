"""Studies: a method x label fraction x seed grid of runs of any task, scored, tabled and plotted.

    python -m crossrec_jax.study --config=experiments/transfer_study.py:cpu --workdir=runs/study

  grid        the study config -> the run configs and the cells that run (label rules)
  cell        what the runs of one (fraction, seed) share, per architecture: data, protocol, scoring
  finished    what a finished run gives back: its checkpoint restored, its final metrics
  runner      trains / resumes every run, fits the baselines, resumable on disk
  report      results.csv, tables (mean ± std), verdict lines, the header, plots
  features    pooled features of both domains (PCA panels, proxy A-distance)

`crossrec_jax.eval.study` is the same API under its historical name.
"""
