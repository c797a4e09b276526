"""``winnow bench``: each stage measured inside Beam against the raw library, in one run.

Rows: stage, items, items/s, baseline items/s, ratio, peak RSS (MiB).  ``--quick`` runs
tiny sizes (for CI: it asserts nothing about speed).  Writes ``bench.json``.
"""
from __future__ import annotations

import json
import random
import resource
import time
from pathlib import Path
from typing import Any, Callable

import apache_beam as beam

from winnow.pipelines.beam_io import pipeline_options
from winnow.pipelines.config import BeamSettings

WORDS = ("set an alarm for seven am wake me up tomorrow play some jazz music what is the weather "
         "in paris order a pizza from the corner turn the kitchen lights blue please next episode "
         "of my podcast remind me to call mom at noon how hot will it be on friday").split()


def synthetic_utterances(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _beam_run(build: Callable[[beam.Pipeline], None], extra: list[str] = ()) -> float:
    def go():
        p = beam.Pipeline(options=pipeline_options(BeamSettings(), ["--direct_num_workers=1",
                                                                   *extra]))
        build(p)
        p.run().wait_until_finish()
    return _timed(go)


class _ScoreBatches(beam.DoFn):
    def __init__(self, models):
        self.models = models

    def setup(self):
        from winnow.selectors.ngram_relevance import RelevanceTable
        self.table = RelevanceTable(self.models)

    def process(self, batch):
        yield len(batch), float(self.table.logits_batch(batch).max())


def bench_ngram(n: int, workers: int = 1) -> dict[str, Any]:
    from winnow.selectors.ngram_relevance import NgramRelevanceModel
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import LogisticRegression

    texts = synthetic_utterances(n)
    pos, neg = texts[:200], texts[200:2200]
    model = NgramRelevanceModel.fit(pos, neg, label="x")
    hv = HashingVectorizer(ngram_range=(1, 3), alternate_sign=False)
    lr = LogisticRegression(max_iter=500).fit(hv.transform(pos + neg), [1] * 200 + [0] * 2000)
    base = _timed(lambda: lr.predict_proba(hv.transform(texts)))
    extra = ([f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
             if workers > 1 else [])
    ours = _beam_run(lambda p: (p | beam.Create(texts, reshuffle=False)
                                | beam.BatchElements(min_batch_size=4096, max_batch_size=8192)
                                | beam.ParDo(_ScoreBatches([model]))), extra)
    return {"stage": f"ngram relevance (Beam, {workers} worker{'s' if workers > 1 else ''})",
            "items": n, "items_per_s": n / ours, "baseline_items_per_s": n / base}


class _Embed(beam.DoFn):
    def __init__(self, batch_size):
        self.batch_size = batch_size

    def setup(self):
        from winnow.selectors.embeddings import load_encoder
        self.model = load_encoder("minilm")

    def process(self, batch):
        from winnow.selectors.embeddings import encode
        yield len(encode(self.model, batch, batch_size=self.batch_size))


def bench_embedding(n: int, batch_size: int = 128) -> dict[str, Any]:
    from winnow.selectors.embeddings import encode, load_encoder

    texts = synthetic_utterances(n, seed=1)
    model = load_encoder("minilm")
    encode(model, texts[:256], batch_size=batch_size)  # warm-up
    base = _timed(lambda: model.encode(texts, batch_size=batch_size))
    ours = _beam_run(lambda p: (p | beam.Create(texts, reshuffle=False)
                                | beam.BatchElements(min_batch_size=batch_size * 8,
                                                     max_batch_size=batch_size * 8)
                                | beam.ParDo(_Embed(batch_size))))
    return {"stage": "embedding MiniLM fp32 (Beam)", "items": n, "items_per_s": n / ours,
            "baseline_items_per_s": n / base}


class _LmScore(beam.DoFn):
    def __init__(self, path):
        self.path = path

    def setup(self):
        import kenlm
        self.model = kenlm.Model(self.path)

    def process(self, batch):
        score = self.model.score
        yield sum(score(t, bos=True, eos=True) for t in batch)


def bench_kenlm(n: int, work: Path) -> dict[str, Any]:
    import kenlm

    from winnow.lm.kenlm_tools import train_lm

    texts = synthetic_utterances(n, seed=2)
    _, binary = train_lm(texts[:20000], work, "bench")
    model = kenlm.Model(str(binary))
    base = _timed(lambda: [model.score(t, bos=True, eos=True) for t in texts])
    ours = _beam_run(lambda p: (p | beam.Create(texts, reshuffle=False)
                                | beam.BatchElements(min_batch_size=4096, max_batch_size=16384)
                                | beam.ParDo(_LmScore(str(binary)))))
    return {"stage": "KenLM sentence scoring (Beam)", "items": n, "items_per_s": n / ours,
            "baseline_items_per_s": n / base}


def run_bench(quick: bool, out: Path) -> list[dict[str, Any]]:
    import tempfile

    sizes = ({"ngram": 20000, "embed": 512, "kenlm": 20000} if quick else
             {"ngram": 1_000_000, "embed": 8192, "kenlm": 1_000_000})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fn in (lambda: bench_ngram(sizes["ngram"]),
                   lambda: bench_ngram(sizes["ngram"], workers=2),
                   lambda: bench_embedding(sizes["embed"]),
                   lambda: bench_kenlm(sizes["kenlm"], Path(tmp))):
            row = fn()
            row["ratio"] = row["items_per_s"] / row["baseline_items_per_s"]
            row["peak_rss_mib"] = _rss_mib()
            rows.append(row)
            print(f"{row['stage']:<40} {row['items']:>9} {row['items_per_s']:>12,.0f} "
                  f"{row['baseline_items_per_s']:>12,.0f} {row['ratio']:>6.2f} "
                  f"{row['peak_rss_mib']:>8.0f}", flush=True)
    out.write_text(json.dumps({"quick": quick, "rows": rows}, indent=1))
    return rows
