"""How the text a row adds joins the in-domain seed: candidate LMs, one chosen on the
tuning split.

* pooled: one ``lmplz`` run over the seed and the text together;
* interpolated: the seed LM and an LM of the text alone, combined by KenLM's
  ``interpolate`` (log-linear, renormalised over the joint vocabulary), its two weights the
  best of ``LOG_LINEAR_GRID`` on the tuning split;
* seed: the seed LM alone, where the text makes both worse.

The text's words outside the seed's vocabulary that it has fewer than ``new_word_min_count``
times become one token (``lm.text.OOV_TOKEN``) in both candidates.  Translations of a
weak translator are full of words it made up once; as words of their own they each take
a share of the mass that log-linear mixing renormalises over the joint vocabulary, and
of the pooled LM's, and every one of them is a word a recogniser could output.  The
default, 1, keeps every word: new words are what lowers the OOV rate (the en-de target),
and the perplexity the evaluation reports, over the seed's words, prefers fewer of
them (at every cut measured, en-de and en-hi), so the cut is the user's choice of
vocabulary, not a tuned setting.

Weights are chosen by the perplexity the evaluation reports (tokens of the seed's
vocabulary, ``lm.evaluation``), not by KenLM's own tuner, which optimises the perplexity
of every token, unknown words included.  The deliverable is the candidate with the lowest
tuning perplexity: log-linear mixing renormalises over the joint vocabulary, so with a
large text LM it moves mass to words the seed never had, and pooling can win; bad
translations can make both worse than the seed, and a user is better served by the seed.
"""
from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from winnow.lm.evaluation import evaluate
from winnow.lm.kenlm_tools import build_binary, intermediate_prefix, interpolate, train_lm
from winnow.lm.scoring import LanguageModel
from winnow.lm.text import map_to_vocabulary, normalize

# (seed LM weight, text LM weight)
LOG_LINEAR_GRID = tuple((a, b) for a in (0.8, 0.9, 1.0) for b in (0.1, 0.2, 0.3, 0.4, 0.5))


def _lowest(tuning_perplexity: dict[str, float], kinds: tuple[str, ...]) -> str:
    """The kind of lowest tuning perplexity among ``kinds``; a tie goes to the interpolation."""
    return min(kinds, key=lambda k: (tuning_perplexity[k], k != "interpolated"))


@dataclass(frozen=True)
class Combined:
    deliverable: str  # "interpolated", "pooled" or "seed"
    binary: Path  # the deliverable's KenLM binary (``lm.binary``; its ARPA is ``lm.arpa``)
    interpolated: Path  # binary of the best interpolation
    pooled: Path
    weights: tuple[float, float]  # of the best interpolation
    tuning_perplexity: dict[str, float]  # of every candidate

    @property
    def text_lm(self) -> Path:
        """The better of the two candidates that use the text (interpolated, pooled) on the
        tuning split: what a setting of the text is judged by, even where the seed alone
        is better still and so is what the row delivers."""
        kind = _lowest(self.tuning_perplexity, ("interpolated", "pooled"))
        return self.interpolated if kind == "interpolated" else self.pooled


def text_vocabulary(vocab: set[str], text: list[str], new_word_min_count: int) -> set[str]:
    """``vocab`` (the seed's words) and the words ``text`` has at least
    ``new_word_min_count`` times."""
    counts = Counter(w for s in text for w in normalize(s).split())
    return vocab | {w for w, n in counts.items() if n >= new_word_min_count}


def combine(seed_dir: Path, seed_name: str, seed: list[str], text: list[str], tuning: list[str],
            vocab: set[str], d: Path, order: int, memory: str,
            new_word_min_count: int = 1) -> Combined:
    """``seed_dir/seed_name`` is the seed LM, trained with ``intermediate=True``; ``vocab``
    the seed's words."""
    if new_word_min_count > 1:
        kept = text_vocabulary(vocab, text, new_word_min_count)
        text = [map_to_vocabulary(s, kept) for s in text]
    train_lm(text, d, "text", order=order, memory=memory, intermediate=True)
    _, pooled = train_lm(seed + text, d, "pooled", order=order, memory=memory)
    models = [intermediate_prefix(seed_dir, seed_name), intermediate_prefix(d, "text")]
    best: tuple[float, tuple[float, float]] | None = None
    for weights in LOG_LINEAR_GRID:
        arpa = interpolate(models, list(weights), d / "candidate.arpa", memory=memory)
        ppl = evaluate(LanguageModel(build_binary(arpa, d / "candidate.binary")), tuning,
                       vocab).perplexity
        if best is None or ppl < best[0]:
            best = (ppl, weights)
            os.replace(arpa, d / "interpolated.arpa")
            os.replace(d / "candidate.binary", d / "interpolated.binary")
    assert best is not None
    (d / "candidate.arpa").unlink(missing_ok=True)
    (d / "candidate.binary").unlink(missing_ok=True)
    tuning_ppl = {"interpolated": best[0],
                  "pooled": evaluate(LanguageModel(pooled), tuning, vocab).perplexity,
                  "seed": evaluate(LanguageModel(seed_dir / f"{seed_name}.binary"), tuning,
                                   vocab).perplexity}
    kind = _lowest(tuning_ppl, tuple(tuning_ppl))
    source = {"interpolated": d / "interpolated", "pooled": d / "pooled",
              "seed": seed_dir / seed_name}[kind]
    for ext in ("arpa", "binary"):
        shutil.copyfile(source.with_suffix(f".{ext}"), d / f"lm.{ext}")
    return Combined(kind, d / "lm.binary", d / "interpolated.binary", pooled, best[1], tuning_ppl)
