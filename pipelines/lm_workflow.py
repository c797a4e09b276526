"""LM bootstrapping through NMT (Punjabi et al., ASRU 2019) from a config.

prepare -> seed_lm -> bitext (Beam: rules, Moore-Lewis shortlist, embedding distance)
-> subword -> nmt_<variant> (fairseq train; fine-tunes on the seed's parallel pairs and
self-training) -> nbest_<variant> -> tune (λ on the tuning split) -> rows (Beam
choose/filter, then per row a pooled LM and the seed LM interpolated with the row's own
LM by KenLM's ``interpolate``, weights tuned on the tuning split) -> nmt_quality -> final_lm.

Ablation rows (each row: the seed LM combined with an LM of the row's text):
  seed_only        the seed alone
  target_text_only no translation: the target side of the filtered bitext (the peer)
  unfiltered       NMT trained on an equal-size random sample of the bitext, top-1
  embedding_filter NMT trained on the filtered bitext, top-1
  self_training    unfiltered NMT + self-training fine-tune, top-1
  seed_parallel    unfiltered NMT fine-tuned on the seed's own parallel pairs, top-1 (without
                   ``parallel_dev``: the seed back-translated, stage ``back_translation``)
  nbest_rescoring  unfiltered NMT, n-best rescored with the seed LM
  lm_filter        unfiltered NMT, top-1, improbable translations dropped
  general_text     unfiltered NMT, top-1, with general target text for the words it lacks
                   (``general_text.enabled``; ``lm.general_text``)
  all              filtered NMT, seed-parallel fine-tune, self-training, rescored, LM-filtered,
                   general text; with ``nmt.ensemble`` K, K such translators
                   (``<variant>_m<k>``, each its own base and seed) whose kept translations pool
"""
from __future__ import annotations

import functools
import random
import shutil
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from winnow.lm.evaluation import evaluate, seed_vocabulary
from winnow.lm.combine import Combined, combine
from winnow.lm.general_text import Amount, Candidate, choose_amount, select
from winnow.lm.kenlm_tools import train_lm, write_text
from winnow.lm.rescoring import Hypothesis
from winnow.lm.scoring import LanguageModel, percentile_threshold
from winnow.lm.text import map_to_vocabulary, normalize
from winnow.pipelines.beam_io import (check_accounting, check_accounting_by_file, iter_jsonl_shards,
                                      pipeline_options, read_jsonl_shards, run_pipeline, source_file)
from winnow.pipelines import fileio
from winnow.pipelines.config import InputFile, LmConfig, section_hash
from winnow.pipelines.data_access import (EmbeddingCache, iter_input, read_input, read_jsonl,
                                          write_jsonl, write_parquet)
from winnow.pipelines.readers import sample_key, stable_fraction
from winnow.pipelines.lm_pipelines import (build_bitext_filter, build_translation_filter, choose)
from winnow.pipelines.records import BitextPair, Rejected
from winnow.pipelines.stages import Fingerprints, Stage, StageRunner, package_version, publish, write_json
from winnow.selectors.bitext_filter import CentroidDistance
from winnow.translate import fairseq_nmt
from winnow.translate.subword import Subword


@dataclass(frozen=True)
class Row:
    nmt: str | None  # NMT variant, None for rows without translation
    rescore: bool = False
    lm_filter: bool = False
    target_text: bool = False  # the filtered bitext's target side instead of translations
    general_text: bool = False  # general target text added for the words the text lacks
    members: int = 1  # independently trained copies of the variant whose translations pool

    @property
    def translators(self) -> list[str]:
        """The variant of each member: ``v``, then ``v_m2``, ``v_m3``...  (``member``)."""
        if self.nmt is None:
            return []
        return [self.nmt] + [f"{self.nmt}{MEMBER}{k}" for k in range(2, self.members + 1)]


@dataclass(frozen=True)
class Variant:
    """A translator: trained on a bitext (``base``), or fine-tuned from ``parent`` by one step."""

    base: str  # "unfiltered" / "filtered": the bitext under every variant of the chain
    parent: str | None = None
    step: str | None = None  # "seed_parallel" or "self_train"


VARIANTS: dict[str, Variant] = {
    "unfiltered": Variant("unfiltered"),
    "filtered": Variant("filtered"),
    "unfiltered_st": Variant("unfiltered", "unfiltered", "self_train"),
    "unfiltered_sp": Variant("unfiltered", "unfiltered", "seed_parallel"),
    "filtered_st": Variant("filtered", "filtered", "self_train"),
    "filtered_sp": Variant("filtered", "filtered", "seed_parallel"),
    "filtered_sp_st": Variant("filtered", "filtered_sp", "self_train"),
}


ROW_NAMES = ("seed_only", "target_text_only", "unfiltered", "embedding_filter", "self_training",
             "seed_parallel", "nbest_rescoring", "lm_filter", "general_text", "all")


def back_translates(cfg: LmConfig) -> bool:
    """Whether the seed's sources come from a back-translation (there is no ``parallel_dev``)."""
    return cfg.seed_parallel.enabled and cfg.parallel_dev is None and cfg.back_translation.enabled


def rows_for(cfg: LmConfig) -> dict[str, Row]:
    seed_parallel = ((cfg.seed_parallel.enabled and cfg.parallel_dev is not None)
                     or back_translates(cfg))
    rows = {"seed_only": Row(None), "target_text_only": Row(None, target_text=True),
            "unfiltered": Row("unfiltered"), "embedding_filter": Row("filtered"),
            "self_training": Row("unfiltered_st"), "seed_parallel": Row("unfiltered_sp"),
            "nbest_rescoring": Row("unfiltered", rescore=True),
            "lm_filter": Row("unfiltered", lm_filter=True),
            "general_text": Row("unfiltered", general_text=True),
            "all": Row("filtered_sp_st" if seed_parallel else "filtered_st", rescore=True,
                       lm_filter=True, general_text=cfg.general_text.enabled,
                       members=cfg.nmt.ensemble)}
    if not seed_parallel:
        del rows["seed_parallel"]
    if not cfg.general_text.enabled:
        del rows["general_text"]
    if not cfg.ablation:
        rows = {k: rows[k] for k in ("seed_only", "target_text_only", "all")}
    return rows


