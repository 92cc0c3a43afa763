"""Checkers for the summary-reader page's exercises: a head's signed effect split by the keys it reads
from, and a head's output at END with the values of some keys taken from another prompt."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from helpers.experiments.summary_reader import route_scores, values_patched_z


def _route_cases() -> dict[str, tuple[Tensor, Tensor, list[int]]]:
    """label -> (per_key [layer, head, batch, key], sign [batch], keys of the route)."""
    generator = torch.Generator().manual_seed(0)
    one = torch.zeros(1, 2, 2, 5)
    one[0, 1, :, 2] = 1.0
    cases = {"one head reading +1 from key 2": (one, torch.tensor([1, 1]), [2]),
             "the same head on prompts of opposite signs": (one, torch.tensor([1, -1]), [2]),
             "a route that misses the head's key": (one, torch.tensor([1, 1]), [0, 4])}
    for seed in range(3):
        cases[f"random effects (seed {seed})"] = (torch.randn(2, 3, 4, 6, generator=generator),
                                                  torch.randint(0, 2, (4,), generator=generator) * 2 - 1, [1, 3])
    return cases


def check_route_score(reader_fn: Callable[[Tensor, Tensor, list[int]], object]) -> str:
    """Each head's signed effect through a route, averaged over prompts: ``[layer, head]``."""
    cases = _route_cases()
    for label, (per_key, sign, where) in cases.items():
        expected = route_scores(per_key, sign, {"route": where})["route"].mean(-1)
        got = torch.as_tensor(reader_fn(per_key.clone(), sign.clone(), list(where)), dtype=torch.float32)
        assert got.shape == expected.shape, f"on {label} your result has shape {tuple(got.shape)}; expected " \
                                            f"{tuple(expected.shape)} ([layer, head])"
        assert torch.allclose(got, expected, atol=1e-5), (
            f"on {label} (route {where}, signs {sign.tolist()}) you give {got.flatten().tolist()}; expected "
            f"{expected.flatten().tolist()}")
    return f"All {len(cases)} cases match the reference."


def _patch_cases() -> dict[str, tuple[Tensor, Tensor, Tensor, Tensor, list[int]]]:
    """label -> (attention [head, key], z [head, d_head], clean_v [key, head, d_head], source_v, keys)."""
    generator = torch.Generator().manual_seed(1)
    cases = {}
    for seed, where in enumerate(([0, 1, 2, 3], [2], [], [1, 3])):
        attention = torch.softmax(torch.randn(2, 4, generator=generator), -1)
        clean = torch.randn(4, 2, 3, generator=generator)
        source = torch.randn(4, 2, 3, generator=generator)
        z = torch.einsum("hk,khd->hd", attention, clean)
        cases[f"random head pair (seed {seed}), keys {where}"] = (attention, z, clean, source, where)
    return cases


def check_values_patch(reader_fn: Callable[[Tensor, Tensor, Tensor, Tensor, list[int]], object]) -> str:
    """One layer, one prompt, no GQA: ``z + sum_{j in where} A[:, j] (source_v_j - clean_v_j)``."""
    cases = _patch_cases()
    for label, (attention, z, clean, source, where) in cases.items():
        expected = values_patched_z(attention[None, None], z[None, None], [clean[None]], [source[None]], where)[0, 0]
        got = torch.as_tensor(reader_fn(attention.clone(), z.clone(), clean.clone(), source.clone(), list(where)),
                              dtype=torch.float32)
        assert got.shape == expected.shape, f"on {label} your z has shape {tuple(got.shape)}; expected " \
                                            f"{tuple(expected.shape)} ([head, d_head])"
        assert torch.allclose(got, expected, atol=1e-5), f"on {label} your z differs from the reference by " \
                                                         f"{(got - expected).abs().max():.3g}"
    return f"All {len(cases)} heads match the reference."
