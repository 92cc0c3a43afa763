"""Tests for helpers.families (the experiment steps every family notebook runs) and for the prompts its
screens read (`tasks.natural_text`, `tasks.stdlib_prose`).

Screens and ablation bookkeeping are checked on hand-built patterns and hand-built metric values; the
steps that need a model run on the tiny random GPT-2 (shapes, consistency with a hand ablation) or, for
the copying gate, on the real SmolLM2, the one offline model that actually copies."""

import math
from types import SimpleNamespace

import pytest
import torch

from helpers import capture, families, interventions, scores, tasks, toy
from synthetic import one_hot_pattern, uniform_causal


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread, as in test_toy: on the shared 2-core CPU, two threads were measured 10x slower per
    SmolLM2 forward pass (5.7 s vs 0.45 s for 8 x 12 tokens) whenever another job is running."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def mean_of_inverse_positions(queries) -> float:
    """Uniform causal attention puts 1 / (q + 1) on each of query q's keys; the mean over one-target queries."""
    queries = list(queries)
    return sum(1 / (q + 1) for q in queries) / len(queries)


def make_screen(scores_grid, null_grid, threshold: float) -> families.Screen:
    return families.Screen(family="test", scores=torch.tensor(scores_grid), null=torch.tensor(null_grid),
                           threshold=threshold, baseline=0.1)


# --- Screen -----------------------------------------------------------------------------------------------

def test_a_head_needs_both_the_threshold_and_the_control_cutoff_to_pass():
    null = [[0.3, 0.3, 0.3], [0.3, 0.3, 0.3]]  # every head scores 0.3 on the control: the 95th pct is 0.3
    screen = make_screen([[0.9, 0.25, 0.1], [0.5, 0.35, 0.0]], null, threshold=0.2)
    # 0.25 clears the threshold but not the control; 0.35 clears both; best first
    assert screen.null_cutoff == pytest.approx(0.3)
    assert screen.passing == [(0, 0), (1, 0), (1, 1)]


def test_the_threshold_rejects_heads_that_beat_a_weak_control():
    null = [[0.0, 0.0], [0.0, 0.1]]
    screen = make_screen([[0.49, 0.5], [0.75, 0.25]], null, threshold=0.5)
    # 0.49 and 0.25 beat the control cutoff (0.085) but not the pre-registered 0.5; 0.5 is "at least"
    assert screen.null_cutoff == pytest.approx(0.085)  # numpy's linear quantile of [0, 0, 0, 0.1] at 0.95
    assert screen.passing == [(1, 0), (0, 1)]


def test_a_head_scoring_exactly_the_control_cutoff_does_not_pass():
    # the docstring's rule: at least the threshold *and above* the control's 95th percentile
    screen = make_screen([[0.5, 0.6]], [[0.5, 0.5]], threshold=0.1)
    assert screen.passing == [(0, 1)]


def test_top_ranks_heads_by_score_whether_or_not_they_pass():
    screen = make_screen([[0.2, 0.7], [0.9, 0.1]], [[1.0, 1.0], [1.0, 1.0]], threshold=0.5)
    assert screen.passing == []
    assert screen.top(3) == [(1, 0), (0, 1), (0, 0)]


def test_summary_names_the_best_head_the_pass_count_and_both_lines():
    screen = make_screen([[0.2, 0.7, 0.1], [0.95, 0.1, 0.3]], [[0.1] * 3, [0.2] * 3], threshold=0.5)
    summary = screen.summary()
    assert "best L1H0 = 0.95" in summary
    assert "test: 2 of 6 heads score >= 0.5" in summary
    assert "95th percentile (0.20)" in summary and "uniform attention: 0.10" in summary


