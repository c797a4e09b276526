"""Local object-store emulators, started and stopped by pid on 127.0.0.1: moto's S3
server and gcp-storage-emulator.  The tests and the bench's object-store row run the
product's bucket paths against them, so ``s3://`` and ``gs://`` are exercised without a
cloud.  Both come with the test requirements (``winnow[test]``)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from winnow.pipelines.dask_cluster import free_port

START_SECONDS = 60
S3_KEYS = ["--s3_access_key_id=x", "--s3_secret_access_key=y", "--s3_region_name=us-east-1"]


def _start(cmd: list[str], port: int, log: Path, env: dict[str, str] | None = None
           ) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)
    deadline = time.monotonic() + START_SECONDS
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


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@contextmanager
def s3_emulator(bucket: str, log_dir: Path) -> Iterator[list[str]]:
    """moto's S3 server with ``bucket`` created; yields the Beam options that reach it."""
    import boto3

    port = free_port()
    proc = _start([_tool("moto_server"), "-H", "127.0.0.1", "-p", str(port)], port,
                  log_dir / "moto.log")
    endpoint = f"http://127.0.0.1:{port}"
    try:
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="y",
                     region_name="us-east-1").create_bucket(Bucket=bucket)
        yield [f"--s3_endpoint_url={endpoint}", *S3_KEYS]
    finally:
        _stop(proc)


@contextmanager
def gcs_emulator(bucket: str, log_dir: Path) -> Iterator[dict[str, str]]:
    """gcp-storage-emulator in memory with ``bucket`` created; while it runs, this process's
    environment points Google clients at it; yields that environment for subprocesses."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    port = free_port()
    env = {**os.environ, "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "NO_GCE_CHECK": "true"}
    proc = _start([_tool("gcp-storage-emulator"), "start", "--host=127.0.0.1", f"--port={port}",
                   "--in-memory"], port, log_dir / "gcs.log", env)
    old = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "NO_GCE_CHECK")}
    os.environ.update({k: env[k] for k in old})
    try:
        storage.Client(project="test", credentials=AnonymousCredentials()).create_bucket(bucket)
        yield env
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _stop(proc)
