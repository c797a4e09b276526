"""Beam pipeline: score an unlabeled pool with the n-gram relevance models and keep
the most relevant utterances per new intent (Cho et al. 2019, step 1).

read -> de-duplicate by normalised text (and drop texts of the seed / evaluation
sets) -> score against every new intent -> assign each utterance to its most
relevant intent -> keep the top-k per intent (or score >= threshold).  Every read
record ends up kept, dropped (rule + score) or rejected.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import apache_beam as beam

from winnow.pipelines.beam_io import ReadRecords, WriteDecisions, write_rejected
from winnow.pipelines.config import InputFile
from winnow.pipelines.records import Decision, Utterance, keep_first
from winnow.selectors.ngram_relevance import (DEFAULT_TOP_NGRAMS, NgramRelevanceModel,
                                              RelevanceTable)

STAGE = "pool"
RULE_EXCLUDED = "in_seed_or_eval_set"
RULE_TOP_K = "below_top_k"
RULE_THRESHOLD = "below_threshold"


def norm_key(text: str) -> str:
    return " ".join(text.lower().split())


def unique_ids(kept: list[dict[str, Any]], taken: set[str]) -> tuple[list[dict[str, Any]], int]:
    """Kept records with ids that no other kept record and no id in ``taken`` share.

    Pool files come from many sources whose ids need not be unique together (HWU64's
    ``answerid`` repeats across its folds, and some rows say ``null``), while every later
    stage joins on the id. A colliding id is qualified with the record's source
    (``id@path:line``), which is unique; the rest keep their ids.
    """
    counts = Counter(r["id"] for r in kept)
    clash = {i for i, n in counts.items() if n > 1} | (set(counts) & taken)
    out = [{**r, "id": f"{r['id']}@{r['source']}"} if r["id"] in clash else r for r in kept]
    return out, sum(counts[i] for i in clash)


def dedupe(group: tuple[str, Iterable[Utterance]], excluded: frozenset[str]
           ) -> Iterable[Utterance | Decision]:
    """A text of the seed or evaluation sets is dropped; of the others, one record survives."""
    key, recs = group
    if key in excluded:
        for r in recs:
            yield Decision(r, False, RULE_EXCLUDED)
        return
    yield from keep_first(recs)


SCORE_BATCH = 2048  # utterances per vectorised scoring call


class ScoreRelevance(beam.DoFn):
    """Scores a batch of utterances for every new intent (one vectorised call per batch)
    and assigns each to its most relevant intent; the table is built once per worker."""

    def __init__(self, models: list[dict[str, Any]]):
        self.models_json = models

    def setup(self) -> None:
        self.table = RelevanceTable(models_from_json(self.models_json))

    def process(self, batch: list[Utterance]):
        scores = self.table.scores_batch([r.text for r in batch])
        best = scores.argmax(axis=1)
        labels = self.table.labels
        for rec, j, row in zip(batch, best.tolist(), scores.tolist()):
            yield labels[j], (round(row[j], 6), rec.id, rec)


class Select(beam.DoFn):
    """Keeps or drops a scored utterance; a kept one carries its top contributing n-grams
    (computed only for kept records: they are few, and provenance is per record)."""

    def __init__(self, models: list[dict[str, Any]], threshold: float | None,
                 top_ngrams: int = DEFAULT_TOP_NGRAMS):
        self.models_json, self.threshold, self.top_ngrams = models, threshold, top_ngrams

    def setup(self) -> None:
        self.models = {m.label: m for m in models_from_json(self.models_json)}

    def process(self, item, cutoffs: dict[str, tuple[float, str, str]] | None = None):
        label, (score, rid, rec) = item
        if self.threshold is not None:
            kept, rule = score >= self.threshold, RULE_THRESHOLD
        else:
            cut = cutoffs.get(label)
            kept, rule = cut is not None and (score, rid, rec.source) >= cut, RULE_TOP_K
        details: dict[str, Any] = {"intent": label}
        if kept:
            details["top_ngrams"] = self.models[label].top_ngrams(rec.text, self.top_ngrams)
        yield Decision(rec, kept, "" if kept else rule, score, details)


def models_from_json(models_json: list[dict[str, Any]]) -> list[NgramRelevanceModel]:
    return [NgramRelevanceModel.from_dict(m) for m in models_json]


def build_pool_scoring(p: beam.Pipeline, pool: list[InputFile], models: list[NgramRelevanceModel],
                       excluded: set[str], out_dir: str, top_k: int | None,
                       threshold: float | None) -> None:
    read = p | "ReadPool" >> ReadRecords(STAGE, pool)
    write_rejected(read["rejected"], out_dir)
    excl = frozenset(norm_key(t) for t in excluded)
    deduped = (read["records"]
               | "KeyByText" >> beam.Map(lambda r: (norm_key(r.text), r))
               | "GroupByText" >> beam.GroupByKey()
               | "Dedupe" >> beam.FlatMap(dedupe, excl))
    parts = deduped | "SplitDupes" >> beam.Partition(
        lambda x, _n: 1 if isinstance(x, Decision) else 0, 2)
    model_json = [m.to_dict() for m in models]
    scored = (parts[0]
              | "Batch" >> beam.BatchElements(min_batch_size=SCORE_BATCH, max_batch_size=SCORE_BATCH)
              | "Score" >> beam.ParDo(ScoreRelevance(model_json)))
    if threshold is None:
        cutoffs = (scored
                   # (score, id, source): a total order, so exactly k are kept even where
                   # scores tie and pool files reuse an id (see unique_ids)
                   | "ScoreKey" >> beam.Map(lambda kv: (kv[0], (kv[1][0], kv[1][1],
                                                                kv[1][2].source)))
                   | "TopK" >> beam.combiners.Top.LargestPerKey(top_k)
                   | "Cutoff" >> beam.MapTuple(lambda label, top: (label, min(top))))
        decided = scored | "Select" >> beam.ParDo(Select(model_json, None),
                                                  beam.pvalue.AsDict(cutoffs))
    else:
        decided = scored | "Select" >> beam.ParDo(Select(model_json, threshold))
    ((decided, parts[1]) | "AllDecisions" >> beam.Flatten()
     | "Write" >> WriteDecisions(STAGE, out_dir))
