"""Perplexity and OOV evaluation that compares LMs with different vocabularies fairly.

A small-vocabulary LM maps many test words to ``<unk>`` and looks better than it
is.  Every LM winnow compares is trained on text that includes the in-domain seed,
so perplexity is computed, for every LM, over the same token set: the test tokens in
the seed's vocabulary plus ``</s>``, each scored with its full left context.  The
OOV rate of each LM is reported on all test words separately.
"""
from __future__ import annotations

from dataclasses import dataclass

from winnow.lm.scoring import LanguageModel
from winnow.lm.text import normalize


@dataclass(frozen=True)
class LmEvaluation:
    perplexity: float
    oov_rate: float
    scored_tokens: int
    test_words: int


def seed_vocabulary(seed_sentences: list[str]) -> set[str]:
    return {w for s in seed_sentences for w in normalize(s).split()}


def evaluate(lm: LanguageModel, test_sentences: list[str], vocab: set[str]) -> LmEvaluation:
    total_lp, scored, words, oov = 0.0, 0, 0, 0
    for sent in test_sentences:
        for word, lp, is_oov in lm.full_scores(sent):
            if word != "</s>":
                words += 1
                oov += is_oov
            if word == "</s>" or word in vocab:
                total_lp += lp
                scored += 1
    if scored == 0:
        raise ValueError("evaluation set has no tokens to score")
    return LmEvaluation(perplexity=10 ** (-total_lp / scored), oov_rate=oov / max(words, 1),
                        scored_tokens=scored, test_words=words)
