"""Template pairs, the bilinear paraphrase detector and the diversity selector."""
import numpy as np
import pytest

from winnow.selectors.diversity import coverage_order, diversity_order
from winnow.selectors.paraphrase import Example, ParaphraseDetector, generate_pairs, pair_features

EXAMPLES = [Example(a, d, i) for a, d, i in [
    ("wake me at [time : seven]", "alarm", "alarm_set"),
    ("set an alarm for [time : six am]", "alarm", "alarm_set"),
    ("alarm [date : tomorrow] at [time : nine]", "alarm", "alarm_set"),
    ("i need an alarm [date : today] at [time : ten]", "alarm", "alarm_set"),
    ("what is the weather in [place : paris]", "weather", "weather_query"),
    ("will it rain in [place : rome]", "weather", "weather_query"),
    ("play [artist : adele]", "play", "play_music"),
    ("put on [artist : queen] please", "play", "play_music"),
]]


def toy_detector() -> ParaphraseDetector:
    """Paraphrase logit 5 x cosine - 2 on unit rows (no slot-type term)."""
    return ParaphraseDetector(d=np.full(6, 5.0, np.float32), s=np.zeros(6, np.float32), b=-2.0)


def unit_rows(seed: int, n: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, 6)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_pairs_follow_the_definition():
    pairs = generate_pairs(EXAMPLES, 200, 0.5, seed=1)
    assert len(pairs) == 200 and sum(y for _, _, y in pairs) == 100
    assert pairs == generate_pairs(EXAMPLES, 200, 0.5, seed=1)  # seeded
    assert all("[" not in a and "[" not in b for a, b, _ in pairs)


def test_bilinear_form_equals_logistic_regression():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(300, 8)).astype(np.float32)
    v = u + rng.normal(scale=0.3, size=u.shape).astype(np.float32)
    v[150:] = rng.normal(size=(150, 8))
    y = np.array([1] * 150 + [0] * 150)
    det = ParaphraseDetector().fit(u, v, y)
    from sklearn.linear_model import LogisticRegression
    lr = LogisticRegression(C=1.0, max_iter=2000, random_state=0).fit(
        np.vstack([pair_features(u, v), pair_features(v, u)]), np.concatenate([y, y]))
    expect = lr.decision_function(pair_features(u[:20], v[:20]))
    np.testing.assert_allclose(np.diag(det.logits(u[:20], v[:20])), expect, rtol=1e-4, atol=1e-4)
    assert det.pair_proba(u[:150], v[:150]).mean() > det.pair_proba(u[150:], v[150:]).mean()


def test_diversity_picks_least_similar_and_matches_brute_force():
    det, annotated, cand = toy_detector(), np.eye(6, dtype=np.float32)[:1], unit_rows(1, 40)
    order = diversity_order(det, cand, annotated, batch_size=3, rounds=5)
    assert len(order) == 15 and len({i for i, _, _ in order}) == 15
    # brute force: recompute against the grown set every round
    ref, alive, expect = annotated, list(range(40)), []
    for _ in range(5):
        best = det.logits(cand[alive], ref).max(axis=1)
        pick = [alive[j] for j in np.lexsort((alive, best))[:3]]
        expect += pick
        ref = np.vstack([ref, cand[pick]])
        alive = [a for a in alive if a not in pick]
    assert [i for i, _, _ in order] == expect
    first = order[0][0]
    assert cand[first] @ annotated[0] == min(cand @ annotated[0])


def test_coverage_matches_brute_force_facility_location_and_prefers_the_typical_new_cluster():
    """Each pick maximises sum_i w_i max(0, P(i, c) - cover(i)); a dense cluster the seeds
    do not paraphrase comes before a lone outlier, which the plain novelty order takes first."""
    det = toy_detector()
    rng = np.random.default_rng(4)
    axes = np.eye(6, dtype=np.float32)
    noisy = lambda v, n: v + rng.normal(scale=0.05, size=(n, 6)).astype(np.float32)  # noqa: E731
    cand = np.vstack([noisy(axes[0], 10), noisy(axes[1], 12), -axes[0:1] - axes[1:2]])
    cand /= np.linalg.norm(cand, axis=1, keepdims=True)
    annotated = axes[:1]
    weights = rng.uniform(0.5, 1.0, size=len(cand))
    order = coverage_order(det, cand, annotated, batch_size=2, rounds=4, weights=weights)
    assert len(order) == 8 and [r for _, r, _ in order] == [0, 0, 1, 1, 2, 2, 3, 3]
    # brute force: the objective's gain of every remaining candidate, one pick at a time
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    p = sig(det.logits(cand, cand))
    np.fill_diagonal(p, 1.0)
    cover, alive, expect = sig(det.logits(cand, annotated).max(axis=1)), list(range(len(cand))), []
    for _ in range(8):
        gains = [(weights * np.maximum(p[:, c] - cover, 0)).sum() for c in alive]
        c = alive[int(np.argmax(gains))]
        expect.append(c)
        cover = np.maximum(cover, p[:, c])
        alive.remove(c)
    assert [i for i, _, _ in order] == expect
    assert 10 <= order[0][0] < 22  # the uncovered cluster, not the outlier (index 22)
    assert diversity_order(det, cand, annotated, batch_size=1, rounds=1)[0][0] == 22
    # the reported probability is the pick's best paraphrase of the set before it was added
    assert order[0][2] == pytest.approx(float(sig(det.logits(cand[order[0][0]:order[0][0] + 1],
                                                             annotated).max())), rel=1e-5)


