"""Checkers for the in-context page's exercises: the signed label difference and accuracy from logits, and
a head's label-copying score from its OV table over the two labels."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from helpers.experiments.in_context import accuracy, label_copying


def _signed_cases() -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """label -> (logits [batch, vocab], right [batch], wrong [batch])."""
    generator = torch.Generator().manual_seed(0)
    hand = torch.tensor([[0.0, 2.0, 1.0], [0.0, 2.0, 1.0], [5.0, 0.0, 0.0]])
    cases = {"hand-made logits, answers differ per prompt": (hand, torch.tensor([1, 2, 0]), torch.tensor([2, 1, 1])),
             "a tie (difference 0 counts as wrong)": (torch.zeros(2, 4), torch.tensor([0, 1]), torch.tensor([1, 0]))}
    for seed in range(3):
        right = torch.randint(0, 6, (5,), generator=generator)
        cases[f"random logits (seed {seed})"] = (torch.randn(5, 6, generator=generator), right, (right + 1) % 6)
    return cases


def check_signed_accuracy(reader_fn: Callable[[Tensor, Tensor, Tensor], object]) -> str:
    """``(signed, accuracy)``: ``logits[b, right[b]] - logits[b, wrong[b]]`` per prompt, and the share above 0."""
    cases = _signed_cases()
    for label, (logits, right, wrong) in cases.items():
        rows = torch.arange(len(right))
        signed = logits[rows, right] - logits[rows, wrong]
        got = reader_fn(logits.clone(), right.clone(), wrong.clone())
        assert isinstance(got, tuple) and len(got) == 2, "return a pair: (signed difference per prompt, accuracy)"
        got_signed = torch.as_tensor(got[0], dtype=torch.float32)
        assert got_signed.shape == signed.shape, f"on {label} your signed difference has shape " \
                                                 f"{tuple(got_signed.shape)}; expected {tuple(signed.shape)} ([batch])"
        assert torch.allclose(got_signed, signed, atol=1e-5), (
            f"on {label} you give {got_signed.tolist()}; expected {signed.tolist()}")
        assert abs(float(got[1]) - float(accuracy(signed))) < 1e-6, (
            f"on {label} your accuracy is {float(got[1]):.3f}; expected {float(accuracy(signed)):.3f}")
    return f"All {len(cases)} cases match the reference."


def _table_cases() -> dict[str, Tensor]:
    """label -> an OV table ``[..., source=2, target=2]``."""
    generator = torch.Generator().manual_seed(1)
    return {"a pure copier": torch.eye(2), "a head that always writes label 0": torch.tensor([[1.0, 0.0], [1.0, 0.0]]),
            "a swapper": 1 - torch.eye(2), "random tables for 3 x 4 heads": torch.randn(3, 4, 2, 2, generator=generator)}


def check_label_copying(reader_fn: Callable[[Tensor], object]) -> str:
    """How much more reading label 0 than label 1 raises ``logit[0] - logit[1]`` (per head)."""
    cases = _table_cases()
    for label, table in cases.items():
        expected = label_copying(table)
        got = torch.as_tensor(reader_fn(table.clone()), dtype=torch.float32)
        assert got.shape == expected.shape, f"on {label} your score has shape {tuple(got.shape)}; expected " \
                                            f"{tuple(expected.shape)}"
        assert torch.allclose(got, expected, atol=1e-5), f"on {label} you give {got.flatten().tolist()}; expected " \
                                                         f"{expected.flatten().tolist()}"
    return f"All {len(cases)} tables match the reference."
