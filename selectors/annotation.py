"""Slot annotations in MASSIVE's bracket format: ``play [song_name : undecided]``.

Parsing lives here (not in ``pipelines/``) because the paraphrase templates and
the slot tagger need it too, and models must not import ``pipelines/``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_SLOT = re.compile(r"\[\s*([^\[\]:]+?)\s*:\s*([^\[\]]*?)\s*\]")


class AnnotationError(ValueError):
    """The annotated text is not well formed (unbalanced brackets, empty slot type...)."""


@dataclass(frozen=True)
class Slot:
    type: str
    value: str
    start: int  # character offsets into the plain text
    end: int


def parse_annotation(annotated: str) -> tuple[str, tuple[Slot, ...]]:
    """Return the plain text and its slots; raise AnnotationError when malformed."""
    depth = 0
    for ch in annotated:
        depth += (ch == "[") - (ch == "]")
        if depth < 0 or depth > 1:
            raise AnnotationError("unbalanced or nested brackets")
    if depth:
        raise AnnotationError("unbalanced brackets")
    text_parts: list[str] = []
    slots: list[Slot] = []
    pos = 0
    length = 0
    for m in _SLOT.finditer(annotated):
        before = annotated[pos:m.start()]
        text_parts.append(before)
        length += len(before)
        slot_type, value = m.group(1).strip(), m.group(2).strip()
        if not slot_type or " " in slot_type:
            raise AnnotationError(f"bad slot type {slot_type!r}")
        slots.append(Slot(slot_type, value, length, length + len(value)))
        text_parts.append(value)
        length += len(value)
        pos = m.end()
    rest = annotated[pos:]
    if "[" in rest or "]" in rest or any("[" in p or "]" in p for p in text_parts):
        raise AnnotationError("bracket outside a '[type : value]' slot")
    text_parts.append(rest)
    return "".join(text_parts), tuple(slots)


def annotate(text: str, slots: tuple[Slot, ...] | list[Slot]) -> str:
    """Inverse of parse_annotation: write slots back into bracket form."""
    out, pos = [], 0
    for s in sorted(slots, key=lambda s: s.start):
        out.append(text[pos:s.start])
        out.append(f"[{s.type} : {text[s.start:s.end]}]")
        pos = s.end
    out.append(text[pos:])
    return "".join(out)


def template(annotated: str) -> str:
    """Replace slot values by their types: ``play [artist_name] in the [house_place]``."""
    return _SLOT.sub(lambda m: f"[{m.group(1).strip()}]", annotated)


def slot_types(annotated: str) -> frozenset[str]:
    return frozenset(m.group(1).strip() for m in _SLOT.finditer(annotated))


def fill_template(tmpl: str, values: dict[str, str]) -> str:
    """Fill ``[type]`` placeholders with values, keeping the annotation brackets."""
    return re.sub(r"\[([^\[\]:]+?)\]", lambda m: f"[{m.group(1)} : {values[m.group(1)]}]", tmpl)


def bio_tags(text: str, slots: tuple[Slot, ...]) -> tuple[list[str], list[str]]:
    """Whitespace tokens of ``text`` with BIO slot tags (for the CRF slot tagger)."""
    tokens, tags = [], []
    for m in re.finditer(r"\S+", text):
        tag = "O"
        for s in slots:
            if m.start() >= s.start and m.end() <= s.end:
                tag = ("B-" if m.start() == s.start else "I-") + s.type
                break
        tokens.append(m.group())
        tags.append(tag)
    return tokens, tags


def slots_from_bio(tokens: list[str], tags: list[str]) -> str:
    """Bracket-annotated text from whitespace tokens and BIO tags."""
    out: list[str] = []
    cur_type: str | None = None
    cur: list[str] = []

    def flush() -> None:
        nonlocal cur_type, cur
        if cur_type is not None:
            out.append(f"[{cur_type} : {' '.join(cur)}]")
        cur_type, cur = None, []

    for tok, tag in zip(tokens, tags):
        if tag.startswith("B-") or (tag.startswith("I-") and tag[2:] != cur_type):
            flush()
            cur_type, cur = tag[2:], [tok]
        elif tag.startswith("I-"):
            cur.append(tok)
        else:
            flush()
            out.append(tok)
    flush()
    return " ".join(out)
