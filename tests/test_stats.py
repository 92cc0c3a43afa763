"""Tests for helpers.stats on synthetic samples whose answer is known in advance."""

import numpy as np
import pytest
import torch

from helpers.stats import (
    Estimate,
    GateResult,
    behaviour_gate,
    bootstrap_ci,
    null_threshold,
    paired_difference,
    permutation_test,
    sign_flip_test,
    unpaired_difference,
)


def normal(n: int, mean: float, seed: int, sd: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, sd, size=n)


# --- Estimate ------------------------------------------------------------------------------------


def test_estimate_prints_mean_and_interval_and_knows_what_it_excludes():
    estimate = Estimate(mean=0.42, lower=0.38, upper=0.47, n=50, level=0.95)
    assert str(estimate) == "0.42 [0.38, 0.47]"
    assert estimate.excludes(0.0) and estimate.excludes(0.5)
    assert not estimate.excludes(0.40)


def test_estimate_prints_enough_decimals_for_a_narrow_or_small_interval():
    assert str(Estimate(0.4213, 0.4193, 0.4233, 50, 0.95)) == "0.421 [0.419, 0.423]"
    assert str(Estimate(0.0012, 0.0011, 0.0013, 50, 0.95)) == "0.0012 [0.0011, 0.0013]"


def test_estimate_is_frozen():
    with pytest.raises(AttributeError):
        Estimate(0.0, 0.0, 0.0, 2, 0.95).mean = 1.0  # type: ignore[misc]


# --- bootstrap -----------------------------------------------------------------------------------


def test_bootstrap_of_a_constant_sample_is_a_point():
    estimate = bootstrap_ci(torch.full((20,), 0.1))
    assert estimate.lower == estimate.mean == estimate.upper == pytest.approx(0.1, abs=1e-7)
    assert estimate.lower == estimate.upper
    assert estimate.n == 20 and estimate.level == 0.95


def test_bootstrap_interval_covers_the_true_mean_of_a_large_normal_sample():
    estimate = bootstrap_ci(normal(2000, mean=3.0, seed=1), seed=0)
    assert estimate.lower < 3.0 < estimate.upper
    # Width should be close to 2 * 1.96 * sd / sqrt(n) = 0.0877.
    assert 0.07 < estimate.upper - estimate.lower < 0.11


def test_bootstrap_accepts_tensor_array_and_list_alike():
    values = [1.0, 2.0, 4.0, 8.0]
    expected = bootstrap_ci(values, seed=3)
    assert bootstrap_ci(np.array(values), seed=3) == expected
    assert bootstrap_ci(torch.tensor(values), seed=3) == expected


def test_bootstrap_is_deterministic_for_a_seed_and_varies_with_it():
    values = normal(30, 0.0, seed=2)
    assert bootstrap_ci(values, seed=5) == bootstrap_ci(values, seed=5)
    assert bootstrap_ci(values, seed=5) != bootstrap_ci(values, seed=6)


def test_bootstrap_does_not_touch_the_global_rng():
    torch.manual_seed(0)
    np.random.seed(0)
    before = (torch.rand(1).item(), np.random.rand())
    torch.manual_seed(0)
    np.random.seed(0)
    bootstrap_ci(normal(30, 0.0, seed=2))
    assert (torch.rand(1).item(), np.random.rand()) == before


def test_higher_level_gives_a_wider_interval():
    values = normal(50, 0.0, seed=4)
    narrow, wide = bootstrap_ci(values, level=0.5), bootstrap_ci(values, level=0.99)
    assert wide.lower < narrow.lower and narrow.upper < wide.upper


def test_paired_difference_is_the_bootstrap_of_the_differences():
    a, b = normal(40, 1.0, seed=5), normal(40, 0.0, seed=6)
    assert paired_difference(a, b, seed=1) == bootstrap_ci(a - b, seed=1)


