"""The iteration page's checkers accept the book's answers and reject the likely mistakes."""

import pytest
import torch

from helpers import checks, scores
from helpers.experiments import iteration


def test_reference_answers_pass():
    assert checks.iteration.check_iteration_targets(
        lambda length, n_pos: iteration.iteration_targets(torch.tensor([length]), n_pos)[0]).startswith("All")
    assert checks.iteration.check_iteration_score(lambda p, length: scores.attention_on_targets(
        p[None, None, None], iteration.iteration_targets(torch.tensor([length]), p.shape[-1]))[0, 0].item()
                                                  ).startswith("All")


def test_an_off_by_one_target_is_rejected():
    def one_late(length, n_pos):  # key t instead of t - 1 (1-based positions read as 0-based)
        return iteration.iteration_targets(torch.tensor([length]), n_pos, shift=1)[0]

    with pytest.raises(AssertionError, match="differ"):
        checks.iteration.check_iteration_targets(one_late)


def test_a_score_averaged_over_every_query_is_rejected():
    def every_query(pattern, length):
        keys = (torch.arange(pattern.shape[0]) - length).clamp(min=0)
        return pattern[torch.arange(pattern.shape[0]), keys].mean().item()

    with pytest.raises(AssertionError, match="your score"):
        checks.iteration.check_iteration_score(every_query)
