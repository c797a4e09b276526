"""Resumable stages: atomic outputs plus a completion record, one run per output folder.

A stage writes into ``<output_dir>/<name>.tmp`` and renames it to
``<output_dir>/<name>`` when done, then writes ``<name>/_DONE.json`` holding the
stage's key, its counts and timings.  A rerun skips a stage whose record holds the same
key; ``force`` redoes it.  The workflows build each key from the config sections the
stage reads, the keys of the stages it reads from, the code version (``code_version``) and
the content of its input files (``Fingerprints``), so a changed file or a new release
re-runs exactly the stages that depend on it.  ``_LOCK.json`` holds the folder for one run.

An ``output_dir`` on object storage (``gs://``, ``s3://``: anywhere Beam's FileSystems
writes) is the run's truth; the stages work in a local mirror of it (``local_root``),
where fairseq, lmplz and the rest find real files.  Beam stages write their shards
straight to the bucket (``StageRunner.sink``) and the driver pulls them into the mirror.
Where rename is a copy, completion is the order of writes: the stage's old objects go
first (its marker before the rest), then its new files, then ``_DONE.json`` last.  A stage
whose marker is missing in the bucket is redone; one whose marker holds the key is taken
from the mirror, or downloaded when the mirror lacks it (a new machine resumes the run).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from winnow.pipelines import fileio
from winnow.pipelines.beam_io import DryRun

DONE = "_DONE.json"
LOCK = "_LOCK.json"
FINGERPRINTS = "_fingerprints.json"
HASH_CHUNK = 1 << 22
SCRATCH_ENV = "WINNOW_SCRATCH"


def local_root(output_dir: str | Path) -> Path:
    """Where a run's stages work: ``output_dir`` itself, or for a bucket its local mirror
    under ``$WINNOW_SCRATCH`` (default: the system temp folder), one folder per bucket path."""
    out = str(output_dir)
    if fileio.is_local(out):
        return Path(out)
    import tempfile

    scheme, rest = out.split("://", 1)
    base = Path(os.environ.get(SCRATCH_ENV) or Path(tempfile.gettempdir()) / "winnow-scratch")
    return base / scheme / rest.strip("/")


def publish(output_dir: str | Path, local: Path) -> str:
    """Copy a run-level file (metrics, summary, report) from the mirror to a bucket
    ``output_dir``; returns where it is.  Local runs have it in place already."""
    out = str(output_dir)
    if fileio.is_local(out):
        return str(local)
    dest = fileio.join(out, local.relative_to(local_root(out)).as_posix())
    fileio.write_bytes(dest, local.read_bytes())
    return dest


def package_version() -> str:
    """The installed package's version: part of the first stage's key, so that every stage
    key (each chains its upstream keys) changes with a release.  A stage whose outputs
    change between releases also carries a version of its own in its key."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("winnow")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "source"


class Fingerprints:
    """Content digests (sha256) of input files, cached by (size, mtime): a file is hashed
    again only when its size or mtime changed, so reruns stay fast on large inputs (sha256
    reads ~500 MB/s here), while a file touched but unchanged does not re-run anything."""

    def __init__(self, cache_path: Path):
        self.path = cache_path
        self.cache: dict[str, dict[str, Any]] = (
            json.loads(cache_path.read_text()) if cache_path.exists() else {})

    def of(self, patterns: list[str]) -> dict[str, str]:
        """{file: digest} for every file the patterns (paths or globs) name."""
        out = {}
        for pattern in patterns:
            for path in fileio.expand(pattern):
                out[path] = self._digest(path) if fileio.is_local(path) else fileio.checksum(path)
        return out

    def _digest(self, path: str) -> str:
        st = os.stat(path)
        hit = self.cache.get(path)
        if hit and hit["size"] == st.st_size and hit["mtime_ns"] == st.st_mtime_ns:
            return hit["sha256"]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
                h.update(chunk)
        self.cache[path] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": h.hexdigest()}
        tmp = self.path.with_name(self.path.name + ".tmp")
        with _writes_to(self.path, "the input fingerprint cache"):
            tmp.write_text(json.dumps(self.cache, indent=1, sort_keys=True))
            os.replace(tmp, self.path)
        return self.cache[path]["sha256"]


class RunLocked(RuntimeError):
    pass


class OutputNotWritable(RuntimeError):
    """The output folder is full or read-only: one message naming the path; the stages
    completed before stay as they are, so a rerun resumes once there is room."""


# a stage that fails with one of these could not write its outputs
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
_WRITE_MESSAGES = tuple(os.strerror(e) for e in sorted(_WRITE_ERRNOS))