def test_unpaired_difference_covers_the_true_difference():
    estimate = unpaired_difference(normal(500, 2.0, seed=7), normal(300, 1.0, seed=8))
    assert estimate.lower < 1.0 < estimate.upper
    assert estimate.n == 800


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ([1.0], r"1 value\(s\); expected at least 2"),
        (np.ones((3, 4)), r"1-D sample.*\(3, 4\)"),
        ([1.0, float("nan"), 2.0], r"1 non-finite value.*index 1"),
        (["a", "b"], "1-D sequence of numbers"),
    ],
)
def test_bootstrap_rejects_unusable_samples_with_a_helpful_message(values, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_ci(values)


def test_bootstrap_rejects_bad_level_and_n_boot():
    with pytest.raises(ValueError, match=r"level must be strictly between 0 and 1.*got 95"):
        bootstrap_ci([1.0, 2.0], level=95)
    with pytest.raises(ValueError, match=r"n_boot must be a positive integer; got 0"):
        bootstrap_ci([1.0, 2.0], n_boot=0)


def test_paired_difference_names_both_lengths():
    with pytest.raises(ValueError, match=r"a has 3, b has 4"):
        paired_difference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])


# --- permutation and sign-flip tests -------------------------------------------------------------


def test_permutation_p_is_small_for_clearly_separated_samples():
    a, b = normal(30, 3.0, seed=1), normal(30, 0.0, seed=2)
    assert permutation_test(a, b, n_perm=2000) == pytest.approx(1 / 2001)
    assert permutation_test(b, a, n_perm=2000, alternative="less") == pytest.approx(1 / 2001)
    assert permutation_test(a, b, n_perm=2000, alternative="two-sided") < 0.001


def test_permutation_p_is_not_small_for_identical_distributions():
    a, b = normal(30, 0.0, seed=3), normal(30, 0.0, seed=4)
    assert permutation_test(a, b, n_perm=2000, alternative="two-sided") > 0.05


def test_permutation_p_is_large_in_the_wrong_direction():
    a, b = normal(30, 3.0, seed=1), normal(30, 0.0, seed=2)
    assert permutation_test(a, b, n_perm=2000, alternative="less") > 0.99


def test_p_values_are_never_zero_and_deterministic_for_a_seed():
    a, b = normal(20, 10.0, seed=1), normal(20, 0.0, seed=2)
    p = permutation_test(a, b, n_perm=99, seed=7)
    assert p == pytest.approx(0.01) and p == permutation_test(a, b, n_perm=99, seed=7)
    d = a - b
    assert sign_flip_test(d, n_perm=99, seed=7) == pytest.approx(0.01)
    q = normal(20, 0.1, seed=9)
    assert sign_flip_test(q, n_perm=500, seed=1) == sign_flip_test(q, n_perm=500, seed=1)


def test_sign_flip_p_is_small_for_a_clear_shift_and_not_for_symmetric_noise():
    assert sign_flip_test(normal(40, 1.0, seed=1), n_perm=2000) < 0.001
    assert sign_flip_test(normal(40, 0.0, seed=2), n_perm=2000, alternative="two-sided") > 0.05


def test_sign_flip_of_all_zero_differences_gives_p_one():
    assert sign_flip_test(np.zeros(10), n_perm=500) == 1.0


def test_tests_reject_an_unknown_alternative():
    with pytest.raises(ValueError, match=r"alternative must be one of.*got 'bigger'"):
        permutation_test([1.0, 2.0], [3.0, 4.0], alternative="bigger")
    with pytest.raises(ValueError, match=r"alternative must be one of.*got 'two_sided'"):
        sign_flip_test([1.0, 2.0], alternative="two_sided")


# --- null threshold ------------------------------------------------------------------------------


def test_null_threshold_is_the_quantile_of_all_pooled_scores():
    scores = torch.arange(100, dtype=torch.float32).reshape(10, 10) / 99  # 0, 1/99, ..., 1
    assert null_threshold(scores) == pytest.approx(0.95)
    assert null_threshold(scores, quantile=0.5) == pytest.approx(0.5)


def test_null_threshold_rejects_bad_quantile_and_nan():
    with pytest.raises(ValueError, match=r"quantile must be in \[0, 1\].*got 95"):
        null_threshold(torch.rand(2, 3), quantile=95)
    with pytest.raises(ValueError, match=r"1 NaN/inf value\(s\) of 4"):
        null_threshold(torch.tensor([[0.1, float("nan")], [0.2, 0.3]]))
    with pytest.raises(ValueError, match="empty"):
        null_threshold(np.array([]))


