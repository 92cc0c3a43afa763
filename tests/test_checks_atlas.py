"""Tests for helpers.checks.atlas: each checker accepts a correct answer written out by hand and rejects the
slips a learner makes, naming the case."""

import itertools

import pytest

from helpers import checks


def shared_by_hand(claimed, excluded):
    total = 0
    for a, b in itertools.combinations(claimed, 2):
        if {a, b} not in [set(pair) for pair in excluded]:
            total += len(set(claimed[a]) & set(claimed[b]))
    return total


def test_shared_memberships_checker_accepts_a_loop_over_pairs():
    assert checks.atlas.check_shared_memberships(shared_by_hand) == "All 4 overlap counts match the reference."


def test_shared_memberships_checker_catches_counting_heads_instead_of_memberships():
    def heads_in_two_or_more(claimed, excluded):  # counts a head in three families once, not three times
        counts = {}
        for members in claimed.values():
            for head in set(members):
                counts[head] = counts.get(head, 0) + 1
        return sum(count >= 2 for count in counts.values())

    with pytest.raises(AssertionError, match="on one head in three families .* you count 1; expected 3"):
        checks.atlas.check_shared_memberships(heads_in_two_or_more)


def test_shared_memberships_checker_catches_ignoring_the_excluded_pairs():
    with pytest.raises(AssertionError, match="with the pair \\(a, b\\) excluded"):
        checks.atlas.check_shared_memberships(lambda claimed, excluded: shared_by_hand(claimed, []))


def redraw_by_hand(claimed, n_heads, rng):
    drawn = []
    for layer in sorted({layer for layer, _ in claimed}):
        count = sum(1 for l, _ in claimed if l == layer)
        drawn += [(layer, int(h)) for h in rng.choice(n_heads, size=count, replace=False)]
    return drawn


def test_redraw_checker_accepts_a_layer_by_layer_draw():
    assert checks.atlas.check_redraw_within_layers(redraw_by_hand).startswith("200 draws")


@pytest.mark.parametrize(("slip", "message"), [
    (lambda claimed, n, rng: [(int(rng.integers(10)), int(rng.integers(n))) for _ in claimed], "keeps the claimed"),
    (lambda claimed, n, rng: [(layer, int(rng.integers(n))) for layer, _ in claimed] + [(3, 0)], "you drew 5 heads"),
    (lambda claimed, n, rng: list(claimed), "never came up"),
])
def test_redraw_checker_rejects_draws_that_lose_the_layers_the_size_or_the_randomness(slip, message):
    with pytest.raises(AssertionError, match=message):
        checks.atlas.check_redraw_within_layers(slip)


def test_redraw_checker_catches_drawing_with_replacement():
    def with_replacement(claimed, n_heads, rng):
        return [(layer, 0) for layer, _ in claimed]  # both layer-3 heads become L3H0

    with pytest.raises(AssertionError, match="twice"):
        checks.atlas.check_redraw_within_layers(with_replacement)


def test_a_stub_reads_as_not_attempted():
    def stub(claimed, excluded):
        raise NotImplementedError
    assert checks.verdict(checks.atlas.check_shared_memberships, stub).startswith(checks.NOT_ATTEMPTED)
