"""Tests for helpers.associative on hand-built ground truth (no trained model, no pretrained model)."""

from __future__ import annotations

import pytest
import torch

from helpers import toy
from helpers.experiments import associative, recall


def small_task(**changes) -> associative.TriggerTask:
    settings = dict(vocab_size=16, seq_len=24, n_triggers=2, trigger_rate=0.3, concentration=0.5, seed=3)
    settings.update(changes)
    return associative.TriggerTask(**settings)


def test_after_every_trigger_comes_that_sequences_output():
    task = small_task()
    batch = task.sample_triggers(torch.Generator().manual_seed(0), 32)
    for row, outputs in zip(batch.tokens, batch.outputs):
        for pos in range(len(row) - 1):
            if row[pos] in task.triggers:
                k = (task.triggers == row[pos]).nonzero().item()
                assert row[pos + 1] == outputs[k]
    assert not torch.isin(batch.outputs, task.triggers).any()


def test_transitions_are_distributions_over_ordinary_tokens_and_triggers():
    task = small_task()
    rows = task.transitions[task.ordinary]
    torch.testing.assert_close(rows.sum(dim=1), torch.ones(len(task.ordinary)))
    torch.testing.assert_close(rows[:, task.triggers].sum(dim=1), torch.full((len(task.ordinary),), 0.3))
    assert (task.transitions[task.triggers] == 0).all()


def test_sampling_is_deterministic_given_the_generator():
    task = small_task()
    a = task.sample_triggers(torch.Generator().manual_seed(7), 4).tokens
    b = task.sample_triggers(torch.Generator().manual_seed(7), 4).tokens
    assert torch.equal(a, b)


def test_trigger_masks_split_first_and_repeated_occurrences():
    tokens = torch.tensor([[5, 1, 9, 1, 9, 2, 1, 9]])  # trigger 1 at 1, 3, 6
    batch = associative._with_trigger_masks(tokens, torch.tensor([[9]]), torch.tensor([1]))
    assert batch.first_trigger[0].nonzero().flatten().tolist() == [1]
    assert batch.repeat_trigger[0].nonzero().flatten().tolist() == [3, 6]
    targets = associative.trigger_induction_targets(batch)[0]
    assert targets[3].nonzero().flatten().tolist() == [2]
    assert targets[6].nonzero().flatten().tolist() == [2, 4]
    assert not targets[1].any()


def test_recall_accuracies_of_a_perfect_and_a_wrong_predictor():
    tokens = torch.tensor([[5, 1, 9, 1, 9, 2, 1, 9]])
    batch = associative._with_trigger_masks(tokens, torch.tensor([[9]]), torch.tensor([1]))
    perfect = torch.nn.functional.one_hot(tokens.roll(-1, 1), 12).float()  # predicts every next token
    transitions = torch.zeros(12, 12)
    transitions[:, 0] = 1.0  # the oracle always says 0: never right here
    accs = associative.recall_accuracies(perfect, batch, transitions)
    assert accs["in_context"].item() == 1.0 and accs["first_trigger"].item() == 1.0
    assert accs["bigram"].item() == 1.0 and accs["bigram_oracle"].item() == 0.0
    wrong = associative.recall_accuracies(torch.zeros_like(perfect).index_fill_(2, torch.tensor([11]), 1.0),
                                          batch, transitions)
    assert wrong["in_context"].item() == 0.0


def test_accuracy_is_nan_for_sequences_without_the_position_kind():
    correct = torch.ones(2, 4, dtype=torch.bool)
    where = torch.tensor([[False, True, False, False], [False, False, False, True]])  # last column never counts
    values = associative.accuracy_where(correct, where)
    assert values[0].item() == 1.0 and values[1].isnan()


def test_outer_product_memory_recalls_its_pairs_and_a_zero_memory_recalls_nothing():
    generator = torch.Generator().manual_seed(0)
    e, u = torch.randn(6, 128, generator=generator), torch.randn(6, 128, generator=generator)
    partners = torch.tensor([3, 0, 5, 1, 2, 4])
    memory = sum(torch.outer(e[i], u[partners[i]]) for i in range(6))
    scores = associative.association_scores(e, memory, u)
    assert associative.memory_recall(scores, partners) == 1.0
    assert associative.memory_recall(torch.zeros(6, 6), partners) == 0.0  # all tied: nothing recalled


def test_candidates_restrict_the_argmax_and_set_chance():
    scores = torch.tensor([[5.0, 1.0, 0.0], [5.0, 1.0, 0.0]])
    candidates = torch.tensor([[True, True, True], [False, True, True]])
    assert associative.memory_recall(scores, torch.tensor([1, 1]), candidates) == 0.5
    assert associative.chance_recall(candidates) == pytest.approx((1 / 3 + 1 / 2) / 2)
    with pytest.raises(ValueError, match="among its row's candidates"):
        associative.memory_recall(scores, torch.tensor([0, 0]), candidates)


def test_previous_position_pairs_recall_a_hand_built_positional_memory():
    n_ctx = 6
    partners, candidates = associative.previous_position_pairs(n_ctx)
    scores = torch.zeros(n_ctx, n_ctx)
    scores[torch.arange(1, n_ctx), torch.arange(n_ctx - 1)] = 1.0  # t -> t - 1
    assert associative.memory_recall(scores[1:], partners, candidates) == 1.0
    assert associative.chance_recall(candidates) == pytest.approx(sum(1 / (t + 1) for t in range(1, n_ctx)) / (n_ctx - 1))


