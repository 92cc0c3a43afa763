"""Tests for helpers.screens: every head scored against its control, and the pass rule."""

import pytest
import torch

from helpers import scores, screens
from synthetic import mean_of_inverse_positions, one_hot_pattern, uniform_causal


def make_screen(scores_grid, null_grid, threshold: float) -> screens.Screen:
    return screens.Screen(family="test", scores=torch.tensor(scores_grid), null=torch.tensor(null_grid),
                          threshold=threshold, baseline=0.1)


# --- Screen -----------------------------------------------------------------------------------------------

def test_a_head_passes_on_its_own_control_not_on_other_heads():
    # L0H1 scores 0.6 against its own control of 0.4 (ratio 1.5 < 2): it fails, although 0.6 is far above
    # what most heads score on the control; L1H1 passes at 0.35 with a control of 0.1
    screen = make_screen([[0.9, 0.6, 0.1], [0.5, 0.35, 0.0]], [[0.1, 0.4, 0.0], [0.25, 0.1, 0.0]], threshold=0.2)
    assert screen.passing == [(0, 0), (1, 0), (1, 1)]


def test_the_threshold_rejects_heads_that_beat_their_control():
    screen = make_screen([[0.49, 0.5], [0.75, 0.25]], [[0.0, 0.0], [0.0, 0.1]], threshold=0.5)
    # 0.49 and 0.25 beat their controls twice over but not the pre-registered 0.5; 0.5 is "at least"
    assert screen.passing == [(1, 0), (0, 1)]


def test_the_ratio_is_at_least_and_can_be_set():
    screen = make_screen([[0.5, 0.6]], [[0.25, 0.31]], threshold=0.1)
    assert screen.passing == [(0, 0)]  # 0.5 is exactly twice 0.25; 0.6 is less than twice 0.31
    strict = screens.Screen("x", torch.tensor([[0.5, 0.6]]), torch.tensor([[0.25, 0.0]]), threshold=0.1, baseline=0.1,
                            ratio=5.0)
    assert strict.passing == [(0, 1)]


def test_top_ranks_heads_by_score_whether_or_not_they_pass():
    screen = make_screen([[0.2, 0.7], [0.9, 0.1]], [[1.0, 1.0], [1.0, 1.0]], threshold=0.5)
    assert screen.passing == []
    assert screen.top(3) == [(1, 0), (0, 1), (0, 0)]


def test_summary_names_the_best_head_the_pass_count_and_both_lines():
    screen = make_screen([[0.2, 0.7, 0.1], [0.95, 0.1, 0.3]], [[0.1] * 3, [0.2] * 3], threshold=0.5)
    summary = screen.summary()
    assert "best L1H0 = 0.95 (control 0.20" in summary
    assert "test: 2 of 6 heads score >= 0.5 and >= 2x their own control score" in summary
    assert "over heads 0.20" in summary and "uniform attention: 0.10" in summary


def test_screen_finds_the_one_previous_token_head_in_hand_built_patterns():
    n_layers, batch, n_heads, seq_len = 2, 2, 3, 8
    patterns = uniform_causal(seq_len).expand(n_layers, batch, n_heads, seq_len, seq_len).clone()
    patterns[1, :, 2] = one_hot_pattern(seq_len, 1)  # L1H2 attends one step back
    control = uniform_causal(seq_len).expand(n_layers, batch, n_heads, seq_len, seq_len)
    targets = scores.previous_token_targets(batch, seq_len)

    found = screens.screen("previous-token", patterns, targets, control, targets, threshold=0.5)

    uniform = mean_of_inverse_positions(range(1, seq_len))
    expected = torch.full((n_layers, n_heads), uniform)
    expected[1, 2] = 1.0
    torch.testing.assert_close(found.scores, expected)
    torch.testing.assert_close(found.null, torch.full((n_layers, n_heads), uniform))
    assert found.baseline == pytest.approx(uniform)
    assert found.passing == [(1, 2)] and found.family == "previous-token" and found.threshold == 0.5


def test_screen_names_both_shapes_when_control_targets_do_not_fit():
    patterns = uniform_causal(6).expand(1, 2, 1, 6, 6)
    with pytest.raises(ValueError, match=r"targets \(2, 5, 5\) do not match .* \(2, 6, 6\)"):
        screens.screen("x", patterns, scores.previous_token_targets(2, 6), patterns,
                        scores.previous_token_targets(2, 5), threshold=0.5)
