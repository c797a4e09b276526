"""Peers of the diversity selector: the coverage orders a user would try instead.

Both read the same vectors as the diversity selector (the paraphrase encoder's embedding
plus the slot-type block), so the curves compare selection rules, not representations.

* k-center greedy (the core-set rule, Sener & Savarese 2018): the candidate farthest from
  its nearest chosen point (the intent's seeds to start with) comes next, so the largest
  distance from any candidate to the chosen set shrinks as fast as greedy can make it.
* facility location (submodular, apricot's ``FacilityLocationSelection``): the candidate
  that most raises sum_i max_{j chosen} sim(i, j) over all candidates comes next, so the
  chosen set represents the candidates' dense regions before their outliers.
"""
from __future__ import annotations

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def k_center_order(cand: np.ndarray, annotated: np.ndarray, n: int) -> tuple[list[int], list[float]]:
    """The first ``n`` candidates in k-center-greedy order, and after each pick the largest
    cosine distance from a candidate to its nearest chosen point (annotated or picked).
    Ties break on the lower index."""
    c = _unit(cand)
    nearest = (np.full(len(c), np.inf) if len(annotated) == 0
               else (1.0 - c @ _unit(annotated).T).min(axis=1))
    alive = np.ones(len(c), dtype=bool)
    order: list[int] = []
    radius: list[float] = []
    for _ in range(min(n, len(c))):
        i = int(np.argmax(np.where(alive, nearest, -np.inf)))
        order.append(i)
        alive[i] = False
        nearest = np.minimum(nearest, 1.0 - c @ c[i])
        radius.append(float(nearest[alive].max()) if alive.any() else 0.0)
    return order, radius


def facility_location_order(cand: np.ndarray, n: int) -> tuple[list[int], list[float]]:
    """The first ``n`` candidates in apricot's greedy facility-location order (cosine
    similarity; lazy greedy, which picks what naive greedy picks), with each pick's gain."""
    from apricot import FacilityLocationSelection

    n = min(n, len(cand))
    if n == 0:
        return [], []
    sel = FacilityLocationSelection(n, metric="cosine", optimizer="lazy", verbose=False)
    sel.fit(np.asarray(cand, dtype=np.float64))
    return [int(i) for i in sel.ranking], [float(g) for g in sel.gains]
