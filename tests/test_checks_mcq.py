"""Tests for helpers.checks.mcq: each exercise checker accepts a correct answer written out by hand, and rejects
a classic mistake with an AssertionError that names the case it failed on."""

import math

import pytest
import torch

from helpers import checks


# --- check_label_entropy ----------------------------------------------------------------------------------

def label_entropy_by_hand(label_attention: torch.Tensor) -> float:
    """Per prompt: shares of the label attention, -sum p log p with 0 log 0 = 0, over log n; then the mean."""
    items, options = label_attention.shape
    total = 0.0
    for row in label_attention.tolist():
        mass = sum(row)
        total += -sum(a / mass * math.log(a / mass) for a in row if a > 0) / math.log(options)
    return total / items


def test_label_entropy_checker_accepts_a_correct_score():
    assert checks.mcq.check_label_entropy(label_entropy_by_hand) == "All 7 label-entropy cases match the reference."


def test_label_entropy_checker_catches_a_score_without_renormalising():
    def raw_attention(label_attention):  # the entropy of the raw attention, not of its shares over the labels
        p = label_attention.clamp(min=1e-12)
        return (-(label_attention * p.log()).sum(-1) / math.log(label_attention.shape[-1])).mean().item()

    with pytest.raises(AssertionError, match=r"on a head that reads the four labels evenly .* your entropy is "
                                             r"0\.6644; expected 1\.0000"):
        checks.mcq.check_label_entropy(raw_attention)


def test_label_entropy_checker_catches_nan_from_zero_log_zero():
    def naive(label_attention):
        p = label_attention / label_attention.sum(-1, keepdim=True)
        return (-(p * p.log()).sum(-1) / math.log(p.shape[-1])).mean().item()

    with pytest.raises(AssertionError, match=r"on a head that looks at one label only .* your entropy is nan"):
        checks.mcq.check_label_entropy(naive)


def test_label_entropy_checker_catches_a_fixed_log_4():
    def always_log_4(label_attention):
        p = label_attention / label_attention.sum(-1, keepdim=True)
        terms = torch.where(p > 0, p * p.log(), torch.zeros_like(p))
        return (-terms.sum(-1) / math.log(4)).mean().item()

    with pytest.raises(AssertionError, match=r"on a two-option question read evenly .* your entropy is 0\.5000; "
                                             r"expected 1\.0000"):
        checks.mcq.check_label_entropy(always_log_4)


# --- check_constant_rule ----------------------------------------------------------------------------------

def is_constant_by_hand(label_attention: torch.Tensor, correct: torch.Tensor) -> bool:
    items, options = label_attention.shape
    mass = sum(sum(row) for row in label_attention.tolist()) / items
    on_correct = sum(label_attention[i, int(correct[i])].item() / label_attention[i].sum().item()
                     for i in range(items)) / items
    return mass >= 0.1 and label_entropy_by_hand(label_attention) >= 0.9 and abs(on_correct - 1 / options) <= 0.1


def test_constant_rule_checker_accepts_a_correct_rule():
    assert checks.mcq.check_constant_rule(is_constant_by_hand) == "All 6 Constant-rule cases match the reference."


def test_constant_rule_checker_catches_a_rule_without_the_floor():
    def entropy_and_answer_only(label_attention, correct):
        options = label_attention.shape[1]
        shares = label_attention / label_attention.sum(-1, keepdim=True)
        on_correct = shares[torch.arange(len(correct)), correct].mean().item()
        return label_entropy_by_hand(label_attention) >= 0.9 and abs(on_correct - 1 / options) <= 0.1

    with pytest.raises(AssertionError, match=r"on an even reader with only 8 % of its attention on the labels your "
                                             r"rule says True; expected False \(label mass 0\.08"):
        checks.mcq.check_constant_rule(entropy_and_answer_only)


def test_constant_rule_checker_catches_a_rule_that_ignores_the_answer():
    def entropy_only(label_attention, correct):
        return label_attention.sum(-1).mean() >= 0.1 and label_entropy_by_hand(label_attention) >= 0.9

    with pytest.raises(AssertionError, match=r"on a near-even head that leans towards the correct label your rule "
                                             r"says True; expected False .* correct label 0\.40"):
        checks.mcq.check_constant_rule(entropy_only)


# --- check_favourite_share --------------------------------------------------------------------------------

def favourite_share_by_hand(label_attention: torch.Tensor, correct: torch.Tensor) -> tuple[int, float]:
    items, options = label_attention.shape
    shares = [[a / sum(row) for a in row] for row in label_attention.tolist()]
    means = [sum(row[o] for row in shares) / items for o in range(options)]
    favourite = max(range(options), key=lambda o: means[o])
    wrong = [row[favourite] for row, c in zip(shares, correct.tolist()) if c != favourite]
    return favourite, sum(wrong) / len(wrong)


