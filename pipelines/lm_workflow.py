"""LM bootstrapping through NMT (Punjabi et al., ASRU 2019) from a config.

prepare -> seed_lm -> bitext (Beam filter) -> subword -> nmt_<variant> (fairseq
train / self-training fine-tune) -> nbest_<variant> -> tune (λ on the tuning split)
-> rows (Beam choose/filter + KenLM LM + evaluation per ablation row) -> final_lm.

Ablation rows (each a full LM = in-domain seed + chosen translations):
  seed_only        the seed alone
  unfiltered       NMT trained on an equal-size random sample of the bitext, top-1
  embedding_filter NMT trained on the embedding-filtered bitext, top-1
  self_training    unfiltered NMT + self-training fine-tune, top-1
  nbest_rescoring  unfiltered NMT, n-best rescored with the seed LM
  lm_filter        unfiltered NMT, top-1, improbable translations dropped
  all              filtered + self-trained NMT, rescored, LM-filtered
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from winnow.lm.evaluation import (evaluate, evaluate_interpolated, seed_vocabulary,
                                  tune_interpolation)
from winnow.lm.kenlm_tools import train_lm
from winnow.lm.rescoring import Hypothesis
from winnow.lm.scoring import LanguageModel, percentile_threshold
from winnow.pipelines.beam_io import (check_accounting, pipeline_options, read_jsonl_shards,
                                      run_pipeline)
from winnow.pipelines.config import InputFile, LmConfig, section_hash
from winnow.pipelines.data_access import (EmbeddingCache, read_input, read_jsonl,
                                          write_jsonl, write_parquet)
from winnow.pipelines.readers import stable_fraction
from winnow.pipelines.lm_pipelines import (build_bitext_filter, build_translation_filter, choose)
from winnow.pipelines.records import BitextPair
from winnow.pipelines.stages import StageRunner, write_json
from winnow.selectors.bitext_filter import CentroidDistance
from winnow.translate import fairseq_nmt
from winnow.translate.subword import Subword


@dataclass(frozen=True)
class Row:
    nmt: str | None  # NMT variant, None for seed_only
    rescore: bool = False
    lm_filter: bool = False


ROWS: dict[str, Row] = {
    "seed_only": Row(None),
    "unfiltered": Row("unfiltered"),
    "embedding_filter": Row("filtered"),
    "self_training": Row("unfiltered_st"),
    "nbest_rescoring": Row("unfiltered", rescore=True),
    "lm_filter": Row("unfiltered", lm_filter=True),
    "all": Row("filtered_st", rescore=True, lm_filter=True),
}
VARIANTS = {"unfiltered": ("unfiltered", False), "filtered": ("filtered", False),
            "unfiltered_st": ("unfiltered", True), "filtered_st": ("filtered", True)}


class LmRun:
    def __init__(self, cfg: LmConfig, beam_args: list[str], runner: StageRunner):
        self.cfg, self.beam_args, self.st = cfg, beam_args, runner
        self.out = Path(cfg.output_dir)
        self.rows = ROWS if cfg.ablation else {k: ROWS[k] for k in ("seed_only", "all")}

    def _texts(self, name: str) -> list[str]:
        return [r["text"] for r in read_jsonl(self.out / "prepare" / name)]

    def _pairs(self, path: Path) -> list[tuple[str, str]]:
        return [(r["src"], r["tgt"]) for r in read_jsonl(path)]

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
            refs = [{"id": r.id, "src": src_by_id[r.id], "ref": r.text} for r in tuning
                    if r.id in src_by_id]
            write_jsonl(d / "tuning_parallel.jsonl", refs)
            stats["tuning_parallel"] = len(refs)
        return stats

    def seed_lm(self, d: Path) -> dict[str, Any]:
        seed = self._texts("seed.jsonl")
        train_lm(seed, d, "seed", order=self.cfg.final_lm.order, memory=self.cfg.final_lm.memory)
        lm = LanguageModel(d / "seed.binary")
        threshold = percentile_threshold(lm, seed, self.cfg.lm_filter.percentile)
        return {"sentences": len(seed), "lm_filter_threshold": threshold}

    def bitext(self, d: Path) -> dict[str, Any]:
        cfg = self.cfg
        cache = EmbeddingCache(cfg.bitext_filter.model, d / "seed_embeddings.npz", prompt="passage")
        centroid = CentroidDistance.fit(cache.get(self._texts("seed.jsonl")))
        cache.save()
        centroid.save(str(d / "centroid.npy"))
        counts = run_pipeline(
            lambda p: build_bitext_filter(p, cfg.bitext, cfg.bitext_filter, cfg.tgt_lang,
                                          centroid.centroid, str(d)),
            pipeline_options(cfg.beam, self.beam_args))
        stats = check_accounting("bitext", counts)
        # ranked as the filter ranked them: (distance, id, source) is a total order
        kept = sorted(read_jsonl_shards(d, "kept"),
                      key=lambda r: (r["_decision"]["score"], r["id"], r["source"]))
        dropped = read_jsonl_shards(d, "dropped")
        write_jsonl(d / "filtered.jsonl", [{k: r[k] for k in ("id", "src", "tgt")} |
                                           {"distance": r["_decision"]["score"]} for r in kept])
        write_parquet(d / "filtered.parquet", [{k: r[k] for k in ("id", "src", "tgt", "source")} |
                                               {"distance": r["_decision"]["score"]} for r in kept])
        # the unfiltered baseline: an equal-size random sample of all pairs that were read
        everything = sorted(kept + dropped, key=lambda r: (r["id"], r["source"]))
        rng = random.Random(cfg.seed)
        sample = rng.sample(everything, min(len(kept), len(everything)))
        write_jsonl(d / "unfiltered.jsonl", [{k: r[k] for k in ("id", "src", "tgt")} for r in sample])
        stats.update({f"dropped.{k}": v for k, v in
                      sorted(Counter(r["_decision"]["rule"] for r in dropped).items())})
        return stats

    def subword(self, d: Path) -> dict[str, Any]:
        bt = self.out / "bitext"
        text = [t for path in ("filtered.jsonl", "unfiltered.jsonl")
                for s, t_ in self._pairs(bt / path) for t in (s, t_)]
        text += self._texts("seed.jsonl") + self._texts("source.jsonl")
        Subword.train(text, d / "spm", vocab_size=self.cfg.nmt.vocab_size, seed=self.cfg.seed)
        return {"sentences": len(text)}

    def _settings(self) -> fairseq_nmt.NmtSettings:
        n = self.cfg.nmt
        return fairseq_nmt.NmtSettings(
            encoder_layers=n.encoder_layers, decoder_layers=n.decoder_layers, embed_dim=n.embed_dim,
            ffn_dim=n.ffn_dim, heads=n.heads, dropout=n.dropout, lr=n.lr,
            warmup_updates=n.warmup_updates, max_tokens=n.max_tokens, max_updates=n.max_updates,
            max_minutes=n.max_minutes, finetune_updates=n.finetune_updates, beam=n.beam,
            nbest=n.nbest, seed=self.cfg.seed)

    def _valid(self) -> list[tuple[str, str]]:
        par = self.out / "prepare" / "tuning_parallel.jsonl"
        if par.exists():
            rows = read_jsonl(par)
            if rows:
                return [(r["src"], r["ref"]) for r in rows]
        return self._pairs(self.out / "bitext" / "filtered.jsonl")[:200]

    def nmt(self, variant: str, d: Path) -> dict[str, Any]:
        """Train (base variants) or self-train (``*_st``) one translator."""
        cfg = self.cfg
        base, self_train = VARIANTS[variant]
        sw = Subword(self.out / "subword" / "spm.model")
        s = self._settings()
        src, tgt = cfg.src_lang, cfg.tgt_lang
        if not self_train:
            pairs = self._pairs(self.out / "bitext" / f"{base}.jsonl")
            data = fairseq_nmt.binarize(d, sw, pairs, self._valid(), src, tgt)
            fairseq_nmt.train(data, d / "checkpoints", s, d / "train.log")
            return {"pairs": len(pairs)}
        base_dir = self.out / f"nmt_{base}"
        rng = random.Random(cfg.seed)
        sources = self._texts("source.jsonl")
        subset = rng.sample(sources, min(cfg.self_training.subset, len(sources)))
        nbest = fairseq_nmt.generate_nbest(base_dir / "data-bin", base_dir / "checkpoints" /
                                           "checkpoint_best.pt", sw, subset, src, tgt, s, d)
        synthetic = [(x, hyps[0][0]) for x, hyps in zip(subset, nbest) if hyps and hyps[0][0].strip()]
        pairs = self._pairs(self.out / "bitext" / f"{base}.jsonl") + synthetic
        data = fairseq_nmt.binarize(d, sw, pairs, self._valid(), src, tgt,
                                    dict_from=base_dir / "data-bin")
        fairseq_nmt.train(data, d / "checkpoints", s, d / "train.log",
                          restore=base_dir / "checkpoints" / "checkpoint_best.pt",
                          updates=s.finetune_updates)
        write_jsonl(d / "synthetic.jsonl", [{"src": a, "tgt": b} for a, b in synthetic])
        return {"synthetic_pairs": len(synthetic), "pairs": len(pairs)}

    def nbest(self, variant: str, d: Path) -> dict[str, Any]:
        """n-best lists for the in-domain source and the tuning split's parallel sources."""
        sw = Subword(self.out / "subword" / "spm.model")
        nd = self.out / f"nmt_{variant}"
        ckpt = nd / "checkpoints" / "checkpoint_best.pt"
        source = read_jsonl(self.out / "prepare" / "source.jsonl")
        par_path = self.out / "prepare" / "tuning_parallel.jsonl"
        par = read_jsonl(par_path) if par_path.exists() else []
        texts = [r["text"] for r in source] + [r["src"] for r in par]
        lists = fairseq_nmt.generate_nbest(nd / "data-bin", ckpt, sw, texts, self.cfg.src_lang,
                                           self.cfg.tgt_lang, self._settings(), d)
        write_jsonl(d / "nbest.jsonl", [{"id": r["id"], "src": r["text"], "nbest": lst}
                                        for r, lst in zip(source, lists)])
        write_jsonl(d / "tuning_nbest.jsonl", [{"id": r["id"], "src": r["src"], "ref": r["ref"],
                                                "nbest": lst}
                                               for r, lst in zip(par, lists[len(source):])])
        return {"sources": len(texts), "empty": sum(1 for lst in lists if not lst)}

    def tune(self, d: Path) -> dict[str, Any]:
        """λ: the grid value whose final LM has the lowest perplexity on the tuning split."""
        cfg = self.cfg
        if cfg.rescoring.lm_weight is not None:
            return {"lm_weight": cfg.rescoring.lm_weight, "tuned": False}
        lm = LanguageModel(self.out / "seed_lm" / "seed.binary")
        seed = self._texts("seed.jsonl")
        tuning = self._texts("tuning.jsonl")
        vocab = seed_vocabulary(seed)
        variant = self.rows.get("all", Row("filtered_st")).nmt
        nbest = read_jsonl(self.out / f"nbest_{variant}" / "nbest.jsonl")
        results = {}
        for w in cfg.rescoring.grid:
            kept = [choose(BitextPair(r["id"], r["src"], ""), [Hypothesis(t, s) for t, s in r["nbest"]],
                           lm, w, None).record.tgt for r in nbest if r["nbest"]]
            arpa, binary = train_lm(seed + kept, d / "grid", f"w{w}", order=cfg.final_lm.order,
                                    memory=cfg.final_lm.memory)
            results[w] = evaluate(LanguageModel(binary), tuning, vocab).perplexity
            self.st.log(f"tune: lm_weight={w} -> tuning perplexity {results[w]:.2f}")
        import shutil
        shutil.rmtree(d / "grid")
        best = min(results, key=lambda w: (results[w], w))
        return {"lm_weight": best, "tuned": True,
                "grid": {str(k): round(v, 3) for k, v in results.items()}}

    def rows_stage(self, d: Path) -> dict[str, Any]:
        cfg = self.cfg
        seed = self._texts("seed.jsonl")
        test = self._texts("test.jsonl") or self._texts("tuning.jsonl")
        vocab = seed_vocabulary(seed)
        lm_path = str(self.out / "seed_lm" / "seed.binary")
        threshold = self.st.records["seed_lm"]["stats"]["lm_filter_threshold"]
        weight = self.st.records["tune"]["stats"]["lm_weight"]
        metrics: dict[str, Any] = {}
        for name, row in self.rows.items():
            rd = d / name
            rd.mkdir()
            kept: list[str] = []
            if row.nmt is not None:
                nbest = str(self.out / f"nbest_{row.nmt}" / "nbest.jsonl")
                w = weight if row.rescore else None
                t = threshold if row.lm_filter else None
                counts = run_pipeline(
                    lambda p, nbest=nbest, w=w, t=t, rd=rd: build_translation_filter(
                        p, nbest, lm_path, w, t, str(rd)),
                    pipeline_options(cfg.beam, self.beam_args))
                acc = check_accounting("translations", counts)
                decided = sorted(read_jsonl_shards(rd, "kept") + read_jsonl_shards(rd, "dropped"),
                                 key=lambda r: r["id"])
                kept = [r["tgt"] for r in decided if r["_decision"]["kept"]]
                write_jsonl(rd / "translations.jsonl", [
                    {"id": r["id"], "src": r["src"], "translation": r["tgt"],
                     "kept": r["_decision"]["kept"], "reason": r["_decision"]["rule"],
                     **{k: r["_decision"].get(k) for k in ("nmt_score", "lm_per_token",
                                                           "nbest_rank")}} for r in decided])
                metrics[f"{name}.translations"] = acc
            arpa, binary = train_lm(seed + kept, rd, "lm", order=cfg.final_lm.order,
                                    memory=cfg.final_lm.memory)
            ev = evaluate(LanguageModel(binary), test, vocab)
            metrics[f"{name}.perplexity"] = ev.perplexity
            metrics[f"{name}.oov_rate"] = ev.oov_rate
            metrics[f"{name}.sentences"] = len(seed) + len(kept)
            self.st.log(f"rows: {name}: perplexity {ev.perplexity:.2f}, OOV {ev.oov_rate:.4f}, "
                        f"{len(seed) + len(kept)} sentences")
            if kept:
                metrics.update(self._interpolated(name, kept, test, vocab, rd))
        return metrics

    def _interpolated(self, row: str, kept: list[str], test: list[str], vocab: set[str],
                      d: Path) -> dict[str, Any]:
        """A row's kept translations as their own LM, linearly interpolated with the seed
        LM; the seed weight is tuned on the tuning split, then the test file is scored."""
        seed_lm = LanguageModel(self.out / "seed_lm" / "seed.binary")
        _, binary = train_lm(kept, d, "translations", order=self.cfg.final_lm.order,
                             memory=self.cfg.final_lm.memory)
        trans_lm = LanguageModel(binary)
        weight, grid = tune_interpolation(seed_lm, trans_lm, self._texts("tuning.jsonl"), vocab)
        ev = evaluate_interpolated(seed_lm, trans_lm, weight, test, vocab)
        self.st.log(f"rows: {row} interpolated: seed weight {weight} (tuning perplexity "
                    f"{grid[weight]:.2f}) -> perplexity {ev.perplexity:.2f}, OOV {ev.oov_rate:.4f}")
        key = f"interpolated.{row}"
        return {f"{key}.perplexity": ev.perplexity, f"{key}.oov_rate": ev.oov_rate,
                f"{key}.seed_weight": weight,
                f"{key}.tuning_grid": {str(w): round(p, 3) for w, p in grid.items()}}

    def nmt_quality(self, d: Path) -> dict[str, Any]:
        import sacrebleu

        lm = LanguageModel(self.out / "seed_lm" / "seed.binary")
        weight = self.st.records["tune"]["stats"]["lm_weight"]
        out = {}
        for name, row in self.rows.items():
            if row.nmt is None:
                continue
            rows = read_jsonl(self.out / f"nbest_{row.nmt}" / "tuning_nbest.jsonl")
            if not rows:
                return {"skipped": "no parallel_dev"}
            hyps = [choose(BitextPair(r["id"], r["src"], ""), [Hypothesis(t, s) for t, s in r["nbest"]],
                           lm, weight if row.rescore else None, None).record.tgt
                    if r["nbest"] else "" for r in rows]
            refs = [[r["ref"] for r in rows]]
            out[f"{name}.chrf"] = sacrebleu.corpus_chrf(hyps, refs).score
            out[f"{name}.bleu"] = sacrebleu.corpus_bleu(hyps, refs).score
        return out

    def final_lm(self, d: Path) -> dict[str, Any]:
        """The deliverable: the 'all' row's LM training text, ARPA and binary LM."""
        src = self.out / "rows" / "all"
        import shutil
        for name in ("lm.txt", "lm.arpa", "lm.binary", "translations.jsonl"):
            shutil.copy(src / name, d / name)
        rows = read_jsonl(d / "translations.jsonl")
        write_parquet(d / "translations.parquet", rows)
        return {"sentences": sum(1 for _ in open(d / "lm.txt", encoding="utf-8"))}


