"""Attention heads as ``(layer, head)`` pairs: the one type, label, range check, ranking and set mask.

Every module and page names heads through these, so ``L23H0`` means the same thing everywhere
(0-based layer and head; a paper's "9.9" is ``L9H9``). Results per head are ``[layer, head]`` tensors.

Example::

    heads.top(scores, 3)                    # [(23, 0), (23, 2), (23, 1)], best first
    heads.labels(heads.top(scores, 2), scores)  # 'L23H0 (+0.91), L23H2 (+0.45)'
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor

Head = tuple[int, int]


def label(head: Head) -> str:
    """``L{layer}H{head}``."""
    layer, index = head
    return f"L{layer}H{index}"


def labels(heads: Sequence[Head], values: Float[Tensor, "layer head"] | None = None, *, signed: bool = True) -> str:
    """``L23H0, L23H2`` or, with `values`, ``L23H0 (+0.91), L23H2 (+0.45)``; ``none`` when empty."""
    if values is None:
        return ", ".join(label(h) for h in heads) or "none"
    number = "{:+.2f}" if signed else "{:.2f}"
    return ", ".join(f"{label(h)} ({number.format(float(values[tuple(h)]))})" for h in heads) or "none"


def parse(text: str) -> Head:
    """``"L23H0"`` -> ``(23, 0)``: the inverse of `label`."""
    match = re.fullmatch(r"L(\d+)H(\d+)", text.strip())
    if match is None:
        raise ValueError(f"a head label reads L<layer>H<head>, e.g. 'L23H0'; got {text!r}")
    return int(match[1]), int(match[2])


def check(heads: Sequence[Head], n_layers: int, n_heads: int) -> None:
    """Raise a clear error for a head that is not a (layer, head) pair of this model."""
    for head in heads:
        if len(head) != 2:
            raise ValueError(f"a head is a (layer, head) pair; got {head!r}")
        layer, index = head
        if not (0 <= layer < n_layers and 0 <= index < n_heads):
            raise ValueError(f"head {label(head)} is outside this model, which has layers 0..{n_layers - 1} "
                             f"and heads 0..{n_heads - 1} per layer")


def every(n_layers: int, n_heads: int) -> list[Head]:
    """All heads in (layer, head) order."""
    return [(layer, head) for layer in range(n_layers) for head in range(n_heads)]


def masks(head_sets: Sequence[Sequence[Head]], n_layers: int, n_heads: int) -> Bool[Tensor, "set layer head"]:
    """One boolean ``[layer, head]`` mask per head set, True at its heads."""
    out = torch.zeros(len(head_sets), n_layers, n_heads, dtype=torch.bool)
    for i, head_set in enumerate(head_sets):
        check(head_set, n_layers, n_heads)
        for layer, head in head_set:
            out[i, layer, head] = True
    return out


def top(scores: Float[Tensor, "layer head"], k: int | None = None, *,
        where: Bool[Tensor, "layer head"] | None = None) -> list[Head]:
    """Heads by descending score, best first (ties broken by index): the first `k`, or all of them.

    `where` keeps only the heads marked True (e.g. heads that attend to the right token), so a ranking
    with a condition is one call: ``top(dla, 3, where=to_io > to_s)``.
    """
    n_layers, n_heads = scores.shape
    if k is not None and not 1 <= k <= n_layers * n_heads:
        raise ValueError(f"k must lie in [1, {n_layers * n_heads}] for a {n_layers}x{n_heads} grid; got {k}")
    if where is not None and tuple(where.shape) != (n_layers, n_heads):
        raise ValueError(f"where must be a [layer, head] mask of shape {(n_layers, n_heads)}; got {tuple(where.shape)}")
    flat = scores.flatten().tolist()
    keep = [True] * len(flat) if where is None else where.flatten().tolist()
    order = sorted((i for i in range(len(flat)) if keep[i]), key=lambda i: (-flat[i], i))
    ranked = [(i // n_heads, i % n_heads) for i in order]
    return ranked if k is None else ranked[:k]
