import pytest
import torch

from helpers import heads, scores
from synthetic import one_hot_pattern, uniform_causal


def test_pure_previous_token_head_scores_one_and_others_score_zero():
    n_layers, batch, n_heads, seq_len = 2, 3, 4, 10
    patterns = one_hot_pattern(seq_len, 0).expand(n_layers, batch, n_heads, seq_len, seq_len).clone()
    patterns[1, :, 2] = one_hot_pattern(seq_len, 1)  # L1H2 is the only previous-token head

    result = scores.attention_on_targets(patterns, scores.previous_token_targets(batch, seq_len))

    expected = torch.zeros(n_layers, n_heads)
    expected[1, 2] = 1.0
    torch.testing.assert_close(result, expected)


def test_uniform_attention_scores_the_uniform_baseline_derived_on_paper():
    seq_len = 6
    patterns = uniform_causal(seq_len).expand(1, 1, 1, seq_len, seq_len)
    targets = scores.previous_token_targets(1, seq_len)  # queries 1..5 each have one target
    expected = sum(1 / (q + 1) for q in range(1, seq_len)) / (seq_len - 1)

    assert scores.attention_on_targets(patterns, targets).item() == pytest.approx(expected)
    assert scores.uniform_baseline(targets) == pytest.approx(expected)


def test_induction_targets_mark_the_token_after_the_earlier_copy():
    tokens = torch.tensor([[7, 1, 2, 3, 1, 2, 3]])  # BOS-like 7, then "1 2 3" twice
    targets = scores.induction_targets(tokens)
    marked = {(q, k) for q, k in targets[0].nonzero().tolist()}
    # query 4 (second "1") -> key 2 (the "2" after the first "1"), and so on
    assert marked == {(4, 2), (5, 3), (6, 4)}


def test_duplicate_targets_mark_every_earlier_equal_token():
    tokens = torch.tensor([[5, 1, 5, 5]])
    marked = {(q, k) for q, k in scores.duplicate_token_targets(tokens)[0].nonzero().tolist()}
    assert marked == {(2, 0), (3, 0), (3, 2)}


def test_first_query_skips_early_queries():
    targets = scores.previous_token_targets(1, 5, first_query=2)
    assert targets[0, :2].sum() == 0 and targets[0, 2:].sum() == 3


def test_perfect_induction_head_scores_one_on_repeated_tokens():
    half = torch.tensor([3, 9, 4, 8, 2])
    tokens = torch.cat([half, half])[None]
    seq_len = tokens.shape[1]
    pattern = torch.zeros(seq_len, seq_len)
    pattern[: len(half), 0] = 1.0  # first copy rests on position 0
    for q in range(len(half), seq_len):
        pattern[q, q - len(half) + 1] = 1.0  # second copy looks at the token after the earlier copy
    patterns = pattern.expand(1, 1, 1, seq_len, seq_len)

    result = scores.family_scores(patterns, tokens, first_query=2)  # query 1 would count key 0 as previous

    assert result["induction"].item() == pytest.approx(1.0)
    assert result["previous_token"].item() == pytest.approx(0.0)


def test_scores_equal_a_naive_loop_over_heads():
    generator = torch.Generator().manual_seed(0)
    n_layers, batch, n_heads, seq_len = 3, 2, 4, 9
    logits = torch.randn(n_layers, batch, n_heads, seq_len, seq_len, generator=generator)
    patterns = logits.masked_fill(~torch.ones(seq_len, seq_len, dtype=torch.bool).tril(), -torch.inf).softmax(-1)
    tokens = torch.randint(0, 4, (batch, seq_len), generator=generator)
    targets = scores.induction_targets(tokens)

    fast = scores.attention_on_targets(patterns, targets)

    naive = torch.zeros(n_layers, n_heads)
    for layer in range(n_layers):
        for head in range(n_heads):
            values = [patterns[layer, b, head, q][targets[b, q]].sum()
                      for b in range(batch) for q in range(seq_len) if targets[b, q].any()]
            naive[layer, head] = torch.stack(values).mean()
    torch.testing.assert_close(fast, naive)


def test_mismatched_lengths_name_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 7, 7\)"):
        scores.attention_on_targets(torch.rand(1, 2, 3, 8, 8), scores.previous_token_targets(2, 7))


def test_prompts_without_targets_raise_instead_of_scoring_zero():
    tokens = torch.arange(6)[None]  # no token repeats: nothing for an induction head to find
    with pytest.raises(ValueError, match="no query has a target"):
        scores.attention_on_targets(torch.rand(1, 1, 1, 6, 6), scores.induction_targets(tokens))


def test_family_scores_leave_out_families_absent_from_the_prompts():
    tokens = torch.arange(6)[None]
    result = scores.family_scores(uniform_causal(6).expand(1, 1, 1, 6, 6), tokens)
    assert set(result) == {"previous_token", "first_token"}


def test_top_heads_orders_by_score_and_checks_k():
    grid = torch.tensor([[0.1, 0.9], [0.5, 0.9]])
    assert heads.top(grid, 3) == [(0, 1), (1, 1), (1, 0)]
    with pytest.raises(ValueError, match=r"k must lie in \[1, 4\]"):
        heads.top(grid, 5)


def test_top_induction_heads_agree_with_transformer_lens_detect_head(smollm2):
    from transformer_lens.head_detector import detect_head

    sentence = ("The old lighthouse keeper walked along the rocky shore every evening, counting the ships "
                "that passed and writing their names in a worn leather notebook.")
    prompt = sentence + " " + sentence
    tokens = smollm2.to_tokens(prompt)
    from helpers.capture import capture_patterns

    ours = scores.attention_on_targets(capture_patterns(smollm2, tokens), scores.induction_targets(tokens))
    theirs = detect_head(smollm2, prompt, "induction_head")

    assert set(heads.top(ours, 5)) == set(heads.top(theirs.cpu(), 5))
