"""Consistency helpers on hand-built cases (the pairing null, the margin) and the answers on the tiny model."""

import pytest
import torch

from helpers.experiments import consistency
from helpers.experiments.consistency import CAPITALS, Paraphrased


def test_chance_agreement_pairs_each_item_with_every_other_items_paraphrase_answer():
    plain = torch.tensor([0, 1, 0, 2])
    para = torch.tensor([0, 0, 1, 2])
    # item 0 (plain 0): others' paraphrase answers 0, 1, 2 -> 1 of 3; item 3 (plain 2): 0, 0, 1 -> 0
    torch.testing.assert_close(consistency.chance_agreement(plain, para), torch.tensor([1 / 3, 1 / 3, 2 / 3, 0.0]))
    same = torch.arange(5)
    assert consistency.chance_agreement(same, same).abs().max() == 0  # all distinct: chance is zero


def test_consistency_margin_is_positive_exactly_when_the_target_is_the_argmax():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 5, generator=generator)  # [set, item, answer]
    target = torch.randint(5, (7,), generator=generator)
    margin = consistency.consistency_margin(logits, target)
    assert margin.shape == (3, 7)
    assert torch.equal(margin > 0, logits.argmax(-1) == target)
    torch.testing.assert_close(consistency.consistency_margin(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([1])),
                               torch.tensor([-1.0]))


def test_gate_needs_both_classes():
    items = consistency.Items(source=CAPITALS, facts=tuple((f"c{i}", f"a{i}") for i in range(20)),
                              answers=tuple(f"a{i}" for i in range(20)), plain=torch.arange(20),
                              para=torch.arange(20), truth=torch.arange(20), para_logits=torch.zeros(20, 20))
    done = consistency.gate([items], seed=0)
    assert done.test.passed and not done.passed  # agreement far above chance, but nothing inconsistent
    with pytest.raises(ValueError, match="slot"):
        Paraphrased(CAPITALS.domain, "no slot")


def test_answers_read_both_frames_on_the_tiny_model(tiny_smol):
    items = consistency.answers(tiny_smol, CAPITALS)
    n = len(items.facts)
    assert n >= 4 and items.plain.shape == items.para.shape == items.truth.shape == (n,)
    assert items.para_logits.shape == (n, len(items.answers))
    assert torch.equal(items.para, items.para_logits.argmax(-1))
    assert items.paraphrases[0] == CAPITALS.paraphrase.format(subject=items.facts[0][0])
