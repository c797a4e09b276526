"""Readers for the data-set formats winnow consumes: pure functions, no Beam.

Each reader turns one file into a stream of ``Utterance``/``BitextPair`` records and
``Rejected`` dead letters (file, line, reason) -- it never raises on bad content and
never drops a line silently.  ``pipelines.beam_io`` wraps them for Beam; the driver
calls them directly for small inputs (seed sets, evaluation files).

Formats:
  massive   MASSIVE JSON lines (id, locale, partition, scenario, intent, utt, annot_utt)
  jsonl     winnow's own utterance JSON lines (what it writes; fields of ``Utterance``)
  snips     SNIPS NLU benchmark ``train_<Intent>_full.json`` (one JSON document)
  hwu64     HWU64 ';'-separated CSV (scenario;intent;answer_annotation;...)
  snips_mt  translated SNIPS test TSV (id, old_utterance, ..., intent)
  text      plain text, one utterance per line
  bitext    tab-separated source<TAB>target pairs
  bitext_jsonl  winnow's own bitext JSON lines
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Callable

from winnow.pipelines import fileio
from winnow.pipelines.records import BitextPair, Rejected, Utterance, pair_from_dict
from winnow.selectors.annotation import AnnotationError, parse_annotation

MAX_TEXT_CHARS = 1000  # longer "utterances" are documents or junk, not speech
MAX_RAW_CHARS = 300  # how much of a bad line a dead letter keeps

Record = Utterance | BitextPair | Rejected
FORMATS = ("massive", "jsonl", "snips", "hwu64", "snips_mt", "text", "bitext", "bitext_jsonl")
_WS = re.compile(r"\s+")


class BadRecord(ValueError):
    """Raised inside a line parser; turned into a ``Rejected`` by the reader."""


def _clean_text(text: Any, what: str = "text") -> str:
    if not isinstance(text, str):
        raise BadRecord(f"{what} is {type(text).__name__}, expected a string")
    text = _WS.sub(" ", text).strip()
    if not text:
        raise BadRecord(f"empty {what}")
    if len(text) > MAX_TEXT_CHARS:
        raise BadRecord(f"{what} longer than {MAX_TEXT_CHARS} characters ({len(text)})")
    return text


def _field(d: dict[str, Any], key: str) -> Any:
    if key not in d:
        raise BadRecord(f"missing field '{key}'")
    return d[key]


def _str_field(d: dict[str, Any], key: str) -> str:
    v = _field(d, key)
    if not isinstance(v, (str, int)) or isinstance(v, bool):
        raise BadRecord(f"field '{key}' is {type(v).__name__}, expected a string")
    return str(v)


def _annotated(text: str, annotated: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Validate a bracket annotation against the plain text; return it and its slots."""
    annotated = _clean_text(annotated, "annotated text")
    try:
        plain, slots = parse_annotation(annotated)
    except AnnotationError as err:
        raise BadRecord(f"bad slot annotation: {err}") from None
    if _WS.sub(" ", plain).strip().lower() != text.lower():
        raise BadRecord("annotated text does not match the utterance")
    return annotated, tuple((s.type, s.value) for s in slots)


def _json_object(line: str) -> dict[str, Any]:
    try:
        d = json.loads(line)
    except json.JSONDecodeError as err:
        raise BadRecord(f"invalid JSON: {err.msg} at column {err.colno}") from None
    if not isinstance(d, dict):
        raise BadRecord(f"JSON value is {type(d).__name__}, expected an object")
    return d


def parse_massive(line: str, src: str, **_: Any) -> Utterance:
    d = _json_object(line)
    text = _clean_text(_field(d, "utt"))
    annotated, slots = _annotated(text, _field(d, "annot_utt"))
    return Utterance(id=_str_field(d, "id"), text=text, locale=_str_field(d, "locale"),
                     domain=_str_field(d, "scenario"), intent=_str_field(d, "intent"),
                     annotated=annotated, slots=slots, source=src,
                     partition=str(d.get("partition", "")))


