"""Several runs side by side: each metric per run, with its mean and standard deviation.

A development evaluation file with 20-126 utterances per new intent moves these figures by
several points from one draw of the seeds to the next (``--set seed=N``), so a setting
should be judged on the spread over draws, not on one run. Intent runs also get their
curves averaged point by point; the budget differs between draws, so the last point of
every curve is compared as ``full``, and a point at a share of the budget by its share.
Each order's curve is also paired with random's at the same point (1 where the order's
error is at or below random's, else 0), so the mean of that row is the share of draws in
which the selector earns its place against a random order.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

FULL = "full"
BASELINE = "random"  # the order every selector's curve is paired with


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric metrics, nested dicts' numbers as ``key.sub.subsub``; text and nulls are left out."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _read(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (is {path.parent} a finished run?)")
    return json.loads(path.read_text())


def metric_rows(runs: list[Path]) -> list[tuple[str, list[float | None]]]:
    """(metric, one value per run) in the first run's key order, then keys only later runs have."""
    flat = [flatten(_read(r / "metrics.json")) for r in runs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    return [(k, [f.get(k) for f in flat]) for k in keys]


def curve_rows(runs: list[Path]) -> list[tuple[str, list[float | None]]]:
    """(order @ point, new-intent error per run) for runs that have curves, then
    (order <= random @ point, 1.0 or 0.0 per run) wherever the run has random at that point.

    A point is its per-intent size, or its share of the budget where the curves measured at
    one (``curve_shares``: the size differs between draws, the share does not)."""
    rows: dict[tuple[str, tuple[int, float]], list[float | None]] = {}
    for i, run in enumerate(runs):
        path = run / "curves" / "curves.json"
        if not path.is_file():
            continue
        for order, points in _read(path).items():
            for j, p in enumerate(points):
                at = ((2, 0.0) if j == len(points) - 1 else
                      (1, float(p["share"])) if "share" in p else (0, float(p["per_intent"])))
                rows.setdefault((order, at), [None] * len(runs))[i] = p["new_intent_error"]

    def point(at: tuple[int, float]) -> str:
        kind, value = at
        return (FULL if kind == 2 else f"{value:.0%}-budget" if kind == 1
                else f"+{value:.0f}/intent")

    paired = [(f"curve.{order}<=random@{point(at)}", [
        None if v is None or r is None else float(v <= r)
        for v, r in zip(values, rows[(BASELINE, at)])])
        for (order, at), values in sorted(rows.items())
        if order != BASELINE and (BASELINE, at) in rows]
    return [(f"curve.{order}@{point(at)}", values)
            for (order, at), values in sorted(rows.items())] + paired


def summary(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the values present (sd needs two)."""
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    return statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else None


def compare_table(runs: list[Path]) -> str:
    """A Markdown table: metric | each run | mean | sd."""
    def cell(v: float | None) -> str:
        if v is None:
            return "-"
        if v.is_integer():
            return str(int(v))
        return f"{v:.1f}" if abs(v) >= 100 else f"{v:.4f}"

    lines = ["| metric | " + " | ".join(str(r) for r in runs) + " | mean | sd |",
             "|---" * (len(runs) + 3) + "|"]
    for key, values in metric_rows(runs) + curve_rows(runs):
        lines.append(f"| {key} | " + " | ".join(cell(v) for v in values) + " | "
                     + " | ".join(cell(s) for s in summary(values)) + " |")
    return "\n".join(lines)
