"""Checkers for the exercises: compare a reader's function with the book's on small synthetic inputs.

Each checker returns a short success message, or raises ``AssertionError`` naming the first input on
which the reader's answer differs from the reference and both values, so the fix is obvious.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers import scores


def _random_patterns(seed: int, seq_len: int) -> Float[Tensor, "query key"]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(seq_len, seq_len, generator=generator)
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
    return logits.masked_fill(~causal, -torch.inf).softmax(-1)


def check_previous_token_score(reader_fn: Callable[[Float[Tensor, "query key"]], float]) -> str:
    """Check a one-head previous-token score: mean attention from query q to key q - 1, over q >= 1."""
    cases = {
        "a pure previous-token head": torch.nn.functional.one_hot((torch.arange(6) - 1).clamp(min=0), 6).float(),
        "a head that attends to itself": torch.eye(6),
        "a uniform causal head": torch.ones(6, 6).tril() / torch.arange(1, 7)[:, None],
    }
    cases.update({f"random pattern (seed {seed})": _random_patterns(seed, 7) for seed in range(3)})
    for label, pattern in cases.items():
        seq_len = pattern.shape[0]
        expected = scores.attention_on_targets(pattern[None, None, None], scores.previous_token_targets(1, seq_len)).item()
        got = float(reader_fn(pattern.clone()))
        assert abs(got - expected) < 1e-5, f"on {label} your score is {got:.4f}; expected {expected:.4f}"
    return f"All {len(cases)} previous-token cases match the reference."


def check_induction_targets(reader_fn: Callable[[Int[Tensor, "pos"]], Bool[Tensor, "query key"]]) -> str:
    """Check an induction-target mask for one sequence against `scores.induction_targets`."""
    cases = {
        "a sequence repeated twice": torch.tensor([4, 1, 2, 3, 1, 2, 3]),
        "a sequence with no repeats": torch.arange(6),
        "a token repeated three times": torch.tensor([5, 9, 5, 7, 5, 2]),
    }
    for label, tokens in cases.items():
        expected = scores.induction_targets(tokens[None])[0]
        got = torch.as_tensor(reader_fn(tokens.clone())).bool()
        assert got.shape == expected.shape, f"on {label} your mask has shape {tuple(got.shape)}; expected {tuple(expected.shape)}"
        wrong = (got != expected).nonzero().tolist()
        assert not wrong, (f"on {label} ({tokens.tolist()}) your mask differs at (query, key) = {wrong[:4]}; "
                           f"expected targets at {expected.nonzero().tolist()}")
    return f"All {len(cases)} induction-target cases match the reference."
