"""The sentiment page's checkers pass the reference answers and fail wrong ones."""

import torch

from helpers import checks
from helpers.checks import sentiment as checker
from helpers.experiments import sentiment


def test_mean_difference_checker() -> None:
    assert checker.check_mean_difference(sentiment.mean_difference).startswith("All")
    wrong = checks.verdict(checker.check_mean_difference, lambda a, s: a[s < 0].mean(0) - a[s > 0].mean(0))
    assert wrong.startswith(checks.NOT_YET) and "wrong way" in wrong
    pooled = checks.verdict(checker.check_mean_difference, lambda a, s: (a * s[:, None]).sum(0) / len(s))
    assert pooled.startswith(checks.NOT_YET)


def test_mean_ablate_checker() -> None:
    assert checker.check_mean_ablate(checker.reference_mean_ablate).startswith("All")
    zero = checks.verdict(checker.check_mean_ablate, lambda x, u: x - (x @ u)[:, None] * u)
    assert zero.startswith(checks.NOT_YET) and "zero" in zero
    assert checks.verdict(checker.check_mean_ablate, lambda x, u: x).startswith(checks.NOT_YET)
    assert checks.verdict(checker.check_mean_ablate, lambda x, u: torch.zeros(3)).startswith(checks.NOT_YET)
