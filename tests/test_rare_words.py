"""Tests for helpers.experiments.rare_words: the argmax score, chance, targets, and the study on a tiny model."""

import pytest
import torch

from helpers.experiments import rare_words as rw


def test_argmax_hits_matches_the_docstring():
    pattern = torch.eye(4)[None, None, None]
    assert rw.argmax_hits(pattern, torch.tensor([[-1, -1, 1, 3]]))[0, 0].tolist() == [0.5]


def test_argmax_hits_leaves_position_zero_out():
    pattern = torch.zeros(1, 1, 1, 4, 4)
    pattern[..., 0] = 0.7  # a sink on position 0
    pattern[..., 1, 1] = pattern[..., 2, 2] = pattern[..., 3, 2] = 0.3
    targets = torch.tensor([[-1, -1, 2, 2]])
    assert rw.argmax_hits(pattern, targets)[0, 0].tolist() == [1.0]
    assert rw.argmax_hits(pattern, targets, first_key=0)[0, 0].tolist() == [0.0]


def test_argmax_hits_names_mismatched_shapes_and_empty_prompts():
    with pytest.raises(ValueError, match="patterns must be"):
        rw.argmax_hits(torch.eye(4)[None, None, None], torch.tensor([[1, 2, 3]]))
    with pytest.raises(ValueError, match="no scored query"):
        rw.argmax_hits(torch.eye(3)[None, None, None], torch.tensor([[-1, -1, -1]]))


def test_chance_is_the_mean_inverse_of_the_eligible_keys():
    # queries 2 and 3 see keys 1..2 and 1..3: chance (1/2 + 1/3) / 2
    assert rw.chance(torch.tensor([[-1, -1, 1, 1]])).item() == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_slot_targets_and_position_baseline():
    targets = rw.slot_targets(torch.tensor([5, 4]), torch.tensor([2, 3]), torch.tensor([1, 2]), 6)
    assert targets.tolist() == [[-1, -1, 1, 1, 1, -1], [-1, -1, -1, 2, -1, -1]]
    assert rw.position_baseline(targets).tolist() == [targets[1].tolist(), targets[0].tolist()]


def test_pad_right_keeps_lengths():
    tokens, lengths = rw.pad_right([[1, 2, 3], [4]], pad=0)
    assert tokens.tolist() == [[1, 2, 3], [4, 0, 0]] and lengths.tolist() == [3, 1]


def test_sentences_keep_the_rare_word_as_the_least_frequent_token(tiny_smol):
    data = rw.sentences(tiny_smol, n=12, seed=0)
    assert len(data) == 12
    for b in range(len(data)):
        rare = int(data.rare_at[b])
        assert data.word_start[b] <= rare < data.word_stop[b]
        n = int(data.lengths[b])
        assert tiny_smol.to_string(data.tokens[b, :n]) == data.texts[b]
        assert tiny_smol.to_string(data.control[b, :int(data.control_lengths[b])]) == data.control_texts[b]
    assert (rw.rare_targets(data) >= 0).any(-1).all() and (rw.control_targets(data) >= 0).any(-1).all()


def test_study_runs_on_a_tiny_model(tiny_smol):
    done = rw.study(tiny_smol, sizes=rw.Sizes(sentences=12, ablation_prompts=4, top_k=2, n_random=2, mean_windows=2,
                                              mean_len=12, heldout_windows=4, heldout_len=16, n_boot=50), seed=0)
    row = done.row()
    assert row["model"] == "tiny-smol" and len(row) >= 3
    assert done.screen.rare.shape == (2, 4, 12)


def test_span_positions_predict_each_rows_span_and_mask_the_padding():
    at, mask = rw.span_positions(torch.tensor([3, 5]), torch.tensor([6, 6]))
    assert at.tolist() == [[2, 3, 4], [4, 4, 4]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="at least one token"):
        rw.span_positions(torch.tensor([3]), torch.tensor([3]))


def test_ablation_losses_read_only_the_span_positions_and_match_the_clean_pass(tiny_smol):
    data = rw.sentences(tiny_smol, n=8, seed=0).head(4)
    mentioned = rw.mentions(tiny_smol, data)
    first, second = rw.clean_mention_losses(tiny_smol, mentioned)
    losses = rw.mention_losses(tiny_smol, mentioned, [[], [(0, 0)]])
    torch.testing.assert_close(losses[0], second, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rw.mention_losses(tiny_smol, mentioned, [[]], which="first")[0], first,
                               atol=1e-4, rtol=1e-4)
    assert not torch.allclose(losses[1], losses[0])  # zero-ablating a head changes the loss
