"""Tests for helpers.checks.semantic_induction: each checker accepts a correct answer written out by hand, and
rejects a wrong one with an AssertionError that names the case it failed on."""

import pytest
import torch

from helpers import checks


def index_by_hand(attention, writes, at_entity, directions, column):
    """One head's relation index on one prompt, as a loop over positions and tails."""
    write = torch.zeros(writes.shape[1])
    for s in range(len(attention)):
        if at_entity[s]:
            write += attention[s] * writes[s]
    logits = [float(write @ d) for d in directions]
    others = [v for j, v in enumerate(logits) if j != column]
    return logits[column] - sum(others) / len(others)


def p_by_hand(observed, null):
    return (1 + sum(float(x) >= observed for x in null)) / (len(null) + 1)


def test_index_checker_accepts_a_loop():
    verdict = checks.semantic_induction.check_relation_index(index_by_hand)
    assert verdict == "All 4 relation indices match the reference."


def test_index_checker_catches_an_index_that_reads_every_position():
    def every_position(attention, writes, at_entity, directions, column):
        return index_by_hand(attention, writes, torch.ones_like(at_entity), directions, column)

    with pytest.raises(AssertionError, match=r"on random case 0 .* your index is"):
        checks.semantic_induction.check_relation_index(every_position)


def test_index_checker_catches_a_mean_that_includes_the_true_tail():
    def mean_over_all(attention, writes, at_entity, directions, column):
        write = (attention * at_entity.float()) @ writes
        logits = write @ directions.T
        return float(logits[column] - logits.mean())

    with pytest.raises(AssertionError, match="the true tail left out"):
        checks.semantic_induction.check_relation_index(mean_over_all)


def test_p_checker_accepts_a_loop():
    assert checks.semantic_induction.check_permutation_p(p_by_hand) == "All 4 p-values match the reference."


def test_p_checker_catches_strict_inequality_on_ties():
    def strict(observed, null):
        return (1 + sum(float(x) > observed for x in null)) / (len(null) + 1)

    with pytest.raises(AssertionError, match="(middle of the draws|equal to three draws)"):
        checks.semantic_induction.check_permutation_p(strict)


def test_p_checker_catches_a_p_without_the_plus_one():
    with pytest.raises(AssertionError, match="above every draw .* your p is 0.0000"):
        checks.semantic_induction.check_permutation_p(lambda o, n: sum(float(x) >= o for x in n) / len(n))
