"""Tests for helpers.checks.rare_words: each checker accepts a correct answer written out by hand, and rejects a
wrong one with an AssertionError that names the case it failed on."""

import pytest
import torch

from helpers import checks


def least_frequent_by_hand(tokens: torch.Tensor, rank: torch.Tensor, first_key: int) -> list[int]:
    """For each query, the earliest key in first_key .. q - 1 of the largest rank, as a plain loop."""
    out = []
    for q in range(len(tokens)):
        keys = list(range(first_key, q))
        out.append(max(keys, key=lambda k: (int(rank[tokens[k]]), -k)) if keys else -1)
    return out


def share_by_hand(pattern: torch.Tensor, targets: torch.Tensor) -> float:
    hits = scored = 0
    for q, target in enumerate(targets.tolist()):
        if target < 0:
            continue
        scored += 1
        hits += int(1 + pattern[q, 1:q + 1].argmax()) == target
    return hits / scored


def test_least_frequent_checker_accepts_a_loop():
    assert checks.rare_words.check_least_frequent_earlier(least_frequent_by_hand).startswith("All 6 prompts")


def test_least_frequent_checker_catches_the_last_copy_of_a_repeated_token():
    def last_copy(tokens, rank, first_key):
        out = []
        for q in range(len(tokens)):
            keys = list(range(first_key, q))
            out.append(max(keys, key=lambda k: (int(rank[tokens[k]]), k)) if keys else -1)
        return out

    with pytest.raises(AssertionError, match="a repeated rare token"):
        checks.rare_words.check_least_frequent_earlier(last_copy)


def test_least_frequent_checker_catches_position_zero():
    with pytest.raises(AssertionError, match=r"rising rarity .* got \[-1, 0,"):
        checks.rare_words.check_least_frequent_earlier(lambda t, r, k: least_frequent_by_hand(t, r, 0))


def test_share_checker_accepts_a_loop():
    assert checks.rare_words.check_argmax_share(share_by_hand).startswith("All 6 heads")


def test_share_checker_catches_a_head_parked_on_position_zero():
    def with_position_zero(pattern, targets):
        scored = targets >= 0
        choice = pattern.argmax(-1)
        return float(((choice == targets) & scored).sum() / scored.sum())

    with pytest.raises(AssertionError, match="parked on position 0"):
        checks.rare_words.check_argmax_share(with_position_zero)


def test_verdict_reports_a_stub_as_not_attempted():
    def stub(pattern, targets):
        raise NotImplementedError("your code here")

    assert checks.verdict(checks.rare_words.check_argmax_share, stub).startswith(checks.NOT_ATTEMPTED)
