"""Tests for helpers.checks.ioi: each exercise checker accepts a correct answer written out by hand (plain loops, not
the reference's code), and rejects a classic mistake with an AssertionError that names the case it failed on."""

import pytest
import torch

from helpers import checks

IOI = checks.ioi


def ranked(values: dict, descending: bool = True) -> list:
    """Keys of `values` by value (largest first unless `descending` is False), ties by key."""
    sign = -1 if descending else 1
    return [key for key, _ in sorted(values.items(), key=lambda item: (sign * item[1], item[0]))]


def grid_items(grid: torch.Tensor):
    for layer in range(grid.shape[0]):
        for head in range(grid.shape[1]):
            yield (layer, head), grid[layer, head].item()


# --- check_name_mover_ranking ---------------------------------------------------------------------------

def name_movers_by_hand(dla, to_io, to_s, k):
    eligible = {head: value for head, value in grid_items(dla) if value > 0 and to_io[head] > to_s[head]}
    return ranked(eligible)[:k]


def test_name_mover_checker_accepts_a_correct_ranking():
    assert IOI.check_name_mover_ranking(name_movers_by_hand) == "All 4 name-mover cases match the reference."


def test_name_mover_checker_catches_a_ranking_that_ignores_attention():
    def by_dla_only(dla, to_io, to_s, k):  # the strongest writer is not always a name mover
        return ranked({head: value for head, value in grid_items(dla) if value > 0})[:k]

    with pytest.raises(AssertionError, match=r"on a grid whose strongest head looks at S \(k = 3\) you chose "
                                             r"\[L1H0, L1H1, L2H0\]; expected \[L1H1, L2H0, L0H2\]"):
        IOI.check_name_mover_ranking(by_dla_only)


def test_name_mover_checker_catches_a_tie_counted_as_looking_at_io():
    def at_least_as_much(dla, to_io, to_s, k):
        eligible = {head: value for head, value in grid_items(dla) if value > 0 and to_io[head] >= to_s[head]}
        return ranked(eligible)[:k]

    with pytest.raises(AssertionError, match=r"on a grid with fewer eligible heads than k \(k = 3\) you chose "
                                             r"\[L0H0, L1H0\]; expected \[L0H0\]"):
        IOI.check_name_mover_ranking(at_least_as_much)


# --- check_copying_score --------------------------------------------------------------------------------

def copying_score_by_hand(table):
    n = table.shape[0]
    hits = 0
    for read in range(n):
        row = table[read].tolist()
        hits += row.index(max(row)) == read
    return hits / n


def test_copying_checker_accepts_a_correct_score():
    assert IOI.check_copying_score(copying_score_by_hand) == "All 6 copying-score cases match the reference."


def test_copying_checker_catches_a_score_read_down_the_columns():
    def by_column(table):  # argmax over the names read, not the names written
        return (table.argmax(dim=0) == torch.arange(table.shape[0])).float().mean().item()

    with pytest.raises(AssertionError, match=r"on a head that always writes the same name your score is 1\.0000; "
                                             r"expected 0\.2000"):
        IOI.check_copying_score(by_column)


def test_copying_checker_catches_a_positive_diagonal_taken_for_copying():
    with pytest.raises(AssertionError, match=r"on a head that always writes the same name your score is 1\.0000"):
        IOI.check_copying_score(lambda table: (table.diagonal() > 0).float().mean().item())


# --- check_self_repair_fraction ---------------------------------------------------------------------------

def fraction_by_hand(before, after, before_ld, after_ld, removed):
    batch = before.shape[-1]
    lost = sum(before[layer, head, b].item() - after[layer, head, b].item()
               for layer, head in removed for b in range(batch))
    actual = sum(before_ld[b].item() - after_ld[b].item() for b in range(batch))
    return 1 - actual / lost  # both sums share the 1/batch of a mean


def test_self_repair_checker_accepts_a_correct_fraction():
    assert IOI.check_self_repair_fraction(fraction_by_hand) == "All 3 knockout cases match the reference."


def test_self_repair_checker_catches_a_mean_of_per_prompt_ratios():
    def mean_of_ratios(before, after, before_ld, after_ld, removed):
        lost = sum(before[layer, head] - after[layer, head] for layer, head in removed)
        return (1 - (before_ld - after_ld) / lost).mean().item()

    with pytest.raises(AssertionError, match=r"on one head removed, little repair your fraction is 0\.1334; "
                                             r"expected 0\.1372"):
        IOI.check_self_repair_fraction(mean_of_ratios)


def test_self_repair_checker_catches_the_share_of_the_drop_instead_of_the_repair():
    def drop_share(before, after, before_ld, after_ld, removed):
        return 1 - fraction_by_hand(before, after, before_ld, after_ld, removed)

    with pytest.raises(AssertionError, match=r"your fraction is 0\.8628; expected 0\.1372"):
        IOI.check_self_repair_fraction(drop_share)


# --- check_backups ----------------------------------------------------------------------------------------

