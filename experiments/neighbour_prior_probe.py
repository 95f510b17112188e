"""What a text-neighbour prior is worth in a plain bias model, before any training (valid only).

Run (about a minute on 2 cores once the item vectors are cached):
  .venv/bin/python experiments/neighbour_prior_probe.py

The demo's data (ML-1M's first 1,000 users at seed 0 -> ML-100K, seed 0 split, label fractions
1 / 0.1 / 0.01). Each column is the closed-form bias model (`objectives/bias_ridge.py`: reg_i 10,
reg_u 15) on the target's labelled training rows, its item biases shrunk towards a prior, scored by
RMSE on the target's *valid* rows:
  no_prior          prior 0: the bias baseline
  title_prior       the title_prior baseline (`eval/baselines.TitlePriorTransfer`: exact titles)
  learnt_bias       the hybrid's prior with neighbour_prior='learnt_bias' at its start: the 32
                    nearest source texts' ridge item biases (source training rows), softmax(20 cos)
  source_mean       neighbour_prior='source_mean': the neighbours' shrunk mean rating offsets
                    (`models/hybrid.source_item_prior`, every source rating, shrink 3)
  source_mean_no_users   the same without user biases (what the hybrid's user side must add)
Both neighbour priors are source-centred (+ source mean - target mean), as the title prior is.
Expected result: README, "Transfer study" (source_mean ahead of title_prior at 10% and 1%).
"""

from __future__ import annotations

import numpy as np


def main() -> None:
  from crossrec_jax.configs import hybrid_joint  # pylint: disable=g-import-not-at-top
  from crossrec_jax.data import prepare, sources, splits  # pylint: disable=g-import-not-at-top
  from crossrec_jax.data import schema  # pylint: disable=g-import-not-at-top
  from crossrec_jax.eval import baselines, run_baselines  # pylint: disable=g-import-not-at-top
  from crossrec_jax.models import hybrid  # pylint: disable=g-import-not-at-top
  from crossrec_jax.objectives import bias_ridge  # pylint: disable=g-import-not-at-top
  from crossrec_jax.tasks import hybrid as hybrid_task  # pylint: disable=g-import-not-at-top
  config = hybrid_joint.get_config("cpu")
  pair = sources.load_cached(config.data.source, None, None)
  src = prepare.subsample_users(pair.source, 1000, seed=0)
  tgt = prepare.subsample_users(pair.target, 0, seed=1)
  vectors = hybrid_task.item_text_vectors(config, schema.CrossDomainData(src, tgt))
  n_src = len(src.items)
  index, sims = (a[n_src:] for a in hybrid.text_neighbours(vectors, n_src, 32))
  weights = np.exp(20.0 * (sims - sims.max(1, keepdims=True)))
  weights /= weights.sum(1, keepdims=True)
  s, t = src.interactions, tgt.interactions
  train = splits.make_split(src, config.data.split, seed=0, label_fraction=1.0).train
  mu_train, _, ridge = bias_ridge.fit_biases(s.user[train], s.item[train], s.rating[train],
                                             s.num_users, n_src)
  mean_offset = hybrid.source_item_prior(s.item, s.rating, n_src, 3.0)
  title_means = run_baselines.source_item_means(src, tgt, True)
  columns = ("no_prior", "title_prior", "learnt_bias", "source_mean", "source_mean_no_users")
  print("| label fraction | " + " | ".join(columns) + " |")
  print("|---" * (len(columns) + 1) + "|")
  for fraction in (1.0, 0.1, 0.01):
    split = splits.make_split(tgt, config.data.split, seed=0, label_fraction=fraction)
    rows = split.train[split.train_labelled]
    u, i, r = t.user[rows], t.item[rows], t.rating[rows]
    v = split.valid
    mu_t = float(r.mean())

    def rmse(prior, users=True):
      mu, b_u, b_i = bias_ridge.fit_biases(u, i, r, t.num_users, len(tgt.items), prior=prior)
      pred = np.clip(mu + (b_u[t.user[v]] if users else 0.0) + b_i[t.item[v]], 1.0, 5.0)
      return float(np.sqrt(np.mean((pred - t.rating[v]) ** 2)))

    title = baselines.TitlePriorTransfer().fit(u, i, r, title_means, n_users=t.num_users)
    title_pred = np.clip(title.predict(t.user[v], t.item[v]), 1.0, 5.0)
    learnt = np.sum(weights * ridge[index], 1) + mu_train - mu_t
    mean = np.sum(weights * mean_offset[index], 1) + float(s.rating.mean()) - mu_t
    got = (rmse(None), float(np.sqrt(np.mean((title_pred - t.rating[v]) ** 2))), rmse(learnt),
           rmse(mean), rmse(mean, users=False))
    print(f"| {fraction:g} | " + " | ".join(f"{x:.4f}" for x in got) + " |", flush=True)


if __name__ == "__main__":
  main()
