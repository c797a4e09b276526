"""Text normalisation shared by every LM that winnow trains or queries.

One function, so the seed LM, the rescoring LM, the filter and the final LM all see
the same tokens: lower-cased, punctuation removed (apostrophes and hyphens inside a
word kept), Unicode letters, marks and digits kept (Devanagari vowel signs are
marks, which ``\\w`` would drop).
"""
from __future__ import annotations

import unicodedata


def _keep(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat[0] in "LMN"


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFC", text).lower()
    out: list[str] = []
    n = len(text)
    for i, ch in enumerate(text):
        if _keep(ch):
            out.append(ch)
        elif ch in "'-" and 0 < i < n - 1 and _keep(text[i - 1]) and _keep(text[i + 1]):
            out.append(ch)
        else:
            out.append(" ")
    return " ".join("".join(out).split())


OOV_TOKEN = "oovtoken"  # one token for every word outside a chosen vocabulary


def map_to_vocabulary(text: str, vocabulary: set[str]) -> str:
    """Normalised text with every word outside ``vocabulary`` replaced by ``OOV_TOKEN``.

    An LM trained on such text spends on that one token the mass it would spread over
    the words left out, instead of learning each of them as a word of its own."""
    return " ".join(w if w in vocabulary else OOV_TOKEN for w in normalize(text).split())