def test_screen_finds_the_one_previous_token_head_in_hand_built_patterns():
    n_layers, batch, n_heads, seq_len = 2, 2, 3, 8
    patterns = uniform_causal(seq_len).expand(n_layers, batch, n_heads, seq_len, seq_len).clone()
    patterns[1, :, 2] = one_hot_pattern(seq_len, 1)  # L1H2 attends one step back
    control = uniform_causal(seq_len).expand(n_layers, batch, n_heads, seq_len, seq_len)
    targets = scores.previous_token_targets(batch, seq_len)

    found = families.screen("previous-token", patterns, targets, control, targets, threshold=0.5)

    uniform = mean_of_inverse_positions(range(1, seq_len))
    expected = torch.full((n_layers, n_heads), uniform)
    expected[1, 2] = 1.0
    torch.testing.assert_close(found.scores, expected)
    torch.testing.assert_close(found.null, torch.full((n_layers, n_heads), uniform))
    assert found.baseline == pytest.approx(uniform)
    assert found.passing == [(1, 2)] and found.family == "previous-token" and found.threshold == 0.5


def test_screen_names_both_shapes_when_control_targets_do_not_fit():
    patterns = uniform_causal(6).expand(1, 2, 1, 6, 6)
    with pytest.raises(ValueError, match=r"targets \(2, 5, 5\) do not match .* \(2, 6, 6\)"):
        families.screen("x", patterns, scores.previous_token_targets(2, 6), patterns,
                        scores.previous_token_targets(2, 5), threshold=0.5)


# --- ablation_check: the bookkeeping, on hand-made metric values -----------------------------------------

FAKE_MODEL = SimpleNamespace(cfg=SimpleNamespace(n_layers=2, n_heads=4))  # ablation_check reads only the shape


@pytest.fixture
def fake_ablations(monkeypatch):
    """Replace the forward passes by hand-made values: clean 1.0, top heads 3.0 (change 2), and random
    draws changing the metric by 0, 1, 2 and 5. Records the head sets ablation_check asks for."""
    calls = []

    def fake_ablated_metric(model, tokens, head_sets, metric, **kwargs):
        calls.append([list(map(tuple, heads)) for heads in head_sets])
        values = torch.tensor([1.0, 3.0, 1.0, 2.0, 3.0, 6.0])[: len(head_sets)]
        return values[:, None].expand(len(head_sets), tokens.shape[0]).clone()  # [set, prompt]

    monkeypatch.setattr(interventions, "ablated_metric", fake_ablated_metric)
    return calls


def test_p_value_counts_random_draws_at_least_as_large_plus_one_over_n_plus_one(fake_ablations):
    check = families.ablation_check(FAKE_MODEL, torch.zeros(3, 5, dtype=torch.long), [(0, 1)], None,
                                    metric_name="m", n_random=4, mode="zero")
    torch.testing.assert_close(check.random_draws, torch.tensor([0.0, 1.0, 2.0, 5.0]))
    # draws 2 (a tie) and 5 reach the top heads' change of 2: p = (2 + 1) / (4 + 1)
    assert check.p_value == pytest.approx(3 / 5)
    assert check.clean.mean == pytest.approx(1.0) and check.top.mean == pytest.approx(2.0)
    assert check.random.mean == pytest.approx(2.0) and check.random.n == 4
    assert check.ratio == pytest.approx(1.0)


def test_ablation_check_asks_for_clean_then_top_then_random_sets_without_the_top_heads(fake_ablations):
    heads = [(0, 1), (1, 3)]
    families.ablation_check(FAKE_MODEL, torch.zeros(2, 5, dtype=torch.long), heads, None,
                            metric_name="m", n_random=4, seed=3, mode="zero")
    (head_sets,) = fake_ablations
    assert head_sets[0] == [] and head_sets[1] == heads
    draws = head_sets[2:]
    assert len(draws) == 4
    for draw in draws:
        assert len(draw) == 2 and len(set(draw)) == 2  # k distinct heads, like the top set
        assert not set(draw) & set(heads)


def test_summary_lists_the_ablated_heads_and_the_p_value(fake_ablations):
    check = families.ablation_check(FAKE_MODEL, torch.zeros(2, 5, dtype=torch.long), [[1, 2]], None,
                                    metric_name="loss", n_random=4, mode="zero")
    assert check.heads == ((1, 2),)  # lists are accepted and stored as tuples
    assert check.summary().startswith("zero-ablating L1H2: loss changes by")
    assert "over 4 draws; p = 0.600" in check.summary()


