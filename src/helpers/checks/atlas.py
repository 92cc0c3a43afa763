"""Checkers for the head atlas page: counting heads two families share, and the layer-matched redraw."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

import numpy as np

from helpers import overlap
from helpers.heads import Head

Claimed = Mapping[str, list[Head]]


def check_shared_memberships(reader_fn: Callable[[Claimed, Collection[frozenset[str]]], int]) -> str:
    """Check a count of shared memberships (sum over the pairs of families that may share of |A ∩ B|)."""
    cases: dict[str, tuple[Claimed, list[frozenset[str]]]] = {
        "two disjoint families": ({"a": [(0, 0)], "b": [(1, 1)]}, []),
        "one head in three families": ({"a": [(2, 1)], "b": [(2, 1)], "c": [(2, 1), (3, 0)]}, []),
        "the same, with the pair (a, b) excluded": ({"a": [(2, 1)], "b": [(2, 1)], "c": [(2, 1), (3, 0)]},
                                                    [frozenset({"a", "b"})]),
        "two heads shared by one pair": ({"a": [(0, 0), (1, 1), (4, 2)], "b": [(4, 2), (1, 1)], "c": [(5, 5)]}, []),
    }
    for label, (claimed, excluded) in cases.items():
        expected = overlap.shared_memberships(claimed, excluded)
        got = reader_fn({family: list(members) for family, members in claimed.items()}, list(excluded))
        assert got == expected, f"on {label} ({dict(claimed)}, excluded {[sorted(p) for p in excluded]}) you count " \
                                f"{got}; expected {expected}"
    return f"All {len(cases)} overlap counts match the reference."


def check_redraw_within_layers(reader_fn: Callable[[list[Head], int, np.random.Generator], list[Head]]) -> str:
    """Check a layer-matched redraw: same size, each layer keeps its count, no head twice, every head of a
    layer reachable (over many seeded draws)."""
    claimed = [(3, 0), (3, 4), (7, 2), (9, 1)]
    n_heads = 5
    seen: set[Head] = set()
    for seed in range(200):
        drawn = [tuple(int(i) for i in head) for head in reader_fn(list(claimed), n_heads, np.random.default_rng(seed))]
        assert len(drawn) == len(claimed), f"you drew {len(drawn)} heads for {len(claimed)} claimed ones"
        assert len(set(drawn)) == len(drawn), f"you drew a head twice: {drawn} (draw without replacement)"
        layers = sorted(layer for layer, _ in drawn)
        assert layers == sorted(layer for layer, _ in claimed), (
            f"your draw has layers {layers}; a layer-matched redraw keeps the claimed heads' layers "
            f"{sorted(layer for layer, _ in claimed)}")
        assert all(0 <= head < n_heads for _, head in drawn), f"a head index outside 0..{n_heads - 1}: {drawn}"
        seen |= set(drawn)
    reachable = {(layer, head) for layer in (3, 7, 9) for head in range(n_heads)}
    assert seen == reachable, (f"over 200 draws some heads of the claimed layers never came up: "
                               f"{sorted(reachable - seen)}; draw each head uniformly from its layer")
    return "200 draws keep every layer's count, never repeat a head, and reach every head of those layers."
