"""Tests for helpers.controls: the random-head draws and the causal check's rank rule.

Draws are checked for what the null needs (from all heads, matched on layer or on a score, seeded); the
check's bookkeeping on hand-made metric values; `ablation_check` against a hand ablation on the tiny
random GPT-2."""

from types import SimpleNamespace

import pytest
import torch

from helpers import capture, controls, tasks
from helpers.experiments import copying


# --- draws ---------------------------------------------------------------------------------------------------

def test_uniform_draws_come_from_all_heads_including_the_found_ones():
    draws = controls.uniform_sets(3, 4, k=2, n_draws=400, seed=0)
    seen = {head for draw in draws for head in draw}
    assert seen == {(layer, head) for layer in range(3) for head in range(4)}  # every head, found ones too
    assert all(len(draw) == 2 and len(set(draw)) == 2 for draw in draws)
    assert draws == controls.uniform_sets(3, 4, k=2, n_draws=400, seed=0)  # seeded
    assert draws != controls.uniform_sets(3, 4, k=2, n_draws=400, seed=1)


def test_uniform_draws_can_leave_out_named_heads_and_say_when_too_few_are_left():
    draws = controls.uniform_sets(3, 4, k=3, n_draws=50, seed=0, exclude=[(0, 0), (1, 1)])
    assert not {head for draw in draws for head in draw} & {(0, 0), (1, 1)}
    with pytest.raises(ValueError, match=r"1 <= k <= 10 \(heads in the pool\).*k=11"):
        controls.uniform_sets(3, 4, k=11, n_draws=1, seed=0, exclude=[(0, 0), (1, 1)])


def test_layer_matched_draws_keep_the_found_heads_layer_counts():
    found = [(2, 0), (2, 3), (5, 1)]
    draws = controls.layer_matched_sets(found, n_heads=4, n_draws=200, seed=0)
    for draw in draws:
        assert sorted(layer for layer, _ in draw) == [2, 2, 5] and len(set(draw)) == 3
    assert {head for draw in draws for head in draw} == {(2, h) for h in range(4)} | {(5, h) for h in range(4)}
    with pytest.raises(ValueError, match=r"at most 1 heads per layer"):
        controls.layer_matched_sets([(0, 0), (0, 1)], n_heads=1, n_draws=1, seed=0)


def test_score_matched_draws_stay_among_the_strongest_heads():
    score = torch.tensor([[5.0, -4.0, 0.1], [0.0, 3.0, -0.2]])  # |score| ranks: L0H0, L0H1, L1H1, ...
    draws = controls.score_matched_sets([(0, 0)], score, n_draws=100, seed=0, pool=3)
    assert {head for draw in draws for head in draw} == {(0, 0), (0, 1), (1, 1)}
    with pytest.raises(ValueError, match=r"pool must lie in \[2, 6\]"):
        controls.score_matched_sets([(0, 0), (0, 1)], score, n_draws=1, seed=0, pool=1)


# --- the check's bookkeeping -----------------------------------------------------------------------------------

def values(top: float, draws: list[float], prompts: int = 3) -> torch.Tensor:
    """Rows clean (1.0), found heads (1 + top), each draw (1 + draw): a [set, prompt] metric."""
    rows = torch.tensor([1.0, 1.0 + top] + [1.0 + d for d in draws])
    return rows[:, None].expand(len(rows), prompts).clone()


def test_p_value_counts_draws_at_least_as_strong_plus_one_over_n_plus_one():
    check = controls.check_from_values(values(2.0, [0.0, 1.0, 2.0, 5.0]), [(0, 1)], metric_name="m", mode="zero-ablated",
                                       null="4 heads")
    torch.testing.assert_close(check.draws, torch.tensor([0.0, 1.0, 2.0, 5.0]))
    assert check.as_strong == 2 and check.p_value == pytest.approx(3 / 5)  # a tie and the 5 count
    assert check.clean.mean == pytest.approx(1.0) and check.top.mean == pytest.approx(2.0)
    assert check.strongest_draw == pytest.approx(5.0) and check.quantile(0.5) == pytest.approx(1.5)


def test_a_drop_counts_draws_that_drop_at_least_as_far():
    check = controls.check_from_values(values(-2.0, [-3.0, -1.0, 0.5]), [(0, 1)], metric_name="m", mode="patched",
                                       null="x", larger_is_stronger=False)
    assert check.as_strong == 1 and check.p_value == pytest.approx(2 / 4) and check.strongest_draw == -3.0


def test_the_smallest_p_is_one_over_draws_plus_one():
    check = controls.check_from_values(values(9.0, [0.0] * 99), [(0, 1)], metric_name="m", mode="x", null="y")
    assert check.n_draws == 99 and check.p_value == pytest.approx(1 / 100)


