"""Tests for helpers.checks.successor: each checker accepts a correct answer written out by hand, and rejects a
wrong one with an AssertionError that names the case it failed on."""

import pytest
import torch

from helpers import checks


def score_by_hand(table: torch.Tensor, order: torch.Tensor) -> float:
    """The succession score of one head as a plain loop over the order."""
    hits = [int(table[order[k]].argmax()) == int(order[k + 1]) for k in range(len(order) - 1)]
    return sum(hits) / len(hits)


def test_score_checker_accepts_a_correct_score():
    assert checks.successor.check_succession_score(score_by_hand) == "All 8 tables match the reference."


def test_score_checker_catches_a_score_that_ignores_the_order():
    def task_order_only(table, order):  # scores i -> i + 1 whatever order it is given
        return score_by_hand(table, torch.arange(len(order)))

    with pytest.raises(AssertionError, match=r"on a successor head read against a shuffled order .* your score "
                                             r"is 1\.000; expected 0\.500"):
        checks.successor.check_succession_score(task_order_only)


def test_score_checker_catches_a_score_that_wraps_around():
    def wraps(table, order):  # scores the last token against the first as well
        n = len(order)
        return sum(int(table[order[k]].argmax()) == int(order[(k + 1) % n]) for k in range(n)) / n

    # on the task's order a successor head also maps the last token to the first, so wrapping shows on a shuffle
    with pytest.raises(AssertionError, match=r"read against a shuffled order .* your score is 0\.429"):
        checks.successor.check_succession_score(wraps)


def rule_by_hand(scores: torch.Tensor, shuffled: torch.Tensor) -> list:
    best = sorted(float(shuffled[s].max()) for s in range(shuffled.shape[0]))
    bar = float(torch.quantile(torch.tensor(best, dtype=torch.float64), 0.95))
    return [(layer, head) for layer in range(scores.shape[0]) for head in range(scores.shape[1])
            if scores[layer, head] > bar]


def test_rule_checker_accepts_a_correct_rule_in_any_order():
    assert checks.successor.check_passing_heads(rule_by_hand) == "All 5 screens match the reference."
    assert checks.successor.check_passing_heads(lambda s, n: rule_by_hand(s, n)[::-1]).startswith("All 5")


def test_rule_checker_catches_a_per_head_rule():
    def own_shuffles(scores, shuffled):
        own = torch.quantile(shuffled, 0.95, dim=0)
        return [tuple(h) for h in (scores > own).nonzero().tolist()]

    # a head's own shuffles set a far lower bar than the best head's: heads below the family-wise bar pass
    with pytest.raises(AssertionError, match=r"exactly at the bar \(L0H1\).* you pass \['L0H1'\]"):
        checks.successor.check_passing_heads(own_shuffles)


def test_rule_checker_catches_a_rule_that_lets_a_head_at_the_bar_pass():
    def at_least(scores, shuffled):
        bar = float(torch.quantile(shuffled.flatten(1).max(-1).values.double(), 0.95))
        return [tuple(h) for h in (scores >= bar).nonzero().tolist()]

    with pytest.raises(AssertionError, match=r"exactly at the bar .* you pass \['L0H1'\]; expected \[\]"):
        checks.successor.check_passing_heads(at_least)


def test_verdict_reports_a_stub_as_not_attempted():
    def stub(table, order):
        raise NotImplementedError("your code here")

    assert checks.verdict(checks.successor.check_succession_score, stub).startswith(checks.NOT_ATTEMPTED)
