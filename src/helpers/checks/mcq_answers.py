"""Checkers for the multiple-choice pages that read the answer position (content gatherer, correct
letter, correct heads)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers.experiments import mcq

# Four prompts, the correct option balanced over A-D (as on the pages).
BALANCED = torch.tensor([0, 1, 2, 3])


def _run(label_attention: Float[Tensor, "layer head item option"] | None = None,
         content_attention: Float[Tensor, "layer head item option"] | None = None,
         dla: Float[Tensor, "layer head item option"] | None = None,
         correct: Int[Tensor, "item"] = BALANCED) -> mcq.MCQRun:
    """A hand-made `mcq.MCQRun`: the readings given, zeros for the rest (no model)."""
    given = next(t for t in (label_attention, content_attention, dla) if t is not None)
    zeros = torch.zeros_like(given)
    return mcq.MCQRun(logits=torch.zeros(given.shape[2], given.shape[3]), correct=correct,
                      label_attention=zeros if label_attention is None else label_attention,
                      content_attention=zeros if content_attention is None else content_attention,
                      recent_attention=zeros.sum(-1), dla=zeros if dla is None else dla)


def _random_attention(seed: int, shape: tuple[int, ...]) -> Float[Tensor, "..."]:
    """Attention on the options that sums to less than 1 per prompt (END looks elsewhere too)."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.rand(*shape, generator=generator) ** 3
    return weights / (weights.sum(-1, keepdim=True) + torch.rand(*shape[:-1], 1, generator=generator))


def _where(got: Tensor, expected: Tensor, names: str, atol: float = 1e-5) -> str:
    """The first few indices at which two tensors differ, with both values there."""
    wrong = ((got - expected).abs() > atol) | (got.isnan() != expected.isnan())
    index = wrong.nonzero().tolist()[:3]
    return "; ".join(f"{names} {tuple(i) if len(i) > 1 else i[0]}: got {got[tuple(i)]:.4f}, expected {expected[tuple(i)]:.4f}"
                     for i in index)


def _assert_matches(got: Tensor, expected: Tensor, *, label: str, what: str, plural: bool, axes: str,
                    shape_hint: str) -> None:
    """Shape first, then values; on a difference, name the first few cells with both values there."""
    has, differ = ("have", "differ") if plural else ("has", "differs")
    assert got.shape == expected.shape, (f"on {label} your {what} {has} shape {tuple(got.shape)}; "
                                         f"expected {tuple(expected.shape)} ({shape_hint})")
    assert torch.allclose(got, expected, atol=1e-5), (
        f"on {label} your {what} {differ} at {_where(got, expected, axes)}")


def _one_head_cases() -> dict[str, tuple[Tensor, Tensor]]:
    """One head's END attention over the four options, ``[item, option]``, and the correct option."""
    eye = torch.eye(4)
    return {
        "a head that always reads the correct option": (eye[BALANCED], BALANCED),
        "a head that always reads option A": (eye[[0, 0, 0, 0]], BALANCED),
        "a head that reads the options only weakly (5 %, all on the correct one)": (0.05 * eye[BALANCED], BALANCED),
        "a head whose attention on the options changes from prompt to prompt":
            (torch.tensor([[0.8, 0.0, 0.0, 0.0], [0.0, 0.02, 0.18, 0.0]]), torch.tensor([0, 1])),
        "a prompt on which the head reads no option at all (it counts as 0)":
            (torch.tensor([[0.0, 0.0, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0]]), torch.tensor([2, 2])),
        "random attention (seed 0)": (_random_attention(0, (6, 4)), torch.tensor([3, 1, 0, 2, 2, 1])),
    }


# --------------------------------------------------------------------------------------------------
# Content gatherer page


def check_content_share(reader_fn: Callable[[Float[Tensor, "item option"], Int[Tensor, "item"]], float]) -> str:
    """Check one head's content share: the mean over prompts of the correct option's share of END's attention
    on the four option contents (a prompt with no content attention counts as 0), against
    `mcq.signature(...).content_share`."""
    cases = _one_head_cases()
    for label, (attention, correct) in cases.items():
        expected = float(mcq.signature(_run(content_attention=attention[None, None], correct=correct)).content_share[0, 0])
        got = float(reader_fn(attention.clone(), correct.clone()))
        assert abs(got - expected) < 1e-5, f"on {label} your share is {got:.4f}; expected {expected:.4f}"
    return f"All {len(cases)} content-share cases match the reference."


