"""Duplicate-head screen on hand-built attention with known answers, and on the tiny random models."""

import pytest
import torch

from helpers import capture
from helpers.experiments import duplicate, ioi


def test_attention_at_reads_the_key_of_each_prompt():
    """2 layers, 3 prompts, 2 heads, 5 keys: L1H0 puts all attention on key 1 of every prompt (its 'S1')."""
    attention = torch.full((2, 3, 2, 5), 0.2)
    attention[1, :, 0] = 0.0
    attention[1, :, 0, 1] = 1.0
    out = duplicate.attention_at(attention, torch.tensor([1, 1, 1]))
    assert out.shape == (2, 2, 3)
    assert torch.equal(out[1, 0], torch.ones(3))
    assert torch.allclose(out[0], torch.full((2, 3), 0.2))
    assert torch.equal(duplicate.attention_at(attention, torch.tensor([0, 2, 4]))[1, 0], torch.zeros(3))


def test_attention_at_rejects_bad_keys():
    with pytest.raises(ValueError, match="keys must lie"):
        duplicate.attention_at(torch.rand(1, 2, 1, 4), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="batch"):
        duplicate.attention_at(torch.rand(1, 2, 1, 4), torch.tensor([0, 1, 2]))


def _screen(ioi, ioi_control, repeat, repeat_control):
    return duplicate.DuplicateScreen(*(torch.tensor(x) for x in (ioi, ioi_control, repeat, repeat_control)))


def test_pass_rule_needs_both_tasks_and_a_clean_control():
    """Four heads: (0,0) passes; (0,1) looks back on IOI only; (1,0) also looks there without the repeat
    (control 0.15 > score / 5); (1,1) passes at the threshold (0.3 vs control 0.05: ratio 6)."""
    screen = _screen([[0.9, 0.8], [0.6, 0.3]], [[0.01, 0.0], [0.15, 0.05]],
                     [[0.7, 0.05], [0.5, 0.4]], [[0.02, 0.0], [0.0, 0.0]])
    assert torch.allclose(screen.score, torch.tensor([[0.7, 0.05], [0.5, 0.3]]))
    assert torch.allclose(screen.control, torch.tensor([[0.02, 0.0], [0.15, 0.05]]))
    assert duplicate.passing_heads(screen) == [(0, 0), (1, 1)]
    assert duplicate.passing_heads(screen, ratio=3.0) == [(0, 0), (1, 0), (1, 1)]
    assert duplicate.passing_heads(screen, threshold=0.31) == [(0, 0)]
    assert duplicate.ablated_heads(screen, [], 2) == [(0, 0), (1, 0)]  # none pass: the best scores instead
    assert duplicate.ablated_heads(screen, [(1, 1), (0, 0)], 1) == [(1, 1)]


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama_gqa"])
def test_planted_repeat_really_repeats(fixture, request):
    model = request.getfixturevalue(fixture)
    batch = duplicate.planted_repeat(model, batch=6, length=12, seed=3)
    first, second = batch.positions["first"], batch.positions["second"]
    rows = torch.arange(6)
    assert (second == batch.tokens.shape[1] - 1).all() and (first < second - 2).all()
    assert torch.equal(batch.tokens[rows, second], batch.tokens[rows, first])
    assert torch.equal(batch.tokens[:, :-1], batch.corrupted[:, :-1])  # the control differs only at the repeat
    start = 1 if model.cfg.default_prepend_bos else 0
    assert (first >= start).all()
    again = duplicate.planted_repeat(model, batch=6, length=12, seed=3)
    assert torch.equal(again.tokens, batch.tokens)


def test_attention_between_matches_the_full_pattern(tiny_gpt2):
    """Grouping prompts by query position must give the same numbers as the full attention pattern."""
    tokens = duplicate.planted_repeat(tiny_gpt2, batch=4, length=10, seed=0).tokens
    queries, keys = torch.tensor([5, 9, 5, 7]), torch.tensor([2, 0, 5, 3])
    out = duplicate.attention_between(tiny_gpt2, tokens, queries, keys)
    full = capture.capture_patterns(tiny_gpt2, tokens)  # [layer, batch, head, query, key]
    expected = torch.stack([full[:, b, :, queries[b], keys[b]] for b in range(4)], dim=-1)
    assert torch.allclose(out, expected, atol=1e-5)
    with pytest.raises(ValueError, match="later key"):
        duplicate.attention_between(tiny_gpt2, tokens, queries, torch.tensor([6, 0, 0, 0]))


def test_held_out_scores_s2_to_s1_on_the_held_out_ioi_family_and_reruns_the_check(smollm2):
    sizes = duplicate.Sizes(heldout_prompts=4, heldout_draws=3)
    held = duplicate.held_out(smollm2, [(8, 1), (2, 4)], sizes=sizes, seed=0)
    data = ioi.held_out_data(smollm2, n=4, seed=0)
    s1, s2 = data.positions["s1"], data.positions["s2"]
    torch.testing.assert_close(held.screen, duplicate.attention_between(smollm2, data.tokens, s2, s1).mean(-1))
    assert held.check.n_draws == 3 and held.family == duplicate.HELD_OUT_FAMILY
    assert duplicate.held_out(smollm2, [(8, 1)], sizes=duplicate.Sizes(heldout_prompts=4, heldout_draws=0),
                              seed=0).check is None
