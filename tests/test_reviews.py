"""Tests for helpers.reviews: frames, named positions, flipped twins and answer words on the real tokenizer
(the tiny model has SmolLM2's tokenizer behind random weights)."""

import pytest
import torch

from helpers import reviews


def test_template_rejects_missing_slots_and_marks():
    with pytest.raises(ValueError, match="needs"):
        reviews.Template("bad", "No slots here", {"adj": "No", "verb": "No", "end": "No slots here"}, ())
    with pytest.raises(ValueError, match="not a prefix"):
        reviews.Template("bad", "A {adj} {verb}.", {"adj": "A {adj}", "verb": "B", "end": "A {adj} {verb}."}, ())
    with pytest.raises(ValueError, match="no mark"):
        reviews.Template("bad", "A {adj} {verb}.", {"adj": "A {adj}", "verb": "A {adj} {verb}",
                                                    "end": "A {adj} {verb}."}, ("comma",))


def test_movie_review_marks_end_with_their_pieces():
    marks = reviews.MOVIE_REVIEW.marks
    assert marks["comma"].endswith("{adj},") and marks["end"] == reviews.MOVIE_REVIEW_TEXT
    assert reviews.MOVIE_REVIEW.summary == ("comma", "period", "conclusion", "colon")


def test_halves_split_adjectives_disjointly_and_keep_verbs():
    words = reviews.Lexicon(*(tuple(f"{kind}{i}" for i in range(6)) for kind in "abcdef"))
    first, second = words.halves(seed=0)
    assert not set(first.positive_adjectives) & set(second.positive_adjectives)
    assert sorted(first.positive_adjectives + second.positive_adjectives) == sorted(words.positive_adjectives)
    assert first.positive_verbs == second.positive_verbs == words.positive_verbs


def test_review_pairs_positions_twins_and_signs(tiny_smol):
    data = reviews.review_pairs(tiny_smol, n=3, seed=0)
    assert data.tokens.shape[0] == 6 and data.sentiment.tolist() == [1, 1, 1, -1, -1, -1]
    torch.testing.assert_close(data.flipped, torch.cat([data.tokens[3:], data.tokens[:3]]))
    tokens = tiny_smol.to_str_tokens(data.tokens[0])
    assert tokens[data.positions["adj"]].strip() == data.adjectives[0]
    assert tokens[data.positions["verb"]].strip() == data.verbs[0]
    assert tokens[data.positions["comma"]] == "," and data.positions["end"] == data.tokens.shape[1] - 1
    assert data.summary_positions == sorted(data.summary_positions)


def test_neutral_reviews_have_no_twin_and_zero_sentiment(tiny_smol):
    calm = reviews.neutral_reviews(tiny_smol, n=2, seed=1)
    assert calm.flipped is None and calm.sentiment.tolist() == [0, 0]
    assert set(calm.adjectives) <= set(reviews.NEUTRAL_ADJECTIVES)


def test_held_out_frame_keeps_its_positions(tiny_smol):
    data = reviews.review_pairs(tiny_smol, n=2, seed=0, template=reviews.FILM_VERDICT)
    tokens = tiny_smol.to_str_tokens(data.tokens[0])
    assert tokens[data.positions["overall"]].strip() == "Overall"


def test_answer_ids_are_single_tokens_in_pairs(tiny_smol):
    good, bad = reviews.answer_ids(tiny_smol)
    assert len(good) == len(bad) >= 2
    assert tiny_smol.to_string(good[:1]).strip() == "great"
    with pytest.raises(ValueError, match="single tokens"):
        reviews.answer_ids(tiny_smol, [(" great", " xqzjwv")])
