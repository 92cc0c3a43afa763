"""Tests for helpers.checks.recall: each exercise checker accepts a correct answer written out by hand, and rejects
a classic mistake with an AssertionError that names the case it failed on."""

import pytest
import torch

from helpers import checks


# --- check_answer_kinds -------------------------------------------------------------------------------------

def answer_kinds_by_hand(top1, memory_ids, context_ids):
    """0 memory, 1 context, 2 other, one prompt at a time; memory first, so an agreeing context reads as memory."""
    kinds = []
    for token, memory, context in zip(top1.tolist(), memory_ids.tolist(), context_ids.tolist()):
        kinds.append(0 if token == memory else 1 if token == context else 2)
    return torch.tensor(kinds)


def test_answer_kinds_checker_accepts_a_loop():
    assert checks.recall.check_answer_kinds(answer_kinds_by_hand) == "All 3 answer-kind cases match the reference."


def test_answer_kinds_checker_accepts_a_list():
    assert checks.recall.check_answer_kinds(lambda *a: answer_kinds_by_hand(*a).tolist()).startswith("All 3")


def test_answer_kinds_checker_catches_context_overwriting_memory():
    def context_last(top1, memory_ids, context_ids):  # an agreeing context then reads as context
        kinds = torch.full_like(top1, 2)
        kinds[top1 == memory_ids] = 0
        kinds[top1 == context_ids] = 1
        return kinds

    with pytest.raises(AssertionError, match=r"on an agreeing context .* your kinds are \[1, 2, 1\]; "
                                             r"expected \[0, 2, 0\]"):
        checks.recall.check_answer_kinds(context_last)


def test_answer_kinds_checker_catches_swapped_codes():
    def swapped(top1, memory_ids, context_ids):
        return torch.tensor([1 if t == m else 0 if t == c else 2 for t, m, c in zip(top1, memory_ids, context_ids)])

    with pytest.raises(AssertionError, match=r"on a batch with every kind .* your kinds are \[1, 0, 2, 1, 0, 2\]"):
        checks.recall.check_answer_kinds(swapped)


# --- check_head_dla ----------------------------------------------------------------------------------------

def head_dla_by_hand(head_out, final_scale, final_gain, unembed, memory_id, context_id):
    """Sum over residual dimensions, one at a time."""
    total = 0.0
    for i in range(len(head_out)):
        normed = head_out[i].item() / final_scale * final_gain[i].item()
        total += normed * (unembed[i, memory_id].item() - unembed[i, context_id].item())
    return total


def test_head_dla_checker_accepts_a_loop():
    assert checks.recall.check_head_dla(head_dla_by_hand) == "All 5 direct-effect cases match the reference."


def test_head_dla_checker_catches_a_missing_final_scale():
    def unscaled(head_out, final_scale, final_gain, unembed, memory_id, context_id):
        return head_dla_by_hand(head_out, 1.0, final_gain, unembed, memory_id, context_id)

    with pytest.raises(AssertionError, match=r"on a head with a random output \(scale 2\.5\) your direct effect is"):
        checks.recall.check_head_dla(unscaled)


def test_head_dla_checker_catches_context_minus_memory():
    def flipped(head_out, final_scale, final_gain, unembed, memory_id, context_id):
        return head_dla_by_hand(head_out, final_scale, final_gain, unembed, context_id, memory_id)

    with pytest.raises(AssertionError, match=r"on a head with a random output \(scale 2\.5\) your direct effect is "
                                             r"([-+]\d\.\d{4}); expected (?!\1)"):
        checks.recall.check_head_dla(flipped)


def test_head_dla_checker_catches_a_missing_gain():
    def no_gain(head_out, final_scale, final_gain, unembed, memory_id, context_id):
        return head_dla_by_hand(head_out, final_scale, torch.ones_like(final_gain), unembed, memory_id, context_id)

    with pytest.raises(AssertionError, match=r"^on a head with a random output"):
        checks.recall.check_head_dla(no_gain)


# --- check_context_heads -----------------------------------------------------------------------------------

def context_heads_by_hand(scores, k):
    """Sort every (score, layer, head) ascending and keep the first k."""
    ranked = sorted((scores[layer, head].item(), layer, head)
                    for layer in range(scores.shape[0]) for head in range(scores.shape[1]))
    return [(layer, head) for _, layer, head in ranked[:k]]


def test_context_heads_checker_accepts_a_sort():
    assert checks.recall.check_context_heads(context_heads_by_hand) == "All 4 head-picking cases match the reference."