def test_confident_tier_is_exhausted_before_the_rest():
    from winnow.selectors.diversity import confidence_tiers

    det, cand = toy_detector(), unit_rows(2, 20)
    conf = np.random.default_rng(2).uniform(size=20).tolist()
    tiers = confidence_tiers(conf, 0.3)
    assert tiers.sum() == 14 and set(np.flatnonzero(tiers == 0)) == set(np.argsort(conf)[-6:])
    order = diversity_order(det, cand, np.eye(6, dtype=np.float32)[:1], batch_size=4, rounds=5,
                            tiers=tiers)
    picked = [i for i, _, _ in order]
    assert set(picked[:6]) == set(np.flatnonzero(tiers == 0)) and len(set(picked)) == 20
    assert (confidence_tiers(conf, 1.0) == 0).all()


def test_fine_tuning_the_encoder_separates_paraphrases_from_hard_negatives():
    """Real MiniLM, one epoch on template pairs: cosine ranks held-out pairs better."""
    from sklearn.metrics import roc_auc_score

    from winnow.selectors.embeddings import encode, load_encoder
    from winnow.selectors.paraphrase_encoder import fine_tune

    train = generate_pairs(EXAMPLES, 320, 0.5, seed=1)
    held = generate_pairs(EXAMPLES, 200, 0.5, seed=2)  # other slot fillings, other draws
    y = np.array([t for _, _, t in held])

    def cosine_auc(model) -> float:
        a, b = encode(model, [x for x, _, _ in held]), encode(model, [x for _, x, _ in held])
        return roc_auc_score(y, (a * b).sum(1))

    model = load_encoder("minilm")
    before = cosine_auc(model)
    logged: list[str] = []
    fine_tune(model, train, epochs=1, seed=0, log=logged.append)
    after = cosine_auc(model)
    assert after > before + 0.1 and after > 0.85, (before, after)
    assert logged and logged[-1].startswith("paraphrase encoder: epoch 1/1 batch 10/10")
    assert not model.training


def test_length_grouped_batches_hold_every_pair_once_and_pad_less_than_shuffled_ones():
    import random

    from winnow.selectors.paraphrase_encoder import LENGTH_GROUP_BATCHES, length_grouped_batches

    rng = random.Random(0)
    pairs = [(" ".join("w" * rng.randint(1, 20)), " ".join("v" * rng.randint(1, 20)), i % 2)
             for i in range(8 * LENGTH_GROUP_BATCHES * 3 + 5)]
    length = lambda text: len(text.split())  # noqa: E731
    batches = length_grouped_batches(pairs, 8, random.Random(1), length)
    assert sorted(p for b in batches for p in b) == sorted(pairs)
    assert all(1 <= len(b) <= 8 for b in batches)
    assert batches == length_grouped_batches(pairs, 8, random.Random(1), length)

    def padded(bs) -> int:  # positions the encoder computes: each side padded to its longest
        return sum(len(b) * max(length(p[side]) for p in b) for b in bs for side in (0, 1))

    shuffled = pairs[:]
    random.Random(1).shuffle(shuffled)
    plain = [shuffled[i:i + 8] for i in range(0, len(shuffled), 8)]
    assert padded(batches) < 0.8 * padded(plain)
    # the batches of a group are not laid out shortest first: the epoch's order is random
    first = [max(length(p[0]), length(p[1])) for b in batches[:LENGTH_GROUP_BATCHES] for p in b[:1]]
    assert first != sorted(first)


