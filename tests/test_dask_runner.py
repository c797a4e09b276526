"""The pool-scoring, bitext-filter and LM-filter pipelines give the same records (order
aside) and the same counters on a real Dask cluster (scheduler + 2 worker processes on
127.0.0.1, started and stopped by pid) and on the DirectRunner with 2 worker processes
(multi_processing: DoFns pickled, models loaded in setup) as on the DirectRunner."""
from __future__ import annotations

import json
import math

import pytest

from conftest import BUCKET, REPO
from winnow.pipelines import dask_cluster
from winnow.pipelines.beam_io import check_accounting, pipeline_options, read_jsonl_shards, run_pipeline
from winnow.pipelines.config import BeamSettings, BitextFilterSettings, InputFile

OUTPUTS = ("kept", "dropped", "rejected")


@pytest.fixture(scope="module")
def dask_address(tmp_path_factory):
    state = tmp_path_factory.mktemp("dask")
    info = dask_cluster.start(state, workers=2, port=dask_cluster.free_port())
    yield info["address"].removeprefix("tcp://")
    dask_cluster.stop(state)


RUNNERS = {"direct": ("DirectRunner", ["--direct_num_workers=1"]),
           "multi_processing": ("DirectRunner", ["--direct_num_workers=2",
                                                 "--direct_running_mode=multi_processing"]),
           "dask": ("DaskRunner", ["--dask_partition_size=3"])}


def _run_both(build, stage: str, tmp_path, address: str) -> dict[str, tuple[dict, dict]]:
    """{runner: (accounting, {output: records})} for every entry of RUNNERS."""
    out = {}
    for name, (runner, extra) in RUNNERS.items():
        if runner == "DaskRunner":
            extra = [*extra, f"--dask_client_address={address}"]
        d = tmp_path / name
        counts = run_pipeline(lambda p, d=d: build(p, str(d)),
                              pipeline_options(BeamSettings(runner=runner), extra))
        out[name] = (check_accounting(stage, counts),
                       {name: read_jsonl_shards(d, name) for name in OUTPUTS})
    return out


def _canonical(rows: list[dict]) -> list[str]:
    """Records as sorted JSON with scores rounded (batch composition moves the last bits)."""
    def fix(v):
        if isinstance(v, float):
            return round(v, 5) if math.isfinite(v) else str(v)
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v
    return sorted(json.dumps(fix(r), sort_keys=True, ensure_ascii=False) for r in rows)


def _assert_same(results: dict, expect_counts: dict) -> None:
    acc_d, rows_d = results["direct"]
    assert acc_d == expect_counts
    for runner in RUNNERS:
        acc, rows = results[runner]
        assert acc == acc_d, runner
        for name in OUTPUTS:
            assert _canonical(rows[name]) == _canonical(rows_d[name]), (runner, name)


def test_pool_scoring_same_on_dask(tmp_path, dask_address):
    from winnow.pipelines.pool_scoring import build_pool_scoring
    from winnow.selectors.ngram_relevance import NgramRelevanceModel

    pos = ["wake me up at seven", "set an alarm for six am", "alarm at noon please"]
    neg = ["what is the weather", "play some jazz", "order a pizza", "turn the lights blue"]
    models = [NgramRelevanceModel.fit(pos, neg, label="alarm_set"),
              NgramRelevanceModel.fit(neg[:1] + ["will it rain", "how hot is it"], pos + neg[1:],
                                      label="weather_query")]
    pool = tmp_path / "pool.jsonl"
    lines = [json.dumps({"id": f"u{i}", "text": t}) for i, t in enumerate(
        ["set an alarm for seven", "set an alarm for seven", "alarm at six please",
         "wake me up at nine", "is it going to rain", "how hot is it in paris", "play some rock",
         "order a burger", "seed text here", "what is the weather like", "alarm for the weather"])]
    pool.write_text("\n".join(lines[:5] + ["{broken json"] + lines[5:]) + "\n")
    results = _run_both(
        lambda p, d: build_pool_scoring(p, [InputFile(path=str(pool), format="jsonl")], models,
                                        {"Seed text here"}, d, top_k=2, threshold=None),
        "pool", tmp_path, dask_address)
    _assert_same(results, {"read": 12, "kept": 4, "dropped": 7, "rejected": 1})


