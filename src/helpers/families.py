"""The experiment steps each family notebook runs, so every model is measured by the same code.

A notebook walks through these steps one cell at a time on its default model, then calls the same
functions on the comparison model for its findings table. Each step returns a small frozen
dataclass with a ``summary()`` line; the notebook's assert cells read their fields.

- `ablation_check`: the causal step shared by all families: ablate the top-k heads and, as the
  control, many sets of k random heads; compare the metric's change with intervals.
- `repeated_tokens_gate`: the in-context copying behaviour that induction (and the previous-token
  heads feeding it) exist for.
- `screen`: one pre-registered score for every head, with its null from control prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from helpers import capture, interventions, models, scores, stats, tasks


if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

Head = tuple[int, int]


def first_scored_query(model: TransformerBridge) -> int:
    """First query position a pattern score counts: skip position 0, and with a BOS token also the
    query right after it (whose previous token *is* the BOS, where many heads rest anyway)."""
    return 2 if model.cfg.default_prepend_bos else 1


# --------------------------------------------------------------------------------------------------
# Behaviour gate


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


# --------------------------------------------------------------------------------------------------
# Screen


@dataclass(frozen=True)
class Screen:
    """One family score for every head, on the family's prompts and on control prompts.

    A head *passes* when its score is at least `threshold` (fixed before looking) and above
    `null_cutoff`, the 95th percentile of every head's score on the control prompts.
    """

    family: str
    scores: Float[Tensor, "layer head"]
    null: Float[Tensor, "layer head"]
    threshold: float
    baseline: float  # what uniform causal attention would score

    @property
    def null_cutoff(self) -> float:
        return stats.null_threshold(self.null, 0.95)

    @property
    def passing(self) -> list[Head]:
        """Heads that pass both rules, best first."""
        cutoff = self.null_cutoff
        ranked = scores.top_heads(self.scores, self.scores.numel())
        return [head for head in ranked
                if self.scores[head].item() >= self.threshold and self.scores[head].item() > cutoff]

    def top(self, k: int) -> list[Head]:
        return scores.top_heads(self.scores, k)

    def summary(self) -> str:
        best = self.top(1)[0]
        return (f"{self.family}: {len(self.passing)} of {self.scores.numel()} heads score >= {self.threshold} "
                f"and above the control's 95th percentile ({self.null_cutoff:.2f}); best "
                f"L{best[0]}H{best[1]} = {self.scores[best]:.2f} (uniform attention: {self.baseline:.2f})")


def screen(family: str, patterns: Float[Tensor, "layer batch head query key"],
           targets: Bool[Tensor, "batch query key"],
           control_patterns: Float[Tensor, "layer batch head query key"],
           control_targets: Bool[Tensor, "batch query key"], *, threshold: float) -> Screen:
    """Score every head on the family's prompts and on control prompts (same rule, same scorer)."""
    return Screen(family=family, scores=scores.attention_on_targets(patterns, targets),
                  null=scores.attention_on_targets(control_patterns, control_targets), threshold=threshold,
                  baseline=scores.uniform_baseline(targets))


# --------------------------------------------------------------------------------------------------
# Causal check


@dataclass(frozen=True)
class AblationCheck:
    """Change of a per-prompt metric when the top-k heads, or k random heads, are ablated.

    Attributes:
        clean: the metric on the intact model (interval over prompts).
        top: the change (ablated - clean) with the top heads ablated, interval over prompts.
        random: the change with k random heads ablated: mean and interval over random draws.
        random_draws: each draw's mean change, ``[draw]``.
        p_value: share of random draws whose change is at least the top heads' ((count + 1) / (n + 1)).
    """

    metric_name: str
    heads: tuple[Head, ...]
    mode: str
    clean: stats.Estimate
    top: stats.Estimate
    random: stats.Estimate
    random_draws: Float[Tensor, "draw"]
    p_value: float

    @property
    def ratio(self) -> float:
        """How many times larger the top heads' effect is than the random heads' average effect."""
        return self.top.mean / self.random.mean if self.random.mean > 0 else float("inf")

    def summary(self) -> str:
        names = ", ".join(f"L{layer}H{head}" for layer, head in self.heads)
        return (f"{self.mode}-ablating {names}: {self.metric_name} changes by {self.top}; "
                f"{len(self.heads)} random heads: {self.random} over {len(self.random_draws)} draws; "
                f"p = {self.p_value:.3f} that random heads do as much")


