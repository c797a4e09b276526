"""Intent bootstrapping (Cho et al., ASRU 2019) from a config, stage by stage.

prepare -> relevance (fit, driver) -> pool (Beam) -> self_training -> paraphrase ->
diversity -> curves (evaluation runs) -> corpus.  Each stage is resumable
(``StageRunner``); the final corpus is JSONL + Parquet with per-record provenance.
"""
from __future__ import annotations

import json
import multiprocessing
import pickle
import random
from collections import Counter, defaultdict
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed

from winnow.pipelines.beam_io import (check_accounting, pipeline_options, read_jsonl_shards,
                                      run_pipeline)
from winnow.pipelines.config import InputFile, IntentConfig, section_hash
from winnow.pipelines.data_access import (EmbeddingCache, read_input, read_jsonl, write_jsonl,
                                          write_parquet)
from winnow.pipelines.intent_candidates import (CURVE_ORDERS, REFERENCE_ORDERS, SELECTED_ORDERS,
                                                candidates, curve_orders, curve_points,
                                                hidden_truth, pool_label, share_points)
from winnow.pipelines.intent_metrics import intent_metrics
from winnow.pipelines.pool_scoring import build_pool_scoring, norm_key, unique_ids
from winnow.pipelines.records import Utterance, to_dict, utterance_from_dict
from winnow.pipelines.significance import (load_curve_predictions, new_intent_errors,
                                           save_curve_predictions)
from winnow.pipelines.stages import (Fingerprints, Stage, StageRunner, package_version, publish,
                                     write_json)
from winnow.selectors.annotation import parse_annotation
from winnow.selectors.coverage import facility_location_order, k_center_order
from winnow.selectors.diversity import confidence_tiers, coverage_order, diversity_order
from winnow.selectors.embeddings import encode, load_encoder
from winnow.selectors.in_domain import FOLDS as IN_DOMAIN_FOLDS, in_domain_probability
from winnow.selectors.intent_model import IntentClassifier
from winnow.selectors.ngram_relevance import NgramRelevanceModel
from winnow.selectors.paraphrase import (Example, ParaphraseDetector, generate_pairs,
                                         slot_type_vectors)
from winnow.selectors.paraphrase_encoder import fine_tune
from winnow.selectors.slot_tagger import SlotTagger, slot_f1


def new_intent_error(gold: list[str], pred: list[str], new_intents: list[str]) -> float:
    """1 - macro-F1 over the new intents, on all evaluation utterances (false positives count)."""
    return float(new_intent_errors(np.array(gold, dtype=str), np.array(pred, dtype=str),
                                   new_intents, np.ones((1, len(gold))))[0])