def parse_jsonl(line: str, src: str, **_: Any) -> Utterance:
    d = _json_object(line)
    text = _clean_text(_field(d, "text"))
    annotated, slots = ("", ())
    if d.get("annotated"):
        annotated, slots = _annotated(text, d["annotated"])
    return Utterance(id=_str_field(d, "id"), text=text, locale=str(d.get("locale", "")),
                     domain=str(d.get("domain", "")), intent=str(d.get("intent", "")),
                     annotated=annotated, slots=slots, source=str(d.get("source") or src),
                     partition=str(d.get("partition", "")))


def parse_text(line: str, src: str, lineno: int, locale: str = "", **_: Any) -> Utterance:
    return Utterance(id=f"{Path(src.rsplit(':', 1)[0]).stem}:{lineno}", text=_clean_text(line),
                     locale=locale, source=src)


def parse_bitext(line: str, src: str, lineno: int, src_lang: str = "", tgt_lang: str = "",
                 **_: Any) -> BitextPair:
    cols = line.split("\t")
    if len(cols) != 2:
        raise BadRecord(f"expected 2 tab-separated columns, found {len(cols)}")
    return BitextPair(id=f"{Path(src.rsplit(':', 1)[0]).stem}:{lineno}",
                      src=_clean_text(cols[0], "source text"),
                      tgt=_clean_text(cols[1], "target text"),
                      src_lang=src_lang, tgt_lang=tgt_lang, source=src)


def parse_bitext_jsonl(line: str, src: str, **_: Any) -> BitextPair:
    d = _json_object(line)
    for key in ("id", "src", "tgt"):
        _field(d, key)
    pair = pair_from_dict(d)
    return BitextPair(id=pair.id, src=_clean_text(pair.src, "source text"),
                      tgt=_clean_text(pair.tgt, "target text"), src_lang=pair.src_lang,
                      tgt_lang=pair.tgt_lang, source=pair.source or src)


_HWU_COLS = ["answerid", "scenario", "intent", "answer_annotation", "answer_from_anno",
             "answer_from_user"]


def parse_hwu64(line: str, src: str, lineno: int, locale: str = "en-US", **_: Any) -> Utterance:
    rows = list(csv.reader(io.StringIO(line), delimiter=";"))
    if len(rows) != 1 or len(rows[0]) != len(_HWU_COLS):
        raise BadRecord(f"expected {len(_HWU_COLS)} ';'-separated columns")
    d = dict(zip(_HWU_COLS, rows[0]))
    annotated = _clean_text(d["answer_annotation"], "annotated text")
    try:
        plain, slots = parse_annotation(annotated)
    except AnnotationError as err:
        raise BadRecord(f"bad slot annotation: {err}") from None
    # answerid is the data set's own id, but it is not unique across the KFold files (484
    # reused, 41 'null'); the pool stage qualifies colliding ids with their source
    return Utterance(id=f"hwu64:{d['answerid']}", text=_clean_text(plain), locale=locale,
                     domain=d["scenario"], intent=f"{d['scenario']}_{d['intent']}",
                     annotated=annotated, slots=tuple((s.type, s.value) for s in slots),
                     source=src)


def parse_snips_mt(line: str, src: str, locale: str = "", **_: Any) -> Utterance:
    cols = line.split("\t")
    if len(cols) != 6:
        raise BadRecord(f"expected 6 tab-separated columns, found {len(cols)}")
    return Utterance(id=f"snips_mt:{cols[0]}", text=_clean_text(cols[1]), locale=locale,
                     intent=cols[5].strip(), source=src)


LINE_PARSERS: dict[str, Callable[..., Utterance | BitextPair]] = {
    "massive": parse_massive, "jsonl": parse_jsonl, "text": parse_text,
    "bitext": parse_bitext, "bitext_jsonl": parse_bitext_jsonl, "hwu64": parse_hwu64,
    "snips_mt": parse_snips_mt,
}
_HEADER_FORMATS = {"hwu64", "snips_mt"}  # first line is a header