def backups_by_hand(rise, control_max_rise, lost):
    bar = max(max(control_max_rise.tolist()), 0.1 * lost)
    return ranked({head: value for head, value in grid_items(rise) if value == value and value > bar})


def test_backup_checker_accepts_the_rule():
    assert IOI.check_backups(backups_by_hand) == "All 4 backup-rule cases match the reference."


def test_backup_checker_catches_a_rule_without_the_share_of_the_loss():
    def control_bar_only(rise, control_max_rise, lost):
        bar = max(control_max_rise.tolist())
        return ranked({head: value for head, value in grid_items(rise) if value > bar})

    with pytest.raises(AssertionError, match=r"on rises where 10 % of the loss sets the bar \(largest control rise "
                                             r"0\.10, direct effect lost 5\.0\) you chose \[L1H0, L2H2, L0H2, L1H1\]; "
                                             r"expected \[L1H0, L2H2\] \(rises above 0\.50\)"):
        IOI.check_backups(control_bar_only)


def test_backup_checker_catches_the_lower_of_the_two_bars():
    def lower_bar(rise, control_max_rise, lost):
        bar = min(max(control_max_rise.tolist()), 0.1 * lost)
        return ranked({head: value for head, value in grid_items(rise) if value > bar})

    with pytest.raises(AssertionError, match=r"on rises where the control sets the bar .* expected \[L1H0, L2H2\]"):
        IOI.check_backups(lower_bar)


# --- check_attended_key -----------------------------------------------------------------------------------

def attended_by_hand(attention_row, tokens):
    best = 1
    for key in range(2, len(attention_row) - 1):
        if attention_row[key] > attention_row[best]:
            best = key
    return best, int(tokens[best])


def test_attended_checker_accepts_a_correct_key():
    assert IOI.check_attended_key(attended_by_hand) == "All 4 attended-key cases match the reference."


def test_attended_checker_catches_an_index_into_the_slice():
    def forgets_the_offset(attention_row, tokens):
        key = int(attention_row[1:-1].argmax())
        return key, int(tokens[key])

    with pytest.raises(AssertionError, match=r"on a head parked on position 0 you said \(position, token\) = \(2, 4\); "
                                             r"expected \(3, 18\)"):
        IOI.check_attended_key(forgets_the_offset)


def test_attended_checker_catches_a_search_that_keeps_the_current_token():
    def keeps_the_last(attention_row, tokens):
        key = int(attention_row[1:].argmax()) + 1
        return key, int(tokens[key])

    with pytest.raises(AssertionError, match=r"on a head that looks at the current token you said .* = \(8, 3\); "
                                             r"expected \(2, 4\)"):
        IOI.check_attended_key(keeps_the_last)


# --- check_copy_suppression_passing -----------------------------------------------------------------------

def passing_by_hand(scores, control):
    cutoff = min(value for _, value in grid_items(control))
    return ranked({head: value for head, value in grid_items(scores) if value < cutoff}, descending=False)


def test_passing_checker_accepts_the_rule():
    assert IOI.check_copy_suppression_passing(passing_by_hand) == "All 3 pass-rule cases match the reference."


def test_passing_checker_catches_a_comparison_with_the_heads_own_control():
    def own_control(scores, control):
        return ranked({head: value for head, value in grid_items(scores) if value < control[head]}, descending=False)

    with pytest.raises(AssertionError, match=r"on heads below their own control only \(most negative control -0\.20\) "
                                             r"you chose \[L0H0, L1H1\]; expected \[L0H0\]"):
        IOI.check_copy_suppression_passing(own_control)


# --- check_attention_preference ---------------------------------------------------------------------------

def preference_by_hand(attention, s1, s2, io):
    receivers, batch, _ = attention.shape
    out = torch.zeros(batch)
    for b in range(batch):
        for r in range(receivers):
            out[b] += attention[r, b, s1[b]] + attention[r, b, s2[b]] - attention[r, b, io[b]]
    return out / receivers


def test_preference_checker_accepts_a_correct_preference():
    assert IOI.check_attention_preference(preference_by_hand) == "All 3 attention-preference cases match the reference."


def test_preference_checker_reports_the_shape_of_a_plain_column_index():
    def column_index(attention, s1, s2, io):  # picks every prompt's positions for every prompt
        return (attention[:, :, s1] + attention[:, :, s2] - attention[:, :, io]).mean(0)

    with pytest.raises(AssertionError, match=r"on two prompts worked by hand your answer has shape \(2, 2\); "
                                             r"expected \(2,\)"):
        IOI.check_attention_preference(column_index)


def test_preference_checker_catches_a_preference_that_forgets_s1():
    def s2_only(attention, s1, s2, io):
        rows = torch.arange(attention.shape[1])
        return (attention[:, rows, s2] - attention[:, rows, io]).mean(0)

    with pytest.raises(AssertionError, match=r"on two prompts worked by hand you got \[0\.05, -0\.5\]; "
                                             r"expected \[0\.45, -0\.5\]"):
        IOI.check_attention_preference(s2_only)