def ablation_check(model: TransformerBridge, tokens: Tensor, heads: Sequence[Head], metric, *,
                   metric_name: str, n_random: int = 20, seed: int = 0, mode: str = "mean",
                   means: Tensor | None = None, max_rows: int | None = None) -> AblationCheck:
    """Ablate `heads` together, and `n_random` random sets of the same size, in batched passes.

    Random sets never include the top heads, so the control asks "does any k heads do this?" rather
    than re-measuring the same heads.
    """
    heads = [tuple(head) for head in heads]
    if not heads:
        raise ValueError("heads is empty: pass the (layer, head) pairs to ablate, e.g. screen.top(3)")
    repeated = sorted({head for head in heads if heads.count(head) > 1})
    if repeated:
        raise ValueError(f"heads lists {', '.join(f'L{l}H{h}' for l, h in repeated)} more than once: the top "
                         f"set would ablate fewer heads than the {len(heads)} in each random set")
    if mode == "mean" and means is None:
        means = capture.mean_head_outputs(model, tokens)
    draws = interventions.random_head_sets(model.cfg.n_layers, model.cfg.n_heads, len(heads), n_random,
                                           seed=seed, exclude=heads)
    values = interventions.ablated_metric(model, tokens, [[]] + [heads] + draws, metric, mode=mode, means=means,
                                          max_rows=max_rows)  # [set, prompt]
    return check_from_values(values, heads, metric_name=metric_name, mode=mode, seed=seed)


def check_from_values(values: Float[Tensor, "set prompt"], heads: Sequence[Head], *, metric_name: str, mode: str,
                      seed: int = 0, larger_is_stronger: bool = True) -> AblationCheck:
    """An `AblationCheck` from a metric measured with nothing changed (row 0), the top heads changed
    (row 1) and random head sets of the same size changed (rows 2...), e.g. by patching instead of ablation.

    `larger_is_stronger=False` when the expected effect is a *drop* (patching the IOI name movers lowers
    the logit difference): the p-value then counts random draws that drop at least as far.
    """
    if values.ndim != 2 or values.shape[0] < 3:
        raise ValueError(f"values must be [set, prompt] with rows clean, top, random...; got {tuple(values.shape)}")
    clean, top, random = values[0], values[1] - values[0], values[2:] - values[0]
    random_draws = random.mean(dim=1)
    sign = 1.0 if larger_is_stronger else -1.0
    exceed = (sign * random_draws >= sign * top.mean()).sum().item()
    return AblationCheck(
        metric_name=metric_name, heads=tuple(tuple(h) for h in heads), mode=mode,
        clean=stats.bootstrap_ci(clean, seed=seed), top=stats.bootstrap_ci(top, seed=seed),
        random=stats.bootstrap_ci(random_draws, seed=seed), random_draws=random_draws,
        p_value=(exceed + 1) / (len(random_draws) + 1),
    )


# --------------------------------------------------------------------------------------------------
# Whole studies: the steps above in the order a notebook runs them, for the comparison model.


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
    check: AblationCheck | None  # None when the gate failed: no head hunting without the behaviour

    def row(self) -> dict[str, object]:
        """One row of a findings table."""
        passing = self.screen.passing
        heads = ", ".join(f"L{l}H{h} ({self.screen.scores[l, h]:.2f})" for l, h in passing[:5]) or "none"
        return {
            "model": self.model,
            "behaviour gate": "pass" if self.gate.passed else "fail",
            "heads passing (score)": heads + (f" +{len(passing) - 5} more" if len(passing) > 5 else ""),
            "control 95th pct": round(self.screen.null_cutoff, 2),
            "top-k ablation effect": str(self.check.top) if self.check else "not run",
            "random-k effect": str(self.check.random) if self.check else "not run",
        }


