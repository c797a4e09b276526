"""General text for the words the translations lack: what is selected, and which amount the
tuning split chooses."""
from winnow.lm.general_text import Amount, Candidate, choose_amount, select

RANKED = ["wecke mich", "wecke mich morgen", "mich morgen", "spiele musik", "wecke musik", "licht an"]


def test_select_takes_the_top_then_only_sentences_that_bring_a_word():
    text = ["wecke mich bitte"]
    # the top sentence is taken whatever it brings; below it, "mich morgen" and "wecke
    # musik" bring nothing that "wecke mich morgen" and "spiele musik" did not
    assert select(RANKED, text, Amount(1, 2)) == ["wecke mich", "wecke mich morgen", "spiele musik"]
    assert select(RANKED, text, Amount(0, 10)) == ["wecke mich morgen", "spiele musik", "licht an"]
    assert select(RANKED, text, Amount(3, 0)) == RANKED[:3]
    assert select(RANKED, text, Amount(0, 0)) == []
    assert select(RANKED, text, Amount(10, 10)) == RANKED  # more than there is: all of it


def test_choose_amount_takes_the_lowest_perplexity_within_the_oov_goal():
    n = 10 ** 9  # so many tuning words that the rates are exact
    grid = {Amount(0, 0): Candidate(50.0, 0.10, n), Amount(5, 0): Candidate(48.0, 0.09, n),
            Amount(0, 5): Candidate(52.0, 0.06, n), Amount(5, 5): Candidate(51.0, 0.07, n)}
    assert choose_amount(grid, 0.075) == Amount(5, 5)
    assert choose_amount(grid, 0.065) == Amount(0, 5)
    # no goal, or one that no amount reaches: the lowest perplexity of all
    assert choose_amount(grid, None) == Amount(5, 0)
    assert choose_amount(grid, 0.01) == Amount(5, 0)
    # equal perplexity: less text
    tie = {Amount(5, 0): Candidate(48.0, 0.05, n), Amount(0, 2): Candidate(48.0, 0.05, n)}
    assert choose_amount(tie, 0.1) == Amount(0, 2)


def test_the_oov_goal_must_hold_with_confidence_on_few_tuning_words():
    """0.073 on 2,600 tuning words is under a 0.0737 goal, but its one-sided 95% bound
    (0.073 + 1.645 x 0.0051 = 0.0814) is not: the amount with 0.064 (bound 0.0719) is taken,
    at a higher tuning perplexity.  With many more words the first one would do."""
    grid = {Amount(10, 5): Candidate(59.7, 0.073, 2600), Amount(5, 10): Candidate(60.4, 0.064, 2600)}
    assert grid[Amount(10, 5)].oov_upper > 0.0737 >= grid[Amount(5, 10)].oov_upper
    assert choose_amount(grid, 0.0737) == Amount(5, 10)
    many = {a: Candidate(c.perplexity, c.oov_rate, 10 ** 7) for a, c in grid.items()}
    assert choose_amount(many, 0.0737) == Amount(10, 5)
