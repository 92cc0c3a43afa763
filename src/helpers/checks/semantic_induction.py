"""Checkers for the semantic induction page's exercises: one head's relation index from given tensors, and the
re-pairing permutation p-value."""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from helpers.experiments import semantic_induction as si


def reference_relation_index(attention: Float[Tensor, "pos"], writes: Float[Tensor, "pos d_model"],
                             at_entity: Bool[Tensor, "pos"], directions: Float[Tensor, "tail d_model"],
                             column: int) -> float:
    """The page's index for one head on one prompt: attention-weighted writes from the head-entity positions,
    read on every tail, the true tail (`column`) minus the mean of the others (`si.index_from_table`)."""
    write = (attention * at_entity.float()) @ writes  # [d_model]
    return float(si.index_from_table((write @ directions.T)[None], torch.tensor([column]))[0])


def _index_cases() -> dict[str, tuple[Tensor, Tensor, Tensor, Tensor, int]]:
    """label -> (attention [pos], writes [pos, d_model], at_entity [pos], directions [tail, d_model], column)."""
    generator = torch.Generator().manual_seed(0)
    cases = {}
    for seed, (pos, d_model, tails) in enumerate(((6, 4, 3), (9, 8, 5), (12, 16, 2))):
        attention = torch.rand(pos, generator=generator).softmax(0)
        writes = torch.randn(pos, d_model, generator=generator)
        at_entity = torch.zeros(pos, dtype=torch.bool)
        at_entity[[1, pos - 3]] = True  # the entity is mentioned twice
        directions = torch.randn(tails, d_model, generator=generator)
        cases[f"random case {seed} ({pos} positions, {tails} tails, entity at 1 and {pos - 3})"] = (
            attention, writes, at_entity, directions, seed % tails)
    pos, d_model = 5, 3
    writes = torch.zeros(pos, d_model)
    writes[2] = torch.tensor([1.0, 0.0, 0.0])  # the entity's write points at tail 0
    writes[4] = torch.tensor([0.0, 5.0, 0.0])  # a non-entity position pointing at tail 1 must not count
    at_entity = torch.tensor([False, False, True, False, False])
    cases["a head that puts 0.5 on the entity, whose write raises tail 0 only"] = (
        torch.tensor([0.1, 0.1, 0.5, 0.1, 0.2]), writes, at_entity, torch.eye(3), 0)
    return cases


def check_relation_index(index_fn: Callable[..., float]) -> str:
    """Check `index_fn(attention, writes, at_entity, directions, column)` against the reference: the sum over
    head-entity positions of attention x write, read on each tail direction, true tail minus the mean of the
    other tails."""
    cases = _index_cases()
    for label, (attention, writes, at_entity, directions, column) in cases.items():
        expected = reference_relation_index(attention, writes, at_entity, directions, column)
        got = float(index_fn(attention.clone(), writes.clone(), at_entity.clone(), directions.clone(), column))
        assert abs(got - expected) < 1e-4 * max(1.0, abs(expected)), (
            f"on {label} your index is {got:.4f}; expected {expected:.4f}. Only the head-entity positions count, "
            f"each weighted by its attention, and the other tails are averaged (the true tail left out)")
    return f"All {len(cases)} relation indices match the reference."


def _p_cases() -> dict[str, tuple[float, Tensor]]:
    generator = torch.Generator().manual_seed(1)
    null = torch.randn(99, generator=generator)
    return {
        "an observed value above every draw": (5.0, null),
        "an observed value in the middle of the draws": (float(null.median()), null),
        "an observed value equal to three draws (ties count as 'at least as large')": (1.0, torch.tensor(
            [1.0, 1.0, 1.0, 0.0, 0.5, 2.0, -1.0, 0.2, 0.3])),
        "an observed value below every draw": (-5.0, null[:19]),
    }


def check_permutation_p(p_fn: Callable[[float, Tensor], float]) -> str:
    """Check `p_fn(observed, null)` against ``(1 + #draws >= observed) / (N + 1)``."""
    cases = _p_cases()
    for label, (observed, null) in cases.items():
        expected = float(si.permutation_p(torch.tensor(observed), null))
        got = float(p_fn(observed, null.clone()))
        assert abs(got - expected) < 1e-6, (
            f"on {label} (N = {len(null)}) your p is {got:.4f}; expected {expected:.4f}: count the draws at least "
            f"as large as the observed value, add 1, divide by N + 1")
    return f"All {len(cases)} p-values match the reference."
