"""Readers: every format parses; every malformed line becomes a dead letter with a reason."""
import json

import pytest

from conftest import massive_line
from winnow.pipelines.data_access import read_jsonl, write_jsonl, write_parquet
from winnow.pipelines.readers import MAX_TEXT_CHARS, read_file, split_records
from winnow.pipelines.records import Rejected, utterance_from_dict


def test_massive_roundtrip_through_jsonl_and_parquet(tmp_path):
    src = tmp_path / "m.jsonl"
    src.write_text(massive_line(1, "alarm_set", "wake me at [time : nine]") + "\n"
                   + massive_line(2, "weather_query", "is it hot") + "\n")
    good, bad = split_records(read_file(str(src), "massive"))
    assert bad == [] and [u.intent for u in good] == ["alarm_set", "weather_query"]
    assert good[0].slots == (("time", "nine"),)
    out = tmp_path / "o.jsonl"
    write_jsonl(out, good)
    again, bad = split_records(read_file(str(out), "jsonl"))
    assert bad == [] and [(u.text, u.slots, u.intent) for u in again] == \
        [(u.text, u.slots, u.intent) for u in good]
    assert [utterance_from_dict(d) for d in read_jsonl(out)][0].annotated == good[0].annotated
    import pyarrow.parquet as pq
    write_parquet(tmp_path / "o.parquet", read_jsonl(out))
    assert pq.read_table(tmp_path / "o.parquet").num_rows == 2


BAD_MASSIVE = [
    (b'{"id": 1, "utt": "x"', "invalid JSON"),
    (b'[1, 2]', "expected an object"),
    (b'{"id": "1", "locale": "en", "scenario": "s", "intent": "i", "annot_utt": "x"}',
     "missing field 'utt'"),
    (b'{"id": "1", "locale": "en", "scenario": "s", "intent": "i", "utt": 5, "annot_utt": "x"}',
     "text is int"),
    (b'{"id": "1", "locale": "en", "scenario": "s", "intent": "i", "utt": "  ", "annot_utt": ""}',
     "empty text"),
    (b'{"id": "1", "locale": "en", "scenario": "s", "intent": "i", "utt": "play x", '
     b'"annot_utt": "play [a : x"}', "bad slot annotation"),
    (b'{"id": "1", "locale": "en", "scenario": "s", "intent": "i", "utt": "play x", '
     b'"annot_utt": "play [a : y]"}', "does not match"),
    (b'\xff\xfe{"id": 1}', "invalid UTF-8"),
    (json.dumps({"id": "1", "locale": "en", "scenario": "s", "intent": "i",
                 "utt": "a" * (MAX_TEXT_CHARS + 1), "annot_utt": "a"}).encode(), "longer than"),
]


@pytest.mark.parametrize("raw, reason", BAD_MASSIVE)
def test_bad_massive_lines_are_dead_lettered(tmp_path, raw, reason):
    src = tmp_path / "bad.jsonl"
    src.write_bytes(massive_line(1, "a", "ok line").encode() + b"\n" + raw + b"\n")
    recs = list(read_file(str(src), "massive"))
    assert len(recs) == 2
    rej = recs[1]
    assert isinstance(rej, Rejected) and rej.line == 2 and rej.file == str(src)
    assert reason in rej.reason, rej.reason


def test_bitext_ragged_and_blank_lines(tmp_path):
    src = tmp_path / "b.tsv"
    src.write_text("hello world\thallo welt\nno tab here\na\tb\tc\n\nok then\tok dann\n")
    recs = list(read_file(str(src), "bitext", src_lang="en", tgt_lang="de"))
    kinds = [(type(r).__name__, getattr(r, "reason", "")) for r in recs]
    assert kinds[0][0] == "BitextPair" and kinds[-1][0] == "BitextPair"
    assert "found 1" in kinds[1][1] and "found 3" in kinds[2][1] and kinds[3][1] == "blank line"
    assert recs[0].id == "b:1" and recs[-1].id == "b:5"


def test_hwu64_snips_text_and_snips_mt(tmp_path):
    hwu = tmp_path / "alarm_set.csv"
    hwu.write_text('answerid;scenario;intent;answer_annotation;answer_from_anno;answer_from_user\n'
                   '7;alarm;set;"wake me at [time : six]";"wake me at six";"x"\n'
                   '8;alarm;set;"broken [time : six";"x";"x"\n')
    good, bad = split_records(read_file(str(hwu), "hwu64"))
    assert good[0].intent == "alarm_set" and good[0].slots == (("time", "six"),)
    assert bad[0].line == 3
    snips = tmp_path / "train_GetWeather_full.json"
    snips.write_text(json.dumps({"GetWeather": [
        {"data": [{"text": "rain in "}, {"text": "paris", "entity": "city"}]}, {"nodata": 1}]}))
    good, bad = split_records(read_file(str(snips), "snips"))
    assert good[0].text == "rain in paris" and good[0].annotated == "rain in [city : paris]"
    assert len(bad) == 1 and "malformed" in bad[0].reason
    txt = tmp_path / "t.txt"
    txt.write_text("one line\n\nsecond\n")
    good, bad = split_records(read_file(str(txt), "text"))
    assert [u.text for u in good] == ["one line", "second"] and bad[0].reason == "empty text"
    mt = tmp_path / "data.tsv"
    mt.write_text("id\told_utterance\tnew_utterance\tdiffs\tslot_labels\tintent\n"
                  "1\tमौसम कैसा है\tx\tx\tO O O\tGetWeather\n3\tragged\n")
    good, bad = split_records(read_file(str(mt), "snips_mt", locale="hi-IN"))
    assert good[0].text == "मौसम कैसा है" and good[0].intent == "GetWeather" and len(bad) == 1


@pytest.mark.parametrize("fmt", ["jsonl", "text"])
def test_a_file_read_in_byte_ranges_gives_the_whole_file_records(tmp_path, fmt):
    """Ranges of a few bytes cut through multi-byte characters, CRLF endings, blank, broken
    and undecodable lines: every range's records and dead letters together are the whole
    file's, with the same line numbers."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from winnow.pipelines.beam_io import ReadRecords, byte_ranges
    from winnow.pipelines.config import InputFile
    from winnow.pipelines.records import to_json

    texts = ["weck mich um sieben", "wie wird das wetter in köln", "spiel musik von größe",
             "", "{broken", "turn the lights blue", "日本語のテキスト"]
    lines = [(json.dumps({"id": f"u{i}", "text": t}, ensure_ascii=False) if fmt == "jsonl"
              and t and t != "{broken" else t).encode() for i, t in enumerate(texts)]
    lines.insert(3, b"\xff\xfe bad bytes")
    path = tmp_path / "pool.txt"
    path.write_bytes(b"\n".join(lines[:4]) + b"\r\n" + b"\n".join(lines[4:]) + b"\n")
    whole = sorted(to_json(r) for r in read_file(str(path), fmt))
    assert any('"line": 4' in r or ":4" in r for r in whole)
    for split in (5, 23, 64, 1 << 20):
        assert len(byte_ranges(str(path), path.stat().st_size, split)) == -(-path.stat().st_size // split)
        with TestPipeline() as p:
            out = p | ReadRecords("t", [InputFile(path=str(path), format=fmt)], split_bytes=split)
            both = (out["records"], out["rejected"]) | beam.Flatten() | beam.Map(to_json)
            assert_that(both, equal_to(whole))
