"""Tests for helpers.checks.mcq_answers: each exercise checker accepts a correct answer written out by hand,
and rejects a classic mistake with an AssertionError that names the case it failed on."""

import math

import pytest
import torch

from helpers import checks

answers = checks.mcq_answers


def share_by_hand(attention: torch.Tensor, correct: torch.Tensor) -> float:
    """One head: the correct option's share of the attention on the options, prompt by prompt, then the mean."""
    shares = []
    for row, right in zip(attention.tolist(), correct.tolist()):
        total = sum(row)
        shares.append(row[right] / total if total > 0 else 0.0)
    return sum(shares) / len(shares)


# --- check_content_share ----------------------------------------------------------------------------------

def test_content_share_checker_accepts_a_loop_over_prompts():
    assert answers.check_content_share(share_by_hand) == "All 6 content-share cases match the reference."


def test_content_share_checker_catches_raw_attention_instead_of_a_share():
    def not_normalised(attention, correct):  # the attention on the correct word, not its share
        return attention.gather(-1, correct[:, None]).mean().item()

    with pytest.raises(AssertionError, match=r"on a head that reads the options only weakly \(5 %, all on the "
                                             r"correct one\) your share is 0\.0500; expected 1\.0000"):
        answers.check_content_share(not_normalised)


def test_content_share_checker_catches_a_ratio_of_means():
    def ratio_of_sums(attention, correct):  # pools the prompts before dividing
        return (attention.gather(-1, correct[:, None]).sum() / attention.sum()).item()

    with pytest.raises(AssertionError, match=r"changes from prompt to prompt your share is 0\.8200; expected 0\.5500"):
        answers.check_content_share(ratio_of_sums)


def test_content_share_checker_reports_a_nan_from_a_prompt_with_no_attention():
    def divides_by_zero(attention, correct):
        shares = attention / attention.sum(-1, keepdim=True)
        return shares.gather(-1, correct[:, None]).mean().item()

    with pytest.raises(AssertionError, match=r"reads no option at all \(it counts as 0\) your share is nan; "
                                             r"expected 0\.5000"):
        answers.check_content_share(divides_by_zero)


# --- check_gatherer_rule ----------------------------------------------------------------------------------

def gatherer_rule_by_hand(mass, share, null):
    values = sorted(null.flatten().tolist())
    position = 0.95 * (len(values) - 1)  # linear interpolation between the two nearest ranks
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    cutoff = values[low] + (values[high] - values[low]) * (position - low)
    rows = []
    for layer in range(share.shape[0]):
        rows.append([float(mass[layer, head]) >= 0.1 and float(share[layer, head]) > 0.6
                     and float(share[layer, head]) > cutoff for head in range(share.shape[1])])
    return torch.tensor(rows)


def test_gatherer_rule_checker_accepts_a_loop_over_heads():
    assert answers.check_gatherer_rule(gatherer_rule_by_hand) == "All 5 Content Gatherer rule cases match the reference."


def test_gatherer_rule_checker_catches_a_rule_without_the_floor():
    def no_floor(mass, share, null):
        return (share > 0.6) & (share > torch.quantile(null.flatten(), 0.95))

    with pytest.raises(AssertionError, match=r"on a head that barely reads the contents .* your rule marks heads "
                                             r"\[\[0, 1\], \[1, 2\]\]; expected \[\[0, 1\]\]"):
        answers.check_gatherer_rule(no_floor)


def test_gatherer_rule_checker_catches_a_rule_that_forgets_the_decoys():
    def no_control(mass, share, null):
        return (mass >= 0.1) & (share > 0.6)

    with pytest.raises(AssertionError, match=r"on decoy shares as high as real ones .* your rule marks heads "
                                             r"\[\[1, 0\], \[1, 3\]\]; expected \[\[1, 3\]\]"):
        answers.check_gatherer_rule(no_control)


def test_gatherer_rule_checker_reports_a_wrong_shape():
    with pytest.raises(AssertionError, match=r"your mask has shape \(8,\); expected \(2, 4\)"):
        answers.check_gatherer_rule(lambda mass, share, null: gatherer_rule_by_hand(mass, share, null).flatten())


# --- check_correct_share ----------------------------------------------------------------------------------

def correct_share_by_hand(attention, correct):
    n_layers, n_heads = attention.shape[:2]
    return torch.tensor([[share_by_hand(attention[layer, head], correct) for head in range(n_heads)]
                         for layer in range(n_layers)])


def test_correct_share_checker_accepts_a_loop_over_heads():
    assert answers.check_correct_share(correct_share_by_hand) == "All 4 correct-share cases match the reference."


def test_correct_share_checker_names_the_head_where_raw_attention_is_returned():
    def not_normalised(attention, correct):
        index = correct.reshape(1, 1, -1, 1).expand(*attention.shape[:-1], 1)
        return attention.gather(-1, index).squeeze(-1).mean(-1)

    with pytest.raises(AssertionError, match=r"on four heads .* your shares differ at \(layer, head\) \(0, 2\): "
                                             r"got 0\.0500, expected 1\.0000"):
        answers.check_correct_share(not_normalised)