def test_favourite_share_checker_accepts_a_correct_answer():
    message = checks.mcq.check_favourite_share(favourite_share_by_hand)
    assert message == "All 6 favourite-letter cases match the reference."


def test_favourite_share_checker_accepts_tensors_for_the_answer():
    def as_tensors(label_attention, correct):
        favourite, share = favourite_share_by_hand(label_attention, correct)
        return torch.tensor(favourite), torch.tensor(share)

    assert checks.mcq.check_favourite_share(as_tensors).startswith("All 6")


def test_favourite_share_checker_catches_a_share_over_every_prompt():
    def over_every_prompt(label_attention, correct):
        favourite, _ = favourite_share_by_hand(label_attention, correct)
        shares = label_attention / label_attention.sum(-1, keepdim=True)
        return favourite, shares[:, favourite].mean().item()

    with pytest.raises(AssertionError, match=r"on a head that follows the correct label your answer is label 0 with "
                                             r"share 0\.3250; expected label 0 with share 0\.1000"):
        checks.mcq.check_favourite_share(over_every_prompt)


def test_favourite_share_checker_catches_raw_attention_instead_of_shares():
    def raw(label_attention, correct):
        favourite = int(label_attention.mean(0).argmax())
        return favourite, label_attention[correct != favourite, favourite].mean().item()

    with pytest.raises(AssertionError, match=r"on a head with 5 % of its attention on the labels, mostly on C your "
                                             r"answer is label 2 with share 0\.0300; "
                                             r"expected label 2 with share 0\.6000"):
        checks.mcq.check_favourite_share(raw)


# --- check_binomial_p -------------------------------------------------------------------------------------

def binomial_p_by_hand(successes: int, trials: int, chance: float) -> float:
    total = 0.0
    for k in range(successes, trials + 1):
        ways = math.factorial(trials) // (math.factorial(k) * math.factorial(trials - k))
        total += ways * chance**k * (1 - chance) ** (trials - k)
    return total


def test_binomial_checker_accepts_a_correct_p():
    assert checks.mcq.check_binomial_p(binomial_p_by_hand) == "All 6 binomial cases match the reference."


def test_binomial_checker_catches_the_probability_of_exactly_k():
    def exactly(successes, trials, chance):
        return math.comb(trials, successes) * chance**successes * (1 - chance) ** (trials - successes)

    with pytest.raises(AssertionError, match=r"for 16 right of 60 at chance 0\.25 your p is 0\.110839; "
                                             r"expected 0\.431203"):
        checks.mcq.check_binomial_p(exactly)


def test_binomial_checker_catches_a_strict_inequality():
    def more_than(successes, trials, chance):
        return binomial_p_by_hand(successes + 1, trials, chance) if successes < trials else 0.0

    with pytest.raises(AssertionError, match=r"for 16 right of 60 at chance 0\.25 your p is 0\.320364"):
        checks.mcq.check_binomial_p(more_than)


# --- check_negative_attention_score -----------------------------------------------------------------------

def nas_by_hand(pattern: torch.Tensor, yes_key: int, no_key: int, first_query: int) -> float:
    total = 0.0
    for q in range(first_query, pattern.shape[0]):
        on_no, on_yes = pattern[q, no_key].item(), pattern[q, yes_key].item()
        total += (on_no + on_yes) * math.log((on_no + 1e-6) / (on_yes + 1e-6))
    return total


def test_nas_checker_accepts_a_correct_score():
    assert checks.mcq.check_negative_attention_score(nas_by_hand) == "All 6 NAS cases match the reference."


def test_nas_checker_catches_swapped_keys():
    def yes_over_no(pattern, yes_key, no_key, first_query):
        return nas_by_hand(pattern, no_key, yes_key, first_query)

    with pytest.raises(AssertionError,
                       match=r"on random pattern \(seed 0\), Yes at 1, No at 3, from query 5 your NAS is"):
        checks.mcq.check_negative_attention_score(yes_over_no)


def test_nas_checker_catches_a_sum_that_starts_one_query_late():
    def one_late(pattern, yes_key, no_key, first_query):
        return nas_by_hand(pattern, yes_key, no_key, first_query + 1)

    with pytest.raises(AssertionError, match=r"on random pattern \(seed 0\)"):
        checks.mcq.check_negative_attention_score(one_late)


# --- check_mirror_pull ------------------------------------------------------------------------------------

def mirror_pull_by_hand(bias: torch.Tensor) -> list[float]:
    values = bias.tolist()
    return [values[i] - (-values[i + 1]) for i in range(0, len(values), 2)]


def test_mirror_checker_accepts_a_correct_answer_as_a_list():
    assert checks.mcq.check_mirror_pull(mirror_pull_by_hand) == "All 5 mirror-pair cases match the reference."


