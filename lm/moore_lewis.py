"""Moore-Lewis ranking (Moore & Lewis 2010): the cross-entropy difference of a sentence
under an in-domain LM and under a general LM.

It is the fast first pass of the bitext filter: two KenLM queries per target side, so a
mix of a million pairs is ranked in minutes and only a shortlist reaches the sentence
encoder, whose distance to the in-domain centroid (the paper's criterion) decides.

As in Moore & Lewis, both models share the in-domain vocabulary: the general LM is trained
on text whose words outside it are one token, ``lm.text.OOV_TOKEN``, and queried the same way.
Without that, each word unknown to both models scores ``<unk>`` in each, and a small
in-domain LM gives ``<unk>`` more mass than a large general one, so sentences full of
unknown words (software strings, names) would look in-domain.
"""
from __future__ import annotations

from winnow.lm.scoring import LanguageModel
from winnow.lm.text import map_to_vocabulary


class CrossEntropyDifference:
    """``H_in(s) - H_general(s)`` per token (log10, ``</s>`` included): lower is more
    in-domain.  ``general`` must be trained on ``map_to_vocabulary`` text over the
    in-domain LM's vocabulary ``vocabulary``."""

    def __init__(self, in_domain: LanguageModel, general: LanguageModel, vocabulary: set[str]):
        self.in_domain, self.general, self.vocabulary = in_domain, general, vocabulary

    def score(self, text: str) -> float:
        mapped = map_to_vocabulary(text, self.vocabulary)
        return self.general.per_token(mapped) - self.in_domain.per_token(text)

    def scores(self, texts: list[str]) -> list[float]:
        return [self.score(t) for t in texts]
