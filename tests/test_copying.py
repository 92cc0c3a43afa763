"""Tests for the copying experiments (helpers.experiments.copying, previous_token, induction): the gate and
metric on the real SmolLM2 (the one offline model that copies), the screens on the tiny random GPT-2, and
the induction toy's evaluator on hand-made models."""

import math
from types import SimpleNamespace

import pytest
import torch

from helpers import capture, models, scores, screens, tasks, toy, toy_train
from helpers.experiments import copying, findings_table, induction, previous_token
from synthetic import mean_of_inverse_positions, one_hot_pattern, uniform_causal


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread, as in test_toy: on the shared 2-core CPU, two threads were measured 10x slower per
    SmolLM2 forward pass (5.7 s vs 0.45 s for 8 x 12 tokens) whenever another job is running."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- the copying gate and metric on the real model ----------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2_repeats(smollm2):
    """8 prompts of 6 random words said twice: 8 all-positive paired differences give a sign-flip p ~ 1/256."""
    return tasks.repeated_tokens(smollm2, batch=8, half_len=6, seed=0)


@pytest.fixture(scope="module")
def smollm2_logits(smollm2, smollm2_repeats):
    with torch.no_grad():
        return smollm2(smollm2_repeats.tokens).float()


def test_repeated_half_metric_is_each_prompts_mean_loss_on_the_second_copy_by_hand(smollm2_repeats, smollm2_logits):
    tokens, logits = smollm2_repeats.tokens, smollm2_logits
    second_start = int(smollm2_repeats.positions["second_start"][0])  # 6: no BOS in SmolLM2
    log_probs = logits.log_softmax(-1)
    by_hand = torch.tensor([
        -sum(log_probs[b, t - 1, tokens[b, t]].item() for t in range(second_start + 1, tokens.shape[1])) / 5
        for b in range(tokens.shape[0])])  # tokens 7..11: the second copy minus its unpredictable first token

    got = copying.repeated_half_metric(smollm2_repeats)(logits, tokens)

    torch.testing.assert_close(got, by_hand, atol=1e-4, rtol=1e-5)


def test_smollm2_passes_the_copying_gate_against_the_unrepeated_control(smollm2, smollm2_repeats, smollm2_logits):
    gate = copying.repeated_tokens_gate(smollm2, smollm2_repeats)
    _, second = scores.repeated_half_losses(smollm2_logits, smollm2_repeats.tokens, 0, 6)
    _, control = scores.repeated_half_losses(smollm2(smollm2_repeats.corrupted), smollm2_repeats.corrupted, 0, 6)

    assert gate.passed, gate.summary()
    assert gate.metric.mean == pytest.approx(second.mean().item(), abs=1e-4)  # loss on the second copy
    assert gate.null.mean == pytest.approx(control.mean().item(), abs=1e-4)  # same positions, nothing to copy
    assert gate.difference.upper < -1.0  # min_effect: at least 1 nat better on the copy
    assert gate.summary().startswith("PASS: in-context copying")


def test_position_alone_does_not_pass_the_copying_gate(smollm2):
    """Unrepeated tokens on both sides: later positions' longer context must not count as copying."""
    batch = tasks.repeated_tokens(smollm2, batch=50, half_len=15, seed=1)
    no_copy = tasks.TaskBatch("no copy", batch.corrupted, batch.prompts, corrupted=tasks.repeated_tokens(
        smollm2, batch=50, half_len=15, seed=2).corrupted, positions=batch.positions)
    assert not copying.repeated_tokens_gate(smollm2, no_copy).passed


def test_an_untrained_model_fails_the_copying_gate(tiny_gpt2):
    batch = tasks.repeated_tokens(tiny_gpt2, batch=8, half_len=6, seed=0)
    gate = copying.repeated_tokens_gate(tiny_gpt2, batch)
    assert not gate.passed
    assert gate.summary().startswith("FAIL: behaviour absent at this scale (in-context copying)")


# --- previous_token_screen / induction_screen on the tiny model ---------------------------------------------

def test_the_tiny_tokenizer_has_enough_ordinary_words_to_sample_from(tiny_gpt2):
    # random_tokens samples 2-12-letter words: the word-level fixture has 10 ("When", "Mary", ..., "drink")
    assert len(tasks.ordinary_token_ids(tiny_gpt2)) == 10


