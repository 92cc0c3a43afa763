"""The subword-merge score on hand-built patterns whose answer is known, its control, its errors, and the
experiment's steps on a tiny random model behind SmolLM2's real tokenizer."""

from __future__ import annotations

import pytest
import torch

from helpers import heads
from helpers.experiments import subwords

# two sequences of 12 tokens: words as [start, end) spans (3-piece and 4-piece words among one-piece words)
SPANS = [[(1, 2), (2, 5), (5, 6), (6, 7), (7, 8), (8, 11)], [(1, 2), (2, 3), (3, 4), (4, 8), (8, 9), (9, 10), (10, 11)]]
SEQ_LEN = 12


def pattern_to(keys: torch.Tensor) -> torch.Tensor:
    """[query, key] one-hot pattern: query q attends only to keys[q]."""
    return torch.nn.functional.one_hot(keys, SEQ_LEN).float()


def merge_pattern(spans) -> torch.Tensor:
    """Every query attends to the first piece of its own word (itself outside words)."""
    keys = torch.arange(SEQ_LEN)
    for a, b in spans:
        keys[a:b] = a
    return pattern_to(keys)


def stack(per_sequence: list[torch.Tensor], n_layers: int = 2, n_heads: int = 3) -> torch.Tensor:
    """[layer, batch, head, query, key] with every head uniform causal except those set afterwards."""
    uniform = torch.ones(SEQ_LEN, SEQ_LEN).tril() / torch.arange(1, SEQ_LEN + 1)[:, None]
    patterns = uniform.expand(n_layers, len(per_sequence), n_heads, SEQ_LEN, SEQ_LEN).clone()
    for b, pattern in enumerate(per_sequence):
        patterns[1, b, 2] = pattern  # L1H2: the head under test
        patterns[0, b, 0] = pattern_to((torch.arange(SEQ_LEN) - 1).clamp(min=0))  # L0H0: previous token
    return patterns


def test_cases_pair_each_long_word_with_earlier_words_at_the_same_offset():
    cases = subwords.merge_cases(SPANS)
    assert cases.within.tolist() == [[0, 4, 2], [0, 10, 8], [1, 7, 4]]
    assert set(cases.across_offsets.tolist()) <= {2, 3}
    for b, q, k in cases.across.tolist():  # the key is the first piece of an earlier word
        assert any(a == k for a, _ in SPANS[b]) and any(end - 1 == q for _, end in SPANS[b])
        assert not any(a <= k < end and a <= q < end for a, end in SPANS[b])
    assert [0, 4, 1] in cases.across.tolist()  # "last piece of (2, 5)" -> "first piece of (1, 2)", offset 3


def test_a_last_to_first_piece_head_scores_one_within_and_zero_across():
    patterns = stack([merge_pattern(s) for s in SPANS])
    merged = subwords.merge_scores(patterns, subwords.merge_cases(SPANS))
    assert merged.within[1, 2] == 1.0 and merged.across[1, 2] == 0.0 and merged.score[1, 2] == 1.0
    assert heads.top(merged.score, 1) == [(1, 2)]


def test_a_previous_token_head_scores_zero_at_offsets_of_two_or_more():
    patterns = stack([merge_pattern(s) for s in SPANS])
    merged = subwords.merge_scores(patterns, subwords.merge_cases(SPANS))
    assert merged.within[0, 0] == 0.0 and merged.across[0, 0] == 0.0 and merged.score[0, 0] == 0.0


def test_a_uniform_head_scores_the_difference_of_its_matched_uniform_shares():
    patterns = stack([merge_pattern(s) for s in SPANS])
    cases = subwords.merge_cases(SPANS)
    merged = subwords.merge_scores(patterns, cases)
    within = torch.tensor([1 / (q + 1) for _, q, _ in cases.within.tolist()])
    across = {}
    for _, q, k in cases.across.tolist():
        across.setdefault(q - k, []).append(1 / (q + 1))
    matched = torch.tensor([sum(across[d]) / len(across[d]) for d in cases.within_offsets.tolist()])
    torch.testing.assert_close(merged.score[0, 1], (within - matched).mean())
    assert abs(merged.score[0, 1]) < 0.2  # uniform attention cannot pass the page's threshold


def test_the_screen_passes_only_the_merge_head():
    per_sequence = [merge_pattern(s) for s in SPANS] * 4  # eight sequences: enough cases for an interval
    screen = subwords.screen_from_patterns(stack(per_sequence), SPANS * 4)
    assert screen.passing == [(1, 2)]
    assert screen.lower[1, 2] == 1.0 and screen.n_words == 12


