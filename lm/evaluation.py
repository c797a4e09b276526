"""Perplexity and OOV evaluation that compares LMs with different vocabularies fairly.

A small-vocabulary LM maps many test words to ``<unk>`` and looks better than it
is.  Every LM winnow compares is trained on text that includes the in-domain seed,
so perplexity is computed, for every LM, over the same token set: the test tokens in
the seed's vocabulary plus ``</s>``, each scored with its full left context.  The
OOV rate of each LM is reported on all test words separately.
"""
from __future__ import annotations

import math
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


INTERPOLATION_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0)  # 1.0: the seed LM alone


def evaluate_interpolated(seed_lm: LanguageModel, other_lm: LanguageModel, seed_weight: float,
                          test_sentences: list[str], vocab: set[str]) -> LmEvaluation:
    """Linear interpolation p = w p_seed + (1 - w) p_other, token by token, on the same
    token set as ``evaluate``; a word is OOV when neither model knows it.

    A component that does not know a word contributes nothing for it: its ``<unk>``
    probability is the mass of every unknown word together, and counting it as this
    word's probability would reward a small vocabulary (a translation LM of a handful of
    sentences would "win" on every word it lacks).  Scored words are in the seed's
    vocabulary, so the seed LM always knows them and the mixture stays positive."""
    total_lp, scored, words, oov = 0.0, 0, 0, 0
    for sent in test_sentences:
        for (word, lp_a, oov_a), (_, lp_b, oov_b) in zip(seed_lm.full_scores(sent),
                                                         other_lm.full_scores(sent)):
            if word != "</s>":
                words += 1
                oov += oov_a and oov_b
            if word == "</s>" or word in vocab:
                p = (seed_weight * (0.0 if oov_a else 10 ** lp_a)
                     + (1 - seed_weight) * (0.0 if oov_b else 10 ** lp_b))
                total_lp += math.log10(p)
                scored += 1
    if scored == 0:
        raise ValueError("evaluation set has no tokens to score")
    return LmEvaluation(perplexity=10 ** (-total_lp / scored), oov_rate=oov / max(words, 1),
                        scored_tokens=scored, test_words=words)


def tune_interpolation(seed_lm: LanguageModel, other_lm: LanguageModel, tuning: list[str],
                       vocab: set[str], grid: tuple[float, ...] = INTERPOLATION_GRID
                       ) -> tuple[float, dict[float, float]]:
    """The seed weight with the lowest tuning-split perplexity (ties: the larger weight)."""
    ppl = {w: evaluate_interpolated(seed_lm, other_lm, w, tuning, vocab).perplexity for w in grid}
    return min(ppl, key=lambda w: (ppl[w], -w)), ppl
