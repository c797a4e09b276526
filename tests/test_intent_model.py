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


def test_min_df_leaves_out_the_n_grams_of_one_utterance():
    """``min_df`` 2: "number 17" and the other numbers are each in one utterance and
    drop out; "play song" stays; the model still fits and predicts its training labels."""
    texts, emb, labels = _imbalanced()
    every, shared = (IntentClassifier(seed=0, min_df=n).fit(texts, emb, labels) for n in (1, 2))
    kept = set(shared.vec.vocabulary_)
    assert {"play song", "song number"} <= kept and "number 17" in every.vec.vocabulary_
    assert not kept & {"number 17", "wake", "alarm now"}
    assert kept < set(every.vec.vocabulary_)
    assert shared.predict(texts, emb)[0] == labels


def test_every_fit_of_a_run_reads_min_df_from_the_config():
    from winnow.pipelines.config import load_config
    from winnow.pipelines.intent_workflow import classifier_args

    from conftest import REPO

    cfg = load_config(REPO / "configs" / "massive-intent.yaml",
                      ["intent_model.min_df=2", "seed=5"], check_files=False)
    assert classifier_args(cfg) == {"c": cfg.intent_model.c, "seed": 5,
                                    "class_weight": cfg.intent_model.class_weight, "min_df": 2}


def test_a_curve_fit_depends_on_its_training_set_not_on_the_order_of_its_rows():
    """The curves fit one model per distinct training set: two orders that add the same
    candidates in another order share a fit, and that cached fit must be the one each order
    would have got alone."""
    from winnow.pipelines.intent_workflow import fit_predict, training_set

    texts, emb, labels = _imbalanced()
    rows = list(range(len(texts)))
    shuffled = list(np.random.default_rng(1).permutation(rows))
    model = dict(c=10.0, seed=0, class_weight=0.75, min_df=1)
    one = training_set(rows, labels)
    other = training_set(shuffled, [labels[i] for i in shuffled])
    assert one == other and hash(one) == hash(other)
    test = [0, 59, 60, 62]
    cached = fit_predict(texts, emb, one, test, model)
    assert cached == fit_predict(texts, emb, other, test, model)
    assert cached == ["music", "music", "alarm", "alarm"]
    # another label for one row is another training set
    assert training_set(rows, labels[:-1] + ["music"]) != one
