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
    nbest = [Hypothesis("datei wecker speichern uhr", -1.0, 5),
             Hypothesis("stelle einen wecker für sieben uhr", -2.0, 8)]
    assert rescore(nbest, seed_lm, 0.0)[0].text == nbest[0].text
    best = rescore(nbest, seed_lm, 0.5)[0]
    assert best.text == nbest[1].text and best.rank_before == 1
    assert math.isclose(best.total, (best.nmt_score + 0.5 * best.lm_score) / 8)


def test_rescoring_without_the_lm_keeps_the_beams_length_normalised_choice(seed_lm):
    """The beam ranks by log-probability per scored position; with lm_weight 0 rescoring
    must keep that choice, not prefer the shorter hypothesis for its larger raw sum."""
    nbest = [Hypothesis("stelle einen wecker für sieben uhr", -2.4, 8),  # -0.30 per position
             Hypothesis("stelle einen", -1.5, 3)]  # -0.50 per position
    assert rescore(nbest, seed_lm, 0.0)[0].text == nbest[0].text
    # a beam that ranked with a length penalty of 2 put the long one first (-4.0 / 8 ** 2
    # against -1.2 / 3 ** 2): lm_weight 0 keeps that order, where per position it would not
    ranked = [Hypothesis("stelle einen wecker für sieben uhr", -4.0, 8),
              Hypothesis("stelle einen", -1.2, 3)]
    assert rescore(ranked, seed_lm, 0.0, lenpen=2.0)[0].text == ranked[0].text
    assert rescore(ranked, seed_lm, 0.0)[0].text == ranked[1].text


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

    rows = [{"id": "1", "src": "set an alarm", "nbest": [["zzz qqq", -0.5, 3],
                                                        ["stelle einen wecker für sieben uhr", -0.9, 7]]},
            {"id": "2", "src": "junk", "nbest": [["xx yy zz ww", -0.2, 5]]},
            {"id": "3", "src": "empty", "nbest": []}]
    nb = tmp_path / "nbest.jsonl"
    nb.write_text("".join(json.dumps(r) + "\n" for r in rows))
    thr = percentile_threshold(seed_lm, SEED, 5)
    counts = run_pipeline(lambda p: build_translation_filter(p, {"t": str(nb)}, seed_lm.path, 1.0, thr,
                                                             str(tmp_path)),
                          pipeline_options(BeamSettings(), ["--direct_num_workers=1"]))
    assert check_accounting("translations", counts) == {"read": 3, "kept": 1, "dropped": 2,
                                                        "rejected": 0}
    kept = read_jsonl_shards(tmp_path, "kept")
    assert kept[0]["tgt"] == "stelle einen wecker für sieben uhr" and kept[0]["_decision"]["nbest_rank"] == 1
    reasons = sorted(r["_decision"]["rule"] for r in read_jsonl_shards(tmp_path, "dropped"))
    assert reasons == ["empty_translation", "lm_improbable"]


def _state_scores(model, words):
    """KenLM states before each word (from <s>), for querying any next word."""
    import kenlm

    states = [kenlm.State()]
    model.BeginSentenceWrite(states[0])
    for w in words:
        nxt = kenlm.State()
        model.BaseScore(states[-1], w, nxt)
        states.append(nxt)
    return states


def test_kenlm_interpolate_writes_a_loadable_arpa_whose_probabilities_are_the_weighted_mix(tmp_path):
    """KenLM's ``interpolate`` combines the models log-linearly and renormalises: for every
    word, log p = sum_i w_i log p_i(word | h) - log Z(h), Z summing over the joint vocabulary.
    The ARPA it writes must load in kenlm and give exactly that."""
    import kenlm

    from winnow.lm.kenlm_tools import build_binary, intermediate_prefix, interpolate

    other = ["stelle einen wecker für acht uhr", "wie wird das wetter heute",
             "datei konnte nicht geöffnet werden", "spiele musik bitte"] * 3
    train_lm(SEED, tmp_path, "a", order=3, intermediate=True)
    train_lm(other, tmp_path, "b", order=3, intermediate=True)
    weights = [0.7, 0.4]
    arpa = interpolate([intermediate_prefix(tmp_path, "a"), intermediate_prefix(tmp_path, "b")],
                       weights, tmp_path / "mix.arpa")
    mix = LanguageModel(build_binary(arpa, tmp_path / "mix.binary"))._model
    a, b = kenlm.Model(str(tmp_path / "a.binary")), kenlm.Model(str(tmp_path / "b.binary"))
    vocab = sorted({w for t in SEED + other for w in t.split()}) + ["</s>", "<unk>"]
    lp = lambda model, state, word: model.BaseScore(state, word, kenlm.State())  # noqa: E731
    checked = 0
    for sent in ("stelle einen wecker für acht uhr", "wie ist das wetter heute", "spiele musik von adele"):
        words = sent.split()
        sa, sb, sm = _state_scores(a, words), _state_scores(b, words), _state_scores(mix, words)
        for i, word in enumerate(words + ["</s>"]):
            mixed = {v: weights[0] * lp(a, sa[i], v) + weights[1] * lp(b, sb[i], v) for v in vocab}
            z = math.log10(sum(10 ** m for m in mixed.values()))
            assert lp(mix, sm[i], word) == pytest.approx(mixed[word] - z, abs=2e-4), (sent, word)
            checked += 1
    assert checked == 18
    # the mix knows the words either model knows: "heute" and "datei" are not in the seed
    assert "heute" in mix and "datei" in mix and "heute" not in a and "datei" not in a