# --- behaviour gate ------------------------------------------------------------------------------


def test_gate_passes_on_a_clear_paired_effect_and_says_so():
    metric, null = normal(50, 1.0, seed=1, sd=0.2), normal(50, 0.0, seed=2, sd=0.2)
    gate = behaviour_gate(metric, null, paired=True, name="copying", metric_name="accuracy",
                          null_name="on shuffled prompts", n_perm=2000, n_boot=500)
    assert isinstance(gate, GateResult)
    assert gate.passed and gate.p_value < 0.01 and gate.difference.lower > 0
    summary = gate.summary()
    assert summary.startswith("PASS: copying: accuracy ")
    assert "on shuffled prompts; difference " in summary and "p < 0.001 (n = 50)" in summary
    assert str(gate) == summary


def test_gate_fails_when_there_is_no_effect_and_says_why():
    metric, null = normal(50, 0.0, seed=3), normal(50, 0.0, seed=4)
    gate = behaviour_gate(metric, null, paired=False, name="induction", n_perm=2000, n_boot=500)
    assert not gate.passed
    summary = gate.summary()
    assert summary.startswith("FAIL: behaviour absent at this scale (induction): ")
    assert "p is not below alpha = 0.01" in summary and "(n = 50 vs 50)" in summary


def test_gate_respects_the_direction_of_a_loss():
    first_half, repeated_half = normal(50, 8.0, seed=5, sd=0.3), normal(50, 1.2, seed=6, sd=0.3)
    loss_gate = behaviour_gate(repeated_half, first_half, paired=True, higher_is_better=False,
                               metric_name="loss on the repeated half", null_name="on the first half",
                               n_perm=2000, n_boot=500)
    assert loss_gate.passed and loss_gate.difference.upper < 0
    assert "loss on the repeated half" in loss_gate.summary()
    wrong_way = behaviour_gate(repeated_half, first_half, paired=True, higher_is_better=True,
                               n_perm=2000, n_boot=500)
    assert not wrong_way.passed and wrong_way.p_value > 0.99
    assert "lower bound is not above 0" in wrong_way.summary()


def test_gate_fails_a_significant_effect_smaller_than_min_effect():
    metric, null = normal(50, 0.2, seed=7, sd=0.1), normal(50, 0.0, seed=8, sd=0.1)
    assert behaviour_gate(metric, null, paired=True, n_perm=2000, n_boot=500).passed
    small = behaviour_gate(metric, null, paired=True, min_effect=0.5, n_perm=2000, n_boot=500)
    assert not small.passed and small.p_value < 0.01
    assert "lower bound is not above 0.5" in small.summary()
    loss = behaviour_gate(null, metric, paired=True, higher_is_better=False, min_effect=0.5,
                          n_perm=2000, n_boot=500)
    assert not loss.passed and "upper bound is not below -0.5" in loss.summary()


def test_gate_is_deterministic_for_a_seed():
    metric, null = normal(20, 0.3, seed=9), normal(20, 0.0, seed=10)
    first = behaviour_gate(metric, null, paired=False, seed=4, n_perm=500, n_boot=300, alpha=0.05)
    assert first == behaviour_gate(metric, null, paired=False, seed=4, n_perm=500, n_boot=300, alpha=0.05)


def test_gate_rejects_bad_inputs_with_helpful_messages():
    ok = [0.1, 0.2, 0.3]
    with pytest.raises(ValueError, match=r"metric has 1 value\(s\); expected at least 2"):
        behaviour_gate([0.5], ok, paired=False)
    with pytest.raises(ValueError, match=r"metric has 3, null has 2.*unpaired"):
        behaviour_gate(ok, [0.1, 0.2], paired=True)
    with pytest.raises(ValueError, match=r"alpha must be strictly between 0 and 1.*got 1.5"):
        behaviour_gate(ok, ok, paired=True, alpha=1.5)
    with pytest.raises(ValueError, match=r"cannot be reached with n_perm = 50.*at least 1000"):
        behaviour_gate(ok, ok, paired=True, alpha=0.001, n_perm=50)
    with pytest.raises(ValueError, match=r"min_effect is a magnitude.*got -0.1.*higher_is_better=False"):
        behaviour_gate(ok, ok, paired=True, min_effect=-0.1)
