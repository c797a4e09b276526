"""``winnow bench``: each stage measured inside Beam against the raw library, in one run.

Columns: stage, items, items/s, baseline items/s, ratio, target, peak RSS (MiB); the
memory row's ratio is of peak RSS, the diversity row's "ratio" its seconds.  Pools
are synthetic utterances written to text files; Beam reads them in batches of lines
(byte-range splits of the files), so the figures are about the scoring, not about
per-element overhead.  Pipeline rows run in a fresh subprocess each, so their peak RSS
is their own.  ``--quick`` runs tiny sizes (for CI: it asserts nothing about speed).
Writes ``bench.json``.
"""
from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import apache_beam as beam
import numpy as np

from winnow.pipelines.beam_io import byte_ranges, pipeline_options, run_pipeline
from winnow.pipelines.config import BeamSettings, InputFile

WORDS = ("set an alarm for seven am wake me up tomorrow play some jazz music what is the weather "
         "in paris order a pizza from the corner turn the kitchen lights blue please next episode "
         "of my podcast remind me to call mom at noon how hot will it be on friday").split()
SPLIT_BYTES = 4 << 20  # byte range per Beam element when reading a pool file
LINES_PER_BATCH = 4096
TOP_K = 400
# pool scoring: the speed rows score "speed_pool" utterances (a multi-process run pays
# ~5 s of fixed worker start-up and tail, which a pool of millions amortises); the
# memory row compares the peak RSS of the two "memory" pools
FULL = {"speed_pool": 20_000_000, "memory": (1_000_000, 10_000_000), "embed": 16384,
        "kenlm": 1_000_000,
        "diversity": (100_000, 5_000, 20), "bitext_mix": (None, 0.02), "object_store": 100_000}
QUICK = {"speed_pool": 50_000, "memory": (10_000, 50_000), "embed": 512, "kenlm": 20_000,
         "diversity": (5_000, 500, 5), "bitext_mix": (0.002, 0.002), "object_store": 5_000}
EMBED_REPEATS = 3
EMBED_ELEMENT_BATCH = 4096  # texts per Beam element; the encoder batches them by 128
DIVERSITY_BATCH = 50
SENTENCE_DIM = 384  # MiniLM
DIVERSITY_DIM = SENTENCE_DIM + 64  # sentence embedding + slot-type indicators


def synthetic_utterances(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]


def write_pool(path: Path, n: int, seed: int = 0, chunk: int = 200_000) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, n, chunk):
            f.write("\n".join(synthetic_utterances(min(chunk, n - start), seed + start)) + "\n")
    return path


