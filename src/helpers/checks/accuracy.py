"""Checkers for the accuracy page's exercises: the answer margin (the true answer's logit minus the highest
logit of any other answer) and the cross-fitted direction (fitted outside the fold it steers)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from helpers import probes
from helpers.experiments import accuracy


def _cases() -> dict[str, tuple[Tensor, Tensor]]:
    """label -> (logits [..., item, answer], true index [item])."""
    generator = torch.Generator().manual_seed(0)
    hand = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]])
    return {"two items, three answers (right, then wrong by 1)": (hand, torch.tensor([0, 2])),
            "random logits, 5 items x 7 answers": (torch.randn(5, 7, generator=generator),
                                                   torch.randint(0, 7, (5,), generator=generator)),
            "a leading set axis: 3 sets x 4 items x 6 answers": (torch.randn(3, 4, 6, generator=generator),
                                                                 torch.randint(0, 6, (4,), generator=generator))}


def check_answer_margin(reader_fn: Callable[[Tensor, Tensor], object]) -> str:
    """``logit[true] - max(logit[other answers])`` per item, keeping the leading axes."""
    cases = _cases()
    for label, (logits, truth) in cases.items():
        expected = accuracy.answer_margin(logits, truth)
        got = torch.as_tensor(reader_fn(logits.clone(), truth.clone()), dtype=torch.float32)
        assert got.shape == expected.shape, (f"on {label} your margin has shape {tuple(got.shape)}; expected "
                                             f"{tuple(expected.shape)} (the logits' shape without the answer axis)")
        if torch.allclose(got, logits.gather(-1, truth.expand(*logits.shape[:-1])[..., None])[..., 0]
                          - logits.amax(-1)):
            raise AssertionError(f"on {label} you subtract the maximum over all answers, the true one included: "
                                 "the margin of a right answer is then 0, never above it")
        assert torch.allclose(got, expected, atol=1e-5), (f"on {label} you give {got.flatten()[:6].tolist()}...; "
                                                          f"expected {expected.flatten()[:6].tolist()}...")
    return f"All {len(cases)} cases match the reference."


def check_cross_fitted(reader_fn: Callable[[Tensor, Tensor, Tensor, int], object]) -> str:
    """The mass-mean shift (right minus wrong, ``[layer, head, d_head]``) fitted on the items *outside* `fold`,
    the direction the page adds to that fold's prompts."""
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(16, 2, 3, 4, generator=generator)
    labels = torch.tensor([1, 0] * 8)
    folds = torch.tensor([0, 0, 1, 1] * 4)
    for fold in (0, 1):
        fit = folds != fold
        expected = probes.mass_mean(features[fit], labels[fit]).shift
        got = torch.as_tensor(reader_fn(features.clone(), labels.clone(), folds.clone(), fold), dtype=torch.float32)
        assert got.shape == expected.shape, (f"for fold {fold} your direction has shape {tuple(got.shape)}; "
                                             f"expected {tuple(expected.shape)} ([layer, head, d_head])")
        inside = probes.mass_mean(features[~fit], labels[~fit]).shift
        if torch.allclose(got, inside, atol=1e-5):
            raise AssertionError(f"for fold {fold} you fit on the fold's own items: those are the items you will "
                                 "steer, so fit on the other fold")
        if torch.allclose(got, probes.mass_mean(features, labels).shift, atol=1e-5):
            raise AssertionError(f"for fold {fold} you fit on every item, the steered ones included")
        assert torch.allclose(got, expected, atol=1e-5), (f"for fold {fold} you give {got.flatten()[:6].tolist()}"
                                                          f"...; expected {expected.flatten()[:6].tolist()}...")
    return "Both folds match the reference."
