"""Vulnerable-heads helpers on hand-built inputs whose answers are known, and the patching repair on the tiny
model, where restoring every head at END must restore the clean prompt's logit difference exactly."""

import pytest
import torch

from helpers import heads
from helpers.experiments import acronyms, vulnerable
from helpers.experiments.vulnerable import (
    Flips,
    concentration,
    flipped,
    letter_columns,
    letter_permutation_p,
    letter_spread,
    rates_by,
    shares,
    substitute,
)

# tokens 10-12 start with one letter, 20-21 with another, 30 is alone with its initial
SAME = {10: [10, 11, 12], 11: [10, 11, 12], 12: [10, 11, 12], 20: [20, 21], 21: [20, 21], 30: [30]}


def test_a_substitution_keeps_the_initial_changes_one_word_and_is_seeded():
    tokens = torch.tensor([[1, 10, 20, 30, 5], [1, 11, 21, 10, 5]])
    edits = substitute(tokens, [1, 2, 3], SAME, [0, 1], per_position=2, seed=0)
    for row, prompt, word in zip(edits.tokens, edits.prompt, edits.word):
        changed = (row != tokens[prompt]).nonzero()[:, 0].tolist()
        position = [1, 2, 3][word]
        assert changed == [position]  # exactly the edited word, nothing else
        old, new = int(tokens[prompt, position]), int(row[position])
        assert new != old and new in SAME[old]  # another noun with the same initial
    # per word: two of the two other "1x" nouns, one of "2x", none for the lone "30"
    assert edits.word[edits.prompt == 0].tolist() == [0, 0, 1]
    assert edits.word[edits.prompt == 1].tolist() == [0, 0, 1, 2, 2]
    again = substitute(tokens, [1, 2, 3], SAME, [0, 1], per_position=2, seed=0)
    assert torch.equal(edits.tokens, again.tokens)


def test_substitute_refuses_a_word_outside_the_noun_list():
    with pytest.raises(ValueError, match="not in same_initial"):
        substitute(torch.tensor([[1, 99, 20]]), [1, 2], SAME, [0], per_position=1, seed=0)
    with pytest.raises(ValueError, match="per_position"):
        substitute(torch.tensor([[1, 10, 20]]), [1, 2], SAME, [0], per_position=0, seed=0)


def test_a_flip_is_a_top_letter_other_than_the_answer():
    logits = torch.zeros(3, 26)
    logits[0, 4], logits[1, 7], logits[2, 0] = 2.0, 1.0, 3.0
    assert flipped(logits, torch.tensor([4, 2, 0])).tolist() == [False, True, False]
    with pytest.raises(ValueError, match="answer"):
        flipped(logits, torch.tensor([1, 2]))


def test_rates_by_group_count_flips_over_edits():
    rate, count = rates_by(torch.tensor([True, False, True, True]), torch.tensor([0, 0, 2, 2]), 3)
    assert count.tolist() == [2, 0, 2]
    assert rate[0] == 0.5 and torch.isnan(rate[1]) and rate[2] == 1.0


def test_letter_columns_find_each_id_among_the_letters():
    letters = torch.arange(100, 126)
    assert letter_columns(letters, torch.tensor([100, 125, 103])).tolist() == [0, 25, 3]
    with pytest.raises(ValueError, match="letter ids"):
        letter_columns(letters, torch.tensor([5]))