def _write_failure(err: BaseException) -> str | None:
    """The reason, where ``err`` (or an error it was raised from: Beam and subprocesses wrap
    the original) is a failed write; None for any other error."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _WRITE_ERRNOS:
            return os.strerror(seen.errno) + (f": {seen.filename}" if seen.filename else "")
        for msg in _WRITE_MESSAGES:
            if msg in str(seen):
                return msg
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def _writes_to(path: Path, what: str):
    try:
        yield
    except (RunLocked, OutputNotWritable):
        raise
    except Exception as err:
        reason = _write_failure(err)
        if reason is None:
            raise
        raise OutputNotWritable(f"{what} cannot write to {path} ({reason}); stages completed "
                                "before are kept: free space or fix permissions, then rerun "
                                "the same command to resume") from None


def _read_lock(lock: Path) -> dict[str, Any]:
    """The lock's holder; {} where the file is gone, or empty because its writer died
    between creating and writing it (a half-second grace covers a writer still at work)."""
    for _ in range(5):
        try:
            text = lock.read_text()
        except FileNotFoundError:
            return {}
        if text:
            try:
                return json.loads(text)
            except ValueError:
                return {}
        time.sleep(0.1)
    return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@dataclass(frozen=True)
class Stage:
    """A stage for ``StageRunner.run_all``: what it runs, its key, the stages it reads."""

    name: str
    key: str
    fn: Callable[[Path], dict[str, Any]]
    after: tuple[str, ...] = ()
    inputs: dict[str, str] | None = None
    concurrent: bool = False  # its work runs mostly in subprocesses: it may run beside others


class StageRunner:
    def __init__(self, output_dir: str | Path, force: set[str] | None = None, quiet: bool = False):
        self.remote = None if fileio.is_local(str(output_dir)) else str(output_dir).rstrip("/")
        self.root = local_root(output_dir)
        self.force = force or set()
        self.quiet = quiet
        self.records: dict[str, dict[str, Any]] = {}
        with _writes_to(self.root, "the output folder"):
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock()
        self.fingerprints = Fingerprints(self.root / FINGERPRINTS)
        if self.remote:  # fail now, naming the bucket, rather than after the first stage
            fileio.write_bytes(fileio.join(self.remote, "_WRITABLE"), b"winnow\n")

    def _lock(self) -> None:
        """Hold the output folder for this run: a second run on it stops at once, naming
        the first; a lock whose process is gone (a killed run) is taken over."""
        lock = self.root / LOCK
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        while not self._try_create(lock, me):
            other = _read_lock(lock)
            if other.get("pid") == me["pid"] and other.get("host") == me["host"]:
                break  # this process holds it already (the demo's second workflow)
            if other and (other.get("host") != me["host"] or _alive(int(other["pid"]))):
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(other.get("started", 0)))
                raise RunLocked(
                    f"{self.root}: another winnow run holds this output folder (pid "
                    f"{other['pid']} on {other.get('host')}, started {when}); wait for it, "
                    f"stop it, or pick another output_dir. If that run is gone, delete {lock}.")
            self.log(f"taking over a stale lock of pid {other.get('pid')} (no such process)")
            lock.unlink(missing_ok=True)
        self._lock_pid = me["pid"]
        import atexit
        atexit.register(self.release)

    @staticmethod
    def _try_create(lock: Path, me: dict[str, Any]) -> bool:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return True

    def release(self) -> None:
        """Give the output folder up (at exit, or when the workflow ends)."""
        lock = self.root / LOCK
        try:
            if json.loads(lock.read_text()).get("pid") == self._lock_pid:
                lock.unlink()
        except (OSError, ValueError):
            pass

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(f"[winnow] {msg}", file=sys.stderr, flush=True)

    def run(self, name: str, key: str, fn: Callable[[Path], dict[str, Any]],
            inputs: dict[str, str] | None = None) -> Path:
        """Run ``fn(tmp_dir) -> stats`` unless a completed run with the same key exists.
        ``inputs`` ({file: digest}, already part of the key) is recorded, so that a rerun
        can say which input file changed."""
        final = self.root / name
        rec = self._record(name)
        if rec is not None and name not in self.force and "all" not in self.force:
            if rec.get("key") == key:
                self._mirror(name, key)
                self.log(f"{name}: done earlier (skipped; --force {name} redoes it)")
                self.records[name] = rec
                return final
            for change in _changed(rec.get("inputs") or {}, inputs or {}):
                self.log(f"{name}: {change}")
        tmp = self.root / f"{name}.tmp"
        self.log(f"{name}: running")
        start = time.time()
        with _writes_to(tmp, f"stage {name}"):
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            if self.remote:  # the old marker first: from here the stage reads as not done
                fileio.delete_tree(fileio.join(self.remote, name), first=DONE)
            try:
                stats = fn(tmp) or {}
            except DryRun as done:
                raise DryRun(f"stage {name}: {done}") from None
            rec = {"stage": name, "key": key, "started": round(start, 2),
                   "seconds": round(time.time() - start, 2),
                   "stats": stats, "inputs": inputs or {}}
            if self.remote:
                rec["empty_files"] = fileio.empty_files(tmp)
            (tmp / DONE).write_text(json.dumps(rec, indent=1, sort_keys=True, default=str))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            if self.remote:
                fileio.upload_tree(final, fileio.join(self.remote, name), last=DONE)
        self.records[name] = rec
        self.log(f"{name}: done in {rec['seconds']}s {_brief(stats)}")
        return final

    def _record(self, name: str) -> dict[str, Any] | None:
        """The stage's completion record: the bucket's for a remote run (the mirror may be
        stale or gone), else the folder's; None where the stage never completed."""
        path = fileio.join(self.remote, name, DONE) if self.remote else str(self.root / name / DONE)
        if not fileio.exists(path):
            return None
        return json.loads(fileio.read_bytes(path))

    def _mirror(self, name: str, key: str) -> None:
        """Give the mirror a completed remote stage it lacks (or holds under another key)."""
        if not self.remote:
            return
        marker = self.root / name / DONE
        if marker.exists() and json.loads(marker.read_text()).get("key") == key:
            return
        tmp = self.root / f"{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        n = fileio.download_tree(fileio.join(self.remote, name), tmp)
        for rel in json.loads((tmp / DONE).read_text()).get("empty_files", []):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).touch()
        shutil.rmtree(self.root / name, ignore_errors=True)
        os.replace(tmp, self.root / name)
        self.log(f"{name}: {n} files fetched from {self.remote}")

    def sink(self, d: Path) -> str:
        """Where a Beam stage writes the shards of ``d`` (its folder or one inside it):
        ``d`` itself, or for a bucket run the same place in the bucket, so that workers
        never write the driver's disk; ``pull`` then brings the shards into the mirror."""
        if not self.remote:
            return str(d)
        stage, *rest = d.relative_to(self.root).parts
        return fileio.join(self.remote, stage.removesuffix(".tmp"), *rest)

    def pull(self, d: Path) -> None:
        """Copy what a Beam stage wrote to ``sink(d)`` into ``d`` (bucket runs only)."""
        if self.remote:
            fileio.download_tree(self.sink(d), d)

    def run_all(self, stages: list[Stage], workers: int = 1) -> None:
        """Run ``stages`` in dependency order.  Up to ``workers`` stages marked concurrent run
        at the same time (two translators train at once on two cores); any other stage
        runs alone.  Outputs do not depend on the order: each stage is seeded and reads
        only what it names in ``after``."""
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        pending = list(stages)
        done: set[str] = set()
        running: dict[Any, Stage] = {}
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            while pending or running:
                for stage in [s for s in pending if set(s.after) <= done]:
                    alone = not stage.concurrent or any(not r.concurrent for r in running.values())
                    if running and (alone or len(running) >= workers):
                        break
                    pending.remove(stage)
                    running[pool.submit(self.run, stage.name, stage.key, stage.fn,
                                        stage.inputs)] = stage
                if not running:
                    missing = {a for s in pending for a in s.after} - done - {s.name for s in pending}
                    raise RuntimeError(f"stages wait for stages that do not exist: {sorted(missing)}")
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    stage = running.pop(future)
                    if future.exception() is not None:
                        wait(running)  # let the others end before the error surfaces
                        raise future.exception()
                    done.add(stage.name)

    def key_of(self, name: str) -> str:
        return self.records[name]["key"]


def _changed(before: dict[str, str], now: dict[str, str]) -> list[str]:
    out = [f"input changed: {p}" for p in sorted(set(before) & set(now)) if before[p] != now[p]]
    out += [f"input added: {p}" for p in sorted(set(now) - set(before))]
    return out + [f"input removed: {p}" for p in sorted(set(before) - set(now))]


def _brief(stats: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in stats.items() if isinstance(v, (int, float))]
    return "(" + ", ".join(parts[:8]) + ")" if parts else ""


def write_json(path: str | Path, obj: Any) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False, default=str))
    os.replace(tmp, path)
