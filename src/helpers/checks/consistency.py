"""Checkers for the consistency page's exercises: the pairing null of the gate (how often an item's plain
answer would agree with another item's paraphrase answer) and the consistency margin."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from helpers.experiments import consistency


def _answer_cases() -> dict[str, tuple[Tensor, Tensor]]:
    """label -> (plain answers [item], paraphrase answers [item]), answer indices."""
    generator = torch.Generator().manual_seed(0)
    return {"all four agree, four different answers": (torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3])),
            "every paraphrase answers 0": (torch.tensor([0, 1, 0, 2]), torch.tensor([0, 0, 0, 0])),
            "random answers among 3 (seed 0)": (torch.randint(3, (10,), generator=generator),
                                                torch.randint(3, (10,), generator=generator))}


def check_chance_agreement(reader_fn: Callable[[Tensor, Tensor], object]) -> str:
    """Per item, the share of the other items whose paraphrase answer equals this item's plain answer."""
    cases = _answer_cases()
    for label, (plain, para) in cases.items():
        expected = consistency.chance_agreement(plain, para)
        got = torch.as_tensor(reader_fn(plain.clone(), para.clone()), dtype=torch.float32)
        assert got.shape == expected.shape, f"on {label} you return shape {tuple(got.shape)}; expected [item]"
        with_self = (plain[:, None] == para[None, :]).float().mean(1)
        if not torch.allclose(got, expected, atol=1e-6) and torch.allclose(got, with_self, atol=1e-6):
            raise AssertionError(f"on {label} you count the item's own paraphrase answer: leave it out (its "
                                 "partner must be another item) and divide by the number of other items")
        assert torch.allclose(got, expected, atol=1e-6), (f"on {label} you give {got.tolist()}; "
                                                          f"expected {expected.tolist()}")
    return f"All {len(cases)} cases match the reference."


def check_margin(reader_fn: Callable[[Tensor, Tensor], object]) -> str:
    """``logits[i, target[i]]`` minus the largest other logit of row i."""
    generator = torch.Generator().manual_seed(1)
    cases = {"two items, three answers": (torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 5.0]]), torch.tensor([0, 1])),
             "random logits (seed 1)": (torch.randn(6, 4, generator=generator), torch.randint(4, (6,), generator=generator))}
    for label, (logits, target) in cases.items():
        expected = consistency.consistency_margin(logits, target)
        got = torch.as_tensor(reader_fn(logits.clone(), target.clone()), dtype=torch.float32)
        assert got.shape == expected.shape, f"on {label} you return shape {tuple(got.shape)}; expected [item]"
        assert torch.allclose(got, expected, atol=1e-5), (f"on {label} you give {got.tolist()}; expected "
                                                          f"{expected.tolist()} (the target's logit minus the best "
                                                          "*other* answer's)")
    return f"All {len(cases)} cases match the reference."