def test_summary_names_heads_null_draws_and_p():
    check = controls.check_from_values(values(2.0, [0.0, 1.0, 2.0, 5.0]), [[1, 2]], metric_name="loss",
                                       mode="zero-ablated", null="1 head from all 8")
    assert check.heads == ((1, 2),)  # lists are accepted and stored as tuples
    summary = check.summary()
    assert summary.startswith("zero-ablated L1H2: loss changes by") and "4 draws (1 head from all 8)" in summary
    assert "2 as strong, p = 0.6" in summary


def test_values_without_a_draw_are_refused():
    with pytest.raises(ValueError, match=r"rows clean, found heads, draws.*\(2, 3\)"):
        controls.check_from_values(values(1.0, [])[:2], [(0, 1)], metric_name="m", mode="x", null="y")


# --- ablation_check on a real (tiny, random) model -------------------------------------------------------------

FAKE_MODEL = SimpleNamespace(cfg=SimpleNamespace(n_layers=2, n_heads=4))


def test_ablating_no_heads_or_a_head_twice_is_refused():
    with pytest.raises(ValueError, match=r"found is empty.*\(layer, head\)"):
        controls.ablation_check(FAKE_MODEL, torch.zeros(2, 5, dtype=torch.long), [], None, draws=[], null="x",
                                metric_name="m", mode="zero")
    with pytest.raises(ValueError, match=r"found lists L0H1 more than once"):
        controls.ablation_check(FAKE_MODEL, torch.zeros(2, 5, dtype=torch.long), [(0, 1), (0, 1)], None, draws=[],
                                null="x", metric_name="m", mode="zero")


@pytest.fixture(scope="module")
def tiny_repeats(tiny_gpt2):
    return tasks.repeated_tokens(tiny_gpt2, batch=3, half_len=5, seed=0)


def zero_heads_by_hand(model, tokens, heads):
    """Logits with `heads` zeroed at hook_z, one plain forward pass (no batching of head sets)."""
    def hook_for(layer):
        def hook(z, hook=None):
            z = z.clone()
            z[:, :, [h for l, h in heads if l == layer]] = 0.0
            return z
        return hook

    layers = sorted({layer for layer, _ in heads})
    return model.run_with_hooks(tokens, fwd_hooks=[(capture.z_hook(layer), hook_for(layer)) for layer in layers])


def test_ablation_check_matches_a_hand_ablation_on_the_tiny_model(tiny_gpt2, tiny_repeats):
    metric = copying.repeated_half_metric(tiny_repeats)
    found = [(0, 1), (1, 2)]
    draws = controls.uniform_sets(2, 4, 2, 3, seed=0)
    check = controls.ablation_check(tiny_gpt2, tiny_repeats.tokens, found, metric, draws=draws, null="2 of 8",
                                    metric_name="loss", mode="zero", seed=0)
    with torch.no_grad():
        clean = metric(tiny_gpt2(tiny_repeats.tokens), tiny_repeats.tokens)
        ablated = metric(zero_heads_by_hand(tiny_gpt2, tiny_repeats.tokens, found), tiny_repeats.tokens)
        first_draw = metric(zero_heads_by_hand(tiny_gpt2, tiny_repeats.tokens, draws[0]), tiny_repeats.tokens)
    assert check.clean.mean == pytest.approx(clean.mean().item(), abs=1e-5)
    assert check.top.mean == pytest.approx((ablated - clean).mean().item(), abs=1e-5)
    assert check.top.mean != pytest.approx(0.0, abs=1e-6)  # the ablation really changed the model's output
    assert check.draws[0].item() == pytest.approx((first_draw - clean).mean().item(), abs=1e-5)
    assert check.mode == "zero-ablated" and check.n_draws == 3


def test_ablation_check_names_a_head_outside_the_model(tiny_gpt2, tiny_repeats):
    with pytest.raises(ValueError, match=r"head L5H0 is outside this model, which has layers 0\.\.1"):
        controls.ablation_check(tiny_gpt2, tiny_repeats.tokens, [(5, 0)], copying.repeated_half_metric(tiny_repeats),
                                draws=[[(0, 0)]], null="x", metric_name="m", mode="zero")


def test_ablation_check_rejects_an_unknown_mode(tiny_gpt2, tiny_repeats):
    with pytest.raises(ValueError, match=r"mode must be 'zero' or 'mean'; got 'half'"):
        controls.ablation_check(tiny_gpt2, tiny_repeats.tokens, [(0, 0)], copying.repeated_half_metric(tiny_repeats),
                                draws=[[(0, 1)]], null="x", metric_name="m", mode="half")
