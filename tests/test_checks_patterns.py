"""Tests for helpers.checks.patterns: each exercise checker accepts a correct answer written out by hand, and rejects
a wrong one with an AssertionError that names the case it failed on."""

import copy

import pytest
import torch

from helpers import checks


# --- check_previous_token_score ---------------------------------------------------------------------------

def previous_token_score_by_hand(pattern: torch.Tensor) -> float:
    """Mean attention from query q to key q - 1 over queries 1..n-1, as a plain loop."""
    seq_len = pattern.shape[0]
    return sum(pattern[q, q - 1].item() for q in range(1, seq_len)) / (seq_len - 1)


def test_previous_token_checker_accepts_a_correct_score():
    message = checks.patterns.check_previous_token_score(previous_token_score_by_hand)
    assert message == "All 6 previous-token cases match the reference."


def test_previous_token_checker_accepts_an_answer_returned_as_a_tensor():
    assert checks.patterns.check_previous_token_score(lambda pattern: pattern.diagonal(-1).mean()).startswith("All 6")


def test_previous_token_checker_names_the_case_a_self_attention_score_fails_on():
    def scores_the_diagonal(pattern):  # the classic slip: q -> q instead of q -> q - 1
        return pattern.diagonal().mean().item()

    with pytest.raises(AssertionError, match=r"on a pure previous-token head your score is 0\.1667; expected 1\.0000"):
        checks.patterns.check_previous_token_score(scores_the_diagonal)


def test_previous_token_checker_catches_a_score_that_counts_query_zero():
    def divides_by_every_query(pattern):  # averages over all n queries, though query 0 has no previous token
        return pattern.diagonal(-1).sum().item() / pattern.shape[0]

    with pytest.raises(AssertionError, match=r"on a pure previous-token head your score is 0\.8333; expected 1\.0000"):
        checks.patterns.check_previous_token_score(divides_by_every_query)


def test_previous_token_checker_reaches_the_random_cases():
    def right_only_on_structured_patterns(pattern):
        is_random = not torch.isin(pattern, torch.tensor([0.0, 1.0])).all() and pattern[2, 0] != pattern[2, 1]
        return previous_token_score_by_hand(pattern) + (0.5 if is_random else 0.0)

    with pytest.raises(AssertionError, match=r"on random pattern \(seed 0\) your score is"):
        checks.patterns.check_previous_token_score(right_only_on_structured_patterns)


def test_a_reader_function_that_edits_its_input_cannot_change_the_reference():
    def zeroes_then_scores(pattern):
        answer = previous_token_score_by_hand(pattern)
        pattern.zero_()
        return answer

    assert checks.patterns.check_previous_token_score(zeroes_then_scores).startswith("All 6")


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
    assert checks.patterns.check_induction_targets(induction_targets_by_hand) == "All 3 induction-target cases match the reference."


def test_induction_checker_accepts_a_nested_list_of_bools():
    assert checks.patterns.check_induction_targets(lambda tokens: induction_targets_by_hand(tokens).tolist()).startswith("All 3")


def test_induction_checker_names_the_case_and_positions_of_a_duplicate_token_mask():
    def marks_the_earlier_copy_itself(tokens):  # duplicate-token targets, not induction targets
        mask = tokens[:, None] == tokens[None, :]
        return mask & torch.ones(len(tokens), len(tokens), dtype=torch.bool).tril(-1)

    with pytest.raises(AssertionError, match=r"on a sequence repeated twice \(\[4, 1, 2, 3, 1, 2, 3\]\) your mask "
                                             r"differs at \(query, key\) = \[\[4, 1\], \[4, 2\]"):
        checks.patterns.check_induction_targets(marks_the_earlier_copy_itself)


def test_induction_checker_catches_a_mask_that_misses_a_third_occurrence():
    def only_the_first_earlier_copy(tokens):
        mask = induction_targets_by_hand(tokens)
        for q in range(len(tokens)):
            hits = mask[q].nonzero().flatten()
            mask[q, hits[1:]] = False
        return mask

    with pytest.raises(AssertionError, match=r"on a token repeated three times .* differs at \(query, key\) = \[\[4, 3\]\]"):
        checks.patterns.check_induction_targets(only_the_first_earlier_copy)


