"""Tests for helpers.frequency: the rarity order, the least frequent earlier token, a word's rarest piece."""

import pytest
import torch

from helpers import frequency


def test_rarity_rank_orders_by_count_then_by_id():
    rank = frequency.rarity_rank(torch.tensor([5, 0, 2, 0]))
    assert rank.tolist() == [0, 2, 1, 3]  # ids 1 and 3 never occur; the later id is rarer


def test_rarity_rank_is_a_permutation():
    counts = torch.randint(0, 4, (50,), generator=torch.Generator().manual_seed(0))
    rank = frequency.rarity_rank(counts)
    assert sorted(rank.tolist()) == list(range(50))
    order = rank.argsort()  # most frequent first
    assert (counts[order][1:] <= counts[order][:-1]).all()


@pytest.mark.parametrize("bad", [torch.tensor([1.0, 2.0]), torch.tensor([[1, 2]]), torch.tensor([1, -1])])
def test_rarity_rank_rejects_what_is_not_a_count_vector(bad):
    with pytest.raises(ValueError, match="counts must be"):
        frequency.rarity_rank(bad)


def test_least_frequent_earlier_matches_the_docstring():
    rank = frequency.rarity_rank(torch.tensor([5, 0, 2, 0]))
    assert frequency.least_frequent_earlier(torch.tensor([[0, 2, 3, 1, 0]]), rank).tolist() == [[-1, -1, 1, 2, 2]]


def test_least_frequent_earlier_takes_the_earlier_copy_and_respects_lengths():
    rank = frequency.rarity_rank(torch.tensor([5, 0, 2, 0]))
    tokens = torch.tensor([[0, 3, 2, 3, 0], [0, 2, 3, 0, 0]])
    got = frequency.least_frequent_earlier(tokens, rank, first_key=0, lengths=torch.tensor([5, 3]))
    assert got.tolist() == [[-1, 0, 1, 1, 1], [-1, 0, 1, -1, -1]]


def test_least_frequent_earlier_names_an_id_outside_the_rank():
    rank = frequency.rarity_rank(torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="token ids must lie in"):
        frequency.least_frequent_earlier(torch.tensor([[0, 1, 2]]), rank)


def test_least_frequent_piece_and_its_empty_word():
    rank = frequency.rarity_rank(torch.tensor([5, 0, 2, 0]))
    assert frequency.least_frequent_piece([0, 2, 3, 3], rank) == 2
    with pytest.raises(ValueError, match="ids is empty"):
        frequency.least_frequent_piece([], rank)
