"""The paired bootstrap of the data fraction, and its place in an intent run's metrics."""
import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from winnow.pipelines.intent_metrics import f1_at_target_fraction
from winnow.pipelines.significance import (DATA_FRACTION_TARGET, data_fraction_bootstrap,
                                           load_curve_predictions, new_intent_errors,
                                           resample_weights, save_curve_predictions)

LABELS = ["a", "b", "c"]
SHARE = f"share_at_most_{DATA_FRACTION_TARGET}"


def _labels(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(np.array(["a", "b", "c", "other1", "other2"]), size=n)


def _corrupt(rng: np.random.Generator, gold: np.ndarray, idx: np.ndarray) -> np.ndarray:
    pred = gold.copy()
    pred[idx] = np.where(gold[idx] == "other1", "a", "other1")
    return pred


def test_errors_equal_sklearn_macro_f1_including_an_absent_label():
    rng = np.random.default_rng(0)
    gold, pred = _labels(rng, 300), _labels(rng, 300)
    labels = LABELS + ["never_seen"]  # neither predicted nor present: F1 0, as zero_division=0
    weights = resample_weights(len(gold), 5, seed=1)
    got = new_intent_errors(gold, pred, labels, weights)
    for w, err in zip(weights, got):
        idx = np.repeat(np.arange(len(gold)), w.astype(int))
        want = 1 - f1_score(gold[idx], pred[idx], labels=labels, average="macro", zero_division=0)
        assert err == pytest.approx(want, abs=1e-12)


def test_resamples_are_seeded_draws_of_n():
    a, b = resample_weights(50, 20, seed=3), resample_weights(50, 20, seed=3)
    assert np.array_equal(a, b) and (a.sum(axis=1) == 50).all()
    assert not np.array_equal(a, resample_weights(50, 20, seed=4))


def test_a_clearly_better_early_point_always_reaches_the_target():
    rng = np.random.default_rng(0)
    gold = _labels(rng, 400)
    target = _corrupt(rng, gold, rng.choice(400, 120, replace=False))
    out = data_fraction_bootstrap(gold, [gold, target], [2, 10], target, 10, LABELS,
                                  resample_weights(400, 200, seed=0))
    assert out["median"] == out["ci95_low"] == out["ci95_high"] == 0.2 and out[SHARE] == 1.0


def test_a_clearly_worse_early_point_never_does():
    rng = np.random.default_rng(0)
    gold = _labels(rng, 400)
    target = _corrupt(rng, gold, rng.choice(400, 40, replace=False))
    worse = _corrupt(rng, gold, rng.choice(400, 200, replace=False))
    out = data_fraction_bootstrap(gold, [worse, target], [2, 10], target, 10, LABELS,
                                  resample_weights(400, 200, seed=0))
    assert out["median"] == out["ci95_low"] == 1.0 and out[SHARE] == 0.0


def test_equally_good_but_different_errors_are_a_coin_flip():
    rng = np.random.default_rng(0)
    gold = _labels(rng, 400)
    wrong = rng.permutation(400)
    target, early = _corrupt(rng, gold, wrong[:60]), _corrupt(rng, gold, wrong[60:120])
    out = data_fraction_bootstrap(gold, [early, target], [4, 10], target, 10, LABELS,
                                  resample_weights(400, 400, seed=0))
    assert 0.1 < out[SHARE] < 0.9
    assert out["ci95_low"] == 0.4 and out["ci95_high"] == 1.0


def test_intent_run_reports_the_bootstrap_next_to_the_point_estimate(reference_run):
    metrics = json.loads((reference_run / "metrics.json").read_text())
    for key in ("seed_only.new_intent_error", "self_training.new_intent_error",
                "self_training.relative_error_reduction", "diversity.added_for_target",
                "relevance_topk.added_for_target", "diversity.data_fraction",
                "selection.precision", "selection.recall", "paraphrase.unseen_intent_auc",
                "upper_bound.accuracy"):
        assert key in metrics
    curves = json.loads((reference_run / "curves" / "curves.json").read_text())
    with np.load(reference_run / "curves" / "predictions.npz") as z:
        preds = {k: z[k] for k in z.files}
    gold = preds["gold"]
    rel = curves["relevance_topk"]
    for i, point in enumerate(curves["diversity"]):  # the saved predictions are the curve's
        err = new_intent_errors(gold, preds[f"diversity.{i}"], ["alarm_set", "play_podcasts",
                                                                "weather_query"],
                                np.ones((1, len(gold))))[0]
        assert err == pytest.approx(point["new_intent_error"], abs=1e-12)
    # on the evaluation file itself (one "resample" of weight 1 each) the bootstrap gives
    # exactly the point estimate
    whole = data_fraction_bootstrap(
        gold, [preds[f"diversity.{i}"] for i in range(len(curves["diversity"]))],
        [p["added"] for p in curves["diversity"]], preds[f"relevance_topk.{len(rel) - 1}"],
        rel[-1]["added"], ["alarm_set", "play_podcasts", "weather_query"], np.ones((1, len(gold))))
    assert whole["median"] == pytest.approx(metrics["diversity.data_fraction"], abs=1e-4)
    assert "oracle.added_for_target" in metrics
    for name in ("diversity", "random", "oracle"):
        boot = metrics[f"{name}.data_fraction_bootstrap"]
        assert 0 < boot["ci95_low"] <= boot["median"] <= boot["ci95_high"] <= 1
        assert 0 <= boot[SHARE] <= 1


def test_intent_run_reports_each_new_intents_f1_at_the_target_share(reference_run):
    metrics = json.loads((reference_run / "metrics.json").read_text())
    curves = json.loads((reference_run / "curves" / "curves.json").read_text())
    with np.load(reference_run / "curves" / "predictions.npz") as z:
        preds = {k: z[k] for k in z.files}
    added = [p["added"] for p in curves["relevance_topk"]]
    point = max(i for i, n in enumerate(added) if n <= DATA_FRACTION_TARGET * added[-1])
    assert point < len(added) - 1  # a point short of the full budget, not the budget itself
    assert metrics["f1_at_40pct.added"] == added[point]
    for intent in ("alarm_set", "play_podcasts", "weather_query"):
        got = metrics[f"f1_at_40pct.{intent}"]
        for name in ("random", "relevance_topk", "diversity", "oracle"):
            want = f1_score(preds["gold"], preds[f"{name}.{point}"], labels=[intent],
                            average=None, zero_division=0)[0]
            assert got[name] == pytest.approx(want, abs=1e-4)
        full = f1_score(preds["gold"], preds[f"relevance_topk.{len(added) - 1}"], labels=[intent],
                        average=None, zero_division=0)[0]
        assert got["full_budget"] == pytest.approx(full, abs=1e-4)


def test_f1_at_the_target_share_reads_the_last_point_within_it(tmp_path):
    rng = np.random.default_rng(0)
    gold = _labels(rng, 300)
    added = [10, 30, 40, 41, 100]  # 40 of 100 is exactly the 0.4 share: the point to read
    preds = {name: [_corrupt(rng, gold, rng.choice(300, 20 * (5 - i), replace=False))
                    for i in range(len(added))]
             for name in ("random", "relevance_topk", "diversity", "oracle")}
    save_curve_predictions(tmp_path / "predictions.npz", gold.tolist(), LABELS,
                           {k: [p.tolist() for p in v] for k, v in preds.items()})
    curves = {name: [{"added": n} for n in added] for name in preds}
    predictions = load_curve_predictions(tmp_path / "predictions.npz")
    got = f1_at_target_fraction(predictions, curves)
    assert got["f1_at_40pct.added"] == 40
    for k, intent in enumerate(LABELS):
        for name in preds:
            want = f1_score(gold, preds[name][2], labels=LABELS, average=None, zero_division=0)[k]
            assert got[f"f1_at_40pct.{intent}"][name] == pytest.approx(want, abs=1e-4)
        full = f1_score(gold, preds["relevance_topk"][-1], labels=LABELS, average=None,
                        zero_division=0)[k]
        assert got[f"f1_at_40pct.{intent}"]["full_budget"] == pytest.approx(full, abs=1e-4)
    assert f1_at_target_fraction(predictions, {n: [{"added": 50}, {"added": 100}]
                                               for n in preds}) == {}


def test_intent_run_measures_every_order_at_the_configured_shares_of_the_budget(reference_run):
    curves = json.loads((reference_run / "curves" / "curves.json").read_text())
    for name, points in curves.items():
        full = points[-1]["added"]
        at_shares = {p["share"]: p["added"] for p in points if "share" in p}
        assert sorted(at_shares) == [0.25, 0.4], name  # curve_shares' default
        for share, added in at_shares.items():
            assert 0 < added <= share * full
    # the orders are measured at the same sizes, so a data fraction compares like with like
    assert len({tuple(p["per_intent"] for p in points) for points in curves.values()}) == 1
