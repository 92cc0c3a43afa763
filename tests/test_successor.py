"""The successor page's experiment: the tasks and prompts on SmolLM2's tokenizer, the metric and the pass rule on
hand-built numbers, and the whole study on a tiny random model (which fails the gate, so no ablation follows)."""

from __future__ import annotations

import pytest
import torch

from helpers import ov
from helpers.experiments import findings_table, successor


def test_every_task_is_single_tokens_and_every_prompt_one_length(tiny_smol):
    for task in successor.TASKS.values():
        assert len(task.ids(tiny_smol)) == len(task.words)
    prompts = successor.incrementing_prompts(tiny_smol, successor.GATE_TASKS, context=3)
    assert len(prompts.batch) == 7 + 17 + 4 + 9 + 23  # every window of three items in each task
    assert prompts.batch.prompts[0] == "0,1,2," and " Monday then Tuesday then Wednesday then" in prompts.batch.prompts
    day = prompts.batch.prompts.index(" Monday then Tuesday then Wednesday then")
    assert tiny_smol.tokenizer.decode(int(prompts.batch.answers[day])) == " Thursday"
    assert prompts.ids[prompts.answer_column].tolist() == prompts.batch.answers.tolist()
    assert prompts.candidates.sum(-1)[day] == 7  # the seven days


def test_unknown_tasks_and_short_tasks_are_refused(tiny_smol):
    with pytest.raises(ValueError, match="the tasks are: numbers"):
        successor.incrementing_prompts(tiny_smol, ["weekdays"], context=3)
    with pytest.raises(ValueError, match="more than context = 7"):
        successor.incrementing_prompts(tiny_smol, ["days"], context=7)


def test_successor_log_probs_read_the_answer_among_its_own_task_only(tiny_smol):
    prompts = successor.incrementing_prompts(tiny_smol, ["days", "months"], context=3)
    logits = torch.zeros(2 * len(prompts.batch), len(prompts.ids))  # two head sets: rows repeat the prompts
    values = successor.successor_log_probs(logits, prompts)
    sizes = prompts.candidates.sum(-1).float().repeat(2)
    torch.testing.assert_close(values, -sizes.log())  # uniform over 7 days or 12 months, never over all 19
    logits[0, prompts.answer_column[0]] = 50.0
    assert successor.successor_log_probs(logits, prompts)[0] > -1e-6


def test_the_pass_bar_is_the_quantile_of_the_best_head_over_shuffles():
    shuffled = torch.zeros(20, 2, 3)
    shuffled[:, 1, 1] = torch.linspace(0.0, 0.19, 20)  # the best head of every shuffle
    bar = successor.family_threshold(shuffled)
    assert bar == pytest.approx(torch.quantile(torch.linspace(0.0, 0.19, 20), 0.95).item())
    scores = torch.full((2, 3), 0.05)
    scores[0, 2], scores[1, 0] = 0.5, bar
    assert successor.passing_heads(scores, shuffled) == [(0, 2)]  # at the bar is not above it
    with pytest.raises(ValueError, match=r"share \[layer, head\]"):
        successor.passing_heads(torch.zeros(3, 2), shuffled)


def test_shuffled_orders_are_seeded_permutations():
    first, again = successor.shuffled_orders(6, 4, seed=3), successor.shuffled_orders(6, 4, seed=3)
    assert torch.equal(first, again) and torch.equal(first.sort(-1).values, torch.arange(6).expand(4, 6))
    with pytest.raises(ValueError, match="n >= 2"):
        successor.shuffled_orders(1, 4, seed=0)


def test_the_screen_pools_tasks_by_their_scored_tokens(tiny_smol):
    found = successor.screen(tiny_smol, names=["days", "months"], n_shuffles=5, seed=0)
    assert found.per_task.shape == (2, 2, 4) and found.shuffled.shape == (5, 2, 4) and found.counts == (6, 11)
    torch.testing.assert_close(found.scores, (6 * found.per_task[0] + 11 * found.per_task[1]) / 17)
    assert found.chance == pytest.approx((6 / 7 + 11 / 12) / 17)
    assert set(found.task_scores((1, 2))) == {"days", "months"} and "pass bar" in found.summary()
    ids = successor.TASKS["days"].ids(tiny_smol)
    expected = ov.diagonal_strength_from_vectors(tiny_smol, ov.effective_embedding(tiny_smol, ids), ids)
    torch.testing.assert_close(found.diagonal[0], expected, rtol=1e-4, atol=1e-4)


def test_the_study_runs_on_a_tiny_model_and_fills_a_findings_row(tiny_smol):
    sizes = successor.Sizes(n_shuffles=5, top_k=2, n_random=2, heldout_draws=2)
    done = successor.study(tiny_smol, sizes=sizes, seed=0)
    assert done.model == "tiny-smol" and not done.gate.passed and done.ablation is None
    assert len(done.top) == 2 and done.checks() == {}
    assert set(done.gate.by_task) == set(successor.GATE_TASKS)
    assert list(findings_table(done).index) == ["tiny-smol"]


def test_the_ablation_and_held_out_steps_run_on_a_tiny_model(tiny_smol):
    prompts = successor.incrementing_prompts(tiny_smol, ["days"], context=3)
    found = [(1, 0), (0, 3)]
    check = successor.ablation(tiny_smol, found, prompts, n_random=3, seed=0)
    assert check.n_draws == 3 and check.heads == tuple(found) and not check.larger_is_stronger
    singles = successor.single_head_changes(tiny_smol, found, prompts)
    assert singles.shape == (2,)
    held = successor.held_out(tiny_smol, found, sizes=successor.Sizes(n_shuffles=4, heldout_draws=2), seed=0)
    assert held.screen.names == successor.HELD_OUT_TASKS and held.check.check.n_draws == 2
    done = successor.Study(model="tiny-smol", gate=successor.gate(tiny_smol, names=["days"], context=3, seed=0),
                           screen=held.screen, top=tuple(found), ablation=check, held_out=held)
    assert list(done.checks()) == ["screen tasks", "held-out tasks"]
    assert "p = " in done.row()["held-out ablation (p)"]
