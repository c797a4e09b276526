"""How much a pool utterance looks like the annotated data: a domain classifier.

Why: the diversity selector's "worst paraphrase first" favours what is phrased unlike
the annotated set, and in a pool gathered from other corpora much of that is another
corpus's register, not a new way the assistant's users ask.  On MASSIVE, SNIPS's long
weather requests are correct weather_query candidates, yet MASSIVE's evaluation
utterances are short ones; the oracle that adds MASSIVE's own utterances first reaches
the full-budget error with 15-48% of the data (five dev draws).  A logistic regression
over sentence embeddings, annotated data (positive) against the relevance-selected pool
(negative), gives each candidate the probability that it comes from the annotated data's
distribution (cf. Moore & Lewis 2010), which the diversity selector multiplies into
its novelty.  It needs no labels beyond what every run has.
"""
from __future__ import annotations

import numpy as np

DEFAULT_C = 1.0
FOLDS = 2  # the pool is scored cross-fitted: by a model that never saw the row


def in_domain_probability(annotated: np.ndarray, pool: np.ndarray, seed: int,
                          c: float = DEFAULT_C, folds: int = FOLDS) -> np.ndarray:
    """P(annotated | embedding) for each pool row, cross-fitted over ``folds`` folds.

    Row i of the pool falls in fold i mod ``folds``; each fold is scored by a model
    trained on the annotated rows against the pool's other folds, so a candidate's own
    label (negative) never decides its score.  Classes are weighted to balance, so 0.5
    is the classifier's own boundary whatever the two sets' sizes.
    """
    from sklearn.linear_model import LogisticRegression

    if len(annotated) == 0 or len(pool) < folds:
        raise ValueError(f"the domain classifier needs annotated utterances and at least "
                         f"{folds} pool utterances (got {len(annotated)} and {len(pool)})")
    fold = np.arange(len(pool)) % folds
    out = np.empty(len(pool), dtype=np.float64)
    for f in range(folds):
        train = pool[fold != f]
        x = np.vstack([annotated, train])
        y = np.r_[np.ones(len(annotated)), np.zeros(len(train))]
        lr = LogisticRegression(C=c, max_iter=500, class_weight="balanced", random_state=seed)
        out[fold == f] = lr.fit(x, y).predict_proba(pool[fold == f])[:, 1]
    return out
