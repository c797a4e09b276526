"""N-best rescoring with an in-domain n-gram LM (Punjabi et al. 2019, step 4).

Takes plain n-best lists (no fairseq import): each hypothesis has the NMT model's
log-probability (natural log); the LM adds ``lm_weight`` times its log-probability
(converted from KenLM's log10 to natural log so the two are on one scale).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from winnow.lm.scoring import LanguageModel

LN10 = math.log(10.0)


@dataclass(frozen=True)
class Hypothesis:
    text: str
    nmt_score: float  # natural-log probability from the translator (sum over tokens)


@dataclass(frozen=True)
class Rescored:
    text: str
    nmt_score: float
    lm_score: float  # natural-log LM probability of the whole sentence
    total: float
    rank_before: int  # position in the NMT's own n-best order


def rescore(nbest: list[Hypothesis], lm: LanguageModel, lm_weight: float) -> list[Rescored]:
    """Hypotheses sorted by ``nmt_score + lm_weight * lm_score`` (best first)."""
    out = []
    for rank, h in enumerate(nbest):
        lm_ln = lm.score(h.text) * LN10
        out.append(Rescored(h.text, h.nmt_score, lm_ln, h.nmt_score + lm_weight * lm_ln, rank))
    out.sort(key=lambda r: (-r.total, r.rank_before))
    return out