def test_ablating_no_heads_is_refused_with_a_hint():
    with pytest.raises(ValueError, match=r"heads is empty.*\(layer, head\)"):
        families.ablation_check(FAKE_MODEL, torch.zeros(2, 5, dtype=torch.long), [], None,
                                metric_name="m", mode="zero")


def test_a_head_listed_twice_is_refused_because_the_random_sets_would_be_larger():
    with pytest.raises(ValueError, match=r"heads lists L0H1 more than once: the top set would ablate fewer heads"):
        families.ablation_check(FAKE_MODEL, torch.zeros(2, 5, dtype=torch.long), [(0, 1), (0, 1)], None,
                                metric_name="m", mode="zero")


def test_too_many_heads_leave_no_disjoint_random_set():
    heads = [(layer, head) for layer in range(2) for head in range(3)]  # 6 of 8 heads: 2 left for a draw of 6
    with pytest.raises(ValueError, match=r"k must lie in \[1, 2\] \(heads left after exclusions\); got 6"):
        families.ablation_check(FAKE_MODEL, torch.zeros(2, 5, dtype=torch.long), heads, None,
                                metric_name="m", mode="zero")


# --- ablation_check on a real (tiny, random) model ---------------------------------------------------------

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
    metric = families.repeated_half_metric(tiny_repeats)
    heads = [(0, 1), (1, 2)]
    check = families.ablation_check(tiny_gpt2, tiny_repeats.tokens, heads, metric, metric_name="loss",
                                    n_random=3, mode="zero", seed=0)

    with torch.no_grad():
        clean = metric(tiny_gpt2(tiny_repeats.tokens), tiny_repeats.tokens)
        ablated = metric(zero_heads_by_hand(tiny_gpt2, tiny_repeats.tokens, heads), tiny_repeats.tokens)
    assert check.clean.mean == pytest.approx(clean.mean().item(), abs=1e-5)
    assert check.top.mean == pytest.approx((ablated - clean).mean().item(), abs=1e-5)
    assert check.top.mean != pytest.approx(0.0, abs=1e-6)  # the ablation really changed the model's output
    assert check.random_draws.shape == (3,)
    assert check.random.mean == pytest.approx(check.random_draws.mean().item(), abs=1e-6)
    exceed = (check.random_draws >= check.top.mean).sum().item()
    assert check.p_value == pytest.approx((exceed + 1) / 4)


def test_ablation_check_names_a_head_outside_the_model(tiny_gpt2, tiny_repeats):
    with pytest.raises(ValueError, match=r"head L5H0 is outside this model, which has layers 0\.\.1"):
        families.ablation_check(tiny_gpt2, tiny_repeats.tokens, [(5, 0)], families.repeated_half_metric(tiny_repeats),
                                metric_name="m", n_random=2, mode="zero")


def test_ablation_check_rejects_an_unknown_mode(tiny_gpt2, tiny_repeats):
    with pytest.raises(ValueError, match=r"mode must be 'zero' or 'mean'; got 'half'"):
        families.ablation_check(tiny_gpt2, tiny_repeats.tokens, [(0, 0)], families.repeated_half_metric(tiny_repeats),
                                metric_name="m", n_random=2, mode="half")


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

    got = families.repeated_half_metric(smollm2_repeats)(logits, tokens)

    torch.testing.assert_close(got, by_hand, atol=1e-4, rtol=1e-5)


def test_smollm2_passes_the_copying_gate_against_the_unrepeated_control(smollm2, smollm2_repeats, smollm2_logits):
    gate = families.repeated_tokens_gate(smollm2, smollm2_repeats)
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
    assert not families.repeated_tokens_gate(smollm2, no_copy).passed


def test_an_untrained_model_fails_the_copying_gate(tiny_gpt2):
    batch = tasks.repeated_tokens(tiny_gpt2, batch=8, half_len=6, seed=0)
    gate = families.repeated_tokens_gate(tiny_gpt2, batch)
    assert not gate.passed
    assert gate.summary().startswith("FAIL: behaviour absent at this scale (in-context copying)")


# --- previous_token_screen / induction_screen on the tiny model ---------------------------------------------

def test_the_tiny_tokenizer_has_enough_ordinary_words_to_sample_from(tiny_gpt2):
    # random_tokens samples 2-12-letter words: the word-level fixture has 10 ("When", "Mary", ..., "drink")
    assert len(tasks.ordinary_token_ids(tiny_gpt2)) == 10


