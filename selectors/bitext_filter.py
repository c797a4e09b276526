"""Bitext filtering for LM bootstrapping (Punjabi et al. 2019, step 1).

Cheap rules first (pure functions returning a drop reason or None, thresholds as
named constants), so the sentence encoder only sees plausible pairs; then the
embedding-distance filter: the cosine distance of a pair's target side to the mean
embedding of the in-domain target set.
"""
from __future__ import annotations

import re
import unicodedata

import numpy as np

DEFAULT_MIN_TOKENS = 2
DEFAULT_MAX_TOKENS = 40
DEFAULT_MAX_LENGTH_RATIO = 2.5
MIN_SCRIPT_FRACTION = 0.6  # of the letters, in the expected script
MAX_NON_LETTER_FRACTION = 0.4  # digits, punctuation, placeholders like %s
# printf/format placeholders, markup, entities, accelerators: software strings, not speech
_MARKUP = re.compile(r"%\(?\w*\)?[-#0 +]*\d*(?:\.\d+)?[sdifuxXegc]|\{\w*\}|<[^>]+>|&\w+;|_\w|\\[nt]|\w+\(\)")
_SCRIPTS = {"hi": "DEVANAGARI", "de": "LATIN", "en": "LATIN", "fr": "LATIN", "es": "LATIN"}


def rule_length(src: str, tgt: str, min_tokens: int = DEFAULT_MIN_TOKENS,
                max_tokens: int = DEFAULT_MAX_TOKENS) -> str | None:
    for side, text in (("source", src), ("target", tgt)):
        n = len(text.split())
        if n < min_tokens:
            return f"{side}_too_short"
        if n > max_tokens:
            return f"{side}_too_long"
    return None


def rule_length_ratio(src: str, tgt: str, max_ratio: float = DEFAULT_MAX_LENGTH_RATIO) -> str | None:
    a, b = len(src.split()), len(tgt.split())
    return "length_ratio" if max(a, b) > max_ratio * max(min(a, b), 1) else None


def script_fraction(text: str, script: str) -> float:
    letters = [c for c in text if unicodedata.category(c)[0] in "LM"]
    if not letters:
        return 0.0
    return sum(script in unicodedata.name(c, "") for c in letters) / len(letters)


def rule_script(tgt: str, tgt_lang: str) -> str | None:
    script = _SCRIPTS.get(tgt_lang.split("-")[0])
    if script and script_fraction(tgt, script) < MIN_SCRIPT_FRACTION:
        return "wrong_script"
    return None


def rule_non_letters(src: str, tgt: str) -> str | None:
    for text in (src, tgt):
        chars = [c for c in text if not c.isspace()]
        junk = sum(unicodedata.category(c)[0] not in "LM" for c in chars)
        if chars and junk / len(chars) > MAX_NON_LETTER_FRACTION:
            return "mostly_non_letters"
    return None


def rule_markup(src: str, tgt: str) -> str | None:
    return "markup_or_placeholder" if _MARKUP.search(src) or _MARKUP.search(tgt) else None


def rule_identical(src: str, tgt: str) -> str | None:
    return "untranslated" if src.strip().lower() == tgt.strip().lower() else None


def cheap_rules(src: str, tgt: str, tgt_lang: str, min_tokens: int = DEFAULT_MIN_TOKENS,
                max_tokens: int = DEFAULT_MAX_TOKENS,
                max_ratio: float = DEFAULT_MAX_LENGTH_RATIO) -> str | None:
    """The first rule that drops the pair, or None when it passes all of them."""
    return (rule_length(src, tgt, min_tokens, max_tokens) or rule_length_ratio(src, tgt, max_ratio)
            or rule_identical(src, tgt) or rule_markup(src, tgt) or rule_non_letters(src, tgt)
            or rule_script(tgt, tgt_lang))


class CentroidDistance:
    """Cosine distance to the mean of the in-domain target embeddings."""

    def __init__(self, centroid: np.ndarray):
        self.centroid = (centroid / np.linalg.norm(centroid)).astype(np.float32)

    @classmethod
    def fit(cls, in_domain: np.ndarray) -> "CentroidDistance":
        if len(in_domain) == 0:
            raise ValueError("the in-domain target set is empty")
        return cls(in_domain.mean(axis=0))

    def distance(self, emb: np.ndarray) -> np.ndarray:
        """1 - cos(emb, centroid) for L2-normalised rows."""
        return 1.0 - emb @ self.centroid

    def save(self, path: str) -> None:
        np.save(path, self.centroid)

    @classmethod
    def load(cls, path: str) -> "CentroidDistance":
        return cls(np.load(path))