def test_previous_token_screen_keeps_the_lower_of_the_random_token_and_text_scores(tiny_gpt2):
    found = previous_token.screen(tiny_gpt2, prompts=2, length=8, seed=0, threshold=0.3)

    random_batch = tasks.random_tokens(tiny_gpt2, batch=2, length=8, seed=0)
    text_batch = tasks.natural_text(tiny_gpt2, batch=2, length=8, seed=1)
    per_batch = [scores.attention_on_targets(capture.capture_patterns(tiny_gpt2, b.tokens),
                                             scores.offset_targets(2, 9, 1, first_query=2))
                 for b in (random_batch, text_batch)]

    assert found.family == "previous-token" and found.threshold == 0.3
    assert found.scores.shape == found.null.shape == (2, 4)
    torch.testing.assert_close(found.scores, torch.minimum(*per_batch))
    assert ((found.null >= 0) & (found.null <= 1)).all()
    # BOS at 0, so queries 2..8 are scored, each with one target
    assert found.baseline == pytest.approx(mean_of_inverse_positions(range(2, 9)))


def test_induction_screen_scores_every_head_on_repeats_and_on_the_control(tiny_gpt2):
    found = induction.screen(tiny_gpt2, prompts=2, half_len=4, seed=0)
    repeated = tasks.repeated_tokens(tiny_gpt2, batch=2, half_len=4, seed=0)
    targets = scores.induction_targets(repeated.tokens, first_query=2)

    assert found.family == "induction" and found.threshold == 0.4
    assert found.scores.shape == found.null.shape == (2, 4)
    assert ((found.scores >= 0) & (found.scores <= 1)).all() and ((found.null >= 0) & (found.null <= 1)).all()
    torch.testing.assert_close(found.scores, scores.attention_on_targets(
        capture.capture_patterns(tiny_gpt2, repeated.tokens), targets))
    assert found.baseline == pytest.approx(scores.uniform_baseline(targets))


# --- published_overlap / phase_change_step ---------------------------------------------------------------------

def test_published_overlap_splits_heads_into_matched_missed_and_new():
    overlap = models.published_overlap(found=[(6, 9), [0, 0], (5, 1)], published=[(5, 1), (6, 9), (7, 2)])
    assert overlap == {"matched": [(5, 1), (6, 9)], "missed": [(7, 2)], "new": [(0, 0)]}


def test_published_overlap_of_nothing_found_misses_everything():
    assert models.published_overlap([], [(2, 2)]) == {"matched": [], "missed": [(2, 2)], "new": []}


def test_phase_change_step_is_the_first_step_past_the_chosen_share_of_the_drop():
    steps = [0, 20, 40, 60, 80, 100]
    losses = [4.0, 3.9, 3.0, 1.0, 0.5, 0.6]  # drop 4.0 -> 0.5 (the minimum, not the last value)
    assert induction.phase_change_step(steps, losses) == 60  # half the drop: first loss <= 2.25
    assert induction.phase_change_step(steps, losses, fraction=0.25) == 40  # first loss <= 3.125
    assert induction.phase_change_step(steps, losses, fraction=1.0) == 80  # the minimum itself


def test_phase_change_step_rejects_mismatched_or_empty_curves():
    with pytest.raises(ValueError, match=r"one loss per step.*got 2 steps and 3 losses"):
        induction.phase_change_step([0, 1], [3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match=r"got 0 steps and 0 losses"):
        induction.phase_change_step([], [])


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.5])
def test_phase_change_step_rejects_a_fraction_outside_zero_to_one(fraction):
    with pytest.raises(ValueError, match=rf"fraction must lie in \(0, 1\]; got {fraction}"):
        induction.phase_change_step([0, 1], [2.0, 1.0], fraction=fraction)


# --- toy_induction_evaluator --------------------------------------------------------------------------------

HALF, TOY_VOCAB = 5, 10


@pytest.fixture(scope="module")
def probe():
    return toy_train.repeated_sequence(torch.Generator().manual_seed(0), 3, HALF, TOY_VOCAB)


def perfect_toy(tokens, return_patterns=False):
    """A hand-made 'trained' toy: L0H1 attends one step back, L1H0 is a perfect induction head, the rest
    attend uniformly; the logits copy perfectly on the second half and are uniform elsewhere."""
    batch, seq_len = tokens.shape
    patterns = uniform_causal(seq_len).expand(2, batch, 2, seq_len, seq_len).clone()
    patterns[0, :, 1] = one_hot_pattern(seq_len, 1)
    induction = torch.zeros(seq_len, seq_len)
    induction[:HALF, 0] = 1.0
    for q in range(HALF, seq_len):
        induction[q, q - HALF + 1] = 1.0
    patterns[1, :, 0] = induction
    logits = torch.zeros(batch, seq_len, TOY_VOCAB)
    logits[:, HALF:-1] = torch.nn.functional.one_hot(tokens[:, HALF + 1:], TOY_VOCAB).float() * 40.0
    return (logits, patterns) if return_patterns else logits


