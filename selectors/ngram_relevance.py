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
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import sparse

NGRAM_ORDERS = (1, 2, 3)
DEFAULT_C = 4.0
DEFAULT_TOP_NGRAMS = 3
_TOKEN = re.compile(r"[\w']+", re.UNICODE)
_TOKEN_OR_BREAK = re.compile(r"[\w']+|\n", re.UNICODE)
_BREAK_ID = -1  # the id of a line break (an utterance boundary) in either tokenisation
# ASCII fast path of _TOKEN_OR_BREAK: one str.translate pass (1:1 mappings only, which
# keeps CPython's fast path) lower-cases, turns every other non-token character into a
# space and the line break into a control character that str.split keeps once spaced
# out (2.5x faster than the regex)
_ASCII_TOKEN_CHARS = set(string.ascii_letters + string.digits + "_'")
_ASCII_SPLIT = str.maketrans({chr(i): " " for i in range(128) if chr(i) not in _ASCII_TOKEN_CHARS}
                             | {c: c.lower() for c in string.ascii_uppercase}
                             | {"\n": "\x01"})


def _tokens_and_breaks(text: str) -> list[str]:
    """The lower-cased tokens of a text, with a break marker ("\\n" or "\\x01") per line break."""
    if not text.isascii():
        return _TOKEN_OR_BREAK.findall(text.lower())
    return text.translate(_ASCII_SPLIT).replace("\x01", " \x01 ").split()


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

    def to_dict(self) -> dict:
        """Plain JSON-able form: the model file, and what Beam DoFns carry to workers."""
        return {"label": self.label, "bias": self.bias, "weights": self.weights}

    @classmethod
    def from_dict(cls, d: dict) -> "NgramRelevanceModel":
        return cls(weights=d["weights"], bias=d["bias"], label=d["label"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> "NgramRelevanceModel":
        return cls.from_dict(json.loads(Path(path).read_text()))


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


_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing


class _KeyIndex:
    """int64 key -> int64 value, looked up for a whole array of keys at once.

    Open addressing with a multiplicative hash and linear probing, at most half full:
    each probe is one vectorised gather, and a lookup needs about 1.5 of them where a
    binary search over 100k keys needs 17 dependent steps.  ``max_probe`` is the
    longest probe sequence any stored key needed, so a key not found within it is
    absent.
    """

    def __init__(self, keys: np.ndarray, values: np.ndarray):
        bits = max(4, int(np.ceil(np.log2(max(len(keys), 1) * 2))))
        self.shift, self.mask = np.uint64(64 - bits), (1 << bits) - 1
        self.slots = np.full(1 << bits, -1, dtype=np.int64)
        self.values = np.zeros(1 << bits, dtype=np.int64)
        pos = self._hash(keys)
        pending = np.arange(len(keys))
        self.max_probe = 0
        while len(pending):
            self.max_probe += 1
            free = pending[self.slots[pos[pending]] == -1]
            _, first = np.unique(pos[free], return_index=True)  # one key per free slot
            won = free[first]
            self.slots[pos[won]], self.values[pos[won]] = keys[won], values[won]
            placed = np.zeros(len(keys), dtype=bool)
            placed[won] = True
            pending = pending[~placed[pending]]
            pos[pending] = (pos[pending] + 1) & self.mask

    def _hash(self, keys: np.ndarray) -> np.ndarray:
        return ((keys.astype(np.uint64) * _HASH_MULTIPLIER) >> self.shift).astype(np.int64)

    def get(self, keys: np.ndarray) -> np.ndarray:
        """The value of each key, -1 where it is absent."""
        out = np.full(len(keys), -1, dtype=np.int64)
        active = np.arange(len(keys))
        pos = self._hash(keys)
        for _ in range(self.max_probe):
            slot = self.slots[pos]
            hit = slot == keys[active]
            out[active[hit]] = self.values[pos[hit]]
            more = ~hit & (slot != -1)
            active, pos = active[more], (pos[more] + 1) & self.mask
            if not len(active):
                break
        return out


class _TokenIds(dict):
    """token -> id; a token outside every table n-gram maps to 0 without being stored."""

    def __missing__(self, token: str) -> int:
        return 0


class RelevanceTable:
    """Several intents' compiled models merged into one n-gram -> weight-row table.

    Scoring one utterance against every new intent is one dict lookup per n-gram and a
    small numpy sum (``logits``).  Scoring a batch (``logits_batch``) is vectorised:
    tokens become integer ids, every n-gram becomes one int64 key
    (``((id1 * base) + id2) * base + id3``), and keys are matched against the table's
    sorted keys with ``searchsorted``.  A token that occurs in no table n-gram gets id 0,
    which no table key contains, so n-grams through it match nothing -- exactly as in
    ``ngrams`` + dict lookup.  Python work is one regex and one id lookup per token.
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
        self._compile_keys(grams)

    def _compile_keys(self, grams: list[str]) -> None:
        vocab = sorted({t for g in grams for t in g.split(" ")})
        self.token_ids = _TokenIds((t, i + 1) for i, t in enumerate(vocab))
        self.token_ids["\n"] = self.token_ids["\x01"] = _BREAK_ID
        self.base = len(vocab) + 1
        if self.base ** max(NGRAM_ORDERS) >= 2 ** 63:
            raise ValueError(f"n-gram table vocabulary too large for int64 keys ({len(vocab)} tokens)")
        by_order: dict[int, list[tuple[int, int]]] = {n: [] for n in NGRAM_ORDERS}
        for g, row in self.index.items():
            key = 0
            toks = g.split(" ")
            for t in toks:
                key = key * self.base + self.token_ids[t]
            by_order[len(toks)].append((key, row))
        # per order, which token ids can start / end an n-gram (a dense prefilter that
        # spares most positions the lookup), and one hash index over every order (a
        # k-gram key is >= base**(k-1) and < base**k, so orders never collide)
        order_keys = {n: np.array([k for k, _ in pairs], dtype=np.int64)
                      for n, pairs in by_order.items()}
        self.edges: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for n, keys in order_keys.items():
            starts = np.zeros(self.base, dtype=bool)
            ends = np.zeros(self.base, dtype=bool)
            starts[keys // self.base ** (n - 1)] = True
            ends[keys % self.base] = True
            starts[0] = ends[0] = False
            self.edges[n] = (starts, ends)
        self.lookup = _KeyIndex(
            np.concatenate(list(order_keys.values())),
            np.array([r for pairs in by_order.values() for _, r in pairs], dtype=np.int64))

    def logits(self, text: str) -> np.ndarray:
        idx = [self.index[g] for g in ngrams(text) if g in self.index]
        return self.bias + (self.w[idx].sum(axis=0) if idx else 0.0)

    def scores(self, text: str) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(text)))

    def logits_batch(self, texts: list[str]) -> np.ndarray:
        """Logits of many texts, shape (len(texts), intents), vectorised over the batch.

        The batch is lower-cased and tokenised as one string (line breaks mark the
        utterance boundaries), so Python does no per-utterance work at all.
        """
        out = np.tile(self.bias, (len(texts), 1))
        if not texts:
            return out
        joined = "\n".join(texts)
        if joined.count("\n") != len(texts) - 1:  # a text with its own line breaks
            joined = "\n".join(t.replace("\n", " ") for t in texts)
        ids = np.fromiter(map(self.token_ids.__getitem__, _tokens_and_breaks(joined)),
                          dtype=np.int64)
        is_break = ids == _BREAK_ID
        row = np.cumsum(is_break)[~is_break]
        flat = ids[~is_break]
        if not len(flat):
            return out
        queries, query_rows = [], []
        for n, (starts, ends) in self.edges.items():
            m = len(flat) - n + 1
            if m <= 0:
                continue
            pos = np.flatnonzero(starts[flat[:m]] & ends[flat[n - 1:]] & (row[:m] == row[n - 1:]))
            key = flat[pos]
            for j in range(1, n):
                key = key * self.base + flat[pos + j]
            queries.append(key)
            query_rows.append(row[pos])
        gram = self.lookup.get(np.concatenate(queries))
        found = gram >= 0
        g_count = self.w.shape[0]
        # an n-gram counts once per utterance (binary features); numpy's stable sort of
        # int64 is a radix sort, far cheaper here than np.unique
        pairs = np.sort(np.concatenate(query_rows)[found] * g_count + gram[found], kind="stable")
        pairs = pairs[np.r_[True, pairs[1:] != pairs[:-1]]]
        # the binary feature matrix, built directly in CSR form (pairs are sorted by row)
        features = sparse.csr_matrix(
            (np.ones(len(pairs)), pairs % g_count,
             np.r_[0, np.cumsum(np.bincount(pairs // g_count, minlength=len(texts)))]),
            shape=(len(texts), g_count))
        return out + features @ self.w

    def scores_batch(self, texts: list[str]) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits_batch(texts)))