def _keys(cfg: LmConfig, variants: list[str]) -> dict[str, str]:
    k: dict[str, str] = {}
    k["prepare"] = section_hash(cfg.target_seed, cfg.source_in_domain, cfg.parallel_dev,
                                cfg.tuning_fraction, cfg.eval, cfg.seed)
    k["seed_lm"] = section_hash(k["prepare"], cfg.final_lm, cfg.lm_filter)
    k["bitext"] = section_hash(k["prepare"], cfg.bitext, cfg.bitext_filter, cfg.tgt_lang)
    k["subword"] = section_hash(k["bitext"], cfg.nmt.vocab_size)
    for v in variants:
        base, st = VARIANTS[v]
        up = k[f"nmt_{base}"] if st else k["subword"]
        k[f"nmt_{v}"] = section_hash(up, cfg.nmt, cfg.self_training if st else None)
    for v in variants:
        k[f"nbest_{v}"] = section_hash(k[f"nmt_{v}"])
    k["tune"] = section_hash(k["seed_lm"], [k[f"nbest_{v}"] for v in variants], cfg.rescoring)
    k["rows"] = section_hash(k["tune"], cfg.ablation)
    k["nmt_quality"] = k["rows"]
    k["final_lm"] = k["rows"]
    return k


def run_lm(cfg: LmConfig, beam_args: list[str], force: set[str] | None = None,
           quiet: bool = False) -> dict[str, Any]:
    st = StageRunner(cfg.output_dir, force, quiet)
    run = LmRun(cfg, beam_args, st)
    needed = sorted({r.nmt for r in run.rows.values() if r.nmt})
    variants = sorted({VARIANTS[v][0] for v in needed} | set(needed),
                      key=lambda v: (v.endswith("_st"), v))
    for name, key in _keys(cfg, variants).items():
        if name.startswith("nmt_") and name != "nmt_quality":
            fn = lambda d, v=name[4:]: run.nmt(v, d)  # noqa: E731
        elif name.startswith("nbest_"):
            if name[6:] not in needed:
                continue
            fn = lambda d, v=name[6:]: run.nbest(v, d)  # noqa: E731
        else:
            fn = getattr(run, "rows_stage" if name == "rows" else name)
        st.run(name, key, fn)
    rows = st.records["rows"]["stats"]
    metrics = {k: v for k, v in rows.items() if not k.endswith(".translations")}
    if "all.perplexity" in metrics and "seed_only.perplexity" in metrics:
        metrics["all.relative_perplexity_reduction"] = (
            (metrics["seed_only.perplexity"] - metrics["all.perplexity"])
            / metrics["seed_only.perplexity"])
    if "interpolated.all.perplexity" in metrics and "seed_only.perplexity" in metrics:
        metrics["interpolated.all.relative_perplexity_reduction"] = (
            (metrics["seed_only.perplexity"] - metrics["interpolated.all.perplexity"])
            / metrics["seed_only.perplexity"])
    q = st.records["nmt_quality"]["stats"]
    if "all.chrf" in q:
        metrics["nmt.chrf"] = q["all.chrf"]
        metrics["nmt.bleu"] = q["all.bleu"]
        metrics.update({f"nmt.{k}": v for k, v in q.items()})
    metrics["rescoring.lm_weight"] = st.records["tune"]["stats"]["lm_weight"]
    write_json(Path(cfg.output_dir) / "metrics.json", metrics)
    write_json(Path(cfg.output_dir) / "summary.json", st.records)
    return metrics
