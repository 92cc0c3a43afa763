"""Tests for helpers.mcq_toy (synthetic MCQ data, head scores, patching) and toy.run_with_heads.

Ground truth comes from the data's construction, hand-built attention patterns and exact linear
identities of the attention-only residual stream; no trained-model numbers are pinned here.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers.experiments import mcq_toy, mcq_toy_task
from helpers.experiments.mcq_toy import RoleRules
from helpers.experiments.mcq_toy_task import N_OPTIONS, McqTask
from helpers.toy import AttentionOnlyTransformer, HeadPatch, ResidPatch, ToyConfig, ToyRun
from helpers.toy_train import TrainConfig

TASK = McqTask(n_facts=8)
CONFIG = ToyConfig(vocab_size=TASK.vocab_size, n_ctx=TASK.prompt_len + 1, n_layers=2, n_heads=3, d_model=24,
                   d_head=8, init_std=0.3, seed=0)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> AttentionOnlyTransformer:
    return AttentionOnlyTransformer(CONFIG).eval()


@pytest.fixture(scope="module")
def prompts() -> mcq_toy_task.McqPrompts:
    return mcq_toy_task.make_prompts(TASK, 24, seed=3, labels="random")


# --- data --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", mcq_toy_task.LAYOUTS)
def test_prompts_place_labels_contents_and_question_where_the_task_says(layout):
    task = dataclasses.replace(TASK, layout=layout)
    p = mcq_toy_task.make_prompts(task, 16, seed=0, labels="abcd")
    assert p.tokens.shape == (16, 10) and task.end == 9
    assert torch.equal(p.tokens[:, list(task.label_positions)], p.labels)
    assert torch.equal(p.tokens[:, list(task.content_positions)], p.contents)
    assert (p.tokens[:, 8] == mcq_toy_task.QUESTION_MARK).all()
    first_label = 0 if layout == "label_first" else 1
    assert torch.equal(p.labels[0], p.tokens[0, first_label:8:2])
    assert [task.token_names()[t] for t in p.labels[0]] == ["A", "B", "C", "D"]


def test_the_correct_slot_holds_the_stored_answer_and_distractors_are_distinct_others(prompts):
    question = prompts.tokens[:, -1] - TASK.first_question
    answer_content = TASK.fact_answers()[question] + TASK.first_content
    assert torch.equal(prompts.contents.gather(1, prompts.correct[:, None])[:, 0], answer_content)
    for row, answer in zip(prompts.contents, answer_content):
        assert len(row.unique()) == N_OPTIONS and (row == answer).sum() == 1
    assert torch.equal(prompts.answer, prompts.labels.gather(1, prompts.correct[:, None])[:, 0])


def test_correct_slot_is_balanced_and_label_formats_are_as_named():
    p = mcq_toy_task.make_prompts(TASK, 40, seed=1, labels="qzrx")
    assert torch.equal(torch.bincount(p.correct, minlength=4), torch.full((4,), 10))
    assert [TASK.token_names()[t] for t in p.labels[5]] == ["Q", "Z", "R", "X"]
    r = mcq_toy_task.make_prompts(TASK, 40, seed=1, labels="random")
    assert all(len(row.unique()) == N_OPTIONS for row in r.labels)
    assert len(r.labels.unique()) > 8  # drawn from the whole pool of 16 symbols
    assert r.labels.min() >= 1 and r.labels.max() <= len(mcq_toy_task.LABEL_NAMES)


def test_facts_are_a_seeded_permutation():
    answers = TASK.fact_answers()
    assert sorted(answers.tolist()) == list(range(TASK.n_facts))
    assert torch.equal(answers, McqTask(n_facts=8).fact_answers())
    assert not torch.equal(answers, McqTask(n_facts=8, fact_seed=7).fact_answers())


def test_training_batches_train_only_the_answer_label_and_are_seeded():
    batch = TASK.sample(torch.Generator().manual_seed(0), 64)
    assert batch.tokens.shape == (64, 11)
    assert batch.loss_mask.sum() == 64 and batch.loss_mask[:, TASK.end].all()
    targets = batch.tokens[:, -1]
    assert ((batch.tokens[:, list(TASK.label_positions)] == targets[:, None]).sum(1) == 1).all()
    again = TASK.sample(torch.Generator().manual_seed(0), 64)
    assert torch.equal(batch.tokens, again.tokens)


def test_label_mix_selects_formats():
    only_abcd = dataclasses.replace(TASK, label_mix=(1.0, 0.0, 0.0))
    batch = only_abcd.sample(torch.Generator().manual_seed(0), 32)
    assert (batch.tokens[:, list(TASK.label_positions)] == torch.tensor([1, 2, 3, 4])).all()


def test_shuffled_options_move_the_answer_and_keep_labels_and_question(prompts):
    corrupt = mcq_toy_task.shuffle_options(prompts, seed=0)
    assert (corrupt.correct != prompts.correct).all()
    assert (corrupt.answer != prompts.answer).all()
    assert torch.equal(corrupt.labels, prompts.labels)
    assert torch.equal(corrupt.tokens[:, -2:], prompts.tokens[:, -2:])
    assert torch.equal(corrupt.contents.sort(1).values, prompts.contents.sort(1).values)
    # the answer content is the same token, now in the new correct slot
    assert torch.equal(corrupt.contents.gather(1, corrupt.correct[:, None]),
                       prompts.contents.gather(1, prompts.correct[:, None]))


def test_relabel_keeps_contents_and_changes_only_labels(prompts):
    other = mcq_toy_task.relabel(prompts, "qzrx")
    assert torch.equal(other.contents, prompts.contents) and torch.equal(other.correct, prompts.correct)
    assert (other.labels == torch.tensor([5, 6, 7, 8])).all()
    assert torch.equal(other.tokens[:, list(TASK.content_positions)], prompts.contents)


# --- run_with_heads ----------------------------------------------------------------------------------------

def test_run_with_heads_matches_forward_and_the_residual_stream_adds_up(model, prompts):
    run = mcq_toy.run(model, prompts)
    torch.testing.assert_close(run.logits, model(prompts.tokens), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(run.resid[-1], run.resid[0] + run.head_outputs.sum((0, 2)))
    torch.testing.assert_close(run.resid[1], run.resid[0] + run.head_outputs[0].sum(1))
    assert run.head_outputs.shape == (2, 24, 3, 10, 24)


def test_patching_every_head_everywhere_with_the_corrupt_run_reproduces_its_end_logits(model, prompts):
    corrupt = mcq_toy_task.shuffle_options(prompts, seed=1)
    corrupt_run = mcq_toy.run(model, corrupt)
    everything = torch.ones(2, 3, dtype=torch.bool)
    with torch.no_grad():
        patched = model.run_with_heads(prompts.tokens, head_patch=HeadPatch(everything, corrupt_run.head_outputs))
        final = model.run_with_heads(prompts.tokens, resid_patch=ResidPatch(2, corrupt_run.resid[2]))
    # END holds the same question token in both, so its embedding term is shared
    torch.testing.assert_close(patched.logits[:, -1], corrupt_run.logits[:, -1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final.logits, corrupt_run.logits)


def test_a_patch_with_the_runs_own_values_or_no_heads_changes_nothing(model, prompts):
    clean = mcq_toy.run(model, prompts)
    with torch.no_grad():
        same = model.run_with_heads(prompts.tokens, head_patch=HeadPatch(torch.ones(2, 3, dtype=torch.bool),
                                                                          clean.head_outputs))
        none = model.run_with_heads(prompts.tokens, head_patch=HeadPatch(torch.zeros(2, 3, dtype=torch.bool),
                                                                          torch.zeros_like(clean.head_outputs)))
    torch.testing.assert_close(same.logits, clean.logits)
    torch.testing.assert_close(none.logits, clean.logits)


def test_patching_only_end_leaves_earlier_positions_alone(model, prompts):
    corrupt_run = mcq_toy.run(model, mcq_toy_task.shuffle_options(prompts, seed=1))
    end_only = torch.zeros(prompts.tokens.shape, dtype=torch.bool)
    end_only[:, -1] = True
    with torch.no_grad():
        patched = model.run_with_heads(prompts.tokens, head_patch=HeadPatch(
            torch.ones(2, 3, dtype=torch.bool), corrupt_run.head_outputs, end_only))
    torch.testing.assert_close(patched.logits[:, :-1], mcq_toy.run(model, prompts).logits[:, :-1])


# --- scores ------------------------------------------------------------------------------------------------

def test_dla_of_all_heads_plus_the_embeddings_is_the_logit_difference(model, prompts):
    run = mcq_toy.run(model, prompts)
    dla = mcq_toy.head_dla(model, run, prompts)
    embedding_term = (run.resid[0][:, -1] * mcq_toy.label_directions(model, prompts)).sum(-1)
    torch.testing.assert_close(dla.sum((0, 1)) + embedding_term, mcq_toy_task.logit_difference(run.logits, prompts),
                               rtol=1e-4, atol=1e-4)
    projection = mcq_toy.layer_label_logits(model, run, prompts)  # [layer, batch, option]
    correct = projection.gather(2, prompts.correct[None, :, None].expand(2, -1, 1))[..., 0]
    others = (projection * prompts.wrong).sum(-1) / 3
    torch.testing.assert_close(correct - others, dla.sum(1), rtol=1e-4, atol=1e-4)


def test_logit_difference_and_accuracy_on_hand_built_logits(prompts):
    logits = torch.zeros(len(prompts), 10, TASK.vocab_size)
    rows = torch.arange(len(prompts))
    logits[rows, -1, prompts.answer] = 3.0
    logits[rows, -1, prompts.labels[:, 0]] += 0.5  # slot 0's label, sometimes the answer
    diff = mcq_toy_task.logit_difference(logits, prompts)
    expected = torch.where(prompts.correct == 0, torch.tensor(3.5), torch.tensor(3.0 - 0.5 / 3))
    torch.testing.assert_close(diff, expected)
    assert mcq_toy_task.accuracy(logits, prompts).eq(1).all()


def _hand_run(prompts: mcq_toy_task.McqPrompts, end_rows: torch.Tensor, dla: torch.Tensor, d_model: int) -> ToyRun:
    """A ToyRun whose END attention rows and per-head direct effects are chosen by hand (W_U = identity)."""
    layers, heads = dla.shape
    batch, n_pos = prompts.tokens.shape
    patterns = torch.zeros(layers, batch, heads, n_pos, n_pos)
    patterns[:, :, :, -1] = end_rows.transpose(1, 2)  # end_rows: [layer, head, batch, key]
    outputs = torch.zeros(layers, batch, heads, n_pos, d_model)
    rows = torch.arange(batch)
    for layer in range(layers):
        for head in range(heads):
            outputs[layer, rows, head, -1, prompts.answer] = dla[layer, head]  # DLA = dla: W_U is the identity
    resid0 = torch.zeros(batch, n_pos, d_model)
    final = resid0 + outputs.sum((0, 2))
    return ToyRun(logits=final, patterns=patterns, head_outputs=outputs,
                  resid=torch.stack([resid0, resid0 + outputs[0].sum(1), final]))


def test_classify_heads_finds_each_class_on_hand_built_patterns():
    task = McqTask(n_facts=4)
    prompts = mcq_toy_task.make_prompts(task, 16, seed=0, labels="abcd")
    model = AttentionOnlyTransformer(ToyConfig(vocab_size=task.vocab_size, n_ctx=11, n_layers=2, n_heads=3,
                                               d_model=task.vocab_size, d_head=4))
    with torch.no_grad():
        model.unembed.copy_(torch.eye(task.vocab_size))  # the residual stream is the logits
    batch, rows = len(prompts), torch.arange(len(prompts))
    labels, contents = list(task.label_positions), list(task.content_positions)
    end_rows = torch.zeros(2, 3, batch, 10)
    end_rows[0, 0][:, labels] = 0.25  # constant: uniform over the labels
    end_rows[0, 1][:, labels[2]] = 0.9  # single letter: always slot 2 ("C")
    end_rows[0, 1][:, -1] = 0.1
    end_rows[0, 2][:, contents] = 0.25  # other: spread evenly over the contents
    end_rows[1, 0][rows, torch.tensor(labels)[prompts.correct]] = 1.0  # correct letter
    end_rows[1, 1][rows, torch.tensor(contents)[prompts.correct]] = 1.0  # content gatherer
    end_rows[1, 2][:, -1] = 1.0  # amplification: attends to END, writes the answer
    dla = torch.tensor([[0.0, 0.0, 0.0], [2.0, 3.0, 4.0]])
    run = _hand_run(prompts, end_rows, dla, task.vocab_size)
    roles = mcq_toy.classify_heads(model, run, prompts)
    assert [r.role for r in roles] == ["constant", "single letter", "other", "correct letter",
                                       "content gatherer", "amplification"]
    by_name = {r.name: r for r in roles}
    assert by_name["L0H0"].label_entropy == pytest.approx(1.0)
    assert by_name["L0H1"].fixed_slot == 2 and by_name["L0H1"].fixed_slot_share == pytest.approx(1.0)
    assert by_name["L1H0"].correct_label_share == pytest.approx(1.0)
    assert by_name["L1H1"].correct_content == pytest.approx(1.0) and by_name["L1H1"].distractor_content == 0
    assert by_name["L1H2"].dla_fraction == pytest.approx(4 / 9) and by_name["L1H2"].end_share == pytest.approx(1.0)
    # a correct-letter pattern with a negative direct effect is not a correct-letter head
    negative = mcq_toy.classify_heads(model, _hand_run(prompts, end_rows, -dla, task.vocab_size), prompts)
    assert negative[3].role != "correct letter"
    assert list(mcq_toy.roles_table(roles).index) == [r.name for r in roles]


def test_attention_scores_read_the_end_row_in_slot_order(prompts):
    end_rows = torch.zeros(1, 1, len(prompts), 10)
    end_rows[..., 0], end_rows[..., 3], end_rows[..., 9] = 0.5, 0.3, 0.2
    patterns = torch.zeros(1, len(prompts), 1, 10, 10)
    patterns[:, :, :, -1] = end_rows.transpose(1, 2)
    torch.testing.assert_close(mcq_toy.label_attention(patterns, prompts)[0, 0, 0], torch.tensor([0.5, 0, 0, 0]))
    torch.testing.assert_close(mcq_toy.content_attention(patterns, prompts)[0, 0, 0], torch.tensor([0, 0.3, 0, 0]))
    torch.testing.assert_close(mcq_toy.end_attention(patterns, prompts, recent=1)[0, 0], torch.full((24,), 0.2))


def test_binding_attention_reads_each_options_second_token_looking_at_its_first(prompts):
    patterns = torch.zeros(2, len(prompts), 1, 10, 10)
    patterns[0, :, 0, [1, 3, 5, 7], [0, 2, 4, 6]] = 1.0  # layer 0: a perfect previous-token head on options
    patterns[1, :, 0, [1, 3, 5, 7], [0, 0, 0, 0]] = 1.0  # layer 1: looks at the first token instead
    torch.testing.assert_close(mcq_toy.binding_attention(patterns, prompts), torch.tensor([[1.0], [0.25]]))


# --- interventions -----------------------------------------------------------------------------------------

def test_patching_no_heads_or_all_heads_gives_fraction_zero_and_one(model, prompts):
    corrupt = mcq_toy_task.shuffle_options(prompts, seed=2)
    sets = torch.stack([torch.zeros(2, 3, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool)])
    result = mcq_toy.patch_head_sets(model, prompts, corrupt, sets)
    torch.testing.assert_close(result.fraction, torch.tensor([0.0, 1.0]), rtol=1e-4, atol=1e-4)
    single = mcq_toy.patch_heads(model, prompts, corrupt, positions="end")
    assert single.fraction.shape == (2, 3)
    # last-layer heads act on the logits only directly, so their single-head fractions add up
    last_layer = torch.zeros(1, 2, 3, dtype=torch.bool)
    last_layer[0, 1] = True
    together = mcq_toy.patch_head_sets(model, prompts, corrupt, last_layer, positions="end").fraction[0]
    torch.testing.assert_close(single.fraction[1].sum(), together, rtol=1e-4, atol=1e-4)


def test_path_patching_is_the_total_effect_minus_the_senders_direct_effect(model, prompts):
    corrupt = mcq_toy_task.shuffle_options(prompts, seed=2)
    receivers = torch.zeros(2, 3, dtype=torch.bool)
    receivers[1] = True
    path = mcq_toy.path_patch(model, prompts, corrupt, (0, 1), receivers)
    sender = torch.zeros(1, 2, 3, dtype=torch.bool)
    sender[0, 0, 1] = True
    total = mcq_toy.patch_head_sets(model, prompts, corrupt, sender, positions="all")
    # the sender's direct effect: its change at END read straight through the unembedding
    before, after = mcq_toy.run(model, prompts), mcq_toy.run(model, corrupt)
    change = after.head_outputs[0, :, 1, -1] - before.head_outputs[0, :, 1, -1]  # [batch, d_model]
    read = model.W_U[:, prompts.answer] - model.W_U[:, corrupt.answer]  # [d_model, batch]
    direct = (change * read.T).sum(-1)
    torch.testing.assert_close(path.patched[0] - path.clean, total.patched[0] - total.clean - direct,
                               rtol=1e-4, atol=1e-4)


def test_format_switch_is_zero_before_layer_zero_and_complete_at_the_end(model, prompts):
    abcd, qzrx = mcq_toy_task.relabel(prompts, "abcd"), mcq_toy_task.relabel(prompts, "qzrx")
    result = mcq_toy.format_switch(model, abcd, qzrx)
    assert result.patched.shape == (3, len(prompts))
    torch.testing.assert_close(result.fraction[[0, 2]], torch.tensor([0.0, 1.0]), rtol=1e-4, atol=1e-4)


def test_mean_ablating_no_heads_changes_nothing(model, prompts):
    ablated = mcq_toy.ablate_head_sets(model, prompts, torch.zeros(1, 2, 3, dtype=torch.bool))
    torch.testing.assert_close(ablated[0], mcq_toy_task.logit_difference(mcq_toy.run(model, prompts).logits, prompts))


def test_short_training_is_deterministic_per_seed_and_records_accuracy(monkeypatch):
    monkeypatch.setenv("ATTENTION_HEADS_RESULTS", "off")  # train every time: determinism, not the store
    short = TrainConfig(steps=3, batch_size=16, lr=1e-2, eval_every=3)
    runs = [mcq_toy_task.train_mcq_toys((0, 1), task=TASK, config=CONFIG, train_config=short) for _ in range(2)]
    assert [t.seed for t in runs[0]] == [0, 1]
    assert [t.history.train_loss for t in runs[0]] == [t.history.train_loss for t in runs[1]]
    assert runs[0][0].history.train_loss != runs[0][1].history.train_loss  # other seed, other model and data
    assert [e["step"] for e in runs[0][0].history.evals] == [0, 3] and 0 <= runs[0][0].history.evals[-1]["accuracy"] <= 1
    assert not runs[0][0].model.training and runs[0][1].model.config.seed == 1


def test_trained_toys_come_back_from_the_store_unchanged(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTENTION_HEADS_CACHE", str(tmp_path))
    short = TrainConfig(steps=2, batch_size=8, lr=1e-2, eval_every=2)
    fresh = mcq_toy_task.train_mcq_toys((3,), task=TASK, config=CONFIG, train_config=short)[0]
    assert len(list((tmp_path / "results").glob("mcq-toys-*.pt"))) == 1
    stored = mcq_toy_task.train_mcq_toys((3,), task=TASK, config=CONFIG, train_config=short)[0]
    for (name, a), (_, b) in zip(fresh.model.state_dict().items(), stored.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert stored.history.evals == fresh.history.evals


def test_moved_labels_are_all_new_symbols_in_the_same_slots(prompts):
    moved = mcq_toy_task.move_labels(prompts, seed=0)
    shared = (moved.labels[:, :, None] == prompts.labels[:, None, :]).any((1, 2))
    assert not shared.any()  # no symbol of the clean prompt survives
    assert all(len(set(row.tolist())) == N_OPTIONS for row in moved.labels)
    assert torch.equal(moved.correct, prompts.correct) and torch.equal(moved.contents, prompts.contents)
    assert (moved.answer != prompts.answer).all()
    assert torch.equal(moved.tokens[:, list(TASK.label_positions)], moved.labels)
    assert torch.equal(moved.tokens[:, list(TASK.content_positions)], prompts.tokens[:, list(TASK.content_positions)])


def test_a_head_set_is_ranked_among_every_set_of_its_size(model, prompts):
    corrupt = mcq_toy_task.shuffle_options(prompts, seed=1)
    ranked = mcq_toy.rank_head_set(model, prompts, corrupt, [(1, 2), (0, 1)])
    assert ranked.heads == ((0, 1), (1, 2)) and len(ranked.null) == 15  # C(6, 2)
    masks = torch.zeros(1, 2, 3, dtype=torch.bool)
    masks[0, 0, 1] = masks[0, 1, 2] = True
    alone = mcq_toy.patch_head_sets(model, prompts, corrupt, masks).fraction[0]
    assert ranked.carried == pytest.approx(float(alone), abs=1e-6)
    assert ranked.p == pytest.approx(float((ranked.null >= ranked.carried - 1e-6).sum()) / 15)
    everything = mcq_toy.rank_head_set(model, prompts, corrupt, [(l, h) for l in range(2) for h in range(3)])
    assert len(everything.null) == 1 and everything.carried == pytest.approx(1.0, abs=1e-4) and everything.p == 1.0
    with pytest.raises(ValueError, match=r"distinct \(layer, head\) pairs.*\(2, 0\)"):
        mcq_toy.rank_head_set(model, prompts, corrupt, [(2, 0)])


def test_reading_a_toy_gives_roles_and_both_patchings_for_every_head(monkeypatch):
    monkeypatch.setenv("ATTENTION_HEADS_RESULTS", "off")
    short = TrainConfig(steps=2, batch_size=8, lr=1e-2, eval_every=2)
    toy = mcq_toy_task.train_mcq_toys((0,), task=TASK, config=CONFIG, train_config=short)[0]
    reading = mcq_toy.read_toy(toy, TASK, n=16)
    assert len(reading.roles) == 6 and reading.options_moved.shape == reading.labels_moved.shape == (2, 3)
    assert 0 <= float(reading.accuracy) <= 1
    for role in mcq_toy.ROLES:
        assert reading.heads(role) == [(r.layer, r.head) for r in reading.roles if r.role == role]
    table = mcq_toy.seed_table([reading], "other")
    assert list(table.index) == [0] and table.loc[0, "other heads"] != ""
    with pytest.raises(ValueError, match=r"role must be one of.*'reader'"):
        reading.heads("reader")


# --- bad input ---------------------------------------------------------------------------------------------

def test_bad_tasks_and_prompt_requests_are_refused():
    with pytest.raises(ValueError, match=r"layout must be one of.*'sideways'"):
        McqTask(layout="sideways")
    with pytest.raises(ValueError, match=r"n_facts must be at least 4"):
        McqTask(n_facts=3)
    with pytest.raises(ValueError, match=r"multiple of 4.*got 10"):
        mcq_toy_task.make_prompts(TASK, 10, seed=0)
    with pytest.raises(ValueError, match=r"labels must be one of.*'abc'"):
        mcq_toy_task.make_prompts(TASK, 8, seed=0, labels="abc")


def test_mismatched_models_pairs_and_patches_are_refused(model, prompts):
    with pytest.raises(ValueError, match=r"task needs vocab_size=49"):
        mcq_toy_task.train_mcq_toys((0,), task=McqTask(n_facts=16), config=CONFIG)
    with pytest.raises(ValueError, match=r"distinct and at least one, got \(1, 1\)"):
        mcq_toy_task.train_mcq_toys((1, 1), task=TASK, config=CONFIG)
    other = mcq_toy_task.make_prompts(TASK, 8, seed=0)
    with pytest.raises(ValueError, match=r"same task with the same shape"):
        mcq_toy.patch_heads(model, prompts, other)
    with pytest.raises(ValueError, match=r"positions must be 'end'.*'last'"):
        mcq_toy.patch_heads(model, prompts, mcq_toy_task.shuffle_options(prompts, 0), positions="last")
    with pytest.raises(ValueError, match=r"after the sender's layer 1"):
        mcq_toy.path_patch(model, prompts, mcq_toy_task.shuffle_options(prompts, 0), (1, 0),
                           torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"same answer tokens"):
        mcq_toy.format_switch(model, prompts, prompts)
    with pytest.raises(ValueError, match=r"HeadPatch.values must have the shape"):
        model.run_with_heads(prompts.tokens, head_patch=HeadPatch(torch.ones(2, 3, dtype=torch.bool),
                                                                  torch.zeros(2, 1, 3, 10, 24)))
    with pytest.raises(ValueError, match=r"ResidPatch.layer must lie in 0..2"):
        model.run_with_heads(prompts.tokens, resid_patch=ResidPatch(3, torch.zeros(24, 10, 24)))
    layer_norm = AttentionOnlyTransformer(dataclasses.replace(CONFIG, layer_norm=True))
    with pytest.raises(ValueError, match=r"layer_norm=False"):
        mcq_toy.head_dla(layer_norm, mcq_toy.run(layer_norm, prompts), prompts)
    with pytest.raises(ValueError, match=r"recent must be at least 1"):
        mcq_toy.classify_heads(model, mcq_toy.run(model, prompts), prompts, RoleRules(recent=0))
