"""Checkers for the recall pages (memory and context heads on knowledge conflicts, movers, letter
movers)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import SimpleNamespace

import torch
from jaxtyping import Int
from torch import Tensor

from helpers import attribution, controls, heads, interventions, ov, stats
from helpers.checks.patterns import random_causal_patterns
from helpers.experiments import conflict, mover


def _random(seed: int, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _rounded(values: Tensor) -> list:
    return [round(float(v), 4) for v in torch.as_tensor(values).flatten()]


# --------------------------------------------------------------------------------------------------
# Memory and context heads: the knowledge conflict


def check_answer_kinds(reader_fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> str:
    """Check the three-way reading of the model's top-1 token on conflict prompts against
    `conflict.answer_kinds`: 0 for the memory capital, 1 for the context capital, 2 for anything else (a
    context that agrees with memory names one token for both, which reads as memory)."""
    cases = {
        "a batch with every kind": (torch.tensor([5, 9, 1, 8, 9, 3]), torch.tensor([5, 6, 7, 8, 2, 4]),
                                    torch.tensor([9, 9, 9, 9, 9, 9])),
        "a batch with no capital on top": (torch.tensor([11, 12, 13]), torch.tensor([1, 2, 3]),
                                           torch.tensor([4, 5, 6])),
        "an agreeing context (memory and context capital are one token)": (
            torch.tensor([7, 8, 9]), torch.tensor([7, 7, 9]), torch.tensor([7, 7, 9])),
    }
    for label, (top1, memory_ids, context_ids) in cases.items():
        expected = conflict.answer_kinds(top1, memory_ids, context_ids)
        got = torch.as_tensor(reader_fn(top1.clone(), memory_ids.clone(), context_ids.clone())).long().flatten()
        assert got.tolist() == expected.tolist(), (
            f"on {label} (top-1 {top1.tolist()}, memory {memory_ids.tolist()}, context {context_ids.tolist()}) "
            f"your kinds are {got.tolist()}; expected {expected.tolist()} (0 memory, 1 context, 2 other)")
    return f"All {len(cases)} answer-kind cases match the reference."


class _Gain(torch.nn.Module):
    """A stand-in final norm whose scale is already divided out: it multiplies by its gain."""

    def __init__(self, gain: Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(gain.clone(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight


def _direct_effect(head_out: Tensor, final_scale: float, final_gain: Tensor, unembed: Tensor, memory_id: int,
                   context_id: int) -> float:
    """The reference, through the book's own `attribution.final_read` on a stand-in model."""
    d_model, vocab = unembed.shape
    model = SimpleNamespace(cfg=SimpleNamespace(normalization_type="RMS", d_model=d_model, d_vocab=vocab),
                            W_U=unembed, ln_final=_Gain(final_gain))
    read = attribution.final_read(model, attribution.answer_directions(model, torch.tensor([memory_id]),
                                                                       torch.tensor([context_id])))[0]
    return float((head_out / final_scale) @ read)


def check_head_dla(reader_fn: Callable[[Tensor, float, Tensor, Tensor, int, int], float]) -> str:
    """Check one head's direct logit attribution on ``logit[memory] - logit[context]`` (the conflict pages'
    score): the head's output at the last position, divided by the final norm's frozen scale, times the norm's
    gain, dotted with ``W_U[:, memory] - W_U[:, context]``."""
    d_model, vocab = 6, 10
    unembed = _random(0, d_model, vocab)
    gain = 0.5 + _random(1, d_model).abs()
    cases = {
        "a head with a random output (scale 2.5)": (_random(2, d_model), 2.5, 3, 7),
        "the same head's output under a small scale (0.4)": (_random(2, d_model), 0.4, 3, 7),
        "a head that writes along the answer direction": (unembed[:, 1] - unembed[:, 4], 1.7, 1, 4),
        "the answers swapped (context 3, memory 7)": (_random(2, d_model), 2.5, 7, 3),
        "an agreeing context (both answers are token 5)": (_random(3, d_model), 1.3, 5, 5),
    }
    for label, (head_out, scale, memory_id, context_id) in cases.items():
        expected = _direct_effect(head_out, scale, gain, unembed, memory_id, context_id)
        got = float(reader_fn(head_out.clone(), scale, gain.clone(), unembed.clone(), memory_id, context_id))
        assert abs(got - expected) < 1e-4 * max(1.0, abs(expected)), (
            f"on {label} your direct effect is {got:+.4f}; expected {expected:+.4f}")
    return f"All {len(cases)} direct-effect cases match the reference."


def _labels(picked: Sequence[tuple[int, int]], scores: Tensor) -> str:
    """``L0H2 (-1.61), ...``; a head outside the table is named without a score."""
    inside = all(0 <= layer < scores.shape[0] and 0 <= head < scores.shape[1] for layer, head in picked)
    return heads.labels(picked, scores if inside else None)


