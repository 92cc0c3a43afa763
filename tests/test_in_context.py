"""In-context helpers on hand-built cases whose answers are known, and the prompt builder on the tiny model."""

import random

import pytest
import torch

from helpers.experiments import in_context
from helpers.experiments.in_context import FOO_BAR, attention_shares, balanced_labels, demo_texts, label_copying


def test_balanced_labels_give_each_label_to_half_of_each_sentiment():
    sentiments = [True, False, True, True, False, False, True, False]
    for seed in range(5):
        labels = balanced_labels(sentiments, random.Random(seed))
        for value in (True, False):
            mine = [label for label, s in zip(labels, sentiments) if s == value]
            assert sorted(mine) == [0, 0, 1, 1]


def test_balanced_labels_reject_an_odd_count():
    with pytest.raises(ValueError, match="even number"):
        balanced_labels([True, False, True], random.Random(0))


def test_demo_texts_write_one_labelled_line_per_demonstration_then_the_query():
    text = demo_texts(FOO_BAR, [("great", 0), ("awful", 1)], "nice")
    assert text == "The film was great. foo\nThe film was awful. bar\nThe film was nice."


def test_label_copying_is_one_for_a_pure_copier_and_zero_for_a_fixed_writer():
    assert float(label_copying(torch.eye(2))) == 2.0
    assert float(label_copying(torch.tensor([[1.0, 0.0], [1.0, 0.0]]))) == 0.0
    assert float(label_copying(1 - torch.eye(2))) == -2.0
    with pytest.raises(ValueError, match=r"\[source=2, target=2\]"):
        label_copying(torch.zeros(3, 3))


def test_attention_shares_split_the_labels_by_the_querys_sentiment():
    attention = torch.zeros(1, 1, 2, 6)  # [layer, batch, head, key]; labels at keys 1, 3; adjectives at 0, 2, 5
    attention[0, 0, 0, 1] = 1.0  # head 0: all on the label of demonstration 0
    attention[0, 0, 1, 5] = 1.0  # head 1: all on the query's adjective
    same = torch.tensor([[True, False]])
    shares = attention_shares(attention, same, [1, 3], [0, 2, 5])
    assert shares["right labels"][0].tolist() == [1.0, 0.0]
    assert shares["wrong labels"][0].tolist() == [0.0, 0.0]
    assert shares["adjectives"][0].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="same must be"):
        attention_shares(attention, torch.ones(1, 3, dtype=torch.bool), [1, 3], [0])


def test_prompts_have_one_length_both_mappings_and_a_shuffled_twin_without_a_mapping(tiny_smol):
    data = in_context.prompts(tiny_smol, n=8, shots=4, seed=0)
    assert data.tokens.shape == data.shuffled.shape
    assert data.mapping.tolist() == [1, -1] * 4
    assert data.query_positive.tolist() == [True, True, False, False] * 2
    foo, bar = (tiny_smol.tokenizer.encode(w, add_special_tokens=False)[0] for w in (" foo", " bar"))
    for b in range(8):
        labels = data.tokens[b, list(data.labels)]
        right_first = bool(data.query_positive[b]) == (int(data.mapping[b]) > 0)
        assert int(data.right[b]) == (foo if right_first else bar)
        # the mapped prompt: a demonstration with the query's sentiment carries the right label
        assert ((labels == data.right[b]) == data.same[b]).all()
        # the twin: the same lines, labels independent of the sentiment (half of each sentiment per label)
        twin = data.shuffled[b, list(data.labels)]
        assert int((twin[data.same[b]] == foo).sum()) == 1 and int((twin[~data.same[b]] == foo).sum()) == 1
        words = [tiny_smol.to_str_tokens(data.tokens[b])[p] for p in data.adjectives]
        assert words[-1].strip() in data.texts[b].splitlines()[-1]
    assert (data.tokens != data.shuffled).nonzero()[:, 1].unique().tolist() <= sorted(data.labels)


def test_prompts_reject_unbalanced_sizes(tiny_smol):
    with pytest.raises(ValueError, match="multiples of 4"):
        in_context.prompts(tiny_smol, n=6, shots=4, seed=0)