def test_pool_scoring_same_on_dask_in_a_bucket(tmp_path, dask_address, s3):
    """Pool and shards in S3 (moto): the Dask workers read and write the bucket, not the
    driver's disk, and give the direct runner's records."""
    from winnow.pipelines import fileio
    from winnow.pipelines.pool_scoring import build_pool_scoring
    from winnow.selectors.ngram_relevance import NgramRelevanceModel

    models = [NgramRelevanceModel.fit(["set an alarm for six", "wake me up at seven"],
                                      ["play some jazz", "what is the weather"], label="alarm_set")]
    lines = [json.dumps({"id": f"u{i}", "text": t}) for i, t in enumerate(
        ["set an alarm for seven", "alarm at six please", "play some rock", "order a burger",
         "wake me at nine", "what is the weather like"])]
    fileio.configure(s3)
    pool = f"s3://{BUCKET}/dask/pool.jsonl"
    fileio.write_bytes(pool, ("\n".join(lines[:3] + ["{broken"] + lines[3:]) + "\n").encode())
    out = {}
    for name, (runner, extra) in (("direct", RUNNERS["direct"]), ("dask", RUNNERS["dask"])):
        if runner == "DaskRunner":
            extra = [*extra, f"--dask_client_address={dask_address}"]
        d = f"s3://{BUCKET}/dask/{name}"
        counts = run_pipeline(
            lambda p, d=d: build_pool_scoring(p, [InputFile(path=pool, format="jsonl")], models,
                                              set(), d, top_k=2, threshold=None),
            pipeline_options(BeamSettings(runner=runner), [*extra, *s3]))
        out[name] = (check_accounting("pool", counts),
                     {o: _canonical(read_jsonl_shards(d, o)) for o in OUTPUTS})
    assert out["direct"][0] == {"read": 7, "kept": 2, "dropped": 4, "rejected": 1}
    assert out["dask"] == out["direct"]
    assert not list(tmp_path.iterdir()) and not list(REPO.glob("s3:*"))


def test_bitext_filter_same_on_dask(tmp_path, dask_address):
    from winnow.pipelines.lm_pipelines import build_bitext_filter
    from winnow.selectors.bitext_filter import CentroidDistance
    from winnow.selectors.embeddings import encode, load_encoder

    seed = ["stelle einen wecker für sieben uhr", "wie wird das wetter morgen",
            "spiele musik von adele", "mach das licht im wohnzimmer an"]
    centroid = CentroidDistance.fit(encode(load_encoder("e5-small"), seed, "passage")).centroid
    bt = tmp_path / "bt.tsv"
    bt.write_text("set an alarm for six\tstelle einen wecker für sechs uhr\n"
                  "how is the weather today\twie ist das wetter heute\n"
                  "could not open the file\tdatei konnte nicht geöffnet werden\n"
                  "invalid user name entered\tungültiger benutzername eingegeben\n"
                  "play some music please\tspiele bitte etwas musik\n"
                  "turn on the light\tmach das licht an\n"
                  "set an alarm for six\tstelle einen wecker für sechs uhr\n"
                  "ok\tok\n"
                  "ragged line\n")
    s = BitextFilterSettings(keep_nearest=3, batch_size=2)
    results = _run_both(
        lambda p, d: build_bitext_filter(p, [InputFile(path=str(bt), format="bitext")], s, "de",
                                         centroid, d),
        "bitext", tmp_path, dask_address)
    _assert_same(results, {"read": 9, "kept": 3, "dropped": 5, "rejected": 1})


def test_lm_filter_same_on_dask(tmp_path, dask_address):
    from winnow.lm.kenlm_tools import train_lm
    from winnow.lm.scoring import LanguageModel, percentile_threshold
    from winnow.pipelines.lm_pipelines import build_translation_filter

    seed = ["stelle einen wecker für sieben uhr", "wie wird das wetter morgen",
            "spiele musik von adele", "mach das licht in der küche an"] * 3
    _, binary = train_lm(seed, tmp_path / "lm", "seed", order=3)
    thr = percentile_threshold(LanguageModel(binary), seed, 5)
    rows = [{"id": str(i), "src": f"s{i}", "nbest": nb} for i, nb in enumerate([
        [["zzz qqq", -0.5, 3], ["stelle einen wecker für sieben uhr", -0.9, 7]],
        [["xx yy zz ww", -0.2, 5]], [], [["wie wird das wetter", -0.3, 5], ["wetter wie", -0.4, 3]],
        [["spiele musik", -0.1, 3]], [["mach das licht an", -0.6, 5], ["licht", -0.7, 2]]])]
    nb = tmp_path / "nbest.jsonl"
    nb.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = _run_both(
        lambda p, d: build_translation_filter(p, {"t": str(nb)}, str(binary), 1.0, thr, d),
        "translations", tmp_path, dask_address)
    acc = results["direct"][0]
    assert acc["read"] == 6 and acc["kept"] >= 1 and acc["dropped"] >= 2  # empty, junk
    _assert_same(results, acc)


# -- a worker killed mid-stage ----------------------------------------------------------