def check_context_heads(reader_fn: Callable[[Tensor, int], Sequence[tuple[int, int]]]) -> str:
    """Check the pick of the `k` context heads from a ``[layer, head]`` table of conflict DLA scores (on
    ``logit[memory] - logit[context]``) against `conflict.HeadScreen.context_heads`: the most negative first,
    as ``(layer, head)`` pairs."""
    cases = {
        "3 layers x 4 heads, k = 3": (_random(4, 3, 4), 3),
        "2 layers x 5 heads, k = 4": (_random(5, 2, 5), 4),
        "5 layers x 2 heads, k = 1": (_random(6, 5, 2), 1),
        "a table where every score is positive, k = 2": (_random(7, 3, 3).abs() + 0.1, 2),
    }
    for label, (scores, k) in cases.items():
        screen = conflict.HeadScreen(conflict=scores, memory_only=scores, agreeing=scores, per_prompt=scores[..., None])
        expected = screen.context_heads(k)
        got = [(int(layer), int(head)) for layer, head in reader_fn(scores.clone(), k)]
        assert got == expected, (
            f"on {label} you picked {_labels(got, scores)}; expected {_labels(expected, scores)} (most negative first)")
    return f"All {len(cases)} head-picking cases match the reference."


def check_mean_ablation(reader_fn: Callable[[Tensor, Tensor, Sequence[int]], Tensor]) -> str:
    """Check a mean-ablation of some heads of one layer against `interventions.ablation_hook`: ``z`` is
    ``[batch, pos, head, d_head]``, `means` each head's mean output per position ``[pos, head, d_head]``;
    the ablated heads take their means at every position, the others keep their own outputs."""
    batch, positions, n_heads, d_head = 2, 4, 3, 2
    means = _random(9, positions, n_heads, d_head)
    cases = {
        "head 1 ablated": [1],
        "heads 0 and 2 ablated": [0, 2],
        "no head ablated (the clean run)": [],
        "every head ablated": [0, 1, 2],
    }
    for seed, (label, ablated) in enumerate(cases.items()):
        z = _random(10 + seed, batch, positions, n_heads, d_head)
        keep = torch.ones(n_heads)
        keep[ablated] = 0.0
        expected = interventions.ablation_hook(keep[None], means)(z.clone())
        got = torch.as_tensor(reader_fn(z.clone(), means.clone(), list(ablated))).float()
        assert got.shape == expected.shape, (
            f"on {label} your output has shape {tuple(got.shape)}; expected {tuple(expected.shape)} (z's shape)")
        wrong = (~torch.isclose(got, expected, atol=1e-5)).any(-1).nonzero().tolist()
        if wrong:
            b, p, h = wrong[0]
            raise AssertionError(
                f"on {label} your output differs at (batch, pos, head) = {wrong[:4]}; e.g. at {(b, p, h)} you "
                f"have {_rounded(got[b, p, h])}, expected {_rounded(expected[b, p, h])} "
                f"(z there {_rounded(z[b, p, h])}, mean there {_rounded(means[p, h])})")
    return f"All {len(cases)} mean-ablation cases match the reference."


# --------------------------------------------------------------------------------------------------
# Mover heads: factual recall


def check_answer_lead(reader_fn: Callable[[Tensor, Tensor], Tensor]) -> str:
    """Check the answer's lead against `mover.answer_lead`: per row of candidate logits, the answer's logit
    minus the mean logit of the *other* candidates."""
    cases = {
        "three prompts, three candidates": (torch.tensor([[3.0, 1.0, 2.0], [0.0, 4.0, -2.0], [1.0, 1.0, 1.0]]),
                                            torch.tensor([0, 2, 1])),
        "two candidates (the lead is a plain difference)": (torch.tensor([[2.0, -1.0], [0.5, 3.0]]),
                                                            torch.tensor([1, 1])),
        "random logits, five candidates": (_random(20, 4, 5) * 3, torch.tensor([4, 0, 2, 4])),
    }
    for label, (logits, column) in cases.items():
        expected = mover.answer_lead(logits, column)
        got = torch.as_tensor(reader_fn(logits.clone(), column.clone())).float().flatten()
        assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-5), (
            f"on {label} (answer columns {column.tolist()}) your leads are {_rounded(got)}; "
            f"expected {_rounded(expected)}")
    return f"All {len(cases)} answer-lead cases match the reference."


