"""Tests for helpers.experiments.fact_sources (E5): spans, the source split, the 70 % rule, the controls' pairings."""

import pytest
import torch

from helpers.experiments import fact_sources as fs


def test_the_fact_table_reuses_the_conflict_capitals_in_both_directions():
    table = fs.fact_table()
    assert ("capital's country", "Paris", "France") in table and ("country's capital", "France", "Paris") in table
    assert {relation for relation, _, _ in table} == set(fs.RELATION_NAMES)


def test_wording_puts_the_subject_before_the_relation():
    assert fs.wording("landmark city", "Eiffel Tower") == "Fact: The Eiffel Tower is in the city of"
    assert fs.wording("landmark city", "Eiffel Tower", held_out=True).startswith("Travel note:")
    with pytest.raises(KeyError, match="relation must be one of"):
        fs.wording("colour", "sky")


def test_spans_cover_the_subject_and_the_relation_words(tiny_smol):
    prompts = fs.prompts(tiny_smol, fs.fact_table())
    i = prompts.facts.index(("landmark city", "Eiffel Tower", "Paris"))
    subject, relation = prompts.subject[i], prompts.relation[i]
    text = tiny_smol.tokenizer.decode(prompts.tokens[i][slice(*subject)])
    assert text.strip() == "Eiffel Tower"
    assert tiny_smol.tokenizer.decode(prompts.tokens[i][slice(*relation)]) == " is in the city of"
    masks = prompts.source_masks(i)
    assert masks.sum(0).eq(1).all()  # every position in exactly one group


def test_split_by_source_sums_each_group():
    split = torch.arange(12.0).reshape(1, 2, 6)
    masks = torch.tensor([[0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    parts = fs.split_by_source(split, masks)
    torch.testing.assert_close(parts[0, 0], torch.tensor([3.0, 12.0, 0.0]))
    torch.testing.assert_close(parts.sum(-1), split.sum(-1))
    with pytest.raises(ValueError, match="6 key positions, masks 5"):
        fs.split_by_source(split, masks[:, :5])


def test_one_head_parts_add_up_to_the_heads_dla():
    generator = torch.Generator().manual_seed(0)
    row = torch.softmax(torch.randn(5, generator=generator), 0)
    values, w_o, direction = torch.randn(5, 3, generator=generator), torch.randn(3, 4, generator=generator), \
        torch.randn(4, generator=generator)
    masks = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]], dtype=torch.bool)
    parts = fs.one_head_parts(row, values, w_o, direction, masks)
    torch.testing.assert_close(parts.sum(), row @ values @ w_o @ direction)


def test_the_rule_sorts_hand_made_heads():
    parts = torch.tensor([[[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.4, 0.4, 0.2], [0.1, 0.05, 0.0]]])
    classes = fs.classify(parts)
    assert classes["subject"].tolist() == [[True, False, False, False]]
    assert classes["relation"].tolist() == [[False, True, False, False]]
    assert classes["mixed"].tolist() == [[False, False, True, False]]  # the last head is too small to count
    with pytest.raises(ValueError, match="subject, relation, rest"):
        fs.classify(parts[..., :2])


def test_subject_partners_cycle_within_a_subject_and_relation_partners_avoid_equal_answers():
    facts = [("landmark city", "Louvre", "Paris"), ("landmark country", "Louvre", "France"),
             ("landmark city", "Eiffel Tower", "Paris"), ("landmark city", "Colosseum", "Rome")]
    assert fs.subject_partners(facts).tolist() == [1, 0, -1, -1]
    hosts = fs.relation_partners(facts, torch.tensor([10, 11, 10, 12]))
    assert hosts.tolist() == [-1, -1, 3, 0]  # Louvre -> Eiffel Tower would keep " Paris": dropped


def test_study_on_a_tiny_model_stops_at_a_failed_gate_and_still_gives_a_row(tiny_smol):
    study = fs._study(tiny_smol, sizes=fs.Sizes(facts_per_relation=3, ablation_facts=4, top_k=1, n_random=2),
                      seed=0)
    row = study.row()
    assert row["model"] == "tiny-smol" and len(row) >= 3
    assert len(fs.findings_table("subject", study)) == 1
