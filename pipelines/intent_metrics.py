"""The metrics of an intent run (``metrics.json``), computed from its stage outputs.

The curves' data fraction with its paired bootstrap, each new intent's F1 at the target's
share of the data, and the quality of selection and of the candidates against the pool's
hidden labels; ``winnow eval-intent`` recomputes them from a finished run in seconds.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from winnow.pipelines.beam_io import read_jsonl_shards
from winnow.pipelines.config import IntentConfig
from winnow.pipelines.intent_candidates import CURVE_ORDERS, candidates, hidden_truth, pool_label
from winnow.pipelines.pool_scoring import RULE_EXCLUDED, norm_key
from winnow.pipelines.significance import (DATA_FRACTION_TARGET, F1_AT_TARGET, RESAMPLES,
                                           CurvePredictions, data_fraction_bootstrap,
                                           load_curve_predictions, new_intent_f1s,
                                           resample_weights)
from winnow.pipelines.stages import StageRunner, local_root

# the orders compared with relevance top-k's full-budget error (diversity: the target;
# random and the coverage peers: what it must beat)
COMPARED_ORDERS = ("diversity", "random", "k_center", "facility_location", "oracle")


def _added_for(curve: list[dict[str, float]], target: float) -> float | None:
    for point in curve:
        if point["new_intent_error"] <= target + 1e-9:
            return point["added"]
    return None


def intent_metrics(cfg: IntentConfig, st: StageRunner) -> dict[str, Any]:
    out = st.root
    m: dict[str, Any] = {}
    history = json.loads((out / "self_training" / "history.json").read_text())
    if "new_intent_error" in history[0]:
        seed_err, st_err = history[0]["new_intent_error"], history[-1]["new_intent_error"]
        m["seed_only.new_intent_error"] = seed_err
        m["seed_only.accuracy"] = history[0]["accuracy"]
        m["self_training.new_intent_error"] = st_err
        m["self_training.accuracy"] = history[-1]["accuracy"]
        m["self_training.relative_error_reduction"] = (seed_err - st_err) / seed_err if seed_err else 0.0
    curves_path = out / "curves" / "curves.json"
    if curves_path.exists():
        curves = json.loads(curves_path.read_text())
        rel = curves["relevance_topk"][-1]
        m["relevance_topk.added_for_target"] = rel["added"]
        m["relevance_topk.new_intent_error"] = rel["new_intent_error"]
        for name in COMPARED_ORDERS:
            added = _added_for(curves[name], rel["new_intent_error"])
            m[f"{name}.added_for_target"] = added
            m[f"{name}.data_fraction"] = added / rel["added"] if added and rel["added"] else None
        if rel["added"]:
            predictions = load_curve_predictions(out / "curves" / "predictions.npz")
            m.update(_data_fraction_bootstraps(cfg, predictions, curves))
            m.update(f1_at_target_fraction(predictions, curves))
    truth = hidden_truth(out)
    m.update(selection_quality(cfg, truth))
    m.update(candidate_quality(cfg, truth))
    para = st.records["paraphrase"]["stats"]
    m["paraphrase.unseen_intent_auc"] = para["unseen_intent_auc"]
    m["paraphrase.unseen_intent_accuracy"] = para["unseen_intent_accuracy"]
    ub = st.records["upper_bound"]["stats"]
    if "accuracy" in ub:
        m["upper_bound.accuracy"] = ub["accuracy"]
        m["upper_bound.new_intent_error"] = ub["new_intent_error"]
        m["upper_bound.slot_f1"] = ub["slot_f1"]
    m["corpus.slot_f1_seed_tagger"] = st.records["corpus"]["stats"]["slot_f1_seed_tagger"]
    m["pool.accounting"] = st.records["pool"]["stats"]
    return m


def _data_fraction_bootstraps(cfg: IntentConfig, predictions: CurvePredictions,
                               curves: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Paired bootstrap over the evaluation utterances of each order's data fraction."""
    gold, labels, preds = predictions
    weights = resample_weights(len(gold), RESAMPLES, cfg.seed)
    target, budget = preds["relevance_topk"][-1], curves["relevance_topk"][-1]["added"]
    return {f"{name}.data_fraction_bootstrap": data_fraction_bootstrap(
                gold, preds[name], [p["added"] for p in curves[name]], target, budget, labels,
                weights)
            for name in COMPARED_ORDERS}