def test_evaluator_scores_a_perfect_induction_model_one_and_its_copy_loss_zero(probe):
    result = induction.toy_evaluator(probe)(perfect_toy, step=0)

    assert set(result) == {"second_half_loss", "first_half_loss", "induction", "previous_token",
                           "induction_grid", "previous_token_grid"}
    assert result["second_half_loss"] == pytest.approx(0.0, abs=1e-6)
    assert result["first_half_loss"] == pytest.approx(math.log(TOY_VOCAB))
    assert result["induction"] == pytest.approx(1.0)  # best layer-1 head
    assert result["previous_token"] == pytest.approx(1.0)  # best layer-0 head
    assert result["induction_grid"].shape == result["previous_token_grid"].shape == (2, 2)
    assert result["previous_token_grid"][0, 0].item() == pytest.approx(mean_of_inverse_positions(range(1, 2 * HALF)))


def test_an_untrained_toy_scores_like_uniform_attention_and_guesses_uniformly(probe):
    config = toy.ToyConfig(vocab_size=TOY_VOCAB, n_ctx=2 * HALF, n_layers=2, n_heads=2, d_model=16, d_head=8)
    model = toy.AttentionOnlyTransformer(config).eval()  # init_std 0.02: logits and attention scores ~ 0
    with torch.no_grad():
        result = induction.toy_evaluator(probe)(model, step=0)

    assert result["second_half_loss"] == pytest.approx(math.log(TOY_VOCAB), abs=0.01)
    assert result["first_half_loss"] == pytest.approx(math.log(TOY_VOCAB), abs=0.01)
    # each query q >= HALF has one induction target; uniform attention gives it 1 / (q + 1)
    assert result["induction"] == pytest.approx(mean_of_inverse_positions(range(HALF, 2 * HALF)), abs=0.01)
    assert result["previous_token"] == pytest.approx(mean_of_inverse_positions(range(1, 2 * HALF)), abs=0.01)
    assert result["induction"] == result["induction_grid"][-1].max().item()
    assert result["previous_token"] == result["previous_token_grid"][0].max().item()


def test_evaluator_plugs_into_toy_training_and_logs_every_evaluation(probe):
    config = toy.ToyConfig(vocab_size=TOY_VOCAB, n_ctx=2 * HALF, n_layers=2, n_heads=2, d_model=16, d_head=8)
    task = toy_train.SegmentTask(seq_len=2 * HALF, vocab_size=TOY_VOCAB, min_segment=2, max_segment=4)
    history = toy_train.train(toy.AttentionOnlyTransformer(config), task.sample,
                        toy_train.TrainConfig(steps=2, batch_size=4, eval_every=1), induction.toy_evaluator(probe))
    assert [row["step"] for row in history.evals] == [0, 1, 2]
    assert all(0.0 <= row["induction"] <= 1.0 and row["second_half_loss"] > 0 for row in history.evals)


def test_published_comparison_names_matches_misses_and_new_heads(tiny_gpt2):
    line = models.published_comparison(tiny_gpt2, "previous_token", [(2, 2), (1, 0)])
    assert "found L2H2" in line and "missed L4H11" in line and "not published: L1H0" in line


def test_published_comparison_says_when_a_model_has_no_published_heads(smollm2):
    line = models.published_comparison(smollm2, "induction", [(18, 6)])
    assert line.startswith("no published induction heads for smollm2-135m")


def test_findings_table_has_one_row_per_study():
    screen = screens.Screen("x", torch.tensor([[0.9, 0.1]]), torch.tensor([[0.0, 0.0]]), threshold=0.4, baseline=0.1)
    gate = SimpleNamespace(passed=False)
    table = findings_table(copying.Study("a", gate, screen, None), copying.Study("b", gate, screen, None))
    assert list(table.index) == ["a", "b"] and table.loc["a", "top-k ablation effect"] == "not run"


def test_the_copying_ablation_reports_the_difference_in_differences_against_the_unrepeated_control(tiny_gpt2):
    sizes = copying.Sizes(ablation_prompts=3, ablation_half_len=4, n_random=4)
    ablation = copying.copying_ablation(tiny_gpt2, [(0, 0), (1, 1)], sizes=sizes, seed=0)
    rep, ctl, did = ablation.repeated, ablation.unrepeated, ablation.specific
    # a mean of differences is the difference of means: the DiD is the repeated change minus the control's
    assert abs(did.top.mean - (rep.top.mean - ctl.top.mean)) < 1e-5
    assert torch.allclose(did.draws, rep.draws - ctl.draws, atol=1e-5)
    assert did.n_draws == rep.n_draws == ctl.n_draws == 4
    assert "heads drawn from all heads" in did.null and "repeated minus unrepeated" in did.metric_name


