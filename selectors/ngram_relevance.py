"""n-gram (1-3) logistic-regression relevance model (Cho et al. 2019, step 1).

The classifier is linear over *binary* presence features of overlapping 1-, 2- and
3-grams, so an utterance's logit is the intercept plus the sum of the weights of the
distinct n-grams it contains.  ``fit`` trains scikit-learn's LogisticRegression;
``compile`` turns it into a plain ``{ngram: weight}`` table so that scoring a pool
needs only a dict lookup per n-gram and no scikit-learn on the workers.  One
tokenizer (``ngrams``) serves both training and scoring, so the table agrees with
``decision_function`` exactly.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NGRAM_ORDERS = (1, 2, 3)
DEFAULT_C = 4.0
DEFAULT_TOP_NGRAMS = 3
_TOKEN = re.compile(r"[\w']+", re.UNICODE)


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def ngrams(text: str, orders: tuple[int, ...] = NGRAM_ORDERS) -> list[str]:
    """Distinct overlapping n-grams of the lower-cased word tokens, in first-seen order."""
    toks = tokenize(text)
    seen: dict[str, None] = {}
    for n in orders:
        for i in range(len(toks) - n + 1):
            seen.setdefault(" ".join(toks[i:i + n]), None)
    return list(seen)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@dataclass
class NgramRelevanceModel:
    """A compiled n-gram weight table: score = sigmoid(bias + sum of n-gram weights)."""

    weights: dict[str, float] = field(default_factory=dict)
    bias: float = 0.0
    label: str = ""

    @classmethod
    def fit(cls, positives: list[str], negatives: list[str], label: str = "",
            c: float = DEFAULT_C, seed: int = 0) -> "NgramRelevanceModel":
        """Train LR on positives vs negatives (class-balanced) and compile its weights."""
        lr, vec = fit_sklearn(positives, negatives, c=c, seed=seed)
        return cls.compile(lr, vec, label=label)

    @classmethod
    def compile(cls, lr, vectorizer, label: str = "") -> "NgramRelevanceModel":
        coef = lr.coef_.ravel()
        vocab = vectorizer.vocabulary_
        weights = {g: float(coef[i]) for g, i in vocab.items() if coef[i] != 0.0}
        return cls(weights=weights, bias=float(lr.intercept_[0]), label=label)

    def logit(self, text: str) -> float:
        w = self.weights
        return self.bias + sum(w.get(g, 0.0) for g in ngrams(text))

    def score(self, text: str) -> float:
        """Relevance probability in [0, 1]."""
        return _sigmoid(self.logit(text))

    def top_ngrams(self, text: str, k: int = DEFAULT_TOP_NGRAMS) -> list[tuple[str, float]]:
        """The n-grams that pushed this utterance's score up the most (for provenance)."""
        contrib = [(g, self.weights[g]) for g in ngrams(text) if g in self.weights]
        contrib.sort(key=lambda gw: -gw[1])
        return [(g, round(w, 4)) for g, w in contrib[:k] if w > 0]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(
            {"label": self.label, "bias": self.bias, "weights": self.weights},
            sort_keys=True, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> "NgramRelevanceModel":
        d = json.loads(Path(path).read_text())
        return cls(weights=d["weights"], bias=d["bias"], label=d["label"])


def fit_sklearn(positives: list[str], negatives: list[str], c: float = DEFAULT_C,
                seed: int = 0):
    """The scikit-learn model behind the table (also the baseline in ``make bench``)."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    if not positives or not negatives:
        raise ValueError("relevance model needs both positive and negative utterances")
    vec = CountVectorizer(analyzer=ngrams, binary=True)
    x = vec.fit_transform(positives + negatives)
    y = np.array([1] * len(positives) + [0] * len(negatives))
    lr = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
    lr.fit(x, y)
    return lr, vec


class RelevanceTable:
    """Several intents' compiled models merged into one n-gram -> weight-row table.

    Scoring a pool utterance against every new intent is then one dict lookup per
    n-gram and one small numpy sum.
    """

    def __init__(self, models: list[NgramRelevanceModel]):
        self.labels = [m.label for m in models]
        grams = sorted({g for m in models for g in m.weights})
        self.index = {g: i for i, g in enumerate(grams)}
        self.w = np.zeros((len(grams) + 1, len(models)), dtype=np.float64)  # last row: zeros
        for j, m in enumerate(models):
            for g, wt in m.weights.items():
                self.w[self.index[g], j] = wt
        self.bias = np.array([m.bias for m in models], dtype=np.float64)
        self.models = models

    def logits(self, text: str) -> np.ndarray:
        idx = [self.index[g] for g in ngrams(text) if g in self.index]
        return self.bias + (self.w[idx].sum(axis=0) if idx else 0.0)

    def scores(self, text: str) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(text)))

    def logits_batch(self, texts: list[str]) -> np.ndarray:
        """Logits of many texts, shape (len(texts), intents): one sparse product."""
        from scipy import sparse

        index = self.index
        rows: list[int] = []
        cols: list[int] = []
        for r, text in enumerate(texts):
            for g in ngrams(text):
                j = index.get(g)
                if j is not None:
                    rows.append(r)
                    cols.append(j)
        x = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)),
                              shape=(len(texts), self.w.shape[0]))
        return self.bias + x @ self.w
