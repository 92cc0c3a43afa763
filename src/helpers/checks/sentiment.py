"""Checkers for the sentiment summarizer page: the mean-difference direction and its mean ablation."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from helpers.experiments import sentiment


def _cases(seed: int) -> list[tuple[Tensor, Tensor]]:
    """Activations with unequal class sizes and a neutral row (which the direction must ignore)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for n_pos, n_neg, n_zero in ((3, 3, 0), (5, 2, 1), (1, 4, 3)):
        acts = torch.randn(n_pos + n_neg + n_zero, 6, generator=generator)
        labels = torch.tensor([1] * n_pos + [-1] * n_neg + [0] * n_zero)
        out.append((acts, labels[torch.randperm(len(labels), generator=generator)]))
    return out


def check_mean_difference(reader_fn: Callable[[Tensor, Tensor], Tensor]) -> str:
    """Check a mean-difference direction: mean of positive rows minus mean of negative rows, neutral rows ignored,
    classes of unequal size each averaged on their own."""
    cases = _cases(0)
    for i, (acts, labels) in enumerate(cases):
        expected = sentiment.mean_difference(acts, labels)
        got = torch.as_tensor(reader_fn(acts.clone(), labels.clone()), dtype=torch.float32)
        assert got.shape == expected.shape, f"case {i}: your direction has shape {tuple(got.shape)}; expected " \
                                            f"{tuple(expected.shape)} (one value per residual dimension)"
        if torch.allclose(got, -expected, atol=1e-5):
            raise AssertionError(f"case {i}: your direction points the wrong way: positive minus negative")
        assert torch.allclose(got, expected, atol=1e-5), (
            f"case {i} ({int((labels > 0).sum())} positive, {int((labels < 0).sum())} negative, "
            f"{int((labels == 0).sum())} neutral rows): you return {got.tolist()}; expected {expected.tolist()}")
    return f"All {len(cases)} directions match the reference (unequal classes and neutral rows included)."


def reference_mean_ablate(x: Tensor, u: Tensor) -> Tensor:
    """x with its component along unit u replaced by that component's mean over the batch (rows)."""
    along = x @ u
    return x - (along - along.mean())[:, None] * u


def check_mean_ablate(reader_fn: Callable[[Tensor, Tensor], Tensor]) -> str:
    """Check mean-ablating a direction: only the component along u changes, to its batch mean."""
    generator = torch.Generator().manual_seed(1)
    for i in range(3):
        x = torch.randn(5, 8, generator=generator) * 3 + 1
        u = torch.randn(8, generator=generator)
        u = u / u.norm()
        expected = reference_mean_ablate(x, u)
        got = torch.as_tensor(reader_fn(x.clone(), u.clone()), dtype=torch.float32)
        assert got.shape == x.shape, f"case {i}: shape {tuple(got.shape)}; expected {tuple(x.shape)}"
        zeroed = x - (x @ u)[:, None] * u
        if torch.allclose(got, zeroed, atol=1e-4):
            raise AssertionError(f"case {i}: you set the component along u to zero; set it to its mean over the "
                                 "rows instead")
        assert torch.allclose(got, expected, atol=1e-4), (
            f"case {i}: your rows differ from the reference by up to {float((got - expected).abs().max()):.3g}; "
            "only the component along u should change")
    return "All 3 batches match: the component along u is its batch mean, everything orthogonal is untouched."