def lines_in(f: BinaryIO, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """The raw lines of an open file whose first byte lies in [start, end): a line that
    begins before ``start`` belongs to the range before, one that begins before ``end``
    is read whole, so ranges that tile a file give every line exactly once."""
    if start:
        f.seek(start - 1)
        f.readline()  # ends the line that began before start (or just its newline)
    while end is None or f.tell() < end:
        raw = f.readline()
        if not raw:
            return
        yield raw


def count_lines(path: str, start: int, end: int) -> int:
    """How many lines begin in [start, end) of a file (local or in a bucket)."""
    with fileio.open_read(path) as f:
        return sum(1 for _ in lines_in(f, start, end))


def read_lines(path: str, fmt: str, start: int = 0, end: int | None = None, first_line: int = 1,
               **opts: Any) -> Iterator[Record]:
    """Records of a line-oriented file, or of the lines that begin in [start, end) of it
    (numbered from ``first_line``, the file's line number of the range's first line);
    undecodable or malformed lines become Rejected."""
    parser = LINE_PARSERS[fmt]
    with fileio.open_read(path) as f:
        for lineno, raw in enumerate(lines_in(f, start, end), start=first_line):
            if lineno == 1 and fmt in _HEADER_FORMATS:
                continue
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                yield Rejected(path, lineno, f"invalid UTF-8 at byte {err.start}",
                               raw[:MAX_RAW_CHARS].decode("utf-8", "replace"))
                continue
            if not line.strip() and fmt not in ("text",):
                yield Rejected(path, lineno, "blank line", "")
                continue
            try:
                yield parser(line, src=f"{path}:{lineno}", lineno=lineno, **opts)
            except BadRecord as err:
                yield Rejected(path, lineno, str(err), line[:MAX_RAW_CHARS])


def read_snips(path: str, locale: str = "en-US", **_: Any) -> Iterator[Record]:
    """A SNIPS benchmark JSON document: {Intent: [{"data": [{"text", "entity"?}, ...]}]}."""
    try:
        doc = json.loads(fileio.read_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        yield Rejected(path, 0, f"unreadable SNIPS JSON document: {err}", "")
        return
    if not isinstance(doc, dict):
        yield Rejected(path, 0, "SNIPS document is not a JSON object", "")
        return
    for intent, examples in sorted(doc.items()):
        for i, ex in enumerate(examples if isinstance(examples, list) else [None], start=1):
            try:
                chunks = ex["data"]
                text = _clean_text("".join(c["text"] for c in chunks))
                annotated = "".join(f"[{c['entity']} : {c['text'].strip()}]" if c.get("entity")
                                    else c["text"] for c in chunks)
                annotated, slots = _annotated(text, annotated)
            except (TypeError, KeyError) as err:
                yield Rejected(path, i, f"malformed SNIPS example in '{intent}': {err!r}",
                               json.dumps(ex, ensure_ascii=False)[:MAX_RAW_CHARS])
                continue
            except BadRecord as err:
                yield Rejected(path, i, str(err), json.dumps(ex, ensure_ascii=False)[:MAX_RAW_CHARS])
                continue
            yield Utterance(id=f"snips:{intent}:{i}", text=text, locale=locale, intent=intent,
                            annotated=annotated, slots=slots, source=f"{path}#{intent}/{i}")


def read_file(path: str, fmt: str, **opts: Any) -> Iterator[Record]:
    """Every record of a file; ``start``, ``end`` and ``first_line`` (line formats only)
    read one byte range of it, as ``read_lines``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown input format '{fmt}' (one of {', '.join(FORMATS)})")
    if fmt == "snips":
        yield from read_snips(path, **opts)
    else:
        yield from read_lines(path, fmt, **opts)


def split_records(records: Iterator[Record]) -> tuple[list, list[Rejected]]:
    good, bad = [], []
    for r in records:
        (bad if isinstance(r, Rejected) else good).append(r)
    return good, bad


def sample_key(rec_id: str, source: str) -> str:
    """A record's id with its source's file name but not its folder or bucket, for hash
    samples and groups: the same files read from elsewhere (a bucket, another checkout)
    draw the same."""
    return f"{rec_id}@{source.rsplit('/', 1)[-1]}"


def stable_fraction(key: str, seed: int | str) -> float:
    """A reproducible pseudo-random number in [0, 1) for an id (samples and splits by id)."""
    h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2 ** 64
