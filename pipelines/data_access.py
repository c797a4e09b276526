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

    A text's vector depends on its batch mates in the last bits (padding and batch size
    change float rounding), and those bits move where L-BFGS stops, so a figure can depend
    on which texts were embedded together.  Every vector therefore remembers the stage that
    embedded it (``begin``), and a stage sees only the vectors of the stages before it and
    its own: a stage redone after later ones ran (a changed setting re-keys it) embeds the
    same texts in the same batches as in a fresh run, not reusing what a later stage put
    there.  ``save`` is called when a stage completes, never mid-stage, so a stage killed
    half-way recomputes its embeddings as an uninterrupted run does.
    """

    UNKNOWN = 1 << 30  # the rank of a vector whose stage is not recorded: seen by no stage

    def __init__(self, model_ref: str, path: str | Path, prompt: str | None = None):
        self.model_ref, self.path, self.prompt = model_ref, Path(path), prompt
        self._model = None
        self._vecs: dict[str, np.ndarray] = {}
        self._rank: dict[str, int] = {}
        self._stage: int | None = None  # None: outside a stage, every vector is seen
        self._dirty = False
        self.encoded = 0  # texts embedded by this object (not taken from the file)
        if self.path.exists():
            z = np.load(self.path, allow_pickle=False)
            texts = z["texts"].tolist()
            self._vecs = dict(zip(texts, z["vecs"]))
            ranks = z["ranks"].tolist() if "ranks" in z.files else [self.UNKNOWN] * len(texts)
            self._rank = dict(zip(texts, ranks))

    def begin(self, stage: int) -> None:
        """Stage number ``stage`` (its place in a fresh run's order) starts; what an earlier
        run of the same stage embedded is no longer any stage's."""
        self._stage = stage
        for t, r in self._rank.items():
            if r == stage:
                self._rank[t] = self.UNKNOWN

    def _seen(self, text: str) -> bool:
        return text in self._vecs and (self._stage is None or self._rank[text] <= self._stage)

    def get(self, texts: list[str]) -> np.ndarray:
        from winnow.selectors.embeddings import encode, load_encoder

        missing = sorted({t for t in texts if not self._seen(t)})
        if missing:
            if self._model is None:
                self._model = load_encoder(self.model_ref)
            vecs = encode(self._model, missing, self.prompt)
            rank = -1 if self._stage is None else self._stage
            self._vecs.update(zip(missing, vecs))
            self._rank.update((t, rank) for t in missing)
            self.encoded += len(missing)
            self._dirty = True
        return np.stack([self._vecs[t] for t in texts]) if texts else np.zeros((0, 1), np.float32)

    def save(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        texts = sorted(self._vecs)
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(tmp, texts=np.array(texts), vecs=np.stack([self._vecs[t] for t in texts]),
                 ranks=np.array([self._rank[t] for t in texts], dtype=np.int64))
        os.replace(tmp, self.path)
