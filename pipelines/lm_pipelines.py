"""Beam pipelines of the LM-bootstrapping workflow (Punjabi et al. 2019).

``build_bitext_filter``: cheap rules -> de-duplication -> (optionally) a Moore-Lewis
shortlist: the cross-entropy difference of the target side under the seed LM and a
general LM, two KenLM queries per pair -> embedding distance of the shortlisted target
sides to the in-domain centroid -> keep within ``max_distance`` or the N nearest.
``build_translation_filter``: per source utterance, pick the NMT top-1 or the
LM-rescored best of its n-best list, then drop translations the in-domain LM deems too
improbable.  Models load once per worker (``DoFn.setup``); ranking is batched
(``BatchElements``), embedding grouped by word count and id hash (``EMBED_HASH_GROUPS``
says why).
"""
from __future__ import annotations

import json
from typing import Any

import apache_beam as beam
import numpy as np

from winnow.lm.moore_lewis import CrossEntropyDifference
from winnow.lm.rescoring import Hypothesis, rescore
from winnow.lm.scoring import LanguageModel
from winnow.pipelines.beam_io import Counters, ReadRecords, WriteDecisions, write_rejected
from winnow.pipelines.config import BitextFilterSettings, InputFile
from winnow.pipelines.readers import sample_key, stable_fraction
from winnow.pipelines.records import BitextPair, Decision, keep_first
from winnow.selectors.bitext_filter import CentroidDistance, cheap_rules

BITEXT_STAGE = "bitext"
TRANSLATION_STAGE = "translations"
RULE_NOT_SHORTLISTED = "not_in_shortlist"
RANK_BATCH = 1024  # target sides per KenLM ranking call
# Pairs to embed are grouped by their target side's word count and a hash of their id, so
# every group, and every encoder batch cut from it, holds the same pairs on every run and
# runner.  The int8 encoder quantises each batch's activations with one scale, so a
# sentence's embedding depends on its batch mates: batches cut from bundles
# (``BatchElements``) moved 8% of a 120k selection between two runs of one config.  Sentences
# of one word count pad little in a batch: on a 40k shortlist the encoder took 103 s against
# 223 s with groups by id hash alone (docs/lm-evaluation.md, stop 45).
EMBED_HASH_GROUPS = 16  # groups per word count; ~350 pairs per group at 160k


def apply_rules(pair: BitextPair, s: dict[str, Any], tgt_lang: str) -> BitextPair | Decision:
    reason = cheap_rules(pair.src, pair.tgt, tgt_lang, s["min_tokens"], s["max_tokens"],
                         s["max_length_ratio"])
    return Decision(pair, False, reason) if reason else pair


class RankMooreLewis(beam.DoFn):
    """Batches of pairs -> (cross-entropy difference, id, pair); both LMs load once per worker."""

    def __init__(self, in_domain_lm: str, general_lm: str, vocabulary: list[str]):
        self.in_domain_lm, self.general_lm, self.vocabulary = in_domain_lm, general_lm, vocabulary

    def setup(self) -> None:
        self.ranker = CrossEntropyDifference(LanguageModel(self.in_domain_lm),
                                             LanguageModel(self.general_lm), set(self.vocabulary))

    def process(self, batch: list[BitextPair]):
        for p, score in zip(batch, self.ranker.scores([p.tgt for p in batch])):
            yield (round(score, 6), p.id, p)


def _shortlisted(item, cutoff: list | None) -> int:
    ml, pid, pair = item
    return 0 if cutoff is not None and (ml, pid, pair.source) <= tuple(cutoff) else 1


def _embed_group(item: tuple[float | None, str, BitextPair]) -> tuple[int, int]:
    """(word count of the target side, hash bucket of id and source)."""
    return (len(item[2].tgt.split()),
            int(stable_fraction(sample_key(item[1], item[2].source), "embed") * EMBED_HASH_GROUPS))


