"""n-gram relevance: the compiled table equals scikit-learn; the Beam pool pipeline keeps the
top-k per intent and accounts for every record."""
import glob
import json

import numpy as np
import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from winnow.pipelines.beam_io import check_accounting, pipeline_options, read_jsonl_shards, run_pipeline
from winnow.pipelines.config import BeamSettings, InputFile
from winnow.pipelines.pool_scoring import ScoreRelevance, build_pool_scoring, unique_ids
from winnow.selectors.ngram_relevance import (NgramRelevanceModel, RelevanceTable, _KeyIndex,
                                              fit_sklearn, ngrams)

POS = ["wake me up at seven", "set an alarm for six am", "alarm at noon please",
       "wake me at five tomorrow"]
NEG = ["what is the weather", "play some jazz", "order a pizza", "turn the lights blue",
       "will it rain today", "play the next podcast episode"]


def test_ngrams_are_distinct_1_to_3():
    assert ngrams("a b a") == ["a", "b", "a b", "b a", "a b a"]


def test_table_matches_sklearn_decision_function():
    lr, vec = fit_sklearn(POS, NEG)
    model = NgramRelevanceModel.compile(lr, vec, label="alarm")
    probe = POS + NEG + ["set an alarm to play jazz", "unseen words only", ""]
    expected = lr.decision_function(vec.transform(probe))
    got = np.array([model.logit(t) for t in probe])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert model.score("set an alarm for seven") > model.score("play some jazz")
    assert model.top_ngrams("set an alarm")[0][1] > 0


def test_save_load_roundtrip(tmp_path):
    m = NgramRelevanceModel.fit(POS, NEG, label="alarm")
    m.save(tmp_path / "m.json")
    m2 = NgramRelevanceModel.load(tmp_path / "m.json")
    assert m2.logit("alarm at six") == m.logit("alarm at six")


def test_score_dofn_in_test_pipeline():
    m = NgramRelevanceModel.fit(POS, NEG, label="alarm_set")
    w = NgramRelevanceModel.fit(NEG[:2] + ["is it sunny", "how hot is it"], POS, label="weather")
    from winnow.pipelines.records import Utterance

    recs = [Utterance(id="1", text="set an alarm at seven"), Utterance(id="2", text="is it sunny")]
    js = [{"weights": x.weights, "bias": x.bias, "label": x.label} for x in (m, w)]
    with test_pipeline.TestPipeline() as p:
        labels = (p | beam.Create(recs) | beam.BatchElements(min_batch_size=2)
                  | beam.ParDo(ScoreRelevance(js))
                  | beam.Map(lambda kv: (kv[1][1], kv[0])))
        assert_that(labels, equal_to([("1", "alarm_set"), ("2", "weather")]))


def test_vectorised_batch_scoring_equals_per_utterance_logits():
    """logits_batch (ASCII fast path and the Unicode regex path) == the per-n-gram sum."""
    a = NgramRelevanceModel.fit(POS, NEG, label="a")
    b = NgramRelevanceModel.fit(NEG, POS, label="b")
    table = RelevanceTable([a, b])
    probe = POS + NEG + ["", "alarm", "Set an ALARM, for seven!", "alarm alarm at at seven seven",
                         "wake me\nup at seven", "set\x01an alarm\tat six", "what's the weather?",
                         "unknown words only", "set an unknown alarm for six am"]
    expected = np.array([[a.logit(t), b.logit(t)] for t in probe])
    np.testing.assert_allclose(table.logits_batch(probe), expected, atol=1e-9)
    unicode_probe = probe + ["réveille-moi à sept heures alarm", "ΣΑΣ alarm at six"]
    expected = np.array([[a.logit(t), b.logit(t)] for t in unicode_probe])
    np.testing.assert_allclose(table.logits_batch(unicode_probe), expected, atol=1e-9)
    assert table.logits_batch([]).shape == (0, 2)
    np.testing.assert_allclose(table.scores_batch(POS[:1])[0], table.scores(POS[0]), atol=1e-12)


def test_key_index_equals_a_dict_for_present_and_absent_keys():
    """The vectorised hash index behind logits_batch: every stored key maps to its value,
    every other key to -1, also when keys collide (many keys share a hash slot start)."""
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(1, 2**62, 5000))
    values = rng.permutation(len(keys))
    index = _KeyIndex(keys, values)
    assert index.max_probe > 1  # collisions happened and were resolved
    absent = np.setdiff1d(rng.integers(1, 2**62, 5000), keys)
    probe = rng.permutation(np.concatenate([keys, absent]))
    truth = dict(zip(keys.tolist(), values.tolist()))
    assert index.get(probe).tolist() == [truth.get(k, -1) for k in probe.tolist()]
    assert _KeyIndex(np.zeros(0, np.int64), np.zeros(0, np.int64)).get(keys).tolist() == [-1] * len(keys)


def test_relevance_table_agrees_with_models():
    a = NgramRelevanceModel.fit(POS, NEG, label="a")
    b = NgramRelevanceModel.fit(NEG, POS, label="b")
    table = RelevanceTable([a, b])
    for t in POS + NEG:
        np.testing.assert_allclose(table.scores(t), [a.score(t), b.score(t)], atol=1e-9)


