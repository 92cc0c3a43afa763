"""Tests for helpers.checks: each exercise checker accepts a correct answer written out by hand, and rejects
a wrong one with an AssertionError that names the case it failed on."""

import pytest
import torch

from helpers import checks


# --- check_previous_token_score ---------------------------------------------------------------------------

def previous_token_score_by_hand(pattern: torch.Tensor) -> float:
    """Mean attention from query q to key q - 1 over queries 1..n-1, as a plain loop."""
    seq_len = pattern.shape[0]
    return sum(pattern[q, q - 1].item() for q in range(1, seq_len)) / (seq_len - 1)


def test_previous_token_checker_accepts_a_correct_score():
    message = checks.check_previous_token_score(previous_token_score_by_hand)
    assert message == "All 6 previous-token cases match the reference."


def test_previous_token_checker_accepts_an_answer_returned_as_a_tensor():
    assert checks.check_previous_token_score(lambda pattern: pattern.diagonal(-1).mean()).startswith("All 6")


def test_previous_token_checker_names_the_case_a_self_attention_score_fails_on():
    def scores_the_diagonal(pattern):  # the classic slip: q -> q instead of q -> q - 1
        return pattern.diagonal().mean().item()

    with pytest.raises(AssertionError, match=r"on a pure previous-token head your score is 0\.1667; expected 1\.0000"):
        checks.check_previous_token_score(scores_the_diagonal)


def test_previous_token_checker_catches_a_score_that_counts_query_zero():
    def divides_by_every_query(pattern):  # averages over all n queries, though query 0 has no previous token
        return pattern.diagonal(-1).sum().item() / pattern.shape[0]

    with pytest.raises(AssertionError, match=r"on a pure previous-token head your score is 0\.8333; expected 1\.0000"):
        checks.check_previous_token_score(divides_by_every_query)


def test_previous_token_checker_reaches_the_random_cases():
    def right_only_on_structured_patterns(pattern):
        is_random = not torch.isin(pattern, torch.tensor([0.0, 1.0])).all() and pattern[2, 0] != pattern[2, 1]
        return previous_token_score_by_hand(pattern) + (0.5 if is_random else 0.0)

    with pytest.raises(AssertionError, match=r"on random pattern \(seed 0\) your score is"):
        checks.check_previous_token_score(right_only_on_structured_patterns)


def test_a_reader_function_that_edits_its_input_cannot_change_the_reference():
    def zeroes_then_scores(pattern):
        answer = previous_token_score_by_hand(pattern)
        pattern.zero_()
        return answer

    assert checks.check_previous_token_score(zeroes_then_scores).startswith("All 6")


# --- check_induction_targets ------------------------------------------------------------------------------

def induction_targets_by_hand(tokens: torch.Tensor) -> torch.Tensor:
    """Query q targets key k (k <= q) when the token just before k equals the query's token."""
    seq_len = len(tokens)
    mask = torch.zeros(seq_len, seq_len, dtype=torch.bool)
    for q in range(seq_len):
        for k in range(1, q + 1):
            mask[q, k] = bool(tokens[k - 1] == tokens[q])
    return mask


def test_induction_checker_accepts_a_correct_mask():
    assert checks.check_induction_targets(induction_targets_by_hand) == "All 3 induction-target cases match the reference."


def test_induction_checker_accepts_a_nested_list_of_bools():
    assert checks.check_induction_targets(lambda tokens: induction_targets_by_hand(tokens).tolist()).startswith("All 3")


def test_induction_checker_names_the_case_and_positions_of_a_duplicate_token_mask():
    def marks_the_earlier_copy_itself(tokens):  # duplicate-token targets, not induction targets
        mask = tokens[:, None] == tokens[None, :]
        return mask & torch.ones(len(tokens), len(tokens), dtype=torch.bool).tril(-1)

    with pytest.raises(AssertionError, match=r"on a sequence repeated twice \(\[4, 1, 2, 3, 1, 2, 3\]\) your mask "
                                             r"differs at \(query, key\) = \[\[4, 1\], \[4, 2\]"):
        checks.check_induction_targets(marks_the_earlier_copy_itself)


def test_induction_checker_catches_a_mask_that_misses_a_third_occurrence():
    def only_the_first_earlier_copy(tokens):
        mask = induction_targets_by_hand(tokens)
        for q in range(len(tokens)):
            hits = mask[q].nonzero().flatten()
            mask[q, hits[1:]] = False
        return mask

    with pytest.raises(AssertionError, match=r"on a token repeated three times .* differs at \(query, key\) = \[\[4, 3\]\]"):
        checks.check_induction_targets(only_the_first_earlier_copy)


def test_induction_checker_reports_a_wrong_shape_before_comparing():
    with pytest.raises(AssertionError, match=r"on a sequence repeated twice your mask has shape \(6, 6\); expected \(7, 7\)"):
        checks.check_induction_targets(lambda tokens: induction_targets_by_hand(tokens)[1:, 1:])
