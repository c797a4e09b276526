"""`winnow compare`: runs side by side, mean and sd per metric, curves aligned by point."""
import json
import subprocess
import sys

import pytest

from conftest import REPO
from winnow.pipelines.compare import compare_table, curve_rows, flatten, metric_rows, summary


def _run(root, name, metrics, curves=None):
    d = root / name
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps(metrics))
    if curves is not None:
        (d / "curves").mkdir()
        (d / "curves" / "curves.json").write_text(json.dumps(curves))
    return d


def _curve(errors, budget):
    points = [20, 40, budget]
    return [{"per_intent": p, "added": 5 * p, "new_intent_error": e, "accuracy": 0.9}
            for p, e in zip(points, errors)]


def test_flatten_keeps_numbers_at_any_depth_of_nesting():
    assert flatten({"a": 0.5, "b": {"median": 1.0, "note": "x"}, "c": None, "d": "text",
                    "e": True, "f": 3}) == {"a": 0.5, "b.median": 1.0, "f": 3.0}
    assert flatten({"candidates": {"alarm_set": {"same_label": 182, "unlabelled": 6}}}) == {
        "candidates.alarm_set.same_label": 182.0, "candidates.alarm_set.unlabelled": 6.0}


def test_metrics_and_curves_side_by_side(tmp_path):
    a = _run(tmp_path, "s13", {"err": 0.2, "frac": {"median": 1.0}},
             {"diversity": _curve([0.3, 0.25, 0.2], 190)})
    b = _run(tmp_path, "s14", {"err": 0.1, "only_here": 7},
             {"diversity": _curve([0.1, 0.15, 0.1], 207)})
    rows = dict(metric_rows([a, b]))
    assert rows == {"err": [0.2, 0.1], "frac.median": [1.0, None], "only_here": [None, 7.0]}
    curves = curve_rows([a, b])
    # the last point of each curve is aligned as `full` although the budgets differ
    assert [k for k, _ in curves] == ["curve.diversity@+20/intent", "curve.diversity@+40/intent",
                                      "curve.diversity@full"]
    assert curves[2][1] == [0.2, 0.1]
    assert curve_rows([a]) == [(k, v[:1]) for k, v in curves]  # no random curve: no pairs
    mean, sd = summary([0.2, 0.1])
    assert mean == pytest.approx(0.15) and sd == pytest.approx(0.0707107, abs=1e-6)
    assert summary([None, 7.0]) == (7.0, None)
    table = compare_table([a, b]).splitlines()
    assert table[0] == f"| metric | {a} | {b} | mean | sd |"
    assert "| err | 0.2000 | 0.1000 | 0.1500 | 0.0707 |" in table
    assert "| only_here | - | 7 | 7 | - |" in table


def test_points_at_a_share_of_the_budget_align_by_share(tmp_path):
    def curve(errors, share_size, budget):
        pts = _curve(errors, budget)
        pts[1].update(per_intent=share_size, added=5 * share_size, share=0.25)
        return pts
    a = _run(tmp_path, "s13", {}, {"diversity": curve([0.3, 0.25, 0.2], 47, 190),
                                  "random": curve([0.3, 0.2, 0.25], 47, 190)})
    b = _run(tmp_path, "s14", {}, {"diversity": curve([0.1, 0.15, 0.12], 52, 207),
                                  "random": curve([0.2, 0.18, 0.1], 52, 207)})
    rows = dict(curve_rows([a, b]))
    assert rows["curve.diversity@25%-budget"] == [0.25, 0.15]
    assert rows["curve.diversity<=random@25%-budget"] == [0.0, 1.0]
    assert not any("+47/intent" in k or "+52/intent" in k for k in rows)


def test_each_order_is_paired_with_random_at_each_point(tmp_path):
    a = _run(tmp_path, "s13", {}, {"diversity": _curve([0.3, 0.25, 0.2], 190),
                                  "random": _curve([0.3, 0.2, 0.25], 190)})
    b = _run(tmp_path, "s14", {}, {"diversity": _curve([0.1, 0.15, 0.12], 207),
                                  "random": _curve([0.2, 0.1], 40)})  # a shorter curve
    paired = {k: v for k, v in curve_rows([a, b]) if "<=random" in k}
    # ties count for the order; a point random lacks in a run is None there
    assert paired == {"curve.diversity<=random@+20/intent": [1.0, 1.0],
                      "curve.diversity<=random@+40/intent": [0.0, None],
                      "curve.diversity<=random@full": [1.0, 0.0]}
    assert "| curve.diversity<=random@+20/intent | 1 | 1 | 1 | 0 |" in compare_table([a, b])


def test_cli_names_a_run_without_metrics(tmp_path):
    good = _run(tmp_path, "good", {"err": 0.1})
    out = subprocess.run([sys.executable, "-m", "winnow.pipelines.cli", "compare", str(good),
                          str(tmp_path / "unfinished")], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2
    assert str(tmp_path / "unfinished" / "metrics.json") in out.stderr
    assert "Traceback" not in out.stderr
