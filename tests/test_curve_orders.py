"""The orders in which the error-vs-data curves add candidates."""
import json
from types import SimpleNamespace

import pytest

from winnow.pipelines.intent_candidates import (curve_orders, curve_points, hidden_truth,
                                                pool_label, share_points)
from winnow.pipelines.intent_metrics import candidate_quality, selection_quality


def _cand(i: int, intent: str, score: float) -> dict:
    return {"id": f"c{i}", "text": f"utterance {i}", "_decision": {"intent": intent, "score": score}}


def test_every_order_adds_the_same_candidates_and_the_oracle_puts_true_labels_first():
    cands = {"alarm_set": [_cand(i, "alarm_set", 1.0 - i / 10) for i in range(8)],
             "weather_query": [_cand(i, "weather_query", 0.5) for i in range(8, 12)]}
    diversity = {"alarm_set": [f"c{i}" for i in (7, 3, 5, 0, 1, 2, 4, 6)],
                 "weather_query": ["c9", "c8", "c11", "c10"]}
    # hidden pool labels: c2 and c6 really are alarm_set, c9 is an alarm filed under weather
    hidden = {"c2": "alarm_set", "c6": "alarm_set", "c9": "alarm_set", "c10": "weather_query"}
    k_center = {"alarm_set": [f"c{i}" for i in (1, 0, 2, 3, 4, 5, 6, 7)],
                "weather_query": ["c10", "c8", "c9", "c11"]}
    facility = {"alarm_set": [f"c{i}" for i in (4, 5, 6, 7, 0, 1, 2, 3)],
                "weather_query": ["c11", "c10", "c9", "c8"]}
    selected = {"diversity": diversity, "k_center": k_center, "facility_location": facility}
    orders = curve_orders(cands, selected, hidden, seed=3)
    assert set(orders) == {"random", "relevance_topk", "diversity", "k_center",
                           "facility_location", "oracle"}
    for intent, cs in cands.items():
        ids = sorted(c["id"] for c in cs)
        for name, per_intent in orders.items():
            assert sorted(c["id"] for c in per_intent[intent]) == ids, (name, intent)
    ids = lambda name, intent: [c["id"] for c in orders[name][intent]]  # noqa: E731
    assert ids("relevance_topk", "alarm_set") == [f"c{i}" for i in range(8)]
    for name, chosen in selected.items():
        assert ids(name, "alarm_set") == chosen["alarm_set"]
    oracle = ids("oracle", "alarm_set")
    assert set(oracle[:2]) == {"c2", "c6"}
    # behind the true labels the oracle keeps the random order
    assert oracle[2:] == [i for i in ids("random", "alarm_set") if i not in ("c2", "c6")]
    assert ids("oracle", "weather_query")[0] == "c10"
    assert curve_orders(cands, selected, hidden, seed=3) == orders  # seeded
    assert ids("random", "alarm_set") != ids("relevance_topk", "alarm_set")


def test_curves_end_at_the_diversity_budget_or_at_the_largest_intent_when_it_is_smaller():
    # the diversity selector adds 400 per intent; weather has 1,467 candidates: every order
    # stops at 400, so relevance top-k ends on its 400 best scored and diversity chooses
    assert curve_points([197, 1467, 115], [20, 76, 100, 400, 800], 400) == [20, 76, 100, 400]
    # fewer candidates than the budget: the full budget is the largest intent's candidates
    assert curve_points([197, 380, 115], [20, 76, 100, 400, 800], 400) == [20, 76, 100, 380]
    assert curve_points([], [20, 76], 400) == [0]


def test_share_points_add_at_most_their_share_of_the_full_budget():
    counts = [188, 163, 1454, 98, 142]  # 991 added at the full budget of 400 per intent
    points = share_points(counts, [0.4, 0.25], 400)
    assert points == {49: 0.25, 79: 0.4}  # 5 x 49 <= 247.75 < 5 x 50; 5 x 79 <= 396.4
    full = sum(min(c, 400) for c in counts)
    for n, share in points.items():  # the largest such size: one more crosses the share
        assert sum(min(c, n) for c in counts) <= share * full
        assert sum(min(c, n + 1) for c in counts) > share * full
    # the share points join the fixed ones; a share too small for one per intent is left out
    assert curve_points(counts, [20, 40, 200], 400, [0.25, 0.4]) == [20, 40, 49, 79, 200, 400]
    assert share_points([3, 1000], [0.0001], 400) == {}
    assert curve_points([3, 1000], [20], 400, [0.0001]) == [20, 400]


def test_pool_label_knows_massive_hidden_labels_and_labelled_distractors_alike():
    truth = {"1042": "alarm_set"}  # a hidden MASSIVE train utterance
    assert pool_label(truth, {"id": "1042", "text": "wake me at six"}) == "alarm_set"
    # HWU64 carries MASSIVE's intent names: its alarm requests are alarms for the oracle too
    assert pool_label(truth, {"id": "hwu64:7", "intent": "alarm_set"}) == "alarm_set"
    # SNIPS names its own intents; plain text (SLURP's LM text) has no label
    assert pool_label(truth, {"id": "snips:GetWeather:3", "intent": "GetWeather"}) == "GetWeather"
    assert pool_label(truth, {"id": "lm:12", "intent": ""}) == ""
    assert pool_label(truth, {"id": "lm:13"}) == ""


