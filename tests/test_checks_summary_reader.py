"""The summary-reader checkers accept the right answer and reject wrong ones."""

import pytest
import torch

from helpers.checks import summary_reader


def right_route(per_key, sign, where):
    return (per_key[..., where].sum(-1) * sign).mean(-1)


def right_patch(attention, z, clean, source, where):
    return z + torch.einsum("hk,khd->hd", attention[:, where], (source - clean)[where])


def test_right_answers_pass():
    assert "match" in summary_reader.check_route_score(right_route)
    assert "match" in summary_reader.check_values_patch(right_patch)


def test_unsigned_route_score_fails():
    with pytest.raises(AssertionError, match="opposite signs"):
        summary_reader.check_route_score(lambda per_key, sign, where: per_key[..., where].sum(-1).mean(-1))


def test_patch_that_ignores_the_attention_fails():
    def wrong(attention, z, clean, source, where):
        return z + (source - clean)[where].sum(0)
    with pytest.raises(AssertionError, match="differs from the reference"):
        summary_reader.check_values_patch(wrong)
