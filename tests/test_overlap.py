"""The family-overlap permutation test on head sets whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import overlap


def test_shared_memberships_count_each_pair_and_skip_excluded_pairs():
    claimed = {"a": [(0, 0), (1, 1)], "b": [(1, 1), (2, 2)], "c": [(1, 1), (2, 2), (3, 3)]}
    assert overlap.shared_memberships(claimed) == 1 + 1 + 2  # a&b: L1H1; a&c: L1H1; b&c: L1H1, L2H2
    assert overlap.shared_memberships(claimed, excluded=[frozenset({"b", "c"})]) == 2
    assert overlap.counted_pairs(["a", "b", "c"], [frozenset({"a", "b"})]) == [("a", "c"), ("b", "c")]


def test_families_that_claim_the_same_heads_beat_chance():
    same = [(3, 1), (7, 4), (11, 0), (15, 6)]
    test = overlap.permutation_test({"a": same, "b": same}, 30, 9, n_draws=500, seed=0)
    assert test.observed == 4 and test.expected < 0.5
    assert test.p_value == pytest.approx(1 / 501)  # no draw of 4 heads from 270 shares all four


def test_disjoint_families_do_not():
    test = overlap.permutation_test({"a": [(0, 0), (1, 0)], "b": [(2, 0), (3, 0)]}, 4, 2, n_draws=500, seed=0)
    assert test.observed == 0 and test.p_value == 1.0


def test_the_within_layer_null_explains_sharing_that_depth_forces():
    """Both families fill the same full layer: any redraw within the layer shares as much, so p = 1;
    the all-heads null calls the same sharing significant. A null that ignores depth can mislead."""
    full_layer = [(5, 0), (5, 1), (5, 2)]
    claimed = {"a": full_layer, "b": full_layer}
    within = overlap.permutation_test(claimed, 10, 3, n_draws=300, within_layers=True, seed=0)
    anywhere = overlap.permutation_test(claimed, 10, 3, n_draws=300, within_layers=False, seed=0)
    assert within.p_value == 1.0 and np.all(within.null == 3)
    assert anywhere.p_value < 0.01


def test_pair_expectations_match_the_sizes():
    """Two families of 3 heads among 30: a redraw shares 3 * 3 / 30 = 0.3 heads on average."""
    test = overlap.permutation_test({"a": [(0, 0), (1, 0), (2, 0)], "b": [(3, 0), (4, 0), (5, 0)]}, 10, 3,
                                    n_draws=4000, seed=1)
    assert test.pair_expected[("a", "b")] == pytest.approx(0.3, abs=0.03)
    assert test.pair_observed[("a", "b")] == 0


def test_the_same_seed_gives_the_same_null():
    claimed = {"a": [(0, 0), (1, 2)], "b": [(1, 2), (3, 1)]}
    first = overlap.permutation_test(claimed, 5, 3, n_draws=200, seed=3)
    again = overlap.permutation_test(claimed, 5, 3, n_draws=200, seed=3)
    assert np.array_equal(first.null, again.null) and "p = " in first.summary()


@pytest.mark.parametrize(("claimed", "message"), [
    ({"a": [(0, 0)]}, "two families"),
    ({"a": [(0, 0)], "b": [(9, 0)]}, "outside this model"),
    ({"a": [(0, 0), (0, 0)], "b": [(1, 0)]}, "twice"),
])
def test_bad_input_says_what_is_wrong(claimed, message):
    with pytest.raises(ValueError, match=message):
        overlap.permutation_test(claimed, 4, 2, n_draws=10)


def test_excluding_the_only_pair_leaves_nothing_to_test():
    with pytest.raises(ValueError, match="two families"):
        overlap.permutation_test({"a": [(0, 0)], "b": [(1, 0)]}, 4, 2, excluded=[frozenset({"a", "b"})])