def check_mover_score(reader_fn: Callable[[Tensor, tuple[int, int], Tensor], float]) -> str:
    """Check one head's mover score against `mover.subject_attention` and `mover.mover_score`: per prompt,
    the attention from the last position to the subject's tokens (``subject = (start, stop)``, stop
    excluded) times the head's DLA for the answer; the mean over prompts."""
    seq_len = 7
    attentive = random_causal_patterns(31, 4, seq_len, seq_len, scale=2.0)
    attentive[:, -1] = torch.tensor([[0.0, 0.1, 0.8, 0.0, 0.0, 0.0, 0.1], [0.0, 0.1, 0.1, 0.0, 0.0, 0.0, 0.8],
                                     [0.0, 0.2, 0.6, 0.0, 0.0, 0.1, 0.1], [0.0, 0.0, 0.1, 0.0, 0.0, 0.1, 0.8]])
    cases = {
        "a one-token subject at position 2": (random_causal_patterns(30, 5, seq_len, seq_len, scale=2.0), (2, 3), _random(32, 5)),
        "a two-token subject at positions 3-4": (random_causal_patterns(33, 5, seq_len, seq_len, scale=2.0), (3, 5), _random(34, 5) + 1),
        "a head that writes the answer only when it reads the subject": (attentive, (2, 3),
                                                                          torch.tensor([3.0, 0.0, 2.5, 0.1])),
    }
    for label, (patterns, subject, dla) in cases.items():
        attention = patterns[:, -1][None, :, None, :]  # [layer, batch, head, key] at the last position
        expected = mover.mover_score(mover.subject_attention(attention, subject), dla[None, None])[0, 0].item()
        got = float(reader_fn(patterns.clone(), subject, dla.clone()))
        assert abs(got - expected) < 1e-5, (
            f"on {label} (subject {subject}, DLA {_rounded(dla)}) your score is {got:.4f}; expected {expected:.4f}")
    return f"All {len(cases)} mover-score cases match the reference."


# --------------------------------------------------------------------------------------------------
# Letter movers: acronyms


def _ov_weights(seed: int) -> ov.OVWeights:
    """A small RMS-normed model with grouped-query attention: 2 layers, 4 query heads sharing 2 value heads."""
    layers, n_heads, kv_heads, d_model, d_head, vocab = 2, 4, 2, 8, 3, 12
    return ov.OVWeights(
        embed=_random(seed, vocab, d_model) * 2, ln_gain=0.5 + _random(seed + 1, layers, d_model).abs(),
        w_v=_random(seed + 2, layers, kv_heads, d_model, d_head), w_o=_random(seed + 3, layers, n_heads, d_head, d_model),
        post_gain=None, final_gain=0.5 + _random(seed + 4, d_model).abs(), unembed=_random(seed + 5, d_model, vocab),
        normalization="RMS", eps=1e-6)


def check_ov_logits(reader_fn: Callable[[ov.OVWeights, tuple[int, int], int, Int[Tensor, "letter"]], Tensor]) -> str:
    """Check one head's OV logits for one noun against `ov.ov_logits`, on a small random model with grouped-query
    attention: the noun's embedding, RMS-normalised, times the head's layer's pre-attention gain, through ``W_V``
    of the head's key/value group and the head's ``W_O``, times the final norm's gain, read by ``W_U`` of the
    letters."""
    letters = torch.tensor([0, 3, 5, 8, 11])
    cases = {
        "head L0H0, noun 2": ((0, 0), 2),
        "head L1H1 (its value head is 0), noun 6": ((1, 1), 6),
        "head L1H3 (its value head is 1), noun 9": ((1, 3), 9),
        "head L0H2, noun 4": ((0, 2), 4),
    }
    for label, (head, noun) in cases.items():
        expected = ov.ov_logits(_ov_weights(40), head, [noun], letters)[0]
        got = torch.as_tensor(reader_fn(_ov_weights(40), head, noun, letters.clone())).float().flatten()
        assert got.shape == expected.shape, (
            f"on {label} you returned {got.numel()} logits; expected one per letter ({len(letters)})")
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4), (
            f"on {label} your logits for letters {letters.tolist()} are {_rounded(got)}; expected {_rounded(expected)}"
            f" (top letter: yours {letters[got.argmax()].item()}, expected {letters[expected.argmax()].item()})")
    return f"All {len(cases)} OV cases match the reference."


def check_draw_p_value(reader_fn: Callable[[float, Tensor, bool], float]) -> str:
    """Check the random-heads p-value against `controls.CausalCheck.p_value`: ``(1 + draws at least as strong
    as the observed effect) / (draws + 1)``, where "at least as strong" means at least as large, or at least as
    low when the effect is a drop (`larger_is_stronger` False); ties count as at least as strong."""
    cases = {
        "no draw as strong (20 draws)": (0.9, torch.linspace(-0.1, 0.1, 20), True),
        "two draws tie with the observed effect": (0.5, torch.tensor([0.5, 0.1, 0.5, 0.2, -0.3]), True),
        "a drop, where lower is stronger": (-7.5, torch.tensor([-0.2, -8.0, 0.1, -7.5, -1.0, 0.3]), False),
        "every draw stronger": (0.1, torch.tensor([0.2, 0.3, 0.4]), True),
    }
    for label, (observed, draws, larger) in cases.items():
        top = stats.Estimate(mean=observed, lower=observed, upper=observed, n=1)
        reference = controls.CausalCheck(metric_name="effect", heads=((0, 0),), mode="patched", null="drawn sets",
                                         clean=top, top=top, draws=draws, larger_is_stronger=larger)
        expected = reference.p_value
        got = float(reader_fn(observed, draws.clone(), larger))
        assert abs(got - expected) < 1e-9, (
            f"on {label} (observed {observed:+.2f}, draws {_rounded(draws)}, larger is stronger: {larger}) your "
            f"p-value is {got:.4f}; expected {expected:.4f} ({reference.as_strong} of {len(draws)} draws as strong)")
    return f"All {len(cases)} p-value cases match the reference."