def previous_token_screen(model: TransformerBridge, *, prompts: int, length: int, seed: int,
                          threshold: float = 0.4) -> Screen:
    """Previous-token score of every head, the lower of its scores on random tokens and on real text.

    The control is the same score one step further back (key q - 2): a head that spreads attention
    over the last few tokens scores similarly on both, a previous-token head only on the first.
    """
    first = first_scored_query(model)
    random_batch = tasks.random_tokens(model, batch=prompts, length=length, seed=seed)
    text_batch = tasks.natural_text(model, batch=prompts, length=length, seed=seed + 1)
    patterns = [capture.capture_patterns(model, b.tokens) for b in (random_batch, text_batch)]
    batch, seq_len = random_batch.tokens.shape

    def lower_score(offset: int) -> Tensor:
        targets = scores.offset_targets(batch, seq_len, offset, first_query=first)
        return torch.minimum(*(scores.attention_on_targets(p, targets) for p in patterns))

    targets = scores.offset_targets(batch, seq_len, 1, first_query=first)
    return Screen(family="previous-token", scores=lower_score(1), null=lower_score(2), threshold=threshold,
                  baseline=scores.uniform_baseline(targets))


def induction_screen(model: TransformerBridge, *, prompts: int, half_len: int, seed: int,
                     threshold: float = 0.4) -> Screen:
    """Induction score of every head on repeated random tokens.

    The control scores the same query-key positions on random tokens with no repeat: a head that
    attends there for positional reasons scores high on both, an induction head only on the repeat.
    """
    first = first_scored_query(model)
    repeated = tasks.repeated_tokens(model, batch=prompts, half_len=half_len, seed=seed)
    control = tasks.random_tokens(model, batch=prompts, length=2 * half_len, seed=seed + 1)
    targets = scores.induction_targets(repeated.tokens, first_query=first)
    return screen("induction", capture.capture_patterns(model, repeated.tokens), targets,
                  capture.capture_patterns(model, control.tokens), targets, threshold=threshold)


def copying_ablation(model: TransformerBridge, heads: Sequence[Head], *, sizes: Sizes, seed: int) -> AblationCheck:
    """Mean-ablate `heads` (vs random heads) and measure the loss on the second copy of repeated tokens.

    Means come from unrepeated random tokens, so an ablated head outputs what it writes on text
    where there is nothing to copy.
    """
    batch = tasks.repeated_tokens(model, batch=sizes.ablation_prompts, half_len=sizes.ablation_half_len,
                                  seed=seed)
    reference = tasks.random_tokens(model, batch=sizes.ablation_prompts, length=2 * sizes.ablation_half_len,
                                    seed=seed + 1)
    return ablation_check(model, batch.tokens, heads, repeated_half_metric(batch),
                          metric_name="loss on the second copy", n_random=sizes.n_random, seed=seed,
                          mode="mean", means=capture.mean_head_outputs(model, reference.tokens))


def copying_gate(model: TransformerBridge, *, sizes: Sizes, seed: int) -> stats.GateResult:
    batch = tasks.repeated_tokens(model, batch=sizes.gate_prompts, half_len=sizes.gate_half_len, seed=seed)
    return repeated_tokens_gate(model, batch, seed=seed)


