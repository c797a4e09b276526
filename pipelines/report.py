"""``report.html``: a self-contained run report (plots as embedded PNGs).

Built from what a run left in its output folder -- ``summary.json`` (stage records),
kept/dropped shards, ``metrics.json``, curves -- so ``winnow report RUN_DIR`` can
rebuild it at any time.  Shows the funnel per stage, score histograms with the chosen
thresholds, a 2-D map of embeddings (intent runs), the error-vs-data curves or the
ablation table with perplexity bars, and example records per stage.
"""
from __future__ import annotations

import base64
import html
import io
import json
import random
from pathlib import Path
from typing import Any

from winnow.pipelines.beam_io import read_jsonl_shards
from winnow.pipelines.significance import (DATA_FRACTION_TARGET, F1_AT_TARGET, RESAMPLES,
                                           load_curve_predictions, new_intent_errors,
                                           resample_weights)

FUNNEL_STAGES = ("pool", "bitext")
EXAMPLES_PER_KIND = 5
REFERENCE_ORDERS = ("oracle",)  # curves drawn as references, not as selectors


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return ('<img alt="plot" src="data:image/png;base64,'
            + base64.b64encode(buf.getvalue()).decode() + '"/>')


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _funnel(name: str, stats: dict[str, Any]) -> str:
    plt = _plt()
    labels = ["read", "kept"] + [k for k in sorted(stats) if k.startswith("dropped.")] + ["rejected"]
    values = [stats.get(k, 0) for k in labels]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1))
    ax.barh(labels[::-1], values[::-1], color=["#c44"] + ["#888"] * (len(labels) - 3) + ["#4a4", "#46c"])
    for i, v in enumerate(values[::-1]):
        ax.text(v, i, f" {v:,}", va="center")
    ax.set_title(f"{name}: read = kept + dropped + rejected")
    return _png(fig)


def _histogram(title: str, kept: list[float], dropped: list[float], threshold: float | None,
               xlabel: str, threshold_label: str = "threshold") -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    bins = 40
    ax.hist([dropped, kept], bins=bins, stacked=True, label=["dropped", "kept"],
            color=["#bbb", "#4a4"], log=len(dropped) > 20 * max(len(kept), 1))
    if threshold is not None:
        ax.axvline(threshold, color="#c44", linestyle="--", label=f"{threshold_label} {threshold:.3g}")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend()
    return _png(fig)


def _examples(rows: list[dict[str, Any]], kept: bool, text_key: str) -> str:
    rows = [r for r in rows if r["_decision"]["kept"] == kept]
    rng = random.Random(0)
    rows = rng.sample(rows, min(EXAMPLES_PER_KIND, len(rows)))
    out = []
    for r in rows:
        dec = r["_decision"]
        extra = {k: v for k, v in dec.items() if k not in ("kept",) and v not in (None, "", [])}
        out.append(f"<tr><td>{html.escape(str(r.get(text_key, '')))}</td>"
                   f"<td><code>{html.escape(json.dumps(extra, ensure_ascii=False))}</code></td></tr>")
    return "<table><tr><th>record</th><th>decision</th></tr>" + "".join(out) + "</table>"