def test_induction_checker_reports_a_wrong_shape_before_comparing():
    with pytest.raises(AssertionError, match=r"on a sequence repeated twice your mask has shape \(6, 6\); expected \(7, 7\)"):
        checks.patterns.check_induction_targets(lambda tokens: induction_targets_by_hand(tokens)[1:, 1:])


# --- check_uniform_baseline -----------------------------------------------------------------------------

def test_uniform_baseline_checker_accepts_the_harmonic_formula():
    def by_formula(n):
        return sum(1 / (q + 1) for q in range(1, n)) / (n - 1)

    assert checks.patterns.check_uniform_baseline(by_formula) == "All 4 sequence lengths match the reference."


def test_uniform_baseline_checker_catches_averaging_over_query_zero_too():
    def over_every_query(n):
        return sum(1 / (q + 1) for q in range(1, n)) / n

    with pytest.raises(AssertionError, match=r"for n = 2 your baseline is 0\.2500; expected 0\.5000"):
        checks.patterns.check_uniform_baseline(over_every_query)


# --- check_phase_change_step ----------------------------------------------------------------------------

def phase_change_by_hand(steps, losses):
    """Walk the curve until the loss is at most halfway from the first loss down to the lowest one."""
    lowest = losses[0]
    for loss in losses:
        lowest = min(lowest, loss)
    level = (losses[0] + lowest) / 2
    for i in range(len(steps)):
        if losses[i] <= level:
            return steps[i]
    return None


def test_phase_change_checker_accepts_a_loop():
    assert checks.patterns.check_phase_change_step(phase_change_by_hand) == "All 6 training curves match the reference."


def test_phase_change_checker_catches_halving_towards_the_last_loss():
    def towards_the_last(steps, losses):
        level = (losses[0] + losses[-1]) / 2
        return next(step for step, loss in zip(steps, losses) if loss <= level)

    with pytest.raises(AssertionError, match=r"on a loss that rises again after its lowest point .* your step is 20; "
                                             r"expected 40"):
        checks.patterns.check_phase_change_step(towards_the_last)


def test_phase_change_checker_catches_a_strict_comparison_and_an_index():
    def strictly_below(steps, losses):
        level = (losses[0] + min(losses)) / 2
        return next((step for step, loss in zip(steps, losses) if loss < level), steps[-1])

    with pytest.raises(AssertionError, match=r"on a loss that lands exactly on the halfway level .* your step is 50; "
                                             r"expected 30"):
        checks.patterns.check_phase_change_step(strictly_below)
    with pytest.raises(AssertionError, match=r"on a sharp drop .* your step is 3; expected 60"):
        checks.patterns.check_phase_change_step(
            lambda steps, losses: next(i for i, loss in enumerate(losses) if loss <= (losses[0] + min(losses)) / 2))


# --- check_duplicate_score ------------------------------------------------------------------------------

def duplicate_score_by_hand(pattern, tokens):
    """Attention summed over every earlier copy of the query's token, averaged over queries that have one."""
    total, counted = 0.0, 0
    for q in range(len(tokens)):
        copies = [k for k in range(q) if tokens[k] == tokens[q]]
        if copies:
            total += sum(pattern[q, k].item() for k in copies)
            counted += 1
    return total / counted


def test_duplicate_checker_accepts_a_loop():
    assert checks.patterns.check_duplicate_score(duplicate_score_by_hand) == \
        "All 6 duplicate-token cases match the reference."


def test_duplicate_checker_catches_counting_the_token_itself():
    def keeps_the_diagonal(pattern, tokens):
        same = (tokens[:, None] == tokens[None, :]).tril()
        return (pattern * same).sum(-1)[same.tril(-1).any(-1)].mean().item()

    with pytest.raises(AssertionError, match=r"on a head that attends to itself \(tokens \[3, 1, 3, 2, 1, 3\]\) "
                                             r"your score is 1\.0000; expected 0\.0000"):
        checks.patterns.check_duplicate_score(keeps_the_diagonal)


def test_duplicate_checker_catches_averaging_over_every_query():
    def over_every_query(pattern, tokens):
        same = (tokens[:, None] == tokens[None, :]).tril(-1)
        return (pattern * same).sum(-1).mean().item()

    with pytest.raises(AssertionError, match=r"on a head that looks at the first copy .* your score is 0\.5000; "
                                             r"expected 1\.0000"):
        checks.patterns.check_duplicate_score(over_every_query)


