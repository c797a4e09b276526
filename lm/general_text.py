"""General target-language text added to the translations, for the words they lack.

Translations of in-domain sources keep the domain's phrasing but only the words the
translator produces: on MASSIVE de, the `all` row's text leaves 8.4% of the evaluation
words out of its LM, and 40% of those are in the general bitext's German side ("putzen",
"regnerisch", "täglich").  Poured in whole, that text buries the domain (perplexity
doubles); ranked by the bitext filter's Moore-Lewis score over the seed vocabulary
(``lm.moore_lewis``), its most in-domain sentences lower perplexity a little and bring
some vocabulary, and further down the ranking the sentences worth adding are the ones
that bring a word the text lacks.  So the selection is two numbers, both tuned on the
tuning split (``choose_amount``): the ``in_domain`` top of the ranking, then ``new_words``
further sentences that each bring a word not yet in the text.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# one-sided 95% normal quantile: the OOV goal must hold for unseen text, not only for the
# tuning split's few thousand words (an amount at the goal's edge there misses it on other
# text about half the time)
OOV_GOAL_Z = 1.645


@dataclass(frozen=True)
class Amount:
    in_domain: int  # the top of the Moore-Lewis ranking
    new_words: int  # further sentences, each bringing a word the text lacks


@dataclass(frozen=True)
class Candidate:
    """An amount's combined LM on the tuning split."""

    perplexity: float
    oov_rate: float
    words: int  # tuning words the OOV rate counts

    @property
    def oov_upper(self) -> float:
        """The OOV rate's one-sided 95% upper bound (normal approximation to the binomial)."""
        p = self.oov_rate
        return p + OOV_GOAL_Z * math.sqrt(p * (1 - p) / max(self.words, 1))


def select(ranked: list[str], text: Iterable[str], amount: Amount) -> list[str]:
    """The ``amount.in_domain`` first sentences of ``ranked`` (most in-domain first), then,
    going on down the ranking, up to ``amount.new_words`` sentences that each hold a word
    found neither in ``text`` nor in the sentences already taken: a word the LM would
    otherwise lack."""
    chosen = ranked[:amount.in_domain]
    vocabulary = {w for s in text for w in s.split()} | {w for s in chosen for w in s.split()}
    added = 0
    for sentence in ranked[amount.in_domain:]:
        if added == amount.new_words:
            break
        words = sentence.split()
        if any(w not in vocabulary for w in words):
            chosen.append(sentence)
            vocabulary.update(words)
            added += 1
    return chosen


def choose_amount(candidates: Mapping[Amount, Candidate], oov_limit: float | None) -> Amount:
    """The amount with the lowest tuning perplexity among those whose tuning OOV rate is at
    most ``oov_limit`` with 95% confidence (``Candidate.oov_upper``); where none reaches it
    (or there is no limit), the lowest perplexity of all.  Ties go to less text."""
    def key(a: Amount) -> tuple[float, int, int]:
        return candidates[a].perplexity, a.in_domain + a.new_words, a.in_domain

    within = [a for a, c in candidates.items() if oov_limit is None or c.oov_upper <= oov_limit]
    return min(within or candidates, key=key)
