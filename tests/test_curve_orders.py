"""The orders in which the error-vs-data curves add candidates."""
from winnow.pipelines.intent_workflow import curve_orders


def _cand(i: int, intent: str, score: float) -> dict:
    return {"id": f"c{i}", "text": f"utterance {i}", "_decision": {"intent": intent, "score": score}}


def test_every_order_adds_the_same_candidates_and_the_oracle_puts_true_labels_first():
    cands = {"alarm_set": [_cand(i, "alarm_set", 1.0 - i / 10) for i in range(8)],
             "weather_query": [_cand(i, "weather_query", 0.5) for i in range(8, 12)]}
    diversity = {"alarm_set": [f"c{i}" for i in (7, 3, 5, 0, 1, 2, 4, 6)],
                 "weather_query": ["c9", "c8", "c11", "c10"]}
    # hidden pool labels: c2 and c6 really are alarm_set, c9 is an alarm filed under weather
    hidden = {"c2": "alarm_set", "c6": "alarm_set", "c9": "alarm_set", "c10": "weather_query"}
    orders = curve_orders(cands, diversity, hidden, seed=3)
    assert set(orders) == {"random", "relevance_topk", "diversity", "oracle"}
    for intent, cs in cands.items():
        ids = sorted(c["id"] for c in cs)
        for name, per_intent in orders.items():
            assert sorted(c["id"] for c in per_intent[intent]) == ids, (name, intent)
    ids = lambda name, intent: [c["id"] for c in orders[name][intent]]  # noqa: E731
    assert ids("relevance_topk", "alarm_set") == [f"c{i}" for i in range(8)]
    assert ids("diversity", "alarm_set") == diversity["alarm_set"]
    oracle = ids("oracle", "alarm_set")
    assert set(oracle[:2]) == {"c2", "c6"}
    # behind the true labels the oracle keeps the random order
    assert oracle[2:] == [i for i in ids("random", "alarm_set") if i not in ("c2", "c6")]
    assert ids("oracle", "weather_query")[0] == "c10"
    assert curve_orders(cands, diversity, hidden, seed=3) == orders  # seeded
    assert ids("random", "alarm_set") != ids("relevance_topk", "alarm_set")
