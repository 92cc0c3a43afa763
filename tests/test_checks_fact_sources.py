"""Tests for helpers.checks.fact_sources: each checker accepts a correct answer written by hand and rejects a wrong one."""

import pytest
import torch

from helpers import checks


def split_by_hand(row, values, w_o, direction, masks):
    per_key = torch.stack([row[j] * (values[j] @ w_o @ direction) for j in range(len(row))])
    return torch.stack([per_key[m].sum() for m in masks])


def test_split_checker_accepts_a_loop_over_positions():
    assert checks.fact_sources.check_source_split(split_by_hand).startswith("All 4 heads split correctly")


def test_split_checker_rejects_an_unweighted_sum():
    def unweighted(row, values, w_o, direction, masks):
        return masks.float() @ (values @ w_o @ direction)

    with pytest.raises(AssertionError, match="on random head"):
        checks.fact_sources.check_source_split(unweighted)


def classify_by_hand(parts):
    total = parts.sum(-1)
    subject, relation = parts[..., 0], parts[..., 1]
    counts = total >= 0.25
    is_subject, is_relation = counts & (subject > 0.7 * total), counts & (relation > 0.7 * total)
    mixed = counts & ~is_subject & ~is_relation & (subject >= 0.25 * total) & (relation >= 0.25 * total)
    return {"subject": is_subject, "relation": is_relation, "mixed": mixed & (subject > 0) & (relation > 0)}


def test_rule_checker_accepts_the_rule_written_out():
    assert checks.fact_sources.check_classify(classify_by_hand).startswith("All 3 sets")


def test_rule_checker_rejects_a_rule_without_the_minimum_total():
    def no_minimum(parts):
        out = classify_by_hand(parts + 0.0)
        total = parts.sum(-1)
        out["subject"] = parts[..., 0] > 0.7 * total
        return out

    with pytest.raises(AssertionError, match="your subject heads"):
        checks.fact_sources.check_classify(no_minimum)


def test_verdict_reads_a_stub_as_not_attempted():
    def stub(*args):
        raise NotImplementedError("your code here")

    assert checks.verdict(checks.fact_sources.check_classify, stub).startswith(checks.NOT_ATTEMPTED)


def test_relation_partners_checker_passes_the_reference_and_fails_a_pairing_that_ignores_answers():
    from helpers.checks import fact_sources as checker
    from helpers.experiments import fact_sources as fs

    assert "paired" in checker.check_relation_partners(fs.relation_partners)

    def naive(facts, ids):
        host = fs.relation_partners(facts, ids)
        return torch.where(host < 0, torch.zeros_like(host), host)

    with pytest.raises(AssertionError, match="you pair"):
        checker.check_relation_partners(naive)


def test_set_direction_checker_passes_the_reference_and_fails_the_answers_alone():
    from helpers.checks import fact_sources as checker

    assert "correct" in checker.check_set_direction(checker.reference_set_direction)
    with pytest.raises(AssertionError, match="off by"):
        checker.check_set_direction(lambda unembed, candidates, relation: unembed[:, candidates[relation]].mean(-1))
