"""The intent classifier: tf-idf n-grams + embeddings, optional class balancing."""
import numpy as np

from winnow.selectors.intent_model import IntentClassifier


def _imbalanced() -> tuple[list[str], np.ndarray, list[str]]:
    """60 'music' utterances against 3 'alarm' seeds; the embeddings carry the class."""
    rng = np.random.default_rng(0)
    texts = [f"play song number {i}" for i in range(60)] + ["wake me up", "set alarm", "alarm now"]
    labels = ["music"] * 60 + ["alarm"] * 3
    emb = rng.normal(scale=0.3, size=(63, 8)).astype(np.float32)
    emb[:60, 0] += 1.0
    emb[60:, 1] += 1.0
    return texts, emb, labels


def test_predicts_its_training_labels_and_probabilities_sum_to_one():
    texts, emb, labels = _imbalanced()
    model = IntentClassifier(seed=0).fit(texts, emb, labels)
    pred, conf = model.predict(texts, emb)
    assert pred == labels
    assert np.allclose(model.predict_proba(texts, emb).sum(1), 1.0) and (conf > 0.5).all()


def test_balanced_weighting_favours_the_rare_intent_on_ambiguous_input():
    texts, emb, labels = _imbalanced()
    ambiguous = np.zeros((1, 8), np.float32)
    ambiguous[0, :2] = 0.5  # halfway between the two classes, unseen words
    p_alarm = {}
    for weight in (0.0, 1.0):
        model = IntentClassifier(seed=0, class_weight=weight).fit(texts, emb, labels)
        p_alarm[weight] = model.predict_proba(["what now"], ambiguous)[0, model.classes_.index("alarm")]
    assert p_alarm[1.0] > p_alarm[0.0] + 0.1, p_alarm


def test_full_weighting_is_scikit_learns_balanced():
    from sklearn.utils.class_weight import compute_sample_weight

    _, _, labels = _imbalanced()
    np.testing.assert_allclose(IntentClassifier(class_weight=1.0)._weights(labels),
                               compute_sample_weight("balanced", labels))
    assert IntentClassifier()._weights(labels) is None


def _three_intents(n: int, seed: int) -> tuple[list[str], np.ndarray, list[str]]:
    """n utterances per intent, each with its own numbered words, so that a larger draw
    brings n-grams the smaller one lacks; the embeddings carry the class, noisily."""
    rng = np.random.default_rng(seed)
    words = {"music": "play song", "alarm": "wake me at", "weather": "rain in city"}
    texts, labels, rows = [], [], []
    for k, (intent, w) in enumerate(words.items()):
        for _ in range(n):
            texts.append(f"{w} {rng.integers(0, 3 * n)} please")
            labels.append(intent)
            row = rng.normal(scale=0.8, size=8)
            row[k] += 1.0
            rows.append(row)
    return texts, np.array(rows, np.float32), labels


def test_a_warm_started_refit_reaches_the_cold_fits_model_in_fewer_iterations():
    """What the curves and self-training rely on: a point fitted from the base model's
    weights is the point a cold fit gives (the same predictions), only cheaper."""
    from winnow.pipelines.intent_workflow import fit_predict

    base_t, base_e, base_l = _three_intents(30, 0)
    more_t, more_e, more_l = _three_intents(20, 1)
    test_t, test_e, _ = _three_intents(40, 2)
    texts, vecs = base_t + more_t + test_t, np.vstack([base_e, more_e, test_e])
    train = list(range(len(base_t) + len(more_t)))
    test = list(range(len(train), len(texts)))
    model = dict(c=10.0, seed=0, class_weight=0.75)
    base = IntentClassifier(**model).fit(base_t, base_e, base_l)
    cold = IntentClassifier(**model).fit(base_t + more_t, vecs[train], base_l + more_l)
    warm = IntentClassifier(**model).fit(base_t + more_t, vecs[train], base_l + more_l, base)
    assert set(more_t) - set(base_t)  # the refit has n-grams the base never saw
    assert warm.lr.n_iter_[0] < cold.lr.n_iter_[0], (warm.lr.n_iter_, cold.lr.n_iter_)
    np.testing.assert_allclose(warm.predict_proba(test_t, test_e),
                               cold.predict_proba(test_t, test_e), atol=1e-2)
    assert (fit_predict(texts, vecs, train, base_l + more_l, test, model, base)
            == fit_predict(texts, vecs, train, base_l + more_l, test, model)
            == cold.predict(test_t, test_e)[0])


def test_a_model_with_other_classes_is_no_starting_point():
    texts, emb, labels = _imbalanced()
    two = IntentClassifier(seed=0).fit(texts, emb, labels)
    t3, e3, l3 = _three_intents(10, 0)
    refit = IntentClassifier(seed=0).fit(t3, e3, l3, init=two)
    assert refit.classes_ == ["alarm", "music", "weather"]
    assert refit.predict(t3, e3)[0] == IntentClassifier(seed=0).fit(t3, e3, l3).predict(t3, e3)[0]