def _scored(rows: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    scored = [r["_decision"] for r in rows if r["_decision"]["score"] is not None]
    return ([d["score"] for d in scored if d["kept"]], [d["score"] for d in scored if not d["kept"]])


def _intent_sections(run: Path, metrics: dict[str, Any]) -> list[str]:
    plt = _plt()
    parts = []
    rows = read_jsonl_shards(run / "pool", "kept") + read_jsonl_shards(run / "pool", "dropped")
    if rows:
        kept, dropped = _scored(rows)
        cut = min(kept) if kept else None
        parts.append("<h2>Relevance scores</h2>" + _histogram(
            "pool relevance (best new intent)", kept, dropped, cut, "relevance probability",
            "lowest kept score"))
        parts.append("<h3>Examples: kept</h3>" + _examples(rows, True, "text"))
        parts.append("<h3>Examples: dropped</h3>" + _examples(rows, False, "text"))
    curves = run / "curves" / "curves.json"
    if curves.exists():
        data = json.loads(curves.read_text())
        bands = _error_bands(run / "curves" / "predictions.npz", data)
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for name, pts in data.items():
            added = [p["added"] for p in pts]
            reference = name in REFERENCE_ORDERS
            line, = ax.plot(added, [p["new_intent_error"] for p in pts], marker="o",
                            linestyle="--" if reference else "-",
                            label=f"{name} (hidden labels)" if reference else name)
            if name in bands and not reference:
                ax.fill_between(added, *bands[name], color=line.get_color(), alpha=0.12)
        if data.get("relevance_topk"):
            full = data["relevance_topk"][-1]
            ax.axhline(full["new_intent_error"], color="#888", linestyle=":", linewidth=1,
                       label="target: full-budget error")
            ax.axvline(DATA_FRACTION_TARGET * full["added"], color="#888", linestyle="-.",
                       linewidth=1, label=f"{DATA_FRACTION_TARGET:.0%} of the budget")
        ax.set_xlabel("added self-labelled utterances")
        ax.set_ylabel("new-intent error (1 - macro F1)")
        ax.legend()
        ax.set_title("error vs added data")
        caption = ("<p>Shaded: each point's 95% bootstrap band over the evaluation utterances. "
                   "Points on one resample move together, so differences between them are "
                   "surer than the bands suggest: the metrics' data_fraction_bootstrap "
                   "compares them paired.</p>" if bands else "")
        if any(n in REFERENCE_ORDERS for n in data):
            caption += ("<p>Dashed: the oracle reference, which adds first the candidates whose "
                        "hidden pool label is the new intent; no selector sees those labels.</p>")
        parts.append("<h2>Error vs added data</h2>" + _png(fig) + caption
                     + _f1_at_target_table(metrics))
    emb = run / "embeddings.npz"
    corpus = run / "corpus" / "corpus.jsonl"
    if emb.exists() and corpus.exists():
        import numpy as np
        z = np.load(emb)
        vecs = dict(zip(z["texts"].tolist(), z["vecs"]))
        recs = [json.loads(x) for x in corpus.read_text(encoding="utf-8").splitlines()]
        seed = [vecs[r["text"]] for r in recs if r["origin"] == "seed" and r["text"] in vecs]
        sel = [vecs[r["text"]] for r in recs if r["origin"] != "seed" and r["text"] in vecs]
        others = random.Random(0).sample(sorted(vecs), min(1500, len(vecs)))
        pool = [vecs[t] for t in others]
        if seed and sel:
            allv = np.vstack([pool, seed, sel])
            mean = allv.mean(0)
            _, _, vt = np.linalg.svd(allv - mean, full_matrices=False)
            proj = lambda a: (np.asarray(a) - mean) @ vt[:2].T  # noqa: E731
            fig, ax = plt.subplots(figsize=(6, 5))
            for arr, lab, col, size in ((pool, "other embedded utterances", "#ccc", 6),
                                        (sel, "selected (self-labelled)", "#4a4", 14),
                                        (seed, "seed (annotated)", "#c44", 30)):
                p = proj(arr)
                ax.scatter(p[:, 0], p[:, 1], s=size, c=col, label=lab)
            ax.legend()
            ax.set_title("sentence embeddings, first two principal components")
            parts.append("<h2>Annotated vs selected data</h2>" + _png(fig))
    return parts


def _lm_sections(run: Path, metrics: dict[str, Any]) -> list[str]:
    plt = _plt()
    parts = []
    by_source = (json.loads((run / "summary.json").read_text()).get("bitext", {})
                 .get("stats", {}).get("by_source", {}))
    if by_source:
        rules = sorted({k for c in by_source.values() for k in c} - {"read", "kept", "dropped", "rejected"})
        head = "".join(f"<th>{h}</th>" for h in ["file", "read", "kept", "dropped", "rejected", *rules])
        body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in [
            path, *(f"{c.get(k, 0):,}" for k in ("read", "kept", "dropped", "rejected", *rules))])
            + "</tr>" for path, c in sorted(by_source.items()))
        parts.append("<h2>What the filter drew from each source</h2>"
                     f"<table><tr>{head}</tr>{body}</table>")
    # pairs that reached the encoder (the rest carry a rule's or the ranker's score)
    rows = [r for name in ("kept", "dropped") for r in read_jsonl_shards(run / "bitext", name)
            if r["_decision"]["rule"] in ("", "not_among_nearest", "too_far_from_domain")]
    if rows:
        kept, dropped = _scored(rows)
        parts.append("<h2>Embedding distance to the in-domain centroid</h2>" + _histogram(
            "bitext target side", kept, dropped, max(kept) if kept else None, "cosine distance",
            "largest kept distance"))
        parts.append("<h3>Examples: kept</h3>" + _examples(rows, True, "tgt"))
        parts.append("<h3>Examples: dropped</h3>" + _examples(
            [r for r in rows if r["_decision"]["score"] is not None] or rows, False, "tgt"))
    all_rows = run / "rows" / "all"
    trans = read_jsonl_shards(all_rows, "kept") + read_jsonl_shards(all_rows, "dropped")
    if trans:
        summary = json.loads((run / "summary.json").read_text())
        thr = summary.get("tune", {}).get("stats", {}).get("lm_filter_threshold")
        kept, dropped = _scored(trans)
        parts.append("<h2>LM filter</h2>" + _histogram(
            "per-token log10 probability under the seed LM", kept, dropped, thr, "log10 p / token"))
        parts.append("<h3>Examples: kept</h3>" + _examples(trans, True, "tgt"))
        parts.append("<h3>Examples: dropped</h3>" + _examples(trans, False, "tgt"))
    names = [k[:-len(".perplexity")] for k in metrics if k.endswith(".perplexity")
             and not k.endswith((".pooled.perplexity", ".interpolated.perplexity"))]
    if names:
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.bar(names, [metrics[f"{n}.perplexity"] for n in names], color="#46c")
        ax.set_ylabel("perplexity (seed-vocabulary tokens)")
        ax.tick_params(axis="x", rotation=30)
        ax.set_title("ablation")
        pooled = lambda n: (f"{metrics[f'{n}.pooled.perplexity']:.2f}"  # noqa: E731
                            if f"{n}.pooled.perplexity" in metrics else "")
        table = "".join(f"<tr><td>{n}</td><td>{metrics[f'{n}.perplexity']:.2f}</td>"
                        f"<td>{metrics.get(f'{n}.oov_rate', 0):.4f}</td><td>{pooled(n)}</td>"
                        f"<td>{metrics.get(f'{n}.sentences', '')}</td></tr>" for n in names)
        parts.append("<h2>Ablation</h2><p>perplexity and OOV of each row's deliverable: the "
                     "seed LM interpolated with an LM of the row's text (KenLM interpolate) or "
                     "one LM of seed and text pooled, whichever the tuning split prefers.</p>"
                     "<table><tr><th>row</th><th>perplexity</th>"
                     f"<th>OOV</th><th>pooled perplexity</th><th>LM sentences</th></tr>{table}"
                     "</table>" + _png(fig))
    return parts


