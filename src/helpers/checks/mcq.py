"""Checkers for the multiple-choice pages that read the options and labels (constant, single letter,
negative, amplification heads).

Every checker builds small synthetic inputs (hand-made attention rows over the labels, logits, DLA grids,
attention patterns), runs the learner's function on a copy of each, and compares it with the book's own
helper (`helpers.experiments.mcq`, `helpers.experiments.yesno`), so the exercise and the page cannot
drift apart.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers.checks.patterns import random_causal_patterns
from helpers.experiments import mcq, yesno

# --------------------------------------------------------------------------------------------------
# Synthetic inputs


def _one_head_run(label_attention: Float[Tensor, "item option"], correct: Int[Tensor, "item"]) -> mcq.MCQRun:
    """An `MCQRun` of a model with one layer of one head, whose END attention on the labels is given."""
    items, options = label_attention.shape
    return mcq.MCQRun(logits=torch.zeros(items, options), correct=correct,
                      label_attention=label_attention[None, None].clone(),
                      content_attention=torch.zeros(1, 1, items, options),
                      recent_attention=torch.zeros(1, 1, items), dla=torch.zeros(1, 1, items, options))


def _rows(shares: list[float], items: int) -> Float[Tensor, "item option"]:
    return torch.tensor(shares).repeat(items, 1)


def _random_rows(seed: int, items: int, options: int, mass: float) -> Float[Tensor, "item option"]:
    """Random label attention rows, each summing to `mass` (the rest of END's attention lies elsewhere)."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(items, options, generator=generator) * 1.5).softmax(-1) * mass


def _balanced(items: int, options: int) -> Int[Tensor, "item"]:
    return torch.arange(items) % options


def _shares(values: Tensor) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values.tolist()) + "]"


# --------------------------------------------------------------------------------------------------
# Constant heads


def _entropy_cases() -> dict[str, Float[Tensor, "item option"]]:
    return {
        "a head that reads the four labels evenly with 40 % of its attention": _rows([0.1] * 4, 3),
        "the shares (0.4, 0.2, 0.2, 0.2)": _rows([0.4, 0.2, 0.2, 0.2], 3),
        "the shares (0.7, 0.1, 0.1, 0.1)": _rows([0.7, 0.1, 0.1, 0.1], 3),
        "a head that looks at one label only": _rows([0.0, 0.5, 0.0, 0.0], 3),
        "a head even on two prompts and on one label on two others":
            torch.stack([_rows([0.25] * 4, 2), _rows([0.6, 0.0, 0.0, 0.0], 2)]).flatten(0, 1),
        "a two-option question read evenly": _rows([0.3, 0.3], 4),
        "random rows (seed 0)": _random_rows(0, 6, 4, 0.5),
    }


def check_label_entropy(reader_fn: Callable[[Float[Tensor, "item option"]], float]) -> str:
    """Check one head's Constant score: the entropy of its END attention over the n labels, renormalised to
    the attention it puts on the labels, as a fraction of log n, averaged over prompts (`mcq.signature`)."""
    cases = _entropy_cases()
    for label, attention in cases.items():
        correct = _balanced(*attention.shape)
        expected = float(mcq.signature(_one_head_run(attention, correct)).entropy[0, 0])
        got = float(reader_fn(attention.clone()))
        assert abs(got - expected) < 1e-4, (
            f"on {label} (label attention per prompt {_shares(attention[0])}, ...) your entropy is {got:.4f}; "
            f"expected {expected:.4f}")
    return f"All {len(cases)} label-entropy cases match the reference."


def _constant_cases() -> dict[str, tuple[Float[Tensor, "item option"], Int[Tensor, "item"]]]:
    leans_on_correct = torch.full((8, 4), 0.05)
    leans_on_correct[torch.arange(8), _balanced(8, 4)] = 0.1  # 0.4 of its label attention on the answer
    return {
        "an even reader of the labels": (_rows([0.1] * 4, 8), _balanced(8, 4)),
        "an even reader with only 8 % of its attention on the labels": (_rows([0.02] * 4, 8), _balanced(8, 4)),
        "a near-even head that leans towards the correct label": (leans_on_correct, _balanced(8, 4)),
        "a near-even head that leans towards label A, whichever is correct": (_rows([0.4, 0.2, 0.2, 0.2], 8),
                                                                              _balanced(8, 4)),
        "a head that looks mostly at label A": (_rows([0.7, 0.1, 0.1, 0.1], 8), _balanced(8, 4)),
        "a two-option question read evenly": (_rows([0.3, 0.3], 6), _balanced(6, 2)),
    }


