"""Checkers for the syntactic-head page: the positional baseline and one head's argmax accuracy on arcs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from helpers.checks.patterns import random_causal_patterns
from helpers.experiments import syntax


def _baseline_cases() -> dict[str, list[int]]:
    return {
        "a hand-made list (offset 2 three times of six)": [2, 1, 2, 5, 2, 4],
        "a tie between offsets 1 and 3": [1, 3, 1, 3, 6],
        "a single offset": [4, 4, 4],
        "one arc": [7],
        "every offset different": [1, 2, 3, 4, 5],
        "a long list": [1, 2] * 10 + [2, 5] * 7 + [9],
    }


def check_positional_baseline(reader_fn: Callable[[list[int]], float]) -> str:
    """Check Voita's positional baseline from a list of arc offsets: the share of arcs at the most common
    offset (a tie changes which offset, not the share)."""
    cases = _baseline_cases()
    for label, offsets in cases.items():
        expected = syntax.baseline_from_offsets(offsets)
        got = float(reader_fn(list(offsets)))
        assert abs(got - expected) < 1e-6, (f"on {label} {offsets} your baseline is {got:.4f}; expected "
                                            f"{expected:.4f}, the share of arcs whose offset is the most common one")
    return f"All {len(cases)} offset lists match the reference."


def _arcs(seq_len: int, pairs: Sequence[tuple[int, Sequence[int]]]) -> syntax.Arcs:
    targets = torch.zeros(len(pairs), seq_len, dtype=torch.bool)
    for i, (_, keys) in enumerate(pairs):
        targets[i, list(keys)] = True
    return syntax.Arcs(prompt=torch.zeros(len(pairs), dtype=torch.long),
                       query=torch.tensor([q for q, _ in pairs], dtype=torch.long), targets=targets)


def _accuracy_cases() -> dict[str, tuple[Tensor, list[tuple[int, list[int]]]]]:
    n = 8
    arcs = [(3, [1]), (5, [4]), (6, [2]), (7, [5]), (7, [4, 6])]  # offsets 2, 1, 4, 2 and {3, 1}
    oracle = torch.zeros(n, n)
    oracle[torch.arange(n), torch.arange(n)] = 1.0  # every other query attends to itself
    for q, keys in arcs[:4]:
        oracle[q] = 0.0
        oracle[q, keys[0]] = 1.0
    previous = torch.nn.functional.one_hot((torch.arange(n) - 1).clamp(min=0), n).float()
    sink = 0.7 * torch.nn.functional.one_hot(torch.zeros(n, dtype=torch.long), n) + 0.3 * previous
    sink[0] = torch.nn.functional.one_hot(torch.tensor(0), n).float()
    cases = {
        "an oracle head (all its attention on each arc's partner)": (oracle, arcs[:4]),
        "a previous-token head": (previous, arcs),
        "a head that rests on position 0 and gives the rest to the previous token": (sink, arcs),
    }
    for seed in range(3):
        cases[f"random pattern (seed {seed})"] = (random_causal_patterns(seed, n, n, scale=2.0), arcs)
    return cases


def check_relation_accuracy(
        reader_fn: Callable[[Float[Tensor, "query key"], list[tuple[int, list[int]]]], float]) -> str:
    """Check one head's argmax accuracy on a relation: `reader_fn(pattern, arcs)` with a ``[query, key]``
    pattern and arcs as ``(query, [partner keys])``; the share of arcs whose strongest attention, over keys 1
    to the query (position 0 excluded), lands on a partner."""
    cases = _accuracy_cases()
    for label, (pattern, arcs) in cases.items():
        expected = syntax.arc_hits(pattern[None, None, None], _arcs(pattern.shape[0], arcs)).float().mean().item()
        got = float(reader_fn(pattern.clone(), [(q, list(keys)) for q, keys in arcs]))
        assert abs(got - expected) < 1e-6, (f"on {label} with arcs {arcs} your accuracy is {got:.4f}; expected "
                                            f"{expected:.4f} (argmax over keys 1..query; a hit on any partner counts)")
    return f"All {len(cases)} heads match the reference."