# --- check_duplicate_passing ----------------------------------------------------------------------------

def passing_by_hand(ioi_score, ioi_control, repeat_score, repeat_control):
    passed = []
    for layer in range(ioi_score.shape[0]):
        for head in range(ioi_score.shape[1]):
            score = min(ioi_score[layer, head], repeat_score[layer, head])
            control = max(ioi_control[layer, head], repeat_control[layer, head])
            if score >= 0.3 and score >= 5 * control:
                passed.append((layer, head))
    return passed


def test_passing_checker_accepts_a_loop_in_any_order():
    assert checks.patterns.check_duplicate_passing(passing_by_hand) == "All 5 screens match the reference."
    assert checks.patterns.check_duplicate_passing(lambda *grids: passing_by_hand(*grids)[::-1]).startswith("All 5")


def test_passing_checker_names_the_head_an_ioi_only_rule_lets_through():
    def ioi_only(ioi_score, ioi_control, repeat_score, repeat_control):
        return passing_by_hand(ioi_score, ioi_control, ioi_score, ioi_control)

    with pytest.raises(AssertionError, match=r"on a head strong on IOI prompts only \(L0H1\) you pass \['L0H1', 'L1H0'\]; "
                                             r"expected \['L1H0'\]: L0H1 fails the rule \(IOI 0\.90"):
        checks.patterns.check_duplicate_passing(ioi_only)


def test_passing_checker_catches_a_strict_threshold():
    def strict(ioi_score, ioi_control, repeat_score, repeat_control):
        score, control = torch.minimum(ioi_score, repeat_score), torch.maximum(ioi_control, repeat_control)
        return [tuple(h) for h in ((score > 0.3) & (score > 5 * control)).nonzero().tolist()]

    with pytest.raises(AssertionError, match=r"on heads exactly at the threshold .* L0H0 passes the rule"):
        checks.patterns.check_duplicate_passing(strict)


# --- check_memory_recall ----------------------------------------------------------------------------------

def recall_by_hand(scores, partners):
    hits = 0
    for i, partner in enumerate(partners.tolist()):
        row = scores[i].tolist()
        if all(value < row[partner] for j, value in enumerate(row) if j != partner):
            hits += 1
    return hits / len(partners)


def test_recall_checker_accepts_a_loop():
    assert checks.patterns.check_memory_recall(recall_by_hand) == "All 6 memories match the reference."


def test_recall_checker_catches_an_argmax_that_ignores_ties():
    def argmax_only(scores, partners):
        return (scores.argmax(dim=1) == partners).float().mean().item()

    with pytest.raises(AssertionError, match=r"on a tie between the partner and another output \(partners \[0, 2\]\) "
                                             r"your recall is 1\.0000; expected 0\.5000"):
        checks.patterns.check_memory_recall(argmax_only)


# --- check_zero_ablated -----------------------------------------------------------------------------------

def zero_ablated_by_hand(model, removed):
    ablated = copy.deepcopy(model)
    with torch.no_grad():
        for layer, head in removed:
            ablated.blocks[layer].W_O[head] = torch.zeros_like(ablated.blocks[layer].W_O[head])
    return ablated


def test_zero_ablation_checker_accepts_a_copy_with_zero_outputs():
    assert checks.patterns.check_zero_ablated(zero_ablated_by_hand) == "All 4 ablations match the reference."


def test_zero_ablation_checker_catches_an_ablation_in_place():
    def in_place(model, removed):
        with torch.no_grad():
            for layer, head in removed:
                model.blocks[layer].W_O[head].zero_()
        return model

    with pytest.raises(AssertionError, match=r"on L0H1 your function changed the model it was given "
                                             r"\(W_O now zero for \['L0H1'\]\)"):
        checks.patterns.check_zero_ablated(in_place)


def test_zero_ablation_checker_names_the_heads_removed_by_mistake():
    def whole_layer(model, removed):
        return zero_ablated_by_hand(model, [(layer, head) for layer, _ in removed for head in range(2)])

    with pytest.raises(AssertionError, match=r"on L0H1 your model's logits differ .* you removed \['L0H0', 'L0H1'\], "
                                             r"expected \['L0H1'\]"):
        checks.patterns.check_zero_ablated(whole_layer)
