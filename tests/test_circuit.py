"""Tests for helpers.experiments.circuit: the upstream roles' attention reads and the published-head lines."""

import torch

from helpers import tasks
from helpers.experiments import circuit


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
    scores = circuit._pattern_scores(patterns, data)
    for role, head in (("duplicate token", (0, 1)), ("induction", (1, 2)), ("previous token", (0, 0))):
        assert scores[role].shape == (layers, heads)
        assert scores[role][head] == 1.0 and scores[role].sum() == 1.0, role


def test_published_lines_compare_each_role_with_gpt2_small(tiny_gpt2):
    roles = {"name mover": [(9, 9), (1, 0)], "S-inhibition": [(7, 3)], "subject suppressor": [(1, 1)]}
    lines = circuit.published_lines(tiny_gpt2, roles)
    assert len(lines) == 2  # the subject suppressor has no published class
    assert lines[0].startswith("name mover: published name-mover heads") and "found L9H9" in lines[0]
    assert "missed L9H6, L10H0" in lines[0] and "not published: L1H0" in lines[0]
    assert "found L7H3" in lines[1] and "missed L7H9, L8H6, L8H10" in lines[1]
