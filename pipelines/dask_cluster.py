"""Start and stop a local Dask cluster (one scheduler, N single-threaded workers) by pid.

``make dask-up`` / ``make dask-down`` and the test fixture use it, so the DaskRunner
is exercised against real ``dask scheduler`` / ``dask worker`` processes on
127.0.0.1.  Workers run this interpreter, so they import the same winnow.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_PORT = 8786
DEFAULT_WORKERS = 2
START_TIMEOUT_S = 60.0


def _dask_cli() -> list[str]:
    return [sys.executable, "-m", "dask"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(state_dir: Path, workers: int = DEFAULT_WORKERS, port: int = DEFAULT_PORT) -> dict:
    """Start the cluster, wait until every worker has joined; state (pids, address) goes
    to ``state_dir/cluster.json``."""
    from distributed import Client

    state_dir.mkdir(parents=True, exist_ok=True)
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(
        [*_dask_cli(), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=open(state_dir / "scheduler.log", "w"), stderr=subprocess.STDOUT, env=env,
        start_new_session=True)]
    for i in range(workers):
        procs.append(subprocess.Popen(
            [*_dask_cli(), "worker", address, "--nthreads", "1", "--no-dashboard",
             "--name", f"winnow-{i}", "--local-directory", str(state_dir / f"worker-{i}")],
            stdout=open(state_dir / f"worker-{i}.log", "w"), stderr=subprocess.STDOUT, env=env,
            start_new_session=True))
    state = {"address": address, "pids": [p.pid for p in procs]}
    (state_dir / "cluster.json").write_text(json.dumps(state))
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with Client(address, timeout=5) as client:
                client.wait_for_workers(workers, timeout=max(1.0, deadline - time.monotonic()))
            return state
        except Exception as e:  # scheduler not up yet, or workers still joining
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                stop(state_dir)
                raise RuntimeError(f"Dask cluster did not start within {START_TIMEOUT_S:.0f} s "
                                   f"({e}); see the logs in {state_dir}") from e
            time.sleep(0.5)


def stop(state_dir: Path) -> None:
    """Terminate the processes recorded in ``state_dir/cluster.json`` (workers first)."""
    path = state_dir / "cluster.json"
    if not path.exists():
        return
    pids = json.loads(path.read_text())["pids"]
    for pid in reversed(pids):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    for pid in reversed(pids):
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.1)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    path.unlink()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["start", "stop"])
    ap.add_argument("--state-dir", default="runs/dask-cluster")
    ap.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    ap.add_argument("--port", type=int, default=DEFAULT_PORT)
    a = ap.parse_args(argv)
    if a.action == "start":
        state = start(Path(a.state_dir), a.workers, a.port)
        print(f"Dask cluster at {state['address']} (pids {state['pids']}); "
              f"run with --set beam.runner=DaskRunner "
              f"--dask_client_address={state['address'].removeprefix('tcp://')}")
    else:
        stop(Path(a.state_dir))
        print("Dask cluster stopped")


if __name__ == "__main__":
    main()
