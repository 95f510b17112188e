"""The transfer study on the embedded default pair, MovieLens-1M (source) -> MovieLens-100K (target).

Does language-model transfer from the source domain improve the target's recommendations, at
which label fractions, against which baselines? Every method of `experiments/` (target_only,
source_only, finetune, dann, joint, joint_dann) x target label fractions x seeds, run by the
trainer, scored by `eval/evaluate.py`, next to global mean, bias, MF, the title-prior transfer
baseline and popularity, and the libraries' SVD / KNNBaseline (surprise), ALS / BPR / item-KNN
(implicit) (see `study/grid.py` for which cells run and why).

Run:
  python -m crossrec_jax.eval.study --config=experiments/transfer_study.py:tiny --workdir=/tmp/study
  python -m crossrec_jax.demo      # = the cpu preset in runs/demo, printing results.md
  python -m crossrec_jax.eval.study --config=experiments/transfer_study.py:gpu --workdir=runs/study_gpu

Presets:
  tiny: the end-to-end test (tests/test_study.py): random 2-layer BERT (hidden 64), target_only
    and dann, fractions {1, 0}, one seed, 10 steps. A smoke test, not a measurement.
  cpu: what `make demo` runs; sized to finish within 15 minutes on a 2-core CPU, so truncated:
    MiniLM cut to its first layer, 40-token examples (2 history items), 300 source users (4,000
    source training examples), every target user and row, PHASE_STEPS_CPU steps of batch 16 per
    phase, label fractions {1, 0.1, 0} (1% left out for time), 3 seeds, evaluation on 298 test
    ratings (a cap of 300, drawn as whole users) and 20 ranked users x 100 candidates. At this
    budget the text models do not learn beyond the global mean (the `make demo` table): it shows
    the machinery, not transfer.
  gpu: the full-size study: 6-layer MiniLM, 128 tokens, 5 history items, every user and example,
    the runs' own gpu step counts, full evaluation (valid and test, all users, full ranking for
    200 users).
Expected result: the tables in README (cpu) and the issue notes; rerun to reproduce.
"""

import ml_collections

PHASE_STEPS_CPU = 60


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
  if preset not in ("tiny", "cpu", "gpu"):
    raise ValueError(f"unknown preset {preset!r}; choose tiny, cpu or gpu")
  c = ml_collections.ConfigDict()
  c.name = f"ML-1M -> ML-100K ({preset} preset)"
  c.architecture = "cross_encoder"  # the task of every run (study/grid.py: or "bi_encoder")
  c.preset = preset  # the run preset of every experiment file
  c.source = "movielens_1m_to_100k"
  c.data_dir = ""
  c.experiments_dir = ""  # '' = the repository's experiments/
  c.methods = ("target_only", "source_only", "finetune", "dann", "joint", "joint_dann")
  c.label_free = ("source_only", "dann")
  # surprise_* / als / bpr / item_knn: the library baselines of the `baselines` extra (pinned).
  c.baselines = ("global_mean", "bias", "mf", "surprise_svd", "surprise_knn", "title_prior",
                 "popularity", "als", "bpr", "item_knn")
  c.label_fractions = (1.0, 0.1, 0.01, 0.0)
  c.seeds = (0, 1, 2)
  c.phase_steps = 0  # > 0: every phase of every method runs this many steps
  c.title_with_year = True  # ML-1M and ML-100K titles carry the year: match on both
  c.keep_checkpoints = False  # delete a run's checkpoints once it is scored (disk)
  c.table_metrics = ("test/rmse", "test/mae", "test/auc", "test/HR@10", "test/NDCG@10")
  c.eval = ml_collections.ConfigDict(dict(
      which=("test",), threshold=None, ks=(5, 10, 20), num_negatives=99, ranking_users=0,
      full_ranking_users=0, rating_rows=0, cold_start=True, seed=0))
  c.pca = ml_collections.ConfigDict(dict(enabled=True, fraction=0.0, examples=400, seed=0,
                                         methods=("source_only", "dann")))
  # Overrides of every run config (nested like config_base.base_config).
  c.run = ml_collections.ConfigDict()

  if preset == "tiny":
    c.methods = ("target_only", "dann")
    c.label_fractions = (1.0, 0.0)
    c.seeds = (0,)
    c.baselines = ("bias", "title_prior", "popularity")
    c.phase_steps = 10
    c.eval.update(dict(rating_rows=60, ranking_users=8, num_negatives=19, ks=(5, 10)))
    c.pca.update(dict(examples=48, methods=("dann",)))
    c.run = ml_collections.ConfigDict(dict(
        data=dict(users=dict(source=30, target=30),
                  max_examples=dict(source_train=128, target_train=128, target_valid=32,
                                    target_test=32),
                  eval_batch_size=64),
        # eval_every: target-valid points inside each phase, the learning curves' lines.
        train=dict(log_every=5, eval_every=5, final_eval=())))
  elif preset == "cpu":
    # Sized for `make demo`: 15 minutes on a 2-core CPU (see the module docstring).
    c.label_fractions = (1.0, 0.1, 0.0)
    c.phase_steps = PHASE_STEPS_CPU
    c.eval.update(dict(rating_rows=300, ranking_users=20, num_negatives=99))
    c.pca.examples = 200
    c.run = ml_collections.ConfigDict(dict(
        data=dict(max_len=40, history_len=2, buckets=(40,), batch_size=16, eval_batch_size=128,
                  users=dict(source=300, target=0),
                  max_examples=dict(source_train=4000, target_train=0, target_valid=128,
                                    target_test=128)),
        model=dict(encoder=dict(num_layers=1)),
        optimizer=dict(encoder=dict(lr=1e-4, warmup_steps=10),
                       rating_head=dict(warmup_steps=10), discriminator=dict(warmup_steps=10)),
        train=dict(log_every=10, eval_every=PHASE_STEPS_CPU // 3, final_eval=())))
  else:
    c.eval.update(dict(which=("valid", "test"), full_ranking_users=200))
    c.pca.examples = 2000
    c.run = ml_collections.ConfigDict(dict(train=dict(final_eval=())))
  return c
