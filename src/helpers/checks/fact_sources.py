"""Checkers for the subject-head and relation-head pages: one head's answer-DLA split by source, and the
pre-registered 70 % rule that classifies heads."""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from helpers.experiments import fact_sources


def _split_cases() -> dict[str, tuple[Tensor, Tensor, Tensor, Tensor, Tensor]]:
    cases = {}
    masks = torch.tensor([[0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1], [1, 1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        row = torch.softmax(2 * torch.randn(7, generator=generator), dim=0)
        cases[f"random head (seed {seed})"] = (row, torch.randn(7, 4, generator=generator),
                                               torch.randn(4, 6, generator=generator),
                                               torch.randn(6, generator=generator), masks)
    one_hot = torch.zeros(7)
    one_hot[3] = 1.0  # all attention on the last subject token
    row, values, w_o, direction, _ = cases["random head (seed 0)"]
    cases["a head that reads only the subject"] = (one_hot, values, w_o, direction, masks)
    return cases


def check_source_split(fn: Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]) -> str:
    """Check `fn(pattern_row, values, w_o, direction, masks)` -> ``[3]``: one head's push along `direction`,
    summed over the subject, relation and rest positions (rows of `masks`)."""
    cases = _split_cases()
    for name, (row, values, w_o, direction, masks) in cases.items():
        expected = fact_sources.one_head_parts(row, values, w_o, direction, masks)
        got = torch.as_tensor(fn(row.clone(), values.clone(), w_o.clone(), direction.clone(), masks.clone())).float()
        assert got.shape == (3,), f"on {name} your answer has shape {tuple(got.shape)}; expected (3,)"
        assert torch.allclose(got, expected, atol=1e-4), (
            f"on {name} you give (subject, relation, rest) = {[round(v, 3) for v in got.tolist()]}; expected "
            f"{[round(v, 3) for v in expected.tolist()]} (weight each v_j W_O . direction by A[END, j])")
        whole = (row @ values @ w_o @ direction).item()
        assert abs(got.sum().item() - whole) < 1e-4, f"on {name} your parts do not add up to the head's DLA {whole:.3f}"
    return f"All {len(cases)} heads split correctly, and the parts add up to each head's DLA."


def _rule_cases() -> dict[str, Float[Tensor, "layer head 3"]]:
    hand = torch.tensor([[[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.4, 0.4, 0.2], [0.1, 0.1, 0.0]],
                         [[0.5, -0.1, 0.1], [0.6, 0.3, -0.1], [0.3, 0.3, 0.3], [-1.0, 0.1, 0.0]]])
    cases = {"hand-made heads (subject, relation, mixed, tiny; ...)": hand}
    for seed in range(2):
        cases[f"random parts (seed {seed})"] = torch.randn(3, 5, 3, generator=torch.Generator().manual_seed(seed))
    return cases


def check_classify(fn: Callable[[Tensor], dict[str, Bool[Tensor, "layer head"]]]) -> str:
    """Check `fn(parts)` -> ``{"subject", "relation", "mixed"}`` masks under the page's rule (`fact_sources.Rule()`):
    total at least 0.25; more than 70 % from one source; mixed when both parts are positive and at least 25 %."""
    cases = _rule_cases()
    for name, parts in cases.items():
        expected = fact_sources.classify(parts)
        got = fn(parts.clone())
        for kind, mask in expected.items():
            assert kind in got, f"your answer has no {kind!r} mask; return subject, relation and mixed"
            mine = torch.as_tensor(got[kind]).bool()
            assert torch.equal(mine, mask), (
                f"on {name} your {kind} heads are {mine.nonzero().tolist()}; expected {mask.nonzero().tolist()} "
                "(check the minimum total and that shares are taken of the total, not of |parts|)")
    return f"All {len(cases)} sets of heads classified as the rule says."


def _partner_cases() -> dict[str, tuple[list[fact_sources.Fact], Tensor]]:
    table = [("city", "Louvre", "Paris"), ("city", "Eiffel Tower", "Paris"), ("city", "Colosseum", "Rome"),
             ("country", "Louvre", "France"), ("country", "Big Ben", "England"), ("capital", "Peru", "Lima")]
    ids = torch.tensor([10, 10, 11, 20, 21, 30])
    return {"a table with two landmarks in Paris and a lone relation": (table, ids),
            "the same table shuffled": ([table[i] for i in (5, 2, 0, 4, 1, 3)], ids[[5, 2, 0, 4, 1, 3]])}


def check_relation_partners(fn: Callable[[list, Tensor], Tensor]) -> str:
    """Check `fn(facts, answer_ids)` -> ``[fact]``: for each fact, the next fact of the same relation in table
    order (cycling), or -1 when there is none or its answer is the same token (`fact_sources.relation_partners`)."""
    cases = _partner_cases()
    for name, (facts, ids) in cases.items():
        expected = fact_sources.relation_partners(facts, ids)
        got = torch.as_tensor(fn(list(facts), ids.clone())).long()
        assert got.shape == expected.shape, f"on {name} your answer has shape {tuple(got.shape)}; expected one per fact"
        assert torch.equal(got, expected), (
            f"on {name} you pair {got.tolist()}; expected {expected.tolist()} (the next fact of the same relation, "
            "wrapping round; -1 where the partner has the same answer token or the relation has one fact)")
    return f"All {len(cases)} tables paired as the control needs."


def reference_set_direction(unembed: Float[Tensor, "d_model d_vocab"], candidates: dict[str, Tensor],
                            relation: str) -> Float[Tensor, "d_model"]:
    """Mean unembedding of the relation's answers minus the mean over the other relations' answers
    (tokens in both sets count as the relation's): what `fact_sources.set_directions` computes."""
    everything = torch.unique(torch.cat(list(candidates.values())))
    ids = candidates[relation]
    rest = everything[~torch.isin(everything, ids)]
    return unembed[:, ids].mean(-1) - unembed[:, rest].mean(-1)


def check_set_direction(fn: Callable[[Tensor, dict, str], Tensor]) -> str:
    """Check `fn(unembed, candidates, relation)` -> ``[d_model]``, the relation's answer-set direction."""
    generator = torch.Generator().manual_seed(0)
    unembed = torch.randn(8, 40, generator=generator)
    candidates = {"city": torch.tensor([1, 2, 3]), "country": torch.tensor([4, 5, 6, 7]),
                  "language": torch.tensor([7, 8, 9])}  # token 7 is both a country and a language
    for relation in candidates:
        expected = reference_set_direction(unembed, candidates, relation)
        got = torch.as_tensor(fn(unembed.clone(), {k: v.clone() for k, v in candidates.items()}, relation)).float()
        assert got.shape == expected.shape, f"for {relation!r} your direction has shape {tuple(got.shape)}; expected (8,)"
        assert torch.allclose(got, expected, atol=1e-5), (
            f"for {relation!r} your direction is off by {(got - expected).abs().max():.3f}; take the mean unembedding "
            "of the relation's answers minus the mean over every other relation's answers, each token once")
    return f"All {len(candidates)} answer-set directions correct."