def _error_bands(path: Path, curves: dict[str, list[dict[str, Any]]]
                 ) -> dict[str, tuple[list[float], list[float]]]:
    """Per order, the 2.5th and 97.5th bootstrap percentiles of each curve point's error."""
    if not path.exists():
        return {}
    import numpy as np

    gold, labels, preds = load_curve_predictions(path)
    weights = resample_weights(len(gold), RESAMPLES, seed=0)
    bands = {}
    for name in curves:
        errs = np.array([new_intent_errors(gold, pred, labels, weights) for pred in preds[name]])
        lo, hi = np.percentile(errs, [2.5, 97.5], axis=1)
        bands[name] = (lo.tolist(), hi.tolist())
    return bands


def _f1_at_target_table(metrics: dict[str, Any]) -> str:
    """Each new intent's F1 per order at the target's share of the budget (``f1_at_40pct.*``)."""
    prefix = f"{F1_AT_TARGET}."
    per_intent = {k[len(prefix):]: v for k, v in metrics.items()
                  if k.startswith(prefix) and isinstance(v, dict)}
    if not per_intent:
        return ""
    cols = sorted(next(iter(per_intent.values())), key=lambda c: (c == "full_budget", c))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    rows = "".join(f"<tr><td>{html.escape(i)}</td>"
                   + "".join(f"<td>{f1.get(c, '')}</td>" for c in cols) + "</tr>"
                   for i, f1 in per_intent.items())
    return (f"<h3>F1 per new intent with {metrics[prefix + 'added']} added utterances "
            f"({DATA_FRACTION_TARGET:.0%} of the budget or less) and with the full budget</h3>"
            f"<table><tr><th>intent</th>{head}</tr>{rows}</table>")


def build_report(run_dir: str | Path) -> Path:
    run = Path(run_dir)
    summary_path = run / "summary.json"
    if not summary_path.exists():
        raise FileNotFoundError(f"{run}: no summary.json -- not a finished winnow run folder")
    summary = json.loads(summary_path.read_text())
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
    parts = [f"<h1>winnow run report: {html.escape(run.name)}</h1>"]
    stage_rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{r.get('seconds', '')}</td><td><code>"
        f"{html.escape(json.dumps({k: v for k, v in r.get('stats', {}).items() if not isinstance(v, dict)}))}"
        "</code></td></tr>" for n, r in summary.items())
    parts.append("<h2>Stages</h2><table><tr><th>stage</th><th>seconds</th><th>counts</th></tr>"
                 + stage_rows + "</table>")
    for name in FUNNEL_STAGES:
        if name in summary:
            parts.append(f"<h2>Funnel: {name}</h2>" + _funnel(name, summary[name]["stats"]))
    for name, rec in summary.get("rows", {}).get("stats", {}).items():
        if name.endswith(".translations"):
            parts.append(f"<h2>Funnel: {name}</h2>" + _funnel(name, rec))
    is_lm = "bitext" in summary
    parts += _lm_sections(run, metrics) if is_lm else _intent_sections(run, metrics)
    mrows = "".join(
        f"<tr><td>{html.escape(k)}</td>"
        f"<td>{html.escape(str(round(v, 4) if isinstance(v, float) else v))}</td></tr>"
        for k, v in metrics.items() if not isinstance(v, dict))
    parts.append(f"<h2>Metrics</h2><table>{mrows}</table>")
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
             "padding:2px 6px;font-size:13px;vertical-align:top}img{max-width:100%}")
    out = run / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>winnow report</title>"
                   f"<style>{style}</style></head><body>{''.join(parts)}</body></html>",
                   encoding="utf-8")
    tmp.replace(out)
    return out
