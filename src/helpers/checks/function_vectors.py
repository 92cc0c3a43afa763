"""Checkers for the function-vector page's exercises: the function vector summed from named heads' mean
outputs, and a shuffle of the examples' labels that leaves no label on its own example."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from helpers.experiments.function_vectors import function_vector


def _vector_cases() -> dict[str, tuple[Tensor, list[tuple[int, int]]]]:
    """label -> (outputs [layer, head, d_model], heads)."""
    generator = torch.Generator().manual_seed(0)
    ones = torch.zeros(2, 3, 4)
    ones[1, 2] = 1.0
    cases = {"one head whose output is all ones": (ones, [(1, 2)]),
             "the same outputs, a head that writes nothing added": (ones, [(1, 2), (0, 0)])}
    for seed in range(3):
        outputs = torch.randn(4, 5, 6, generator=generator)
        cases[f"random outputs (seed {seed}), three heads"] = (outputs, [(3, 1), (0, 4), (2, 2)])
    return cases


def check_function_vector(vector_fn: Callable[[Tensor, list[tuple[int, int]]], object]) -> str:
    """The sum over the named heads of their mean outputs: ``[d_model]``."""
    cases = _vector_cases()
    for label, (outputs, found) in cases.items():
        expected = function_vector(outputs, found)
        got = torch.as_tensor(vector_fn(outputs.clone(), list(found)), dtype=torch.float32)
        assert got.shape == expected.shape, f"on {label} your vector has shape {tuple(got.shape)}; expected " \
                                            f"{tuple(expected.shape)} ([d_model])"
        assert torch.allclose(got, expected, atol=1e-5), (
            f"on {label} (heads {found}) you give {got.tolist()}; expected {expected.tolist()}")
    return f"All {len(cases)} cases match the reference."


def check_derangement(shuffle_fn: Callable[[int, torch.Generator], object], tries: int = 200) -> str:
    """A permutation of ``range(n)`` with no fixed point, for n from 2 to 8, on many seeded generators."""
    for n in range(2, 9):
        seen = set()
        for seed in range(tries):
            order = [int(i) for i in shuffle_fn(n, torch.Generator().manual_seed(seed))]
            assert sorted(order) == list(range(n)), f"for n = {n} (seed {seed}) {order} is not a permutation " \
                                                   f"of 0..{n - 1}"
            fixed = [i for i, j in enumerate(order) if i == j]
            assert not fixed, f"for n = {n} (seed {seed}) {order} leaves example(s) {fixed} with their own label"
            seen.add(tuple(order))
        assert n == 2 or len(seen) > 1, f"for n = {n} every seed gives {order}: the shuffle must be random"
    return f"All {7 * tries} shuffles move every label."
