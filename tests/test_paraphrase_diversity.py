"""Template pairs, the bilinear paraphrase detector and the diversity selector."""
import numpy as np

from winnow.selectors.diversity import diversity_order
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
    rng = np.random.default_rng(1)
    det = ParaphraseDetector(d=np.full(6, 5.0, np.float32), s=np.zeros(6, np.float32), b=-2.0)
    annotated = np.eye(6, dtype=np.float32)[:1]
    cand = rng.normal(size=(40, 6)).astype(np.float32)
    cand /= np.linalg.norm(cand, axis=1, keepdims=True)
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


def test_confident_tier_is_exhausted_before_the_rest():
    from winnow.selectors.diversity import confidence_tiers

    rng = np.random.default_rng(2)
    det = ParaphraseDetector(d=np.full(6, 5.0, np.float32), s=np.zeros(6, np.float32), b=-2.0)
    cand = rng.normal(size=(20, 6)).astype(np.float32)
    cand /= np.linalg.norm(cand, axis=1, keepdims=True)
    conf = rng.uniform(size=20).tolist()
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