def test_previous_token_screen_keeps_the_lower_of_the_random_token_and_text_scores(tiny_gpt2):
    found = families.previous_token_screen(tiny_gpt2, prompts=2, length=8, seed=0, threshold=0.3)

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
    found = families.induction_screen(tiny_gpt2, prompts=2, half_len=4, seed=0)
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
    overlap = families.published_overlap(found=[(6, 9), [0, 0], (5, 1)], published=[(5, 1), (6, 9), (7, 2)])
    assert overlap == {"matched": [(5, 1), (6, 9)], "missed": [(7, 2)], "new": [(0, 0)]}


def test_published_overlap_of_nothing_found_misses_everything():
    assert families.published_overlap([], [(2, 2)]) == {"matched": [], "missed": [(2, 2)], "new": []}


def test_phase_change_step_is_the_first_step_past_the_chosen_share_of_the_drop():
    steps = [0, 20, 40, 60, 80, 100]
    losses = [4.0, 3.9, 3.0, 1.0, 0.5, 0.6]  # drop 4.0 -> 0.5 (the minimum, not the last value)
    assert families.phase_change_step(steps, losses) == 60  # half the drop: first loss <= 2.25
    assert families.phase_change_step(steps, losses, fraction=0.25) == 40  # first loss <= 3.125
    assert families.phase_change_step(steps, losses, fraction=1.0) == 80  # the minimum itself


def test_phase_change_step_rejects_mismatched_or_empty_curves():
    with pytest.raises(ValueError, match=r"one loss per step.*got 2 steps and 3 losses"):
        families.phase_change_step([0, 1], [3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match=r"got 0 steps and 0 losses"):
        families.phase_change_step([], [])


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.5])
def test_phase_change_step_rejects_a_fraction_outside_zero_to_one(fraction):
    with pytest.raises(ValueError, match=rf"fraction must lie in \(0, 1\]; got {fraction}"):
        families.phase_change_step([0, 1], [2.0, 1.0], fraction=fraction)


# --- toy_induction_evaluator --------------------------------------------------------------------------------

HALF, TOY_VOCAB = 5, 10


@pytest.fixture(scope="module")
def probe():
    return toy.repeated_sequence(torch.Generator().manual_seed(0), 3, HALF, TOY_VOCAB)


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
    result = families.toy_induction_evaluator(probe)(perfect_toy, step=0)

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
        result = families.toy_induction_evaluator(probe)(model, step=0)

    assert result["second_half_loss"] == pytest.approx(math.log(TOY_VOCAB), abs=0.01)
    assert result["first_half_loss"] == pytest.approx(math.log(TOY_VOCAB), abs=0.01)
    # each query q >= HALF has one induction target; uniform attention gives it 1 / (q + 1)
    assert result["induction"] == pytest.approx(mean_of_inverse_positions(range(HALF, 2 * HALF)), abs=0.01)
    assert result["previous_token"] == pytest.approx(mean_of_inverse_positions(range(1, 2 * HALF)), abs=0.01)
    assert result["induction"] == result["induction_grid"][-1].max().item()
    assert result["previous_token"] == result["previous_token_grid"][0].max().item()


def test_evaluator_plugs_into_toy_training_and_logs_every_evaluation(probe):
    config = toy.ToyConfig(vocab_size=TOY_VOCAB, n_ctx=2 * HALF, n_layers=2, n_heads=2, d_model=16, d_head=8)
    task = toy.SegmentTask(seq_len=2 * HALF, vocab_size=TOY_VOCAB, min_segment=2, max_segment=4)
    history = toy.train(toy.AttentionOnlyTransformer(config), task.sample,
                        toy.TrainConfig(steps=2, batch_size=4, eval_every=1), families.toy_induction_evaluator(probe))
    assert [row["step"] for row in history.evals] == [0, 1, 2]
    assert all(0.0 <= row["induction"] <= 1.0 and row["second_half_loss"] > 0 for row in history.evals)


# --- natural_text / stdlib_prose ------------------------------------------------------------------------------

