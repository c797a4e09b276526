"""Beam pipelines of the LM-bootstrapping workflow (Punjabi et al. 2019).

``build_bitext_filter``: cheap rules -> de-duplication -> embedding distance of the
target side to the in-domain centroid -> keep within ``max_distance`` or the N
nearest.  ``build_translation_filter``: per source utterance, pick the NMT top-1 or
the LM-rescored best of its n-best list, then drop translations the in-domain LM
deems too improbable.  Models load once per worker (``DoFn.setup``); embedding is
batched (``BatchElements``).
"""
from __future__ import annotations

import json
from typing import Any

import apache_beam as beam
import numpy as np

from winnow.lm.rescoring import Hypothesis, rescore
from winnow.lm.scoring import LanguageModel
from winnow.pipelines.beam_io import Counters, ReadRecords, WriteDecisions, write_rejected
from winnow.pipelines.config import BitextFilterSettings, InputFile
from winnow.pipelines.records import BitextPair, Decision, keep_first
from winnow.selectors.bitext_filter import CentroidDistance, cheap_rules

BITEXT_STAGE = "bitext"
TRANSLATION_STAGE = "translations"


def apply_rules(pair: BitextPair, s: dict[str, Any], tgt_lang: str) -> BitextPair | Decision:
    reason = cheap_rules(pair.src, pair.tgt, tgt_lang, s["min_tokens"], s["max_tokens"],
                         s["max_length_ratio"])
    return Decision(pair, False, reason) if reason else pair


class EmbedDistance(beam.DoFn):
    """Batches of pairs -> (distance, id, pair); the encoder loads once per worker."""

    def __init__(self, model_ref: str, centroid: list[float], batch_size: int):
        self.model_ref, self.centroid, self.batch_size = model_ref, centroid, batch_size

    def setup(self) -> None:
        from winnow.selectors.embeddings import load_encoder

        self.model = load_encoder(self.model_ref)
        self.dist = CentroidDistance(np.asarray(self.centroid, dtype=np.float32))

    def process(self, batch: list[BitextPair]):
        from winnow.selectors.embeddings import encode

        emb = encode(self.model, [p.tgt for p in batch], "passage", self.batch_size)
        for p, d in zip(batch, self.dist.distance(emb)):
            yield (round(float(d), 6), p.id, p)


def _decide_distance(item, max_distance: float | None, cutoff: tuple | None) -> Decision:
    d, pid, pair = item
    if max_distance is not None:
        kept = d <= max_distance
        return Decision(pair, kept, "" if kept else "too_far_from_domain", d)
    kept = cutoff is None or (d, pid, pair.source) <= tuple(cutoff)
    return Decision(pair, kept, "" if kept else "not_among_nearest", d)


def build_bitext_filter(p: beam.Pipeline, bitext: InputFile, s: BitextFilterSettings,
                        tgt_lang: str, centroid: np.ndarray, out_dir: str) -> None:
    read = p | "ReadBitext" >> ReadRecords(BITEXT_STAGE, [bitext])
    write_rejected(read["rejected"], out_dir)
    ruled = read["records"] | "CheapRules" >> beam.Map(apply_rules, s.model_dump(), tgt_lang)
    split = ruled | "SplitRules" >> beam.Partition(lambda x, _n: 1 if isinstance(x, Decision) else 0, 2)
    deduped = (split[0]
               | "KeyByPair" >> beam.Map(lambda q: (f"{q.src.lower()}\t{q.tgt.lower()}", q))
               | "GroupByPair" >> beam.GroupByKey()
               | "Dedupe" >> beam.FlatMap(lambda group: keep_first(group[1])))
    dsplit = deduped | "SplitDupes" >> beam.Partition(
        lambda x, _n: 1 if isinstance(x, Decision) else 0, 2)
    scored = (dsplit[0]
              # a fixed batch size: adaptive batching follows timings, and batch composition
              # changes float rounding, so outputs would differ from run to run
              | "Batch" >> beam.BatchElements(min_batch_size=s.batch_size,
                                              max_batch_size=s.batch_size)
              | "Embed" >> beam.ParDo(EmbedDistance(s.model, centroid.tolist(), s.batch_size)))
    if s.keep_nearest is not None:
        # (distance, id, source): a total order, so exactly keep_nearest are kept even where
        # distances tie and two bitext files named alike share ids
        cutoff = (scored | "Key" >> beam.Map(lambda t: (t[0], t[1], t[2].source))
                  | "Nearest" >> beam.combiners.Top.Smallest(s.keep_nearest)
                  | "Cutoff" >> beam.Map(lambda top: list(max(top)) if len(top) >= 1 else None))
        decided = scored | "Decide" >> beam.Map(_decide_distance, None,
                                                beam.pvalue.AsSingleton(cutoff))
    else:
        decided = scored | "Decide" >> beam.Map(_decide_distance, s.max_distance, None)
    ((decided, split[1], dsplit[1]) | "AllDecisions" >> beam.Flatten()
     | "Write" >> WriteDecisions(BITEXT_STAGE, out_dir))


class ChooseTranslation(beam.DoFn):
    """n-best list -> chosen translation (top-1 or LM-rescored) -> kept / dropped."""

    def __init__(self, lm_path: str, lm_weight: float | None, threshold: float | None):
        self.lm_path, self.lm_weight, self.threshold = lm_path, lm_weight, threshold

    def setup(self) -> None:
        self.lm = LanguageModel(self.lm_path)

    def process(self, row: dict[str, Any]):
        Counters(TRANSLATION_STAGE).read.inc()
        rec = BitextPair(id=row["id"], src=row["src"], tgt="", source=row.get("source", ""))
        nbest = [Hypothesis(t, s) for t, s in row["nbest"] if t.strip()]
        if not nbest:
            yield Decision(rec, False, "empty_translation")
            return
        yield choose(rec, nbest, self.lm, self.lm_weight, self.threshold)


def choose(rec: BitextPair, nbest: list[Hypothesis], lm: LanguageModel, lm_weight: float | None,
           threshold: float | None) -> Decision:
    """The one decision rule for translations, used by Beam and by λ tuning alike."""
    if lm_weight is None:
        text, nmt, rank = nbest[0].text, nbest[0].nmt_score, 0
    else:
        best = rescore(nbest, lm, lm_weight)[0]
        text, nmt, rank = best.text, best.nmt_score, best.rank_before
    per_token = lm.per_token(text)
    out = BitextPair(id=rec.id, src=rec.src, tgt=text, source=rec.source)
    scores = {"nmt_score": round(nmt, 4), "lm_per_token": round(per_token, 4), "nbest_rank": rank}
    if threshold is not None and per_token < threshold:
        return Decision(out, False, "lm_improbable", per_token, scores)
    return Decision(out, True, "", per_token, scores)


def build_translation_filter(p: beam.Pipeline, nbest_path: str, lm_path: str,
                             lm_weight: float | None, threshold: float | None, out_dir: str) -> None:
    (p | "ReadNbest" >> beam.io.ReadFromText(nbest_path)
     | "Parse" >> beam.Map(json.loads)
     | "Choose" >> beam.ParDo(ChooseTranslation(lm_path, lm_weight, threshold))
     | "Write" >> WriteDecisions(TRANSLATION_STAGE, out_dir))