def _peak_rss_mib() -> float:
    """This process's peak RSS.  VmHWM, not ru_maxrss: Linux carries ru_maxrss across
    exec, so a subprocess would report its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- Beam pieces: read a text file as batches of lines --------------------------------

def read_line_batches(split: tuple[str, int, int], lines: int = LINES_PER_BATCH):
    """The lines that start inside [start, end) (a line belongs to the split holding its
    first byte), in lists of ``lines``; the range is read in one call, not line by line."""
    path, start, end = split
    with open(path, "rb") as f:
        if start:
            f.seek(start - 1)
            f.readline()  # finish the line that began before this split
        begin = f.tell()
        if begin >= end:
            return
        data = f.read(end - begin)
        if not data.endswith(b"\n"):
            data += f.readline()  # the last line starts inside the range: read it whole
    text = data.decode("utf-8").splitlines()
    for i in range(0, len(text), lines):
        yield text[i:i + lines]


class ScoreTopK(beam.DoFn):
    """Relevance scores for batches of lines; keeps a running top-k per intent over the
    bundle (a combiner lifted by hand into numpy) and emits it when the bundle ends, so
    the global Top sees k per bundle and intent, not every line."""

    def __init__(self, models_json: list[dict[str, Any]], k: int):
        self.models_json, self.k = models_json, k

    def setup(self) -> None:
        from winnow.pipelines.pool_scoring import models_from_json
        from winnow.selectors.ngram_relevance import RelevanceTable
        self.table = RelevanceTable(models_from_json(self.models_json))

    def start_bundle(self) -> None:
        self.top: dict[str, tuple[np.ndarray, list[str]]] = {
            label: (np.zeros(0), []) for label in self.table.labels}

    def process(self, batch: list[str]):
        scores = self.table.scores_batch(batch)
        best = scores.argmax(axis=1)
        top = scores[np.arange(len(batch)), best]
        for j, label in enumerate(self.table.labels):
            idx = np.flatnonzero(best == j)
            idx = idx[self._largest(top[idx])]
            kept_scores, kept_texts = self.top[label]
            merged = np.concatenate([kept_scores, top[idx]])
            texts = kept_texts + [batch[i] for i in idx.tolist()]
            keep = self._largest(merged)
            self.top[label] = (merged[keep], [texts[i] for i in keep.tolist()])

    def _largest(self, scores: np.ndarray) -> np.ndarray:
        if len(scores) <= self.k:
            return np.arange(len(scores))
        return np.argpartition(-scores, self.k)[:self.k]

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue
        for label, (scores, texts) in self.top.items():
            for score, text in zip(scores.tolist(), texts):
                yield WindowedValue((label, (score, text)), 0, [GlobalWindow()])


class ScoreLm(beam.DoFn):
    """KenLM sentence scores for a batch; emits how many pass a threshold (the LM filter)."""

    def __init__(self, path: str, threshold: float):
        self.path, self.threshold = path, threshold

    def setup(self) -> None:
        import kenlm
        self.model = kenlm.Model(self.path)

    def process(self, batch: list[str]):
        score, thr = self.model.score, self.threshold
        yield sum(1 for t in batch if score(t, bos=True, eos=True) >= thr)


def _bench_models(n_pos: int = 200, n_neg: int = 2000) -> list[dict[str, Any]]:
    from winnow.selectors.ngram_relevance import NgramRelevanceModel

    texts = synthetic_utterances(n_pos * 5 + n_neg, seed=99)
    models = [NgramRelevanceModel.fit(texts[i * n_pos:(i + 1) * n_pos], texts[-n_neg:],
                                      label=f"intent{i}") for i in range(5)]
    return [m.to_dict() for m in models]


def run_score_file(pool: str, models_path: str, workers: int) -> dict[str, Any]:
    """One pool-scoring pipeline over a file; run in a subprocess by ``bench_pool``."""
    models = json.loads(Path(models_path).read_text())
    extra = ["--direct_num_workers=1"] if workers == 1 else [
        f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    def go():
        p = beam.Pipeline(options=pipeline_options(BeamSettings(), extra))
        ranges = byte_ranges(pool, os.path.getsize(pool), SPLIT_BYTES)
        (p | "Splits" >> beam.Create(ranges) | "Spread" >> beam.Reshuffle()
         | "Lines" >> beam.FlatMap(read_line_batches)
         | "Score" >> beam.ParDo(ScoreTopK(models, TOP_K))
         | "TopK" >> beam.combiners.Top.LargestPerKey(TOP_K)
         | "Count" >> beam.Map(lambda kv: len(kv[1]))
         | "Total" >> beam.CombineGlobally(sum))
        p.run().wait_until_finish()
    return {"seconds": _timed(go), "peak_rss_mib": _peak_rss_mib()}


def _subprocess(pool: Path, models: Path, workers: int) -> dict[str, Any]:
    code = ("import json,sys; from winnow.pipelines.bench import run_score_file; "
            "print('RESULT', json.dumps(run_score_file(sys.argv[1], sys.argv[2], int(sys.argv[3]))))")
    out = subprocess.run([sys.executable, "-c", code, str(pool), str(models), str(workers)],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def sklearn_rate(pool: Path, chunk: int = 100_000) -> float:
    """Utterances/s of HashingVectorizer(1-3 grams) + LogisticRegression.predict_proba over
    the pool file, streamed in chunks (timing covers vectorising and predicting only)."""
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import LogisticRegression

    train = synthetic_utterances(2200, seed=99)
    hv = HashingVectorizer(ngram_range=(1, 3), alternate_sign=False)
    lr = LogisticRegression(max_iter=500).fit(hv.transform(train), [1] * 200 + [0] * 2000)
    seconds, n = 0.0, 0
    with open(pool, encoding="utf-8") as f:
        while lines := [line.rstrip("\n") for _, line in zip(range(chunk), f)]:
            seconds += _timed(lambda: lr.predict_proba(hv.transform(lines)))
            n += len(lines)
    return n / seconds


def bench_pool(n: int, memory: tuple[int, int], work: Path) -> list[dict[str, Any]]:
    """Speed rows on an ``n``-utterance pool; the memory row compares the peak RSS of
    scoring the two ``memory`` pools."""
    models_path = work / "models.json"
    models_path.write_text(json.dumps(_bench_models()))
    pool = write_pool(work / "pool.txt", n)
    base = sklearn_rate(pool)
    one = _subprocess(pool, models_path, 1)
    two = _subprocess(pool, models_path, 2)
    pool.unlink()
    mem = {}
    for size in memory:
        path = write_pool(work / f"pool{size}.txt", size)
        mem[size] = _subprocess(path, models_path, 1)
        path.unlink()
    small, large = memory
    return [
        {"stage": "n-gram relevance + top-k (Beam, 1 worker)", "items": n,
         "items_per_s": n / one["seconds"], "baseline": "sklearn HashingVectorizer+LR",
         "baseline_items_per_s": base, "target": ">= 3", "peak_rss_mib": one["peak_rss_mib"]},
        {"stage": "n-gram relevance + top-k (Beam, 2 workers)", "items": n,
         "items_per_s": n / two["seconds"], "baseline": "the same pipeline, 1 worker",
         "baseline_items_per_s": n / one["seconds"], "target": ">= 1.6",
         "peak_rss_mib": two["peak_rss_mib"],
         "note": "RSS of the runner process; the 2 workers are processes of their own"},
        {"stage": f"pool scoring memory ({large:,} vs {small:,})", "items": large,
         "items_per_s": large / mem[large]["seconds"], "baseline": f"{small:,} pool",
         "baseline_items_per_s": small / mem[small]["seconds"],
         "ratio": mem[large]["peak_rss_mib"] / mem[small]["peak_rss_mib"],
         "target": "<= 1.2 (peak RSS)", "peak_rss_mib": mem[large]["peak_rss_mib"],
         "note": f"peak RSS {mem[small]['peak_rss_mib']:.0f} -> "
                 f"{mem[large]['peak_rss_mib']:.0f} MiB"}]


class _Embed(beam.DoFn):
    def __init__(self, ref: str, batch_size: int):
        self.ref, self.batch_size = ref, batch_size

    def setup(self):
        from winnow.selectors.embeddings import load_encoder
        self.model = load_encoder(self.ref)

    def process(self, batch):
        from winnow.selectors.embeddings import encode
        yield len(encode(self.model, batch, batch_size=self.batch_size))


def bench_embedding(n: int, batch_size: int = 128) -> list[dict[str, Any]]:
    """MiniLM in Beam (fp32 and int8) vs one ``SentenceTransformer.encode`` call over the
    same texts.  Each is timed ``EMBED_REPEATS`` times, interleaved, and the best run
    counts (the usual benchmark practice on a shared machine); the Beam timing includes
    loading the model in ``setup``."""
    from winnow.selectors.embeddings import encode, load_encoder

    texts = synthetic_utterances(n, seed=1)
    model = load_encoder("minilm")
    encode(model, texts[:256], batch_size=batch_size)  # warm-up
    load_encoder("minilm-int8")  # export once, outside the timing
    ref: list[np.ndarray] = []

    def plain() -> None:
        ref[:] = [model.encode(texts, batch_size=batch_size, normalize_embeddings=True)]

    def in_beam(model_ref: str) -> None:
        p = beam.Pipeline(options=pipeline_options(BeamSettings(), ["--direct_num_workers=1"]))
        (p | beam.Create(texts, reshuffle=False)
         | beam.BatchElements(min_batch_size=EMBED_ELEMENT_BATCH, max_batch_size=EMBED_ELEMENT_BATCH)
         | beam.ParDo(_Embed(model_ref, batch_size)))
        p.run().wait_until_finish()

    runs = {"plain": plain, "minilm": lambda: in_beam("minilm"),
            "minilm-int8": lambda: in_beam("minilm-int8")}
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(EMBED_REPEATS):  # interleaved, so a slow spell of the machine hits all
        for k, fn in runs.items():
            best[k] = min(best[k], _timed(fn))
    rows = []
    for name, model_ref in (("fp32", "minilm"), ("int8 ONNX Runtime", "minilm-int8")):
        row = {"stage": f"embedding MiniLM {name} (Beam)", "items": n,
               "items_per_s": n / best[model_ref], "baseline": "SentenceTransformer.encode fp32",
               "baseline_items_per_s": n / best["plain"],
               "target": ">= 0.9" if name == "fp32" else ">= 2", "peak_rss_mib": _peak_rss_mib()}
        if name != "fp32":
            cos = (encode(load_encoder(model_ref), texts, batch_size=batch_size) * ref[0]).sum(1)
            row["note"] = f"cosine to fp32: mean {cos.mean():.4f}, min {cos.min():.4f}"
        rows.append(row)
    return rows


def bench_kenlm(n: int, work: Path) -> list[dict[str, Any]]:
    import kenlm

    from winnow.lm.kenlm_tools import train_lm

    _, binary = train_lm(synthetic_utterances(20000, seed=3), work, "bench")
    pool = write_pool(work / "lm_pool.txt", n, seed=2)
    texts = pool.read_text(encoding="utf-8").splitlines()
    model = kenlm.Model(str(binary))
    base = n / _timed(lambda: [model.score(t, bos=True, eos=True) for t in texts])
    threshold = float(np.percentile([model.score(t) for t in texts[:10000]], 10))

    def go():
        p = beam.Pipeline(options=pipeline_options(BeamSettings(), ["--direct_num_workers=1"]))
        ranges = byte_ranges(str(pool), pool.stat().st_size, SPLIT_BYTES)
        (p | beam.Create(ranges) | beam.FlatMap(read_line_batches)
         | beam.ParDo(ScoreLm(str(binary), threshold)) | beam.CombineGlobally(sum))
        p.run().wait_until_finish()
    return [{"stage": "KenLM scoring + LM filter (Beam)", "items": n, "items_per_s": n / _timed(go),
             "baseline": "kenlm.Model.score loop", "baseline_items_per_s": base,
             "target": ">= 0.4", "peak_rss_mib": _peak_rss_mib()}]


def _bitext_stage(config: Path, out: Path, sample: float | None, **filter_settings: Any):
    """prepare + seed_lm, then the timed bitext stage of the LM workflow on ``config``'s
    bitext mix (each file sampled by id hash to ``sample``): the filter as a run does it."""
    from winnow.pipelines.config import load_config
    from winnow.pipelines.lm_workflow import LmRun
    from winnow.pipelines.stages import StageRunner

    cfg = load_config(config, [f"output_dir={out}", "eval=null"])
    for inp in cfg.bitext:
        inp.sample = sample
    for k, v in filter_settings.items():
        setattr(cfg.bitext_filter, k, v)
    st = StageRunner(out, quiet=True)
    run = LmRun(cfg, ["--direct_num_workers=1"], st)
    for name in ("prepare", "seed_lm"):
        st.run(name, "bench", getattr(run, name))
    seconds = _timed(lambda: st.run("bitext", "bench", run.bitext))
    stats = st.records["bitext"]["stats"]
    kept = {(r["id"], r["source"]) for r in
            (json.loads(line) for line in open(out / "bitext" / "filtered.jsonl", encoding="utf-8"))}
    return seconds, stats, kept, cfg.bitext_filter


def bench_bitext_mix(config: Path, sample: float | None, recall_sample: float,
                     work: Path) -> list[dict[str, Any]]:
    """The whole bitext filter (rules, Moore-Lewis shortlist, e5 distance; general LM and
    centroid included) on the LM config's bitext mix, in pairs read per second; and, on a
    ``recall_sample`` of the mix, the share of the pairs that the embedding-only filter
    (every pair embedded) keeps that the cascade keeps too, at the same keep/shortlist ratio.
    Where the two samples are one (``--quick``), the timed run is the recall's cascade run."""
    from winnow.pipelines.config import ConfigError, load_config

    try:
        s = load_config(config, ["eval=null"]).bitext_filter
    except ConfigError as err:  # the data sets are not beside the checkout: no row
        print(f"bitext filter cascade: skipped ({err})", flush=True)
        return []
    ratio = s.shortlist / s.keep_nearest
    keep = max(50, round(s.keep_nearest * recall_sample))
    recall = {"keep_nearest": keep, "shortlist": round(keep * ratio)}
    if sample == recall_sample:
        seconds, stats, cascade, s = _bitext_stage(config, work / "cascade", sample, **recall)
    else:
        seconds, stats, _, s = _bitext_stage(config, work / "mix", sample)
        _, _, cascade, _ = _bitext_stage(config, work / "cascade", recall_sample, **recall)
    _, _, embed_only, _ = _bitext_stage(config, work / "embedding", recall_sample,
                                        keep_nearest=keep, shortlist=None)
    overlap = len(cascade & embed_only) / max(len(embed_only), 1)
    return [{"stage": f"bitext filter cascade ({config.stem} mix)", "items": stats["read"],
             "items_per_s": stats["read"] / seconds, "baseline": None, "baseline_items_per_s": None,
             "ratio": overlap, "target": ">= 1,000 pairs/s", "peak_rss_mib": _peak_rss_mib(),
             "note": f"{seconds / 60:.1f} min; keeps {stats['kept']:,} (shortlist {s.shortlist:,}); "
                     f"ratio = share of the embedding-only filter's {len(embed_only):,} kept pairs "
                     f"that the cascade keeps ({recall_sample:.0%} sample, keep {keep:,})"}]