# --- check_p_value ----------------------------------------------------------------------------------------

def p_value_by_hand(observed, draws, larger_is_stronger):
    as_strong = 0
    for draw in draws.tolist():
        if (draw >= observed) if larger_is_stronger else (draw <= observed):
            as_strong += 1
    return (1 + as_strong) / (len(draws) + 1)


def test_p_value_checker_accepts_a_correct_p_value():
    assert IOI.check_p_value(p_value_by_hand) == "All 4 p-value cases match the reference."


def test_p_value_checker_catches_a_p_value_that_ignores_the_direction():
    def always_larger(observed, draws, larger_is_stronger):
        return p_value_by_hand(observed, draws, True)

    with pytest.raises(AssertionError, match=r"on a drop \(lower is stronger\) beaten by two draws .* your p-value is "
                                             r"0\.7143; expected 0\.4286 = 3/7"):
        IOI.check_p_value(always_larger)


def test_p_value_checker_catches_a_tie_left_out():
    def strictly_stronger(observed, draws, larger_is_stronger):
        beaten = (draws > observed) if larger_is_stronger else (draws < observed)
        return (1 + int(beaten.sum())) / (len(draws) + 1)

    with pytest.raises(AssertionError, match=r"on a shift tied with one draw .* your p-value is 0\.1667; expected "
                                             r"0\.3333 = 2/6"):
        IOI.check_p_value(strictly_stronger)


# --- check_recovered_fraction -----------------------------------------------------------------------------

def recovered_by_hand(circuit, full, baseline):
    kept = sum(c - b for c, b in zip(circuit.tolist(), baseline.tolist()))
    possible = sum(f - b for f, b in zip(full.tolist(), baseline.tolist()))
    return kept / possible


def test_recovered_checker_accepts_a_correct_fraction():
    assert IOI.check_recovered_fraction(recovered_by_hand) == "All 4 recovered-fraction cases match the reference."


def test_recovered_checker_catches_a_fraction_without_the_baseline():
    with pytest.raises(AssertionError, match=r"on a baseline above zero your fraction is 0\.6000; expected 0\.5000"):
        IOI.check_recovered_fraction(lambda circuit, full, baseline: (circuit.mean() / full.mean()).item())


def test_recovered_checker_catches_a_mean_of_per_prompt_ratios():
    with pytest.raises(AssertionError, match=r"on a baseline above zero your fraction is 0\.4667; expected 0\.5000"):
        IOI.check_recovered_fraction(lambda circuit, full, baseline: ((circuit - baseline) / (full - baseline)).mean())


# --- check_keep_only --------------------------------------------------------------------------------------

def keep_only_by_hand(z, means, keep):
    out = z.clone()
    for head in range(z.shape[2]):
        if head not in keep:
            for b in range(z.shape[0]):
                out[b, :, head] = means[:, head]
    return out


def test_keep_only_checker_accepts_a_correct_hook():
    assert IOI.check_keep_only(keep_only_by_hand) == "All 4 keep-only cases match the reference."


def test_keep_only_checker_accepts_a_hook_that_writes_into_its_input():
    def in_place(z, means, keep):
        for head in range(z.shape[2]):
            if head not in keep:
                z[:, :, head] = means[:, head]
        return z

    assert IOI.check_keep_only(in_place).startswith("All 4")


def test_keep_only_checker_catches_zero_ablation():
    def zeros(z, means, keep):
        out = z.clone()
        for head in range(z.shape[2]):
            if head not in keep:
                out[:, :, head] = 0.0
        return out

    with pytest.raises(AssertionError, match=r"on keep heads 0 and 2 of 4 \(keep \[0, 2\]\) your heads \[1, 3\] differ"):
        IOI.check_keep_only(zeros)


def test_keep_only_checker_catches_the_kept_heads_ablated_instead():
    def swapped(z, means, keep):
        out = z.clone()
        for head in keep:
            out[:, :, head] = means[:, head]
        return out

    with pytest.raises(AssertionError, match=r"your heads \[0, 1, 2, 3\] differ from the reference"):
        IOI.check_keep_only(swapped)


# --- verdict on these checkers ----------------------------------------------------------------------------

CHECKERS = [IOI.check_name_mover_ranking, IOI.check_copying_score, IOI.check_self_repair_fraction, IOI.check_backups,
            IOI.check_attended_key, IOI.check_copy_suppression_passing, IOI.check_attention_preference,
            IOI.check_p_value, IOI.check_recovered_fraction, IOI.check_keep_only]


@pytest.mark.parametrize("checker", CHECKERS, ids=lambda checker: checker.__name__)
def test_a_stub_reads_as_not_attempted(checker):
    def stub(*args):
        raise NotImplementedError("your code here")

    assert checks.verdict(checker, stub).startswith(checks.NOT_ATTEMPTED)
