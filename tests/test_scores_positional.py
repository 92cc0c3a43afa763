"""`scores.argmax_offset_shares`: the histogram of where each head's strongest attention falls, checked on
hand-built patterns whose answer is known, against a naive loop, and on the inputs it must refuse."""

from __future__ import annotations

import pytest
import torch

from helpers import scores


def one_hot_pattern(seq_len: int, offset: int) -> torch.Tensor:
    """[query, key] pattern attending to key q - offset (key 0 when q < offset)."""
    keys = (torch.arange(seq_len) - offset).clamp(min=0)
    return torch.nn.functional.one_hot(keys, seq_len).float()


def sink_pattern(seq_len: int) -> torch.Tensor:
    """Every query puts 0.7 on position 0 and spreads the rest over the other visible keys."""
    pattern = torch.ones(seq_len, seq_len).tril()
    pattern[:, 0] = 0.0
    pattern = 0.3 * pattern / pattern.sum(-1, keepdim=True).clamp(min=1)
    pattern[:, 0] += 0.7
    pattern[0, 0] = 1.0
    return pattern


def content_pattern(tokens: torch.Tensor) -> torch.Tensor:
    """A content head: each query attends to the latest earlier key holding its own token, else to itself."""
    seq_len = len(tokens)
    pattern = torch.zeros(seq_len, seq_len)
    for q in range(seq_len):
        earlier = [k for k in range(q) if tokens[k] == tokens[q]]
        pattern[q, earlier[-1] if earlier else q] = 1.0
    return pattern


def shares_of(pattern: torch.Tensor, *, first_query: int = 4, max_offset: int = 3) -> torch.Tensor:
    return scores.argmax_offset_shares(pattern[None, None, None], first_query=first_query, max_offset=max_offset)[0, 0]


def naive_shares(patterns: torch.Tensor, first_query: int, max_offset: int) -> torch.Tensor:
    n_layers, batch, n_heads, seq_len, _ = patterns.shape
    out = torch.zeros(n_layers, n_heads, max_offset + 3)
    for layer in range(n_layers):
        for head in range(n_heads):
            for b in range(batch):
                for q in range(first_query, seq_len):
                    k = int(patterns[layer, b, head, q].argmax())
                    if k == 0:
                        out[layer, head, max_offset + 1] += 1
                    elif 0 <= q - k <= max_offset:
                        out[layer, head, q - k] += 1
                    else:
                        out[layer, head, max_offset + 2] += 1
    return out / (batch * (seq_len - first_query))


def test_pure_previous_token_head_scores_one_at_offset_one():
    expected = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(shares_of(one_hot_pattern(12, 1)), expected)


def test_pure_self_attention_head_scores_one_at_offset_zero():
    torch.testing.assert_close(shares_of(torch.eye(12)), torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0]))


def test_first_position_sink_scores_one_in_the_first_position_bin():
    torch.testing.assert_close(shares_of(sink_pattern(12)), torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 0.0]))


def test_offsets_beyond_max_offset_fall_elsewhere_and_max_offset_itself_has_a_bin():
    torch.testing.assert_close(shares_of(one_hot_pattern(12, 3)), torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0]))
    # from query 6 on, key q - 5 is never position 0
    torch.testing.assert_close(shares_of(one_hot_pattern(12, 5), first_query=6),
                               torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 1.0]))


def test_each_head_gets_its_own_histogram_in_layer_head_order():
    seq_len, batch = 10, 2
    patterns = torch.eye(seq_len).expand(2, batch, 3, seq_len, seq_len).clone()  # every head attends to itself
    patterns[0, :, 1] = one_hot_pattern(seq_len, 2)
    patterns[1, :, 2] = sink_pattern(seq_len)
    got = scores.argmax_offset_shares(patterns, first_query=4, max_offset=3)
    expected = torch.zeros(2, 3, 6)
    expected[:, :, 0] = 1.0
    expected[0, 1] = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    expected[1, 2] = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    torch.testing.assert_close(got, expected)


def test_a_head_that_mixes_two_offsets_gets_each_its_share():
    seq_len = 10
    pattern = one_hot_pattern(seq_len, 1)
    pattern[6:] = one_hot_pattern(seq_len, 2)[6:]  # queries 6..9 look two back, queries 4, 5 one back
    torch.testing.assert_close(shares_of(pattern), torch.tensor([0.0, 2 / 6, 4 / 6, 0.0, 0.0, 0.0]))


def test_matches_a_naive_loop_on_random_patterns_and_bins_sum_to_one():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 5, 11, 11, generator=generator) * 3
    causal = torch.ones(11, 11, dtype=torch.bool).tril()
    patterns = logits.masked_fill(~causal, -torch.inf).softmax(-1)
    for first_query, max_offset in ((4, 3), (2, 1), (7, 5)):
        got = scores.argmax_offset_shares(patterns, first_query=first_query, max_offset=max_offset)
        torch.testing.assert_close(got, naive_shares(patterns, first_query, max_offset))
        torch.testing.assert_close(got.sum(-1), torch.ones(3, 5))


def test_a_content_head_changes_bins_when_the_content_changes():
    period_two = torch.tensor([5, 6] * 8)
    period_three = torch.tensor([5, 6, 7] * 6)[:16]
    on_two, on_three = shares_of(content_pattern(period_two)), shares_of(content_pattern(period_three))
    assert on_two[2] == 1.0 and on_three[3] == 1.0 and on_two[3] == 0.0 and on_three[2] == 0.0


def test_ties_go_to_the_earliest_key():
    uniform = torch.ones(8, 8).tril() / torch.arange(1, 9)[:, None]
    torch.testing.assert_close(shares_of(uniform), torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 0.0]))


def test_bin_names_follow_the_layout():
    assert scores.argmax_bin_names(2) == ["offset 0 (itself)", "offset 1", "offset 2", "first position", "elsewhere"]


@pytest.mark.parametrize("max_offset", [0, -1, 1.5, True])
def test_max_offset_below_one_is_refused(max_offset):
    with pytest.raises(ValueError, match="max_offset must be an integer >= 1"):
        scores.argmax_offset_shares(torch.eye(8).expand(1, 1, 1, 8, 8), first_query=4, max_offset=max_offset)


def test_wrong_shapes_name_the_shape():
    with pytest.raises(ValueError, match=r"\(1, 8, 8\)"):
        scores.argmax_offset_shares(torch.eye(8).expand(1, 8, 8), first_query=4, max_offset=3)
    with pytest.raises(ValueError, match=r"\(1, 1, 1, 8, 9\)"):
        scores.argmax_offset_shares(torch.rand(1, 1, 1, 8, 9), first_query=4, max_offset=3)


@pytest.mark.parametrize("first_query", [3, 0, 8, 20])
def test_first_query_where_offsets_meet_position_zero_or_past_the_end_is_refused(first_query):
    with pytest.raises(ValueError, match=r"first_query must lie in \[4, 8\)"):
        scores.argmax_offset_shares(torch.eye(8).expand(1, 1, 1, 8, 8), first_query=first_query, max_offset=3)
