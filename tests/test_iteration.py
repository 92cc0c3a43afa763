"""The iteration page's task, targets, score, behaviour reads and ablation, on synthetic ground truth."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers import scores, toy
from helpers.experiments import iteration

PARITY = iteration.PARITY


def fixed(inputs: list[list[int]], lengths: list[int], task=PARITY) -> iteration.IterationBatch:
    padded = torch.zeros(len(inputs), task.max_len, dtype=torch.long)
    for row, values in enumerate(inputs):
        padded[row, : len(values)] = torch.tensor(values)
    return task.write(padded, torch.tensor(lengths))


def test_parity_chain_is_written_after_the_end_of_input_mark_and_padded():
    batch = fixed([[0, 1, 1, 0, 1]], [5])
    s = iteration.N_SYMBOLS  # state tokens start here
    expected = [0, 1, 1, 0, 1, iteration.EOI, s, s + 1, s, s, s + 1] + [iteration.PAD] * 6
    assert batch.tokens[0].tolist() == expected
    assert batch.states[0, :5].tolist() == [0, 1, 0, 0, 1] and batch.answers.tolist() == [s + 1]
    assert batch.predicts_state[0].nonzero().flatten().tolist() == [5, 6, 7, 8, 9]


def test_without_the_chain_only_the_answer_follows_the_mark():
    batch = fixed([[1, 1, 0]], [3], dataclasses.replace(PARITY, cot=False))
    assert batch.tokens[0, :5].tolist() == [1, 1, 0, iteration.EOI, iteration.N_SYMBOLS]
    assert (batch.tokens[0, 5:] == iteration.PAD).all()
    assert batch.predicts_state[0].nonzero().flatten().tolist() == [3]


def test_running_sum_mod_three_and_sampled_batches_follow_the_recursion():
    task = dataclasses.replace(PARITY, modulus=3)
    batch = task.sequences(torch.Generator().manual_seed(0), 64)
    for row in range(64):
        length = int(batch.lengths[row])
        xs = batch.inputs[row, :length].tolist()
        assert batch.states[row, :length].tolist() == [sum(xs[: t + 1]) % 3 for t in range(length)]
        assert batch.tokens[row, length] == iteration.EOI
        assert batch.tokens[row, 2 * length] == batch.answers[row]
    assert set(batch.lengths.tolist()) > {1, 8} and batch.inputs.max() == 2


def test_same_generator_seed_gives_the_same_batch():
    a = PARITY.sample(torch.Generator().manual_seed(3), 8)
    b = PARITY.sample(torch.Generator().manual_seed(3), 8)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.loss_mask, b.loss_mask)


def step_to_input(lengths: list[int], n_pos: int, shift: int = 0) -> torch.Tensor:
    """[batch, query, key] patterns: the queries predicting a state look only at input t + shift (at
    themselves when there is no such input); the rest look at themselves."""
    patterns = torch.eye(n_pos).repeat(len(lengths), 1, 1)
    for row, length in enumerate(lengths):
        for q in range(length, 2 * length):
            key = q - length + shift
            patterns[row, q] = 0.0
            patterns[row, q, key if 0 <= key < length else q] = 1.0
    return patterns


def test_targets_pair_the_query_predicting_s_t_with_input_t():
    targets = iteration.iteration_targets(torch.tensor([3]), 7)[0]
    assert targets.nonzero().tolist() == [[3, 0], [4, 1], [5, 2]]
    later = iteration.iteration_targets(torch.tensor([3]), 7, shift=1)[0]
    assert later.nonzero().tolist() == [[3, 1], [4, 2]]  # the last step has no next input
    earlier = iteration.iteration_targets(torch.tensor([3]), 7, shift=-1)[0]
    assert earlier.nonzero().tolist() == [[4, 0], [5, 1]]


def test_pure_iteration_head_scores_one_and_a_shifted_head_scores_zero():
    lengths, n_pos = [5, 3, 8], 17
    patterns = torch.stack([step_to_input(lengths, n_pos)] * 2)[:, :, None].repeat(1, 1, 2, 1, 1)
    patterns[0, :, 1] = step_to_input(lengths, n_pos, shift=1)  # L0H1 looks one input ahead
    patterns[1, :, 0] = step_to_input(lengths, n_pos, shift=-1)  # L1H0 one behind; L0H0, L1H1 on target

    screen = iteration.iteration_screen(patterns, torch.tensor(lengths))

    torch.testing.assert_close(screen.score, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert screen.control[0, 0] == 0 and screen.control[0, 1] == 1 and screen.control[1, 0] == 1
    assert screen.passing == [(0, 0), (1, 1)]


def test_uniform_attention_scores_the_mean_of_one_over_visible_keys_and_fails():
    lengths, n_pos = [4], 9
    patterns = (torch.ones(n_pos, n_pos).tril() / torch.arange(1, n_pos + 1)[:, None])[None, None, None]
    screen = iteration.iteration_screen(patterns, torch.tensor(lengths))
    expected = sum(1 / (q + 1) for q in range(4, 8)) / 4
    assert screen.score[0, 0].item() == pytest.approx(expected)
    assert screen.passing == []


def test_score_matches_a_naive_loop_over_heads():
    lengths = torch.tensor([2, 5, 8])
    patterns = torch.rand(2, 3, 2, 17, 17).tril().softmax(-1)
    patterns = patterns.masked_fill(torch.ones(17, 17).triu(1).bool(), 0)
    patterns = patterns / patterns.sum(-1, keepdim=True)
    got = iteration.iteration_screen(patterns, lengths).score
    for layer in range(2):
        for head in range(2):
            shares = [patterns[layer, b, head, q, q - int(L)].item()
                      for b, L in enumerate(lengths) for q in range(int(L), 2 * int(L))]
            assert got[layer, head].item() == pytest.approx(sum(shares) / len(shares), abs=1e-6)


def test_bad_lengths_and_inputs_are_refused_with_what_was_received():
    with pytest.raises(ValueError, match=r"2 L <= n_pos=7"):
        iteration.iteration_targets(torch.tensor([4]), 7)
    with pytest.raises(ValueError, match="lengths must lie in 1..8"):
        PARITY.write(torch.zeros(1, 8, dtype=torch.long), torch.tensor([9]))
    with pytest.raises(ValueError, match="inputs must lie in 0..1"):
        PARITY.write(torch.full((1, 8), 2), torch.tensor([3]))
    with pytest.raises(ValueError, match="modulus must lie in 2..3"):
        iteration.IterationTask(modulus=5)


class Oracle(torch.nn.Module):
    """A 'model' that predicts every next token of the true chain: greedy decoding must reproduce it."""

    def __init__(self, batch: iteration.IterationBatch) -> None:
        super().__init__()
        self.batch = batch

    def forward(self, tokens):
        logits = torch.full((*tokens.shape, iteration.VOCAB_SIZE), -10.0)
        rows = torch.arange(tokens.shape[0])
        for step in range(tokens.shape[1] - 1):
            length = self.batch.lengths
            t = step - length  # state index predicted at position step
            valid = (t >= 0) & (t < length)
            # the oracle reads the state from the tokens it has been fed, then adds the next input
            previous = torch.where(t > 0, tokens[rows, step] - iteration.N_SYMBOLS, torch.zeros_like(t))
            nxt = (previous + self.batch.inputs.clamp(min=0).gather(1, t.clamp(0, 7)[:, None]).flatten()) % 2
            logits[rows[valid], step, (iteration.N_SYMBOLS + nxt)[valid]] = 10.0
        return logits


def test_greedy_decoding_of_a_perfect_model_gets_every_answer_and_a_wrong_first_step_propagates():
    batch = PARITY.sequences(torch.Generator().manual_seed(1), 32)
    assert iteration.final_answer_correct(Oracle(batch), batch).all()
    assert iteration.step_accuracy(Oracle(batch)(batch.tokens), batch).eq(1).all()


def test_zero_ablating_no_head_changes_nothing_and_every_head_ablation_is_reported():
    model = toy.AttentionOnlyTransformer(dataclasses.replace(iteration.ITERATION_TOY, seed=0)).eval()
    batch = PARITY.sequences(torch.Generator().manual_seed(2), 8)
    with torch.no_grad():
        plain = iteration.step_accuracy(model(batch.tokens), batch)
    torch.testing.assert_close(iteration.ablated_step_accuracy(model, batch, []), plain)
    table = iteration.single_head_ablations(model, batch)
    assert table.shape == (2, 2)
    assert iteration.ablation_rank_p(torch.tensor([[0.9, 0.8], [0.2, 0.95]]), (1, 0)) == 0.25
    assert iteration.ablation_rank_p(torch.tensor([[0.9, 0.8], [0.2, 0.95]]), (0, 0)) == 0.75