def test_pool_pipeline_top_k_and_accounting(tmp_path):
    pool = tmp_path / "pool.txt"
    lines = ["set an alarm for seven", "set an alarm for seven", "alarm at six please",
             "wake me up at nine", "play some rock", "order a burger", "seed text here",
             "", "what is the weather"]
    pool.write_text("\n".join(lines) + "\n")
    m = NgramRelevanceModel.fit(POS, NEG, label="alarm_set")
    out = tmp_path / "out"
    counts = run_pipeline(
        lambda p: build_pool_scoring(p, [InputFile(path=str(pool), format="text")], [m],
                                     {"Seed text here"}, str(out), top_k=2, threshold=None),
        pipeline_options(BeamSettings(), ["--direct_num_workers=1"]))
    acc = check_accounting("pool", counts)
    assert acc == {"read": 9, "kept": 2, "dropped": 6, "rejected": 1}
    kept = read_jsonl_shards(out, "kept")
    dropped = read_jsonl_shards(out, "dropped")
    assert sorted(r["text"] for r in kept) == ["alarm at six please", "set an alarm for seven"] \
        or sorted(r["text"] for r in kept) == ["set an alarm for seven", "wake me up at nine"]
    rules = sorted(r["_decision"]["rule"] for r in dropped)
    assert rules.count("duplicate") == 1 and rules.count("in_seed_or_eval_set") == 1
    assert rules.count("below_top_k") == 4
    assert all(r["_decision"]["intent"] == "alarm_set" for r in kept)
    rejected = [json.loads(line) for f in glob.glob(str(out / "rejected-*"))
                for line in open(f)]
    assert rejected[0]["line"] == 8 and rejected[0]["reason"] == "empty text"


def test_unique_ids_qualifies_only_colliding_ids_with_their_source():
    kept = [{"id": "hwu64:null", "source": "KFold_3/alarm_set.csv:6", "text": "two pm set"},
            {"id": "hwu64:null", "source": "KFold_5/alarm_set.csv:14", "text": "one am set"},
            {"id": "hwu64:7", "source": "KFold_1/alarm_set.csv:2", "text": "wake me at six"},
            {"id": "massive:1", "source": "pool.jsonl:1", "text": "alarm at noon"},
            {"id": "lm:3", "source": "lm.txt:3", "text": "set an alarm"}]
    out, n = unique_ids(kept, taken={"massive:1", "unrelated"})
    assert n == 3
    assert [r["id"] for r in out] == ["hwu64:null@KFold_3/alarm_set.csv:6",
                                      "hwu64:null@KFold_5/alarm_set.csv:14", "hwu64:7",
                                      "massive:1@pool.jsonl:1", "lm:3"]
    assert len({r["id"] for r in out}) == len(out)
    assert [r["text"] for r in out] == [r["text"] for r in kept]
    assert unique_ids(kept[2:3], set()) == (kept[2:3], 0)


def test_keep_first_survivor_does_not_depend_on_arrival_order():
    from winnow.pipelines.records import Utterance, keep_first

    recs = [Utterance(id="pool:1", text="wake me", source="b/pool.txt:1"),
            Utterance(id="pool:1", text="Wake me", source="a/pool.txt:1"),
            Utterance(id="hwu64:9", text="wake  me", source="x.csv:3")]
    for order in (recs, recs[::-1]):
        first, *rest = keep_first(order)
        assert first.source == "x.csv:3"
        assert [d.record.source for d in rest] == ["a/pool.txt:1", "b/pool.txt:1"]
        assert all(not d.kept and d.rule == "duplicate" for d in rest)
    first, dup = keep_first(recs[:2])
    assert first.source == "a/pool.txt:1" and dup.scores == {"duplicate_of": "pool:1"}


def test_pool_top_k_keeps_exactly_k_where_ids_and_scores_tie(tmp_path):
    """Two pool files named alike give the same ids (``pool:1``); utterances with no known
    n-gram tie on the intercept. The top-k cutoff still keeps exactly k."""
    for sub, lines in (("a", ["zork blap", "wake me at six", "set an alarm for seven"]),
                       ("b", ["quux frob", "wake me at six"])):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "pool.txt").write_text("\n".join(lines) + "\n")
    m = NgramRelevanceModel.fit(POS, NEG, label="alarm_set")
    assert m.score("zork blap") == m.score("quux frob")
    out = tmp_path / "out"
    counts = run_pipeline(
        lambda p: build_pool_scoring(p, [InputFile(path=str(tmp_path / "*" / "pool.txt"),
                                                   format="text")],
                                     [m], set(), str(out), top_k=3, threshold=None),
        pipeline_options(BeamSettings(), ["--direct_num_workers=1"]))
    assert check_accounting("pool", counts) == {"read": 5, "kept": 3, "dropped": 2, "rejected": 0}
    kept = {r["text"]: r["source"] for r in read_jsonl_shards(out, "kept")}
    assert set(kept) == {"set an alarm for seven", "wake me at six", "quux frob"}
    assert kept["wake me at six"].endswith("a/pool.txt:2")  # b's copy (also pool:2) is dropped