def test_context_heads_checker_catches_the_memory_heads():
    def most_positive(scores, k):
        return context_heads_by_hand(-scores, k)

    with pytest.raises(AssertionError, match=r"on 3 layers x 4 heads, k = 3 you picked L\d+H\d+ \(\+"):
        checks.recall.check_context_heads(most_positive)


def test_context_heads_checker_catches_an_index_split_by_the_wrong_size():
    def divides_by_layers(scores, k):
        flat = scores.flatten().argsort()[:k]
        return [divmod(int(i), scores.shape[0]) for i in flat]

    with pytest.raises(AssertionError, match=r"on 3 layers x 4 heads, k = 3 you picked L0H0 \(-1\.61\), L2H0 \(\+0\.86\)"):
        checks.recall.check_context_heads(divides_by_layers)


# --- check_mean_ablation -----------------------------------------------------------------------------------

def mean_ablation_by_hand(z, means, ablated):
    out = z.clone()
    for b in range(z.shape[0]):
        for p in range(z.shape[1]):
            for h in ablated:
                out[b, p, h] = means[p, h]
    return out


def test_mean_ablation_checker_accepts_a_loop():
    assert checks.recall.check_mean_ablation(mean_ablation_by_hand) == "All 4 mean-ablation cases match the reference."


def test_mean_ablation_checker_catches_zero_ablation():
    def zeroes(z, means, ablated):
        out = z.clone()
        out[:, :, ablated] = 0
        return out

    with pytest.raises(AssertionError, match=r"on head 1 ablated your output differs at \(batch, pos, head\) = "
                                             r"\[\[0, 0, 1\], \[0, 1, 1\]"):
        checks.recall.check_mean_ablation(zeroes)


def test_mean_ablation_checker_catches_ablating_positions_instead_of_heads():
    def wrong_axis(z, means, ablated):
        out = z.clone()
        out[:, ablated] = means[ablated]
        return out

    with pytest.raises(AssertionError, match=r"on head 1 ablated your output differs at \(batch, pos, head\) = "
                                             r"\[\[0, 0, 1\], \[0, 1, 0\]"):
        checks.recall.check_mean_ablation(wrong_axis)


def test_mean_ablation_checker_catches_one_mean_for_every_position():
    def pooled(z, means, ablated):
        out = z.clone()
        out[:, :, ablated] = means.mean(0)[ablated]
        return out

    with pytest.raises(AssertionError, match=r"on head 1 ablated your output differs"):
        checks.recall.check_mean_ablation(pooled)


# --- check_answer_lead -------------------------------------------------------------------------------------

def answer_lead_by_hand(logits, column):
    leads = []
    for row, answer in zip(logits.tolist(), column.tolist()):
        others = [value for i, value in enumerate(row) if i != answer]
        leads.append(row[answer] - sum(others) / len(others))
    return torch.tensor(leads)


def test_answer_lead_checker_accepts_a_loop():
    assert checks.recall.check_answer_lead(answer_lead_by_hand) == "All 3 answer-lead cases match the reference."


def test_answer_lead_checker_catches_a_mean_over_every_candidate():
    def with_the_answer(logits, column):
        return logits[torch.arange(len(logits)), column] - logits.mean(1)

    with pytest.raises(AssertionError, match=r"on three prompts, three candidates \(answer columns \[0, 2, 1\]\) your "
                                             r"leads are \[1\.0, -2\.6667, 0\.0\]; expected \[1\.5, -4\.0, 0\.0\]"):
        checks.recall.check_answer_lead(with_the_answer)


def test_answer_lead_checker_catches_the_best_other_candidate():
    def over_the_runner_up(logits, column):
        right = logits[torch.arange(len(logits)), column]
        others = logits.scatter(1, column[:, None], -torch.inf)
        return right - others.max(1).values

    with pytest.raises(AssertionError, match=r"on three prompts, three candidates .* your leads are \[1\.0, "):
        checks.recall.check_answer_lead(over_the_runner_up)


# --- check_mover_score -------------------------------------------------------------------------------------

def mover_score_by_hand(patterns, subject, dla):
    start, stop = subject
    products = []
    for b in range(patterns.shape[0]):
        on_subject = sum(patterns[b, -1, k].item() for k in range(start, stop))
        products.append(on_subject * dla[b].item())
    return sum(products) / len(products)


def test_mover_score_checker_accepts_a_loop():
    assert checks.recall.check_mover_score(mover_score_by_hand) == "All 3 mover-score cases match the reference."