def previous_token_study(model: TransformerBridge, name: str, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    gate = copying_gate(model, sizes=sizes, seed=seed)
    found = previous_token_screen(model, prompts=sizes.screen_prompts, length=sizes.screen_len, seed=seed + 10)
    check = copying_ablation(model, found.top(sizes.top_k), sizes=sizes, seed=seed + 20) if gate.passed else None
    return Study(model=name, gate=gate, screen=found, check=check)


def induction_study(model: TransformerBridge, name: str, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    gate = copying_gate(model, sizes=sizes, seed=seed)
    found = induction_screen(model, prompts=sizes.screen_prompts, half_len=sizes.screen_len // 2, seed=seed + 10)
    check = copying_ablation(model, found.top(sizes.top_k), sizes=sizes, seed=seed + 20) if gate.passed else None
    return Study(model=name, gate=gate, screen=found, check=check)


def published_overlap(found: Sequence[Head], published: Sequence[Head]) -> dict[str, list[Head]]:
    """Which published heads were found, missed, and which found heads are new (GPT-2 small pages)."""
    found_set, published_set = set(map(tuple, found)), set(map(tuple, published))
    return {"matched": sorted(found_set & published_set), "missed": sorted(published_set - found_set),
            "new": sorted(found_set - published_set)}


# --------------------------------------------------------------------------------------------------
# The induction toy model (helpers.toy), scored with the same pattern scores as the real models.


def toy_induction_evaluator(probe):
    """`evaluate(model, step)` for `toy.train`: loss on the probe's second half and the best head scores.

    Args:
        probe: a `toy.RepeatedSequence` (distinct tokens repeated twice).

    Returns a dict with ``second_half_loss``, ``first_half_loss``, ``induction`` (best layer-1 head),
    ``previous_token`` (best layer-0 head) and the per-head grids ``induction_grid`` /
    ``previous_token_grid`` (kept for the final heatmap).
    """
    batch, seq_len = probe.tokens.shape
    second_half, first_half = probe.second_half[:, :-1], probe.first_half[:, :-1]  # [b, p] predicts p + 1
    induction_targets = scores.induction_targets(probe.tokens)
    previous_targets = scores.previous_token_targets(batch, seq_len)

    def evaluate(model, step: int) -> dict:
        logits, patterns = model(probe.tokens, return_patterns=True)
        losses = scores.next_token_losses(logits, probe.tokens)
        induction = scores.attention_on_targets(patterns, induction_targets)
        previous = scores.attention_on_targets(patterns, previous_targets)
        return {
            "second_half_loss": losses[second_half].mean().item(),
            "first_half_loss": losses[first_half].mean().item(),
            "induction": induction[-1].max().item(),
            "previous_token": previous[0].max().item(),
            "induction_grid": induction,
            "previous_token_grid": previous,
        }

    return evaluate


def phase_change_step(steps, losses, *, fraction: float = 0.5) -> int:
    """First evaluation step at which the loss has fallen by `fraction` of its total drop."""
    if len(steps) != len(losses) or len(losses) == 0:
        raise ValueError(f"need one loss per step and at least one of each; got {len(steps)} steps and "
                         f"{len(losses)} losses")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1]; got {fraction}")
    start, end = losses[0], min(losses)
    level = start - fraction * (start - end)
    return next(step for step, loss in zip(steps, losses) if loss <= level)


def run_study(name: str, study, *, sizes: Sizes, seed: int) -> Study:
    """Load model `name` and run `study` (e.g. `induction_study`) on it.

    How a family page measures its comparison model with exactly the steps it showed on the default one.
    """
    return study(models.load_model(name), name, sizes=sizes, seed=seed)  # nothing keeps the model afterwards


def findings_table(*studies: Study):
    """The findings table of a family page: one row per model (a pandas DataFrame indexed by model)."""
    import pandas as pd

    return pd.DataFrame([study.row() for study in studies]).set_index("model")


def published_comparison(model: TransformerBridge, family: str, found: Sequence[Head]) -> str:
    """One line comparing the heads found with the heads published for this model, if there are any.

    Only GPT-2 small carries published heads in the registry (e.g. in Colab); for the offline models
    the line says the comparison is against the pre-registered rule instead.
    """
    spec = models.spec_of(model)
    published = spec.published_heads.get(family)
    if not published:
        return f"no published {family.replace('_', '-')} heads for {spec.name}; the comparison above is against the pre-registered rule"
    overlap = published_overlap(found, published)
    label = lambda heads: ", ".join(f"L{layer}H{head}" for layer, head in heads) or "none"  # noqa: E731
    return (f"published {family.replace('_', '-')} heads of {spec.name}: {label(published)}; found {label(overlap['matched'])}, "
            f"missed {label(overlap['missed'])}; found but not published: {label(overlap['new'])}")