def test_correct_share_checker_reports_a_share_not_averaged_over_prompts():
    with pytest.raises(AssertionError, match=r"your shares have shape \(1, 3, 4, 4\); expected \(1, 3\)"):
        answers.check_correct_share(lambda attention, correct: attention / attention.sum(-1, keepdim=True))


# --- check_binomial_p -------------------------------------------------------------------------------------

def binomial_p_by_hand(successes, trials, chance):
    total = 0.0
    for k in range(successes, trials + 1):
        total += math.factorial(trials) / (math.factorial(k) * math.factorial(trials - k)) \
            * chance ** k * (1 - chance) ** (trials - k)
    return total


def test_binomial_checker_accepts_a_sum_over_the_tail():
    assert answers.check_binomial_p(binomial_p_by_hand) == "All 6 binomial cases match the reference."


def test_binomial_checker_catches_the_probability_of_exactly_k():
    def exactly(successes, trials, chance):
        return math.comb(trials, successes) * chance ** successes * (1 - chance) ** (trials - successes)

    with pytest.raises(AssertionError, match=r"for 3 of 4 correct at chance 0\.25 your p is 0\.046875; "
                                             r"expected 0\.0507812 \(the probability of at least 3 hits\)"):
        answers.check_binomial_p(exactly)


def test_binomial_checker_catches_a_tail_that_leaves_out_k():
    def strictly_more(successes, trials, chance):
        return binomial_p_by_hand(successes + 1, trials, chance) if successes < trials else 0.0

    with pytest.raises(AssertionError, match=r"for 3 of 4 correct at chance 0\.25 your p is 0\.00390625"):
        answers.check_binomial_p(strictly_more)


# --- check_layer_projection -------------------------------------------------------------------------------

def layer_projection_by_hand(dla, correct):
    n_layers, n_heads, n_items, n_options = dla.shape
    out = torch.zeros(n_layers, n_items)
    for layer in range(n_layers):
        for item in range(n_items):
            per_option = [sum(float(dla[layer, head, item, option]) for head in range(n_heads))
                          for option in range(n_options)]
            right = int(correct[item])
            others = [v for option, v in enumerate(per_option) if option != right]
            out[layer, item] = per_option[right] - sum(others) / len(others)
    return out


def test_layer_projection_checker_accepts_a_loop():
    assert answers.check_layer_projection(layer_projection_by_hand) == "All 5 layer-projection cases match the reference."


def test_layer_projection_checker_catches_a_mean_over_heads():
    def averages_heads(dla, correct):
        return layer_projection_by_hand(dla.mean(1, keepdim=True), correct)

    with pytest.raises(AssertionError, match=r"on one head in layer 1 that raises the correct option by 1 your "
                                             r"projection differs at \(layer, item\) \(1, 0\): got 0\.5000, "
                                             r"expected 1\.0000"):
        answers.check_layer_projection(averages_heads)


def test_layer_projection_checker_catches_the_mean_of_all_options():
    def minus_mean_of_all(dla, correct):
        summed = dla.sum(1)
        chosen = summed.gather(-1, correct.reshape(1, -1, 1).expand(summed.shape[0], -1, 1)).squeeze(-1)
        return chosen - summed.mean(-1)

    with pytest.raises(AssertionError, match=r"got 0\.7500, expected 1\.0000"):
        answers.check_layer_projection(minus_mean_of_all)


# --- check_recovered --------------------------------------------------------------------------------------

def recovered_by_hand(preference, clean_target, clean_source):
    n_items = len(clean_target)
    target = sum(clean_target.tolist()) / n_items
    gap = sum(clean_source.tolist()) / n_items - target
    return torch.tensor([(sum(row) / n_items - target) / gap for row in preference.tolist()])


def test_recovered_checker_accepts_a_loop():
    assert answers.check_recovered(recovered_by_hand) == "All 4 format-switch cases match the reference."


def test_recovered_checker_catches_a_mean_of_per_prompt_ratios():
    def ratio_per_prompt(preference, clean_target, clean_source):
        return ((preference - clean_target) / (clean_source - clean_target)).mean(-1)

    with pytest.raises(AssertionError, match=r"on prompts with very different gaps \(average before dividing\) "
                                             r"your shares differ at layer 0: got 0\.5500, expected 0\.9182"):
        answers.check_recovered(ratio_per_prompt)


def test_recovered_checker_catches_dividing_by_the_source_alone():
    def over_source(preference, clean_target, clean_source):
        return (preference.mean(-1) - clean_target.mean()) / clean_source.mean()

    with pytest.raises(AssertionError, match=r"on patching that restores nothing, half, and everything your shares "
                                             r"differ at layer 1: got 0\.7500, expected 0\.5000"):
        answers.check_recovered(over_source)


def test_checkers_clone_what_they_pass():
    def zeroes_then_answers(attention, correct):
        answer = share_by_hand(attention, correct)
        attention.zero_()
        return answer

    assert answers.check_content_share(zeroes_then_answers).startswith("All 6")
