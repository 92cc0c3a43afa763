"""Pieces of the IOI pages' studies that can be checked without a pretrained model."""

import matplotlib
import pytest
import torch

from helpers import families, ioi_roles, ov, plots, tasks

matplotlib.use("Agg")


def test_pattern_scores_read_the_three_upstream_attention_pairs():
    layers, batch, heads, seq = 2, 2, 3, 6
    patterns = torch.zeros(layers, batch, heads, seq, seq)
    s1, s2 = torch.tensor([1, 2]), torch.tensor([4, 5])
    for b in range(batch):
        patterns[0, b, 1, s2[b], s1[b]] = 1.0  # duplicate token head L0H1
        patterns[1, b, 2, s2[b], s1[b] + 1] = 1.0  # induction head L1H2
        patterns[0, b, 0, s1[b] + 1, s1[b]] = 1.0  # previous-token head L0H0
    data = tasks.TaskBatch(name="ioi", tokens=torch.zeros(batch, seq, dtype=torch.long), prompts=("a", "b"),
                           positions={"s1": s1, "s2": s2, "io": torch.tensor([0, 0])})
    scores = ioi_roles._pattern_scores(patterns, data)
    for role, head in (("duplicate token", (0, 1)), ("induction", (1, 2)), ("previous token", (0, 0))):
        assert scores[role].shape == (layers, heads)
        assert scores[role][head] == 1.0 and scores[role].sum() == 1.0, role


def test_check_from_values_counts_drops_when_a_drop_is_the_effect():
    clean = torch.full((5,), 4.0)
    values = torch.stack([clean, clean - 3.0, clean - 0.1, clean + 0.2, clean - 3.5])
    check = families.check_from_values(values, [(1, 1)], metric_name="m", mode="path", larger_is_stronger=False)
    assert check.top.mean == pytest.approx(-3.0)
    assert check.p_value == pytest.approx(2 / 4)  # one random draw dropped further, plus one
    rising = families.check_from_values(-values, [(1, 1)], metric_name="m", mode="path")
    assert rising.p_value == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="rows clean, top, random"):
        families.check_from_values(values[:2], [(1, 1)], metric_name="m", mode="path")


def test_copying_from_vectors_matches_the_embedding_version(tiny_llama_gqa):
    model = tiny_llama_gqa
    ids = torch.arange(3, 12)
    from_embedding = ov.ov_copying_scores(model, ids)
    from_vectors = ov.copying_from_vectors(model, model.W_E[ids].detach(), ids)
    torch.testing.assert_close(from_vectors, from_embedding)
    with pytest.raises(ValueError, match="one row per token"):
        ov.copying_from_vectors(model, model.W_E[ids[:3]].detach(), ids)


def test_circuit_figures_draw_every_role_and_label_heads():
    roles = {"S-inhibition": [(2, 1)], "name mover": [(3, 0), (3, 2)], "induction": []}
    fig = plots.circuit_diagram(roles, [("S-inhibition", "name mover"), ("name mover", "logits")], n_layers=4,
                                title="t")
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"L2H1", "L3H0", "L3H2", "logits", "not found"} <= texts
    scatter = plots.head_scatter(torch.rand(4, 3), torch.rand(4, 3), title="t", xlabel="x", ylabel="y",
                                 marked=[(1, 2)])
    assert "L1H2" in {t.get_text() for t in scatter.axes[0].texts}
    with pytest.raises(ValueError, match="both be"):
        plots.head_scatter(torch.rand(4, 3), torch.rand(3, 3), title="t", xlabel="x", ylabel="y")


def test_published_lines_compare_each_role_with_gpt2_small(tiny_gpt2):
    roles = {"name mover": [(9, 9), (1, 0)], "S-inhibition": [(7, 3)], "subject suppressor": [(1, 1)]}
    lines = ioi_roles.published_lines(tiny_gpt2, roles)
    assert len(lines) == 2  # the subject suppressor has no published class
    assert lines[0].startswith("name mover: published name-mover heads") and "found L9H9" in lines[0]
    assert "missed L9H6, L10H0" in lines[0] and "not published: L1H0" in lines[0]
    assert "found L7H3" in lines[1] and "missed L7H9, L8H6, L8H10" in lines[1]
