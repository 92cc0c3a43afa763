"""In-context copying on repeated random tokens: the task behind the previous-token and induction pages.

A random token sequence repeated twice can be predicted on its second copy only by looking back; the
control is the same prompt with a fresh second half. This module holds what both pages share: the
behaviour gate, the per-prompt metric, the copying ablation (with its specificity control: the same
ablation on the unrepeated prompts, and the difference in differences) and the `Study` record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from helpers import capture, controls, heads, interventions, scores, stats, tasks
from helpers.heads import Head
from helpers.screens import Screen

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def first_scored_query(model: TransformerBridge) -> int:
    """First query position a pattern score counts: skip position 0, and with a BOS token also the
    query right after it (whose previous token *is* the BOS, where many heads rest anyway)."""
    return 2 if model.cfg.default_prepend_bos else 1


def repeated_tokens_gate(model: TransformerBridge, batch: tasks.TaskBatch, *, seed: int = 0,
                         min_effect: float = 1.0) -> stats.GateResult:
    """Does the model copy in context? Loss on the second copy must fall far below the control's.

    The control (``batch.corrupted``) is the same prompt with a fresh random second half: same
    positions and context length, nothing to copy. Comparing with it, rather than with the first copy,
    removes the drop in loss that later positions get from longer context alone (about 1 nat for
    SmolLM2 on unrepeated random tokens). Paired per prompt; passes when p < 0.01 and the whole
    interval of (control - repeated) lies above `min_effect` nats.
    """
    if batch.corrupted is None:
        raise ValueError("the gate needs batch.corrupted (the unrepeated control); build the batch with "
                         "tasks.repeated_tokens")
    second_start = int(batch.positions["second_start"][0])
    losses = capture.loss_per_token(model, torch.cat([batch.tokens, batch.corrupted]))  # [2 * batch, pos - 1]
    repeated, control = losses[:, second_start:].mean(1).chunk(2)
    return stats.behaviour_gate(repeated, control, paired=True, higher_is_better=False, min_effect=min_effect,
                                seed=seed, name="in-context copying", metric_name="loss on the second half, repeated",
                                null_name="unrepeated")


def repeated_half_metric(batch: tasks.TaskBatch):
    """Metric for ablations: each prompt's mean loss on the second copy (higher = worse copying)."""
    first_start = int(batch.positions["first_start"][0])
    second_start = int(batch.positions["second_start"][0])

    def metric(logits: Tensor, tokens: Tensor) -> Tensor:
        return scores.repeated_half_losses(logits, tokens, first_start, second_start)[1]

    return metric


@dataclass(frozen=True)
class Sizes:
    """How many prompts and tokens each step uses (the notebooks' parameters cell sets these)."""

    gate_prompts: int = 50
    gate_half_len: int = 10
    screen_prompts: int = 10
    screen_len: int = 40
    ablation_prompts: int = 8
    ablation_half_len: int = 12
    top_k: int = 3
    n_random: int = 20


@dataclass(frozen=True)
class Study:
    """One family measured on one model: behaviour gate, screen and causal check."""

    model: str
    gate: stats.GateResult
    screen: Screen
    check: controls.CausalCheck | None  # None when the gate failed: no head hunting without the behaviour
    specific: controls.CausalCheck | None = None  # the difference in differences (`CopyingAblation.specific`)

    def row(self) -> dict[str, object]:
        """One row of a findings table."""
        passing = self.screen.passing
        found = heads.labels(passing[:5], self.screen.scores, signed=False)
        return {
            "model": self.model,
            "behaviour gate": "pass" if self.gate.passed else "fail",
            "heads passing (score)": found + (f" +{len(passing) - 5} more" if len(passing) > 5 else ""),
            "control 95th pct": round(self.screen.null_cutoff, 2),
            "top-k ablation effect": str(self.check.top) if self.check else "not run",
            "random-k effect (from all heads)": self.check.draws_summary() if self.check else "not run",
            "copying-specific effect (p)": (f"{self.specific.top} (p = {self.specific.p_value:.3f})"
                                            if self.specific else "not run"),
        }


def copying_gate(model: TransformerBridge, *, sizes: Sizes, seed: int) -> stats.GateResult:
    batch = tasks.repeated_tokens(model, batch=sizes.gate_prompts, half_len=sizes.gate_half_len, seed=seed)
    return repeated_tokens_gate(model, batch, seed=seed)


@dataclass(frozen=True)
class CopyingAblation:
    """One mean ablation of `found` and of each drawn set, measured on two tasks.

    Attributes:
        repeated: change of the loss on the second copy of repeated tokens.
        unrepeated: the same ablations on the control prompts (a fresh second half: nothing to copy).
        specific: the difference in differences, (repeated - unrepeated) change per prompt; what the heads
            do for copying beyond what they do for any next-token prediction, ranked among the same draws.
    """

    repeated: controls.CausalCheck
    unrepeated: controls.CausalCheck
    specific: controls.CausalCheck

    def summary(self) -> str:
        return (f"repeated: {self.repeated.summary()}\nunrepeated: {self.unrepeated.summary()}\n"
                f"difference in differences: {self.specific.summary()}")


def copying_ablation(model: TransformerBridge, found: Sequence[Head], *, sizes: Sizes, seed: int) -> CopyingAblation:
    """Mean-ablate `found`, and sets of as many heads drawn from all heads, and measure the loss on the second
    half of repeated tokens and of the unrepeated control (one batched call per task).

    Means come from unrepeated random tokens, so an ablated head outputs what it writes on text
    where there is nothing to copy.
    """
    found = [tuple(head) for head in found]
    batch = tasks.repeated_tokens(model, batch=sizes.ablation_prompts, half_len=sizes.ablation_half_len,
                                  seed=seed)
    reference = tasks.random_tokens(model, batch=sizes.ablation_prompts, length=2 * sizes.ablation_half_len,
                                    seed=seed + 1)
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(found), sizes.n_random, seed=seed)
    means = capture.mean_head_outputs(model, reference.tokens)
    metric = repeated_half_metric(batch)
    values = {name: interventions.ablated_metric(model, tokens, [[], found, *draws], metric, mode="mean", means=means)
              for name, tokens in (("repeated", batch.tokens), ("unrepeated", batch.corrupted))}  # [set, prompt]
    null = f"{len(found)} heads drawn from all heads"

    def check(rows: Tensor, metric_name: str) -> controls.CausalCheck:
        return controls.check_from_values(rows, found, metric_name=metric_name, mode="mean-ablated", null=null, seed=seed)

    return CopyingAblation(
        repeated=check(values["repeated"], "loss on the second copy"),
        unrepeated=check(values["unrepeated"], "loss on the unrepeated second half"),
        specific=check(values["repeated"] - values["unrepeated"], "loss, repeated minus unrepeated second half"))
