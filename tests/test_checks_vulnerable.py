"""The vulnerable-heads checkers accept the right answer and reject the usual slips."""

import pytest
import torch

from helpers.checks import vulnerable


def test_right_answers_pass():
    assert "match" in vulnerable.check_flipped(lambda logits, answer: logits.argmax(-1) != answer)
    assert "match" in vulnerable.check_shares(
        lambda drop, sets: torch.stack([sum(drop[h] for h in s) / drop.abs().sum() for s in sets]))


def test_a_flip_counter_that_returns_right_answers_fails():
    with pytest.raises(AssertionError, match="first prompt right"):
        vulnerable.check_flipped(lambda logits, answer: logits.argmax(-1) == answer)


def test_shares_over_the_plain_sum_fail_where_a_head_pushes_the_other_way():
    with pytest.raises(AssertionError, match="other way"):
        vulnerable.check_shares(lambda drop, sets: torch.stack([sum(drop[h] for h in s) / drop.sum() for s in sets]))
