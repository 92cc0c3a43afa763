"""Acronym prompts on a fake tokenizer whose vocabulary we control, and the gate's pure metrics."""

import string
from types import SimpleNamespace

import pytest
import torch

from helpers.experiments import acronyms


class FakeTokenizer:
    """One id per known piece; anything unknown becomes two ids (a "multi-token" word)."""

    def __init__(self, pieces):
        self.vocab = {piece: i for i, piece in enumerate(["<bos>", "<unk>", *pieces])}
        self.bos_token_id = 0

    def encode(self, text, add_special_tokens=False):
        return [self.vocab[text]] if text in self.vocab else [1, 1]


def fake_model(nouns, *, bos=False):
    pieces = ["The", " (", *string.ascii_uppercase, *(" " + noun for noun in nouns)]
    return SimpleNamespace(tokenizer=FakeTokenizer(pieces), cfg=SimpleNamespace(default_prepend_bos=bos))


NOUNS = ["Apple", "Bear", "Cat", "Dog", "Egg", "Fish", "Gate", "Hat", "Ice", "Jar"]


def test_multi_token_nouns_are_dropped_and_grouped_by_initial():
    model = fake_model(NOUNS[:5])  # the other five are "multi-token"
    groups = acronyms.nouns_by_initial(model, NOUNS)
    assert sorted(groups) == list("ABCDE")
    assert groups["C"] == [("Cat", model.tokenizer.vocab[" Cat"])]


@pytest.mark.parametrize("bos", [False, True])
def test_prompts_and_corruptions_follow_the_format(bos):
    model = fake_model(NOUNS, bos=bos)
    vocab = model.tokenizer.vocab
    letter = {vocab[x]: x for x in string.ascii_uppercase}
    word = {vocab[" " + n]: n for n in NOUNS}
    data = acronyms.acronyms(model, n=40, seed=3, nouns=NOUNS)
    clean = data.clean
    assert clean.tokens.shape == (40, 7 + bos)
    pos = {name: where[0].item() for name, where in clean.positions.items()}
    for i in range(40):
        row = clean.tokens[i].tolist()
        c1, c2, c3 = (word[row[pos[p]]] for p in ("c1", "c2", "c3"))
        assert row[pos["paren"]] == vocab[" ("]
        assert letter[row[pos["a1"]]] == c1[0] and letter[row[pos["end"]]] == c2[0]
        assert letter[clean.answers[i].item()] == c3[0]
        wrong = letter[clean.wrong[i].item()]
        assert len({c1[0], c2[0], c3[0], wrong}) == 4
        current = data.corrupted["current word"][i].tolist()
        assert word[current[pos["c3"]]][0] == wrong  # the twin's answer is the wrong letter
        assert current[:pos["c3"]] == row[:pos["c3"]] and current[pos["c3"] + 1:] == row[pos["c3"] + 1:]
        previous = data.corrupted["previous words"][i].tolist()
        new = {word[previous[pos["c1"]]][0], word[previous[pos["c2"]]][0]}
        assert not new & {c1[0], c2[0], c3[0], wrong} and previous[pos["c3"]:] == row[pos["c3"]:]
        letters = data.corrupted["previous letters"][i].tolist()
        assert letters[:pos["a1"]] == row[:pos["a1"]]
        assert not {letter[letters[pos["a1"]]], letter[letters[pos["end"]]]} & {c1[0], c2[0], c3[0], wrong}
    again = acronyms.acronyms(model, n=40, seed=3, nouns=NOUNS)
    assert torch.equal(again.clean.tokens, clean.tokens)
    assert not torch.equal(acronyms.acronyms(model, n=40, seed=4, nouns=NOUNS).clean.tokens, clean.tokens)
    assert set(zip(data.nouns.tolist(), data.initials.tolist())) == {(vocab[" " + n], vocab[n[0]]) for n in NOUNS}


def test_too_few_initials_and_bad_sizes_raise():
    with pytest.raises(ValueError, match="initials"):
        acronyms.acronyms(fake_model(NOUNS[:5]), n=5, seed=0, nouns=NOUNS[:5])
    with pytest.raises(ValueError, match="positive"):
        acronyms.acronyms(fake_model(NOUNS), n=0, seed=0, nouns=NOUNS)
    with pytest.raises(ValueError, match="capital"):
        acronyms.nouns_by_initial(fake_model(NOUNS), ["apple"])


