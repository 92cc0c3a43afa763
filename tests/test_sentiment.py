"""Tests for helpers.experiments.sentiment: the direction, the shift scores, the mean ablation, p-values, and
one tiny-model run of each step."""

import pytest
import torch

from helpers import checks, reviews
from helpers.experiments import sentiment as st


def test_mean_difference_ignores_neutral_rows_and_weights_classes_apart():
    acts = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [9.0, 9.0]])
    sentiment = torch.tensor([1, 1, -1, 0])
    torch.testing.assert_close(st.mean_difference(acts, sentiment), torch.tensor([2.0, -2.0]))
    with pytest.raises(ValueError, match="positive and negative"):
        st.mean_difference(acts, torch.tensor([1, 1, 0, 0]))


def test_separation_accuracy_counts_the_right_side():
    acts = torch.tensor([[2.0], [1.0], [-1.0], [0.5]])
    assert st.separation_accuracy(acts, torch.tensor([1, 1, -1, -1]), torch.tensor([1.0]), 0.0) == 0.75


def test_random_units_are_unit_and_seeded():
    a, b = st.random_units(4, 8, seed=3), st.random_units(4, 8, seed=3)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(4))


def test_shift_scores_is_positive_minus_negative():
    projections = torch.zeros(1, 4, 2, 3, 1)  # [layer, batch, where, head, n]
    projections[0, :2, 1, 2, 0] = 5.0  # head 2 writes 5 at the second position on positive prompts
    shift = st.shift_scores(projections, torch.tensor([1, 1, -1, -1]))
    assert shift.shape == (1, 3, 2, 1) and shift[0, 2, 1, 0] == 5.0 and shift.abs().sum() == 5.0


def test_projection_out_hooks_set_the_component_to_its_group_mean():
    class Cfg:
        n_layers = 1

    class Model:
        cfg = Cfg()

    x = torch.randn(4, 3, 5)  # two groups of two rows
    u = torch.zeros(4, 1, 5)
    u[:, 0, 1] = 1.0
    masks = torch.tensor([[0.0, 1.0, 0.0]] * 4)
    (_, hook), = st.projection_out_hooks(Model(), u, masks, batch=2)
    out = hook(x.clone())
    torch.testing.assert_close(out[:, [0, 2]], x[:, [0, 2]])
    torch.testing.assert_close(out[:, 1, [0, 2, 3, 4]], x[:, 1, [0, 2, 3, 4]])
    torch.testing.assert_close(out[:2, 1, 1], x[:2, 1, 1].mean().expand(2))
    torch.testing.assert_close(out[2:, 1, 1], x[2:, 1, 1].mean().expand(2))
    expected = checks.sentiment.reference_mean_ablate(x[:2, 1], u[0, 0])
    torch.testing.assert_close(out[:2, 1], expected)


def test_direction_ablation_p_value_counts_ties():
    ablation = st.DirectionAblation(clean=torch.tensor([2.0, 2.0]), ablated={"all": torch.tensor([1.0, 1.0])},
                                    random={"all": torch.tensor([1.0, 2.0, 0.5])})
    assert ablation.removed("all") == 0.5
    assert ablation.p_value("all") == (2 + 1) / 4


def test_each_step_runs_on_a_tiny_model(tiny_smol):
    passed = st.gate(tiny_smol, pairs=2, seed=0)
    assert passed.signed.shape == (4,) and 0 <= passed.strict <= 1
    fit = st.fit_direction(tiny_smol, pairs=2, seed=1, n_random=3)
    assert fit.directions.shape == (tiny_smol.cfg.n_layers, tiny_smol.cfg.d_model)
    assert not set(fit.fit_words) & set(fit.test_words)
    found = st.screen(tiny_smol, fit.d, pairs=2, neutral=2, seed=2, n_random=5)
    n_layers, n_heads = tiny_smol.cfg.n_layers, tiny_smol.cfg.n_heads
    assert found.scores.shape == (n_layers, n_heads) and found.null.shape == (n_layers, n_heads, 5)
    assert found.positions == reviews.MOVIE_REVIEW.summary
    check = st.patching_check(tiny_smol, found.top(1), pairs=1, n_random=2, seed=3)
    assert check.n_draws == 2
    cut = st.direction_ablation(tiny_smol, fit.directions, pairs=1, n_random=2, seed=4)
    assert set(cut.ablated) == {"every position", "summary positions", "adjective and verb"}
    assert cut.random["every position"].shape == (2,)


def test_held_out_and_a_full_row_on_a_tiny_model(tiny_smol):
    fit = st.fit_direction(tiny_smol, pairs=2, seed=1, n_random=3)
    found = st.screen(tiny_smol, fit.d, pairs=2, neutral=2, seed=2, n_random=5)
    sizes = st.Sizes(heldout_pairs=2, heldout_draws=2, check_pairs=1)
    held = st.held_out(tiny_smol, fit.d, found.top(2), sizes=sizes, seed=5)
    assert len(held.ranks()) == 2 and held.check is not None
    done = st.Study(model="tiny-smol", gate=st.gate(tiny_smol, pairs=2, seed=0), direction=fit, screen=found,
                    patching=st.patching_check(tiny_smol, found.top(2), pairs=1, n_random=2, seed=3),
                    ablation=st.direction_ablation(tiny_smol, fit.directions, pairs=1, n_random=2, seed=4),
                    held_out=held)
    row = done.row()
    assert row["model"] == "tiny-smol" and "held-out patch (p)" in row and "random-k (p)" in row
    assert set(done.checks()) == {"movie review", "held-out frame"}
