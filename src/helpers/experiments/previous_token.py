"""Previous-token heads: attention from each token to the one before it, and what copying loses without them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from helpers import capture, models, scores, tasks
from helpers.experiments import copying
from helpers.experiments.copying import Sizes, Study, copying_ablation, copying_gate, first_scored_query
from helpers.screens import Screen

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

THRESHOLD = 0.4  # pre-registered: at least this share of attention on the previous token


def screen(model: TransformerBridge, *, prompts: int, length: int, seed: int, threshold: float = THRESHOLD) -> Screen:
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


def held_out_score(model: TransformerBridge, batch: tasks.TaskBatch) -> Tensor:
    """The previous-token score on held-out text: each head's attention on q - 1, on the unrepeated English
    passages of `copying.english_repeats` (``batch.corrupted``: two different passages, nothing repeated)."""
    tokens = batch.corrupted if batch.corrupted is not None else batch.tokens
    targets = scores.offset_targets(*tokens.shape, 1, first_query=first_scored_query(model))
    return scores.attention_on_targets(capture.capture_patterns(model, tokens), targets)


def held_out(model: TransformerBridge, found, *, sizes: Sizes, seed: int, check: bool = True):
    """`copying.held_out` with the previous-token score: (`heldout.HeldOut`, held-out difference in differences)."""
    return copying.held_out(model, found, held_out_score, sizes=sizes, seed=seed, check=check)


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Gate, screen, copying ablation of the top heads and the held-out check, as the previous-token page runs them."""
    gate = copying_gate(model, sizes=sizes, seed=seed)
    found = screen(model, prompts=sizes.screen_prompts, length=sizes.screen_len, seed=seed + 10)
    if not gate.passed:
        return Study(model=models.spec_of(model).name, gate=gate, screen=found, check=None)
    ablation = copying_ablation(model, found.top(sizes.top_k), sizes=sizes, seed=seed + 20)
    held, held_specific = held_out(model, found.top(sizes.top_k), sizes=sizes, seed=seed + 40)
    return Study(model=models.spec_of(model).name, gate=gate, screen=found, check=ablation.repeated,
                 specific=ablation.specific, held_out=held, held_out_specific=held_specific)
