"""Tests for helpers.experiments.semantic_induction: the relation index, the re-pairing control and its
p-values on hand-built tensors, and the entity writes against the whole head's output on a tiny model."""

import dataclasses

import pytest
import torch

from helpers import attribution, capture, tasks
from helpers.experiments import semantic_induction as si


def test_margin_is_the_true_entry_minus_the_mean_of_the_others():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 4.0, 8.0]])
    torch.testing.assert_close(si.margins(logits, torch.tensor([0, 2])), torch.tensor([1.5, 6.0]))


def test_margin_names_the_shapes_it_received():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(3,\)"):
        si.margins(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))


def test_index_from_table_reads_each_prompts_own_column_over_leading_axes():
    table = torch.zeros(2, 3, 4, 3)  # [layer, head, batch, tail]
    table[1, 2, :, 0] = 3.0  # L1H2 raises tail 0 on every prompt
    column = torch.tensor([0, 0, 1, 2])
    index = si.index_from_table(table, column)
    assert index.shape == (2, 3, 4)
    torch.testing.assert_close(index[1, 2], torch.tensor([3.0, 3.0, -1.5, -1.5]))
    assert index[0].abs().max() == 0


def test_permutation_p_counts_ties_and_adds_one():
    null = torch.tensor([[0.0], [1.0], [2.0], [1.0]])
    torch.testing.assert_close(si.permutation_p(torch.tensor([1.0]), null), torch.tensor([4 / 5]))
    torch.testing.assert_close(si.permutation_p(torch.tensor([9.0]), null), torch.tensor([1 / 5]))


def test_permutation_p_names_the_expected_shape():
    with pytest.raises(ValueError, match=r"\[N, 2, 3\]"):
        si.permutation_p(torch.zeros(2, 3), torch.zeros(5, 3, 2))


def test_max_z_p_is_never_smaller_than_the_per_head_p():
    generator = torch.Generator().manual_seed(0)
    null = torch.randn(199, 3, 4, generator=generator)
    observed = torch.randn(3, 4, generator=generator)
    observed[1, 2] = 10.0  # one head far beyond every draw of every head
    corrected = si.max_z_p(observed, null)
    assert (corrected >= si.permutation_p(observed, null) - 1e-9).all()
    assert corrected[1, 2] == 1 / 200


def fake_read(column: torch.Tensor, tails: torch.Tensor) -> si.RelationRead:
    n = len(column)
    batch = si.RelationBatch("toy", tuple(("h", "t") for _ in range(n)), torch.zeros(n, 3, dtype=torch.long),
                             torch.arange(n), torch.arange(tails.shape[-1]), column,
                             torch.zeros(n, 3, dtype=torch.bool))
    entities = torch.zeros(*tails.shape[:3], n)  # [layer, head, batch, entity]
    return si.RelationRead(batch, tails, entities, torch.arange(n), torch.zeros(tails.shape[:3]))


def test_a_head_that_maps_each_entity_to_its_tail_passes_and_a_category_head_fails():
    column = torch.arange(8) % 4  # 8 prompts, 4 tails, two pairs per tail
    tails = torch.zeros(1, 2, 8, 4)
    tails[0, 0] = 2.0 * torch.nn.functional.one_hot(column, 4)  # L0H0 raises each prompt's own tail
    tails[0, 1] = 2.0  # L0H1 raises every tail of the relation equally ("a country")
    found = si.repairing_test([fake_read(column, tails)], n_permutations=199, seed=0)
    assert found.index[0, 0] == pytest.approx(2.0) and found.index[0, 1] == pytest.approx(0.0)
    assert found.passing == [(0, 0)]
    assert found.null[:, 0, 1].abs().max() == 0  # re-pairing cannot change a head that ignores the pairing


def test_repaired_columns_keep_each_relations_tails():
    reads = [fake_read(torch.tensor([0, 0, 1, 2]), torch.zeros(1, 1, 4, 3))]
    shuffled = si.repaired_columns(reads, torch.Generator().manual_seed(3))[0]
    assert sorted(shuffled.tolist()) == [0, 0, 1, 2]


def test_entity_writes_over_every_position_add_up_to_the_whole_head_output(tiny_smol):
    batch = si.relation_batch(tiny_smol, si.CITY_COUNTRY, pairs=si.CITY_COUNTRY.pairs[:3])
    everywhere = dataclasses.replace(batch, at_entity=torch.ones_like(batch.at_entity))
    writes, attention = si.entity_writes(tiny_smol, everywhere)
    whole = attribution.head_outputs_from_read(tiny_smol, capture.read_end(tiny_smol, batch.tokens))
    torch.testing.assert_close(writes, whole, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(attention, torch.ones_like(attention), atol=1e-5, rtol=0)


def test_relation_batch_puts_the_entity_twice_and_keeps_single_token_pairs(tiny_smol):
    batch = si.relation_batch(tiny_smol, si.CITY_COUNTRY, pairs=[("Paris", "France"), ("Berlin", "Germany"),
                                                                ("Xqzzyville", "France")])
    assert batch.pairs == (("Paris", "France"), ("Berlin", "Germany"))
    assert batch.at_entity.sum(1).tolist() == [2, 2]
    expected = [tasks.single_token_id(tiny_smol, " France"), tasks.single_token_id(tiny_smol, " Germany")]
    assert batch.tails.tolist() == expected