def check_constant_rule(rule_fn: Callable[[Float[Tensor, "item option"], Int[Tensor, "item"]], bool]) -> str:
    """Check the Constant class rule for one head (`mcq.Signature.classes["constant"]`): at least `mcq.FLOOR`
    of END's attention on the labels, an entropy over them of at least `mcq.UNIFORM` of log n, and a mean
    share on the correct label within `mcq.INDEPENDENT` of 1/n."""
    cases = _constant_cases()
    for label, (attention, correct) in cases.items():
        sig = mcq.signature(_one_head_run(attention, correct))
        expected = bool(sig.classes["constant"][0, 0])
        got = bool(rule_fn(attention.clone(), correct.clone()))
        assert got == expected, (
            f"on {label} your rule says {got}; expected {expected} (label mass {float(sig.label_mass[0, 0]):.2f}, "
            f"entropy {float(sig.entropy[0, 0]):.2f} of log n, mean share on the correct label "
            f"{float(sig.correct_share[0, 0]):.2f} with {attention.shape[1]} options)")
    return f"All {len(cases)} Constant-rule cases match the reference."


# --------------------------------------------------------------------------------------------------
# Single letter heads


def _favourite_cases() -> dict[str, tuple[Float[Tensor, "item option"], Int[Tensor, "item"]]]:
    follows = torch.full((8, 4), 0.1)
    uneven = torch.tensor([0, 0, 0, 1, 2, 3, 1, 2])  # the correct label, more often A than any other
    follows[torch.arange(8), uneven] = 0.7
    return {
        "a head that looks at A whatever the answer": (_rows([0.7, 0.1, 0.1, 0.1], 8), _balanced(8, 4)),
        "a head that follows the correct label": (follows, uneven),
        "a head with 5 % of its attention on the labels, mostly on C":
            (_rows([0.005, 0.005, 0.03, 0.01], 8), _balanced(8, 4)),
        "a two-option question": (_rows([0.2, 0.5], 6), _balanced(6, 2)),
        "random rows (seed 1)": (_random_rows(1, 12, 4, 0.6), _balanced(12, 4)),
        "random rows (seed 2)": (_random_rows(2, 12, 4, 0.3), torch.tensor([3, 1, 2, 0] * 3)),
    }


def check_favourite_share(reader_fn: Callable[[Float[Tensor, "item option"], Int[Tensor, "item"]],
                                              tuple[int, float]]) -> str:
    """Check one head's Single Letter score (`mcq.signature`): its favourite label (the highest mean share
    of its label attention over prompts) and that label's mean share on the prompts where it is wrong."""
    cases = _favourite_cases()
    for label, (attention, correct) in cases.items():
        sig = mcq.signature(_one_head_run(attention, correct))
        expected = int(sig.favourite[0, 0]), float(sig.favourite_share[0, 0])
        favourite, share = reader_fn(attention.clone(), correct.clone())
        got = int(favourite), float(share)
        assert got[0] == expected[0] and abs(got[1] - expected[1]) < 1e-4, (
            f"on {label} your answer is label {got[0]} with share {got[1]:.4f}; expected label {expected[0]} "
            f"with share {expected[1]:.4f} (correct labels {correct.tolist()})")
    return f"All {len(cases)} favourite-letter cases match the reference."


def check_binomial_p(p_fn: Callable[[int, int, float], float]) -> str:
    """Check the gate's exact one-sided binomial p (`mcq.binomial_p_greater`): the chance of at least
    `successes` right answers in `trials` questions when each is right with probability `chance`."""
    cases = [(16, 60, 0.25), (28, 60, 0.5), (3, 5, 0.25), (0, 10, 0.25), (10, 10, 0.5), (1, 1, 0.25)]
    for successes, trials, chance in cases:
        expected = mcq.binomial_p_greater(successes, trials, chance)
        got = float(p_fn(successes, trials, chance))
        assert abs(got - expected) <= 1e-9 + 1e-6 * expected, (
            f"for {successes} right of {trials} at chance {chance} your p is {got:.6g}; expected {expected:.6g}")
    return f"All {len(cases)} binomial cases match the reference."


# --------------------------------------------------------------------------------------------------
# Negative heads


