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
    grid = {Amount(0, 0): Candidate(50.0, 0.10), Amount(5, 0): Candidate(48.0, 0.09),
            Amount(0, 5): Candidate(52.0, 0.06), Amount(5, 5): Candidate(51.0, 0.07)}
    assert choose_amount(grid, 0.075) == Amount(5, 5)
    assert choose_amount(grid, 0.065) == Amount(0, 5)
    # no goal, or one that no amount reaches: the lowest perplexity of all
    assert choose_amount(grid, None) == Amount(5, 0)
    assert choose_amount(grid, 0.01) == Amount(5, 0)
    # equal perplexity: less text
    tie = {Amount(5, 0): Candidate(48.0, 0.05), Amount(0, 2): Candidate(48.0, 0.05)}
    assert choose_amount(tie, 0.1) == Amount(0, 2)