class EmbedDistance(beam.DoFn):
    """Groups of (ranker score or None, id, pair) -> (distance, id, pair, ranker score),
    embedded in a fixed order (by id and source; the encoder then batches by length), so
    a pair's distance does not depend on the run; the encoder loads once per worker."""

    def __init__(self, model_ref: str, centroid: list[float], batch_size: int):
        self.model_ref, self.centroid, self.batch_size = model_ref, centroid, batch_size

    def setup(self) -> None:
        from winnow.selectors.embeddings import load_encoder

        self.model = load_encoder(self.model_ref)
        self.dist = CentroidDistance(np.asarray(self.centroid, dtype=np.float32))

    def process(self, group: tuple[int, list[tuple[float | None, str, BitextPair]]]):
        from winnow.selectors.embeddings import encode

        batch = sorted(group[1], key=lambda t: (t[1], t[2].source))
        emb = encode(self.model, [p.tgt for _, _, p in batch], "passage", self.batch_size)
        for (ml, pid, p), d in zip(batch, self.dist.distance(emb)):
            yield (round(float(d), 6), pid, p, ml)


class EmbedDistances(beam.PTransform):
    """(ranker score or None, id, pair) -> (distance, id, pair, ranker score), each pair
    embedded with the same batch mates on every run and runner (``EMBED_HASH_GROUPS``)."""

    def __init__(self, model_ref: str, centroid: list[float], batch_size: int):
        super().__init__()
        self.model_ref, self.centroid, self.batch_size = model_ref, centroid, batch_size

    def expand(self, pairs):
        return (pairs
                | "KeyByGroup" >> beam.Map(lambda t: (_embed_group(t), t))
                | "Group" >> beam.GroupByKey()
                | "Embed" >> beam.ParDo(EmbedDistance(self.model_ref, self.centroid,
                                                      self.batch_size)))


def _decide_distance(item, max_distance: float | None, cutoff: list | None) -> Decision:
    d, pid, pair, ml = item
    scores = {} if ml is None else {"moore_lewis": ml}
    if max_distance is not None:
        kept = d <= max_distance
        return Decision(pair, kept, "" if kept else "too_far_from_domain", d, scores)
    kept = cutoff is None or (d, pid, pair.source) <= tuple(cutoff)
    return Decision(pair, kept, "" if kept else "not_among_nearest", d, scores)


def _smallest(scored, n: int, label: str):
    """The largest (score, id, source) among the ``n`` smallest: a total order, so exactly n
    pass even where scores tie and two bitext files named alike share ids."""
    return (scored | f"{label}Key" >> beam.Map(lambda t: (t[0], t[1], t[2].source))
            | f"{label}Smallest" >> beam.combiners.Top.Smallest(n)
            | f"{label}Cutoff" >> beam.Map(lambda top: list(max(top)) if top else None))


def build_bitext_filter(p: beam.Pipeline, bitext: list[InputFile], s: BitextFilterSettings,
                        tgt_lang: str, centroid: np.ndarray, out_dir: str,
                        ranker: tuple[str, str, list[str]] | None = None) -> None:
    """``ranker`` (in-domain LM, general LM, in-domain vocabulary; see ``lm.moore_lewis``):
    with ``s.shortlist``, only the shortlist by cross-entropy difference is embedded; the
    rest is dropped as ``not_in_shortlist``."""
    read = p | "ReadBitext" >> ReadRecords(BITEXT_STAGE, bitext)
    write_rejected(read["rejected"], out_dir)
    ruled = read["records"] | "CheapRules" >> beam.Map(apply_rules, s.model_dump(), tgt_lang)
    split = ruled | "SplitRules" >> beam.Partition(lambda x, _n: 1 if isinstance(x, Decision) else 0, 2)
    deduped = (split[0]
               | "KeyByPair" >> beam.Map(lambda q: (f"{q.src.lower()}\t{q.tgt.lower()}", q))
               | "GroupByPair" >> beam.GroupByKey()
               | "Dedupe" >> beam.FlatMap(lambda group: keep_first(group[1])))
    dsplit = deduped | "SplitDupes" >> beam.Partition(
        lambda x, _n: 1 if isinstance(x, Decision) else 0, 2)
    undecided = [split[1], dsplit[1]]
    if s.shortlist is not None:
        if ranker is None:
            raise ValueError("bitext_filter.shortlist needs the in-domain and general LMs")
        ranked = (dsplit[0]
                  | "RankBatch" >> beam.BatchElements(min_batch_size=RANK_BATCH,
                                                      max_batch_size=RANK_BATCH)
                  | "MooreLewis" >> beam.ParDo(RankMooreLewis(*ranker)))
        cutoff = _smallest(ranked, s.shortlist, "Shortlist")
        parts = ranked | "SplitShortlist" >> beam.Partition(
            lambda x, _n, c: _shortlisted(x, c), 2, beam.pvalue.AsSingleton(cutoff))
        to_embed = parts[0]
        undecided.append(parts[1] | "NotShortlisted" >> beam.MapTuple(
            lambda ml, _pid, pair: Decision(pair, False, RULE_NOT_SHORTLISTED, ml,
                                            {"moore_lewis": ml})))
    else:
        to_embed = dsplit[0] | "Unranked" >> beam.Map(lambda q: (None, q.id, q))
    scored = to_embed | "Embed" >> EmbedDistances(s.model, centroid.tolist(), s.batch_size)
    if s.keep_nearest is not None:
        cutoff = _smallest(scored, s.keep_nearest, "Nearest")
        decided = scored | "Decide" >> beam.Map(_decide_distance, None,
                                                beam.pvalue.AsSingleton(cutoff))
    else:
        decided = scored | "Decide" >> beam.Map(_decide_distance, s.max_distance, None)
    ((decided, *undecided) | "AllDecisions" >> beam.Flatten()
     | "Write" >> WriteDecisions(BITEXT_STAGE, out_dir))


