"""Object storage: the intent demo reads its data from s3:// (moto's server) and gs://
(gcp-storage-emulator), both started on 127.0.0.1 by pid, and writes its whole run to the
bucket; the config validator matches remote paths and names a missing bucket or object;
a run resumes from the bucket alone (an empty local mirror) and after a SIGKILL; the
corpus equals the local run's record for record (only the folder part of each source
differs)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BUCKET, REPO, intent_cmd, kill_when_stage_starts, upload


def _corpus(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "corpus" / "corpus.jsonl").open()]
    for r in rows:  # the folder part of a source is where the data lay
        r["source"] = r["source"].rsplit("/", 1)[-1]
    return rows


@pytest.mark.parametrize("store", ["s3", "gs"])
def test_intent_demo_reads_its_inputs_from_a_bucket(store, request, demo_data, reference_run, tmp_path):
    beam_args = request.getfixturevalue("s3") if store == "s3" else []
    env = request.getfixturevalue("gcs") if store == "gs" else None
    prefix = f"{store}://{BUCKET}/demo-data"
    upload(demo_data, prefix, beam_args)
    cmd = intent_cmd(prefix, tmp_path / "run")
    r = subprocess.run(cmd + beam_args, cwd=REPO, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _corpus(tmp_path / "run") == _corpus(reference_run)
    sources = [json.loads(x)["source"] for x in (tmp_path / "run" / "corpus" / "corpus.jsonl").open()]
    assert all(s.startswith(prefix) for s in sources if s)
    # a missing object and a missing bucket: one message naming the key, exit 2
    for bad in (f"{prefix}/missing.jsonl", f"{store}://no-such-bucket-winnow/x.jsonl"):
        cmd = [a if "eval.test_path" not in a else f"eval.test_path={bad}" for a in cmd]
        r = subprocess.run([sys.executable, "-m", "winnow.pipelines.cli", "validate", *cmd[4:]]
                           + beam_args, cwd=REPO, capture_output=True, text=True, env=env)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert "eval.test_path" in r.stderr and bad.split("/")[2] in r.stderr
    shutil.rmtree(tmp_path / "run")


def test_dataflow_config_validates_with_its_data_in_a_gs_bucket(gcs, tmp_path):
    """The README's Dataflow recipe: WINNOW_DATA=gs://bucket/datasets; the validator matches
    every input (globs too) in the bucket, and names the key of one that is missing."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    bucket = storage.Client(project="test", credentials=AnonymousCredentials()).bucket(BUCKET)
    for name in ("massive/data/en-US.jsonl", "slurp/dataset/lm/lm.txt",
                 "hwu64_nlu_evaluation_data/KFold_1/testset/csv/alarm.csv"):
        bucket.blob(f"datasets/{name}").upload_from_string("stand-in\n")
    env = {**gcs, "WINNOW_DATA": f"gs://{BUCKET}/datasets", "WINNOW_RUNS": f"gs://{BUCKET}/runs"}
    cmd = [sys.executable, "-m", "winnow.pipelines.cli", "validate",
           str(REPO / "configs" / "dataflow-massive-intent.yaml")]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"output_dir=gs://{BUCKET}/runs/massive-intent-dataflow" in r.stdout
    bucket.blob("datasets/slurp/dataset/lm/lm.txt").delete()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "pool.1.path: file not found: gs://" in r.stderr


def test_dataflow_dry_run_builds_the_pool_job_from_a_gs_bucket(gcs, tmp_path):
    """The README's Dataflow command with --dry_run: the driver-side stages run against the
    bucket, then the DataflowRunner builds the pool-scoring job (Dataflow's overrides,
    environment and option checks) and stops before submitting; pool stays unfinished."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from conftest import massive_line

    intents = ["alarm_set", "play_podcasts", "weather_query", "takeaway_order",
               "iot_hue_lightchange", "music_likeness", "news_query"]
    lines = [massive_line(i * 20 + j, intent, f"{intent.replace('_', ' ')} request number {j}")
             for i, intent in enumerate(intents) for j in range(14)]
    bucket = storage.Client(project="test", credentials=AnonymousCredentials()).bucket(BUCKET)
    bucket.blob("dry/datasets/massive/data/en-US.jsonl").upload_from_string("\n".join(lines) + "\n")
    bucket.blob("dry/datasets/slurp/dataset/lm/lm.txt").upload_from_string("wake me up at six\n")
    bucket.blob("dry/datasets/hwu64_nlu_evaluation_data/KFold_1/testset/csv/alarm.csv") \
        .upload_from_string("alarm;set;wake me up at [time : six];x;y;z;w\n")
    env = {**gcs, "WINNOW_DATA": f"gs://{BUCKET}/dry/datasets",
           "WINNOW_RUNS": f"gs://{BUCKET}/dry/runs", "WINNOW_SCRATCH": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "winnow.pipelines.cli", "run",
                        str(REPO / "configs" / "dataflow-massive-intent.yaml"),
                        "--project=winnow-demo-1", f"--temp_location=gs://{BUCKET}/dry/tmp",
                        "--dry_run=True"], cwd=REPO, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "winnow: dry run: stage pool: Dataflow job " in r.stderr, r.stderr[-2000:]
    assert "built, not submitted" in r.stderr
    assert "steps Batch, ReadPool, SplitDupes, TopK, Write, WriteRejected)" in r.stderr
    run = "dry/runs/massive-intent-dataflow"
    assert bucket.blob(f"{run}/relevance/_DONE.json").exists()
    assert not bucket.blob(f"{run}/pool/_DONE.json").exists()


def _bucket_corpus(run: str, beam_args: list[str]) -> list[dict]:
    from winnow.pipelines import fileio
    fileio.configure(beam_args)
    text = fileio.read_bytes(f"{run}/corpus/corpus.jsonl").decode()
    rows = [json.loads(x) for x in text.splitlines()]
    for r in rows:
        r["source"] = r["source"].rsplit("/", 1)[-1]
    return rows


def _store(store: str, request) -> tuple[list[str], dict]:
    """Beam options and environment that reach the store's emulator."""
    if store == "s3":
        return request.getfixturevalue("s3"), dict(os.environ)
    return [], request.getfixturevalue("gcs")