def test_weights_multiply_novelty_and_without_them_the_order_is_the_plain_one():
    det, annotated, cand = toy_detector(), np.eye(6, dtype=np.float32)[:1], unit_rows(3, 30)
    plain = diversity_order(det, cand, annotated, batch_size=2, rounds=6)
    assert diversity_order(det, cand, annotated, 2, 6, weights=np.ones(30)) == plain
    # the most novel candidate, weighted 0, goes last; a near-duplicate of the annotated
    # utterance, weighted far above the rest, comes before every plainly novel one
    weights = np.full(30, 0.01)
    weights[plain[0][0]] = 0.0
    dup = int(np.argmax(cand @ annotated[0]))
    weights[dup] = 1.0
    order = [i for i, _, _ in diversity_order(det, cand, annotated, 1, None, weights=weights)]
    assert order[0] == dup and order[-1] == plain[0][0]


def test_without_novelty_the_weight_alone_ranks_within_each_tier():
    """``diversity.objective: in_domain``: the highest weight first, ties on the lower index,
    a lower tier before a higher one; the recorded paraphrase probabilities are the same
    bookkeeping as the novelty order's (its first pick's matches)."""
    det, annotated, cand = toy_detector(), np.eye(6, dtype=np.float32)[:1], unit_rows(3, 30)
    weights = np.random.default_rng(1).uniform(size=30)
    weights[[4, 9]] = 0.9999  # a tie: index 4 before 9
    order = diversity_order(det, cand, annotated, 3, None, weights=weights, novelty=False)
    assert [i for i, _, _ in order] == sorted(range(30), key=lambda i: (-weights[i], i))
    first = order[0][0]
    alone = diversity_order(det, cand[[first]], annotated, 1, 1)
    assert order[0][2] == pytest.approx(alone[0][2])
    tiers = (np.arange(30) % 2).astype(np.int64)  # even indices first
    tiered = [i for i, _, _ in diversity_order(det, cand, annotated, 1, None, tiers, weights,
                                               novelty=False)]
    assert tiered == sorted(range(30), key=lambda i: (i % 2, -weights[i], i))


def test_in_domain_objective_needs_the_domain_weights():
    from winnow.pipelines.config import DiversitySettings

    with pytest.raises(ValueError, match="in_domain_weighting: false"):
        DiversitySettings(objective="in_domain", in_domain_weighting=False)
    assert DiversitySettings(objective="in_domain").objective == "in_domain"


def test_in_domain_probability_ranks_the_annotated_register_first_and_is_cross_fitted():
    from winnow.selectors.in_domain import in_domain_probability

    rng = np.random.default_rng(4)
    centre_in, centre_out = np.eye(8)[0] * 3, np.eye(8)[1] * 3
    annotated = centre_in + rng.normal(size=(200, 8))
    pool_in = centre_in + rng.normal(size=(60, 8))
    pool_out = centre_out + rng.normal(size=(140, 8))
    pool = np.vstack([pool_in, pool_out])
    p = in_domain_probability(annotated, pool, seed=0)
    assert p.shape == (200,) and ((p >= 0) & (p <= 1)).all()
    # the pool's in-register rows, though labelled negative in training, score high
    assert p[:60].mean() > 0.5 > p[60:].mean()
    assert np.median(p[:60]) > np.percentile(p[60:], 95)
    np.testing.assert_array_equal(p, in_domain_probability(annotated, pool, seed=0))
    # cross-fitted: the even rows are scored by a model trained without them
    from sklearn.linear_model import LogisticRegression
    lr = LogisticRegression(C=1.0, max_iter=500, class_weight="balanced", random_state=0).fit(
        np.vstack([annotated, pool[1::2]]), np.r_[np.ones(200), np.zeros(100)])
    np.testing.assert_allclose(p[::2], lr.predict_proba(pool[::2])[:, 1], rtol=1e-9)
    with pytest.raises(ValueError, match="at least 2 pool utterances"):
        in_domain_probability(annotated, pool[:1], seed=0)


def test_intent_run_weights_diversity_by_in_domain_probability_and_records_it(reference_run):
    """The demo config uses the default (weighted): each picked candidate carries its
    in-domain probability, in the selection order and in the corpus's scores."""
    import json

    rows = [json.loads(x) for x in (reference_run / "diversity" / "diversity_order.jsonl")
            .read_text().splitlines()]
    assert rows and all(0.0 <= r["in_domain_prob"] <= 1.0 for r in rows)
    corpus = [json.loads(x) for x in (reference_run / "corpus" / "corpus.jsonl")
              .read_text().splitlines()]
    by_id = {r["id"]: r["in_domain_prob"] for r in rows}
    picked = [r for r in corpus if r["origin"] == "self-labeled"]
    assert picked and all(r["scores"]["in_domain_prob"] == by_id[r["id"]] for r in picked)
    stats = json.loads((reference_run / "diversity" / "_DONE.json").read_text())["stats"]
    assert any(k.endswith(".in_domain_mean") for k in stats)
