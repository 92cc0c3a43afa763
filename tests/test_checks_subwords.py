"""Tests for helpers.checks.subwords: each checker accepts a correct answer written out by hand (plain loops,
independent of the reference), and rejects a wrong one with a message that names the case it failed on."""

import pytest
import torch

from helpers import checks

MARKS = ("Ġ", "▁", "Ċ", "\n", " ")


def word_starts_by_hand(pieces: list[str]) -> list[bool]:
    """A piece continues a word when it begins with a letter and the piece before it ends with one (the markers
    "Ġ", "Ċ" and "▁" are whitespace, though Python calls "Ġ" and "Ċ" letters)."""
    text = [p.replace("Ġ", " ").replace("Ċ", "\n").replace("▁", " ") for p in pieces]
    return [not (i > 0 and t[:1].isalpha() and text[i - 1][-1:].isalpha()) for i, t in enumerate(text)]


def merge_score_by_hand(pattern: torch.Tensor, spans: list[tuple[int, int]]) -> float:
    """Within-word attention (last piece -> first piece, words of 3+ pieces) minus the mean across-word attention
    at the same offset (last piece of a word -> first piece of an earlier word), averaged over the words."""
    across: dict[int, list[float]] = {}
    for i, (_, end) in enumerate(spans):
        for start, _ in spans[:i]:
            across.setdefault(end - 1 - start, []).append(pattern[end - 1, start].item())
    differences = []
    for start, end in spans:
        offset = end - 1 - start
        if end - start >= 3 and offset in across:
            differences.append(pattern[end - 1, start].item() - sum(across[offset]) / len(across[offset]))
    return sum(differences) / len(differences)


def test_word_starts_checker_accepts_a_correct_answer():
    assert checks.subwords.check_word_starts(word_starts_by_hand) == "All 6 piece lists match the reference."


def test_word_starts_checker_names_the_piece_a_space_only_rule_gets_wrong():
    def only_spaces(pieces):  # forgets that punctuation and digits end a word too
        return [i == 0 or p.startswith(MARKS) for i, p in enumerate(pieces)]

    with pytest.raises(AssertionError, match=r"piece 8 \('.'\) should start a word"):
        checks.subwords.check_word_starts(only_spaces)


def test_word_starts_checker_rejects_the_wrong_number_of_flags():
    with pytest.raises(AssertionError, match="you returned 1 flags"):
        checks.subwords.check_word_starts(lambda pieces: [True])


def test_merge_score_checker_accepts_a_correct_answer():
    assert checks.subwords.check_merge_score(merge_score_by_hand).startswith("All 8 patterns")


def test_merge_score_checker_catches_a_score_without_the_control():
    def within_only(pattern, spans):
        return sum(pattern[b - 1, a].item() for a, b in spans if b - a >= 3) / sum(b - a >= 3 for a, b in spans)

    with pytest.raises(AssertionError, match="on a previous-token head|on a uniform causal head|on a head that"):
        checks.subwords.check_merge_score(within_only)


def test_verdict_reports_the_stub_as_not_attempted():
    def stub(pieces):
        raise NotImplementedError("your code here")

    assert checks.verdict(checks.subwords.check_word_starts, stub).startswith(checks.NOT_ATTEMPTED)
