"""Checkers for the positional page's exercises: the argmax-offset histogram of one head, and the pass rule."""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from helpers import scores
from helpers.checks.patterns import random_causal_patterns


def _one_hot_back(seq_len: int, offset: int) -> Tensor:
    """[query, key]: query q attends only to key q - offset (key 0 while q < offset)."""
    return torch.nn.functional.one_hot((torch.arange(seq_len) - offset).clamp(min=0), seq_len).float()


def _sink(seq_len: int) -> Tensor:
    """[query, key]: 0.6 on position 0, the rest spread evenly over the other visible keys."""
    pattern = torch.ones(seq_len, seq_len).tril()
    pattern[:, 0] = 0.0
    pattern = 0.4 * pattern / pattern.sum(-1, keepdim=True).clamp(min=1)
    pattern[:, 0] += 0.6
    pattern[0, 0] = 1.0
    return pattern


def _offset_cases() -> dict[str, tuple[Tensor, int, int]]:
    """label -> (pattern [query, key], first_query, max_offset)."""
    cases = {
        "a pure previous-token head": (_one_hot_back(10, 1), 4, 3),
        "a pure self-attention head": (torch.eye(10), 4, 3),
        "a first-position sink": (_sink(10), 4, 3),
        "a head four back, scored from query 4 (offset 4 > max_offset 3)": (_one_hot_back(10, 4), 4, 3),
        "a head two back, scored from query 6": (_one_hot_back(10, 2), 6, 2),
    }
    mixed = _one_hot_back(10, 1)
    mixed[7:] = torch.eye(10)[7:]  # queries 7-9 look at themselves
    cases["a head that looks one back, then at itself"] = (mixed, 4, 3)
    for seed, (first_query, max_offset) in enumerate(((4, 3), (3, 2), (6, 5))):
        cases[f"random pattern (seed {seed}, first_query {first_query}, max_offset {max_offset})"] = (
            random_causal_patterns(seed, 12, 12, scale=3.0), first_query, max_offset)
    return cases


def _fmt(values: Tensor) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values.tolist()) + "]"


def check_argmax_offset_shares(reader_fn: Callable[[Float[Tensor, "query key"], int, int], Tensor]) -> str:
    """Check one head's argmax-offset histogram against `scores.argmax_offset_shares`: for queries
    q >= first_query, the share whose strongest key is q - d (bins d = 0..max_offset), position 0 (bin
    max_offset + 1) or anywhere else (the last bin)."""
    cases = _offset_cases()
    for label, (pattern, first_query, max_offset) in cases.items():
        expected = scores.argmax_offset_shares(pattern[None, None, None], first_query=first_query,
                                               max_offset=max_offset)[0, 0]
        got = torch.as_tensor(reader_fn(pattern.clone(), first_query, max_offset), dtype=torch.float32).flatten()
        names = scores.argmax_bin_names(max_offset)
        assert got.shape == expected.shape, (
            f"on {label} you return {got.numel()} shares; expected {expected.numel()}, one per bin: {names}")
        assert torch.allclose(got, expected, atol=1e-5), (
            f"on {label} (first_query {first_query}, max_offset {max_offset}) your shares are {_fmt(got)}; "
            f"expected {_fmt(expected)} for the bins {names}")
    return f"All {len(cases)} attention patterns match the reference."


def _grid(entries: dict[tuple[int, int], tuple[int, float]]) -> Tensor:
    """[layer, head, bin] = [2, 3, 6] shares: each listed head has `share` in `bin` and the rest spread evenly
    over the other bins; every other head is spread evenly over all six bins."""
    grid = torch.full((2, 3, 6), 1 / 6)
    for (layer, head), (where, share) in entries.items():
        grid[layer, head] = (1 - share) / 5
        grid[layer, head, where] = share
    return grid


def _rule_cases() -> dict[str, tuple[Tensor, Tensor]]:
    """label -> (shares on random tokens, shares on prose), with the max_offset = 3 bin layout."""
    clear = {(1, 0): (1, 0.98)}
    return {
        "one previous-token head (L1H0)": (_grid(clear), _grid(clear)),
        "a first-position sink (L0H2) and a self-attention head (L1H1)": (
            _grid({(0, 2): (4, 1.0), (1, 1): (0, 0.95)}), _grid({(0, 2): (4, 0.97), (1, 1): (0, 0.92)})),
        "a head two back at 0.91 on both texts (L0H0)": (_grid({(0, 0): (2, 0.91)}), _grid({(0, 0): (2, 0.91)})),
        "a head at 0.89 on prose (L0H0)": (_grid({(0, 0): (2, 0.95)}), _grid({(0, 0): (2, 0.89)})),
        "a head that changes bin with the text (L1H2: offset 1, then itself)": (
            _grid({(1, 2): (1, 0.95)}), _grid({(1, 2): (0, 0.95)})),
        "a head always 'elsewhere' (L0H1: not a fixed position)": (
            _grid({(0, 1): (5, 0.97)}), _grid({(0, 1): (5, 0.97)})),
    }


def check_positional_heads(reader_fn: Callable[[Tensor, Tensor], object]) -> str:
    """Check the pass rule against `positional.passing_heads`: a head passes when one fixed bin (an offset
    0..3 or the first position, not "elsewhere") holds at least 0.9 of its argmax choices on random tokens
    and on prose. Heads are compared as a set of (layer, head) pairs; their order does not matter."""
    from helpers.experiments import positional

    cases = _rule_cases()
    for label, (random, prose) in cases.items():
        expected = sorted(positional.passing_heads(random, prose))
        got = sorted((int(layer), int(head)) for layer, head in reader_fn(random.clone(), prose.clone()))
        assert got == expected, (f"on {label} you pass {[f'L{l}H{h}' for l, h in got]}; expected "
                                 f"{[f'L{l}H{h}' for l, h in expected]}")
    return f"All {len(cases)} screens match the reference."
