"""Mover heads: the pure metrics against hand-computed values, the fact filters against a stub tokenizer,
the pass rule on synthetic screens, and the prompts (not the results) on the real default model."""

from __future__ import annotations

import pytest
import torch

from helpers import controls, stats
from helpers.experiments import mover


class _StubTokenizer:
    """Each word's token count is given; every token id is a running number."""

    def __init__(self, lengths: dict[str, int]):
        self.lengths = lengths

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        word = text.strip()
        return [hash(word) % 1000 + i for i in range(self.lengths.get(word, 1))]


class _StubModel:
    def __init__(self, lengths: dict[str, int]):
        self.tokenizer = _StubTokenizer(lengths)


def test_answer_lead_is_answer_minus_mean_of_the_others():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 4.0, -2.0]])
    lead = mover.answer_lead(logits, torch.tensor([0, 2]))
    assert torch.allclose(lead, torch.tensor([3.0 - 1.5, -2.0 - 2.0]))


def test_answer_lead_rejects_bad_shapes():
    with pytest.raises(ValueError, match="one answer column per row"):
        mover.answer_lead(torch.zeros(2, 3), torch.tensor([0]))
    with pytest.raises(ValueError, match="two candidates"):
        mover.answer_lead(torch.zeros(2, 1), torch.tensor([0, 0]))


def test_subject_attention_sums_the_span_and_puts_batch_last():
    attention = torch.zeros(2, 3, 4, 6)  # [layer, batch, head, key]
    attention[1, 2, 3, 2] = 0.25
    attention[1, 2, 3, 3] = 0.5
    attention[1, 2, 3, 4] = 0.25  # outside the span [2, 4)
    out = mover.subject_attention(attention, (2, 4))
    assert out.shape == (2, 4, 3)
    assert out[1, 3, 2].item() == pytest.approx(0.75)
    assert out.sum().item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="outside"):
        mover.subject_attention(attention, (5, 8))


