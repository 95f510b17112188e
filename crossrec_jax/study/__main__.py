"""`python -m crossrec_jax.study --config=STUDY.py:PRESET --workdir=DIR` (see study/runner.py)."""

from crossrec_jax.study import runner

if __name__ == "__main__":
  runner.cli()
