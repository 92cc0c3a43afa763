"""Tests for helpers.checks.syntax: each exercise checker accepts a correct answer written out by hand, and rejects
a wrong one with an AssertionError that names the case it failed on."""

from collections import Counter

import pytest

from helpers import checks


# --- check_positional_baseline ----------------------------------------------------------------------------

def baseline_by_hand(offsets: list[int]) -> float:
    return Counter(offsets).most_common(1)[0][1] / len(offsets)


def test_baseline_checker_accepts_a_correct_answer():
    assert checks.syntax.check_positional_baseline(baseline_by_hand) == "All 6 offset lists match the reference."


def test_baseline_checker_rejects_the_mean_offset_and_names_the_list():
    def mean_share(offsets):  # a slip: the share of arcs at the rounded mean offset
        mean = round(sum(offsets) / len(offsets))
        return offsets.count(mean) / len(offsets)

    with pytest.raises(AssertionError, match=r"on a hand-made list .* your baseline is 0\.0000; expected 0\.5000"):
        checks.syntax.check_positional_baseline(mean_share)


def test_baseline_checker_catches_a_count_instead_of_a_share():
    with pytest.raises(AssertionError, match="your baseline is 3.0000; expected 0.5000"):
        checks.syntax.check_positional_baseline(lambda offsets: Counter(offsets).most_common(1)[0][1])


def test_baseline_checker_catches_an_answer_that_splits_ties():
    def halves_ties(offsets):
        counts = Counter(offsets).most_common()
        tied = sum(1 for _, c in counts if c == counts[0][1])
        return counts[0][1] / len(offsets) / tied

    with pytest.raises(AssertionError, match="on a tie between offsets 1 and 3"):
        checks.syntax.check_positional_baseline(halves_ties)


# --- check_relation_accuracy ------------------------------------------------------------------------------

def accuracy_by_hand(pattern, arcs) -> float:
    hits = 0
    for query, keys in arcs:
        best = max(range(1, query + 1), key=lambda k: (pattern[query, k].item(), -k))
        hits += best in keys
    return hits / len(arcs)


def test_accuracy_checker_accepts_a_correct_answer():
    assert checks.syntax.check_relation_accuracy(accuracy_by_hand) == "All 6 heads match the reference."


def test_accuracy_checker_catches_an_answer_that_lets_position_zero_win():
    def keeps_position_zero(pattern, arcs):
        return sum(int(pattern[q, :q + 1].argmax()) in keys for q, keys in arcs) / len(arcs)

    with pytest.raises(AssertionError, match="on a head that rests on position 0 .* your accuracy is 0.0000; "
                                             "expected 0.4000"):
        checks.syntax.check_relation_accuracy(keeps_position_zero)


def test_accuracy_checker_catches_an_answer_that_counts_only_the_first_partner():
    def first_partner_only(pattern, arcs):
        return accuracy_by_hand(pattern, [(q, keys[:1]) for q, keys in arcs])

    with pytest.raises(AssertionError, match="on a previous-token head .* your accuracy is 0.2000; expected 0.4000"):
        checks.syntax.check_relation_accuracy(first_partner_only)


def test_accuracy_checker_catches_attention_mass_instead_of_argmax():
    def mass_on_partners(pattern, arcs):
        return sum(pattern[q, keys].sum().item() for q, keys in arcs) / len(arcs)

    with pytest.raises(AssertionError, match=r"on a head that rests on position 0 .* your accuracy is 0\.1200"):
        checks.syntax.check_relation_accuracy(mass_on_partners)


def test_a_reader_function_that_edits_its_input_cannot_change_the_reference():
    def zeroes_then_scores(pattern, arcs):
        answer = accuracy_by_hand(pattern, arcs)
        pattern.zero_()
        arcs.clear()
        return answer

    assert checks.syntax.check_relation_accuracy(zeroes_then_scores).startswith("All 6")


def test_a_stub_reads_as_not_attempted():
    def stub(pattern, arcs):
        raise NotImplementedError("your code here")

    assert checks.verdict(checks.syntax.check_relation_accuracy, stub).startswith(checks.NOT_ATTEMPTED)