@pytest.mark.parametrize("store", ["s3", "gs"])
def test_intent_demo_runs_in_a_bucket_and_resumes_from_it(store, request, demo_data, reference_run,
                                                          tmp_path):
    """output_dir in the bucket: the Beam stage writes its shards there, every stage's files
    and then its marker are uploaded, and a second machine (an empty local mirror) resumes
    the run from the bucket alone, running nothing again."""
    from winnow.pipelines import fileio
    beam_args, env = _store(store, request)
    data, run = f"{store}://{BUCKET}/demo-data", f"{store}://{BUCKET}/runs/whole"
    upload(demo_data, data, beam_args)
    env = {**env, "WINNOW_SCRATCH": str(tmp_path / "scratch")}
    cmd = [a for a in intent_cmd(data, run) if a != "--quiet"] + beam_args
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _bucket_corpus(run, beam_args) == _corpus(reference_run)
    names = fileio.list_tree(run)
    stages = [s for s in json.loads(fileio.read_bytes(f"{run}/summary.json"))]
    assert len(stages) >= 8 and all(f"{s}/_DONE.json" in names for s in stages)
    assert {"metrics.json", "report.html", "pool/kept-00000-of-00001.jsonl"} <= set(names)
    assert not list(REPO.glob(f"{store}:*")), "a bucket path was written as a local folder"
    shutil.rmtree(tmp_path / "scratch")
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert ": running" not in r.stderr and r.stderr.count("done earlier") == len(stages)
    assert "files fetched from" in r.stderr
    assert _bucket_corpus(run, beam_args) == _corpus(reference_run)
    # the report of a bucket run, from a machine without its mirror
    shutil.rmtree(tmp_path / "scratch")
    r = subprocess.run([sys.executable, "-m", "winnow.pipelines.cli", "report", run, *beam_args],
                       cwd=REPO, capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.strip() == f"{run}/report.html", r.stderr[-2000:]
    assert b"<h1>winnow run report" in fileio.read_bytes(f"{run}/report.html")


@pytest.mark.parametrize("store", ["s3", "gs"])
def test_sigkill_mid_stage_then_resume_on_a_bucket(store, request, demo_data, reference_run,
                                                   tmp_path):
    """Killed while self_training runs: the bucket has pool's marker and not
    self_training's; a rerun from an empty mirror fetches what was done, redoes the rest,
    and gives the uninterrupted run's corpus."""
    from winnow.pipelines import fileio
    beam_args, env = _store(store, request)
    data, run = f"{store}://{BUCKET}/demo-data", f"{store}://{BUCKET}/runs/killed"
    upload(demo_data, data, beam_args)
    scratch = tmp_path / "scratch"
    env = {**env, "WINNOW_SCRATCH": str(scratch)}
    cmd = intent_cmd(data, run) + beam_args
    kill_when_stage_starts(cmd, scratch / store / BUCKET / "runs" / "killed", "self_training", env)
    fileio.configure(beam_args)
    assert fileio.exists(f"{run}/pool/_DONE.json")
    assert not fileio.exists(f"{run}/self_training/_DONE.json")
    shutil.rmtree(scratch)
    r = subprocess.run([a for a in cmd if a != "--quiet"], cwd=REPO, capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "pool: done earlier" in r.stderr and "self_training: running" in r.stderr
    assert _bucket_corpus(run, beam_args) == _corpus(reference_run)


def test_an_output_dir_in_a_missing_bucket_is_one_message(s3, demo_data, tmp_path):
    bad = "s3://no-such-bucket-winnow/run"
    r = subprocess.run(intent_cmd(demo_data, bad) + s3, cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "WINNOW_SCRATCH": str(tmp_path)})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "no-such-bucket-winnow" in r.stderr and "cannot write" in r.stderr


def test_a_report_on_an_empty_bucket_prefix_is_one_message(s3, tmp_path):
    r = subprocess.run([sys.executable, "-m", "winnow.pipelines.cli", "report",
                        f"s3://{BUCKET}/no-run-here", *s3], cwd=REPO, capture_output=True,
                       text=True, env={**os.environ, "WINNOW_SCRATCH": str(tmp_path)})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert f"s3://{BUCKET}/no-run-here: no objects there" in r.stderr