def test_mover_score_checker_catches_a_product_of_means():
    def product_of_means(patterns, subject, dla):
        start, stop = subject
        return (patterns[:, -1, start:stop].sum(-1).mean() * dla.mean()).item()

    with pytest.raises(AssertionError, match=r"on a one-token subject at position 2 \(subject \(2, 3\), DLA \[0\.8651, .*\]\) "
                                             r"your score is 0\.0159; expected 0\.0092"):
        checks.recall.check_mover_score(product_of_means)


def test_mover_score_checker_catches_an_inclusive_stop():
    def inclusive(patterns, subject, dla):
        return mover_score_by_hand(patterns, (subject[0], subject[1] + 1), dla)

    with pytest.raises(AssertionError, match=r"on a one-token subject at position 2"):
        checks.recall.check_mover_score(inclusive)


# --- check_ov_logits ---------------------------------------------------------------------------------------

def ov_logits_by_hand(weights, head, noun_id, letter_ids):
    layer, h = head
    x = weights.embed[noun_id]
    rms = (sum(v * v for v in x.tolist()) / len(x) + weights.eps) ** 0.5
    x = x / rms * weights.ln_gain[layer]
    kv = h // (weights.w_o.shape[1] // weights.w_v.shape[1])
    out = x @ weights.w_v[layer, kv] @ weights.w_o[layer, h]
    return torch.stack([(out * weights.final_gain) @ weights.unembed[:, letter] for letter in letter_ids.tolist()])


def test_ov_checker_accepts_a_step_by_step_reading():
    assert checks.recall.check_ov_logits(ov_logits_by_hand) == "All 4 OV cases match the reference."


def test_ov_checker_catches_the_query_heads_index_used_for_w_v():
    def no_groups(weights, head, noun_id, letter_ids):
        layer, h = head
        x = weights.embed[noun_id]
        x = x / (x.pow(2).mean() + weights.eps).sqrt() * weights.ln_gain[layer]
        out = x @ weights.w_v[layer, h % weights.w_v.shape[1]] @ weights.w_o[layer, h]
        return (out * weights.final_gain) @ weights.unembed[:, letter_ids]

    with pytest.raises(AssertionError, match=r"on head L1H1 \(its value head is 0\), noun 6 your logits"):
        checks.recall.check_ov_logits(no_groups)


def test_ov_checker_catches_a_missing_normalisation():
    def raw_embedding(weights, head, noun_id, letter_ids):
        layer, h = head
        out = weights.embed[noun_id] * weights.ln_gain[layer] @ weights.w_v[layer, h // 2] @ weights.w_o[layer, h]
        return (out * weights.final_gain) @ weights.unembed[:, letter_ids]

    with pytest.raises(AssertionError, match=r"on head L0H0, noun 2 your logits for letters \[0, 3, 5, 8, 11\] are"):
        checks.recall.check_ov_logits(raw_embedding)


# --- check_draw_p_value ------------------------------------------------------------------------------------

def p_value_by_hand(observed, draws, larger_is_stronger):
    count = 0
    for value in draws.tolist():
        if (value >= observed) if larger_is_stronger else (value <= observed):
            count += 1
    return (1 + count) / (len(draws) + 1)


def test_p_value_checker_accepts_a_count():
    assert checks.recall.check_draw_p_value(p_value_by_hand) == "All 4 p-value cases match the reference."


def test_p_value_checker_catches_ties_left_out():
    def strict(observed, draws, larger_is_stronger):
        sign = 1 if larger_is_stronger else -1
        return (1 + int((sign * draws > sign * observed).sum())) / (len(draws) + 1)

    with pytest.raises(AssertionError, match=r"on two draws tie with the observed effect .* your p-value is 0\.1667; "
                                             r"expected 0\.5000 \(2 of 5 draws as strong\)"):
        checks.recall.check_draw_p_value(strict)


def test_p_value_checker_catches_a_drop_counted_as_a_rise():
    def ignores_direction(observed, draws, larger_is_stronger):
        return p_value_by_hand(observed, draws, True)

    with pytest.raises(AssertionError, match=r"on a drop, where lower is stronger .* your p-value is 0\.8571; "
                                             r"expected 0\.4286"):
        checks.recall.check_draw_p_value(ignores_direction)


def test_p_value_checker_catches_a_share_without_the_plus_ones():
    with pytest.raises(AssertionError, match=r"on no draw as strong \(20 draws\) .* your p-value is 0\.0000; "
                                             r"expected 0\.0476"):
        checks.recall.check_draw_p_value(lambda observed, draws, larger: float((draws >= observed).float().mean()))