def test_mover_score_needs_reading_and_writing_on_the_same_prompts():
    attention = torch.tensor([[[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]])  # [layer=1, head=3, batch=2]
    dla = torch.tensor([[[2.0, 4.0], [5.0, 5.0], [0.0, 3.0]]])
    score = mover.mover_score(attention, dla)
    # head 0 reads and writes (3), head 1 writes without reading (0), head 2 reads where it does not write (0)
    assert torch.allclose(score, torch.tensor([[3.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="one shape"):
        mover.mover_score(attention, dla[..., :1])


def test_relation_facts_keeps_single_token_answers_common_length_subjects_and_one_subject_per_answer():
    table = (("Aland", "Alish"), ("Bland", "Blish"), ("Cland", "Alish"), ("Dland", "Long"), ("Eland", "Elish"),
             ("Far Land", "Fish"))
    model = _StubModel({"Long": 2, "Far Land": 2})
    relation = mover.Relation("test", "The language of {subject} is", table)
    facts = mover.relation_facts(model, relation, min_facts=3)
    assert facts == [("Aland", "Alish"), ("Bland", "Blish"), ("Eland", "Elish")]
    with pytest.raises(ValueError, match="only 3 of 6"):
        mover.relation_facts(model, relation, min_facts=4)


def test_word_ids_names_the_words_that_are_not_single_tokens():
    model = _StubModel({"New Delhi": 2})
    with pytest.raises(ValueError, match="New Delhi"):
        mover.word_ids(model, ["Paris", "New Delhi"])


def test_nonce_words_excludes_real_subjects_and_other_lengths():
    model = _StubModel({"Kor": 2})
    words = mover.nonce_words(model, 1, exclude=["Vel"])
    assert "Vel" not in words and "Kor" not in words and "Nort" in words
    with pytest.raises(ValueError, match="3 tokens"):
        mover.nonce_words(model, 3)


def _screen(score_top: float, nonce_dla_top: float) -> mover.MoverScreen:
    """Two layers x two heads, 40 prompts; head (1, 0) has the given score and nonce DLA, the rest ~0."""
    generator = torch.Generator().manual_seed(0)
    noise = lambda: 0.01 * torch.randn(2, 2, 40, generator=generator)  # noqa: E731
    attention, dla, nonce_attention, nonce_dla = noise().abs(), noise(), noise().abs(), noise()
    attention[1, 0], dla[1, 0] = 1.0, score_top
    nonce_attention[1, 0], nonce_dla[1, 0] = 1.0, nonce_dla_top
    return mover.MoverScreen(score=mover.mover_score(attention, dla),
                             nonce_score=mover.mover_score(nonce_attention, nonce_dla), attention=attention,
                             nonce_attention=nonce_attention, dla=dla, nonce_dla=nonce_dla)


def _check(drop: float, random_drop: float) -> controls.CausalCheck:
    """The answer's lead falls by `drop` when the heads are ablated, by about `random_drop` for 20 draws."""
    draws = -(torch.full((20,), random_drop) + 0.01 * torch.arange(20))
    return controls.CausalCheck(metric_name="lead", heads=((1, 0),), mode="mean-ablated", null="20 draws",
                                clean=stats.bootstrap_ci(torch.ones(10)),
                                top=stats.bootstrap_ci(-(torch.full((10,), drop) + 0.1 * torch.arange(10))),
                                draws=draws, larger_is_stronger=False)


def test_role_present_needs_a_subject_dependent_head_and_a_causal_effect():
    assert mover.role_present(_screen(2.0, 0.0), _check(5.0, 0.0), [(1, 0)])
    assert not mover.role_present(_screen(2.0, 2.0), _check(5.0, 0.0), [(1, 0)])  # same DLA without the subject
    assert not mover.role_present(_screen(2.0, 0.0), _check(0.1, 0.5), [(1, 0)])  # no more than random heads


def test_screen_passing_and_nonce_drop():
    screen = _screen(2.0, 0.0)
    assert screen.passing()[0] == (1, 0)
    assert screen.nonce_drop((1, 0)).lower > 1.9
    assert screen.movers(1) == [(1, 0)]


def test_causal_check_rejects_repeated_heads():
    with pytest.raises(ValueError, match="distinct"):
        mover.causal_check(None, [], [], [(1, 0), (1, 0)])


def test_prompts_on_the_default_model(smollm2):
    batches = mover.relation_batches(smollm2, seed=3)
    assert [b.relation for b in batches] == [r.name for r in mover.RELATIONS]
    for batch in batches:
        start, stop = batch.subject
        assert len(batch) >= 10
        assert (batch.answers != batch.wrong).all()  # the derangement never pairs a fact with itself
        assert torch.equal(batch.candidates[batch.answer_column], batch.answers)
        assert torch.equal(batch.tokens[:, :start], batch.nonce[:, :start])  # twins differ only in the subject
        assert torch.equal(batch.tokens[:, stop:], batch.nonce[:, stop:])
        assert (batch.tokens[:, start:stop] != batch.nonce[:, start:stop]).any(dim=1).all()
        subject = smollm2.tokenizer.encode(" " + batch.facts[0][0], add_special_tokens=False)
        assert batch.tokens[0, start:stop].tolist() == subject
        assert batch.text(0).endswith(" is") and batch.nonce_subjects[0] in batch.text(0, nonce=True)
    again = mover.relation_batches(smollm2, seed=3)
    assert all(torch.equal(a.nonce, b.nonce) for a, b in zip(batches, again))  # seeded


def test_held_out_wordings_keep_the_relations_and_move_the_capital_subject_away_from_the_end(smollm2):
    assert [r.name for r in mover.HELD_OUT_RELATIONS] == [r.name for r in mover.RELATIONS]
    held = mover.relation_batches(smollm2, seed=3, relations=mover.HELD_OUT_RELATIONS)
    for main, relation, batch in zip(mover.RELATIONS, mover.HELD_OUT_RELATIONS, held):
        assert relation.table == main.table and relation.template != main.template
        if relation.name == "capital city":  # five tokens follow the subject instead of one
            assert batch.tokens.shape[1] - batch.subject[1] == 5
        assert batch.text(0) == relation.template.format(subject=batch.facts[0][0])
