"""Checkers for the rare-words page's exercises: the least frequent earlier token of each query, and Voita's
argmax share of one head.

Both compare the learner's function with the book's (`frequency.least_frequent_earlier`,
`experiments.rare_words.argmax_hits`) on small hand-made cases that hold the traps: a repeated rare token
(the earlier copy counts), position 0 left out, a head parked on position 0, ties in the attention.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers import frequency
from helpers.checks.patterns import random_causal_patterns
from helpers.experiments import rare_words


def _rank_cases() -> dict[str, tuple[Tensor, Tensor, int]]:
    """label -> (tokens [pos], rank [d_vocab], first_key)."""
    rank = frequency.rarity_rank(torch.tensor([9, 7, 0, 3, 5, 0, 1, 2]))  # ids 2 and 5 never occur; 5 is rarer
    generator = torch.Generator().manual_seed(0)
    return {
        "rising rarity": (torch.tensor([0, 1, 4, 3, 7, 6, 2, 5]), rank, 1),
        "the rarest token at position 0 (left out)": (torch.tensor([5, 0, 1, 3, 0, 4]), rank, 1),
        "first_key 0: position 0 counts": (torch.tensor([5, 0, 1, 3, 0, 4]), rank, 0),
        "a repeated rare token (the earlier copy)": (torch.tensor([0, 2, 1, 2, 4, 2, 0]), rank, 1),
        "first_key 2": (torch.tensor([1, 5, 0, 3, 2, 0, 4]), rank, 2),
        "random tokens": (torch.randint(0, 8, (12,), generator=generator), rank, 1),
    }


def check_least_frequent_earlier(reader_fn: Callable[[Int[Tensor, "pos"], Int[Tensor, "d_vocab"], int], object]
                                 ) -> str:
    """Check ``reader_fn(tokens, rank, first_key)``: for each query q of one prompt, the position of the least
    frequent token (largest `rank`) among the keys ``first_key .. q - 1``, the earliest if that token repeats,
    and -1 where there is no such key."""
    cases = _rank_cases()
    for label, (tokens, rank, first_key) in cases.items():
        expected = frequency.least_frequent_earlier(tokens[None], rank, first_key=first_key)[0]
        got = torch.as_tensor(reader_fn(tokens.clone(), rank.clone(), first_key)).flatten().long()
        assert got.shape == expected.shape, (f"{label}: expected {len(expected)} positions (one per query), got "
                                             f"shape {tuple(got.shape)}")
        assert torch.equal(got, expected), (f"{label} (tokens {tokens.tolist()}, first_key {first_key}): expected "
                                            f"{expected.tolist()}, got {got.tolist()}")
    return f"All {len(cases)} prompts match: every query finds its least frequent earlier token."


def _hit_cases() -> dict[str, tuple[Tensor, Tensor]]:
    """label -> (pattern [query, key], targets [query])."""
    seq_len = 8
    previous = torch.nn.functional.one_hot((torch.arange(seq_len) - 1).clamp(min=0), seq_len).float()
    sink = torch.full((seq_len, seq_len), 0.05).tril()
    sink[:, 0] = 0.6
    sink[:, 2] = 0.2  # after position 0, key 2 is where it looks most
    sink = sink.tril()
    tie = torch.ones(seq_len, seq_len).tril()  # uniform: every visible key ties, the earliest eligible wins
    fixed = torch.full((seq_len,), 2)
    fixed[:3] = -1
    return {
        "a previous-token head, target one back": (previous, torch.tensor([-1, -1, 1, 2, 3, 4, 5, 6])),
        "a previous-token head, target fixed at 2": (previous, fixed),
        "a head parked on position 0 (left out)": (sink.tril(), fixed),
        "uniform attention (ties go to the earliest key from 1)": (tie, torch.tensor([-1, -1, 1, 1, 2, 1, 3, 1])),
        "random pattern, seed 1": (random_causal_patterns(1, seq_len, seq_len, scale=3.0), fixed),
        "random pattern, seed 2": (random_causal_patterns(2, seq_len, seq_len, scale=3.0),
                                   torch.tensor([-1, -1, 1, 1, 3, 3, 3, 6])),
    }


def check_argmax_share(reader_fn: Callable[[Float[Tensor, "query key"], Int[Tensor, "query"]], object]) -> str:
    """Check ``reader_fn(pattern, targets)``: the share of scored queries (target >= 0) whose largest attention
    over the keys ``1 .. q`` (position 0 left out, a tie to the earliest key) is their target."""
    cases = _hit_cases()
    for label, (pattern, targets) in cases.items():
        expected = float(rare_words.argmax_hits(pattern[None, None, None], targets[None])[0, 0, 0])
        got = float(torch.as_tensor(reader_fn(pattern.clone(), targets.clone())))
        assert abs(got - expected) < 1e-6, f"{label} (targets {targets.tolist()}): expected {expected:.3f}, got {got:.3f}"
    return f"All {len(cases)} heads match: the argmax share leaves position 0 out and breaks ties to the earliest key."
