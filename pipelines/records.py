"""Typed records that flow through winnow's pipelines, and their JSON form.

Every record carries where it came from (``source``: data set and file position) so
that an output corpus can always be traced back.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from collections.abc import Iterable, Iterator
from typing import Any

RULE_DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Utterance:
    id: str
    text: str
    locale: str = ""
    domain: str = ""  # MASSIVE "scenario"
    intent: str = ""
    annotated: str = ""  # "[type : value]" bracket form; "" when unknown
    slots: tuple[tuple[str, str], ...] = ()  # (type, value)
    source: str = ""
    partition: str = ""


@dataclass(frozen=True)
class BitextPair:
    id: str
    src: str
    tgt: str
    src_lang: str = ""
    tgt_lang: str = ""
    source: str = ""


@dataclass(frozen=True)
class Rejected:
    """A malformed input record: the dead-letter output."""

    file: str
    line: int
    reason: str
    raw: str = ""


@dataclass(frozen=True)
class Decision:
    """A record a filter looked at: kept or dropped, with the rule and score that decided."""

    record: Any
    kept: bool
    rule: str = ""
    score: float | None = None
    scores: dict[str, Any] = field(default_factory=dict)


def keep_first(recs: Iterable[Any]) -> Iterator[Any]:
    """Records that share a text: the first by (id, source) survives, the rest are dropped as
    its duplicates. Ids need not be unique across input files (HWU64 reuses its own; two
    bitext files named alike share ``stem:line``), so the source, which is, breaks ties and
    the survivor is the same on every run whatever order the records arrive in."""
    recs = sorted(recs, key=lambda r: (r.id, r.source))
    yield recs[0]
    for r in recs[1:]:
        yield Decision(r, False, RULE_DUPLICATE, scores={"duplicate_of": recs[0].id})


def to_dict(rec: Any) -> dict[str, Any]:
    d = dataclasses.asdict(rec)
    if isinstance(rec, Utterance):
        d["slots"] = [{"type": t, "value": v} for t, v in rec.slots]
    return d


def to_json(rec: Any) -> str:
    return json.dumps(to_dict(rec), ensure_ascii=False, sort_keys=True)


def utterance_from_dict(d: dict[str, Any]) -> Utterance:
    slots = tuple((s["type"], s["value"]) for s in d.get("slots", ()))
    return Utterance(id=str(d["id"]), text=d["text"], locale=d.get("locale", ""),
                     domain=d.get("domain", ""), intent=d.get("intent", ""),
                     annotated=d.get("annotated", ""), slots=slots,
                     source=d.get("source", ""), partition=d.get("partition", ""))


def pair_from_dict(d: dict[str, Any]) -> BitextPair:
    return BitextPair(id=str(d["id"]), src=d["src"], tgt=d["tgt"], src_lang=d.get("src_lang", ""),
                      tgt_lang=d.get("tgt_lang", ""), source=d.get("source", ""))
