"""Do head families share heads more than chance? A permutation test on the heads each family claims.

The survey asks whether one head does one job. If families were independent, a head would sit in two
families only as often as their sizes make likely: with 270 heads, a family of 3 and a family of 10 share
a head by chance about one time in ten. The statistic here is the number of shared memberships,

    shared = sum over pairs of families (A, B) of |A ∩ B|,

counted only over pairs that *can* share a head (two families that one score splits by sign, such as
memory and context heads, cannot; `excluded` removes them). The null redraws every family's heads at
random, keeping each family's size:

- ``within_layers=False``: from all heads of the model;
- ``within_layers=True``: each claimed head is replaced by a random head *of the same layer*. Families
  crowd into the same late layers, and that alone makes them share heads; this null keeps every family's
  depth profile, so beating it means the sharing is about the heads, not only about the layers.

The p-value is (1 + draws at least as large as observed) / (1 + draws), so with ``n_draws`` draws the
smallest p it can report is 1 / (n_draws + 1).

Example::

    test = overlap.permutation_test({"memory": [(23, 4)], "mover": [(23, 4), (23, 1)]}, 30, 9, n_draws=2000)
    test.observed, test.p_value
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from helpers import heads
from helpers.heads import Head


def counted_pairs(families: Sequence[str], excluded: Collection[frozenset[str]] = ()) -> list[tuple[str, str]]:
    """Every pair of families that can share a head (all pairs except the `excluded` ones), in order."""
    return [(a, b) for a, b in itertools.combinations(families, 2) if frozenset((a, b)) not in excluded]


def shared_memberships(claimed: Mapping[str, Collection[Head]], excluded: Collection[frozenset[str]] = ()) -> int:
    """Sum over the counted pairs of families of the number of heads both claim."""
    return sum(len(set(claimed[a]) & set(claimed[b])) for a, b in counted_pairs(list(claimed), excluded))


@dataclass(frozen=True)
class OverlapTest:
    """Observed shared memberships against a null of redrawn families, overall and per pair."""

    observed: int
    null: np.ndarray  # [draw] the statistic under the null
    pair_observed: dict[tuple[str, str], int]
    pair_expected: dict[tuple[str, str], float]  # mean over draws
    within_layers: bool

    @property
    def n_draws(self) -> int:
        return len(self.null)

    @property
    def p_value(self) -> float:
        """One-sided: how often the null shares at least as many heads as observed."""
        return float((1 + np.sum(self.null >= self.observed)) / (1 + self.n_draws))

    @property
    def expected(self) -> float:
        return float(self.null.mean())

    def summary(self) -> str:
        null = "heads of the same layer" if self.within_layers else "all heads"
        return (f"{self.observed} shared memberships observed, {self.expected:.1f} expected when each family's "
                f"heads are redrawn from {null} (95th percentile {np.percentile(self.null, 95):.0f}); "
                f"p = {self.p_value:.4f} from {self.n_draws} draws (smallest possible {1 / (self.n_draws + 1):.4f})")


def _redraw(claimed: Collection[Head], n_layers: int, n_heads: int, within_layers: bool,
            rng: np.random.Generator) -> set[Head]:
    if not within_layers:
        picks = rng.choice(n_layers * n_heads, size=len(claimed), replace=False)
        return {(int(p) // n_heads, int(p) % n_heads) for p in picks}
    drawn: set[Head] = set()
    per_layer: dict[int, int] = {}
    for layer, _ in claimed:
        per_layer[layer] = per_layer.get(layer, 0) + 1
    for layer, count in per_layer.items():
        drawn |= {(layer, int(h)) for h in rng.choice(n_heads, size=count, replace=False)}
    return drawn


def permutation_test(claimed: Mapping[str, Collection[Head]], n_layers: int, n_heads: int, *,
                     excluded: Collection[frozenset[str]] = (), n_draws: int = 2000, within_layers: bool = False,
                     seed: int = 0) -> OverlapTest:
    """Shared memberships of `claimed` (family -> its heads) against `n_draws` seeded redraws.

    Raises:
        ValueError: for fewer than two families that may share, a head outside the model, or n_draws < 1.
    """
    pairs = counted_pairs(list(claimed), excluded)
    if not pairs:
        raise ValueError(f"need two families that may share a head; got {sorted(claimed)} with {len(excluded)} "
                         "excluded pairs")
    if n_draws < 1:
        raise ValueError(f"n_draws must be at least 1; got {n_draws}")
    for family, members in claimed.items():
        heads.check(list(members), n_layers, n_heads)
        if len(set(members)) != len(members):
            raise ValueError(f"{family} lists a head twice: {heads.labels(list(members))}")
    rng = np.random.default_rng(seed)
    null = np.empty(n_draws, dtype=np.int64)
    pair_totals = dict.fromkeys(pairs, 0)
    for draw in range(n_draws):
        redrawn = {family: _redraw(members, n_layers, n_heads, within_layers, rng)
                   for family, members in claimed.items()}
        counts = {pair: len(redrawn[pair[0]] & redrawn[pair[1]]) for pair in pairs}
        null[draw] = sum(counts.values())
        for pair, count in counts.items():
            pair_totals[pair] += count
    return OverlapTest(observed=shared_memberships(claimed, excluded), null=null,
                       pair_observed={(a, b): len(set(claimed[a]) & set(claimed[b])) for a, b in pairs},
                       pair_expected={pair: total / n_draws for pair, total in pair_totals.items()},
                       within_layers=within_layers)
