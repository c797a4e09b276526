"""Driver-side helpers: read small inputs whole (seed sets, evaluation files) with their
dead letters, write corpora as JSONL and Parquet, and cache sentence embeddings."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from winnow.pipelines import fileio
from winnow.pipelines.config import InputFile
from winnow.pipelines.readers import read_file, split_records, stable_fraction
from winnow.pipelines.records import Rejected, to_json


def iter_input(inp: InputFile, respect_partition: bool = True) -> Iterator[Any]:
    """Records and dead letters of an input, its partition, sample and limit applied, as a
    stream: large inputs (a bitext mix) are never held whole on the driver."""
    n = 0
    for path in fileio.expand(inp.path):
        for r in read_file(path, inp.format, locale=inp.locale):
            if isinstance(r, Rejected):
                yield r
                continue
            if respect_partition and inp.partition and getattr(r, "partition", "") != inp.partition:
                continue
            if inp.sample and stable_fraction(r.id, 0) >= inp.sample:
                continue
            if inp.limit and n >= inp.limit:
                return
            n += 1
            yield r


def read_input(inp: InputFile, respect_partition: bool = True) -> tuple[list, list[Rejected]]:
    return split_records(iter_input(inp, respect_partition))


def write_jsonl(path: str | Path, rows: list[Any]) -> None:
    """Atomic JSONL write; dataclass records or plain dicts."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((json.dumps(r, ensure_ascii=False, sort_keys=True) if isinstance(r, dict)
                     else to_json(r)) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_parquet(path: str | Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    os.replace(tmp, path)


class EmbeddingCache:
    """Embeddings by text, computed once per run with one loaded model.

    ``save`` is called when a stage completes, never mid-stage: a stage killed half-way
    recomputes its embeddings in the same batches as an uninterrupted run, so resumed runs
    stay byte-identical (batch composition changes float rounding).
    """

    def __init__(self, model_ref: str, path: str | Path, prompt: str | None = None):
        self.model_ref, self.path, self.prompt = model_ref, Path(path), prompt
        self._model = None
        self._vecs: dict[str, np.ndarray] = {}
        self._dirty = False
        if self.path.exists():
            z = np.load(self.path, allow_pickle=False)
            self._vecs = dict(zip(z["texts"].tolist(), z["vecs"]))

    def get(self, texts: list[str]) -> np.ndarray:
        from winnow.selectors.embeddings import encode, load_encoder

        missing = sorted({t for t in texts if t not in self._vecs})
        if missing:
            if self._model is None:
                self._model = load_encoder(self.model_ref)
            vecs = encode(self._model, missing, self.prompt)
            self._vecs.update(zip(missing, vecs))
            self._dirty = True
        return np.stack([self._vecs[t] for t in texts]) if texts else np.zeros((0, 1), np.float32)

    def save(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        texts = sorted(self._vecs)
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(tmp, texts=np.array(texts), vecs=np.stack([self._vecs[t] for t in texts]))
        os.replace(tmp, self.path)