def test_letter_metrics_on_hand_built_logits():
    letters = torch.arange(10, 36)
    logits = torch.zeros(3, 40)
    logits[0, 12] = 5.0  # top letter is id 12
    logits[1, 3] = 9.0  # a non-letter wins overall, but letter 20 is top among letters
    logits[1, 20] = 1.0
    logits[2, 30] = 2.0
    answers = torch.tensor([12, 20, 11])
    assert acronyms.letter_correct(logits, letters, answers).tolist() == [True, True, False]
    wrong = torch.tensor([13, 13, 30])
    assert acronyms.end_logit_difference(logits, answers, wrong).tolist() == [5.0, 1.0, -2.0]
    with pytest.raises(ValueError, match="letter ids"):
        acronyms.letter_correct(logits, letters, torch.tensor([12, 20, 3]))


def test_gate_passes_only_when_the_current_word_matters():
    model = fake_model(NOUNS)
    data = acronyms.acronyms(model, n=50, seed=0, nouns=NOUNS)
    vocab = len(model.tokenizer.vocab)
    rows = torch.arange(50)
    clean = torch.randn(50, vocab, generator=torch.Generator().manual_seed(0))
    reading = clean.clone()
    reading[rows, data.clean.answers] += 10.0  # the model reads C3: the answer wins on the clean prompt
    twin = clean.clone()
    twin[rows, data.clean.wrong] += 10.0  # and the wrong letter wins on the current-word twin
    assert acronyms.acronym_gate(reading, twin, data).gate.passed
    assert acronyms.acronym_gate(reading, twin, data).accuracy.mean == 1.0
    assert not acronyms.acronym_gate(clean, clean, data).gate.passed  # ignoring C3: no difference


def test_mapping_at_layer_inputs_reads_each_layer_its_own_residual():
    from helpers import ov

    # Two layers, one head each, identity OV everywhere: a head writes the direction it reads. Layer 0 is fed
    # the partners' own directions, layer 1 their successors', so only layer 0 maps sources to partners.
    d, eye = 6, torch.eye(6)
    weights = ov.OVWeights(embed=eye, ln_gain=torch.ones(2, d), w_v=eye.expand(2, 1, d, d).clone(),
                           w_o=eye.expand(2, 1, d, d).clone(), post_gain=None, final_gain=torch.ones(d),
                           unembed=eye)
    partners, candidates = torch.tensor([0, 2, 4, 2]), torch.arange(6)
    inputs = [eye[partners] * 2.0, eye[(partners + 1) % 6]]
    scores = acronyms.mapping_at_layer_inputs(weights, inputs, partners, candidates)
    assert scores.shape == (2, 1) and scores[0, 0].item() == 1.0 and scores[1, 0].item() == 0.0
    with pytest.raises(ValueError, match="one residual per layer"):
        acronyms.mapping_at_layer_inputs(weights, inputs[:1], partners, candidates)


def test_another_lead_in_shifts_every_position_and_keeps_the_format():
    model = fake_model(NOUNS)
    main = acronyms.acronyms(model, n=20, seed=1, nouns=NOUNS)
    held = acronyms.acronyms(model, n=20, seed=1, nouns=NOUNS, lead="Welcome to the")  # two fake ids
    assert held.clean.tokens.shape == (20, main.clean.tokens.shape[1] + 1)
    assert all(text.startswith("Welcome to the ") for text in held.clean.prompts)
    for name in ("c1", "c2", "c3", "paren", "a1", "end"):
        assert torch.equal(held.clean.positions[name], main.clean.positions[name] + 1)
    # same seed, same draws: the prompts differ only by the lead-in
    assert torch.equal(held.clean.tokens[:, 2:], main.clean.tokens[:, 1:])
    with pytest.raises(ValueError, match="lead"):
        acronyms.acronyms(model, n=5, seed=0, nouns=NOUNS, lead=" The")


def test_held_out_nouns_share_no_noun_with_the_screen_nouns():
    assert not set(acronyms.HELD_OUT_NOUNS) & set(acronyms.NOUNS)
    assert len(set(acronyms.HELD_OUT_NOUNS)) == len(acronyms.HELD_OUT_NOUNS)
    assert len({noun[0] for noun in acronyms.HELD_OUT_NOUNS}) >= 20
