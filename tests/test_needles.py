import pytest
import torch

from helpers import needles


def one_run(keys, n_keys=10):
    """rows [layer=1, batch=1, head=1, step, key] with each step's top-1 on `keys`."""
    rows = torch.full((len(keys), n_keys), 0.01)
    rows[torch.arange(len(keys)), torch.tensor(keys)] = 0.9
    return rows[None, None, None]


TOKENS = torch.tensor([[5, 6, 7, 11, 12, 13, 14, 8, 9, 10]])
NEEDLE = torch.zeros(1, 10, dtype=torch.bool)
NEEDLE[0, 3:7] = True
SAID = torch.tensor([[11, 12, 13, 14]])


def test_a_head_that_points_at_each_token_as_it_is_said_scores_one():
    assert needles.retrieval_hits(one_run([3, 4, 5, 6]), TOKENS, NEEDLE, SAID).item() == pytest.approx(1.0)


def test_a_head_one_key_late_scores_zero_and_its_control_scores_one():
    late = one_run([2, 3, 4, 5])
    assert needles.retrieval_hits(late, TOKENS, NEEDLE, SAID).item() == 0.0
    query_tokens = torch.tensor([[10, 11, 12, 13]])  # what each step reads: the question's end, then the code
    shifted, own = needles.shifted_control(NEEDLE, query_tokens)
    assert shifted[0].nonzero().flatten().tolist() == [2, 3, 4, 5]
    # key 2 holds 7, not the query token 10, so the first step misses: 3 of 4
    assert needles.retrieval_hits(late, TOKENS, shifted, own).item() == pytest.approx(0.75)


def test_each_hit_adds_one_over_the_needle_length_and_wrong_tokens_add_nothing():
    assert needles.retrieval_hits(one_run([3, 0, 5, 9]), TOKENS, NEEDLE, SAID).item() == pytest.approx(0.5)
    assert needles.retrieval_hits(one_run([6, 6, 6, 6]), TOKENS, NEEDLE, SAID).item() == pytest.approx(0.25)


def test_the_score_averages_only_recalled_runs():
    hits = torch.tensor([[[1.0], [0.0], [0.5]]])  # [layer, batch, head]
    scores = needles.retrieval_scores(hits, torch.tensor([True, False, True]))
    assert scores.item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="no run recalled"):
        needles.retrieval_scores(hits, torch.tensor([False, False, False]))


def test_hits_match_a_naive_loop_over_heads():
    generator = torch.Generator().manual_seed(0)
    rows = torch.rand(2, 3, 4, 4, 10, generator=generator)
    tokens = torch.randint(0, 5, (3, 10), generator=generator)
    needle = torch.zeros(3, 10, dtype=torch.bool)
    needle[:, 2:6] = True
    said = torch.randint(0, 5, (3, 4), generator=generator)
    got = needles.retrieval_hits(rows, tokens, needle, said)
    for layer in range(2):
        for b in range(3):
            for head in range(4):
                top = rows[layer, b, head].argmax(-1)
                want = sum(bool(needle[b, k]) and int(tokens[b, k]) == int(said[b, s]) for s, k in enumerate(top)) / 4
                assert got[layer, b, head].item() == pytest.approx(want)


def test_mismatched_shapes_name_them():
    with pytest.raises(ValueError, match=r"\[1, 10\]"):
        needles.retrieval_hits(one_run([3, 4, 5, 6]), TOKENS[:, :9], NEEDLE, SAID)


def test_recall_counts_exact_matches_and_positions():
    exact, accuracy = needles.recall(torch.tensor([[1, 2, 3], [1, 9, 3]]), torch.tensor([[1, 2, 3], [1, 2, 3]]))
    assert exact.tolist() == [True, False]
    assert accuracy.tolist() == pytest.approx([1.0, 2 / 3])


def test_needle_prompts_hold_the_code_at_the_needle_and_end_with_the_question(tiny_smol):
    for family in needles.FAMILIES:
        batch = needles.needle_prompts(tiny_smol, batch=3, length=40, seed=0, family=family)
        for row, start, code in zip(batch.tokens, batch.needle_start, batch.answers):
            assert row[start:start + batch.n_answer].tolist() == code.tolist()
        question = tiny_smol.tokenizer.decode(batch.tokens[0, -8:])
        assert question.rstrip().endswith("is")
        assert batch.needle_mask().sum(1).tolist() == [batch.n_answer] * 3
        again = needles.needle_prompts(tiny_smol, batch=3, length=40, seed=0, family=family)
        assert torch.equal(again.tokens, batch.tokens), "prompts are seeded"


def test_swapped_codes_put_another_prompts_code_in_the_needle(tiny_smol):
    batch = needles.needle_prompts(tiny_smol, batch=3, length=40, seed=1)
    swapped = needles.swapped_codes(batch)
    start = int(batch.needle_start[0])
    assert swapped[0, start:start + batch.n_answer].tolist() == batch.answers[2].tolist()
    outside = torch.ones_like(swapped, dtype=torch.bool) & ~batch.needle_mask()
    assert torch.equal(swapped[outside], batch.tokens[outside])


def test_bad_requests_say_what_to_do(tiny_smol):
    with pytest.raises(ValueError, match="unknown family"):
        needles.needle_prompts(tiny_smol, batch=2, length=40, seed=0, family="poems")
    with pytest.raises(ValueError, match="length >= 32"):
        needles.needle_prompts(tiny_smol, batch=2, length=10, seed=0)
