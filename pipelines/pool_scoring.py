"""Beam pipeline: score an unlabeled pool with the n-gram relevance models and keep
the most relevant utterances per new intent (Cho et al. 2019, step 1).

read -> de-duplicate by normalised text (and drop texts of the seed / evaluation
sets) -> score against every new intent -> assign each utterance to its most
relevant intent -> keep the top-k per intent (or score >= threshold).  Every read
record ends up kept, dropped (rule + score) or rejected.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import apache_beam as beam

from winnow.pipelines.beam_io import ReadRecords, WriteDecisions, write_rejected
from winnow.pipelines.config import InputFile
from winnow.pipelines.records import Decision, Utterance
from winnow.selectors.ngram_relevance import NgramRelevanceModel, RelevanceTable

STAGE = "pool"
RULE_DUPLICATE = "duplicate"
RULE_EXCLUDED = "in_seed_or_eval_set"
RULE_TOP_K = "below_top_k"
RULE_THRESHOLD = "below_threshold"


def norm_key(text: str) -> str:
    return " ".join(text.lower().split())


def dedupe(group: tuple[str, Iterable[Utterance]], excluded: frozenset[str]
           ) -> Iterable[Utterance | Decision]:
    """The first record (by id) of a text survives; the rest are dropped as duplicates."""
    key, recs = group
    recs = sorted(recs, key=lambda r: (r.id, r.source))
    if key in excluded:
        for r in recs:
            yield Decision(r, False, RULE_EXCLUDED)
        return
    yield recs[0]
    for r in recs[1:]:
        yield Decision(r, False, RULE_DUPLICATE, scores={"duplicate_of": recs[0].id})


class ScoreRelevance(beam.DoFn):
    """Scores an utterance for every new intent; the table is built once per worker."""

    def __init__(self, models: list[dict[str, Any]], top_ngrams: int = 3):
        self.models_json, self.top_ngrams = models, top_ngrams

    def setup(self) -> None:
        models = [NgramRelevanceModel(weights=m["weights"], bias=m["bias"], label=m["label"])
                  for m in self.models_json]
        self.table = RelevanceTable(models)

    def process(self, rec: Utterance):
        scores = self.table.scores(rec.text)
        j = int(scores.argmax())
        best = self.table.models[j]
        yield (best.label, (round(float(scores[j]), 6), rec.id, rec,
                            best.top_ngrams(rec.text, self.top_ngrams)))


def _decide(item, cutoffs: dict[str, tuple[float, str]] | None, threshold: float | None) -> Decision:
    label, (score, rid, rec, top) = item
    details = {"intent": label, "top_ngrams": top}
    if threshold is not None:
        return Decision(rec, score >= threshold, "" if score >= threshold else RULE_THRESHOLD,
                        score, details)
    cut = cutoffs.get(label)
    kept = cut is not None and (score, rid) >= cut
    return Decision(rec, kept, "" if kept else RULE_TOP_K, score, details)


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
    model_json = [{"weights": m.weights, "bias": m.bias, "label": m.label} for m in models]
    scored = parts[0] | "Score" >> beam.ParDo(ScoreRelevance(model_json))
    if threshold is None:
        cutoffs = (scored
                   | "ScoreKey" >> beam.Map(lambda kv: (kv[0], (kv[1][0], kv[1][1])))
                   | "TopK" >> beam.combiners.Top.LargestPerKey(top_k)
                   | "Cutoff" >> beam.MapTuple(lambda label, top: (label, min(top))))
        decided = scored | "Select" >> beam.Map(_decide, beam.pvalue.AsDict(cutoffs), None)
    else:
        decided = scored | "Select" >> beam.Map(_decide, None, threshold)
    ((decided, parts[1]) | "AllDecisions" >> beam.Flatten()
     | "Write" >> WriteDecisions(STAGE, out_dir))