def test_head_score_matches_the_batched_scorer():
    pattern = torch.rand(SEQ_LEN, SEQ_LEN, generator=torch.Generator().manual_seed(0)).tril()
    pattern = pattern / pattern.sum(-1, keepdim=True)
    one = subwords.head_score(pattern, SPANS[0])
    batched = subwords.merge_scores(pattern[None, None, None], subwords.merge_cases(SPANS[:1])).score.item()
    assert one == pytest.approx(batched)
    assert subwords.head_score(merge_pattern(SPANS[0]), SPANS[0]) == 1.0


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="no word of at least 3 pieces"):
        subwords.merge_cases([[(0, 1), (1, 3)]])
    with pytest.raises(ValueError, match="min_pieces must be at least 2"):
        subwords.merge_cases(SPANS, min_pieces=1)
    with pytest.raises(ValueError, match="in order"):
        subwords.merge_cases([[(2, 5), (1, 2)]])
    with pytest.raises(ValueError, match=r"\[layer, batch, head, query, key\]"):
        subwords.merge_scores(torch.rand(2, 3, 12, 12), subwords.merge_cases(SPANS))
    with pytest.raises(ValueError, match="batch 1"):
        subwords.merge_scores(torch.rand(1, 1, 1, 12, 12), subwords.merge_cases(SPANS))
    with pytest.raises(ValueError, match="windows \\[1\\] have nothing"):
        subwords.per_window(torch.ones(2), torch.tensor([0, 0]), 2)


def test_prediction_sites_are_the_positions_before_each_piece():
    continuation, initial = subwords.prediction_sites([[(1, 2), (2, 5)]])
    assert continuation.tolist() == [[0, 2], [0, 3]]  # position p - 1 predicts piece p
    assert initial.tolist() == [[0, 0], [0, 1]]


def test_a_random_model_fails_the_gate_and_the_study_stops_there(tiny_smol):
    sizes = subwords.Sizes(gate_windows=4, screen_windows=4, window_len=48, heldout_windows=4)
    study = subwords.study(tiny_smol, sizes=sizes, seed=0)
    assert not study.gate.passed  # random weights cannot read a word's earlier pieces
    assert study.counts.long_words >= 1 and study.screen.scores.shape == (2, 4)
    row = study.row()
    assert row["model"] == "tiny-smol" and row["ablation"] == "not run (gate failed)"


def test_the_ablation_and_the_held_out_check_run_on_a_tiny_model(tiny_smol):
    sizes = subwords.Sizes(window_len=48, ablation_windows=2, n_random=3, heldout_windows=4, heldout_draws=2)
    ablation = subwords.merge_ablation(tiny_smol, [(1, 2)], windows=2, length=48, n_random=3, seed=0)
    assert ablation.continuation.n_draws == 3 and ablation.continuation.heads == ((1, 2),)
    torch.testing.assert_close(ablation.specific.draws, ablation.continuation.draws - ablation.initial.draws)
    held, held_screen, held_ablation = subwords.held_out(tiny_smol, [(1, 2)], sizes=sizes, seed=0)
    assert held.screen.shape == (2, 4) and held_ablation.continuation.n_draws == 2


def test_long_word_windows_hold_their_word_whole(tiny_smol):
    batch = subwords.long_word_windows(tiny_smol, windows=6, length=40, seed=1)
    assert batch.tokens.shape == (6, 40)
    for row, (start, end) in enumerate(zip(batch.positions["word_start"], batch.positions["word_end"])):
        assert 0 < start and end - start >= 2 and end >= 20 and end < 40
        assert (int(start), int(end) + 1) in subwords.window_spans(tiny_smol, batch.tokens)[row]
    with pytest.raises(ValueError, match="ask for at most"):
        subwords.long_word_windows(tiny_smol, windows=100_000, length=40, seed=1)


def test_a_long_word_without_an_across_pair_at_its_offset_is_dropped():
    cases = subwords.merge_cases([[(1, 2), (2, 5), (5, 6), (6, 7), (7, 11)]])  # offsets 2 and 3; only 3 has pairs
    assert cases.within.tolist() == [[0, 10, 7]]
    with pytest.raises(ValueError, match="no within-word case has an across-word pair"):
        subwords.merge_cases([[(0, 3)]])
