"""Screen every head with one pre-registered score, against the same score on control prompts.

A `Screen` holds each head's score on the family's prompts and on control prompts (where the behaviour
has nothing to find), the pre-registered threshold, and what uniform attention would score. The pass
rule is per head, stated in the page and applied here exactly as stated: a head passes when its score is
at least `threshold` and at least `ratio` times its *own* control score (a head that scores as well where
there is nothing to find is doing something else).
"""

from __future__ import annotations

from dataclasses import dataclass

from jaxtyping import Bool, Float
from torch import Tensor

from helpers import heads, scores, stats
from helpers.heads import Head


@dataclass(frozen=True)
class Screen:
    """One family score for every head, on the family's prompts and on control prompts.

    A head *passes* when its score is at least `threshold` and at least `ratio` times its own score on the
    control prompts (both fixed before looking). `null_cutoff`, the 95th percentile of every head's control
    score, is reported beside it as the scale of the control.
    """

    family: str
    scores: Float[Tensor, "layer head"]
    null: Float[Tensor, "layer head"]
    threshold: float
    baseline: float  # what uniform causal attention would score
    ratio: float = 2.0

    @property
    def null_cutoff(self) -> float:
        return stats.null_threshold(self.null, 0.95)

    @property
    def passing(self) -> list[Head]:
        """Heads that pass the rule, best first."""
        return heads.top(self.scores, where=(self.scores >= self.threshold) & (self.scores >= self.ratio * self.null))

    def top(self, k: int) -> list[Head]:
        return heads.top(self.scores, k)

    def summary(self) -> str:
        best = self.top(1)[0]
        return (f"{self.family}: {len(self.passing)} of {self.scores.numel()} heads score >= {self.threshold} and >= "
                f"{self.ratio:g}x their own control score; best {heads.label(best)} = {self.scores[best]:.2f} "
                f"(control {self.null[best]:.2f}; uniform attention: {self.baseline:.2f}; control's 95th percentile "
                f"over heads {self.null_cutoff:.2f})")


def screen(family: str, patterns: Float[Tensor, "layer batch head query key"],
           targets: Bool[Tensor, "batch query key"],
           control_patterns: Float[Tensor, "layer batch head query key"],
           control_targets: Bool[Tensor, "batch query key"], *, threshold: float, ratio: float = 2.0) -> Screen:
    """Score every head on the family's prompts and on control prompts (same rule, same scorer)."""
    return Screen(family=family, scores=scores.attention_on_targets(patterns, targets),
                  null=scores.attention_on_targets(control_patterns, control_targets), threshold=threshold,
                  baseline=scores.uniform_baseline(targets), ratio=ratio)