def _write(root, rel: str, rows: list[dict]) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_candidate_quality_counts_what_the_curves_add_by_hidden_label(tmp_path):
    sel = lambda i, target, **kw: {"id": i, "text": i, "_decision": {"intent": target}, **kw}  # noqa: E731
    _write(tmp_path, "prepare/pool_labels.jsonl", [{"id": "1", "intent": "alarm_set"},
                                                  {"id": "2", "intent": "alarm_set"}])
    _write(tmp_path, "pool/selected.jsonl", [
        sel("1", "alarm_set"), sel("2", "weather_query"),  # hidden MASSIVE: right, wrong
        sel("hwu64:5", "alarm_set", intent="alarm_set"),
        sel("snips:GetWeather:0", "weather_query", intent="GetWeather"),
        sel("lm:3", "weather_query", intent=""),
        sel("lm:4", "alarm_set", intent="")])  # self-labelled otherwise: not a candidate
    _write(tmp_path, "self_training/self_labels.jsonl", [
        {"id": i, "intent": t, "confidence": 0.9} for i, t in
        [("1", "alarm_set"), ("2", "weather_query"), ("hwu64:5", "alarm_set"),
         ("snips:GetWeather:0", "weather_query"), ("lm:3", "weather_query"),
         ("lm:4", "weather_query")]])
    cfg = SimpleNamespace(output_dir=str(tmp_path), new_intents=["alarm_set", "weather_query"])
    q = candidate_quality(cfg, hidden_truth(tmp_path))
    assert q["candidates.labels"] == {
        "alarm_set": {"same_label": 2, "other_label": 0, "unlabelled": 0},
        "weather_query": {"same_label": 0, "other_label": 2, "unlabelled": 1}}
    assert q["candidates.precision"] == 2 / 5


def test_selection_quality_is_reported_overall_and_per_intent(tmp_path):
    def row(i: str, text: str, target: str, rule: str = "", **kw) -> dict:
        return {"id": i, "text": text, **kw,
                "_decision": {"kept": not rule, "rule": rule, "intent": target}}

    truth = {"1": "alarm_set", "2": "alarm_set", "3": "weather_query", "4": "weather_query",
             "6": "alarm_set"}
    _write(tmp_path, "pool/kept-00000-of-00001.jsonl", [
        row("1", "wake me at six", "alarm_set"),
        row("hwu64:5", "alarm at 7 please", "alarm_set", intent="alarm_set"),
        row("lm:3", "set the mood", "alarm_set", intent=""),
        row("snips:0", "will it rain in paris", "weather_query", intent="GetWeather"),
        row("snips:1", "forecast for rome", "weather_query", intent="GetWeather"),
        row("3", "is it sunny", "weather_query")])
    _write(tmp_path, "pool/dropped-00000-of-00001.jsonl", [
        row("4", "do i need an umbrella", "weather_query", rule="below_top_k"),
        row("2", "Wake me at  six", "alarm_set", rule="duplicate"),  # the same text as "1"
        row("6", "alarm for noon", "alarm_set", rule="in_seed_or_eval_set")])  # not in the pool
    cfg = SimpleNamespace(output_dir=str(tmp_path), new_intents=["alarm_set", "weather_query"])
    q = selection_quality(cfg, truth)
    assert q["selection.precision"] == 3 / 6
    assert q["selection.recall"] == 3 / 4
    assert q["selection.per_intent"] == {
        "alarm_set": {"kept": 3, "relevant": 2, "precision": 0.6667, "recall": 1.0},
        "weather_query": {"kept": 3, "relevant": 2, "precision": 0.3333, "recall": 0.5}}


