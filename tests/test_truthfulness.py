"""Truthfulness helpers on hand-built cases, the statements and the head-output addition on the tiny model."""

from collections import Counter

import pytest
import torch

from helpers import capture, heads, interventions, probes, tasks
from helpers.experiments import truthfulness
from helpers.experiments.truthfulness import CAPITALS, false_answers


def test_false_answers_move_every_answer_and_use_each_as_often_as_it_is_true():
    answers = ["Paris", "Rome", "Arabic", "Arabic", "Oslo", "Lima"]
    for seed in range(10):
        wrong = false_answers(answers, seed=seed)
        assert all(w != a for w, a in zip(wrong, answers))
        assert Counter(wrong) == Counter(answers)
    with pytest.raises(ValueError, match="more than half"):
        false_answers(["Arabic", "Arabic", "Arabic", "Dutch"], seed=0)


def test_statements_share_every_token_but_the_answer_and_balance_answers_per_fold(tiny_smol):
    facts = truthfulness.known_facts(tiny_smol, CAPITALS)
    data = truthfulness.statements([facts], seed=0, max_facts=12, known_only=False)
    assert data.labels.tolist() == [1, 0] * (len(data.labels) // 2)
    for i in range(0, len(data.texts), 2):
        assert data.prefixes[i] == data.prefixes[i + 1] and data.folds[i] == data.folds[i + 1]
        assert data.texts[i] == f"{data.prefixes[i]} {data.true_answers[i]}."
        assert data.texts[i + 1] == f"{data.prefixes[i]} {data.false_answers[i]}."
    for fold in (0, 1):
        rows = [i for i in range(0, len(data.texts), 2) if int(data.folds[i]) == fold]
        assert Counter(data.true_answers[i] for i in rows) == Counter(data.false_answers[i] for i in rows)


def test_steering_sets_touch_only_their_heads_with_matched_norms():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(20, 2, 3, 4, generator=generator)
    labels = torch.tensor([0, 1] * 10)
    direction = probes.mass_mean(features, labels)
    found = [(0, 1), (1, 2)]
    sets = truthfulness.steering_sets(direction, found, alpha=2.0, n_random=5, seed=0)
    assert sets.shape == (1 + 1 + 5 + 5, 2, 3, 4)
    assert sets[0].abs().max() == 0
    mask = heads.masks([found], 2, 3)[0]
    for row in range(1, 7):  # the real direction, then random directions in the same heads
        assert sets[row][~mask].abs().max() == 0
        torch.testing.assert_close(sets[row].norm(dim=-1)[mask], sets[1].norm(dim=-1)[mask])
    torch.testing.assert_close(sets[1][0, 1], 2.0 * direction.spread[0, 1] * direction.unit[0, 1])
    for row in range(7, 12):  # drawn heads, each with its own direction
        assert int((sets[row].abs().sum(-1) > 0).sum()) == 2


def test_adding_at_head_outputs_at_end_matches_a_full_pass(tiny_smol):
    tokens = tasks.tokenize_prompts(tiny_smol, ["The capital of France is", "The capital of Spain is"])
    cfg = tiny_smol.cfg
    generator = torch.Generator().manual_seed(0)
    additions = torch.zeros(2, cfg.n_layers, cfg.n_heads, cfg.d_head)
    additions[1, 1, 0] = torch.randn(cfg.d_head, generator=generator)
    finals = interventions.final_with_end_z_added(tiny_smol, tokens, additions)
    torch.testing.assert_close(finals[0], capture.final_at(tiny_smol, tokens), atol=1e-4, rtol=1e-4)

    def add(z, hook=None):
        out = z.clone()
        out[:, -1, 0] += additions[1, 1, 0].to(out.dtype)
        return out
    expected = capture.final_at(tiny_smol, tokens, fwd_hooks=[(capture.z_hook(1), add)])
    torch.testing.assert_close(finals[1], expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(finals[1], finals[0])
    with pytest.raises(ValueError, match="additions must be"):
        interventions.final_with_end_z_added(tiny_smol, tokens, additions[:, :1])
