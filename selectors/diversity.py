"""Diversity selection (Cho et al. 2019, step 4): add the *worst* paraphrases first.

Each round takes the ``batch_size`` candidates whose best paraphrase probability
against the current annotated set is lowest -- they say something the set does not
-- adds them to the set, and repeats against the grown set.  The running maximum
logit per candidate is updated only against the newly added batch, so a round costs
O(candidates x batch) after one O(candidates x annotated) pass (chunked, bounded
memory).  Optional per-candidate weights (e.g. the in-domain probability,
``selectors/in_domain.py``) multiply each candidate's novelty, 1 - its best paraphrase
probability, so that what is new *and* in the annotated data's register comes first.

``coverage_order`` is the same step with a different worth per candidate: how much of
the candidate set it would paraphrase that the grown set does not yet (facility location
over the detector's probabilities), so that what is new and typical comes before outliers.
"""
from __future__ import annotations

import numpy as np

from winnow.selectors.paraphrase import ParaphraseDetector

CHUNK_ROWS = 4096  # candidates per block of the initial all-pairs pass


def max_logits(det: ParaphraseDetector, cand: np.ndarray, ref: np.ndarray) -> np.ndarray:
    out = np.full(len(cand), -np.inf, dtype=np.float32)
    if len(ref) == 0:
        return out
    for i in range(0, len(cand), CHUNK_ROWS):
        out[i:i + CHUNK_ROWS] = det.logits(cand[i:i + CHUNK_ROWS], ref).max(axis=1)
    return out


def diversity_order(det: ParaphraseDetector, cand: np.ndarray, annotated: np.ndarray,
                    batch_size: int, rounds: int | None = None,
                    tiers: np.ndarray | None = None, weights: np.ndarray | None = None,
                    novelty: bool = True) -> list[tuple[int, int, float]]:
    """Candidate indices in selection order: (index, round, max paraphrase probability).

    Each round takes the candidates of highest novelty x weight, novelty being 1 - the
    best paraphrase probability against the grown set; without ``weights`` that is the
    plain order of the method, the lowest best paraphrase probability first.  With
    ``novelty`` false the weight alone ranks (``diversity.objective: in_domain``), and each
    pick's best paraphrase probability is still recorded, so the orders compare.

    ``tiers`` (optional, one small integer per candidate) fills each round from the
    lowest tier that still has candidates first -- e.g. tier 0 for confidently
    self-labelled ones, so that "says something new" does not favour what is merely
    mislabelled.
    Ties break on the lower index, so the order is deterministic.
    """
    best = max_logits(det, cand, annotated)
    alive = np.ones(len(cand), dtype=bool)
    tier = np.zeros(len(cand), dtype=np.int64) if tiers is None else np.asarray(tiers)
    with np.errstate(divide="ignore"):  # a weight of 0 puts the candidate last
        log_w = (np.zeros(len(cand)) if weights is None
                 else np.log(np.asarray(weights, dtype=np.float64)))
    order: list[tuple[int, int, float]] = []
    r = 0
    while alive.any() and (rounds is None or r < rounds):
        idx = np.flatnonzero(alive)
        # log(novelty x weight), novelty = 1 - sigmoid(best logit) = exp(-softplus(best))
        score = log_w[idx] - (np.logaddexp(0.0, best[idx].astype(np.float64)) if novelty else 0.0)
        take = idx[np.lexsort((idx, -score, tier[idx]))[:batch_size]]
        for i in take:
            z = float(best[i])
            order.append((int(i), r, 1.0 / (1.0 + np.exp(-z)) if np.isfinite(z) else 0.0))
        alive[take] = False
        rest = np.flatnonzero(alive)
        if len(rest):
            best[rest] = np.maximum(best[rest], max_logits(det, cand[rest], cand[take]))
        r += 1
    return order


def confidence_tiers(confidence: list[float], confident_fraction: float) -> np.ndarray:
    """Tier 0 for the ``confident_fraction`` most confident candidates, 1 for the rest."""
    conf = np.asarray(confidence, dtype=np.float64)
    n_first = int(np.ceil(confident_fraction * len(conf)))
    tiers = np.ones(len(conf), dtype=np.int64)
    tiers[np.lexsort((np.arange(len(conf)), -conf))[:n_first]] = 0
    return tiers


def coverage_order(det: ParaphraseDetector, cand: np.ndarray, annotated: np.ndarray,
                   batch_size: int, rounds: int | None = None,
                   tiers: np.ndarray | None = None, weights: np.ndarray | None = None
                   ) -> list[tuple[int, int, float]]:
    """The paraphrase-coverage objective: like ``diversity_order``, but a candidate's worth
    is how much of the *whole candidate set* it would paraphrase that the grown set does
    not yet, not only its own novelty.

    With P(i, c) the detector's paraphrase probability (P(c, c) = 1) and cover(i) the best
    P(i, a) over the grown set, the next pick maximises
    sum_i w_i * max(0, P(i, c) - cover(i)): facility location (greedy, so within 1 - 1/e of
    the best set of its size) with the paraphrase detector as the similarity and the
    annotated utterances as facilities already open.  The term i = c is the paper's
    novelty, 1 - the candidate's best paraphrase probability; the other terms prefer a
    "bad paraphrase" of the set that many other candidates paraphrase, so an outlier comes
    after what is both new and typical.  ``weights`` (e.g. the in-domain probability) weigh
    the candidates to be covered; ``tiers`` as in ``diversity_order``.

    Cost: one (candidates x candidates) matrix, O(candidates^2) per pick: it is meant for
    the per-intent candidate sets of relevance selection (``relevance.top_k``), not a pool.
    """
    n = len(cand)
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    p = np.empty((n, n), dtype=np.float32)
    for i in range(0, n, CHUNK_ROWS):
        p[i:i + CHUNK_ROWS] = sig(det.logits(cand[i:i + CHUNK_ROWS], cand))
    np.fill_diagonal(p, 1.0)
    best = max_logits(det, cand, annotated)
    cover = np.where(np.isfinite(best), sig(best.astype(np.float64)), 0.0).astype(np.float32)
    w = (np.ones(n, dtype=np.float32) if weights is None
         else np.asarray(weights, dtype=np.float32))
    tier = np.zeros(n, dtype=np.int64) if tiers is None else np.asarray(tiers)
    alive = np.ones(n, dtype=bool)
    limit = n if rounds is None else min(n, rounds * batch_size)
    order: list[tuple[int, int, float]] = []
    while len(order) < limit:
        gain = w @ np.maximum(p - cover[:, None], 0.0)
        first = tier[alive].min()
        pick = np.where(alive & (tier == first), gain, -np.inf)
        i = int(np.argmax(pick))  # the lowest index among equal gains
        order.append((i, len(order) // batch_size, float(cover[i])))
        alive[i] = False
        cover = np.maximum(cover, p[:, i])
    return order
