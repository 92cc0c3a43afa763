"""Checkers for the iteration page's exercises: where an iteration head should look, and its score."""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from helpers.checks.patterns import random_causal_patterns
from helpers.experiments import iteration


def _reference_targets(length: int, n_pos: int) -> Tensor:
    return iteration.iteration_targets(torch.tensor([length]), n_pos)[0]


def _step_to_input(length: int, n_pos: int, shift: int = 0) -> Tensor:
    """[query, key]: queries predicting a state attend only to input t + shift (to themselves when there is
    no such input); every other query attends to itself."""
    pattern = torch.eye(n_pos)
    for q in range(length, 2 * length):
        key = q - length + shift
        pattern[q] = 0.0
        pattern[q, key if 0 <= key < length else q] = 1.0
    return pattern


def _cases() -> dict[str, tuple[Tensor, int]]:
    """label -> (pattern [query, key], length L)."""
    cases = {
        "an iteration head, L = 5": (_step_to_input(5, 11), 5),
        "an iteration head, L = 1 (only the end-of-input mark asks)": (_step_to_input(1, 11), 1),
        "a head one input late (x_(t-1)), L = 5": (_step_to_input(5, 11, shift=-1), 5),
        "uniform causal attention, L = 4": (torch.ones(9, 9).tril() / torch.arange(1, 10)[:, None], 4),
    }
    for seed, length in enumerate((3, 6, 8)):
        cases[f"random pattern (seed {seed}), L = {length}"] = (random_causal_patterns(seed, 17, 17, scale=3.0), length)
    return cases


def check_iteration_targets(reader_fn: Callable[[int, int], Bool[Tensor, "query key"]]) -> str:
    """Check `my_iteration_targets(length, n_pos)` against `iteration.iteration_targets` for one sequence:
    True exactly at (query L + t - 1, key t - 1) for t = 1..L (0-based positions)."""
    shapes = [(1, 3), (3, 7), (5, 11), (8, 17), (4, 17)]
    for length, n_pos in shapes:
        expected = _reference_targets(length, n_pos)
        got = torch.as_tensor(reader_fn(length, n_pos)).bool()
        assert tuple(got.shape) == (n_pos, n_pos), (
            f"length {length}, n_pos {n_pos}: your targets have shape {tuple(got.shape)}; expected ({n_pos}, {n_pos})")
        wrong = (got != expected).nonzero().tolist()
        assert not wrong, (f"length {length}, n_pos {n_pos}: your targets differ at (query, key) {wrong[:3]}; "
                           f"expected True at {expected.nonzero().tolist()}")
    return f"All {len(shapes)} sequence shapes match the reference."


def check_iteration_score(reader_fn: Callable[[Float[Tensor, "query key"], int], float]) -> str:
    """Check `my_iteration_score(pattern, length)` for one head on one sequence: the mean, over the L
    queries that predict a state, of the attention on that state's input; against
    `scores.attention_on_targets` on `iteration.iteration_targets`."""
    from helpers import scores

    cases = _cases()
    for label, (pattern, length) in cases.items():
        targets = iteration.iteration_targets(torch.tensor([length]), pattern.shape[-1])
        expected = scores.attention_on_targets(pattern[None, None, None], targets)[0, 0].item()
        got = float(reader_fn(pattern.clone(), length))
        assert abs(got - expected) < 1e-5, f"{label}: your score is {got:.4f}; expected {expected:.4f}"
    return f"All {len(cases)} attention patterns match the reference."