def f1_at_target_fraction(predictions: CurvePredictions,
                           curves: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per new intent, each order's F1 at the last curve point within the target's share of
    relevance top-k's added data, next to the full-budget F1.

    ``diversity.data_fraction`` is one macro average; this says where the gap to the target
    lies: an intent whose candidates an order has barely begun at that point, or a few
    evaluation utterances of a small intent.
    """
    gold, labels, preds = predictions
    budget = curves["relevance_topk"][-1]["added"]
    within = [i for i, p in enumerate(curves["relevance_topk"])
              if p["added"] <= DATA_FRACTION_TARGET * budget + 1e-9]
    if not within:
        return {}
    point, whole = within[-1], np.ones((1, len(gold)))
    # the orders the run drew (a run made before the peers were added has fewer)
    f1 = {name: new_intent_f1s(gold, preds[name][point], labels, whole)[0]
          for name in CURVE_ORDERS if name in preds}
    f1["full_budget"] = new_intent_f1s(gold, preds["relevance_topk"][-1], labels, whole)[0]
    return {f"{F1_AT_TARGET}.added": curves["relevance_topk"][point]["added"],
            **{f"{F1_AT_TARGET}.{intent}": {name: round(float(v[k]), 4) for name, v in f1.items()}
               for k, intent in enumerate(labels)}}


def candidate_quality(cfg: IntentConfig, truth: dict[str, str]) -> dict[str, Any]:
    """What the candidates that the curves add really are, by their hidden labels.

    ``selection.precision`` judges everything relevance selection kept; self-training's
    agreement filter then drops most of the wrong ones.  This says how clean the data the
    curves (and the oracle) work with is, per intent: the same label, another source's
    label (e.g. SNIPS ``GetWeather``), or none (plain text).
    """
    per_intent: dict[str, dict[str, int]] = {}
    for intent, cs in candidates(local_root(cfg.output_dir), cfg.new_intents).items():
        labels = [pool_label(truth, c) for c in cs]
        per_intent[intent] = {"same_label": sum(lab == intent for lab in labels),
                              "other_label": sum(lab not in ("", intent) for lab in labels),
                              "unlabelled": labels.count("")}
    n = sum(sum(v.values()) for v in per_intent.values())
    same = sum(v["same_label"] for v in per_intent.values())
    return {"candidates.precision": same / n if n else 0.0, "candidates.labels": per_intent}


def selection_quality(cfg: IntentConfig, truth: dict[str, str]) -> dict[str, Any]:
    """Precision/recall of relevance selection against the hidden labels of the pool.

    Per intent too: one overall recall hides where the misses are. With the shipped MASSIVE
    config four intents keep most of their hidden utterances, while SNIPS weather requests
    (``GetWeather``, not counted as weather_query) take most of weather_query's top-k, which
    then keeps a sixth of MASSIVE's.
    """
    pool = local_root(cfg.output_dir) / "pool"
    rows = read_jsonl_shards(pool, "kept") + read_jsonl_shards(pool, "dropped")
    relevant: dict[str, set[str]] = defaultdict(set)  # intent -> texts of the pool
    found: dict[str, set[str]] = defaultdict(set)  # intent -> texts kept for that intent
    kept, right = Counter(), Counter()
    for r in rows:
        label, decision = pool_label(truth, r), r["_decision"]
        if label in cfg.new_intents and decision["rule"] != RULE_EXCLUDED:
            relevant[label].add(norm_key(r["text"]))
        if decision["kept"]:
            kept[decision["intent"]] += 1
            if label == decision["intent"]:
                right[label] += 1
                found[label].add(norm_key(r["text"]))
    all_relevant, all_found = set().union(*relevant.values()), set().union(*found.values())
    n_kept = sum(kept.values())
    return {"selection.precision": sum(right.values()) / n_kept if n_kept else 0.0,
            "selection.recall": len(all_found) / len(all_relevant) if all_relevant else 0.0,
            "selection.per_intent": {
                i: {"kept": kept[i], "relevant": len(relevant[i]),
                    "precision": round(right[i] / kept[i], 4) if kept[i] else 0.0,
                    "recall": round(len(found[i]) / len(relevant[i]), 4) if relevant[i] else 0.0}
                for i in cfg.new_intents}}
