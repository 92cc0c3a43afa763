"""Tests for helpers.checks.positional: each checker accepts a correct answer written out by hand, and rejects a
wrong one with an AssertionError that names the case it failed on."""

import pytest
import torch

from helpers import checks


def shares_by_hand(pattern: torch.Tensor, first_query: int, max_offset: int) -> torch.Tensor:
    """The argmax-offset histogram of one head as a plain loop over queries."""
    counts = torch.zeros(max_offset + 3)
    for q in range(first_query, pattern.shape[0]):
        k = int(pattern[q].argmax())
        if k == 0:
            counts[max_offset + 1] += 1
        elif q - k <= max_offset:
            counts[q - k] += 1
        else:
            counts[max_offset + 2] += 1
    return counts / counts.sum()


def test_offset_checker_accepts_a_correct_histogram():
    message = checks.positional.check_argmax_offset_shares(shares_by_hand)
    assert message == "All 9 attention patterns match the reference."


def test_offset_checker_accepts_a_list():
    assert checks.positional.check_argmax_offset_shares(
        lambda *args: shares_by_hand(*args).tolist()).startswith("All 9")


def test_offset_checker_catches_a_histogram_that_ignores_first_query():
    def counts_every_query(pattern, first_query, max_offset):  # query 1 of a previous-token head hits position 0
        return shares_by_hand(pattern, 1, max_offset)

    with pytest.raises(AssertionError, match=r"on a pure previous-token head .* your shares are \[0\.000, 0\.889"):
        checks.positional.check_argmax_offset_shares(counts_every_query)


def test_offset_checker_names_the_bins_when_the_length_is_wrong():
    with pytest.raises(AssertionError, match=r"you return 5 shares; expected 6, one per bin"):
        checks.positional.check_argmax_offset_shares(lambda p, f, m: shares_by_hand(p, f, m)[:-1])


def test_offset_checker_reaches_the_random_cases():
    def sink_first_only_when_pure(pattern, first_query, max_offset):
        out = shares_by_hand(pattern, first_query, max_offset)
        is_random = not torch.isin(pattern, torch.tensor([0.0, 1.0])).all() and pattern.shape[0] == 12
        return out.roll(1) if is_random else out

    with pytest.raises(AssertionError, match=r"on random pattern \(seed 0"):
        checks.positional.check_argmax_offset_shares(sink_first_only_when_pure)


def rule_by_hand(random: torch.Tensor, prose: torch.Tensor) -> list:
    n_layers, n_heads, _ = random.shape
    return [(layer, head) for layer in range(n_layers) for head in range(n_heads)
            if any(random[layer, head, b] >= 0.9 and prose[layer, head, b] >= 0.9 for b in range(5))]


def test_rule_checker_accepts_a_correct_rule_in_any_order():
    assert checks.positional.check_positional_heads(rule_by_hand) == "All 6 screens match the reference."
    assert checks.positional.check_positional_heads(lambda r, p: rule_by_hand(r, p)[::-1]).startswith("All 6")


def test_rule_checker_catches_a_rule_that_lets_each_text_pick_its_own_bin():
    def own_bins(random, prose):
        fixed = slice(0, 5)
        ok = (random[..., fixed].max(-1).values >= 0.9) & (prose[..., fixed].max(-1).values >= 0.9)
        return [tuple(h) for h in ok.nonzero().tolist()]

    with pytest.raises(AssertionError, match=r"changes bin with the text .* you pass \['L1H2'\]; expected \[\]"):
        checks.positional.check_positional_heads(own_bins)


def test_rule_checker_catches_a_rule_that_counts_the_elsewhere_bin():
    def every_bin(random, prose):
        ok = (torch.minimum(random, prose) >= 0.9).any(-1)
        return [tuple(h) for h in ok.nonzero().tolist()]

    with pytest.raises(AssertionError, match=r"always 'elsewhere' .* you pass \['L0H1'\]"):
        checks.positional.check_positional_heads(every_bin)


def test_verdict_reports_a_stub_as_not_attempted():
    def stub(random, prose):
        raise NotImplementedError("your code here")

    assert checks.verdict(checks.positional.check_positional_heads, stub).startswith(checks.NOT_ATTEMPTED)