def _clusters(seed: int = 0):
    """Candidates in three tight clusters of different sizes, and seeds near one of them."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 16)) * 4
    sizes = (60, 25, 5)
    cand = np.vstack([c + rng.normal(scale=0.3, size=(n, 16)) for c, n in zip(centres, sizes)])
    seeds = centres[0] + rng.normal(scale=0.3, size=(4, 16))
    cluster = np.repeat(np.arange(3), sizes)
    return cand, seeds, cluster


def test_k_center_never_lets_the_farthest_candidate_get_farther_and_covers_every_cluster_first():
    import numpy as np

    from winnow.selectors.coverage import k_center_order

    cand, seeds, cluster = _clusters()
    order, radius = k_center_order(cand, seeds, 30)
    assert len(order) == len(set(order)) == 30
    assert all(b <= a + 1e-12 for a, b in zip(radius, radius[1:]))
    # the radius it reports is the largest distance from a candidate to its nearest chosen point
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    chosen = np.vstack([unit(seeds), unit(cand[order[:5]])])
    rest = np.setdiff1d(np.arange(len(cand)), order[:5])
    assert radius[4] == pytest.approx((1 - unit(cand[rest]) @ chosen.T).min(axis=1).max())
    # the seeds sit in cluster 0: the first picks go to the two clusters they do not cover
    assert set(cluster[order[:2]]) == {1, 2}


def test_facility_location_gains_never_increase_and_the_big_cluster_is_represented_first():
    from winnow.selectors.coverage import facility_location_order

    cand, _, cluster = _clusters()
    order, gains = facility_location_order(cand, 20)
    assert len(order) == len(set(order)) == 20
    assert all(b <= a + 1e-9 for a, b in zip(gains, gains[1:]))
    assert cluster[order[0]] == 0  # the largest cluster is the most to represent
    assert set(cluster[order[:3]]) == {0, 1, 2}
    assert facility_location_order(cand, 20) == (order, gains)  # deterministic


def test_curves_are_the_same_whether_their_models_fit_side_by_side_or_one_at_a_time(
        reference_run, demo_data, tmp_path):
    """The curves' intent models fit in worker processes (``curve_workers``); each fit is a
    function of its own data, so one worker gives the same curves and predictions.  The
    same rerun switches the diversity step to the coverage objective: only the diversity
    order and its curve change, over the same candidates."""
    import shutil
    import subprocess

    import numpy as np

    from conftest import REPO, intent_cmd

    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    cmd = intent_cmd(demo_data, run)
    subprocess.run(cmd[:-1] + ["--set", "curve_workers=1", "--set", "diversity.objective=coverage",
                               cmd[-1]], check=True, cwd=REPO, capture_output=True)
    one, many = (json.loads((r / "curves" / "curves.json").read_text()) for r in (run, reference_run))
    assert set(one) == set(many) >= {"k_center", "facility_location", "random", "diversity"}
    preds = [np.load(r / "curves" / "predictions.npz") for r in (run, reference_run)]
    assert sorted(preds[0].files) == sorted(preds[1].files)
    for name in set(one) - {"diversity"}:
        assert one[name] == many[name], name
        assert all((preds[0][k] == preds[1][k]).all() for k in preds[0].files
                   if k.startswith(f"{name}.")), name
    # at the full budget every order adds every candidate: one shared fit, one prediction
    last = {name: tuple(preds[1][f"{name}.{len(many[name]) - 1}"]) for name in many}
    assert len({p["added"] for p in (c[-1] for c in many.values())}) == 1
    assert len(set(last.values())) == 1, {k: v[:5] for k, v in last.items()}
    orders = [[json.loads(x) for x in (r / "diversity" / "diversity_order.jsonl").open()]
              for r in (run, reference_run)]
    ids = [[(o["intent"], o["id"]) for o in order] for order in orders]
    assert ids[0] != ids[1] and len(ids[0]) == len(ids[1])


def test_the_curves_take_the_reference_orders_fits_and_equal_curves_fitted_in_one_stage(
        reference_run, demo_data, tmp_path):
    """random, relevance top-k and the oracle fit in ``reference_curves``, beside the
    paraphrase stage; the curves stage takes their predictions for every training set they
    share.  Fitting every order's curve in one go, with nothing taken, gives the same
    curves and predictions, and fits more models."""
    import shutil

    from conftest import REPO, intent_cmd
    from winnow.pipelines.config import load_config
    from winnow.pipelines.intent_candidates import CURVE_ORDERS, REFERENCE_ORDERS
    from winnow.pipelines.intent_workflow import IntentRun
    from winnow.pipelines.significance import load_curve_predictions
    from winnow.pipelines.stages import StageRunner

    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    cmd = intent_cmd(demo_data, run)
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
    cfg = load_config(REPO / "configs" / "demo-intent.yaml", sets)
    runner = StageRunner(run, quiet=True)
    try:
        one_go = tmp_path / "one_go"
        one_go.mkdir()
        stats = IntentRun(cfg, [], runner)._curves(one_go, "curves", CURVE_ORDERS,
                                                     reference=None)
    finally:
        runner.release()
    taken = json.loads((run / "curves" / "_DONE.json").read_text())["stats"]
    assert taken["fitted"] < stats["fitted"]
    assert (json.loads((one_go / "curves.json").read_text())
            == json.loads((run / "curves" / "curves.json").read_text()))
    _, _, ref = load_curve_predictions(run / "reference_curves" / "predictions.npz")
    _, _, merged = load_curve_predictions(run / "curves" / "predictions.npz")
    _, _, fresh = load_curve_predictions(one_go / "predictions.npz")
    assert set(ref) == set(REFERENCE_ORDERS) and set(merged) == set(fresh) == set(CURVE_ORDERS)
    for name in CURVE_ORDERS:
        assert len(merged[name]) == len(fresh[name]) > 0, name
        assert all((a == b).all() for a, b in zip(merged[name], fresh[name])), name
        if name in ref:
            assert len(ref[name]) == len(merged[name]), name
            assert all((a == b).all() for a, b in zip(merged[name], ref[name])), name