def check_negative_attention_score(
        score_fn: Callable[[Float[Tensor, "query key"], int, int, int], float]) -> str:
    """Check one head's NAS on one prompt against `yesno.negative_attention_score`: the sum over queries
    from `first_query` on of (A[q, no] + A[q, yes]) * log((A[q, no] + 1e-6) / (A[q, yes] + 1e-6))."""
    seq = 9
    only_on = lambda key: torch.eye(seq)[[0, 1, 2, 3, 4] + [key] * (seq - 5)]  # noqa: E731 - queries 5.. on one key
    cases = {
        "random pattern (seed 0), Yes at 1, No at 3, from query 5": (random_causal_patterns(0, seq, seq), 1, 3, 5),
        "random pattern (seed 1), Yes at 1, No at 3, from query 5": (random_causal_patterns(1, seq, seq), 1, 3, 5),
        "random pattern (seed 2), No at 1, Yes at 3, from query 6": (random_causal_patterns(2, seq, seq), 3, 1, 6),
        'a head that looks only at "No"': (only_on(3), 1, 3, 5),
        'a head that looks only at "Yes"': (only_on(1), 1, 3, 5),
        "a head that looks at neither candidate": (only_on(4), 1, 3, 5),
    }
    for label, (pattern, yes_key, no_key, first_query) in cases.items():
        expected = yesno.negative_attention_score(pattern[None, None, None], torch.tensor([yes_key]),
                                                  torch.tensor([no_key]), torch.tensor([first_query])).item()
        got = float(score_fn(pattern.clone(), yes_key, no_key, first_query))
        assert abs(got - expected) < 1e-4 * max(1.0, abs(expected)), (
            f"on {label} your NAS is {got:.4f}; expected {expected:.4f}")
    return f"All {len(cases)} NAS cases match the reference."


