"""Paraphrase detector trained on slot-templated pairs (Cho et al. 2019, step 3).

Two utterances are paraphrases iff they share domain, intent and the *set* of slot
types.  From annotated utterances we make templates (slot values replaced by slot
types) and generate as many training pairs as wanted:
  * positives: two different templates of the same (domain, intent, slot-type set),
    each filled with random slot values -- same meaning, different structure;
  * hard negatives: a template against itself with one slot type swapped for a type
    from another intent (same structure, different slot set), or against the most
    similar template of a different class (near-identical wording, other meaning).

The detector is logistic regression over the embedding-pair features
``u*v`` and ``(u-v)^2`` (plus their sum, the cosine).  Both are bilinear in (u, v),
so the fitted model compiles to ``logit(u, v) = b + a(u) + a(v) + u^T D v`` with a
diagonal D: scoring every candidate against every annotated utterance is one
matrix product, which is what makes the diversity selector scale.
"""
from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from winnow.selectors.annotation import parse_annotation, template

DEFAULT_C = 1.0
_PLACEHOLDER = re.compile(r"\[([^\[\]:]+?)\]")


@dataclass(frozen=True)
class Example:
    """An annotated utterance and its paraphrase class."""

    annotated: str
    domain: str
    intent: str

    @property
    def template(self) -> str:
        return template(self.annotated)

    @property
    def key(self) -> tuple[str, str, tuple[str, ...]]:
        """Paraphrase class; a sorted tuple (not a set) so its order never depends on hashing."""
        return (self.domain, self.intent,
                tuple(sorted({s.type for s in parse_annotation(self.annotated)[1]})))


def _fill(tmpl: str, values: dict[str, list[str]], rng: random.Random) -> str:
    return _PLACEHOLDER.sub(lambda m: rng.choice(values.get(m.group(1)) or [m.group(1)]), tmpl)


def generate_pairs(examples: list[Example], n_pairs: int, positive_fraction: float = 0.5,
                   seed: int = 0) -> list[tuple[str, str, int]]:
    """(text_a, text_b, is_paraphrase) pairs generated from templates."""
    rng = random.Random(seed)
    values: dict[str, list[str]] = defaultdict(list)
    by_key: dict[tuple, set[str]] = defaultdict(set)
    for ex in examples:
        for s in parse_annotation(ex.annotated)[1]:
            values[s.type].append(s.value)
        by_key[ex.key].add(ex.template)
    keys = sorted((k for k, ts in by_key.items() if len(ts) >= 2), key=str)
    templates = {k: sorted(ts) for k, ts in by_key.items()}
    all_items = sorted(((t, k) for k, ts in templates.items() for t in ts), key=str)
    if not keys or len(templates) < 2:
        raise ValueError("paraphrase pairs need at least two classes, one with two templates")
    slot_types = sorted(values)
    index = _TemplateIndex([t for t, _ in all_items])

    pairs: list[tuple[str, str, int]] = []
    n_pos = int(n_pairs * positive_fraction)
    while len(pairs) < n_pos:
        k = rng.choice(keys)
        t1, t2 = rng.sample(templates[k], 2)
        pairs.append((_fill(t1, values, rng), _fill(t2, values, rng), 1))
    while len(pairs) < n_pairs:
        i = rng.randrange(len(all_items))  # same draw as rng.choice, and keeps the index
        t1, k1 = all_items[i]
        types = _PLACEHOLDER.findall(t1)
        if types and rng.random() < 0.5:  # same structure, different slot set
            old = rng.choice(types)
            new = rng.choice(slot_types)
            if new in types:  # the swap must change the slot-type set
                continue
            t2 = t1.replace(f"[{old}]", f"[{new}]", 1)
        else:  # most similar wording from another class
            t2 = next((all_items[j][0] for j in index.nearest(i, rng)
                       if all_items[j][1] != k1), None)
            if t2 is None:
                continue
        pairs.append((_fill(t1, values, rng), _fill(t2, values, rng), 0))
    rng.shuffle(pairs)
    return pairs