def test_lm_filter_threshold_from_held_out_text_keeps_the_configured_share(tmp_path):
    """The threshold is a percentile of held-out in-domain text under the seed LM, so unseen
    in-domain sentences pass at about the configured rate; a percentile of the seed's own
    (memorised) sentences would drop most of them."""
    import random

    rng = random.Random(3)
    verbs = ["stelle", "mach", "spiele", "zeige", "starte", "öffne"]
    objs = ["den wecker", "das licht", "die musik", "den timer", "das radio", "die liste"]
    rest = ["für morgen", "im wohnzimmer", "bitte", "um acht uhr", "in der küche", "jetzt",
            "für mich", "am abend"]
    make = lambda n: [f"{rng.choice(verbs)} {rng.choice(objs)} {rng.choice(rest)} "  # noqa: E731
                      f"{rng.choice(rest)}" for _ in range(n)]
    seed, tuning, held_out = make(150), make(200), make(400)
    _, binary = train_lm(seed, tmp_path, "seed", order=3)
    lm = LanguageModel(binary)
    passes = lambda thr: sum(lm.per_token(t) >= thr for t in held_out) / len(held_out)  # noqa: E731
    share = passes(percentile_threshold(lm, tuning, 20))
    assert 0.7 <= share <= 0.9
    assert passes(percentile_threshold(lm, seed, 20)) < share



def test_combine_tunes_the_weights_on_the_tuning_split_and_delivers_the_better_model(tmp_path):
    """The interpolation's weights are the grid point with the lowest tuning perplexity, and
    the deliverable is whichever of interpolated and pooled the tuning split prefers."""
    from winnow.lm.combine import LOG_LINEAR_GRID, combine
    from winnow.lm.evaluation import evaluate, seed_vocabulary
    from winnow.lm.kenlm_tools import build_binary, intermediate_prefix, interpolate

    seed_dir = tmp_path / "seed"
    train_lm(SEED, seed_dir, "seed", order=3, intermediate=True)
    text = ["stelle einen wecker für acht uhr", "wie wird das wetter heute",
            "datei konnte nicht geöffnet werden", "spiele musik bitte"] * 5
    tuning = ["stelle einen wecker für acht uhr", "wie wird das wetter in berlin"]
    vocab = seed_vocabulary(SEED)
    c = combine(seed_dir, "seed", SEED, text, tuning, vocab, tmp_path / "row", 3, "1G")
    models = [intermediate_prefix(seed_dir, "seed"), intermediate_prefix(tmp_path / "row", "text")]
    ppl = {}
    for w in LOG_LINEAR_GRID:
        arpa = interpolate(models, list(w), tmp_path / "check.arpa")
        binary = build_binary(arpa, tmp_path / "check.binary")
        ppl[w] = evaluate(LanguageModel(binary), tuning, vocab).perplexity
    assert c.weights == min(ppl, key=ppl.get)
    assert c.tuning_perplexity["interpolated"] == pytest.approx(min(ppl.values()))
    assert c.tuning_perplexity["pooled"] == pytest.approx(
        evaluate(LanguageModel(c.pooled), tuning, vocab).perplexity)
    assert c.tuning_perplexity["seed"] == pytest.approx(
        evaluate(LanguageModel(seed_dir / "seed.binary"), tuning, vocab).perplexity)
    assert c.deliverable == min(c.tuning_perplexity, key=c.tuning_perplexity.get)
    chosen = {"interpolated": c.interpolated, "pooled": c.pooled,
              "seed": seed_dir / "seed.binary"}[c.deliverable]
    assert c.binary.read_bytes() == chosen.read_bytes()
    # text that only hurts: the seed alone is delivered
    junk = combine(seed_dir, "seed", SEED, ["qq zz xx yy"] * 30, tuning, vocab, tmp_path / "junk", 3, "1G")
    assert junk.deliverable == "seed"
    assert junk.binary.read_bytes() == (seed_dir / "seed.binary").read_bytes()


def _arpa_words(path) -> set[str]:
    """The unigrams of an ARPA file."""
    lines = path.read_text(encoding="utf-8").split("\\1-grams:\n", 1)[1].split("\n\n", 1)[0]
    return {line.split("\t")[1] for line in lines.splitlines()}


def test_new_word_min_count_keeps_the_seed_words_and_the_text_words_it_repeats(tmp_path):
    """With ``new_word_min_count`` 2, a word the text has once and the seed never had is
    ``OOV_TOKEN`` in the text LM, the pooled LM and their interpolation; a word the text
    repeats stays a word, and so does a seed word the text has once."""
    from winnow.lm.combine import combine
    from winnow.lm.evaluation import seed_vocabulary
    from winnow.lm.text import OOV_TOKEN

    seed_dir = tmp_path / "seed"
    train_lm(SEED, seed_dir, "seed", order=3, intermediate=True)
    vocab = seed_vocabulary(SEED)
    seed_word = sorted(vocab)[0]
    text = ["spiele musik von zwiebelkuchen", "spiele musik von quarkstrudel",
            "spiele musik von quarkstrudel", f"bitte {seed_word}"]
    assert {"zwiebelkuchen", "quarkstrudel"}.isdisjoint(vocab)
    tuning = ["stelle einen wecker für acht uhr"]
    for min_count, dropped in ((1, set()), (2, {"zwiebelkuchen"})):
        d = tmp_path / f"min{min_count}"
        c = combine(seed_dir, "seed", SEED, text, tuning, vocab, d, 3, "1G",
                    new_word_min_count=min_count)
        for arpa in (d / "text.arpa", d / "pooled.arpa", c.interpolated.with_suffix(".arpa")):
            words = _arpa_words(arpa)
            assert {"quarkstrudel", seed_word} <= words
            assert "zwiebelkuchen" in words if not dropped else dropped.isdisjoint(words)
            assert (OOV_TOKEN in words) == bool(dropped)
