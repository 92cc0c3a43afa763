"""Tests for helpers.yesno: NAS on hand-built patterns, the bias metrics, and the question generator
checked against arithmetic it can verify itself (SmolLM2's tokenizer only, no forward pass)."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch

from helpers import model_cache, models
from helpers.experiments import yesno
from synthetic import uniform_causal

SEQ, YES, NO, FIRST = 8, 1, 3, 5  # "Answer Yes or No . Is ... Answer:" in miniature


def patterns_with(head_rows: dict[tuple[int, int], torch.Tensor], n_layers: int = 2, n_heads: int = 3,
                  batch: int = 2) -> torch.Tensor:
    """[layer, batch, head, query, key] of uniform causal heads, except the given [query, key] patterns."""
    patterns = uniform_causal(SEQ).expand(n_layers, batch, n_heads, SEQ, SEQ).clone()
    for (layer, head), pattern in head_rows.items():
        patterns[layer, :, head] = pattern
    return patterns


def attending(key_shares: dict[int, float]) -> torch.Tensor:
    """A [query, key] pattern whose every query from FIRST on puts the given shares on the given keys
    and the rest on key 0; earlier queries attend to key 0."""
    pattern = torch.zeros(SEQ, SEQ)
    pattern[:, 0] = 1.0
    for key, share in key_shares.items():
        pattern[FIRST:, key] = share
    pattern[FIRST:, 0] = 1.0 - sum(key_shares.values())
    return pattern


def positions(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.full((batch,), YES), torch.full((batch,), NO), torch.full((batch,), FIRST)


def test_nas_is_positive_for_a_no_head_negative_for_a_yes_head_and_zero_for_a_balanced_one():
    eps = 1e-6
    patterns = patterns_with({(0, 0): attending({NO: 1.0}), (0, 1): attending({YES: 1.0}),
                              (1, 2): attending({YES: 0.3, NO: 0.3})})
    nas = yesno.negative_attention_score(patterns, *positions(), eps=eps)

    n_queries = SEQ - FIRST
    pure = n_queries * math.log((1 + eps) / eps)
    torch.testing.assert_close(nas[0, 0], torch.tensor(pure))
    torch.testing.assert_close(nas[0, 1], torch.tensor(-pure))
    torch.testing.assert_close(nas[1, 2], torch.tensor(0.0))
    # uniform heads spread attention evenly, so Yes and No get equal shares: NAS 0
    torch.testing.assert_close(nas[1, 0], torch.tensor(0.0))


def test_nas_matches_the_formula_on_a_hand_computed_head():
    patterns = patterns_with({(1, 1): attending({YES: 0.2, NO: 0.6})})
    nas = yesno.negative_attention_score(patterns, *positions(), eps=1e-12)
    expected = (SEQ - FIRST) * 0.8 * math.log(3.0)
    assert nas[1, 1].item() == pytest.approx(expected, rel=1e-5)


def test_nas_matches_a_naive_loop_on_random_patterns_with_per_prompt_positions():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, SEQ, SEQ, generator=generator)
    patterns = logits.masked_fill(~torch.ones(SEQ, SEQ, dtype=torch.bool).tril(), -torch.inf).softmax(-1)
    yes_key, no_key, first = torch.tensor([1, 3, 2]), torch.tensor([3, 1, 4]), torch.tensor([5, 4, 6])
    got = yesno.negative_attention_per_prompt(patterns, yes_key, no_key, first, eps=1e-6)
    expected = torch.zeros(2, 3, 4)
    for layer in range(2):
        for b in range(3):
            for head in range(4):
                for q in range(first[b], SEQ):
                    a_yes, a_no = patterns[layer, b, head, q, yes_key[b]], patterns[layer, b, head, q, no_key[b]]
                    expected[layer, b, head] += (a_no + a_yes) * torch.log((a_no + 1e-6) / (a_yes + 1e-6))
    torch.testing.assert_close(got, expected)


def test_queries_before_the_question_do_not_count():
    pattern = attending({})  # from FIRST on: all on key 0
    pattern[FIRST - 1, :] = 0
    pattern[FIRST - 1, NO] = 1.0  # the query just before the question looks at No: must be ignored
    nas = yesno.negative_attention_score(patterns_with({(0, 0): pattern}), *positions())
    assert nas[0, 0].item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("yes_key, no_key, first, match", [
    (3, 3, 5, "same position"),
    (1, 3, 3, "after both candidate keys"),
    (1, SEQ, 5, r"no_key must hold 2 positions in \[0, 8\)"),
])
def test_bad_positions_are_named(yes_key, no_key, first, match):
    with pytest.raises(ValueError, match=match):
        yesno.negative_attention_score(patterns_with({}), torch.full((2,), yes_key), torch.full((2,), no_key),
                                       torch.full((2,), first))


def test_patterns_without_five_axes_are_rejected():
    with pytest.raises(ValueError, match=r"\[layer, batch, head, query, key\]"):
        yesno.negative_attention_score(torch.rand(2, 3, SEQ, SEQ), *positions())


def test_no_minus_yes_reads_the_last_position_only():
    logits = torch.zeros(2, 4, 10)
    logits[:, -1, 7], logits[:, -1, 2] = torch.tensor([3.0, 1.0]), torch.tensor([1.0, 4.0])
    logits[:, 0, 7] = 100.0  # an earlier position must not matter
    torch.testing.assert_close(yesno.no_minus_yes(logits, yes_id=2, no_id=7), torch.tensor([2.0, -3.0]))


def test_precision_and_recall_of_yes_on_a_hand_counted_example():
    truth = torch.tensor([True, True, True, True, False, False, False, False])
    says_yes = torch.tensor([True, False, False, False, True, False, False, False])  # says Yes rarely
    precision, recall = yesno.precision_recall_yes(says_yes, truth)
    assert (precision, recall) == (0.5, 0.25)
    with pytest.raises(ValueError, match="no item has the answer Yes"):
        yesno.precision_recall_yes(says_yes, torch.zeros(8, dtype=torch.bool))


def mirror_truth(pairs: int) -> torch.Tensor:
    return torch.tensor([True, False] * pairs)


def test_mirror_gate_passes_a_no_biased_model_and_fails_an_unbiased_or_yes_biased_one():
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(120, generator=generator) * 0.3
    truth = mirror_truth(60)
    knows_answer = torch.where(truth, -1.0, 1.0)  # correct and unbiased: No-minus-Yes below 0 on true items
    assert not yesno.mirror_gate(knows_answer + noise, truth).passed
    assert yesno.mirror_gate(knows_answer + 0.5 + noise, truth).passed  # +0.5 nats towards No on every item
    assert not yesno.mirror_gate(knows_answer - 0.5 + noise, truth).passed  # towards Yes


def test_mirror_gate_requires_alternating_pairs():
    with pytest.raises(ValueError, match="mirror pairs"):
        yesno.mirror_gate(torch.zeros(6), torch.tensor([False, True] * 3))


def test_balanced_averages_the_orders_item_by_item():
    both = yesno.balanced({"Yes or No": torch.tensor([1.0, -1.0]), "No or Yes": torch.tensor([-3.0, 1.0])})
    torch.testing.assert_close(both, torch.tensor([-1.0, 0.0]))


def test_screen_splits_nas_into_content_and_position_and_measures_the_swap():
    scores = torch.tensor([[4.0, 0.0, 1.0], [0.5, -1.0, 2.0]])
    swapped = torch.tensor([[4.0, 0.0, -1.0], [0.5, -1.0, 2.0]])
    screen = yesno.NasScreen(scores=scores, swapped=swapped, top_k=2)
    torch.testing.assert_close(screen.content[0, 2], torch.tensor(0.0))
    torch.testing.assert_close(screen.positional[0, 2], torch.tensor(1.0))
    assert screen.top(2) == [(0, 0), (1, 2)]
    assert screen.overlap == 2 and screen.stable


# ---- the generator, with SmolLM2's real tokenizer (no forward pass) ----------------------------


@pytest.fixture(scope="module")
def smollm2_tokenizer_only():
    """Enough of a model for the generators: the tokenizer and the BOS policy (SmolLM2 uses none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_cache.ensure_cached(models.get_spec("smollm2-135m")))
    return SimpleNamespace(
        tokenizer=tokenizer, cfg=SimpleNamespace(default_prepend_bos=False),
        to_tokens=lambda text: torch.tensor([tokenizer.encode(text, add_special_tokens=False)]))


