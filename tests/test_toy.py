"""Tests for helpers.toy and helpers.toy_train: the attention-only toy transformer, its trainer and the
induction data."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers.toy import AttentionOnlyTransformer, ToyConfig
from helpers.toy_train import (
    SegmentTask,
    ToyBatch,
    TrainConfig,
    masked_loss,
    per_position_loss,
    repeated_segment_batch,
    repeated_sequence,
    train,
    train_together,
)

TINY = ToyConfig(vocab_size=10, n_ctx=12, n_layers=2, n_heads=2, d_model=16, d_head=8, seed=0)
TINY_TASK = SegmentTask(seq_len=12, vocab_size=10, min_segment=2, max_segment=5)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Models this small run fastest on one thread: on a shared 2-core CPU, two threads stall at every
    parallel region (measured 10-25x slower), which would push these tests past a second each."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model() -> AttentionOnlyTransformer:
    return AttentionOnlyTransformer(TINY).eval()


def tokens(batch: int, pos: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, TINY.vocab_size, (batch, pos), generator=torch.Generator().manual_seed(seed))


# --- model -------------------------------------------------------------------------------------------------

def test_logits_and_patterns_have_documented_shapes(tiny_model):
    logits, patterns = tiny_model(tokens(3, 7), return_patterns=True)
    assert logits.shape == (3, 7, TINY.vocab_size)
    assert patterns.shape == (TINY.n_layers, 3, TINY.n_heads, 7, 7)  # layer batch head query key
    assert tiny_model(tokens(3, 7)).shape == (3, 7, TINY.vocab_size)


def test_pattern_rows_sum_to_one_and_future_keys_get_zero(tiny_model):
    _, patterns = tiny_model(tokens(2, TINY.n_ctx), return_patterns=True)
    torch.testing.assert_close(patterns.sum(-1), torch.ones(patterns.shape[:-1]))
    future = torch.ones(TINY.n_ctx, TINY.n_ctx, dtype=torch.bool).triu(1)
    assert (patterns[..., future] == 0).all()
    assert (patterns[..., 0, 0] == 1).all()  # the first query can only see itself


def test_layer_norm_variant_keeps_shapes_and_normalised_patterns():
    model = AttentionOnlyTransformer(dataclasses.replace(TINY, layer_norm=True))
    logits, patterns = model(tokens(2, 5), return_patterns=True)
    assert logits.shape == (2, 5, TINY.vocab_size)
    torch.testing.assert_close(patterns.sum(-1), torch.ones(patterns.shape[:-1]))


def test_stacked_weights_have_layer_head_layout_and_match_each_block(tiny_model):
    L, H, D, E = TINY.n_layers, TINY.n_heads, TINY.d_model, TINY.d_head
    assert tiny_model.W_Q.shape == tiny_model.W_K.shape == tiny_model.W_V.shape == (L, H, D, E)
    assert tiny_model.W_O.shape == (L, H, E, D)
    assert tiny_model.W_E.shape == (TINY.vocab_size, D)
    assert tiny_model.W_pos.shape == (TINY.n_ctx, D)
    assert tiny_model.W_U.shape == (D, TINY.vocab_size)
    torch.testing.assert_close(tiny_model.W_V[1, 0], tiny_model.blocks[1].W_V[0].detach())


def test_same_seed_gives_identical_weights_and_other_seed_differs():
    a, b = AttentionOnlyTransformer(TINY), AttentionOnlyTransformer(TINY)
    c = AttentionOnlyTransformer(dataclasses.replace(TINY, seed=1))
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        assert not torch.equal(pa, pc), name


def test_building_a_model_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    AttentionOnlyTransformer(TINY)
    assert torch.equal(before, torch.get_rng_state())


def test_per_position_loss_is_the_cross_entropy_of_the_next_token(tiny_model):
    toks = tokens(2, 6)
    loss = per_position_loss(tiny_model, toks)
    assert loss.shape == (2, 5)
    logits = tiny_model(toks)
    expected = -logits[1, 3].log_softmax(-1)[toks[1, 4]]
    torch.testing.assert_close(loss[1, 3], expected)


# --- data --------------------------------------------------------------------------------------------------

def test_segment_filling_the_sequence_is_copied_and_masked_at_copy_tokens_one_to_len_minus_one():
    # seq_len == 2 * L leaves one placement: first copy at 0, second at L.
    batch = repeated_segment_batch(torch.Generator().manual_seed(0), 4, seq_len=10, vocab_size=7,
                                   min_segment=5, max_segment=5)
    assert torch.equal(batch.tokens[:, 5:], batch.tokens[:, :5])
    expected = torch.tensor([False] * 5 + [True] * 4 + [False]).expand(4, -1)
    assert torch.equal(batch.loss_mask, expected)


def test_masked_positions_are_predictable_from_the_earlier_copy():
    task = SegmentTask(seq_len=30, vocab_size=50, min_segment=3, max_segment=8)
    batch = task.sample(torch.Generator().manual_seed(3), 16)
    for row, mask in zip(batch.tokens, batch.loss_mask):
        masked = mask.nonzero().flatten()
        assert 2 <= len(masked) <= 7 and torch.equal(masked, torch.arange(masked[0], masked[-1] + 1))
        length = len(masked) + 1
        second = row[masked[0]: masked[0] + length]
        # the whole second copy appears earlier, ending before the second copy begins
        earlier = [s for s in range(masked[0] - length + 1) if torch.equal(row[s: s + length], second)]
        assert earlier, f"second copy {second.tolist()} has no earlier occurrence in {row.tolist()}"


def test_segment_length_and_placement_vary_across_the_batch():
    batch = TINY_TASK.sample(torch.Generator().manual_seed(0), 64)
    starts = batch.loss_mask.int().argmax(dim=1)
    lengths = batch.loss_mask.sum(dim=1)
    assert len(starts.unique()) > 3 and len(lengths.unique()) > 2


def test_same_generator_seed_gives_the_same_batch():
    a = TINY_TASK.sample(torch.Generator().manual_seed(5), 8)
    b = TINY_TASK.sample(torch.Generator().manual_seed(5), 8)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.loss_mask, b.loss_mask)


def test_repeated_sequence_repeats_distinct_tokens_and_masks_equal_halves():
    probe = repeated_sequence(torch.Generator().manual_seed(0), 3, half_len=6, vocab_size=8)
    assert probe.tokens.shape == (3, 12)
    assert torch.equal(probe.tokens[:, :6], probe.tokens[:, 6:])
    assert all(len(row[:6].unique()) == 6 for row in probe.tokens)
    assert torch.equal(probe.first_half[0], torch.tensor([True] * 5 + [False] * 7))
    assert torch.equal(probe.second_half[0], torch.tensor([False] * 6 + [True] * 5 + [False]))


# --- training ----------------------------------------------------------------------------------------------

SHORT = TrainConfig(steps=4, batch_size=8, lr=1e-2, eval_every=2, seed=0)


def test_same_seeds_give_bit_identical_losses_and_other_data_seed_differs():
    runs = [train(AttentionOnlyTransformer(TINY), TINY_TASK.sample, config).train_loss
            for config in (SHORT, SHORT, dataclasses.replace(SHORT, seed=1))]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_training_a_trivial_task_lowers_the_loss():
    # Every sequence counts 0, 1, 2, ...: the next token is a function of position alone.
    counting = ToyBatch(tokens=torch.arange(TINY.n_ctx).remainder(TINY.vocab_size).expand(4, -1),
                        loss_mask=(torch.arange(TINY.n_ctx) < TINY.n_ctx - 1).expand(4, -1))
    model = AttentionOnlyTransformer(TINY)
    history = train(model, lambda generator, batch_size: counting,
                    TrainConfig(steps=30, batch_size=4, lr=3e-2, eval_every=30))
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]


def test_history_records_evaluations_at_step_zero_every_n_and_the_end():
    config = dataclasses.replace(SHORT, steps=5, eval_every=2)
    history = train(AttentionOnlyTransformer(TINY), TINY_TASK.sample, config,
                    evaluate=lambda model, step: {"grad_enabled": float(torch.is_grad_enabled())})
    assert len(history.train_loss) == 5
    assert [e["step"] for e in history.evals] == [0, 2, 4, 5]
    assert all(e["grad_enabled"] == 0.0 for e in history.evals)


def reference_training(model: AttentionOnlyTransformer, config: TrainConfig) -> list[float]:
    """The textbook loop, one model, no vmap: AdamW, linear warmup, torch's own gradient clipping."""
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(config.warmup_steps, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    losses = []
    for _ in range(config.steps):
        loss = masked_loss(model, TINY_TASK.sample(generator, config.batch_size))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def test_vectorised_training_matches_the_textbook_loop():
    config = dataclasses.replace(SHORT, steps=6, warmup_steps=3, weight_decay=0.01, grad_clip=0.05)  # clipping bites
    expected = reference_training(AttentionOnlyTransformer(TINY), config)
    got = train(AttentionOnlyTransformer(TINY), TINY_TASK.sample, config).train_loss
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_models_trained_together_train_as_if_alone():
    config = dataclasses.replace(SHORT, steps=6, grad_clip=0.05)  # per-model clipping: a shared norm would differ
    together = [AttentionOnlyTransformer(dataclasses.replace(TINY, seed=seed)) for seed in (0, 1)]
    histories = train_together(together, TINY_TASK.sample, config, data_seeds=(5, 6))
    for seed, data_seed, model, history in zip((0, 1), (5, 6), together, histories):
        alone = AttentionOnlyTransformer(dataclasses.replace(TINY, seed=seed))
        expected = train(alone, TINY_TASK.sample, dataclasses.replace(config, seed=data_seed)).train_loss
        torch.testing.assert_close(torch.tensor(history.train_loss), torch.tensor(expected), rtol=1e-5, atol=1e-6)
        for (name, a), (_, b) in zip(model.state_dict().items(), alone.state_dict().items()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_models_of_different_shapes_or_seed_counts_are_refused():
    models = [AttentionOnlyTransformer(TINY), AttentionOnlyTransformer(dataclasses.replace(TINY, d_head=4))]
    with pytest.raises(ValueError, match=r"differ in parameter shapes"):
        train_together(models, TINY_TASK.sample, SHORT)
    with pytest.raises(ValueError, match=r"data_seeds has 1 entries for 2 models"):
        train_together([AttentionOnlyTransformer(TINY)] * 2, TINY_TASK.sample, SHORT, data_seeds=(0,))
    with pytest.raises(ValueError, match=r"models is empty"):
        train_together([], TINY_TASK.sample, SHORT)


def test_training_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    train(AttentionOnlyTransformer(TINY), TINY_TASK.sample, SHORT)
    assert torch.equal(before, torch.get_rng_state())


# --- bad input ---------------------------------------------------------------------------------------------

def test_tokens_longer_than_the_context_are_refused(tiny_model):
    with pytest.raises(ValueError, match=r"13 positions but n_ctx is 12"):
        tiny_model(tokens(1, 13))


def test_out_of_vocabulary_and_non_integer_tokens_are_refused(tiny_model):
    with pytest.raises(ValueError, match=r"0\.\.10.*expected 0\.\.9"):
        tiny_model(torch.tensor([[0, 10]]))
    with pytest.raises(ValueError, match=r"integer tensor \[batch, pos\], got \(4,\)"):
        tiny_model(torch.arange(4))
    with pytest.raises(ValueError, match=r"integer tensor.*float32"):
        tiny_model(torch.zeros(1, 4))


def test_segment_lengths_that_do_not_fit_are_refused():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"seq_len=9 cannot hold two copies.*max_segment=5.*seq_len >= 10"):
        repeated_segment_batch(g, 2, seq_len=9, vocab_size=10, min_segment=2, max_segment=5)
    with pytest.raises(ValueError, match=r"min_segment=6, max_segment=5"):
        repeated_segment_batch(g, 2, seq_len=20, vocab_size=10, min_segment=6, max_segment=5)
    with pytest.raises(ValueError, match=r"min_segment=1"):
        repeated_segment_batch(g, 2, seq_len=20, vocab_size=10, min_segment=1, max_segment=5)


def test_probe_longer_than_the_vocabulary_is_refused():
    with pytest.raises(ValueError, match=r"half_len <= vocab_size=8.*got half_len=9"):
        repeated_sequence(torch.Generator().manual_seed(0), 1, half_len=9, vocab_size=8)


def test_bad_loss_masks_are_refused(tiny_model):
    toks = tokens(2, 5)
    with pytest.raises(ValueError, match=r"last column False"):
        ToyBatch(tokens=toks, loss_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(2, 4\)"):
        ToyBatch(tokens=toks, loss_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"marks no position"):
        masked_loss(tiny_model, ToyBatch(tokens=toks, loss_mask=torch.zeros(2, 5, dtype=torch.bool)))


def test_bad_train_and_model_configs_are_refused():
    with pytest.raises(ValueError, match=r"must be positive, got 0"):
        train(AttentionOnlyTransformer(TINY), TINY_TASK.sample, dataclasses.replace(SHORT, steps=0))
    with pytest.raises(ValueError, match=r"ToyConfig.n_heads must be a positive integer, got 0"):
        AttentionOnlyTransformer(dataclasses.replace(TINY, n_heads=0))