def test_second_copy_losses_match_the_full_logits_metric_of_ablated_metric(tiny_gpt2):
    """Reading only the positions that predict the second copy gives the numbers of the whole-logits path."""
    from helpers import interventions

    batch = tasks.repeated_tokens(tiny_gpt2, batch=3, half_len=5, seed=0)
    means = capture.mean_head_outputs(tiny_gpt2, tasks.random_tokens(tiny_gpt2, batch=3, length=10, seed=1).tokens)
    head_sets = [[], [(0, 0)], [(1, 2), (0, 3)], [(1, 1)]]
    expected = interventions.ablated_metric(tiny_gpt2, batch.tokens, head_sets, copying.repeated_half_metric(batch),
                                            mode="mean", means=means)
    for max_rows in (None, 4):  # one pass, and several passes of whole sets
        got = copying.second_copy_losses(tiny_gpt2, batch.tokens, head_sets, means=means, max_rows=max_rows,
                                         second_start=int(batch.positions["second_start"][0]))
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_the_copying_ablation_takes_another_batch_and_its_own_number_of_draws(tiny_gpt2):
    sizes = copying.Sizes(ablation_prompts=3, ablation_half_len=4, n_random=4)
    other = tasks.repeated_tokens(tiny_gpt2, batch=2, half_len=6, seed=5)
    ablation = copying.copying_ablation(tiny_gpt2, [(0, 0)], sizes=sizes, seed=0, batch=other, n_random=3)
    assert ablation.repeated.n_draws == 3 and ablation.repeated.draws.shape == (3,)
    with pytest.raises(ValueError, match="corrupted"):
        copying.copying_ablation(tiny_gpt2, [(0, 0)], sizes=sizes, seed=0,
                                 batch=tasks.random_tokens(tiny_gpt2, batch=2, length=8, seed=0))


def test_english_repeats_say_one_passage_of_seven_token_sentences_twice_with_a_fresh_control(smollm2):
    batch = copying.english_repeats(smollm2, batch=4, sentences=3, seed=0)
    start, second = int(batch.positions["first_start"][0]), int(batch.positions["second_start"][0])
    assert batch.tokens.shape == (4, start + 42) and second == start + 21
    assert torch.equal(batch.tokens[:, start:second], batch.tokens[:, second:])  # said twice
    assert torch.equal(batch.corrupted[:, :second], batch.tokens[:, :second])  # same first passage
    assert (batch.corrupted[:, second:] != batch.tokens[:, second:]).any(1).all()  # a fresh second one
    text = smollm2.tokenizer.decode(batch.tokens[0, start:start + 7])
    assert text.startswith(" The ") and text.endswith(".") and len(text.split()) == 6, text
    assert copying.english_repeats(smollm2, batch=4, sentences=3, seed=0).prompts == batch.prompts  # seeded



@pytest.mark.parametrize("module", [previous_token, induction])
def test_held_out_recomputes_the_page_score_on_english_repeats_and_reruns_the_ablation(tiny_smol, module):
    sizes = copying.Sizes(ablation_prompts=2, ablation_half_len=4, heldout_prompts=2, heldout_sentences=2,
                          heldout_draws=3)
    held, specific = module.held_out(tiny_smol, [(1, 0), (0, 2)], sizes=sizes, seed=0)
    batch = copying.english_repeats(tiny_smol, batch=2, sentences=2, seed=0)
    torch.testing.assert_close(held.screen, module.held_out_score(tiny_smol, batch))
    assert held.found == ((1, 0), (0, 2)) and held.screen.shape == (2, 4) and len(held.ranks()) == 2
    assert held.check.n_draws == specific.n_draws == 3
    assert held.family == copying.HELD_OUT_FAMILY and "held-out check" in held.row()
    skipped, none = module.held_out(tiny_smol, [(1, 0)], sizes=copying.Sizes(heldout_prompts=2, heldout_draws=0), seed=0)
    assert skipped.check is None and none is None


def test_previous_token_held_out_score_is_attention_on_the_previous_token_of_the_unrepeated_passages(tiny_smol):
    batch = copying.english_repeats(tiny_smol, batch=2, sentences=2, seed=0)
    patterns = capture.capture_patterns(tiny_smol, batch.corrupted)  # [layer, batch, head, query, key]
    first = copying.first_scored_query(tiny_smol)
    by_hand = torch.diagonal(patterns, offset=-1, dim1=-2, dim2=-1)[..., first - 1:].mean((1, -1))
    torch.testing.assert_close(previous_token.held_out_score(tiny_smol, batch), by_hand, atol=1e-5, rtol=1e-5)
