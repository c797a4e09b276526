"""KenLM: real lmplz/build_binary, queries, rescoring, the LM-filter Beam pipeline, evaluation."""
import json
import math

import pytest

from winnow.lm.evaluation import evaluate, seed_vocabulary
from winnow.lm.kenlm_tools import KenlmNotFound, kenlm_binary, train_lm
from winnow.lm.rescoring import Hypothesis, rescore
from winnow.lm.scoring import LanguageModel, percentile_threshold
from winnow.lm.text import normalize

SEED = ["stelle einen wecker für sieben uhr", "wie ist das wetter in berlin",
        "spiele musik von adele", "stelle den wecker auf acht uhr", "wie wird das wetter morgen",
        "mach das licht in der küche an", "wecker für sechs uhr bitte"] * 3


@pytest.fixture(scope="module")
def seed_lm(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm")
    arpa, binary = train_lm(SEED, d, "seed", order=3)
    assert arpa.read_text().startswith("\n\\data\\") or "\\data\\" in arpa.read_text()[:50]
    return LanguageModel(binary)


def test_normalize_keeps_devanagari_marks():
    assert normalize("Wie IST's, Welt?!") == "wie ist's welt"
    assert normalize("कल मौसम कैसा रहेगा?") == "कल मौसम कैसा रहेगा"


def test_missing_lmplz_says_how_to_build(monkeypatch, tmp_path):
    monkeypatch.setenv("WINNOW_KENLM_BIN", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    import winnow.lm.kenlm_tools as kt
    monkeypatch.setattr(kt, "Path", type(tmp_path))
    try:
        kenlm_binary("lmplz-does-not-exist")
    except KenlmNotFound as err:
        assert "make kenlm" in str(err)
    else:
        pytest.fail("expected KenlmNotFound")


def test_query_prefers_in_domain(seed_lm):
    assert seed_lm.score("stelle einen wecker für acht uhr") > seed_lm.score("datei speichern fehlgeschlagen")
    words = seed_lm.full_scores("wecker xyzzy")
    assert [w for w, _, _ in words] == ["wecker", "xyzzy", "</s>"]
    assert words[1][2] is True and words[0][2] is False


def test_rescoring_changes_choice_when_lm_disagrees(seed_lm):
    nbest = [Hypothesis("datei wecker speichern uhr", -1.0),
             Hypothesis("stelle einen wecker für sieben uhr", -1.5)]
    assert rescore(nbest, seed_lm, 0.0)[0].text == nbest[0].text
    best = rescore(nbest, seed_lm, 0.5)[0]
    assert best.text == nbest[1].text and best.rank_before == 1
    assert math.isclose(best.total, best.nmt_score + 0.5 * best.lm_score)


def test_evaluation_scores_seed_vocab_tokens_only(seed_lm):
    vocab = seed_vocabulary(SEED)
    ev = evaluate(seed_lm, ["stelle einen wecker", "unbekanntes wort hier"], vocab)
    assert ev.test_words == 6 and ev.scored_tokens == 3 + 2  # 3 known words + 2 </s>
    assert 0 < ev.oov_rate <= 0.5 and ev.perplexity > 1


def test_percentile_threshold(seed_lm):
    t = percentile_threshold(seed_lm, SEED, 10)
    scores = sorted(seed_lm.per_token(s) for s in SEED)
    assert scores[0] <= t <= scores[-1]


def test_translation_filter_pipeline_accounting(seed_lm, tmp_path):
    from winnow.pipelines.beam_io import check_accounting, pipeline_options, read_jsonl_shards, run_pipeline
    from winnow.pipelines.config import BeamSettings
    from winnow.pipelines.lm_pipelines import build_translation_filter

    rows = [{"id": "1", "src": "set an alarm", "nbest": [["zzz qqq", -0.5],
                                                        ["stelle einen wecker für sieben uhr", -0.9]]},
            {"id": "2", "src": "junk", "nbest": [["xx yy zz ww", -0.2]]},
            {"id": "3", "src": "empty", "nbest": []}]
    nb = tmp_path / "nbest.jsonl"
    nb.write_text("".join(json.dumps(r) + "\n" for r in rows))
    thr = percentile_threshold(seed_lm, SEED, 5)
    counts = run_pipeline(lambda p: build_translation_filter(p, str(nb), seed_lm.path, 1.0, thr,
                                                             str(tmp_path)),
                          pipeline_options(BeamSettings(), ["--direct_num_workers=1"]))
    assert check_accounting("translations", counts) == {"read": 3, "kept": 1, "dropped": 2,
                                                        "rejected": 0}
    kept = read_jsonl_shards(tmp_path, "kept")
    assert kept[0]["tgt"] == "stelle einen wecker für sieben uhr" and kept[0]["_decision"]["nbest_rank"] == 1
    reasons = sorted(r["_decision"]["rule"] for r in read_jsonl_shards(tmp_path, "dropped"))
    assert reasons == ["empty_translation", "lm_improbable"]


def test_interpolation_weight_one_is_the_seed_lm_and_tuning_picks_the_better_mix(seed_lm, tmp_path):
    from winnow.lm.evaluation import (evaluate, evaluate_interpolated, seed_vocabulary,
                                      tune_interpolation)

    other_text = ["stelle einen wecker für acht uhr", "wie wird das wetter heute",
                  "datei konnte nicht geöffnet werden", "ungültiger benutzername"] * 3
    _, binary = train_lm(other_text, tmp_path, "other", order=3)
    other = LanguageModel(binary)
    vocab = seed_vocabulary(SEED)
    test = ["stelle einen wecker für acht uhr", "wie wird das wetter heute abend"]
    alone = evaluate(seed_lm, test, vocab)
    same = evaluate_interpolated(seed_lm, other, 1.0, test, vocab)
    assert abs(same.perplexity - alone.perplexity) < 1e-6 * alone.perplexity
    # "acht" and "heute" are unknown to the seed LM but known to the other one
    assert evaluate_interpolated(seed_lm, other, 0.5, test, vocab).oov_rate < alone.oov_rate
    weight, grid = tune_interpolation(seed_lm, other, test, vocab)
    assert grid[weight] == min(grid.values()) and grid[weight] < alone.perplexity
    # a tiny LM that knows none of the scored words cannot win through its <unk> mass
    _, tiny_bin = train_lm(["völlig fremde wörter"], tmp_path, "tiny", order=3)
    tiny = evaluate_interpolated(seed_lm, LanguageModel(tiny_bin), 0.5, test, vocab)
    assert tiny.perplexity > alone.perplexity
