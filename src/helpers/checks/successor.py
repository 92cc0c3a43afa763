"""Checkers for the successor page's exercises: the succession score of one head's effective OV table, and the
family-wise pass rule against shuffled orders."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from helpers import ov


def _one_hot(targets: Tensor, n: int) -> Tensor:
    """[source, candidate] table whose row i peaks at column targets[i] (a clean mapping)."""
    return torch.nn.functional.one_hot(targets, n).float() * 2.0 - 1.0


def _score_cases() -> dict[str, tuple[Tensor, Tensor]]:
    """label -> (table [n, n], order [n])."""
    generator = torch.Generator().manual_seed(0)
    n = 7
    cases = {
        "a successor head (i -> i + 1), the task's order": (_one_hot((torch.arange(n) + 1) % n, n), torch.arange(n)),
        "a copying head (i -> i)": (_one_hot(torch.arange(n), n), torch.arange(n)),
        "a predecessor head (i -> i - 1)": (_one_hot((torch.arange(n) - 1) % n, n), torch.arange(n)),
        "a successor head read against a shuffled order": (_one_hot((torch.arange(n) + 1) % n, n),
                                                            torch.tensor([3, 4, 0, 1, 2, 6, 5])),
        "a head that maps the last token's row somewhere (the last token is not scored)": (
            _one_hot(torch.tensor([1, 2, 3, 4, 5, 6, 6]), n), torch.arange(n)),
    }
    for seed in range(3):
        table = torch.randn(n, n, generator=generator)
        order = torch.randperm(n, generator=generator)
        cases[f"random table and order (seed {seed})"] = (table, order)
    return cases


def check_succession_score(reader_fn: Callable[[Tensor, Tensor], object]) -> str:
    """Check one head's succession score against `ov.order_scores`: the share of the first n - 1 tokens of
    `order` whose top column in `table` is the token after them in `order`."""
    cases = _score_cases()
    for label, (table, order) in cases.items():
        expected = float(ov.order_scores(table, order)[0])
        got = float(torch.as_tensor(reader_fn(table.clone(), order.clone()), dtype=torch.float32))
        assert abs(got - expected) < 1e-6, (
            f"on {label} (order {order.tolist()}) your score is {got:.3f}; expected {expected:.3f}")
    return f"All {len(cases)} tables match the reference."


def _rule_cases() -> dict[str, tuple[Tensor, Tensor]]:
    """label -> (scores [layer, head], shuffled [shuffle, layer, head]); 20 shuffles, 2 x 3 heads."""
    generator = torch.Generator().manual_seed(1)
    base = torch.rand(20, 2, 3, generator=generator) * 0.2  # shuffled scores in [0, 0.2)
    bar = float(torch.quantile(base.flatten(1).max(-1).values.double(), 0.95))
    quiet = base.mean(0)
    one = quiet.clone()
    one[1, 2] = 0.6
    at_bar = quiet.clone()
    at_bar[0, 1] = bar
    own = quiet.clone()  # above its own shuffles' 95th percentile, not above the best head's bar
    own_shuffles = base.clone()
    own_shuffles[:, 0, 0] = 0.01
    own[0, 0] = 0.05
    two = quiet.clone()
    two[0, 2], two[1, 0] = 0.5, 0.7
    return {
        "no head above the bar": (quiet, base),
        "one successor head (L1H2 at 0.6)": (one, base),
        "a head exactly at the bar (L0H1): the rule says above": (at_bar, base),
        "a head above its own shuffles but below the best head's (L0H0)": (own, own_shuffles),
        "two successor heads (L1H0 0.7, L0H2 0.5)": (two, base),
    }


def check_passing_heads(reader_fn: Callable[[Tensor, Tensor], object]) -> str:
    """Check the pass rule against `successor.passing_heads`: a head passes when its score is strictly above
    the 95th percentile, over shuffles, of the best head's score in each shuffle. Heads are compared as a set."""
    from helpers.experiments import successor

    cases = _rule_cases()
    for label, (scores, shuffled) in cases.items():
        expected = sorted(successor.passing_heads(scores, shuffled))
        got = sorted((int(layer), int(head)) for layer, head in reader_fn(scores.clone(), shuffled.clone()))
        assert got == expected, (f"on {label} you pass {[f'L{l}H{h}' for l, h in got]}; expected "
                                 f"{[f'L{l}H{h}' for l, h in expected]}")
    return f"All {len(cases)} screens match the reference."
