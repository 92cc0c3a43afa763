"""The in-context checkers accept the right answer and reject wrong ones."""

import pytest
import torch

from helpers.checks import in_context


def right_signed(logits, right, wrong):
    rows = torch.arange(len(right))
    signed = logits[rows, right] - logits[rows, wrong]
    return signed, float((signed > 0).float().mean())


def test_right_answers_pass():
    assert "match" in in_context.check_signed_accuracy(right_signed)
    assert "match" in in_context.check_label_copying(
        lambda t: (t[..., 0, 0] - t[..., 0, 1]) - (t[..., 1, 0] - t[..., 1, 1]))


def test_accuracy_that_counts_ties_as_right_fails():
    def wrong(logits, right, wrong_ids):
        signed, _ = right_signed(logits, right, wrong_ids)
        return signed, float((signed >= 0).float().mean())
    with pytest.raises(AssertionError, match="tie"):
        in_context.check_signed_accuracy(wrong)


def test_score_that_ignores_what_is_read_fails():
    with pytest.raises(AssertionError, match="pure copier"):
        in_context.check_label_copying(lambda t: t[..., 0, 0] - t[..., 0, 1])
