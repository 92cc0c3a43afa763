"""Checkers for the vulnerable-heads page's exercises: counting flips from letter logits, and the share of the
heads' summed |drop| that a set of heads carries."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from helpers.experiments.vulnerable import flipped, shares


def _flip_cases() -> dict[str, tuple[Tensor, Tensor]]:
    """label -> (letter logits [batch, 26], answer columns [batch])."""
    generator = torch.Generator().manual_seed(0)
    hand = torch.zeros(3, 26)
    hand[0, 4], hand[1, 7], hand[2, 0] = 2.0, 1.0, 3.0  # rows write E, H, A
    cases = {"hand-made: the first prompt right, the others flipped": (hand, torch.tensor([4, 2, 5])),
             "every prompt right": (hand, torch.tensor([4, 7, 0]))}
    for seed in range(2):
        cases[f"random logits (seed {seed})"] = (torch.randn(6, 26, generator=generator),
                                                 torch.randint(0, 26, (6,), generator=generator))
    return cases


def check_flipped(reader_fn: Callable[[Tensor, Tensor], object]) -> str:
    """True where the top letter (column of the largest logit) is not the answer's column."""
    cases = _flip_cases()
    for label, (logits, answer) in cases.items():
        expected = flipped(logits, answer)
        got = torch.as_tensor(reader_fn(logits.clone(), answer.clone()))
        assert got.shape == expected.shape, f"on {label} you return shape {tuple(got.shape)}; expected " \
                                            f"{tuple(expected.shape)} ([batch])"
        assert torch.equal(got.bool(), expected), f"on {label} you give {got.bool().tolist()}; expected " \
                                                  f"{expected.tolist()} (True = the model's letter is wrong)"
    return f"All {len(cases)} cases match the reference."


def _share_cases() -> dict[str, tuple[Tensor, list]]:
    """label -> (drop [layer, head], head sets)."""
    generator = torch.Generator().manual_seed(2)
    one = torch.zeros(3, 4)
    one[2, 1] = 2.0
    mixed = one.clone()
    mixed[0, 0] = -1.0  # a head that pushes the other way
    return {"one head carries everything": (one, [[(2, 1)], [(0, 0)], [(2, 1), (0, 0)]]),
            "a head pushes the other way (the plain sum would exceed 1)": (mixed, [[(2, 1)], [(0, 0), (2, 1)]]),
            "random drops": (torch.randn(3, 4, generator=generator), [[(0, 1), (2, 3)], [(1, 1)]]),
            "random drops, all positive": (torch.rand(3, 4, generator=generator), [[(0, 0), (1, 1), (2, 2)]])}


def check_shares(reader_fn: Callable[[Tensor, list], object]) -> str:
    """Each set's summed drop over the summed absolute drop of all heads."""
    cases = _share_cases()
    for label, (drop, sets) in cases.items():
        expected = shares(drop, sets)
        got = torch.as_tensor(reader_fn(drop.clone(), sets), dtype=torch.float32).flatten()
        assert got.shape == expected.shape, f"on {label} you return {tuple(got.shape)}; expected one number per set " \
                                            f"{tuple(expected.shape)}"
        assert torch.allclose(got, expected, atol=1e-5), f"on {label} you give {got.tolist()}; expected " \
                                                         f"{expected.tolist()}"
    return f"All {len(cases)} cases match the reference."