def _gatherer_cases() -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """``(content_mass, content_share, content_share_null)``, each ``[layer, head]``."""
    chance = torch.full((2, 4), 0.25)
    mass = torch.full((2, 4), 0.3)
    cases = {}
    share = chance.clone()
    share[1, 2] = 0.9
    cases["one clear gatherer among heads at chance"] = (mass, share, chance + 0.01 * torch.arange(8).reshape(2, 4))
    weak = mass.clone()
    weak[1, 2], weak[0, 1], share2 = 0.05, 0.1, share.clone()
    share2[0, 1] = 0.8
    cases["a head that barely reads the contents (5 %) and one exactly at the 10 % floor"] = (weak, share2, chance)
    share3 = chance.clone()
    share3[0, 0], share3[1, 1] = 0.6, 0.61
    cases["a share of exactly 0.6 (the rule asks for more)"] = (mass, share3, chance)
    null = chance.clone()
    null[0, :] = torch.tensor([0.5, 0.6, 0.7, 0.8])
    share4 = chance.clone()
    share4[1, 0], share4[1, 3] = 0.65, 0.9
    cases["decoy shares as high as real ones (the 95th percentile is 0.765)"] = (mass, share4, null)
    generator = torch.Generator().manual_seed(1)
    cases["random heads (seed 1)"] = (torch.rand(3, 4, generator=generator) * 0.3,
                                      torch.rand(3, 4, generator=generator), torch.rand(3, 4, generator=generator) * 0.8)
    # float64, so that 0.6 and 0.1 compare alike in a tensor and as Python floats
    return {label: tuple(t.double() for t in values) for label, values in cases.items()}


def check_gatherer_rule(reader_fn: Callable[[Tensor, Tensor, Tensor], Bool[Tensor, "layer head"]]) -> str:
    """Check the Content Gatherer rule, given every head's content mass, content share and decoy share
    (``[layer, head]``): at least `mcq.FLOOR` of END's attention on the contents, a share above
    `mcq.CONCENTRATED`, and above the 95th percentile of all heads' decoy shares. The reference is
    `mcq.Signature.classes["content_gatherer"]`."""
    cases = _gatherer_cases()
    for label, (mass, share, null) in cases.items():
        zeros = torch.zeros_like(share)
        signature = mcq.Signature(label_mass=zeros, entropy=zeros, favourite=zeros.long(), favourite_share=zeros,
                                  correct_share=zeros, correct_share_null=zeros, content_mass=mass,
                                  content_share=share, content_share_null=null, recent_mass=zeros, dla=zeros,
                                  dla_null=zeros, n_options=4)
        expected = signature.classes["content_gatherer"]
        got = torch.as_tensor(reader_fn(mass.clone(), share.clone(), null.clone())).bool()
        assert got.shape == expected.shape, (f"on {label} your mask has shape {tuple(got.shape)}; "
                                             f"expected {tuple(expected.shape)} (one entry per head)")
        assert torch.equal(got, expected), (f"on {label} your rule marks heads {got.nonzero().tolist()}; "
                                            f"expected {expected.nonzero().tolist()} (as [layer, head])")
    return f"All {len(cases)} Content Gatherer rule cases match the reference."


# --------------------------------------------------------------------------------------------------
# Correct letter page


def check_correct_share(reader_fn: Callable[[Float[Tensor, "layer head item option"], Int[Tensor, "item"]],
                                            Float[Tensor, "layer head"]]) -> str:
    """Check every head's correct-letter share: for each ``[layer, head]``, the mean over prompts of the
    correct label's share of END's attention on the four labels (a prompt with no label attention counts as
    0), against `mcq.signature(...).correct_share`."""
    one_head = _one_head_cases()
    four = [attention for attention, correct in one_head.values() if len(correct) == 4 and correct.equal(BALANCED)]
    cases = {"four heads (correct reader, always A, weak correct reader)": (torch.stack(four)[None], BALANCED)}
    for label in ("a head whose attention on the options changes from prompt to prompt",
                  "a prompt on which the head reads no option at all (it counts as 0)"):
        attention, correct = one_head[label]
        cases[label.replace("option", "label")] = (attention[None, None], correct)
    generator = torch.Generator().manual_seed(2)
    cases["random attention, 2 layers of 3 heads (seed 2)"] = (_random_attention(2, (2, 3, 5, 4)),
                                                               torch.randint(0, 4, (5,), generator=generator))
    for label, (attention, correct) in cases.items():
        expected = mcq.signature(_run(label_attention=attention, correct=correct)).correct_share
        got = torch.as_tensor(reader_fn(attention.clone(), correct.clone())).float()
        _assert_matches(got, expected, label=label, what="shares", plural=True, axes="(layer, head)",
                        shape_hint="[layer, head]")
    return f"All {len(cases)} correct-share cases match the reference."