def identity_toy() -> toy.AttentionOnlyTransformer:
    """A 2-layer toy whose embeddings are the identity, so weight products can be set entry by entry."""
    model = toy.AttentionOnlyTransformer(toy.ToyConfig(vocab_size=8, n_ctx=8, n_layers=2, n_heads=2, d_model=8, d_head=8))
    with torch.no_grad():
        model.embed.copy_(torch.eye(8))
        model.unembed.copy_(torch.eye(8))
        model.pos_embed.copy_(torch.eye(8))
        for block in model.blocks:
            for name in ("W_Q", "W_K", "W_V", "W_O"):
                getattr(block, name).copy_(torch.eye(8).expand(2, 8, 8) * 0.0)
    return model


def test_ov_copy_and_key_memories_read_the_weights_they_name():
    model = identity_toy()
    with torch.no_grad():
        model.blocks[1].W_V[0].copy_(torch.eye(8))
        model.blocks[1].W_O[0].copy_(torch.eye(8))  # L1H0 copies
        model.blocks[0].W_V[1].copy_(torch.eye(8))
        model.blocks[0].W_O[1].copy_(torch.eye(8))  # L0H1 writes its input
        model.blocks[1].W_Q[0].copy_(torch.eye(8))
        model.blocks[1].W_K[0].copy_(torch.eye(8))
    everything = torch.arange(8)
    assert associative.memory_recall(associative.ov_copy_scores(model, (1, 0)), everything) == 1.0
    assert associative.memory_recall(associative.ov_copy_scores(model, (1, 1)), everything) == 0.0
    assert associative.memory_recall(associative.trigger_key_scores(model, (0, 1), (1, 0)), everything) == 1.0
    assert associative.memory_recall(associative.trigger_key_scores(model, (0, 0), (1, 0)), everything) == 0.0
    with pytest.raises(ValueError, match="earlier layer"):
        associative.trigger_key_scores(model, (1, 0), (0, 1))
    with pytest.raises(ValueError, match="outside"):
        associative.ov_copy_scores(model, (2, 0))


def test_zero_ablation_removes_a_heads_output_and_leaves_the_model_untouched():
    model = toy.AttentionOnlyTransformer(toy.ToyConfig(vocab_size=8, n_ctx=8, n_layers=1, n_heads=2, init_std=0.5))
    tokens = torch.randint(0, 8, (3, 8), generator=torch.Generator().manual_seed(0))
    before = model(tokens).detach()
    ablated = associative.zero_ablated(model, [(0, 0), (0, 1)])
    direct = (torch.nn.functional.embedding(tokens, model.embed) + model.pos_embed[:8]) @ model.unembed
    torch.testing.assert_close(ablated(tokens), direct.detach())  # no head left: only the direct path
    torch.testing.assert_close(model(tokens).detach(), before)


def test_first_step_at_and_bad_inputs():
    assert associative.first_step_at([0, 10, 20], [0.1, 0.6, 0.9], 0.5) == 10
    assert associative.first_step_at([0, 10], [0.1, 0.2], 0.5) is None
    with pytest.raises(ValueError, match="vocab_size >= n_triggers"):
        associative.TriggerTask(vocab_size=3, n_triggers=2)
    with pytest.raises(ValueError, match="inner sizes"):
        associative.association_scores(torch.zeros(2, 3), torch.zeros(4, 5), torch.zeros(6, 5))


def test_recall_prompts_hold_the_pair_and_the_control_breaks_only_the_key(tiny_gpt2):
    batch = recall.associative_recall_prompts(tiny_gpt2, batch=4, n_pairs=2, length=8, seed=0)
    for row, control, answer, key in zip(batch.tokens, batch.corrupted, batch.answers, batch.positions["key"]):
        assert row[key] == row[-1] and row[key + 1] == answer  # "... T x ... T"
        assert control[key] != row[-1] and (control != row).sum() == 1
        assert (row[:-1] == row[-1]).sum() == 1  # the key occurs once before the query
    with pytest.raises(ValueError, match="ordinary tokens"):
        recall.associative_recall_prompts(tiny_gpt2, batch=1, n_pairs=1, length=500, seed=0)


def test_held_out_probe_keeps_triggers_and_bigrams_and_changes_the_rate():
    task = associative.TriggerTask(vocab_size=20, seq_len=16, n_triggers=2, trigger_rate=0.25, seed=3)
    held_task, probe = associative.held_out_probe(task, sequences=8, seed=11, trigger_rate=0.1)
    assert torch.equal(held_task.triggers, task.triggers) and held_task.trigger_rate == 0.1
    rows = task.ordinary
    main = task.transitions[rows][:, rows] / (1 - 0.25)
    torch.testing.assert_close(held_task.transitions[rows][:, rows] / (1 - 0.1), main)
    assert probe.tokens.shape == (8, 16)
    _, again = associative.held_out_probe(task, sequences=8, seed=11, trigger_rate=0.1)
    assert torch.equal(again.tokens, probe.tokens)
    with pytest.raises(ValueError, match="another trigger rate"):
        associative.held_out_probe(task, sequences=8, seed=11, trigger_rate=0.25)


def test_ablation_accuracies_names_the_full_model_and_each_set():
    task = associative.TriggerTask(vocab_size=20, seq_len=16, n_triggers=2, trigger_rate=0.25, seed=3)
    probe = task.sample_triggers(torch.Generator().manual_seed(0), 4)
    model = toy.AttentionOnlyTransformer(toy.ToyConfig(vocab_size=20, n_ctx=16, n_layers=2, n_heads=2, d_model=16,
                                                       d_head=8, seed=0))
    accs = associative.ablation_accuracies(model, probe, task.transitions, {"L1H0": [(1, 0)]})
    assert list(accs) == ["full model", "L1H0"] and set(accs["L1H0"]) == {"in_context", "first_trigger", "bigram",
                                                                          "bigram_oracle"}