class IntentRun:
    def __init__(self, cfg: IntentConfig, beam_args: list[str], runner: StageRunner):
        self.cfg, self.beam_args, self.st = cfg, beam_args, runner
        self.out = runner.root
        self._emb: EmbeddingCache | None = None
        self._seed_tagger: Future | None = None

    # -- helpers ---------------------------------------------------------------------
    @property
    def emb(self) -> EmbeddingCache:
        if self._emb is None:
            self._emb = EmbeddingCache(self.cfg.intent_model.embedding_model,
                                       self.out / "embeddings.npz")
        return self._emb

    def _load(self, stage: str, name: str) -> list[Utterance]:
        return [utterance_from_dict(d) for d in read_jsonl(self.out / stage / name)]

    def _seed_annotated(self) -> list[str]:
        """What the corpus's slot tagger learns from: every annotated utterance, existing
        intents and seeds."""
        recs = self._load("prepare", "existing.jsonl") + self._load("prepare", "seeds.jsonl")
        return [r.annotated for r in recs if r.annotated]

    def _fit(self, recs: list[Utterance], labels: list[str] | None = None) -> IntentClassifier:
        texts = [r.text for r in recs]
        return IntentClassifier(**classifier_args(self.cfg)).fit(
            texts, self.emb.get(texts), labels or [r.intent for r in recs])

    def _predict(self, model: IntentClassifier, test: list[Utterance]) -> list[str]:
        texts = [r.text for r in test]
        return list(model.predict(texts, self.emb.get(texts))[0])

    def _evaluate(self, model: IntentClassifier, test: list[Utterance]) -> dict[str, float]:
        return self._scores(test, self._predict(model, test))

    def _scores(self, test: list[Utterance], pred: list[str]) -> dict[str, float]:
        gold = [r.intent for r in test]
        return {"new_intent_error": new_intent_error(gold, pred, self.cfg.new_intents),
                "accuracy": float(np.mean([g == p for g, p in zip(gold, pred)]))}

    def stage(self, name: str):
        """A stage function that embeds as the stage would in a fresh run (``EmbeddingCache``)
        and saves the embedding cache before the stage is marked done.  The paraphrase stage,
        which runs beside the others, reads no cached embedding and leaves the cache alone."""
        if name == "paraphrase":
            return self.paraphrase

        def fn(d: Path) -> dict[str, Any]:
            self.emb.begin(STAGES.index(name))
            stats = getattr(self, name)(d)
            self.emb.save()
            return stats
        return fn

    # -- stages ----------------------------------------------------------------------
    def prepare(self, d: Path) -> dict[str, Any]:
        cfg = self.cfg
        rng = random.Random(cfg.seed)
        annotated, rejected = [], []
        for inp in cfg.annotated:
            good, bad = read_input(inp)
            annotated += good
            rejected += bad
        test: list[Utterance] = []
        if cfg.eval is not None:  # read whole, whatever its partition field says
            test, bad = read_input(InputFile(path=cfg.eval.test_path, format=cfg.eval.test_format,
                                             locale=cfg.eval.locale), respect_partition=False)
            rejected += bad
        test_keys = {norm_key(r.text) for r in test}
        annotated = [r for r in annotated if norm_key(r.text) not in test_keys]
        intents = {r.intent for r in annotated}
        missing = [i for i in cfg.new_intents if i not in intents]
        if missing:
            raise ValueError(f"new_intents not found in the annotated data: {', '.join(missing)}")
        by_intent: dict[str, list[Utterance]] = defaultdict(list)
        for r in sorted(annotated, key=lambda r: r.id):
            by_intent[r.intent].append(r)
        seeds, hidden = [], []
        for intent in cfg.new_intents:
            recs = by_intent[intent][:]
            rng.shuffle(recs)
            seeds += recs[:cfg.seeds_per_intent]
            hidden += recs[cfg.seeds_per_intent:]
        existing = [r for r in annotated if r.intent not in cfg.new_intents]
        write_jsonl(d / "seeds.jsonl", seeds)
        write_jsonl(d / "existing.jsonl", existing)
        write_jsonl(d / "test.jsonl", test)
        write_jsonl(d / "rejected.jsonl", rejected)
        # the new intents' remaining annotated utterances join the pool, labels hidden
        write_jsonl(d / "pool_hidden.jsonl", [{"id": r.id, "text": r.text, "source": r.source}
                                             for r in hidden])
        write_jsonl(d / "pool_labels.jsonl", [{"id": r.id, "intent": r.intent,
                                               "annotated": r.annotated} for r in hidden])
        return {"seeds": len(seeds), "existing": len(existing), "test": len(test),
                "hidden_pool": len(hidden), "rejected": len(rejected)}

    def relevance(self, d: Path) -> dict[str, Any]:
        seeds = self._load("prepare", "seeds.jsonl")
        existing = self._load("prepare", "existing.jsonl")
        rng = random.Random(self.cfg.seed)
        stats = {}
        for intent in self.cfg.new_intents:
            pos = [r.text for r in seeds if r.intent == intent]
            neg_pool = sorted({r.text for r in existing} | {r.text for r in seeds
                                                            if r.intent != intent})
            neg = rng.sample(neg_pool, min(len(neg_pool), self.cfg.relevance.negatives_per_intent
                                           * len(self.cfg.new_intents)))
            m = NgramRelevanceModel.fit(pos, neg, label=intent, c=self.cfg.relevance.c,
                                        seed=self.cfg.seed)
            m.save(d / f"relevance_{intent}.json")
            stats[f"{intent}.ngrams"] = len(m.weights)
        return stats

    def pool(self, d: Path) -> dict[str, Any]:
        cfg = self.cfg
        models = [NgramRelevanceModel.load(self.out / "relevance" / f"relevance_{i}.json")
                  for i in cfg.new_intents]
        annotated = self._load("prepare", "seeds.jsonl") + self._load("prepare", "existing.jsonl")
        excluded = {r.text for r in annotated + self._load("prepare", "test.jsonl")}
        inputs = [InputFile(path=str(self.out / "prepare" / "pool_hidden.jsonl"), format="jsonl"),
                  *cfg.pool]
        counts = run_pipeline(
            lambda p: build_pool_scoring(p, inputs, models, excluded, self.st.sink(d),
                                         cfg.relevance.top_k, cfg.relevance.threshold),
            pipeline_options(cfg.beam, self.beam_args))
        self.st.pull(d)
        stats = check_accounting("pool", counts)
        kept = sorted(read_jsonl_shards(d, "kept"),
                      key=lambda r: (-r["_decision"]["score"], r["id"], r["source"]))
        kept, stats["ids_qualified"] = unique_ids(kept, {r.id for r in annotated})
        if stats["ids_qualified"]:
            self.st.log(f"pool: {stats['ids_qualified']} kept records share an id with another "
                        "record; their ids are qualified with their source (id@source)")
        write_jsonl(d / "selected.jsonl", kept)
        dropped_by = Counter(r["_decision"]["rule"] for r in read_jsonl_shards(d, "dropped"))
        stats.update({f"dropped.{k}": v for k, v in sorted(dropped_by.items())})
        return stats

    def self_training(self, d: Path) -> dict[str, Any]:
        cfg = self.cfg
        seeds = self._load("prepare", "seeds.jsonl")
        existing = self._load("prepare", "existing.jsonl")
        test = self._load("prepare", "test.jsonl")
        selected = read_jsonl(self.out / "pool" / "selected.jsonl")
        base = existing + seeds
        model = self._fit(base)
        history = [{"iteration": 0, "added": 0, **(self._evaluate(model, test) if test else {})}]
        texts = [r["text"] for r in selected]
        labelled: dict[str, tuple[str, float]] = {}
        for it in range(1, cfg.self_training.iterations + 1):
            pred, conf = model.predict(texts, self.emb.get(texts))
            # keep a self-label only where the model agrees with the intent the relevance
            # model selected the utterance for: a pool utterance that the (new-intent-starved)
            # model files under an old intent is more often a missed new-intent example than a
            # true old-intent one, and training on it teaches the model the wrong boundary
            labelled = {r["id"]: (p, float(c)) for r, p, c in zip(selected, pred, conf)
                        if c >= cfg.self_training.confidence and p == r["_decision"]["intent"]}
            extra = [r for r in selected if r["id"] in labelled]
            model = self._fit(base + [Utterance(id=r["id"], text=r["text"]) for r in extra],
                              [u.intent for u in base] + [labelled[r["id"]][0] for r in extra])
            history.append({"iteration": it, "added": len(extra),
                            **(self._evaluate(model, test) if test else {})})
        write_jsonl(d / "self_labels.jsonl", [{"id": k, "intent": v[0], "confidence": round(v[1], 6)}
                                              for k, v in sorted(labelled.items())])
        write_json(d / "history.json", history)
        return {"self_labelled": len(labelled), **{f"iter{h['iteration']}.{k}": round(v, 4)
                                                   for h in history for k, v in h.items()
                                                   if k in ("new_intent_error", "accuracy")}}

    @staticmethod
    def _pair_vectors(encoder, texts: list[str], tagger: SlotTagger,
                      types: list[str]) -> np.ndarray:
        """Detector input: the paraphrase encoder's embedding + the tagger's slot types."""
        return np.hstack([encode(encoder, texts), slot_type_vectors(tagger.tag(texts), types)])

    def paraphrase(self, d: Path) -> dict[str, Any]:
        """The paraphrase encoder and detector, fitted once on the pairs of the existing
        intents minus ``held_out_intents``, and tested on pairs of those: the unseen-intent
        AUC is the selecting detector's own (the new intents are unseen by it too)."""
        from sklearn.metrics import roc_auc_score

        cfg = self.cfg
        existing = [r for r in self._load("prepare", "existing.jsonl") if r.annotated]
        intents = sorted({r.intent for r in existing})
        rng = random.Random(cfg.seed)
        held = set(rng.sample(intents, min(cfg.paraphrase.held_out_intents, len(intents) // 2)))
        ex = lambda recs: [Example(r.annotated, r.domain, r.intent) for r in recs]  # noqa: E731
        seen = [r for r in existing if r.intent not in held]
        n = cfg.paraphrase.pairs
        frac = cfg.paraphrase.positive_fraction
        types = sorted({s for r in seen for s, _ in r.slots})
        with tagger_processes(1) as pool:  # the CRF trains beside the encoder fine-tune
            fitted = pool.submit(fit_tagger, [r.annotated for r in seen])
            pairs = generate_pairs(ex(seen), n, frac, seed=cfg.seed)
            encoder = load_encoder(cfg.paraphrase.embedding_model)
            if cfg.paraphrase.fine_tune_epochs:
                fine_tune(encoder, pairs, cfg.paraphrase.fine_tune_epochs, cfg.seed,
                          log=self.st.log)
            tagger = fitted.result()
        test_pairs = generate_pairs(ex([r for r in existing if r.intent in held]),
                                    max(200, n // 5), frac, seed=cfg.seed + 1)
        # each text once: filled templates repeat (13,598 distinct texts in seed 13's
        # 16,000 training sides)
        texts = sorted({t for a, b, _ in pairs + test_pairs for t in (a, b)})
        row = {t: i for i, t in enumerate(texts)}
        vecs = self._pair_vectors(encoder, texts, tagger, types)
        vectors = lambda ps, side: vecs[[row[p[side]] for p in ps]]  # noqa: E731
        det = ParaphraseDetector().fit(vectors(pairs, 0), vectors(pairs, 1),
                                       np.array([y for _, _, y in pairs]), seed=cfg.seed)
        p = det.pair_proba(vectors(test_pairs, 0), vectors(test_pairs, 1))
        y = np.array([y_ for _, _, y_ in test_pairs])
        det.save(str(d / "detector.npz"))
        encoder.save(str(d / "encoder"))
        (d / "tagger.pkl").write_bytes(pickle.dumps((tagger, types)))
        write_jsonl(d / "pairs_sample.jsonl", [{"a": a, "b": b, "paraphrase": y_}
                                               for a, b, y_ in pairs[:200]])
        return {"unseen_intent_auc": round(float(roc_auc_score(y, p)), 4),
                "unseen_intent_accuracy": round(float(np.mean((p >= 0.5) == (y == 1))), 4),
                "held_out_intents": sorted(held), "train_pairs": len(pairs)}

    def diversity(self, d: Path) -> dict[str, Any]:
        det = ParaphraseDetector.load(str(self.out / "paraphrase" / "detector.npz"))
        tagger, types = pickle.loads((self.out / "paraphrase" / "tagger.pkl").read_bytes())
        encoder = load_encoder(str(self.out / "paraphrase" / "encoder"))
        seeds = self._load("prepare", "seeds.jsonl")
        all_cands = candidates(self.out, self.cfg.new_intents)
        in_domain = (self._in_domain_probability(seeds)
                     if self.cfg.diversity.in_domain_weighting and any(all_cands.values())
                     else {})
        rows, peers, stats = [], [], {}
        budget = self.cfg.diversity.rounds * self.cfg.diversity.batch_size
        for intent, cands in all_cands.items():
            if not cands:
                continue
            weights = [in_domain[r["text"]] for r in cands] if in_domain else None
            c_emb = self._pair_vectors(encoder, [r["text"] for r in cands], tagger, types)
            a_emb = self._pair_vectors(encoder, [r.text for r in seeds if r.intent == intent],
                                       tagger, types)
            # the peers a user would try instead, over the same vectors and budget
            for name, (picks, _) in (("k_center", k_center_order(c_emb, a_emb, budget)),
                                     ("facility_location", facility_location_order(c_emb, budget))):
                peers += [{"order": name, "intent": intent, "rank": rank, "id": cands[i]["id"]}
                          for rank, i in enumerate(picks)]
            dv = self.cfg.diversity
            args = (det, c_emb, a_emb, dv.batch_size, dv.rounds,
                    confidence_tiers([r["confidence"] for r in cands], dv.confident_fraction),
                    weights)
            # in_domain without weights (a pool too small for the classifier): the plain order
            order = (coverage_order(*args) if dv.objective == "coverage" else
                     diversity_order(*args, novelty=dv.objective != "in_domain" or not weights))
            for rank, (i, rnd, prob) in enumerate(order):
                rows.append({"id": cands[i]["id"], "intent": intent, "rank": rank, "round": rnd,
                             "max_paraphrase_prob": round(prob, 6),
                             "in_domain_prob": round(weights[i], 6) if weights else None})
            stats[intent] = len(order)
            if weights:
                stats[f"{intent}.in_domain_mean"] = round(float(np.mean(weights)), 4)
                stats[f"{intent}.in_domain_mean_selected"] = round(
                    float(np.mean([weights[i] for i, _, _ in order])), 4)
        write_jsonl(d / "diversity_order.jsonl", rows)
        write_jsonl(d / "peer_orders.jsonl", peers)
        return stats

    def _in_domain_probability(self, seeds: list[Utterance]) -> dict[str, float]:
        """Per selected pool text, the domain classifier's probability that it looks like
        the annotated data (``selectors/in_domain.py``), over the intent model's cached
        sentence embeddings."""
        annotated = sorted({r.text for r in self._load("prepare", "existing.jsonl") + seeds})
        pool = sorted({r["text"] for r in read_jsonl(self.out / "pool" / "selected.jsonl")})
        if len(pool) < IN_DOMAIN_FOLDS:  # too few to cross-fit: the plain order
            self.st.log(f"diversity: {len(pool)} selected pool text(s), too few for the "
                        "domain classifier; candidates are not weighted")
            return {}
        p = in_domain_probability(self.emb.get(annotated), self.emb.get(pool), self.cfg.seed)
        return dict(zip(pool, p.tolist()))

    def reference_curves(self, d: Path) -> dict[str, Any]:
        """The curves of the orders that need no selector (``REFERENCE_ORDERS``: random,
        relevance top-k, the oracle).  They need only the self-labelled candidates, so they
        fit beside the paraphrase stage instead of after it; the curves stage takes their
        predictions and fits only the training sets that the selectors add."""
        return self._curves(d, "reference_curves", REFERENCE_ORDERS, reference=None)

    def curves(self, d: Path) -> dict[str, Any]:
        """Every order's curve (``CURVE_ORDERS``), the reference orders' from
        ``reference_curves``."""
        return self._curves(d, "curves", CURVE_ORDERS, reference=self.out / "reference_curves")

    def _curves(self, d: Path, stage: str, names: tuple[str, ...], reference: Path | None
                ) -> dict[str, Any]:
        """Stage ``stage``'s error-vs-data curves of the orders ``names``: one intent model
        per distinct training set, except those whose predictions ``reference`` (a
        reference_curves output) holds already -- a fit is a function of its training set
        alone (``training_set``), so a saved prediction is the one a new fit would make."""
        cfg = self.cfg
        seeds = self._load("prepare", "seeds.jsonl")
        existing = self._load("prepare", "existing.jsonl")
        test = self._load("prepare", "test.jsonl")
        if not test:
            return {"skipped": "no eval.test_path"}
        cands = candidates(self.out, self.cfg.new_intents)
        selected: dict[str, dict[str, list[str]]] = {n: defaultdict(list) for n in SELECTED_ORDERS}
        if set(names) & set(SELECTED_ORDERS):
            for r in read_jsonl(self.out / "diversity" / "diversity_order.jsonl"):
                selected["diversity"][r["intent"]].append(r["id"])
            for r in read_jsonl(self.out / "diversity" / "peer_orders.jsonl"):
                selected[r["order"]][r["intent"]].append(r["id"])
        truth = hidden_truth(self.out)
        hidden = {c["id"]: pool_label(truth, c) for cs in cands.values() for c in cs}
        orders = {name: order for name, order in curve_orders(cands, selected, hidden,
                                                              cfg.seed).items()
                  if name in names}
        counts = [len(v) for v in cands.values()]
        budget = cfg.diversity.rounds * cfg.diversity.batch_size
        points = curve_points(counts, cfg.curve_points, budget, cfg.curve_shares)
        shares = share_points(counts, cfg.curve_shares, budget)
        base = existing + seeds
        tasks = []  # (order, point index, per-intent size, candidates added)
        for name, per_intent in orders.items():
            for i, n in enumerate(points):
                tasks.append((name, i, n, [c for intent in cfg.new_intents
                                           for c in per_intent.get(intent, [])[:n]]))
        # every text once, in one array the worker processes share (joblib memory-maps it)
        texts = sorted({r.text for r in base + test}
                       | {c["text"] for *_, ex in tasks for c in ex})
        row = {t: i for i, t in enumerate(texts)}
        vecs = self.emb.get(texts)
        base_rows = [row[r.text] for r in base]
        base_labels = [r.intent for r in base]
        test_rows = [row[r.text] for r in test]
        train_of = [training_set(base_rows + [row[c["text"]] for c in ex],
                                 base_labels + [c["_decision"]["intent"] for c in ex])
                    for *_, ex in tasks]
        known: dict[TrainingSet, list[str]] = {}
        if reference is not None:
            _, _, saved = load_curve_predictions(reference / "predictions.npz")
            for (name, i, _, _), train in zip(tasks, train_of):
                if name in saved:
                    known[train] = saved[name][i].tolist()
        # orders that add the same candidates (all of them at the full budget) train the
        # same model: each distinct training set is fitted once
        fits = list(dict.fromkeys(t for t in train_of if t not in known))
        taken = (f", {len(set(train_of)) - len(fits)} taken from reference_curves"
                 if reference is not None else "")
        self.st.log(f"{stage}: {len(tasks)} curve points ({len(orders)} orders x "
                    f"{len(points)}), {len(fits)} intent models to fit on "
                    f"{cfg.curve_workers or 'every'} worker(s){taken}")
        model = classifier_args(cfg)
        known.update(zip(fits, Parallel(n_jobs=cfg.curve_workers or -1)(
            delayed(fit_predict)(texts, vecs, train, test_rows, model) for train in fits)))
        results: dict[str, list[dict[str, float]]] = {}
        predictions: dict[str, list[list[str]]] = {}
        for (name, _, n, extra), train in zip(tasks, train_of):
            pred = known[train]
            predictions.setdefault(name, []).append(pred)
            results.setdefault(name, []).append({"per_intent": n, "added": len(extra),
                                                 **({"share": shares[n]} if n in shares else {}),
                                                 **self._scores(test, pred)})
            self.st.log(f"{stage}: {name} +{len(extra)} -> "
                        f"error {results[name][-1]['new_intent_error']:.4f}")
        write_json(d / "curves.json", results)
        # per-utterance predictions, so that intent_metrics can bootstrap the evaluation file
        save_curve_predictions(d / "predictions.npz", [r.intent for r in test], cfg.new_intents,
                               predictions)
        return {"budget_per_intent": points[-1], "points": len(points), "fitted": len(fits)}

    def upper_bound(self, d: Path) -> dict[str, Any]:
        test = self._load("prepare", "test.jsonl")
        if not test:
            return {"skipped": "no eval.test_path"}
        hidden_text = {r["id"]: r["text"]
                       for r in read_jsonl(self.out / "prepare" / "pool_hidden.jsonl")}
        hidden = [Utterance(id=r["id"], text=hidden_text[r["id"]], intent=r["intent"],
                            annotated=r["annotated"])
                  for r in read_jsonl(self.out / "prepare" / "pool_labels.jsonl")]
        full = (self._load("prepare", "existing.jsonl") + self._load("prepare", "seeds.jsonl")
                + hidden)
        # the upper bound's slot tagger and the corpus stage's (the same data in every run)
        # fit beside the intent model; the corpus stage fits its own where this one did not run
        pool = tagger_processes(2)
        tagger = pool.submit(fit_tagger, [r.annotated for r in full if r.annotated])
        self._seed_tagger = pool.submit(fit_tagger, self._seed_annotated())
        pool.shutdown(wait=False)
        res = self._evaluate(self._fit(full), test)
        return {**res, "slot_f1": self._slot_f1(tagger.result(), test)}

    @staticmethod
    def _slot_f1(tagger: SlotTagger, test: list[Utterance]) -> float | None:
        gold = [r for r in test if r.annotated]
        return slot_f1([r.annotated for r in gold], tagger.tag([r.text for r in gold])) if gold else None

    def corpus(self, d: Path) -> dict[str, Any]:
        """Seeds + diversity-ordered self-labelled utterances, slots from the CRF tagger."""
        seeds = self._load("prepare", "seeds.jsonl")
        test = self._load("prepare", "test.jsonl")
        tagger = (self._seed_tagger.result() if self._seed_tagger is not None
                  else fit_tagger(self._seed_annotated()))
        cands = {c["id"]: c for cs in candidates(self.out, self.cfg.new_intents).values() for c in cs}
        div = read_jsonl(self.out / "diversity" / "diversity_order.jsonl")
        rows = [{**to_dict(r), "origin": "seed", "stage": "seed", "scores": {}} for r in seeds]
        domain_of = {r.intent: r.domain for r in seeds}
        picked = [(r, cands[r["id"]]) for r in div if r["id"] in cands]
        tagged = tagger.tag([c["text"] for _, c in picked])
        for (r, c), annotated in zip(picked, tagged):
            _, slots = parse_annotation(annotated)
            rows.append({"id": c["id"], "text": c["text"], "locale": c.get("locale", ""),
                         "domain": domain_of.get(r["intent"], ""), "intent": r["intent"],
                         "annotated": annotated,
                         "slots": [{"type": s.type, "value": s.value} for s in slots],
                         "source": c.get("source", ""), "partition": "",
                         "origin": "self-labeled", "stage": "diversity",
                         "scores": {"relevance": c["_decision"]["score"],
                                    "top_ngrams": [g for g, _ in c["_decision"]["top_ngrams"]],
                                    "intent_confidence": c["confidence"],
                                    "diversity_round": r["round"],
                                    "max_paraphrase_prob": r["max_paraphrase_prob"],
                                    "in_domain_prob": r["in_domain_prob"]}})
        write_jsonl(d / "corpus.jsonl", rows)
        flat = [{**r, "slots": [f"{s['type']}={s['value']}" for s in r["slots"]],
                 "scores": json.dumps(r["scores"], sort_keys=True)} for r in rows]
        write_parquet(d / "corpus.parquet", flat)
        return {"records": len(rows), "seed": len(seeds), "self_labeled": len(rows) - len(seeds),
                "slot_f1_seed_tagger": self._slot_f1(tagger, test) if test else None}


# the stages' own versions, in their keys: the properties of their outputs, so that a run
# whose outputs lack a property listed here redoes the stage
POOL_OUTPUTS = ("selected.jsonl: ids unique (id@source where records collide)",)
INTENT_MODEL_VERSION = ("intent model fits: float32 features",)  # self_training, upper_bound
PARAPHRASE_OUTPUTS = ("detector.npz, encoder, tagger.pkl: fitted without the held-out intents",
                      "encoder fine-tuned on length-grouped batches",
                      "fine-tune steps: fused AdamW",
                      "detector vectors: each distinct pair text embedded once")
DIVERSITY_OUTPUTS = ("diversity_order.jsonl", "peer_orders.jsonl: order, intent, rank, id of "
                     + ", ".join(SELECTED_ORDERS[1:]))
CURVES_OUTPUTS = ("curves.json", "predictions.npz: gold, new_intents, <order>.<point index>",
                  "orders: " + ", ".join(CURVE_ORDERS),
                  "full budget: diversity rounds x batch_size per intent",
                  "one fit per distinct training set, its rows in canonical order",
                  "points at curve_shares of the full budget, their share in curves.json")
# a fresh run's order.  The stages that embed with the intent model's encoder run one after
# another in it (the embedding cache gives each the vectors of those before it); the
# paraphrase encoder's fine-tune, which embeds with its own, runs beside them
STAGES = ("prepare", "relevance", "pool", "self_training", "upper_bound", "reference_curves",
          "paraphrase", "diversity", "curves", "corpus")
AFTER = {"prepare": (), "relevance": ("prepare",), "pool": ("relevance",),
         "self_training": ("pool",), "upper_bound": ("self_training",),
         "reference_curves": ("upper_bound",), "paraphrase": ("prepare",),
         "diversity": ("upper_bound", "paraphrase"), "curves": ("diversity", "reference_curves"),
         "corpus": ("diversity",)}
# single-threaded intent-model and CRF fits beside the two-threaded encoder fine-tune
SIDE_BY_SIDE = ("self_training", "upper_bound", "reference_curves", "paraphrase")
STAGE_WORKERS = 2


def classifier_args(cfg: IntentConfig) -> dict[str, Any]:
    """The intent model's settings (``intent_model``): every fit of a run uses these."""
    im = cfg.intent_model
    return dict(c=im.c, seed=cfg.seed, class_weight=im.class_weight, min_df=im.min_df)


TrainingSet = tuple[tuple[int, str], ...]


def training_set(rows: list[int], labels: list[str]) -> TrainingSet:
    """(row, label) pairs in one canonical order: a fit depends on which utterances it
    trains on, not on the order an ordering listed them in (the loss sums over rows, and
    float sums differ with their order), so equal sets are one fit."""
    return tuple(sorted(zip(rows, labels)))


def fit_predict(texts: list[str], vecs: np.ndarray, train: TrainingSet, test: list[int],
                model: dict[str, Any]) -> list[str]:
    """One curve point: the intent model fitted on the (row, label) pairs ``train`` of
    (texts, vecs), its predictions for rows ``test``.  A plain function of its arguments,
    so that worker processes can run it."""
    rows = [r for r, _ in train]
    clf = IntentClassifier(**model).fit([texts[i] for i in rows], vecs[rows],
                                        [label for _, label in train])
    return list(clf.predict([texts[i] for i in test], vecs[test])[0])


def fit_tagger(annotated: list[str]) -> SlotTagger:
    """A CRF slot tagger fitted on bracket-annotated utterances (a worker process's task)."""
    return SlotTagger().fit(annotated)


def tagger_processes(n: int) -> ProcessPoolExecutor:
    """Worker processes for CRF fits: crfsuite holds the GIL while it trains, so a thread
    would stall the stage's own work.  Spawned, not forked: the parent runs torch threads."""
    return ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))


def _input_paths(files: list[InputFile]) -> list[str]:
    return [f.path for f in files]


def _stage_inputs(cfg: IntentConfig, fp: Fingerprints) -> dict[str, dict[str, str]]:
    """{stage: {file: digest}} for the stages that read input files."""
    evals = [cfg.eval.test_path] if cfg.eval is not None else []
    return {"prepare": fp.of(_input_paths(cfg.annotated) + evals),
            "pool": fp.of(_input_paths(cfg.pool))}


def _stage_keys(cfg: IntentConfig, inputs: dict[str, dict[str, str]]) -> dict[str, str]:
    """Each stage's key hashes the config sections it reads, the content of the files it
    reads, its upstream keys and the code version (``stages`` says why)."""
    k: dict[str, str] = {}
    # min_df 1 is how every intent model was fitted before the setting existed: left out of
    # the keys, it keeps the stages of earlier runs
    model = cfg.intent_model.model_dump(exclude={"min_df"} if cfg.intent_model.min_df == 1
                                        else set())
    k["prepare"] = section_hash(package_version(), cfg.annotated, cfg.eval, inputs["prepare"],
                                cfg.new_intents, cfg.seeds_per_intent, cfg.seed)
    k["relevance"] = section_hash(k["prepare"], cfg.relevance)
    k["pool"] = section_hash(k["relevance"], cfg.pool, inputs["pool"], POOL_OUTPUTS)
    k["self_training"] = section_hash(k["pool"], cfg.self_training, model, INTENT_MODEL_VERSION)
    k["paraphrase"] = section_hash(k["prepare"], cfg.paraphrase, PARAPHRASE_OUTPUTS)
    k["diversity"] = section_hash(k["self_training"], k["paraphrase"], cfg.diversity,
                                  DIVERSITY_OUTPUTS)
    # the reference orders' curves read the candidates and the budget, not the selector
    k["reference_curves"] = section_hash(k["self_training"], cfg.curve_points, cfg.curve_shares,
                                         cfg.diversity.rounds, cfg.diversity.batch_size,
                                         CURVES_OUTPUTS)
    k["curves"] = section_hash(k["diversity"], k["reference_curves"], cfg.curve_points,
                               cfg.curve_shares, CURVES_OUTPUTS)
    k["upper_bound"] = section_hash(k["prepare"], model, INTENT_MODEL_VERSION)
    k["corpus"] = section_hash(k["diversity"])
    return k


def run_intent(cfg: IntentConfig, beam_args: list[str], force: set[str] | None = None,
               quiet: bool = False) -> dict[str, Any]:
    st = StageRunner(cfg.output_dir, force, quiet)
    run = IntentRun(cfg, beam_args, st)
    inputs = _stage_inputs(cfg, st.fingerprints)
    keys = _stage_keys(cfg, inputs)
    st.run_all([Stage(name, keys[name], run.stage(name), AFTER[name], inputs.get(name),
                      concurrent=name in SIDE_BY_SIDE) for name in STAGES], STAGE_WORKERS)
    metrics = intent_metrics(cfg, st)
    for name, obj in (("metrics.json", metrics), ("summary.json", {n: st.records[n] for n in STAGES})):
        write_json(st.root / name, obj)
        publish(cfg.output_dir, st.root / name)
    st.release()
    return metrics