def check_binomial_p(reader_fn: Callable[[int, int, float], float]) -> str:
    """Check the gate's exact one-sided binomial p-value: the probability of at least `successes` hits in
    `trials` at rate `chance`, against `mcq.binomial_p_greater`."""
    cases = ((3, 4, 0.25), (16, 60, 0.25), (28, 60, 0.5), (10, 10, 0.5), (0, 10, 0.25), (23, 60, 0.25))
    for successes, trials, chance in cases:
        expected = mcq.binomial_p_greater(successes, trials, chance)
        got = float(reader_fn(successes, trials, chance))
        assert abs(got - expected) <= 1e-9 + 1e-6 * expected, (
            f"for {successes} of {trials} correct at chance {chance} your p is {got:.6g}; expected {expected:.6g} "
            f"(the probability of at least {successes} hits)")
    return f"All {len(cases)} binomial cases match the reference."


# --------------------------------------------------------------------------------------------------
# Correct heads page


def check_layer_projection(reader_fn: Callable[[Float[Tensor, "layer head item option"], Int[Tensor, "item"]],
                                               Float[Tensor, "layer item"]]) -> str:
    """Check each layer's projection on the answer symbols from the heads' DLA ``[layer, head, item, option]``:
    per layer and prompt, the layer's heads together, correct option minus the mean of the others, against
    `mcq.layer_projection`."""
    eye = torch.eye(4)
    one = torch.zeros(2, 2, 4, 4)
    one[1, 0] = eye[BALANCED]
    two = one.clone()
    two[1, 1] = 2 * eye[BALANCED] + 1.0  # raises every option by 1 and the correct one by 2 more
    against = torch.zeros(1, 3, 4, 4)
    against[0, 2] = -eye[BALANCED]
    generator = torch.Generator().manual_seed(3)
    cases = {
        "one head in layer 1 that raises the correct option by 1": (one, BALANCED),
        "two heads in layer 1 that both favour the correct option": (two, BALANCED),
        "a head that lowers the correct option": (against, BALANCED),
        "two options (A/B)": (torch.tensor([[[[0.5, -0.5], [0.2, 0.4], [1.0, 1.0]]]]), torch.tensor([0, 1, 1])),
        "random DLA, 3 layers of 2 heads (seed 3)": (torch.randn(3, 2, 5, 4, generator=generator),
                                                     torch.randint(0, 4, (5,), generator=generator)),
    }
    for label, (dla, correct) in cases.items():
        expected = mcq.layer_projection(_run(dla=dla, correct=correct))
        got = torch.as_tensor(reader_fn(dla.clone(), correct.clone())).float()
        _assert_matches(got, expected, label=label, what="projection", plural=False, axes="(layer, item)",
                        shape_hint="[layer, item]")
    return f"All {len(cases)} layer-projection cases match the reference."


def check_recovered(reader_fn: Callable[[Float[Tensor, "layer item"], Float[Tensor, "item"], Float[Tensor, "item"]],
                                        Float[Tensor, "layer"]]) -> str:
    """Check the share of the format preference that patching each layer restores, from the patched
    preference ``[layer, item]`` and the unpatched target and source preferences ``[item]``: 0 where
    patching changes nothing, 1 where it gives the source run's preference, averaged over prompts before
    dividing. The reference is `mcq.FormatPatching(...).recovered`."""
    target, source = torch.tensor([-2.0, -1.0, 0.0]), torch.tensor([2.0, 1.0, 3.0])
    generator = torch.Generator().manual_seed(4)
    cases = {
        "patching that restores nothing, half, and everything": (torch.stack([target, (target + source) / 2, source]),
                                                                 target, source),
        "prompts with very different gaps (average before dividing)": (
            torch.tensor([[0.1, 10.0], [1.0, 0.0]]), torch.tensor([0.0, 0.0]), torch.tensor([1.0, 10.0])),
        "patching that overshoots, and one that pushes the wrong way": (
            torch.stack([source + 1.0, target - 1.0]), target, source),
        "random preferences, 4 layers (seed 4)": (torch.randn(4, 6, generator=generator),
                                                  torch.randn(6, generator=generator) - 2,
                                                  torch.randn(6, generator=generator) + 2),
    }
    for label, (preference, clean_target, clean_source) in cases.items():
        reference = mcq.FormatPatching(layers=tuple(range(preference.shape[0])), preference=preference,
                                       clean_target=clean_target, clean_source=clean_source)
        expected = reference.recovered
        got = torch.as_tensor(reader_fn(preference.clone(), clean_target.clone(), clean_source.clone())).float()
        _assert_matches(got, expected, label=label, what="shares", plural=True, axes="layer",
                        shape_hint="one per layer")
    return f"All {len(cases)} format-switch cases match the reference."
