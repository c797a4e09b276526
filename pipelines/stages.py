"""Resumable stages: atomic outputs plus a completion record.

A stage writes into ``<output_dir>/<name>.tmp`` and renames it to
``<output_dir>/<name>`` when done, then writes ``<name>/_DONE.json`` holding the
hash of its config sections and upstream stages, its counts and timings.  A rerun
skips a stage whose record matches; ``force`` redoes it.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DONE = "_DONE.json"


class StageRunner:
    def __init__(self, output_dir: str | Path, force: set[str] | None = None, quiet: bool = False):
        self.root = Path(output_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.force = force or set()
        self.quiet = quiet
        self.records: dict[str, dict[str, Any]] = {}

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(f"[winnow] {msg}", file=sys.stderr, flush=True)

    def run(self, name: str, key: str, fn: Callable[[Path], dict[str, Any]]) -> Path:
        """Run ``fn(tmp_dir) -> stats`` unless a completed run with the same key exists."""
        final = self.root / name
        marker = final / DONE
        if marker.exists() and name not in self.force and "all" not in self.force:
            rec = json.loads(marker.read_text())
            if rec.get("key") == key:
                self.log(f"{name}: done earlier (skipped; --force {name} redoes it)")
                self.records[name] = rec
                return final
        tmp = self.root / f"{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.log(f"{name}: running")
        start = time.time()
        stats = fn(tmp) or {}
        rec = {"stage": name, "key": key, "seconds": round(time.time() - start, 2), "stats": stats}
        (tmp / DONE).write_text(json.dumps(rec, indent=1, sort_keys=True, default=str))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        self.records[name] = rec
        self.log(f"{name}: done in {rec['seconds']}s {_brief(stats)}")
        return final

    def key_of(self, name: str) -> str:
        return self.records[name]["key"]


def _brief(stats: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in stats.items() if isinstance(v, (int, float))]
    return "(" + ", ".join(parts[:8]) + ")" if parts else ""


def write_json(path: str | Path, obj: Any) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False, default=str))
    os.replace(tmp, path)