MEMBER = "_m"  # ``filtered_sp_m2``: member 2 of an ensemble, its own base and seed


def member(name: str) -> tuple[str, int]:
    """(variant, member number) of a translator's name: ``filtered_sp_m2`` -> (filtered_sp, 2)."""
    head, sep, k = name.rpartition(MEMBER)
    return (head, int(k)) if sep and k.isdigit() and head in VARIANTS else (name, 1)


def variant(name: str) -> Variant:
    """A translator's recipe; a member's parent is the same member's parent variant."""
    v, k = member(name)
    var = VARIANTS[v]
    if k == 1 or var.parent is None:
        return var
    return Variant(var.base, f"{var.parent}{MEMBER}{k}", var.step)


def chain(name: str) -> list[str]:
    """The translator and every translator it is fine-tuned from, base first."""
    out = [name]
    while (parent := variant(out[0]).parent) is not None:
        out.insert(0, parent)
    return out


class LmRun:
    def __init__(self, cfg: LmConfig, beam_args: list[str], runner: StageRunner):
        self.cfg, self.beam_args, self.st = cfg, beam_args, runner
        self.out = runner.root
        self.rows = rows_for(cfg)

    def _texts(self, name: str) -> list[str]:
        return [r["text"] for r in read_jsonl(self.out / "prepare" / name)]

    def _pairs(self, path: Path) -> list[tuple[str, str]]:
        return [(r["src"], r["tgt"]) for r in read_jsonl(path)]

    def _nmt_text(self, text: str) -> str:
        """What the translator reads and writes: the LM's normalisation (lower-cased, no
        punctuation), the style of spoken seeds, unless ``nmt.normalize`` is off."""
        return normalize(text) if self.cfg.nmt.normalize else text

    def _nmt_pairs(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        out = [(self._nmt_text(a), self._nmt_text(b)) for a, b in pairs]
        return [(a, b) for a, b in out if a and b]

    # -- stages ----------------------------------------------------------------------
    def prepare(self, d: Path) -> dict[str, Any]:
        cfg = self.cfg
        target, rej_t = read_input(cfg.target_seed)
        source, rej_s = read_input(cfg.source_in_domain)
        test = []
        if cfg.eval is not None:  # read whole; its texts never enter seed or tuning split
            test, _ = read_input(InputFile(path=cfg.eval.test_path, format=cfg.eval.test_format),
                                 respect_partition=False)
        test_texts = {t.text.lower() for t in test}
        target = [r for r in target if r.text.lower() not in test_texts]
        tuning = [r for r in target if stable_fraction(r.id, cfg.seed) < cfg.tuning_fraction]
        seed = [r for r in target if stable_fraction(r.id, cfg.seed) >= cfg.tuning_fraction]
        rows = lambda recs: [{"id": r.id, "text": r.text} for r in recs]  # noqa: E731
        write_jsonl(d / "seed.jsonl", rows(seed))
        write_jsonl(d / "tuning.jsonl", rows(tuning))
        write_jsonl(d / "test.jsonl", rows(test))
        write_jsonl(d / "source.jsonl", rows(source))
        write_jsonl(d / "rejected.jsonl", rej_t + rej_s)
        stats = {"seed": len(seed), "tuning": len(tuning), "test": len(test),
                 "source": len(source), "rejected": len(rej_t) + len(rej_s)}
        if cfg.parallel_dev is not None:
            par, _ = read_input(cfg.parallel_dev)
            src_by_id = {r.id: r.text for r in par}
            for name, part in (("tuning_parallel", tuning), ("seed_parallel", seed)):
                refs = [{"id": r.id, "src": src_by_id[r.id], "ref": r.text} for r in part
                        if r.id in src_by_id]
                write_jsonl(d / f"{name}.jsonl", refs)
                stats[name] = len(refs)
        return stats

    def seed_lm(self, d: Path) -> dict[str, Any]:
        seed = self._texts("seed.jsonl")
        train_lm(seed, d, "seed", order=self.cfg.final_lm.order, memory=self.cfg.final_lm.memory,
                 intermediate=True)
        write_text(self._texts("tuning.jsonl"), d / "tuning.txt")
        return {"sentences": len(seed)}

    def _ranker(self, d: Path) -> tuple[tuple[str, str, list[str]], int]:
        """The Moore-Lewis ranker's models: the seed LM, and a general LM of the target
        sides of an id-hash sample of the bitext (about ``general_lm_sentences``, streamed,
        never held whole) over the seed's vocabulary (``lm.moore_lewis``)."""
        cfg = self.cfg
        vocabulary = seed_vocabulary(self._texts("seed.jsonl"))
        total = sum(_count_lines(p) for inp in cfg.bitext for p in fileio.expand(inp.path))
        rate = min(1.0, cfg.bitext_filter.general_lm_sentences / max(total, 1))
        sample = [map_to_vocabulary(r.tgt, vocabulary) for inp in cfg.bitext
                  for r in iter_input(inp) if not isinstance(r, Rejected)
                  and stable_fraction(sample_key(r.id, r.source), f"general-{cfg.seed}") < rate]
        _, binary = train_lm(sample, d, "general", order=cfg.final_lm.order,
                             memory=cfg.final_lm.memory)
        return (str(self.out / "seed_lm" / "seed.binary"), str(binary), sorted(vocabulary)), len(sample)

    def bitext(self, d: Path) -> dict[str, Any]:
        cfg = self.cfg
        cache = EmbeddingCache(cfg.bitext_filter.model, d / "seed_embeddings.npz", prompt="passage")
        centroid = CentroidDistance.fit(cache.get(self._texts("seed.jsonl")))
        cache.save()
        centroid.save(str(d / "centroid.npy"))
        stats: dict[str, Any] = {}
        ranker = None
        if cfg.bitext_filter.shortlist is not None:
            ranker, stats["general_lm_sentences"] = self._ranker(d)
        counts = run_pipeline(
            lambda p: build_bitext_filter(p, cfg.bitext, cfg.bitext_filter, cfg.tgt_lang,
                                          centroid.centroid, self.st.sink(d), ranker),
            pipeline_options(cfg.beam, self.beam_args))
        self.st.pull(d)
        stats.update(check_accounting("bitext", counts))
        # ranked as the filter ranked them: (distance, id, source) is a total order
        kept = sorted(read_jsonl_shards(d, "kept"),
                      key=lambda r: (r["_decision"]["score"], r["id"], r["source"]))
        dropped = read_jsonl_shards(d, "dropped")
        by_file = check_accounting_by_file("bitext", counts, kept, dropped,
                                           read_jsonl_shards(d, "rejected"))
        write_jsonl(d / "filtered.jsonl", [{k: r[k] for k in ("id", "src", "tgt", "source")} |
                                           {"distance": r["_decision"]["score"]} for r in kept])
        write_parquet(d / "filtered.parquet", [{k: r[k] for k in ("id", "src", "tgt", "source")} |
                                               {"distance": r["_decision"]["score"]} for r in kept])
        # the unfiltered baseline: an equal-size random sample of all pairs that were read
        everything = sorted(kept + dropped, key=lambda r: (r["id"], r["source"]))
        rng = random.Random(cfg.seed)
        sample = rng.sample(everything, min(len(kept), len(everything)))
        write_jsonl(d / "unfiltered.jsonl", [{k: r[k] for k in ("id", "src", "tgt", "source")}
                                             for r in sample])
        stats.update({f"dropped.{k}": v for k, v in
                      sorted(Counter(r["_decision"]["rule"] for r in dropped).items())})
        for r in dropped:  # what each file lost to which rule
            by_file[source_file(r)].setdefault(r["_decision"]["rule"], 0)
            by_file[source_file(r)][r["_decision"]["rule"]] += 1
        stats["by_source"] = by_file
        return stats

    def subword(self, d: Path) -> dict[str, Any]:
        bt = self.out / "bitext"
        text = [t for path in ("filtered.jsonl", "unfiltered.jsonl")
                for s, t_ in self._pairs(bt / path) for t in (s, t_)]
        text += self._texts("seed.jsonl") + self._texts("source.jsonl")
        text = [self._nmt_text(t) for t in text]
        Subword.train(text, d / "spm", vocab_size=self.cfg.nmt.vocab_size, seed=self.cfg.seed)
        return {"sentences": len(text)}

    def _settings(self, name: str) -> fairseq_nmt.NmtSettings:
        """fairseq settings; member k of an ensemble trains and decodes with seed + k - 1."""
        n = self.cfg.nmt
        return fairseq_nmt.NmtSettings(
            encoder_layers=n.encoder_layers, decoder_layers=n.decoder_layers, embed_dim=n.embed_dim,
            ffn_dim=n.ffn_dim, heads=n.heads, dropout=n.dropout, lr=n.lr,
            warmup_updates=n.warmup_updates, max_tokens=n.max_tokens, max_updates=n.max_updates,
            max_minutes=n.max_minutes, finetune_updates=n.finetune_updates, beam=n.beam,
            nbest=n.nbest, lenpen=n.lenpen, seed=self.cfg.seed + member(name)[1] - 1, threads=n.threads,
            precision=n.precision, lr_schedule=n.lr_schedule)

    def _parallel(self, name: str, back_translated: bool = False) -> list[tuple[str, str]]:
        """(source, target) pairs of the seed or the tuning split: ``parallel_dev``'s, or
        the back-translated ones (chrF and BLEU use only the former)."""
        path = self.out / ("back_translation" if back_translated else "prepare") / f"{name}.jsonl"
        return [(r["src"], r["ref"]) for r in read_jsonl(path)] if path.exists() else []

    def _back_translated(self, name: str) -> bool:
        """Whether translator ``name`` learns from back-translated seed pairs."""
        return back_translates(self.cfg) and "seed_parallel" in (variant(x).step
                                                                 for x in chain(name))

    def _valid(self, name: str) -> list[tuple[str, str]]:
        """The pairs a translator is validated on: the tuning split's (back-translated for
        the translators that learn from back-translated seed pairs), else general pairs."""
        return self._nmt_pairs(self._parallel("tuning_parallel", self._back_translated(name))
                               or self._pairs(self.out / "bitext" / "filtered.jsonl")[:200])

    def back_translation(self, d: Path) -> dict[str, Any]:
        """Sources for the seed and the tuning split where no file gives them: a translator
        trained target -> source on the filtered bitext (the filtered base's settings and
        seed) translates their sentences, top-1.  The seed-parallel fine-tune then learns
        the in-domain target side from real sentences, and is validated on the tuning
        split's sentences as it is with real sources."""
        cfg = self.cfg
        sw = Subword(self.out / "subword" / "spm.model")
        s = self._settings("filtered")
        src, tgt = cfg.src_lang, cfg.tgt_lang
        pairs = [(b, a) for a, b in self._nmt_pairs(self._pairs(self.out / "bitext" / "filtered.jsonl"))]
        data = fairseq_nmt.binarize(d, sw, pairs, pairs[:200], tgt, src)
        reverse = fairseq_nmt.train(data, d / "checkpoints", s, d / "train.log")
        stats: dict[str, Any] = {"pairs": len(pairs)} | self._base_trained(d, s)
        for name, part in (("seed_parallel", "seed.jsonl"), ("tuning_parallel", "tuning.jsonl")):
            recs = read_jsonl(self.out / "prepare" / part)
            lists = fairseq_nmt.generate_nbest(data, [reverse], sw,
                                               [self._nmt_text(r["text"]) for r in recs],
                                               tgt, src, s, d / name)
            rows = [{"id": r["id"], "src": lst[0][0], "ref": r["text"]}
                    for r, lst in zip(recs, lists) if lst and lst[0][0].strip()]
            write_jsonl(d / f"{name}.jsonl", rows)
            stats[name] = len(rows)
        return stats

    def _base_trained(self, d: Path, s: fairseq_nmt.NmtSettings) -> dict[str, Any]:
        """The updates a base translator reached, and a warning where ``nmt.max_minutes``
        cut it short of ``nmt.max_updates`` (under load, en-hi's ensemble members stopped
        at 766 and 763 of 800)."""
        log = d / "train.log"
        updates, cut = fairseq_nmt.updates_reached(log), fairseq_nmt.cut_by_time(log)
        if cut:
            self.st.log(f"{d.name.removesuffix('.tmp')}: WARNING nmt.max_minutes "
                        f"({s.max_minutes:g}) stopped training at {updates} of "
                        f"{s.max_updates} updates; raise it, or run with the cores free, for a "
                        "translator that does not depend on the load")
        return {"updates": updates, "cut_by_max_minutes": cut}

    def _checkpoint(self, variant: str) -> Path:
        return self.out / f"nmt_{variant}" / "checkpoints" / "checkpoint_best.pt"

    def _translate(self, names: list[str], texts: list[str], work: Path
                   ) -> list[list[tuple[str, float, int]]]:
        """n-best lists of ``texts`` by one translator, or by an ensemble's members
        decoding jointly (their bases share one dictionary: the same bitext and subword
        model), with the first one's settings."""
        sw = Subword(self.out / "subword" / "spm.model")
        base = chain(names[0])[0]
        return fairseq_nmt.generate_nbest(self.out / f"nmt_{base}" / "data-bin",
                                          [self._checkpoint(n) for n in names], sw,
                                          [self._nmt_text(t) for t in texts], self.cfg.src_lang,
                                          self.cfg.tgt_lang, self._settings(names[0]), work)

    def nmt(self, name: str, d: Path) -> dict[str, Any]:
        """Train a base translator, or fine-tune one from its parent by one step:
        ``seed_parallel`` on the seed's own parallel pairs, ``self_train`` on the parent's
        translations of in-domain sources (plus the seed pairs where the chain has them).
        A fine-tune mixes in as many pairs of the base bitext, so the general data is not
        forgotten, and keeps the checkpoint best on the tuning split's parallel pairs, the
        parent included: a step that makes the translator worse there is not taken
        (``kept_parent``; en-de self-training raised the loss 5.60 -> 5.91 and cost 2.5 chrF
        and 2.6% perplexity)."""
        cfg, v = self.cfg, variant(name)
        sw = Subword(self.out / "subword" / "spm.model")
        s = self._settings(name)
        src, tgt = cfg.src_lang, cfg.tgt_lang
        general = self._nmt_pairs(self._pairs(self.out / "bitext" / f"{v.base}.jsonl"))
        if v.parent is None:
            data = fairseq_nmt.binarize(d, sw, general, self._valid(name), src, tgt)
            fairseq_nmt.train(data, d / "checkpoints", s, d / "train.log")
            return {"pairs": len(general), "precision": s.precision} | self._base_trained(d, s)
        seed_pairs = (self._nmt_pairs(self._parallel("seed_parallel", self._back_translated(name)))
                      if "seed_parallel" in (variant(x).step for x in chain(name)) else [])
        stats: dict[str, Any] = {"seed_parallel_pairs": len(seed_pairs)}
        in_domain = list(seed_pairs)
        updates, patience, average = cfg.seed_parallel.updates, 0, cfg.seed_parallel.average_last
        if v.step == "self_train":
            rng = random.Random(s.seed)
            sources = self._texts("source.jsonl")
            subset = rng.sample(sources, min(cfg.self_training.subset, len(sources)))
            nbest = self._translate([v.parent], subset, d)
            synthetic = [(self._nmt_text(x), hyps[0][0]) for x, hyps in zip(subset, nbest)
                         if hyps and hyps[0][0].strip()]
            write_jsonl(d / "synthetic.jsonl", [{"src": a, "tgt": b} for a, b in synthetic])
            in_domain += synthetic
            updates, patience, average = s.finetune_updates, cfg.self_training.patience, 1
            stats["synthetic_pairs"] = len(synthetic)
        mixed = random.Random(s.seed).sample(general, min(len(in_domain), len(general)))
        base_dir = self.out / f"nmt_{chain(name)[0]}"
        data = fairseq_nmt.binarize(d, sw, in_domain + mixed, self._valid(name), src, tgt,
                                    dict_from=base_dir / "data-bin")
        parent = self._checkpoint(v.parent)
        # a base validated on general pairs, fine-tuned on back-translated seed pairs: keep
        # the parent or not by its loss on the back-translated tuning pairs, as the child's
        parent_loss = (fairseq_nmt.validate(data, parent, s, d / "train.log")
                       if self._back_translated(name) != self._back_translated(v.parent)
                       else fairseq_nmt.valid_loss(parent))
        best = fairseq_nmt.train(data, d / "checkpoints", s, d / "train.log", restore=parent,
                                 updates=updates, patience=patience, average_last=average,
                                 parent_loss=parent_loss)
        loss = fairseq_nmt.valid_loss(best)
        return stats | {"pairs": len(in_domain) + len(mixed), "general_pairs": len(mixed),
                        "valid_loss": loss, "parent_valid_loss": parent_loss,
                        "kept_parent": loss == parent_loss,
                        "stopped_early": fairseq_nmt.stopped_early(d / "train.log")}

    def nbest(self, name: str, d: Path) -> dict[str, Any]:
        """n-best lists for the in-domain source and the tuning split's parallel sources."""
        source = read_jsonl(self.out / "prepare" / "source.jsonl")
        par_path = self.out / "prepare" / "tuning_parallel.jsonl"
        par = read_jsonl(par_path) if par_path.exists() else []
        texts = [r["text"] for r in source] + [r["src"] for r in par]
        lists = self._translate([name], texts, d)
        write_jsonl(d / "nbest.jsonl", [{"id": r["id"], "src": r["text"], "nbest": lst}
                                        for r, lst in zip(source, lists)])
        write_jsonl(d / "tuning_nbest.jsonl", [{"id": r["id"], "src": r["src"], "ref": r["ref"],
                                                "nbest": lst}
                                               for r, lst in zip(par, lists[len(source):])])
        return {"sources": len(texts), "empty": sum(1 for lst in lists if not lst)}

    def _combined(self, text: list[str], d: Path) -> Combined:
        """The seed joined by ``text``: pooled or interpolated, chosen on the tuning split
        (``lm.combine``); the model a row delivers."""
        cfg = self.cfg
        seed = self._texts("seed.jsonl")
        return combine(self.out / "seed_lm", "seed", seed, text, self._texts("tuning.jsonl"),
                       seed_vocabulary(seed), d, cfg.final_lm.order, cfg.final_lm.memory,
                       cfg.final_lm.new_word_min_count)

    @functools.cached_property
    def _general_ranked(self) -> list[str]:
        """The general bitext's target sides that the filter's Moore-Lewis ranker scored
        (every pair past the cheap rules, kept or not), normalised and deduplicated, most
        in-domain first (ties by id and source): what ``lm.general_text`` selects from."""
        bt = self.out / "bitext"
        scored = sorted((r["_decision"]["moore_lewis"], r["id"], r["source"], normalize(r["tgt"]))
                        for name in ("kept", "dropped") for r in iter_jsonl_shards(bt, name)
                        if r["_decision"].get("moore_lewis") is not None)
        return list(dict.fromkeys(text for *_, text in scored if text))

    def tune(self, d: Path) -> dict[str, Any]:
        """λ, then the LM filter's percentile: each the grid value whose LM of the `all`
        row's kept translations (the better of ``lm.combine``'s interpolated and pooled
        candidates; the seed fallback is the rows' choice) has the lowest tuning-split
        perplexity.  The filter's threshold is that percentile of the tuning split's
        per-token scores under the seed LM: the tuning split is in-domain text the seed LM
        never saw, so the threshold says what unseen in-domain sentences score (the seed's
        own sentences score far higher under an LM trained on them and would drop nearly
        every translation).  Then, with ``general_text.enabled``, the amount of general text
        added to those translations (``lm.general_text.choose_amount``: the lowest tuning
        perplexity within the OOV goal).  The candidates of each grid are independent LMs:
        ``nmt.parallel`` of them are built at once (lmplz and interpolate run as
        subprocesses)."""
        cfg = self.cfg
        lm = LanguageModel(self.out / "seed_lm" / "seed.binary")
        seed, tuning = self._texts("seed.jsonl"), self._texts("tuning.jsonl")
        vocab = seed_vocabulary(seed)
        nbest = [r for name in self.rows["all"].translators
                 for r in read_jsonl(self.out / f"nbest_{name}" / "nbest.jsonl") if r["nbest"]]

        def kept(weight: float | None, threshold: float | None) -> list[str]:
            return [dec.record.tgt for r in nbest
                    if (dec := choose(BitextPair(r["id"], r["src"], ""),
                                      [Hypothesis(*h) for h in r["nbest"]], lm, weight,
                                      threshold, self.cfg.nmt.lenpen)).kept]

        def on_tuning(text: Callable[[], list[str]], tag: str) -> Candidate:
            # the text's own best LM, not the deliverable: where the seed beats every
            # candidate, each would deliver the seed and the grid would tie (en-hi did)
            sentences = text()
            ev = evaluate(LanguageModel(self._combined(sentences, d / tag).text_lm), tuning, vocab)
            shutil.rmtree(d / tag)
            self.st.log(f"tune: {tag} -> tuning perplexity {ev.perplexity:.2f}, OOV "
                        f"{ev.oov_rate:.4f} ({len(sentences)} sentences)")
            return Candidate(ev.perplexity, ev.oov_rate, ev.test_words)

        def grid(texts: dict[Any, tuple[str, Callable[[], list[str]]]]) -> dict[Any, Candidate]:
            with ThreadPoolExecutor(max_workers=cfg.nmt.parallel) as pool:
                futures = {k: pool.submit(on_tuning, text, tag) for k, (tag, text) in texts.items()}
                return {k: f.result() for k, f in futures.items()}

        stats: dict[str, Any] = {}
        weight = cfg.rescoring.lm_weight
        if weight is None:
            ppl = {w: c.perplexity for w, c in grid(
                {w: (f"lm_weight={w}", functools.partial(kept, w, None))
                 for w in cfg.rescoring.grid}).items()}
            weight = min(ppl, key=lambda w: (ppl[w], w))
            stats["lm_weight_grid"] = {str(k): round(v, 3) for k, v in ppl.items()}
        percentile = cfg.lm_filter.percentile
        if percentile is None:
            ppl = {q: c.perplexity for q, c in grid(
                {q: (f"lm_filter={q}", functools.partial(
                    kept, weight, percentile_threshold(lm, tuning, q)))
                 for q in cfg.lm_filter.grid}).items()}
            percentile = min(ppl, key=lambda q: (ppl[q], q))
            stats["lm_filter_grid"] = {str(k): round(v, 3) for k, v in ppl.items()}
        threshold = percentile_threshold(lm, tuning, percentile)
        stats |= {"lm_weight": weight, "lm_filter_percentile": percentile,
                  "lm_filter_threshold": threshold}
        g = cfg.general_text
        if g.enabled:
            text, ranked = kept(weight, threshold), self._general_ranked

            def with_general(amount: Amount) -> list[str]:
                return text + select(ranked, seed + text, amount)

            amounts = grid({Amount(a, b): (f"general_text={a}+{b}",
                                           functools.partial(with_general, Amount(a, b)))
                            for a in g.in_domain for b in g.new_words})
            seed_oov = evaluate(lm, tuning, vocab).oov_rate
            limit = None if g.oov_goal is None else g.oov_goal * seed_oov
            amount = choose_amount(amounts, limit)
            stats["general_text_grid"] = {f"{a.in_domain}+{a.new_words}": {
                "perplexity": round(c.perplexity, 3), "oov_rate": round(c.oov_rate, 4),
                "words": c.words} for a, c in amounts.items()}
            stats["general_text"] = {"in_domain": amount.in_domain,
                                     "new_words": amount.new_words, "oov_limit": limit,
                                     "within_goal": limit is not None
                                     and amounts[amount].oov_upper <= limit}
            if limit is not None and amounts[amount].oov_upper > limit:
                self.st.log(f"tune: no amount of general text reaches the OOV goal "
                            f"({limit:.4f} on the tuning split); took the lowest perplexity")
        return stats

    def _row_text(self, name: str, row: Row, rd: Path, metrics: dict[str, Any]) -> list[str]:
        """The sentences a row adds to the seed: filtered target sides, or the translations
        the row keeps, with general text where the row adds it (``general_text.txt``)."""
        if row.target_text:
            return [r["tgt"] for r in read_jsonl(self.out / "bitext" / "filtered.jsonl")]
        if row.nmt is None:
            return []
        text = self._translations(name, row, rd, metrics)
        if not row.general_text:
            return text
        chosen = self.st.records["tune"]["stats"]["general_text"]
        general = select(self._general_ranked, self._texts("seed.jsonl") + text,
                         Amount(chosen["in_domain"], chosen["new_words"]))
        write_text(general, rd / "general_text.txt")
        metrics[f"{name}.general_sentences"] = len(general)
        return text + general

    def _translations(self, name: str, row: Row, rd: Path, metrics: dict[str, Any]) -> list[str]:
        """The translations that the row's rescoring and LM filter keep (a Beam pipeline,
        records accounted; ``translations.jsonl`` has every decision)."""
        tuned = self.st.records["tune"]["stats"]
        threshold, weight = tuned["lm_filter_threshold"], tuned["lm_weight"]
        nbest = {name: str(self.out / f"nbest_{name}" / "nbest.jsonl") for name in row.translators}
        w = weight if row.rescore else None
        t = threshold if row.lm_filter else None
        lm_path = str(self.out / "seed_lm" / "seed.binary")
        counts = run_pipeline(
            lambda p: build_translation_filter(p, nbest, lm_path, w, t, self.st.sink(rd),
                                               self.cfg.nmt.lenpen),
            pipeline_options(self.cfg.beam, self.beam_args))
        self.st.pull(rd)
        metrics[f"{name}.translations"] = check_accounting("translations", counts)
        decided = sorted(read_jsonl_shards(rd, "kept") + read_jsonl_shards(rd, "dropped"),
                         key=lambda r: (r["source"], r["id"]))
        write_jsonl(rd / "translations.jsonl", [
            {"id": r["id"], "translator": r["source"], "src": r["src"], "translation": r["tgt"],
             "kept": r["_decision"]["kept"], "reason": r["_decision"]["rule"],
             **{k: r["_decision"].get(k) for k in ("nmt_score", "lm_per_token", "nbest_rank")}}
            for r in decided])
        return [r["tgt"] for r in decided if r["_decision"]["kept"]]

    def rows_stage(self, d: Path) -> dict[str, Any]:
        """Per row: the pooled LM (seed + the row's text in one lmplz run), the seed LM
        interpolated with an LM of the row's text, and the deliverable, whichever of these
        and the seed LM alone has the lowest tuning perplexity (``lm.combine``).
        ``<row>.perplexity`` and ``<row>.oov_rate`` are the deliverable's;
        ``<row>.pooled.*`` and ``<row>.interpolated.*`` the two candidates'."""
        seed = self._texts("seed.jsonl")
        test = self._texts("test.jsonl") or self._texts("tuning.jsonl")
        vocab = seed_vocabulary(seed)
        metrics: dict[str, Any] = {}
        for name, row in self.rows.items():
            rd = d / name
            rd.mkdir()
            text = self._row_text(name, row, rd, metrics)
            write_text(seed + text, rd / "lm.txt")
            metrics[f"{name}.sentences"] = len(seed) + len(text)
            if not text:  # seed_only, or a row whose filter kept nothing: the seed LM alone
                for ext in ("arpa", "binary"):
                    shutil.copy(self.out / "seed_lm" / f"seed.{ext}", rd / f"lm.{ext}")
                ev = evaluate(LanguageModel(rd / "lm.binary"), test, vocab)
                metrics.update({f"{name}.perplexity": ev.perplexity, f"{name}.oov_rate": ev.oov_rate})
                self.st.log(f"rows: {name}: perplexity {ev.perplexity:.2f}, OOV {ev.oov_rate:.4f}")
                continue
            c = self._combined(text, rd)
            ev = {kind: evaluate(LanguageModel(path), test, vocab)
                  for kind, path in (("interpolated", c.interpolated), ("pooled", c.pooled))}
            best = evaluate(LanguageModel(c.binary), test, vocab)
            metrics.update({f"{name}.perplexity": best.perplexity, f"{name}.oov_rate": best.oov_rate,
                            f"{name}.deliverable": c.deliverable,
                            f"{name}.weights": {"seed": c.weights[0], "text": c.weights[1]},
                            f"{name}.tuning_perplexity": c.tuning_perplexity})
            for kind, e in ev.items():
                metrics.update({f"{name}.{kind}.perplexity": e.perplexity,
                                f"{name}.{kind}.oov_rate": e.oov_rate})
            self.st.log(f"rows: {name}: {c.deliverable} perplexity {best.perplexity:.2f}, OOV "
                        f"{best.oov_rate:.4f} (interpolated {ev['interpolated'].perplexity:.2f} with "
                        f"weights {c.weights[0]}/{c.weights[1]}, pooled {ev['pooled'].perplexity:.2f}; "
                        f"{len(seed) + len(text)} sentences)")
        return metrics

    def nmt_quality(self, d: Path) -> dict[str, Any]:
        """chrF and BLEU on the tuning split's parallel pairs (hypotheses and references
        normalised alike) of every row's translations (an ensemble row: its first
        member's, and its members decoding jointly), and of every translator trained."""
        import sacrebleu

        out = {}

        def score(key: str, hyps: list[str], refs: list[list[str]]) -> None:
            out[f"{key}.chrf"] = sacrebleu.corpus_chrf(hyps, refs).score
            out[f"{key}.bleu"] = sacrebleu.corpus_bleu(hyps, refs).score

        def top1(lists: list[list]) -> list[str]:
            return [normalize(lst[0][0]) if lst else "" for lst in lists]

        lm = LanguageModel(self.out / "seed_lm" / "seed.binary")
        weight = self.st.records["tune"]["stats"]["lm_weight"]
        for name, row in self.rows.items():
            if row.nmt is None:
                continue
            rows = read_jsonl(self.out / f"nbest_{row.nmt}" / "tuning_nbest.jsonl")
            if not rows:
                return {"skipped": "no parallel_dev"}
            score(name, [normalize(choose(BitextPair(r["id"], r["src"], ""),
                                          [Hypothesis(*h) for h in r["nbest"]], lm,
                                          weight if row.rescore else None, None,
                                          self.cfg.nmt.lenpen).record.tgt)
                         if r["nbest"] else "" for r in rows],
                  [[normalize(r["ref"]) for r in rows]])
        # every translator trained, rows or not (e.g. filtered_sp, the step before
        # self-training in `all`): its top-1 translations of the tuning split's sources,
        # decoded here where no row's n-best stage decoded them
        par = read_jsonl(self.out / "prepare" / "tuning_parallel.jsonl")
        sources, refs = [r["src"] for r in par], [[normalize(r["ref"]) for r in par]]
        decoded = {t for row in self.rows.values() for t in row.translators}  # nbest stages
        for name in sorted({v for row in self.rows.values() for t in row.translators
                            for v in chain(t)}):
            lists = ([r["nbest"] for r in read_jsonl(self.out / f"nbest_{name}" /
                                                     "tuning_nbest.jsonl")]
                     if name in decoded else self._translate([name], sources, d / name))
            score(f"variant.{name}", top1(lists), refs)
        # an ensemble row's members decoding jointly: the translator they make together
        # (its LM text stays their separate translations, pooled: docs/lm-evaluation.md)
        for name, row in self.rows.items():
            if len(row.translators) > 1:
                score(f"{name}.ensemble",
                      top1(self._translate(row.translators, sources, d / f"{name}.ensemble")),
                      refs)
        return out

    def final_lm(self, d: Path) -> dict[str, Any]:
        """The deliverable: the 'all' row's chosen ARPA and binary LM (interpolated or
        pooled, whichever the tuning split prefers), its training text (seed + kept
        translations) and the translations with their scores."""
        src = self.out / "rows" / "all"
        for name in ("lm.txt", "lm.arpa", "lm.binary", "translations.jsonl"):
            shutil.copy(src / name, d / name)
        rows = read_jsonl(d / "translations.jsonl")
        write_parquet(d / "translations.parquet", rows)
        stats = self.st.records["rows"]["stats"]
        return {"sentences": sum(1 for _ in open(d / "lm.txt", encoding="utf-8")),
                "deliverable": stats.get("all.deliverable", "seed"),
                "weights": stats.get("all.weights")}


# the stages' own versions, in their keys (``stages`` says why)
FINETUNE_OUTPUTS = "checkpoint_best.pt: the parent's where no update beat it on the tuning pairs"
NBEST_OUTPUTS = "nbest.jsonl: [text, natural-log prob, scored positions] per hypothesis"


def _count_lines(path: str) -> int:
    with fileio.open_read(path) as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _stage_inputs(cfg: LmConfig, fp: Fingerprints) -> dict[str, dict[str, str]]:
    """{stage: {file: digest}} for the stages that read input files."""
    files = [cfg.target_seed, cfg.source_in_domain] + ([cfg.parallel_dev] if cfg.parallel_dev else [])
    evals = [cfg.eval.test_path] if cfg.eval is not None else []
    return {"prepare": fp.of([f.path for f in files] + evals),
            "bitext": fp.of([f.path for f in cfg.bitext])}


def _keys(cfg: LmConfig, variants: list[str], inputs: dict[str, dict[str, str]]) -> dict[str, str]:
    """Each stage's key hashes the config sections it reads, the content of the files it
    reads, its upstream keys and the code version (``stages`` says why)."""
    k: dict[str, str] = {}
    k["prepare"] = section_hash(package_version(), cfg.target_seed, cfg.source_in_domain,
                                cfg.parallel_dev, cfg.tuning_fraction, cfg.eval, cfg.seed,
                                inputs["prepare"])
    # the seed LM reads the order and memory only
    k["seed_lm"] = section_hash(k["prepare"], cfg.final_lm.model_dump(exclude={"new_word_min_count"}))
    k["bitext"] = section_hash(k["seed_lm"], cfg.bitext, cfg.bitext_filter, cfg.tgt_lang,
                               inputs["bitext"],
                               "embedded in groups by word count and id hash; samples by file name")
    k["subword"] = section_hash(k["bitext"], cfg.nmt.vocab_size, cfg.nmt.normalize)
    bt = back_translates(cfg)
    # float32 and inverse square root are how every translator was trained before
    # `precision` and `lr_schedule` existed: left out of the keys, they keep the
    # translators of earlier runs
    as_before = ({"precision"} if cfg.nmt.precision == "fp32" else set()) | (
        {"lr_schedule"} if cfg.nmt.lr_schedule == "inverse_sqrt" else set())
    if bt:
        k["back_translation"] = section_hash(k["subword"], cfg.nmt.model_dump(
                                                 exclude={"parallel", "ensemble"} | as_before),
                                             "top-1 of the seed and the tuning split")
    for v in variants:
        var, m = variant(v), member(v)[1]
        up = k[f"nmt_{var.parent}"] if var.parent else k["subword"]
        # parallel only schedules: the same translators come out however many train at once;
        # the ensemble size only decides how many members there are, not what each one is;
        # the length penalty only ranks a beam, so it reaches the translators that learn
        # from their parent's translations (self-training) and no other
        ignored = {"parallel", "ensemble"} | (set() if var.step == "self_train" else {"lenpen"})
        ignored |= as_before
        k[f"nmt_{v}"] = section_hash(up, cfg.nmt.model_dump(exclude=ignored),
                                     var.step,
                                     cfg.self_training if var.step == "self_train" else None,
                                     *(("patience from the parent",
                                        "validated every twelfth")
                                       if var.step == "self_train" else ()),
                                     cfg.seed_parallel if var.step == "seed_parallel" else None,
                                     *((FINETUNE_OUTPUTS,) if var.parent else ()),
                                     "validated at every save",
                                     *((f"member {m}",) if m > 1 else ()),
                                     *((k["back_translation"],)
                                       if bt and var.step == "seed_parallel" else ()))
    for v in variants:
        k[f"nbest_{v}"] = section_hash(k[f"nmt_{v}"], NBEST_OUTPUTS, cfg.nmt.lenpen)
    k["tune"] = section_hash(k["seed_lm"], [k[f"nbest_{v}"] for v in variants], cfg.rescoring,
                             cfg.lm_filter, cfg.final_lm.new_word_min_count, "lm-filter-tuned",
                             "tuned on the text's own LM",
                             "rescored by the beam's length penalty", "OOV goal at 95%",
                             *((k["bitext"], cfg.general_text) if cfg.general_text.enabled else ()))
    k["rows"] = section_hash(k["tune"], cfg.ablation, "deliverable-v4",
                             *(("general-text",) if cfg.general_text.enabled else ()))
    k["nmt_quality"] = section_hash(k["rows"], "variants-v3", "joint ensemble")
    k["final_lm"] = k["rows"]
    return k


def run_lm(cfg: LmConfig, beam_args: list[str], force: set[str] | None = None,
           quiet: bool = False) -> dict[str, Any]:
    st = StageRunner(cfg.output_dir, force, quiet)
    run = LmRun(cfg, beam_args, st)
    needed = sorted({t for r in run.rows.values() for t in r.translators})
    variants = sorted({v for n in needed for v in chain(n)}, key=lambda v: (len(chain(v)), v))
    inputs = _stage_inputs(cfg, st.fingerprints)
    keys = _keys(cfg, variants, inputs)
    after = {"prepare": (), "seed_lm": ("prepare",), "bitext": ("seed_lm",), "subword": ("bitext",),
             "tune": ("seed_lm", *(f"nbest_{v}" for v in needed)), "rows": ("tune",),
             "nmt_quality": ("tune",), "final_lm": ("rows",)}
    stages = []
    for name, key in keys.items():
        if name.startswith("nmt_") and name != "nmt_quality":
            var = variant(name[4:])
            deps = ("subword", *((f"nmt_{var.parent}",) if var.parent else ()),
                    *(("back_translation",) if var.step == "seed_parallel"
                      and "back_translation" in keys else ()))
            stages.append(Stage(name, key, lambda d, v=name[4:]: run.nmt(v, d), deps,
                                concurrent=True))
        elif name == "back_translation":
            stages.append(Stage(name, key, run.back_translation, ("subword",), concurrent=True))
        elif name.startswith("nbest_"):
            if name[6:] in needed:
                stages.append(Stage(name, key, lambda d, v=name[6:]: run.nbest(v, d),
                                    (f"nmt_{name[6:]}",), concurrent=True))
        else:
            # the rows' LMs and the translators' chrF read the tuned settings only: they
            # run side by side
            stages.append(Stage(name, key, getattr(run, "rows_stage" if name == "rows" else name),
                                after[name], inputs.get(name),
                                concurrent=name in ("rows", "nmt_quality")))
    st.run_all(stages, workers=cfg.nmt.parallel)
    rows = st.records["rows"]["stats"]
    metrics = {k: v for k, v in rows.items() if not k.endswith(".translations")}
    seed_ppl = metrics["seed_only.perplexity"]
    for name in run.rows:
        if name != "seed_only":
            metrics[f"{name}.relative_perplexity_reduction"] = (
                (seed_ppl - metrics[f"{name}.perplexity"]) / seed_ppl)
    q = st.records["nmt_quality"]["stats"]
    metrics.update({f"nmt.{k}": v for k, v in q.items()})
    metrics["rescoring.lm_weight"] = st.records["tune"]["stats"]["lm_weight"]
    metrics["lm_filter.threshold"] = st.records["tune"]["stats"]["lm_filter_threshold"]
    metrics["lm_filter.percentile"] = st.records["tune"]["stats"]["lm_filter_percentile"]
    if "general_text" in st.records["tune"]["stats"]:
        metrics["general_text"] = st.records["tune"]["stats"]["general_text"]
    metrics["seconds"] = {name: rec["seconds"] for name, rec in st.records.items()}
    for name, obj in (("metrics.json", metrics), ("summary.json", st.records)):
        write_json(st.root / name, obj)
        publish(cfg.output_dir, st.root / name)
    st.release()
    return metrics


def ablation_table(metrics: dict[str, Any]) -> str:
    """The rows of one LM run as a Markdown table (what the README's result tables are)."""
    def num(key: str, fmt: str) -> str:
        v = metrics.get(key)
        return "-" if v is None else format(v, fmt)

    rows = [r for r in ROW_NAMES if f"{r}.sentences" in metrics]
    out = ["| row | perplexity | OOV | vs seed_only | model | interpolated (weights) | pooled | "
           "LM sentences | chrF / BLEU |", "|---" * 9 + "|"]
    for r in rows:
        w = metrics.get(f"{r}.weights")
        interp = num(f"{r}.interpolated.perplexity", ".2f") + (f" ({w['seed']}/{w['text']})" if w else "")
        out.append(f"| {r} | {num(f'{r}.perplexity', '.2f')} | {num(f'{r}.oov_rate', '.2%')} | "
                   f"{num(f'{r}.relative_perplexity_reduction', '+.1%')} | "
                   f"{metrics.get(f'{r}.deliverable', 'seed')} | {interp} | "
                   f"{num(f'{r}.pooled.perplexity', '.2f')} | {metrics[f'{r}.sentences']:,} | "
                   f"{num(f'nmt.{r}.chrf', '.1f')} / {num(f'nmt.{r}.bleu', '.1f')}"
                   + (f" (members jointly: {num(f'nmt.{r}.ensemble.chrf', '.1f')} / "
                      f"{num(f'nmt.{r}.ensemble.bleu', '.1f')})"
                      if f"nmt.{r}.ensemble.chrf" in metrics else "") + " |")
    return "\n".join(out)