def test_mirror_checker_catches_a_sign_error_on_the_mirror():
    def difference(bias):
        return bias[0::2] - bias[1::2]

    with pytest.raises(AssertionError, match=r'on a model that leans 1 logit towards "No" on every question .* your '
                                             r"values are \[0\.00, 0\.00, 0\.00, 0\.00\]; expected \[2\.00"):
        checks.mcq.check_mirror_pull(difference)


def test_mirror_checker_catches_one_value_for_all_pairs():
    with pytest.raises(AssertionError, match=r"your answer has 1 values; expected one per mirror pair, 4"):
        checks.mcq.check_mirror_pull(lambda bias: (bias[0::2] + bias[1::2]).mean())


# --- check_correct_vs_others ------------------------------------------------------------------------------

def correct_vs_others_by_hand(values: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    out = []
    for row, c in zip(values.tolist(), correct.tolist()):
        others = [v for i, v in enumerate(row) if i != c]
        out.append(row[c] - sum(others) / len(others))
    return torch.tensor(out)


def test_correct_vs_others_checker_accepts_a_correct_difference():
    message = checks.mcq.check_correct_vs_others(correct_vs_others_by_hand)
    assert message == "All 5 correct-vs-others cases match the reference."


def test_correct_vs_others_checker_catches_the_mean_of_all_options():
    def minus_mean_of_all(values, correct):
        return values[torch.arange(len(correct)), correct] - values.mean(-1)

    with pytest.raises(AssertionError, match=r"on one prompt, the correct option 2 logits up .* your differences "
                                             r"are \[1\.50\]; expected \[2\.00\]"):
        checks.mcq.check_correct_vs_others(minus_mean_of_all)


def test_correct_vs_others_checker_catches_the_margin_over_the_best_other():
    def margin(values, correct):
        masked = values.clone()
        masked[torch.arange(len(correct)), correct] = -torch.inf
        return values[torch.arange(len(correct)), correct] - masked.max(-1).values

    with pytest.raises(AssertionError, match=r"on the same prompt with option B correct .* your differences are "
                                             r"\[-2\.00\]; expected \[-0\.67\]"):
        checks.mcq.check_correct_vs_others(margin)


# --- check_amplification_rule -----------------------------------------------------------------------------

def amplification_by_hand(dla: torch.Tensor, dla_null: torch.Tensor, recent_mass: torch.Tensor) -> torch.Tensor:
    pooled = sorted(dla_null.flatten().tolist())
    position = 0.95 * (len(pooled) - 1)  # linear interpolation between the two nearest ranks
    low = int(position)
    high = min(low + 1, len(pooled) - 1)
    cut = max(0.1, pooled[low] + (position - low) * (pooled[high] - pooled[low]))
    mask = torch.zeros_like(dla, dtype=torch.bool)
    for layer in range(dla.shape[0]):
        for head in range(dla.shape[1]):
            mask[layer, head] = dla[layer, head] > cut and recent_mass[layer, head] >= 0.5
    return mask


def test_amplification_checker_accepts_a_correct_rule():
    message = checks.mcq.check_amplification_rule(amplification_by_hand)
    assert message == "All 4 Amplification-rule cases match the reference."


def test_amplification_checker_catches_a_rule_without_the_decoy():
    def floor_only(dla, dla_null, recent_mass):
        return (dla > 0.1) & (recent_mass >= 0.5)

    with pytest.raises(AssertionError, match=r"on a model whose decoy letters also get large DLA your rule picks "
                                             r"heads \[\[1, 2\], \[2, 0\]\]; expected \[\[2, 0\]\]"):
        checks.mcq.check_amplification_rule(floor_only)


def test_amplification_checker_catches_a_rule_without_the_floor():
    def decoy_only(dla, dla_null, recent_mass):
        return (dla > torch.quantile(dla_null.flatten(), 0.95)) & (recent_mass >= 0.5)

    with pytest.raises(AssertionError, match=r"on a model with small DLA everywhere your rule picks heads "
                                             r"\[\[0, 0\], .*; expected \[\]"):
        checks.mcq.check_amplification_rule(decoy_only)


def test_amplification_checker_reports_a_wrong_shape():
    with pytest.raises(AssertionError, match=r"your mask has shape \(12,\); expected \(3, 4\)"):
        checks.mcq.check_amplification_rule(
            lambda dla, null, recent: amplification_by_hand(dla, null, recent).flatten())


def test_a_checker_clones_what_it_hands_over():
    def zeroes_then_answers(values, correct):
        answer = correct_vs_others_by_hand(values, correct)
        values.zero_()
        correct.zero_()
        return answer

    assert checks.mcq.check_correct_vs_others(zeroes_then_answers).startswith("All 5")