def bench_diversity(candidates: int, annotated: int, rounds: int) -> list[dict[str, Any]]:
    """The diversity selector at scale (Cho et al. step 4): candidates x annotated, rounds,
    as the intent workflow runs it: the domain classifier's in-domain probabilities over
    384-dim sentence embeddings first, then the weighted selection."""
    from winnow.selectors.diversity import diversity_order
    from winnow.selectors.in_domain import in_domain_probability
    from winnow.selectors.paraphrase import ParaphraseDetector

    rng = np.random.default_rng(0)

    def unit(n: int) -> np.ndarray:
        x = rng.standard_normal((n, DIVERSITY_DIM)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    det = ParaphraseDetector(d=rng.standard_normal(DIVERSITY_DIM).astype(np.float32),
                             s=rng.standard_normal(DIVERSITY_DIM).astype(np.float32) * 0.1, b=-1.0)
    cand, ann = unit(candidates), unit(annotated)
    start = time.perf_counter()
    weights = in_domain_probability(ann[:, :SENTENCE_DIM], cand[:, :SENTENCE_DIM], seed=0)
    domain_s = time.perf_counter() - start
    select_s = _timed(lambda: diversity_order(det, cand, ann, DIVERSITY_BATCH, rounds,
                                              weights=weights))
    seconds = domain_s + select_s
    return [{"stage": f"diversity selector ({annotated:,} annotated, {rounds} rounds)",
             "items": candidates, "items_per_s": candidates / seconds, "baseline": "-",
             "baseline_items_per_s": None, "ratio": seconds, "target": "<= 600 (s)",
             "peak_rss_mib": _peak_rss_mib(),
             "note": f"{seconds:.1f} s ({domain_s:.1f} s domain classifier)"}]


def _pool_scoring_seconds(pool: str, out_dir: str, beam_args: list[str]) -> float:
    """The product's pool-scoring stage (read, dedupe, score, top-k, write every decision)
    over one text file, from ``pool`` to ``out_dir``, 1 worker."""
    from winnow.pipelines.pool_scoring import build_pool_scoring, models_from_json

    models = models_from_json(_bench_models())
    options = pipeline_options(BeamSettings(), ["--direct_num_workers=1", *beam_args])
    return _timed(lambda: run_pipeline(
        lambda p: build_pool_scoring(p, [InputFile(path=pool, format="text")], models, set(),
                                     out_dir, TOP_K, None), options))


def bench_object_store(n: int, work: Path) -> list[dict[str, Any]]:
    """Pool scoring reading its pool from and writing its decisions to S3 (moto's server
    on 127.0.0.1), against the same stage on local disk: what the object store costs."""
    from winnow.pipelines import fileio
    from winnow.pipelines.emulators import s3_emulator

    pool = write_pool(work / "store_pool.txt", n, seed=7)
    local = _pool_scoring_seconds(str(pool), str(work / "store_out"), [])
    with s3_emulator("winnow-bench", work) as beam_args:
        fileio.configure(beam_args)
        fileio.write_bytes("s3://winnow-bench/pool.txt", pool.read_bytes())
        remote = _pool_scoring_seconds("s3://winnow-bench/pool.txt", "s3://winnow-bench/out",
                                       beam_args)
        written = len(fileio.list_tree("s3://winnow-bench/out"))
    pool.unlink()
    return [{"stage": "pool scoring on S3 (moto) vs local disk", "items": n,
             "items_per_s": n / remote, "baseline": "the same stage on local disk",
             "baseline_items_per_s": n / local, "target": "report (overhead)",
             "peak_rss_mib": _peak_rss_mib(),
             "note": f"{written} objects written; {remote:.1f} s vs {local:.1f} s"}]


def _print_row(row: dict[str, Any]) -> None:
    base = row["baseline_items_per_s"]
    print(f"{row['stage']:<46} {row['items']:>10,} {row['items_per_s']:>11,.0f} "
          f"{'-' if base is None else f'{base:,.0f}':>11} {row['ratio']:>6.2f} {row['target']:>18} "
          f"{row['peak_rss_mib']:>8.0f}  {row.get('note', '')}", flush=True)


def run_bench(quick: bool, out: Path, lm_config: Path = Path("configs/massive-de.yaml")
              ) -> list[dict[str, Any]]:
    sizes = QUICK if quick else FULL
    print(f"{'stage':<46} {'items':>10} {'items/s':>11} {'baseline/s':>11} {'ratio':>6} "
          f"{'target':>18} {'RSS MiB':>8}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for fn in (lambda: bench_pool(sizes["speed_pool"], sizes["memory"], work),
                   lambda: bench_embedding(sizes["embed"]),
                   lambda: bench_kenlm(sizes["kenlm"], work),
                   lambda: bench_diversity(*sizes["diversity"]),
                   lambda: bench_bitext_mix(lm_config, *sizes["bitext_mix"], work),
                   lambda: bench_object_store(sizes["object_store"], work)):
            for row in fn():
                if "ratio" not in row:
                    row["ratio"] = row["items_per_s"] / row["baseline_items_per_s"]
                rows.append(row)
                _print_row(row)
    out.write_text(json.dumps({"quick": quick, "rows": rows}, indent=1))
    return rows