def test_natural_text_windows_have_the_requested_length_without_bos_for_smollm2(smollm2):
    batch = tasks.natural_text(smollm2, batch=3, length=16, seed=0)
    assert batch.tokens.shape == (3, 16) and len(batch.prompts) == 3
    assert batch.info["length"] == 16 and batch.info["seed"] == 0


def test_natural_text_windows_follow_the_bos_policy(tiny_gpt2):
    batch = tasks.natural_text(tiny_gpt2, batch=2, length=8, seed=0)
    assert batch.tokens.shape == (2, 9)
    assert (batch.tokens[:, 0] == tiny_gpt2.tokenizer.bos_token_id).all()


def test_natural_text_windows_are_contiguous_pieces_of_the_prose(smollm2):
    batch = tasks.natural_text(smollm2, batch=3, length=12, seed=0)
    stream = torch.tensor(smollm2.tokenizer.encode(tasks.stdlib_prose(), add_special_tokens=False))
    windows = stream.unfold(0, 12, 1)  # every 12-token slice of the corpus
    for row in batch.tokens:
        assert (windows == row).all(dim=1).any()


def test_same_seed_same_windows_and_other_seed_other_windows(smollm2):
    a = tasks.natural_text(smollm2, batch=3, length=10, seed=5)
    b = tasks.natural_text(smollm2, batch=3, length=10, seed=5)
    c = tasks.natural_text(smollm2, batch=3, length=10, seed=6)
    assert torch.equal(a.tokens, b.tokens) and a.prompts == b.prompts
    assert not torch.equal(a.tokens, c.tokens)


def test_natural_text_is_mostly_letters(smollm2):
    text = "".join(tasks.natural_text(smollm2, batch=4, length=32, seed=0).prompts)
    letters = sum(ch.isalpha() or ch.isspace() for ch in text)
    assert letters >= 0.8 * len(text), text


def test_natural_text_longer_than_the_corpus_says_how_long_the_corpus_is(tiny_gpt2):
    with pytest.raises(ValueError, match=r"the corpus has \d+ tokens, too few for windows of 10000000"):
        tasks.natural_text(tiny_gpt2, batch=1, length=10_000_000, seed=0)


def test_natural_text_sizes_must_be_positive(tiny_gpt2):
    with pytest.raises(ValueError, match="length must be at least 1; got 0"):
        tasks.natural_text(tiny_gpt2, batch=2, length=0, seed=0)
    with pytest.raises(ValueError, match="batch must be at least 1; got 0"):
        tasks.natural_text(tiny_gpt2, batch=0, length=5, seed=0)


def test_stdlib_prose_is_paragraphs_of_english_without_doctests():
    prose = tasks.stdlib_prose()
    paragraphs = prose.split("\n\n")
    assert len(paragraphs) >= 100
    assert len(paragraphs) == len(set(paragraphs))  # de-duplicated
    assert all(len(p.split()) >= 12 and ">>>" not in p and "\n" not in p for p in paragraphs)
    words = prose.lower().split()
    for common in ("the", "of", "and", "is"):  # function words: prose, not code or tables
        assert words.count(common) >= 100, common
    assert tasks.stdlib_prose() is prose  # cached: built once per process


def test_published_comparison_names_matches_misses_and_new_heads(tiny_gpt2):
    line = families.published_comparison(tiny_gpt2, "previous_token", [(2, 2), (1, 0)])
    assert "found L2H2" in line and "missed L4H11" in line and "not published: L1H0" in line


def test_published_comparison_says_when_a_model_has_no_published_heads(smollm2):
    line = families.published_comparison(smollm2, "induction", [(18, 6)])
    assert line.startswith("no published induction heads for smollm2-135m")


def test_findings_table_has_one_row_per_study():
    screen = families.Screen("x", torch.tensor([[0.9, 0.1]]), torch.tensor([[0.0, 0.0]]), threshold=0.4, baseline=0.1)
    gate = SimpleNamespace(passed=False)
    table = families.findings_table(families.Study("a", gate, screen, None), families.Study("b", gate, screen, None))
    assert list(table.index) == ["a", "b"] and table.loc["a", "top-k ablation effect"] == "not run"
