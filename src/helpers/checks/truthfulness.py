"""Checkers for the truthfulness page's exercises: the mass-mean direction of every head, and ITI's shift
(``alpha * spread * unit`` in the chosen heads, nothing elsewhere)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from helpers import heads, probes


def _cases() -> dict[str, tuple[Tensor, Tensor]]:
    """label -> (features [item, layer, head, d_head], labels [item])."""
    generator = torch.Generator().manual_seed(0)
    hand = torch.zeros(4, 1, 1, 2)
    hand[:, 0, 0] = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    cases = {"four items in one 2-d head (true items along x)": (hand, torch.tensor([1, 1, 0, 0]))}
    for seed in range(2):
        labels = (torch.rand(12, generator=generator) > 0.5).long()
        labels[:2] = torch.tensor([0, 1])
        cases[f"random features, 2 layers x 3 heads (seed {seed})"] = (torch.randn(12, 2, 3, 4, generator=generator), labels)
    return cases


def check_mass_mean(reader_fn: Callable[[Tensor, Tensor], object]) -> str:
    """``mean(features of true items) - mean(features of false items)`` per head, ``[layer, head, d_head]``."""
    cases = _cases()
    for label, (features, labels) in cases.items():
        expected = probes.mass_mean(features, labels).shift
        got = torch.as_tensor(reader_fn(features.clone(), labels.clone()), dtype=torch.float32)
        assert got.shape == expected.shape, (f"on {label} your direction has shape {tuple(got.shape)}; expected "
                                             f"{tuple(expected.shape)} ([layer, head, d_head])")
        if torch.allclose(got, -expected, atol=1e-5) and expected.abs().max() > 0:
            raise AssertionError(f"on {label} your direction points from true to false: subtract the false mean "
                                 "from the true mean")
        assert torch.allclose(got, expected, atol=1e-5), (f"on {label} you give {got.flatten()[:6].tolist()}...; "
                                                          f"expected {expected.flatten()[:6].tolist()}...")
    return f"All {len(cases)} cases match the reference."


def check_iti_shift(reader_fn: Callable[[Tensor, Tensor, list, float], object]) -> str:
    """``alpha * spread * unit`` (from `probes.mass_mean`) in the heads of `found`, zero in every other head."""
    cases = _cases()
    checked = 0
    for label, (features, labels) in cases.items():
        n_layers, n_heads = features.shape[1:3]
        found = heads.every(n_layers, n_heads)[:: 2]
        direction = probes.mass_mean(features, labels)
        mask = heads.masks([found], n_layers, n_heads)[0].float()[..., None]
        for alpha in (1.0, 5.0):
            expected = alpha * direction.spread[..., None] * direction.unit * mask
            got = torch.as_tensor(reader_fn(features.clone(), labels.clone(), list(found), alpha), dtype=torch.float32)
            assert got.shape == expected.shape, f"on {label} your shift has shape {tuple(got.shape)}; expected " \
                                                f"{tuple(expected.shape)}"
            outside = got * (1 - mask)
            assert outside.abs().max() < 1e-6, f"on {label} you shift heads outside found ({heads.labels(found)})"
            assert torch.allclose(got, expected, atol=1e-4), (
                f"on {label} with alpha {alpha} your shift's norms per head are {got.norm(dim=-1).flatten().tolist()}; "
                f"expected {expected.norm(dim=-1).flatten().tolist()} (alpha x the spread along the unit direction)")
            checked += 1
    return f"All {checked} cases match the reference."
