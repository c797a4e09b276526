"""A CRF slot tagger over ``[type : value]`` annotations (BIO tags on whitespace tokens).

Self-labelled utterances need slots too, so the output corpus can train a full NLU
model; this is the tagger that provides them.
"""
from __future__ import annotations

from winnow.selectors.annotation import bio_tags, parse_annotation, slots_from_bio


def _word_features(tokens: list[str], i: int) -> dict[str, object]:
    w = tokens[i]
    lw = w.lower()
    f: dict[str, object] = {"b": 1.0, "w": lw, "suf3": lw[-3:], "pre3": lw[:3],
                            "digit": w.isdigit(), "hasdigit": any(c.isdigit() for c in w)}
    for off in (-2, -1, 1, 2):
        j = i + off
        f[f"w{off}"] = tokens[j].lower() if 0 <= j < len(tokens) else ("<s>" if j < 0 else "</s>")
    f["bi-1"] = f"{f['w-1']}|{lw}"
    f["bi+1"] = f"{lw}|{f['w1']}"
    return f


def sentence_features(tokens: list[str]) -> list[dict[str, object]]:
    return [_word_features(tokens, i) for i in range(len(tokens))]


class SlotTagger:
    def __init__(self, c1: float = 0.05, c2: float = 0.05, max_iterations: int = 60):
        self.params = dict(algorithm="lbfgs", c1=c1, c2=c2, max_iterations=max_iterations,
                           all_possible_transitions=False)

    def fit(self, annotated: list[str]) -> "SlotTagger":
        import sklearn_crfsuite

        xs, ys = [], []
        for a in annotated:
            text, slots = parse_annotation(a)
            toks, tags = bio_tags(text, slots)
            if toks:
                xs.append(sentence_features(toks))
                ys.append(tags)
        self.crf = sklearn_crfsuite.CRF(**self.params)
        self.crf.fit(xs, ys)
        return self

    def tag(self, texts: list[str]) -> list[str]:
        """Bracket-annotated versions of plain texts."""
        toks = [t.split() for t in texts]
        tags = self.crf.predict([sentence_features(t) for t in toks]) if toks else []
        return [slots_from_bio(t, g) for t, g in zip(toks, tags)]


def slot_f1(gold_annotated: list[str], pred_annotated: list[str]) -> float:
    """Micro F1 over (type, value) slot mentions, per utterance."""
    from collections import Counter

    tp = n_gold = n_pred = 0
    for g, p in zip(gold_annotated, pred_annotated):
        gs = Counter((s.type, s.value.lower()) for s in parse_annotation(g)[1])
        ps = Counter((s.type, s.value.lower()) for s in parse_annotation(p)[1])
        tp += sum((gs & ps).values())
        n_gold += sum(gs.values())
        n_pred += sum(ps.values())
    if n_gold + n_pred == 0:
        return 1.0
    return 2 * tp / (n_gold + n_pred)