def test_questions_come_in_true_false_mirror_pairs_with_correct_answers(smollm2_tokenizer_only):
    model = smollm2_tokenizer_only
    task = yesno.yes_no_questions(model, pairs_per_kind=12, seed=3)
    assert len(task) == 72 and task.truth.sum().item() == 36
    assert task.truth[0::2].all() and not task.truth[1::2].any()
    for batch in task.batches:
        for prompt, answer in zip(batch.prompts, batch.answers.tolist()):
            says_true = answer == task.yes_id
            if match := re.search(r"Is (\d) \+ (\d) = (\d+)\?", prompt):
                a, b, c = map(int, match.groups())
                assert (a + b == c) == says_true, prompt
            elif match := re.search(r"Is (\d) greater than (\d)\?", prompt):
                assert (int(match[1]) > int(match[2])) == says_true, prompt
            else:
                city, country = re.search(r"Is (\w+) in (\w+)\?", prompt).groups()
                assert ((city, country) in yesno.CAPITALS) == says_true, prompt


def test_positions_point_at_the_candidates_and_the_question(smollm2_tokenizer_only):
    model = smollm2_tokenizer_only
    for order in yesno.ORDERS:
        task = yesno.yes_no_questions(model, pairs_per_kind=3, seed=0, order=order)
        for batch in task.batches:
            rows = torch.arange(len(batch))
            assert (batch.tokens[rows, batch.positions["yes_key"]] == task.yes_id).all()
            assert (batch.tokens[rows, batch.positions["no_key"]] == task.no_id).all()
            first_word = model.tokenizer.decode(batch.tokens[0, batch.positions["question"][0]])
            assert first_word.strip() == "Is", first_word
            yes_first = (batch.positions["yes_key"] < batch.positions["no_key"]).all()
            assert yes_first == (order == "Yes or No")