def _run_killing_a_worker(build, stage: str, out, tmp_path) -> tuple[dict, dict, bool]:
    """Run on a fresh 2-worker cluster and SIGKILL worker 0 (its process group, so no nanny
    brings it back) once it is working on the pipeline's tasks; return the accounting,
    the records, and whether the kill landed while the pipeline was running."""
    import os
    import signal
    import threading
    import time

    from distributed import Client

    state = tmp_path / "cluster"
    info = dask_cluster.start(state, workers=2, port=dask_cluster.free_port())
    address = info["address"]
    result: dict = {}

    def go():
        try:
            result["counts"] = run_pipeline(lambda p: build(p, str(out)), pipeline_options(
                BeamSettings(runner="DaskRunner"),
                ["--dask_partition_size=50", f"--dask_client_address={address.removeprefix('tcp://')}"]))
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            result["error"] = err
    try:
        with Client(address, timeout=10) as client:
            victim = next(a for a, w in client.scheduler_info()["workers"].items()
                          if w["name"] == "winnow-0")
            thread = threading.Thread(target=go)
            thread.start()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not client.processing().get(victim):
                time.sleep(0.05)
            killed_mid_run = thread.is_alive() and bool(client.processing().get(victim))
            os.killpg(info["pids"][1], signal.SIGKILL)
            thread.join(timeout=600)
    finally:
        dask_cluster.stop(state)
    assert "error" not in result, f"the run failed after the kill: {result.get('error')!r}"
    return (check_accounting(stage, result["counts"]),
            {name: read_jsonl_shards(out, name) for name in OUTPUTS}, killed_mid_run)


def _direct(build, stage: str, out) -> tuple[dict, dict]:
    counts = run_pipeline(lambda p: build(p, str(out)),
                          pipeline_options(BeamSettings(), ["--direct_num_workers=1"]))
    return check_accounting(stage, counts), {name: read_jsonl_shards(out, name) for name in OUTPUTS}


def test_killed_dask_worker_mid_pool_scoring_loses_nothing(tmp_path):
    """Dask reschedules the dead worker's tasks on the other one: the run completes with
    the same records and counters as the DirectRunner's."""
    from winnow.pipelines.bench import synthetic_utterances
    from winnow.pipelines.pool_scoring import build_pool_scoring
    from winnow.selectors.ngram_relevance import NgramRelevanceModel

    models = [NgramRelevanceModel.fit(["wake me up at seven", "set an alarm for six am"],
                                      ["what is the weather", "play some jazz"], label="alarm_set")]
    pool = tmp_path / "pool.txt"
    pool.write_text("".join(t + "\n" for t in synthetic_utterances(6000, seed=5)))
    build = lambda p, d: build_pool_scoring(  # noqa: E731
        p, [InputFile(path=str(pool), format="text")], models, set(), d, top_k=300, threshold=None)
    want_acc, want = _direct(build, "pool", tmp_path / "direct")
    acc, got, mid_run = _run_killing_a_worker(build, "pool", tmp_path / "dask", tmp_path)
    assert mid_run, "the worker was not busy with the pipeline when it was killed"
    assert acc == want_acc and want_acc["read"] == 6000
    for name in OUTPUTS:
        assert _canonical(got[name]) == _canonical(want[name]), name


def test_killed_dask_worker_mid_bitext_filter_loses_nothing(tmp_path):
    from winnow.pipelines.lm_pipelines import build_bitext_filter
    from winnow.selectors.bitext_filter import CentroidDistance
    from winnow.selectors.embeddings import encode, load_encoder

    centroid = CentroidDistance.fit(encode(load_encoder("e5-small"), [
        "stelle einen wecker für sieben uhr", "wie wird das wetter morgen"], "passage")).centroid
    hours = ["eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun", "zehn"]
    days = ["montag", "dienstag", "mittwoch", "donnerstag", "freitag", "samstag", "sonntag"]
    lines = [f"set an alarm for {h} on day {d}\tstelle einen wecker für {h} uhr am {d} {i}"
             for i in range(6) for h in hours for d in days]
    bt = tmp_path / "bt.tsv"
    bt.write_text("".join(x + "\n" for x in lines))
    s = BitextFilterSettings(keep_nearest=100, batch_size=16)
    build = lambda p, d: build_bitext_filter(  # noqa: E731
        p, [InputFile(path=str(bt), format="bitext")], s, "de", centroid, d)
    want_acc, want = _direct(build, "bitext", tmp_path / "direct")
    acc, got, mid_run = _run_killing_a_worker(build, "bitext", tmp_path / "dask", tmp_path)
    assert mid_run, "the worker was not busy with the pipeline when it was killed"
    assert acc == want_acc and want_acc["read"] == len(lines)
    for name in OUTPUTS:
        assert _canonical(got[name]) == _canonical(want[name]), name