class _TemplateIndex:
    """Nearest templates by word-bigram tf-idf (for hard negatives)."""

    def __init__(self, templates: list[str], k: int = 10):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.neighbors import NearestNeighbors

        x = TfidfVectorizer(ngram_range=(1, 2)).fit_transform(templates)
        self.k = min(k, len(templates))
        self.nn = NearestNeighbors(n_neighbors=self.k, metric="cosine").fit(x)
        self.x = x
        self._cache: dict[int, list[int]] = {}

    def nearest(self, i: int, rng: random.Random) -> list[int]:
        if i not in self._cache:
            self._cache[i] = list(self.nn.kneighbors(self.x[i], return_distance=False)[0])
        order = [j for j in self._cache[i] if j != i]
        head = order[:3]
        rng.shuffle(head)
        return head + order[3:]


SLOT_BLOCK_WEIGHT = 0.5  # scale of the slot-type indicator block next to unit embeddings


def slot_type_vectors(annotated: list[str], types: list[str]) -> np.ndarray:
    """Indicator vectors of the slot types in (predicted) annotations.

    Paraphrase means same intent *and same slot-type set*; sentence embeddings barely
    see the latter, so the detector gets it explicitly.  Overlap and mismatch counts of
    two indicator vectors are bilinear (u.v, |u|^2 + |v|^2 - 2 u.v), so the detector stays
    a single matrix product.
    """
    index = {t: i for i, t in enumerate(types)}
    out = np.zeros((len(annotated), len(types)), dtype=np.float32)
    for row, a in enumerate(annotated):
        for s in parse_annotation(a)[1]:
            if s.type in index:
                out[row, index[s.type]] = SLOT_BLOCK_WEIGHT
    return out


def pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.hstack([u * v, (u - v) ** 2])


@dataclass
class ParaphraseDetector:
    """P(paraphrase | u, v) = sigmoid(b + a(u) + a(v) + u^T diag(d) v) over unit embeddings."""

    d: np.ndarray | None = None  # bilinear diagonal
    s: np.ndarray | None = None  # weights of u^2 and v^2
    b: float = 0.0

    def fit(self, u: np.ndarray, v: np.ndarray, labels: np.ndarray, c: float = DEFAULT_C,
            seed: int = 0) -> "ParaphraseDetector":
        from sklearn.linear_model import LogisticRegression

        x = np.vstack([pair_features(u, v), pair_features(v, u)])
        y = np.concatenate([labels, labels])
        lr = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x, y)
        dim = u.shape[1]
        w_prod, w_sq = lr.coef_[0, :dim], lr.coef_[0, dim:]
        # w_prod.(u*v) + w_sq.(u-v)^2 = (w_prod - 2 w_sq).(u*v) + w_sq.u^2 + w_sq.v^2
        self.d = (w_prod - 2 * w_sq).astype(np.float32)
        self.s = w_sq.astype(np.float32)
        self.b = float(lr.intercept_[0])
        return self

    def logits(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """All-pairs logits, shape (len(u), len(v)): one matrix product."""
        au = (u * u) @ self.s
        av = (v * v) @ self.s
        return (u * self.d) @ v.T + au[:, None] + av[None, :] + self.b

    def pair_proba(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Row-wise P(paraphrase) for aligned pairs u[i], v[i]."""
        z = ((u * self.d) * v).sum(1) + (u * u) @ self.s + (v * v) @ self.s + self.b
        return 1.0 / (1.0 + np.exp(-z))

    def save(self, path: str) -> None:
        np.savez(path, d=self.d, s=self.s, b=np.array([self.b]))

    @classmethod
    def load(cls, path: str) -> "ParaphraseDetector":
        z = np.load(path)
        return cls(d=z["d"], s=z["s"], b=float(z["b"][0]))