def test_letter_spread_is_zero_when_every_letter_flips_alike_and_the_test_finds_a_planted_letter():
    edits = torch.full((40,), 4)
    letter = torch.arange(40) % 4
    even = letter_spread((edits // 2).double().numpy(), edits.double().numpy(), letter.numpy())
    assert even == 0.0
    planted = torch.where(letter == 0, 4, 0)  # letter 0 flips on every edit, the others never
    stat, p = letter_permutation_p(planted, edits, letter, n_perm=200, seed=0)
    assert stat > 0 and p == pytest.approx(1 / 201)
    _, p_even = letter_permutation_p(edits // 2, edits, letter, n_perm=200, seed=0)
    assert p_even == 1.0  # every shuffle is as even as the data


def test_shares_divide_by_the_summed_absolute_drop():
    drop = torch.zeros(2, 3)
    drop[1, 2], drop[0, 0] = 3.0, -1.0
    assert shares(drop, [[(1, 2)], [(0, 0), (1, 2)], [(0, 1)]]).tolist() == [0.75, 0.5, 0.0]
    with pytest.raises(ValueError, match="sum to zero"):
        shares(torch.zeros(2, 3), [[(0, 0)]])


def test_concentration_finds_a_planted_head_on_the_unseen_half():
    generator = torch.Generator().manual_seed(0)
    drop = torch.randn(3, 4, 20, generator=generator) * 0.01
    drop[2, 1] += 1.0  # one head carries every flip
    flips = Flips(clean=torch.zeros(20, 5, dtype=torch.long), edited=torch.zeros(20, 5, dtype=torch.long),
                  answers=torch.zeros(20, dtype=torch.long), takeover=torch.ones(20, dtype=torch.long),
                  prompt=torch.arange(20), drop=drop, letters=torch.arange(26))
    found = concentration(flips, k=1, n_random=30, seed=0)
    assert found.found == ((2, 1),) and found.share > 0.8
    # a draw either holds the planted head (and ties it) or carries next to nothing
    hits = torch.isclose(found.draws, torch.tensor(found.share))
    assert (found.draws[~hits] < 0.05).all() and found.as_strong == int(hits.sum())
    assert flips.top(1) == [(2, 1)]
    one_parity = Flips(**{**flips.__dict__, "prompt": torch.zeros(20, dtype=torch.long)})
    with pytest.raises(ValueError, match="one parity"):
        concentration(one_parity, k=1, n_random=3, seed=0)


def test_restoring_every_head_at_end_restores_the_clean_logit_difference(tiny_smol):
    data = acronyms.acronyms(tiny_smol, n=4, seed=0)
    groups = acronyms.nouns_by_initial(tiny_smol)
    same = {t: [u for _, u in g] for g in groups.values() for _, t in g}
    where = [int(data.clean.positions[w][0]) for w in vulnerable.WORDS]
    edits = substitute(data.clean.tokens, where, same, [0, 1, 2, 3], per_position=1, seed=0)
    n = len(edits)
    prompt = edits.prompt
    flips = Flips(clean=data.clean.tokens[prompt], edited=edits.tokens, answers=data.clean.answers[prompt],
                  takeover=data.clean.wrong[prompt], prompt=prompt, drop=torch.zeros(2, 9, n), letters=data.letters)
    every = heads.every(tiny_smol.cfg.n_layers, tiny_smol.cfg.n_heads)
    fixed = vulnerable.repair(tiny_smol, flips, every, n=n, n_random=2, seed=0)
    # END's own token is unchanged; with every head's END output clean, every later step at END is clean too
    assert fixed.check.top.mean == pytest.approx(fixed.gap, abs=1e-3)


def test_an_edit_that_changes_nothing_drops_nothing(tiny_smol):
    data = acronyms.acronyms(tiny_smol, n=3, seed=1)
    search = vulnerable.Search(
        edits=vulnerable.Substitutions(tokens=data.clean.tokens.clone(), prompt=torch.arange(3),
                                       word=torch.zeros(3, dtype=torch.long)),
        answer=letter_columns(data.letters, data.clean.answers), flips=torch.ones(3, dtype=torch.bool),
        takeover=data.clean.wrong, right_prompts=3, spread=0.0, letter_p=1.0, n_perm=1)
    flips = vulnerable.drop(tiny_smol, data, search)
    assert flips.drop.shape == (tiny_smol.cfg.n_layers, tiny_smol.cfg.n_heads, 3)
    assert flips.drop.abs().max() < 1e-5


def test_the_steady_control_reads_the_edits_that_keep_the_answer_against_their_rival(tiny_smol):
    data = acronyms.acronyms(tiny_smol, n=3, seed=2)
    rival = data.clean.wrong.clone()
    search = vulnerable.Search(
        edits=vulnerable.Substitutions(tokens=data.clean.tokens.clone(), prompt=torch.arange(3),
                                       word=torch.zeros(3, dtype=torch.long)),
        answer=letter_columns(data.letters, data.clean.answers), flips=torch.tensor([True, False, False]),
        takeover=data.clean.answers, right_prompts=3, spread=0.0, letter_p=1.0, n_perm=1, rival=rival)
    steady = vulnerable.drop(tiny_smol, data, search, steady=1)
    assert steady.prompt.tolist() == [1] and steady.takeover.tolist() == [int(rival[1])]
    flips = vulnerable.drop(tiny_smol, data, search)
    assert flips.prompt.tolist() == [0]
    with pytest.raises(ValueError, match="no rival"):
        vulnerable.drop(tiny_smol, data, vulnerable.Search(**{**search.__dict__, "rival": None}), steady=1)
