"""Inputs on object storage: the intent demo reads its data from s3:// (moto's server) and
gs:// (gcp-storage-emulator), both started on 127.0.0.1 by pid; the config validator
matches remote paths and names a missing bucket or object; the corpus equals the local
run's record for record (only the folder part of each source differs)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, intent_cmd
from winnow.pipelines.dask_cluster import free_port

BUCKET = "winnow-test"
S3_OPTS = ["--s3_access_key_id=x", "--s3_secret_access_key=y", "--s3_region_name=us-east-1"]


def _start(cmd: list[str], port: int, log: Path, env: dict | None = None) -> subprocess.Popen:
    import socket

    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    _stop(proc)
    raise RuntimeError(f"{cmd[0]} did not start: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server; yields the Beam options that point at it."""
    import boto3

    port = free_port()
    proc = _start([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p",
                   str(port)], port, tmp_path_factory.mktemp("moto") / "moto.log")
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="y",
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield [f"--s3_endpoint_url={endpoint}", *S3_OPTS]
    _stop(proc)


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """gcp-storage-emulator, in memory; yields the environment that points clients at it."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    port = free_port()
    env = {**os.environ, "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "NO_GCE_CHECK": "true"}
    proc = _start([str(Path(sys.executable).parent / "gcp-storage-emulator"), "start",
                   "--host=127.0.0.1", f"--port={port}", "--in-memory"], port,
                  tmp_path_factory.mktemp("gcs") / "gcs.log", env)
    old = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "NO_GCE_CHECK")}
    os.environ.update({k: env[k] for k in old})
    storage.Client(project="test", credentials=AnonymousCredentials()).create_bucket(BUCKET)
    yield env
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    _stop(proc)


def _upload(local: Path, prefix: str, beam_args: list[str]) -> None:
    from apache_beam.io.filesystems import FileSystems

    from winnow.pipelines import fileio
    fileio.configure(beam_args)
    for f in sorted(local.iterdir()):
        with FileSystems.create(f"{prefix}/{f.name}") as out:
            out.write(f.read_bytes())


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
    _upload(demo_data, prefix, beam_args)
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
    env = {**gcs, "WINNOW_DATA": f"gs://{BUCKET}/datasets"}
    cmd = [sys.executable, "-m", "winnow.pipelines.cli", "validate",
           str(REPO / "configs" / "dataflow-massive-intent.yaml")]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    bucket.blob("datasets/slurp/dataset/lm/lm.txt").delete()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "pool.1.path: file not found: gs://" in r.stderr
