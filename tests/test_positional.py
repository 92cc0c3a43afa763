"""The positional page's experiment: the pass rule on hand-built shares, the unigram null of the gate, and the
whole study on a tiny random model (which fails the gate, so no head hunting follows)."""

from __future__ import annotations

import pytest
import torch

from helpers.experiments import findings_table, positional


def grid(entries: dict[tuple[int, int], tuple[int, float]], n_layers: int = 2, n_heads: int = 3) -> torch.Tensor:
    """[layer, head, 6] shares: listed heads hold `share` in `bin`, the rest spread evenly; others uniform."""
    shares = torch.full((n_layers, n_heads, 6), 1 / 6)
    for (layer, head), (where, share) in entries.items():
        shares[layer, head] = (1 - share) / 5
        shares[layer, head, where] = share
    return shares


def test_a_head_in_the_same_bin_on_both_texts_passes_with_the_lower_share():
    random, prose = grid({(1, 2): (1, 0.99)}), grid({(1, 2): (1, 0.93)})
    score, where = positional.agreement(random, prose)
    assert positional.passing_heads(random, prose) == [(1, 2)]
    assert score[1, 2] == pytest.approx(0.93) and where[1, 2] == 1


def test_a_content_head_that_changes_bin_between_texts_fails_and_is_a_near_miss():
    random, prose = grid({(0, 1): (1, 0.97)}), grid({(0, 1): (0, 0.97)})
    screened = positional.PositionalScreen(random=random, prose=prose)
    assert screened.passing == []
    assert screened.near_misses() == [(0, 1)] and screened.near_misses(offsets_only=True) == [(0, 1)]
    assert screened.describe((0, 1)) == "L0H1: offset 1 0.97 on random tokens, offset 0 (itself) 0.97 on prose"


def test_the_elsewhere_bin_is_not_a_fixed_position():
    random = prose = grid({(0, 0): (5, 1.0)})
    assert positional.passing_heads(random, prose) == []


def test_near_misses_are_strong_on_one_text_and_can_be_limited_to_offsets():
    random = grid({(0, 0): (4, 1.0), (0, 2): (2, 0.95), (1, 1): (1, 0.85), (1, 2): (1, 0.99)})
    prose = grid({(0, 0): (4, 0.6), (0, 2): (2, 0.95), (1, 1): (1, 0.85), (1, 2): (1, 0.5)})
    screened = positional.PositionalScreen(random=random, prose=prose)
    assert screened.passing == [(0, 2)]
    assert screened.near_misses() == [(0, 0), (1, 2), (1, 1)]
    assert screened.near_misses(offsets_only=True) == [(1, 2), (1, 1)]
    assert screened.near_misses(0.9) == [(0, 0), (1, 2)]


def test_sinks_pass_but_are_not_offset_heads_and_bins_are_counted():
    random = grid({(0, 0): (4, 1.0), (1, 0): (1, 0.95), (1, 1): (0, 0.91)})
    prose = grid({(0, 0): (4, 0.99), (1, 0): (1, 0.96), (1, 1): (0, 0.92)})
    screened = positional.PositionalScreen(random=random, prose=prose)
    assert screened.passing == [(0, 0), (1, 0), (1, 1)]
    assert screened.sink_heads() == [(0, 0)]
    assert screened.offset_heads() == [(1, 0), (1, 1)] and screened.offset_heads(1) == [(1, 0)]
    assert screened.by_bin() == {"offset 0 (itself)": 1, "offset 1": 1, "offset 2": 0, "offset 3": 0,
                                 "first position": 1}


def test_agreement_refuses_shares_of_another_layout():
    with pytest.raises(ValueError, match=r"\[layer, head, 6\].*\(2, 3, 5\)"):
        positional.agreement(torch.rand(2, 3, 5), torch.rand(2, 3, 5))


def test_unigram_losses_are_minus_log_frequency_and_refuse_unseen_tokens():
    counts = torch.tensor([2, 6, 0, 0])
    losses = positional.unigram_losses(counts, torch.tensor([[0, 1, 1]]))
    torch.testing.assert_close(losses, -torch.log(torch.tensor([[0.25, 0.75, 0.75]])))
    with pytest.raises(ValueError, match="never occur in the counted corpus"):
        positional.unigram_losses(counts, torch.tensor([[0, 2]]))


def test_the_study_runs_on_a_tiny_model_and_fills_a_findings_row(tiny_smol):
    sizes = positional.Sizes(gate_windows=6, gate_len=8, screen_prompts=2, screen_len=10, ablation_prompts=2,
                             ablation_len=8, top_k=2, n_random=2, heldout_prompts=2, heldout_draws=2)
    done = positional.study(tiny_smol, sizes=sizes, seed=0)
    assert done.model == "tiny-smol" and not done.gate.passed and done.ablation is None
    assert done.screen.random.shape == (2, 4, 6)
    torch.testing.assert_close(done.screen.prose.sum(-1), torch.ones(2, 4))
    assert list(findings_table(done).index) == ["tiny-smol"] and done.checks() == {}


def test_the_ablation_and_held_out_steps_run_on_a_tiny_model(tiny_smol):
    sizes = positional.Sizes(screen_prompts=2, screen_len=10, ablation_prompts=2, ablation_len=8, n_random=3,
                             heldout_prompts=2, heldout_draws=2)
    found = [(1, 0), (0, 3)]
    ablation = positional.prose_ablation(tiny_smol, found, prompts=2, length=8, n_random=3, seed=0)
    assert ablation.prose.n_draws == 3 and ablation.prose.heads == tuple(found)
    assert ablation.specific.top.mean == pytest.approx(ablation.prose.top.mean - ablation.random.top.mean, abs=1e-4)
    screened = positional.screen(tiny_smol, prompts=2, length=10, seed=0)
    held = positional.held_out(tiny_smol, screened, found, sizes=sizes, seed=0)
    assert held.check.screen.shape == (2, 4) and held.check.check.n_draws == 2
    assert set(held.kept()) <= set(found)
    done = positional.Study(model="tiny-smol", gate=positional.prose_gate(tiny_smol, windows=4, length=8, seed=0),
                            screen=screened, ablation=ablation, held_out=held)
    assert list(done.checks()) == ["prose", "random tokens", "prose minus random tokens", "held-out prose"]
    row = done.row()
    assert row["held-out: keep their bin >= 0.9"].endswith("of 2") and "p = " in row["held-out ablation (p)"]


def test_random_bin_shares_read_the_prose_share_in_the_random_tokens_bin():
    random = grid({(0, 0): (1, 0.95), (1, 2): (0, 0.85)})
    prose = grid({(0, 0): (1, 0.92), (1, 2): (3, 0.9)})
    on_random, on_prose = positional.PositionalScreen(random=random, prose=prose).random_bin_shares()
    assert on_random[0, 0] == pytest.approx(0.95) and on_prose[0, 0] == pytest.approx(0.92)
    assert on_random[1, 2] == pytest.approx(0.85) and on_prose[1, 2] == pytest.approx(0.02)  # (1 - 0.9) / 5
    passing = (on_random >= positional.THRESHOLD) & (on_prose >= positional.THRESHOLD)
    assert passing.nonzero().tolist() == [[0, 0]] and positional.passing_heads(random, prose) == [(0, 0)]
