"""Sentence scoring with a KenLM model: totals, length-normalised scores, percentiles."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from winnow.lm.text import normalize


class LanguageModel:
    """A loaded KenLM model (ARPA or binary) over winnow-normalised text.

    Scores are log10 probabilities including ``</s>``, as KenLM reports them.
    """

    def __init__(self, path: str | Path):
        import kenlm

        self.path = str(path)
        self._model = kenlm.Model(self.path)
        self.order = self._model.order

    def __reduce__(self):  # picklable for Beam: reload from the path on the worker
        return (LanguageModel, (self.path,))

    def score(self, text: str) -> float:
        return self._model.score(normalize(text), bos=True, eos=True)

    def per_token(self, text: str) -> float:
        """log10 probability per token (words + ``</s>``): comparable across lengths."""
        norm = normalize(text)
        return self._model.score(norm, bos=True, eos=True) / (len(norm.split()) + 1)

    def full_scores(self, text: str) -> list[tuple[str, float, bool]]:
        """(word, log10 prob, is_oov) for every word and the final ``</s>``."""
        words = normalize(text).split() + ["</s>"]
        return [(w, lp, oov) for w, (lp, _n, oov) in
                zip(words, self._model.full_scores(" ".join(words[:-1]), bos=True, eos=True))]

    def __contains__(self, word: str) -> bool:
        return word in self._model


def percentile_threshold(lm: LanguageModel, sentences: list[str], percentile: float) -> float:
    """The ``percentile``-th per-token score of a reference set (e.g. the in-domain seed)."""
    scores = [lm.per_token(s) for s in sentences if normalize(s)]
    if not scores:
        raise ValueError("no non-empty sentences to set an LM threshold from")
    return float(np.percentile(scores, percentile))