def check_mirror_pull(pull_fn: Callable[[Float[Tensor, "item"]], Float[Tensor, "pair"]]) -> str:
    """Check the per-pair value the mirror gate tests (`yesno.mirror_gate`): items come as a true question
    then its false twin, each with bias = logit(No) - logit(Yes); a pair's value is the pull towards "No"
    on the true question minus the mirror error, the pull towards "Yes" on the false one."""
    generator = torch.Generator().manual_seed(3)
    knows = torch.tensor([-3.0, 3.0] * 4)
    cases = {
        'a model that leans 1 logit towards "No" on every question': torch.ones(8),
        'a model that leans 0.5 logits towards "Yes" on every question': torch.full((8,), -0.5),
        "a model that knows every answer": knows,
        "a model that knows the answers but leans towards No": knows + 0.5,
        "a model that guesses (random logits, seed 3)": torch.randn(10, generator=generator),
    }
    for label, bias in cases.items():
        truth = torch.tensor([True, False] * (len(bias) // 2))
        metric, null = bias[truth], -bias[~truth]  # what mirror_gate hands to the paired gate
        expected = metric - null
        got = torch.as_tensor(pull_fn(bias.clone()), dtype=torch.float32).flatten()
        assert got.shape == expected.shape, (
            f"on {label} your answer has {got.numel()} values; expected one per mirror pair, {expected.numel()}")
        assert torch.allclose(got, expected, atol=1e-5), (
            f"on {label} (bias {_shares(bias)}) your values are {_shares(got)}; expected {_shares(expected)}")
        gate = yesno.mirror_gate(bias, truth, seed=0)
        assert abs(got.mean().item() - gate.difference.mean) < 1e-5, (
            f"on {label} your mean {got.mean().item():.4f} differs from the gate's {gate.difference.mean:.4f}")
    return f"All {len(cases)} mirror-pair cases match the reference."


# --------------------------------------------------------------------------------------------------
# Amplification heads


def check_correct_vs_others(diff_fn: Callable[[Float[Tensor, "item option"], Int[Tensor, "item"]],
                                              Float[Tensor, "item"]]) -> str:
    """Check the MCQ logit difference (`mcq.correct_vs_others`): per prompt, the value of the correct option
    minus the mean of the other options' values (on logits or on one head's DLA)."""
    generator = torch.Generator().manual_seed(4)
    cases = {
        "one prompt, the correct option 2 logits up": (torch.tensor([[2.0, 0.0, 0.0, 0.0]]), torch.tensor([0])),
        "the same prompt with option B correct": (torch.tensor([[2.0, 0.0, 0.0, 0.0]]), torch.tensor([1])),
        "options with different values": (torch.tensor([[1.0, 4.0, 2.0, 0.0], [1.0, 4.0, 2.0, 0.0]]),
                                          torch.tensor([2, 3])),
        "two options": (torch.tensor([[0.5, -0.5], [3.0, 1.0], [0.0, 0.0]]), torch.tensor([0, 0, 1])),
        "random values (seed 4)": (torch.randn(6, 4, generator=generator), torch.tensor([0, 1, 2, 3, 2, 1])),
    }
    for label, (values, correct) in cases.items():
        expected = mcq.correct_vs_others(values, correct)
        got = torch.as_tensor(diff_fn(values.clone(), correct.clone()), dtype=torch.float32).flatten()
        assert got.shape == expected.shape, (
            f"on {label} your answer has {got.numel()} values; expected one per prompt, {expected.numel()}")
        assert torch.allclose(got, expected, atol=1e-5), (
            f"on {label} (values {values.tolist()}, correct {correct.tolist()}) your differences are "
            f"{_shares(got)}; expected {_shares(expected)}")
    return f"All {len(cases)} correct-vs-others cases match the reference."


def _signature(dla: Tensor, dla_null: Tensor, recent_mass: Tensor) -> mcq.Signature:
    zeros = torch.zeros_like(dla)
    return mcq.Signature(label_mass=zeros, entropy=zeros, favourite=zeros.long(), favourite_share=zeros,
                         correct_share=zeros, correct_share_null=zeros, content_mass=zeros, content_share=zeros,
                         content_share_null=zeros, recent_mass=recent_mass, dla=dla, dla_null=dla_null,
                         n_options=4)


def _amplification_cases() -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(5)
    small = torch.rand(3, 4, generator=generator) * 0.04 - 0.02  # decoy DLA near zero
    recent = torch.full((3, 4), 0.2)
    one = torch.zeros(3, 4)
    one[2, 1], one[2, 3], recent_one = 0.5, 0.5, recent.clone()
    recent_one[2, 1] = 0.8  # L2H1 looks at the last tokens; L2H3 does not
    loud_null = small.clone()
    loud_null[0, :] = torch.tensor([0.9, 0.8, 0.85, 0.7])  # four heads boost whatever letter they are asked about
    boosts = torch.zeros(3, 4)
    boosts[1, 2], boosts[2, 0] = 0.4, 1.2
    recent_all = torch.full((3, 4), 0.7)
    return {
        "a model with one head that amplifies from the last tokens": (one, small, recent_one),
        "a model whose decoy letters also get large DLA": (boosts, loud_null, recent_all),
        "a model with small DLA everywhere": (torch.full((3, 4), 0.05), small, recent_all),
        "random DLA (seed 6)": (torch.randn(3, 4, generator=torch.Generator().manual_seed(6)) * 0.3,
                                torch.randn(3, 4, generator=torch.Generator().manual_seed(7)) * 0.1,
                                torch.rand(3, 4, generator=torch.Generator().manual_seed(8))),
    }


def check_amplification_rule(rule_fn: Callable[[Float[Tensor, "layer head"], Float[Tensor, "layer head"],
                                                Float[Tensor, "layer head"]], Bool[Tensor, "layer head"]]) -> str:
    """Check the Amplification class rule (`mcq.Signature.classes["amplification"]`) on a grid of heads:
    a DLA for the correct letter above both 0.1 and the 95th percentile of every head's decoy DLA, and at
    least `mcq.RECENT_SHARE` of END's attention on the last tokens."""
    cases = _amplification_cases()
    for label, (dla, dla_null, recent) in cases.items():
        expected = _signature(dla, dla_null, recent).classes["amplification"]
        got = torch.as_tensor(rule_fn(dla.clone(), dla_null.clone(), recent.clone())).bool()
        assert got.shape == expected.shape, (
            f"on {label} your mask has shape {tuple(got.shape)}; expected {tuple(expected.shape)} ([layer, head])")
        assert torch.equal(got, expected), (
            f"on {label} your rule picks heads {got.nonzero().tolist()}; expected {expected.nonzero().tolist()} "
            f"(as [layer, head]; DLA {_shares(dla.flatten())}, recent-token mass {_shares(recent.flatten())})")
    return f"All {len(cases)} Amplification-rule cases match the reference."
