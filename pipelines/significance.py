"""How much of a curve result is the evaluation file's luck: a paired bootstrap.

``diversity.data_fraction`` compares one curve point with one end point, and on a
development file with a few dozen utterances per new intent one utterance moves
macro-F1 by about 0.002.  Resampling the evaluation utterances with replacement
(the same resample for every curve point, so the comparison stays paired) and
recomputing the data fraction on each resample says how often an order reaches the
full-budget error with a given share of the data -- the number a user needs before
reading 0.38 vs 0.80 as a difference between methods.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

RESAMPLES = 1000
DATA_FRACTION_TARGET = 0.4  # the project's bar: the full-budget error with <= 40% of the data
# metrics key prefix: each new intent's F1 per order at that share of the budget
F1_AT_TARGET = f"f1_at_{round(DATA_FRACTION_TARGET * 100)}pct"


# gold labels, the new intents, and per order the predictions at each curve point
CurvePredictions = tuple[np.ndarray, list[str], dict[str, list[np.ndarray]]]


def save_curve_predictions(path: Path, gold: list[str], labels: list[str],
                           curves: dict[str, list[list[str]]]) -> None:
    """Each curve model's prediction per evaluation utterance (``<order>.<point index>``)."""
    arrays = {"gold": gold, "new_intents": labels,
              **{f"{name}.{i}": pred for name, preds in curves.items()
                 for i, pred in enumerate(preds)}}
    np.savez_compressed(path, **{k: np.array(v, dtype=str) for k, v in arrays.items()})


def load_curve_predictions(path: Path) -> CurvePredictions:
    """``save_curve_predictions``' file back: gold, the new intents, predictions per order."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    gold, labels = arrays.pop("gold"), arrays.pop("new_intents").tolist()
    curves: dict[str, list[np.ndarray]] = {}
    for key in sorted(arrays, key=lambda k: (k.rsplit(".", 1)[0], int(k.rsplit(".", 1)[1]))):
        curves.setdefault(key.rsplit(".", 1)[0], []).append(arrays[key])
    return gold, labels, curves


def _f1_counts(gold: np.ndarray, pred: np.ndarray, labels: list[str]) -> np.ndarray:
    """Per utterance and label: (true positive, false positive, false negative) indicators."""
    out = np.zeros((len(gold), len(labels), 3), dtype=np.float64)
    for k, lab in enumerate(labels):
        g, p = gold == lab, pred == lab
        out[:, k, 0] = g & p
        out[:, k, 1] = ~g & p
        out[:, k, 2] = g & ~p
    return out


def new_intent_f1s(gold: np.ndarray, pred: np.ndarray, labels: list[str],
                   weights: np.ndarray) -> np.ndarray:
    """F1 of each of ``labels`` (columns) for each row of ``weights`` (utterance counts).

    F1 = 2tp / (2tp + fp + fn), 0 where a label is neither predicted nor present, as
    scikit-learn's ``f1_score(..., zero_division=0)``.
    """
    counts = np.einsum("bn,nkc->bkc", weights, _f1_counts(gold, pred, labels))
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def new_intent_errors(gold: np.ndarray, pred: np.ndarray, labels: list[str],
                      weights: np.ndarray) -> np.ndarray:
    """1 - macro-F1 over ``labels`` for each row of ``weights`` (utterance counts)."""
    return 1.0 - new_intent_f1s(gold, pred, labels, weights).mean(axis=1)


def resample_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """How often each of ``n`` utterances is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    return np.stack([np.bincount(row, minlength=n) for row in idx]).astype(np.float64)


def data_fraction_bootstrap(gold: np.ndarray, curve: list[np.ndarray], added: list[int],
                            target_pred: np.ndarray, budget: int, labels: list[str],
                            weights: np.ndarray) -> dict[str, float]:
    """Distribution of (first curve point whose error <= the target's) / budget.

    ``curve`` holds one order's predictions at each point (``added`` utterances);
    ``target_pred`` the predictions of the full-budget model whose error is the target.
    A resample where no point reaches the target counts as needing the whole budget.
    """
    target = new_intent_errors(gold, target_pred, labels, weights)
    fraction = np.ones(len(weights))
    reached = np.zeros(len(weights), dtype=bool)
    for pred, n in zip(curve, added):
        hit = ~reached & (new_intent_errors(gold, pred, labels, weights) <= target + 1e-9)
        fraction[hit] = n / budget
        reached |= hit
    lo, med, hi = np.percentile(fraction, [2.5, 50, 97.5])
    return {"median": round(float(med), 4), "ci95_low": round(float(lo), 4),
            "ci95_high": round(float(hi), 4),
            f"share_at_most_{DATA_FRACTION_TARGET}":
                round(float(np.mean(fraction <= DATA_FRACTION_TARGET + 1e-9)), 4)}
