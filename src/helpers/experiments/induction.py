"""Induction heads: attention from a repeated token to the token after its earlier copy, in pretrained
models and in a two-layer toy trained from scratch (the phase change)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from helpers import capture, models, scores, tasks
from helpers.experiments import copying
from helpers.experiments.copying import Sizes, Study, copying_ablation, copying_gate, first_scored_query
from helpers.screens import Screen, screen as score_screen

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

THRESHOLD = 0.4  # pre-registered: at least this share of attention on the token after the earlier copy


def screen(model: TransformerBridge, *, prompts: int, half_len: int, seed: int, threshold: float = THRESHOLD) -> Screen:
    """Induction score of every head on repeated random tokens.

    The control scores the same query-key positions on random tokens with no repeat: a head that
    attends there for positional reasons scores high on both, an induction head only on the repeat.
    """
    first = first_scored_query(model)
    repeated = tasks.repeated_tokens(model, batch=prompts, half_len=half_len, seed=seed)
    control = tasks.random_tokens(model, batch=prompts, length=2 * half_len, seed=seed + 1)
    targets = scores.induction_targets(repeated.tokens, first_query=first)
    return score_screen("induction", capture.capture_patterns(model, repeated.tokens), targets,
                        capture.capture_patterns(model, control.tokens), targets, threshold=threshold)


def held_out_score(model: TransformerBridge, batch: tasks.TaskBatch):
    """The induction score on held-out text: attention on the token after each earlier occurrence of the
    query's token, on the English passages said twice of `copying.english_repeats`."""
    targets = scores.induction_targets(batch.tokens, first_query=first_scored_query(model))
    return scores.attention_on_targets(capture.capture_patterns(model, batch.tokens), targets)


def held_out(model: TransformerBridge, found, *, sizes: Sizes, seed: int, check: bool = True):
    """`copying.held_out` with the induction score: (`heldout.HeldOut`, held-out difference in differences)."""
    return copying.held_out(model, found, held_out_score, sizes=sizes, seed=seed, check=check)


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Gate, screen, copying ablation of the top heads and the held-out check, as the induction page runs them."""
    gate = copying_gate(model, sizes=sizes, seed=seed)
    found = screen(model, prompts=sizes.screen_prompts, half_len=sizes.screen_len // 2, seed=seed + 10)
    if not gate.passed:
        return Study(model=models.spec_of(model).name, gate=gate, screen=found, check=None)
    ablation = copying_ablation(model, found.top(sizes.top_k), sizes=sizes, seed=seed + 20)
    held, held_specific = held_out(model, found.top(sizes.top_k), sizes=sizes, seed=seed + 40)
    return Study(model=models.spec_of(model).name, gate=gate, screen=found, check=ablation.repeated,
                 specific=ablation.specific, held_out=held, held_out_specific=held_specific)


# --------------------------------------------------------------------------------------------------
# The induction toy model (helpers.toy), scored with the same pattern scores as the real models.


def toy_evaluator(probe):
    """`evaluate(model, step)` for `toy_train.train`: loss on the probe's second half and the best head scores.

    Args:
        probe: a `toy_train.RepeatedSequence` (distinct tokens repeated twice).

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
