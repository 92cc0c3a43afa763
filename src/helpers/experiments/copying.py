"""In-context copying on repeated random tokens: the task behind the previous-token and induction pages.

A random token sequence repeated twice can be predicted on its second copy only by looking back; the
control is the same prompt with a fresh second half. This module holds what both pages share: the
behaviour gate, the per-prompt metric, the copying ablation (with its specificity control: the same
ablation on the unrepeated prompts, and the difference in differences), the held-out family (short English
sentences from a word list written for this book, said twice: `english_repeats`) and the `Study` record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from helpers import capture, controls, heads, heldout, interventions, scores, stats, tasks
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
    heldout_prompts: int = 4  # held-out family (`english_repeats`): passages said twice
    heldout_sentences: int = 2  # sentences of 7 tokens per passage
    heldout_draws: int = 20  # fresh draws from all heads for the held-out causal check


@dataclass(frozen=True)
class Study:
    """One family measured on one model: behaviour gate, screen and causal check."""

    model: str
    gate: stats.GateResult
    screen: Screen
    check: controls.CausalCheck | None  # None when the gate failed: no head hunting without the behaviour
    specific: controls.CausalCheck | None = None  # the difference in differences (`CopyingAblation.specific`)
    held_out: heldout.HeldOut | None = None  # the screen and the copying ablation on `english_repeats`
    held_out_specific: controls.CausalCheck | None = None  # the held-out difference in differences

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
            **(self.held_out.row() if self.held_out else {"held-out format": "not run"}),
            **({"held-out copying-specific effect (p)": f"{self.held_out_specific.top} "
                                                        f"(p = {self.held_out_specific.p_value:.3f})"}
               if self.held_out_specific else {}),
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


def second_copy_losses(model: TransformerBridge, tokens: Tensor, head_sets: Sequence[Sequence[Head]], *,
                       means: Tensor, second_start: int, max_rows: int | None = None) -> Tensor:
    """``[set, prompt]`` mean loss on the second copy with each head set mean-ablated (``[]`` = clean).

    The same numbers as `interventions.ablated_metric` with `repeated_half_metric`, but only the positions
    that predict the second copy are unembedded: with Gemma's 262k vocabulary the unembedding of every
    position costs more than the rest of the model.
    """
    seq_len = tokens.shape[1]
    if seq_len - 1 - second_start < 1:
        raise ValueError(f"second_start {second_start} leaves no token to predict in a sequence of {seq_len}")

    def loss(logits: Tensor, rows: Tensor) -> Tensor:  # logits [rows, span, vocab] predict rows[:, second_start + 1:]
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), rows[:, second_start + 1:].flatten(),
                                                 reduction="none").view(len(rows), -1).mean(-1)

    return interventions.ablated_metric(model, tokens, head_sets, loss, mode="mean", means=means, max_rows=max_rows,
                                        positions=slice(second_start, seq_len - 1))


def copying_ablation(model: TransformerBridge, found: Sequence[Head], *, sizes: Sizes, seed: int,
                     batch: tasks.TaskBatch | None = None, n_random: int | None = None) -> CopyingAblation:
    """Mean-ablate `found`, and sets of as many heads drawn from all heads, and measure the loss on the second
    half of repeated tokens and of the unrepeated control (one batched call per task).

    Means come from unrepeated random tokens, so an ablated head outputs what it writes on text
    where there is nothing to copy. `batch` replaces the repeated random tokens (e.g. the held-out
    `english_repeats`; it needs ``corrupted`` and the two start positions), `n_random` the draws' number.
    """
    found = [tuple(head) for head in found]
    if batch is None:
        batch = tasks.repeated_tokens(model, batch=sizes.ablation_prompts, half_len=sizes.ablation_half_len,
                                      seed=seed)
    if batch.corrupted is None:
        raise ValueError("the copying ablation needs batch.corrupted (the unrepeated control)")
    reference = tasks.random_tokens(model, batch=sizes.ablation_prompts, length=2 * sizes.ablation_half_len,
                                    seed=seed + 1)
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(found),
                                  sizes.n_random if n_random is None else n_random, seed=seed)
    means = capture.mean_head_outputs(model, reference.tokens)
    second_start = int(batch.positions["second_start"][0])
    values = {name: second_copy_losses(model, tokens, [[], found, *draws], means=means, second_start=second_start)
              for name, tokens in (("repeated", batch.tokens), ("unrepeated", batch.corrupted))}  # [set, prompt]
    null = f"{len(found)} heads drawn from all heads"

    def check(rows: Tensor, metric_name: str) -> controls.CausalCheck:
        return controls.check_from_values(rows, found, metric_name=metric_name, mode="mean-ablated", null=null, seed=seed)

    return CopyingAblation(
        repeated=check(values["repeated"], "loss on the second copy"),
        unrepeated=check(values["unrepeated"], "loss on the unrepeated second half"),
        specific=check(values["repeated"] - values["unrepeated"], "loss, repeated minus unrepeated second half"))


# --------------------------------------------------------------------------------------------------
# The held-out family: short English sentences, written for this book, said twice. No screen reads them.

HELD_OUT_ADJECTIVES = ("old", "young", "small", "big", "quiet", "happy", "tired", "tall", "kind", "brave", "busy",
                       "calm", "proud", "clever", "lazy", "angry", "polite", "famous", "lonely", "cheerful")
HELD_OUT_NOUNS = ("farmer", "teacher", "doctor", "sailor", "baker", "driver", "painter", "singer", "child", "dog",
                  "horse", "cat", "king", "nurse", "pilot", "student", "soldier", "writer", "hunter", "fisherman")
HELD_OUT_VERBS = ("found", "watched", "carried", "painted", "washed", "followed", "visited", "cleaned", "opened",
                  "moved", "bought", "sold", "fixed", "closed", "pushed", "pulled", "dropped", "liked", "helped",
                  "called")
HELD_OUT_OBJECTS = ("table", "window", "garden", "river", "letter", "basket", "bridge", "door", "boat", "road",
                    "house", "chair", "box", "book", "wall", "fence", "bottle", "ladder", "wagon", "lamp")
HELD_OUT_FAMILY = "English sentences from a word list, said twice"


def _sentence_words(model: TransformerBridge) -> dict[str, Tensor]:
    words = {}
    for slot, pool in (("adjective", HELD_OUT_ADJECTIVES), ("noun", HELD_OUT_NOUNS), ("verb", HELD_OUT_VERBS),
                       ("object", HELD_OUT_OBJECTS)):
        kept = tasks.single_token_words(model, pool)
        if len(kept) < 8:
            raise ValueError(f"this tokenizer keeps only {len(kept)} single-token {slot}s of {len(pool)}")
        words[slot] = torch.tensor([tasks.single_token_id(model, " " + word) for word in kept])
    return words


def english_passages(model: TransformerBridge, *, batch: int, sentences: int, seed: int) -> Tensor:
    """`batch` passages of `sentences` sentences "The old farmer carried the basket.", 7 tokens each:
    ``[batch, 7 * sentences]`` token ids (no BOS). Every word is one token, so all passages have one length."""
    words = _sentence_words(model)
    the = tasks.require_single_token(model, " The", why="the held-out sentences start with it")
    small_the = tasks.require_single_token(model, " the", why="the held-out sentences use it")
    stop = tasks.require_single_token(model, ".", why="the held-out sentences end with it")
    generator = torch.Generator().manual_seed(seed)

    def pick(slot: str) -> Tensor:
        pool = words[slot]
        return pool[torch.randint(len(pool), (batch, sentences), generator=generator)]

    adjective, noun, verb, thing = pick("adjective"), pick("noun"), pick("verb"), pick("object")
    fixed = torch.full((batch, sentences), 0)
    parts = [fixed + the, adjective, noun, verb, fixed + small_the, thing, fixed + stop]
    return torch.stack(parts, dim=-1).reshape(batch, 7 * sentences)  # sentence-major: 7 tokens per sentence


def english_repeats(model: TransformerBridge, *, batch: int, sentences: int, seed: int) -> tasks.TaskBatch:
    """The held-out family: a passage of English sentences said twice (`english_passages`), built like
    `tasks.repeated_tokens`: ``corrupted`` keeps the first passage and follows it with a fresh one.

    Natural sentences differ from random tokens in every way a screen could overfit: frequent words, a fixed
    grammar (" the" and "." recur inside each copy), and a second half that is partly predictable without
    copying (which the unrepeated control measures)."""
    first = english_passages(model, batch=batch, sentences=sentences, seed=seed)
    fresh = english_passages(model, batch=batch, sentences=sentences, seed=seed + 1)
    bos = tasks.bos_column(model, batch)
    tokens = torch.cat([bos, first, first], dim=1)
    offset, half_len = bos.shape[1], first.shape[1]
    return tasks.TaskBatch(
        name="english_repeats", tokens=tokens, prompts=tasks.joined_text(model, tokens),
        corrupted=torch.cat([bos, first, fresh], dim=1),
        positions={"first_start": torch.full((batch,), offset), "second_start": torch.full((batch,), offset + half_len)},
        info={"half_len": half_len, "sentences": sentences, "seed": seed, "family": HELD_OUT_FAMILY})


def held_out(model: TransformerBridge, found: Sequence[Head], score: Callable[[TransformerBridge, tasks.TaskBatch], Tensor],
             *, sizes: Sizes, seed: int, check: bool = True) -> tuple[heldout.HeldOut, controls.CausalCheck | None]:
    """The page's screen score and copying ablation, re-run on the held-out family (`english_repeats`).

    Args:
        found: the heads the page's screen found (the ones it ablated).
        score: ``score(model, batch) -> [layer, head]``, the page's screen score on a held-out batch.
        check: also re-run the copying ablation there, against `sizes.heldout_draws` fresh sets drawn from all
            heads (other seeds than the page's own draws); ``heldout_draws=0`` skips it too.

    Returns the `heldout.HeldOut` (its check: the change of the loss on the second copy) and the held-out
    difference in differences against the unrepeated control (None without `check`).
    """
    found = [tuple(head) for head in found]
    batch = english_repeats(model, batch=sizes.heldout_prompts, sentences=sizes.heldout_sentences, seed=seed)
    ablation = (copying_ablation(model, found, sizes=sizes, seed=seed + 1, batch=batch, n_random=sizes.heldout_draws)
                if check and sizes.heldout_draws > 0 else None)
    held = heldout.HeldOut(HELD_OUT_FAMILY, found=tuple(found), screen=score(model, batch),
                           check=ablation.repeated if ablation else None)
    return held, ablation.specific if ablation else None
