"""The candidates that the curves add, the orders they add them in, and their hidden labels.

Shared by the intent workflow's stages (diversity, curves, corpus) and its metrics, so that
both read a run's candidates and judge them by one rule.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from winnow.pipelines.data_access import read_jsonl

# the orders that the diversity stage writes (``selected_orders.jsonl``): the paper's
# selector and its two coverage peers (``selectors/coverage.py``)
SELECTED_ORDERS = ("diversity", "k_center", "facility_location")
# the orders that need no selector, only the self-labelled candidates: their curves fit
# in a stage of their own (``reference_curves``), beside the paraphrase stage
REFERENCE_ORDERS = ("random", "relevance_topk", "oracle")
CURVE_ORDERS = ("random", "relevance_topk", *SELECTED_ORDERS, "oracle")


def curve_orders(cands: dict[str, list[dict[str, Any]]], selected: dict[str, dict[str, list[str]]],
                 hidden_labels: dict[str, str], seed: int
                 ) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per order and intent, the candidates in the order the curves add them.

    ``selected`` holds, per order of ``SELECTED_ORDERS`` and intent, candidate ids in the
    order that selector chose them.  ``random`` shuffles the relevance order (seeded);
    ``oracle`` is a reference, not a selector: it takes the same shuffle but puts first the
    candidates whose hidden pool label (``pool_label``: MASSIVE's own or the source's,
    unseen by every selector) is the intent they were selected for, so the curves show how
    close the data could come to its full-budget error if the labels of the pool were known.
    """
    rng = random.Random(seed)
    orders: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in CURVE_ORDERS}
    for intent, cs in cands.items():
        by_id = {c["id"]: c for c in cs}
        rel = sorted(cs, key=lambda c: (-c["_decision"]["score"], c["id"]))
        shuffled = rel[:]
        rng.shuffle(shuffled)
        orders["relevance_topk"][intent] = rel
        orders["random"][intent] = shuffled
        for name in SELECTED_ORDERS:
            orders[name][intent] = [by_id[i] for i in selected[name].get(intent, [])
                                    if i in by_id]
        orders["oracle"][intent] = sorted(shuffled,
                                          key=lambda c: hidden_labels.get(c["id"]) != intent)
    return orders


def curve_points(counts: list[int], points: list[int], budget_per_intent: int,
                 shares: list[float] = ()) -> list[int]:
    """The per-intent sizes at which the curves are measured, ending at the full budget.

    The full budget is what the diversity selector adds (its rounds x batch size per
    intent), or every candidate of the largest intent where there are fewer: each order
    then picks that many of an intent's candidates -- relevance top-k its highest scored,
    diversity its worst paraphrases, random a random draw.  Where an intent has more
    candidates than the budget, the orders end on different sets, so the curves compare
    selections, not only the order in which the same set is added.  ``shares`` add the
    points of ``share_points``.
    """
    full = min(max(counts, default=0), budget_per_intent)
    at_shares = share_points(counts, shares, budget_per_intent)
    return sorted({p for p in [*points, *at_shares] if 0 < p < full} | {full})


def share_points(counts: list[int], shares: list[float], budget_per_intent: int
                 ) -> dict[int, float]:
    """{per-intent size: share} for each share of the full budget: the largest size whose
    added utterances are at most that share of what the full budget adds.

    A data fraction is the first curve point that reaches the target over the full budget,
    so between two fixed points it reads as the later one (with 400 per intent, 76 per
    intent is 28-38% of the data from one draw to the next).  A point at the bar's own share
    answers "is the target reached with 25% of the data?" in every draw; sizes of 0 (a share
    too small for one utterance per intent) are left out.
    """
    added = lambda n: sum(min(c, n) for c in counts)  # noqa: E731
    full = added(min(max(counts, default=0), budget_per_intent))
    out: dict[int, float] = {}
    for share in sorted(shares):
        n = 0
        while added(n + 1) <= share * full + 1e-9 and n + 1 <= budget_per_intent:
            n += 1
        if n:
            out.setdefault(n, share)
    return out


def candidates(out: Path, new_intents: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Relevance-selected utterances self-labelled as the intent they were selected for."""
    labels = {r["id"]: r for r in read_jsonl(out / "self_training" / "self_labels.jsonl")}
    cands: dict[str, list[dict[str, Any]]] = {i: [] for i in new_intents}
    for r in read_jsonl(out / "pool" / "selected.jsonl"):
        target = r["_decision"]["intent"]
        lab = labels.get(r["id"])
        if lab and lab["intent"] == target:
            cands[target].append({**r, "confidence": lab["confidence"]})
    return cands


def hidden_truth(out: Path) -> dict[str, str]:
    """MASSIVE's intent for each of the new intents' train utterances hidden in the pool."""
    return {r["id"]: r["intent"] for r in read_jsonl(out / "prepare" / "pool_labels.jsonl")}


def pool_label(truth: dict[str, str], record: dict[str, Any]) -> str:
    """A pool record's true intent as far as it is known, for evaluation only.

    MASSIVE's own label for the hidden train utterances, else the label its source file
    carries (HWU64 names intents as MASSIVE does; SNIPS has names of its own, so its
    weather requests never count as weather_query), else '' (plain text, e.g. SLURP's).
    """
    return truth.get(record["id"]) or record.get("intent") or ""
