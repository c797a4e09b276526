"""Fuzzed bad input: generated malformed records never crash a reader or a pipeline, and
every record is kept, dropped or dead-lettered with a reason (read = kept + dropped + rejected)."""
import json

from hypothesis import HealthCheck, given, settings, strategies as st

from winnow.pipelines.readers import read_file
from winnow.pipelines.records import BitextPair, Rejected, Utterance

GOOD = {"id": "1", "locale": "en-US", "partition": "train", "scenario": "alarm",
        "intent": "alarm_set", "utt": "wake me at six", "annot_utt": "wake me at [time : six]"}

json_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                        st.text(max_size=30), st.lists(st.integers(), max_size=3))


@st.composite
def bad_massive_line(draw) -> bytes:
    kind = draw(st.sampled_from(["drop_field", "wrong_type", "broken_json", "bytes", "huge",
                                 "brackets", "empty", "script", "ok"]))
    rec = dict(GOOD)
    if kind == "drop_field":
        rec.pop(draw(st.sampled_from(sorted(rec))))
    elif kind == "wrong_type":
        rec[draw(st.sampled_from(["utt", "annot_utt", "id", "intent"]))] = draw(json_values)
    elif kind == "broken_json":
        s = json.dumps(rec)
        return s[:draw(st.integers(0, len(s) - 1))].encode()
    elif kind == "bytes":
        return draw(st.binary(min_size=1, max_size=60)).replace(b"\n", b" ")
    elif kind == "huge":
        rec["utt"] = rec["annot_utt"] = "word " * draw(st.integers(201, 400))
    elif kind == "brackets":
        rec["annot_utt"] = draw(st.sampled_from(["wake [time : six", "wake ] at six",
                                                 "[[time : six]]", "wake [ : six]"]))
    elif kind == "empty":
        rec["utt"] = rec["annot_utt"] = draw(st.sampled_from(["", "   ", "\t"]))
    elif kind == "script":
        rec["utt"] = rec["annot_utt"] = draw(st.text(min_size=1, max_size=20).filter(
            lambda t: "\n" not in t and "\r" not in t))
    return json.dumps(rec, ensure_ascii=False).encode("utf-8", "surrogatepass")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(st.lists(bad_massive_line(), min_size=20, max_size=40))
def test_massive_reader_accounts_for_every_line(tmp_path, lines):
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    n_lines = path.read_bytes().count(b"\n")
    recs = list(read_file(str(path), "massive"))
    assert len(recs) == n_lines  # one record or one dead letter per line, never a crash
    for r in recs:
        assert isinstance(r, (Utterance, Rejected))
        if isinstance(r, Rejected):
            assert r.reason and r.file == str(path) and 1 <= r.line <= n_lines
        else:
            assert r.text.strip() and len(r.text) <= 1000


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=40).map(lambda t: t.replace("\n", " ").replace("\r", " ")),
                min_size=1, max_size=40))
def test_bitext_reader_accounts_for_every_line(tmp_path, lines):
    path = tmp_path / "fuzz.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    recs = list(read_file(str(path), "bitext"))
    assert len(recs) == len(lines)
    assert all(isinstance(r, (BitextPair, Rejected)) for r in recs)


def test_pool_pipeline_with_1000_fuzzed_records(tmp_path):
    """>= 1,000 generated bad and good records through the Beam pool pipeline."""
    import warnings
    from winnow.pipelines.beam_io import check_accounting, pipeline_options, run_pipeline
    from winnow.pipelines.config import BeamSettings, InputFile
    from winnow.pipelines.pool_scoring import build_pool_scoring
    from winnow.selectors.ngram_relevance import NgramRelevanceModel

    with warnings.catch_warnings():  # .example() outside @given: fine for bulk generation
        warnings.simplefilter("ignore")
        lines = st.lists(bad_massive_line(), min_size=1100, max_size=1100).example()
    path = tmp_path / "pool.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    model = NgramRelevanceModel.fit(["wake me at six", "set an alarm"], ["play jazz", "weather"],
                                    label="alarm_set")
    counts = run_pipeline(
        lambda p: build_pool_scoring(p, [InputFile(path=str(path), format="massive")], [model],
                                     set(), str(tmp_path / "out"), top_k=5, threshold=None),
        pipeline_options(BeamSettings(), ["--direct_num_workers=1"]))
    acc = check_accounting("pool", counts)
    assert acc["read"] == len(lines) and acc["rejected"] > 0