class ChooseTranslation(beam.DoFn):
    """n-best list -> chosen translation (top-1 or LM-rescored) -> kept / dropped."""

    def __init__(self, lm_path: str, lm_weight: float | None, threshold: float | None,
                 lenpen: float = 1.0):
        self.lm_path, self.lm_weight, self.threshold = lm_path, lm_weight, threshold
        self.lenpen = lenpen

    def setup(self) -> None:
        self.lm = LanguageModel(self.lm_path)

    def process(self, row: dict[str, Any]):
        Counters(TRANSLATION_STAGE).read.inc()
        rec = BitextPair(id=row["id"], src=row["src"], tgt="", source=row.get("source", ""))
        nbest = [Hypothesis(*h) for h in row["nbest"] if h[0].strip()]
        if not nbest:
            yield Decision(rec, False, "empty_translation")
            return
        yield choose(rec, nbest, self.lm, self.lm_weight, self.threshold, self.lenpen)


def choose(rec: BitextPair, nbest: list[Hypothesis], lm: LanguageModel, lm_weight: float | None,
           threshold: float | None, lenpen: float = 1.0) -> Decision:
    """The one decision rule for translations, used by Beam and by λ tuning alike
    (``lenpen``: the length penalty the n-best lists were ranked by)."""
    if lm_weight is None:
        text, nmt, rank = nbest[0].text, nbest[0].nmt_score, 0
    else:
        best = rescore(nbest, lm, lm_weight, lenpen)[0]
        text, nmt, rank = best.text, best.nmt_score, best.rank_before
    per_token = lm.per_token(text)
    out = BitextPair(id=rec.id, src=rec.src, tgt=text, source=rec.source)
    scores = {"nmt_score": round(nmt, 4), "lm_per_token": round(per_token, 4), "nbest_rank": rank}
    if threshold is not None and per_token < threshold:
        return Decision(out, False, "lm_improbable", per_token, scores)
    return Decision(out, True, "", per_token, scores)


def build_translation_filter(p: beam.Pipeline, nbest: dict[str, str], lm_path: str,
                             lm_weight: float | None, threshold: float | None, out_dir: str,
                             lenpen: float = 1.0) -> None:
    """``nbest``: {translator: its n-best file}.  Several translators (an ensemble) pool
    their decisions; each record's ``source`` names its translator, so a source sentence
    has one decision per translator."""
    reads = [p | f"ReadNbest{i}" >> beam.io.ReadFromText(path)
             | f"Parse{i}" >> beam.Map(lambda line, t: {**json.loads(line), "source": t}, name)
             for i, (name, path) in enumerate(sorted(nbest.items()))]
    (reads | "Pool" >> beam.Flatten()
     | "Choose" >> beam.ParDo(ChooseTranslation(lm_path, lm_weight, threshold, lenpen))
     | "Write" >> WriteDecisions(TRANSLATION_STAGE, out_dir))
