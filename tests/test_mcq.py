"""MCQ helpers: readings at END agree with full runs, the gate and the class rules on hand-built inputs."""

import math

import pytest
import torch

from helpers import attribution, capture
from helpers.experiments import mcq, mcq_prompts


def _task(tokens: torch.Tensor, answer_ids: list[int], correct: list[int]) -> mcq_prompts.MCQTask:
    """A one-batch task on arbitrary tokens (label positions are irrelevant to the readings tested here)."""
    batch, seq_len = tokens.shape
    n = len(answer_ids)
    positions = torch.arange(n).repeat(batch, 1)
    one = mcq_prompts.MCQBatch(tokens=tokens, prompts=("",) * batch, correct=torch.tensor(correct), label_pos=positions,
                       content_pos=positions + n, template="test")
    return mcq_prompts.MCQTask(batches=(one,), labels="ABCD"[:n], answer_ids=torch.tensor(answer_ids), shots=0)


def test_label_logits_match_the_full_forward_pass(tiny_llama_gqa):
    tokens = torch.randint(3, 40, (3, 9), generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([5, 6, 7, 8])
    read = capture.read_end(tiny_llama_gqa, tokens)
    with torch.no_grad():
        full = tiny_llama_gqa(tokens)[:, -1, ids].float()
    torch.testing.assert_close(mcq.label_logits(tiny_llama_gqa, read, ids), full, atol=1e-4, rtol=1e-4)
    rows = read.attention.sum(-1)
    torch.testing.assert_close(rows, torch.ones_like(rows), atol=1e-5, rtol=0)  # attention rows at END


def test_centred_label_attribution_agrees_with_pairwise_attribution(tiny_llama_gqa):
    tokens = torch.randint(3, 40, (4, 8), generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([10, 11, 12, 13])
    correct = torch.tensor([0, 1, 2, 3])
    dla = mcq.head_label_attribution(tiny_llama_gqa, capture.read_end(tiny_llama_gqa, tokens), ids)  # [l, h, b, o]
    assert torch.allclose(dla.sum(-1), torch.zeros(()), atol=1e-5), "centred over the options"
    wrong = (correct + 2) % 4
    pairwise = attribution.head_logit_attribution(tiny_llama_gqa, tokens, ids[correct], ids[wrong])
    mine = dla[..., torch.arange(4), correct] - dla[..., torch.arange(4), wrong]
    torch.testing.assert_close(mine, pairwise, atol=1e-5, rtol=1e-4)
    # correct minus the mean of the others is the mean of the three pairwise attributions
    mean_of_pairs = sum(attribution.head_logit_attribution(tiny_llama_gqa, tokens, ids[correct], ids[(correct + s) % 4])
                        for s in (1, 2, 3)) / 3
    torch.testing.assert_close(mcq.correct_vs_others(dla, correct), mean_of_pairs, atol=1e-5, rtol=1e-4)


def test_correct_vs_others_by_hand():
    values = torch.tensor([[4.0, 1.0, 1.0, 1.0], [0.0, 3.0, 0.0, 6.0]])
    torch.testing.assert_close(mcq.correct_vs_others(values, torch.tensor([0, 1])), torch.tensor([3.0, 1.0]))


def test_binomial_p_matches_a_direct_sum_and_rejects_bad_counts():
    assert mcq.binomial_p_greater(0, 10, 0.25) == pytest.approx(1.0)
    assert mcq.binomial_p_greater(10, 10, 0.25) == pytest.approx(0.25 ** 10)
    assert mcq.binomial_p_greater(2, 3, 0.5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="successes <= trials"):
        mcq.binomial_p_greater(5, 3, 0.25)


def test_gate_passes_a_model_that_knows_and_fails_one_that_always_says_a():
    correct = torch.arange(60) % 4
    knows = torch.nn.functional.one_hot(correct, 4).float() * 3
    gate = mcq.mcq_gate(knows, correct, labels="ABCD", name="oracle")
    assert gate.passed and gate.accuracy.mean == 1.0 and gate.p_value < 1e-10
    always_a = torch.zeros(60, 4)
    always_a[:, 0] = 2.0
    bad = mcq.mcq_gate(always_a, correct, labels="ABCD", name="always A")
    assert not bad.passed and bad.favourite == ("A", 1.0)
    assert bad.accuracy.mean == pytest.approx(0.25) and "FAIL" in bad.summary() and "'A'" in bad.summary()
    with pytest.raises(ValueError, match=r"\(60, 3\)"):
        mcq.mcq_gate(always_a[:, :3], correct, labels="ABCD", name="x")


def _run(label_attention, content_attention=None, dla=None, recent=None, correct=None) -> mcq.MCQRun:
    layer, head, item, option = label_attention.shape
    correct = torch.arange(item) % option if correct is None else correct
    return mcq.MCQRun(logits=torch.zeros(item, option), correct=correct, label_attention=label_attention,
                      content_attention=torch.zeros_like(label_attention) if content_attention is None else content_attention,
                      recent_attention=torch.zeros(layer, head, item) if recent is None else recent,
                      dla=torch.zeros_like(label_attention) if dla is None else dla)


def test_each_class_rule_picks_the_head_built_for_it():
    items, n = 40, 4
    correct = torch.arange(items) % n
    onehot = torch.nn.functional.one_hot(correct, n).float()
    labels = torch.full((1, 5, items, n), 0.01)
    labels[0, 0] = 0.1  # L0H0: uniform over the labels (0.4 in total)
    labels[0, 1, :, 2] = 0.5  # L0H1: always label C
    labels[0, 2] = 0.5 * onehot + 0.01  # L0H2: the correct label
    contents = torch.full((1, 5, items, n), 0.01)
    contents[0, 3] = 0.5 * onehot + 0.01  # L0H3: the correct option's content
    dla = torch.zeros(1, 5, items, n)
    dla[0, 2] = 0.6 * (onehot - 0.25)  # the correct-letter head also writes the correct label
    dla[0, 4] = 2.0 * (onehot - 0.25)  # L0H4: amplifies the correct label ...
    recent = torch.zeros(1, 5, items)
    recent[0, 4] = 0.8  # ... while looking at the last tokens
    found = mcq.signature(_run(labels, contents, dla, recent, correct), seed=0)
    expected = {"constant": [(0, 0)], "single_letter": [(0, 1)], "correct_letter": [(0, 2)],
                "content_gatherer": [(0, 3)], "amplification": [(0, 4)]}
    got = {name: found.heads(name) for name in mcq.CLASSES}
    assert got == expected, got
    assert found.entropy[0, 0] == pytest.approx(1.0) and int(found.favourite[0, 1]) == 2
    assert found.correct_share[0, 2] > 0.9 and found.correct_share_null[0, 2] < 0.1


def test_a_head_that_barely_reads_the_labels_is_not_classified():
    labels = torch.full((1, 1, 8, 4), 0.001)
    labels[0, 0, :, 1] = 0.05  # concentrated on B, but only 5 % of the attention reaches any label
    found = mcq.signature(_run(labels))
    assert found.favourite_share[0, 0] > 0.6 and found.counts()["single_letter"] == 0


def test_format_patching_at_the_last_layer_gives_the_source_output(tiny_llama_gqa):
    generator = torch.Generator().manual_seed(2)
    source_tokens = torch.randint(3, 40, (3, 7), generator=generator)
    target_tokens = source_tokens.clone()
    target_tokens[:, 2] = torch.randint(3, 40, (3,), generator=generator)  # the "format" differs at one token
    source, target = _task(source_tokens, [5, 6], [0, 1, 0]), _task(target_tokens, [7, 8], [0, 1, 0])
    result = mcq.format_patching(tiny_llama_gqa, source, target)
    assert result.layers == (0, 1)
    # after the last layer, END's residual is all the unembedding sees
    torch.testing.assert_close(result.preference[-1], result.clean_source, atol=1e-4, rtol=1e-4)
    assert result.recovered[-1] == pytest.approx(1.0, abs=1e-3)
    assert result.decisive_layer() in (0, 1)
    with pytest.raises(ValueError, match="same questions"):
        mcq.format_patching(tiny_llama_gqa, source, _task(target_tokens[:, :5], [7, 8], [0, 1, 0]))


def test_decisive_layer_is_where_recovery_stays_above_the_level():
    patching = mcq.FormatPatching(layers=(0, 1, 2, 3), preference=torch.tensor([[0.0], [0.6], [0.4], [1.0]]),
                                  clean_target=torch.tensor([0.0]), clean_source=torch.tensor([1.0]))
    assert patching.decisive_layer(0.5) == 3 and patching.decisive_layer(0.3) == 1


@pytest.fixture(scope="module")
def smollm2_task(smollm2):
    return mcq_prompts.mcq_task(smollm2, n=16, seed=3), mcq_prompts.mcq_task(smollm2, n=16, seed=3, labels=mcq_prompts.SYMBOLS)


def test_prompts_balance_the_correct_letter_and_name_every_option(smollm2, smollm2_task):
    letters, symbols = smollm2_task
    assert len(letters) == 16 and torch.bincount(letters.correct, minlength=4).tolist() == [4, 4, 4, 4]
    for batch in letters.batches:
        assert batch.tokens.shape[0] == len(batch.prompts)
        for row, labels, contents, prompt in zip(batch.tokens, batch.label_pos, batch.content_pos, batch.prompts):
            pieces = [smollm2.tokenizer.decode([int(row[p])]) for p in labels]
            assert pieces == list("ABCD")
            last_question = prompt.split("Question:")[-1]
            assert all(smollm2.tokenizer.decode([int(row[p])]).strip() in last_question for p in contents)
            assert prompt.endswith("Answer:")
    assert [b.tokens.shape for b in letters.batches] == [b.tokens.shape for b in symbols.batches]
    assert torch.equal(letters.correct, symbols.correct)


def test_shots_come_before_the_question_and_bad_labels_are_refused(smollm2):
    shot = mcq_prompts.mcq_task(smollm2, n=4, seed=0, shots=2, labels="AB")
    prompt = shot.batches[0].prompts[0]
    assert prompt.count("Question:") == 3 and prompt.count("Answer:") == 3 and shot.n_options == 2
    with pytest.raises(ValueError, match="single tokens"):
        mcq_prompts.mcq_task(smollm2, n=4, seed=0, labels=["Alpha", "Beta"])
    assert math.isclose(mcq.binomial_p_greater(1, 1, 0.5), 0.5)


def test_end_patches_with_the_prompts_own_residual_change_nothing(tiny_llama_gqa):
    from helpers import capture, interventions

    tokens = torch.randint(3, 40, (3, 7), generator=torch.Generator().manual_seed(4))
    resid = capture.residual_at_end(tiny_llama_gqa, tokens, [0, 1])
    final = interventions.final_with_end_patches(tiny_llama_gqa, tokens, [(0, resid[0]), (1, resid[1])])
    clean = capture.read_end(tiny_llama_gqa, tokens).final
    assert final.shape == (2, 3, clean.shape[-1])
    for patched in final:
        torch.testing.assert_close(patched, clean, atol=1e-5, rtol=1e-4)
    other = capture.residual_at_end(tiny_llama_gqa, tokens.flip(0), [1])[1]  # another prompt's last stream
    swapped = interventions.final_with_end_patches(tiny_llama_gqa, tokens, [(1, other)])[0]
    torch.testing.assert_close(swapped, clean.flip(0), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="each patch"):
        interventions.final_with_end_patches(tiny_llama_gqa, tokens, [(5, resid[0])])


def test_screen_is_the_class_score_among_heads_that_read_there():
    labels = torch.full((1, 2, 8, 4), 0.001)
    labels[0, 0] = 0.2  # L0H0 reads the labels evenly; L0H1 barely reads them
    found = mcq.signature(_run(labels))
    constant = found.screen("constant")
    assert constant[0, 0] == pytest.approx(1.0) and constant[0, 1] == 0.0
    torch.testing.assert_close(found.screen("amplification"), found.dla)
    torch.testing.assert_close(found.screen("correct_head"), found.dla.abs())
    with pytest.raises(ValueError, match="family must be one of"):
        found.screen("mover")


def test_held_out_family_shares_no_option_word_and_names_every_option(smollm2):
    main_words = {w for pool in mcq_prompts.POOLS.values() for w in pool}
    held_words = {w for pool in mcq_prompts.HELD_OUT_POOLS.values() for w in pool}
    assert not main_words & held_words and not set(mcq_prompts.TEMPLATES) & set(mcq_prompts.HELD_OUT_TEMPLATES)
    held = mcq_prompts.mcq_task(smollm2, n=20, seed=2, family=mcq_prompts.HELD_OUT)
    assert len(held) == 20 and len(held.batches) >= 4
    for batch in held.batches:
        for row, labels, contents, prompt in zip(batch.tokens, batch.label_pos, batch.content_pos, batch.prompts):
            assert prompt.startswith("Q: ") and "Question:" not in prompt and prompt.endswith("Answer:")
            assert [smollm2.tokenizer.decode([int(row[p])]) for p in labels] == list("ABCD")
            assert all(smollm2.tokenizer.decode([int(row[p + 1])]) == ")" for p in labels)
            assert all(smollm2.tokenizer.decode([int(row[p])]).strip() in held_words for p in contents)
    main = mcq_prompts.mcq_task(smollm2, n=20, seed=2)
    assert torch.equal(held.answer_ids, main.answer_ids)  # the same answer tokens after "Answer:"