def test_the_order_swap_and_the_seed_change_nothing_else(smollm2_tokenizer_only):
    model = smollm2_tokenizer_only
    a = yesno.yes_no_questions(model, pairs_per_kind=4, seed=7, order="Yes or No")
    b = yesno.yes_no_questions(model, pairs_per_kind=4, seed=7, order="No or Yes")
    again = yesno.yes_no_questions(model, pairs_per_kind=4, seed=7, order="Yes or No")
    assert [p.replace("No or Yes", "Yes or No") for batch in b.batches for p in batch.prompts] == \
        [p for batch in a.batches for p in batch.prompts]
    assert all(torch.equal(x.tokens, y.tokens) for x, y in zip(a.batches, again.batches))
    other = yesno.yes_no_questions(model, pairs_per_kind=4, seed=8)
    assert any(x.prompts != y.prompts for x, y in zip(a.batches, other.batches))


def test_bad_generator_arguments_say_what_is_allowed(smollm2_tokenizer_only):
    model = smollm2_tokenizer_only
    with pytest.raises(ValueError, match="order must be one of"):
        yesno.yes_no_questions(model, pairs_per_kind=2, seed=0, order="yes/no")
    with pytest.raises(ValueError, match="kinds must be a non-empty subset"):
        yesno.yes_no_questions(model, pairs_per_kind=2, seed=0, kinds=["riddles"])
    with pytest.raises(ValueError, match="at least 1"):
        yesno.yes_no_questions(model, pairs_per_kind=0, seed=0)


def test_multi_token_answers_are_refused():
    fake = SimpleNamespace(tokenizer=SimpleNamespace(encode=lambda text, add_special_tokens=False: [1, 2]))
    with pytest.raises(ValueError, match="' Yes' is 2 tokens"):
        yesno.answer_token_ids(fake)


def test_eps_must_be_positive():
    with pytest.raises(ValueError, match="eps must be positive"):
        yesno.negative_attention_score(patterns_with({}), *positions(), eps=0.0)


def test_a_template_without_both_slots_is_refused(smollm2_tokenizer_only):
    with pytest.raises(ValueError, match=r"\{order\} and \{question\}"):
        yesno.yes_no_questions(smollm2_tokenizer_only, pairs_per_kind=2, seed=0, template="Is {question}?")


def test_question_first_prompts_count_nas_from_after_the_candidates(smollm2_tokenizer_only):
    task = yesno.yes_no_questions(smollm2_tokenizer_only, pairs_per_kind=2, seed=0, template=yesno.QUESTION_FIRST)
    for batch in task.batches:
        keys = torch.maximum(batch.positions["yes_key"], batch.positions["no_key"])
        assert (batch.positions["question"] > keys).all() and (batch.positions["question"] <= batch.positions["end"]).all()
        assert batch.prompts[0].startswith("Is ") and batch.prompts[0].endswith("Yes or No.\nAnswer:")


def test_held_out_wording_counts_nas_from_the_question_and_shares_no_instruction_word(smollm2_tokenizer_only):
    model = smollm2_tokenizer_only
    for order in yesno.ORDERS:
        task = yesno.yes_no_questions(model, pairs_per_kind=3, seed=50, order=order, template=yesno.HELD_OUT_TEMPLATE)
        for batch in task.batches:
            first_word = model.tokenizer.decode(batch.tokens[0, batch.positions["question"][0]])
            assert first_word.strip() == "Question", first_word
            assert batch.prompts[0].startswith(f"Reply {order}. Question: is ") and batch.prompts[0].endswith("? Reply:")
    assert "Answer" not in yesno.HELD_OUT_TEMPLATE and "Is " not in yesno.HELD_OUT_TEMPLATE
