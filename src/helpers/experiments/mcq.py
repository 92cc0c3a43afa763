"""Formatted multiple-choice questions (MCQ) on pretrained models: prompts, the gate, the head signatures.

Lieberum et al. 2023 sorted the attention heads that let Chinchilla 70B answer MMLU's lettered options
into classes by where the last position looks and what it writes; Wiegreffe et al. 2024 traced where
Olmo-7B picks the answer *symbol*. This module holds what the six MCQ family pages run on a real model,
on the prompts of `helpers.experiments.mcq_prompts`:

- `run_mcq`: one forward pass per batch (`capture.read_end`, stopped before the unembedding) that keeps
  what every step needs at the last position: each head's attention row, its output, the norm scales
  and the label logits.
- `mcq_gate`: accuracy over the label tokens against chance (exact binomial test) and the logit
  difference correct - mean of the others (bootstrap interval, via `helpers.stats`).
- `signature`: per-head attention over the labels and options, the direct logit attribution (DLA) of
  the correct label, and the pre-registered class rules of the book's E2 experiment.
- `layer_projection` and `format_patching`: Wiegreffe's vocabulary projection of each layer's attention
  output, and END-residual patching between two label formats, layer by layer.

No hook is registered here: `format_patching` patches through `capture.residual_at_end` and
`interventions.final_with_end_patches`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers import attribution, capture, heads as heads_module, heldout, interventions, models, readout, stats, store
from helpers.capture import EndRead
from helpers.experiments.mcq_prompts import HELD_OUT, MCQTask, mcq_task
from helpers.heads import Head, labels

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

# --------------------------------------------------------------------------------------------------
# One forward pass per batch, read at END


def label_logits(model: TransformerBridge, read: EndRead, answer_ids: Int[Tensor, "option"]
                 ) -> Float[Tensor, "batch option"]:
    """The logits of the answer tokens at END, from the final norm's output and those unembedding columns."""
    return label_logits_from_final(model, read.final, answer_ids)


def label_logits_from_final(model: TransformerBridge, final: Float[Tensor, "batch d_model"],
                            answer_ids: Int[Tensor, "option"]) -> Float[Tensor, "batch option"]:
    """`label_logits` from the final norm's output itself (`helpers.readout`: bias and soft cap included)."""
    return readout.logits(model, final, answer_ids)


def head_label_attribution(model: TransformerBridge, read: EndRead, answer_ids: Int[Tensor, "option"]
                           ) -> Float[Tensor, "layer head batch option"]:
    """Direct effect of each head's END output on each answer token's logit, centred over the options.

    The same linear read as `attribution.head_logit_attribution` (norm scales frozen at the clean run),
    for all options at once: centring removes what a head does to every label alike, so the
    "correct minus mean of the others" attribution is ``n / (n - 1)`` times the centred value of the
    correct option, and option i minus option j is the difference of their columns.
    """
    directions = model.W_U[:, answer_ids.to(model.W_U.device)].T.float().cpu()  # [option, d_model]
    read_dirs = attribution.final_read(model, directions)  # the final norm's gain folded in
    read_dirs = read_dirs - read_dirs.mean(dim=0, keepdim=True)  # centred over the options
    return torch.einsum("lbhm,om->lhbo", attribution.head_outputs_from_read(model, read), read_dirs)


def correct_vs_others(values: Float[Tensor, "... batch option"], correct: Int[Tensor, "batch"]
                      ) -> Float[Tensor, "... batch"]:
    """``value[correct] - mean(value[others])`` per prompt (a pure function; works on logits and on DLA)."""
    n = values.shape[-1]
    index = correct.reshape((1,) * (values.ndim - 2) + (-1, 1)).expand(*values.shape[:-1], 1)
    chosen = values.gather(-1, index).squeeze(-1)
    return (n * chosen - values.sum(-1)) / (n - 1)


# --------------------------------------------------------------------------------------------------
# Everything the pages read from a model, per prompt


@dataclass(frozen=True)
class MCQRun:
    """Per-prompt readings of one task at END (prompts of all batches concatenated).

    ``logits``: answer-token logits ``[item, option]``; ``label_attention`` / ``content_attention``:
    ``[layer, head, item, option]`` attention from END to each option's label / content token;
    ``recent_attention``: ``[layer, head, item]`` attention on the last `RECENT` positions ("Answer", ":",
    END's own); ``dla``: ``[layer, head, item, option]`` head DLA centred over the options.
    """

    logits: Float[Tensor, "item option"]
    correct: Int[Tensor, "item"]
    label_attention: Float[Tensor, "layer head item option"]
    content_attention: Float[Tensor, "layer head item option"]
    recent_attention: Float[Tensor, "layer head item"]
    dla: Float[Tensor, "layer head item option"]


RECENT = 3


def _at(attention: Float[Tensor, "layer batch head key"], positions: Int[Tensor, "batch option"]
        ) -> Float[Tensor, "layer head batch option"]:
    index = positions[None, :, None, :].expand(attention.shape[0], -1, attention.shape[2], -1)
    return attention.gather(-1, index).permute(0, 2, 1, 3)


def run_mcq(model: TransformerBridge, task: MCQTask) -> MCQRun:
    """`read_end` on every batch of `task`, reduced to the per-prompt numbers the gate and signatures use."""
    parts = []
    for batch in task.batches:
        read = capture.read_end(model, batch.tokens)
        parts.append((label_logits(model, read, task.answer_ids), _at(read.attention, batch.label_pos),
                      _at(read.attention, batch.content_pos),
                      read.attention[..., -RECENT:].sum(-1).permute(0, 2, 1),
                      head_label_attribution(model, read, task.answer_ids)))
    logits, labels, contents, recent, dla = zip(*parts)
    return MCQRun(logits=torch.cat(logits), correct=task.correct, label_attention=torch.cat(labels, dim=2),
                  content_attention=torch.cat(contents, dim=2), recent_attention=torch.cat(recent, dim=2),
                  dla=torch.cat(dla, dim=2))


# --------------------------------------------------------------------------------------------------
# The behaviour gate


def binomial_p_greater(successes: int, trials: int, chance: float) -> float:
    """Exact one-sided binomial p: the probability of at least `successes` hits in `trials` at rate `chance`."""
    if not 0 <= successes <= trials or trials < 1 or not 0 < chance < 1:
        raise ValueError(f"need 0 <= successes <= trials, trials >= 1 and 0 < chance < 1; "
                         f"got {successes}, {trials}, {chance}")
    return float(sum(math.comb(trials, k) * chance ** k * (1 - chance) ** (trials - k)
                     for k in range(successes, trials + 1)))


@dataclass(frozen=True)
class MCQGate:
    """Does the model pick the right label? Passes iff accuracy beats chance (binomial p < alpha) and the
    logit difference correct - mean(others) has a bootstrap interval above 0."""

    name: str
    accuracy: stats.Estimate
    chance: float
    p_value: float
    logit_diff: stats.Estimate
    predicted: Float[Tensor, "option"]  # share of prompts on which each label wins
    labels: str
    alpha: float = 0.01

    @property
    def passed(self) -> bool:
        return self.p_value < self.alpha and self.logit_diff.lower > 0

    @property
    def favourite(self) -> tuple[str, float]:
        """The label the model picks most often, and how often."""
        index = int(self.predicted.argmax())
        return self.labels[index], float(self.predicted[index])

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL: behaviour absent at this scale"
        letter, share = self.favourite
        p_text = "p < 0.001" if self.p_value < 0.001 else f"p = {self.p_value:.3f}"
        return (f"{verdict} ({self.name}): accuracy {self.accuracy} vs chance {self.chance:.2f} ({p_text}, "
                f"n = {self.accuracy.n}); logit diff correct - mean(others) {self.logit_diff}; "
                f"picks {letter!r} on {share:.0%} of prompts")


def mcq_gate(logits: Float[Tensor, "item option"], correct: Int[Tensor, "item"], *, labels: str, name: str,
             alpha: float = 0.01, seed: int = 0) -> MCQGate:
    """The E2 gate from answer-token logits (a pure function)."""
    if logits.ndim != 2 or logits.shape[0] != correct.shape[0] or logits.shape[1] != len(labels):
        raise ValueError(f"logits must be [item, option] with {correct.shape[0]} items and {len(labels)} options; "
                         f"got {tuple(logits.shape)}")
    hits = (logits.argmax(-1) == correct).float()
    n_options = logits.shape[1]
    predicted = torch.bincount(logits.argmax(-1), minlength=n_options).float() / logits.shape[0]
    return MCQGate(name=name, accuracy=stats.bootstrap_ci(hits, seed=seed), chance=1 / n_options,
                   p_value=binomial_p_greater(int(hits.sum()), hits.shape[0], 1 / n_options),
                   logit_diff=stats.bootstrap_ci(correct_vs_others(logits, correct), seed=seed),
                   predicted=predicted, labels=labels, alpha=alpha)


# --------------------------------------------------------------------------------------------------
# The attention signature of every head, and the E2 class rules

FLOOR = 0.1  # a head must put at least this much of its END attention on the labels (or contents) to be read
UNIFORM = 0.9  # Constant: entropy over the labels >= 0.9 log n ...
INDEPENDENT = 0.1  # ... and its share on the correct label within 0.1 of 1/n
CONCENTRATED = 0.6  # Single letter, Correct letter, Content gatherer: > 60 % on one option
RECENT_SHARE = 0.5  # Amplification: at least half of END's attention on the last RECENT positions
CLASSES = ("constant", "single_letter", "correct_letter", "content_gatherer", "amplification")


@dataclass(frozen=True)
class Signature:
    """Per-head attention signature at END and the E2 classes (all ``[layer, head]``, means over prompts).

    ``*_null`` values are the same score with the correct option replaced by a seeded random wrong one:
    a head that tracks correctness scores far above its null, a positional one does not.
    """

    label_mass: Float[Tensor, "layer head"]
    entropy: Float[Tensor, "layer head"]  # over the labels, as a fraction of log n
    favourite: Int[Tensor, "layer head"]
    favourite_share: Float[Tensor, "layer head"]  # on prompts where the favourite label is wrong
    correct_share: Float[Tensor, "layer head"]
    correct_share_null: Float[Tensor, "layer head"]
    content_mass: Float[Tensor, "layer head"]
    content_share: Float[Tensor, "layer head"]
    content_share_null: Float[Tensor, "layer head"]
    recent_mass: Float[Tensor, "layer head"]
    dla: Float[Tensor, "layer head"]  # correct - mean(others)
    dla_null: Float[Tensor, "layer head"]
    n_options: int

    @staticmethod
    def cutoff(null: Float[Tensor, "layer head"]) -> float:
        """95th percentile of a null score over all heads (e.g. ``signature.correct_share_null``)."""
        return stats.null_threshold(null, 0.95)

    @property
    def classes(self) -> dict[str, Tensor]:
        """The pre-registered rules of E2, one boolean ``[layer, head]`` mask per class."""
        reads_labels = self.label_mass >= FLOOR
        dla_cut = max(0.1, self.cutoff(self.dla_null))
        return {
            "constant": reads_labels & (self.entropy >= UNIFORM)
                        & ((self.correct_share - 1 / self.n_options).abs() <= INDEPENDENT),
            "single_letter": reads_labels & (self.favourite_share > CONCENTRATED),
            "correct_letter": reads_labels & (self.correct_share > CONCENTRATED) & (self.dla > 0)
                              & (self.correct_share > self.cutoff(self.correct_share_null)),
            "content_gatherer": (self.content_mass >= FLOOR) & (self.content_share > CONCENTRATED)
                                & (self.content_share > self.cutoff(self.content_share_null)),
            "amplification": (self.dla > dla_cut) & (self.recent_mass >= RECENT_SHARE),
        }

    def heads(self, family: str) -> list[Head]:
        """Heads of one class, ordered by the class's own score."""
        mask = self.classes[family]
        score = {"constant": self.entropy, "single_letter": self.favourite_share, "correct_letter": self.correct_share,
                 "content_gatherer": self.content_share, "amplification": self.dla}[family]
        found = [tuple(int(i) for i in index) for index in mask.nonzero()]
        return sorted(found, key=lambda head: -float(score[head]))

    def counts(self) -> dict[str, int]:
        return {name: int(mask.sum()) for name, mask in self.classes.items()}

    def screen(self, family: str) -> Float[Tensor, "layer head"]:
        """The screen score a page ranks heads by (its heatmap), 0 where the head barely reads what the
        score is about: a class's own score among heads with at least `FLOOR` of END's attention on the
        labels (constant, single_letter, correct_letter) or the contents (content_gatherer); the DLA for
        the correct letter (amplification); the size of that DLA, either sign ("correct_head")."""
        if family == "correct_head":
            return self.dla.abs()
        if family == "amplification":
            return self.dla
        score = {"constant": self.entropy, "single_letter": self.favourite_share,
                 "correct_letter": self.correct_share, "content_gatherer": self.content_share}.get(family)
        if score is None:
            raise ValueError(f"family must be one of {CLASSES} or 'correct_head', got {family!r}")
        mass = self.content_mass if family == "content_gatherer" else self.label_mass
        return torch.where(mass >= FLOOR, score, torch.zeros_like(score))


def task_gate(model: TransformerBridge, task: MCQTask, *, name: str, seed: int = 0) -> tuple[MCQRun, MCQGate]:
    """Run `task` and gate its answers: the read every gate of the pages starts from, and the gate."""
    run = run_mcq(model, task)
    return run, mcq_gate(run.logits, run.correct, labels=task.labels, name=name, seed=seed)


def signature(run: MCQRun, *, seed: int = 0) -> Signature:
    """Attention signature and DLA of every head from an `MCQRun` (a pure function)."""
    n = run.label_attention.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, n, run.correct.shape, generator=generator)
    decoy = (run.correct + shift) % n  # a uniformly random wrong option per prompt

    def share(values: Tensor, index: Tensor) -> Tensor:  # [layer, head, item, option] -> [layer, head, item]
        normed = values / values.sum(-1, keepdim=True).clamp(min=1e-9)
        return normed.gather(-1, index.reshape(1, 1, -1, 1).expand(*normed.shape[:-1], 1)).squeeze(-1)

    labels = run.label_attention / run.label_attention.sum(-1, keepdim=True).clamp(min=1e-9)
    entropy = -(labels * labels.clamp(min=1e-12).log()).sum(-1) / math.log(n)
    favourite = labels.mean(dim=2).argmax(-1)  # [layer, head]
    on_favourite = labels.gather(-1, favourite[:, :, None, None].expand(*labels.shape[:-1], 1)).squeeze(-1)
    wrong = (run.correct[None, None, :] != favourite[:, :, None]).float()
    return Signature(
        label_mass=run.label_attention.sum(-1).mean(-1), entropy=entropy.mean(-1), favourite=favourite,
        favourite_share=(on_favourite * wrong).sum(-1) / wrong.sum(-1).clamp(min=1),
        correct_share=share(run.label_attention, run.correct).mean(-1),
        correct_share_null=share(run.label_attention, decoy).mean(-1),
        content_mass=run.content_attention.sum(-1).mean(-1),
        content_share=share(run.content_attention, run.correct).mean(-1),
        content_share_null=share(run.content_attention, decoy).mean(-1),
        recent_mass=run.recent_attention.mean(-1),
        dla=correct_vs_others(run.dla, run.correct).mean(-1), dla_null=correct_vs_others(run.dla, decoy).mean(-1),
        n_options=n)


# --------------------------------------------------------------------------------------------------
# Wiegreffe's format switch: which layer decides the answer symbol?


def layer_projection(run: MCQRun) -> Float[Tensor, "layer item"]:
    """Each layer's attention output at END projected on the answer symbols: correct - mean(others).

    The vocabulary projection of Wiegreffe et al. restricted to the label unembeddings, with the final
    norm's scale frozen; it is the per-layer sum of the head DLA.
    """
    return correct_vs_others(run.dla.sum(dim=1), run.correct)


@dataclass(frozen=True)
class FormatPatching:
    """END-residual patching from a source label format into a target format, one layer at a time.

    ``preference``: ``[layer, item]`` mean logit of the source symbols minus mean logit of the target
    symbols at END with the END residual after `layer` taken from the source prompt; ``clean_target``
    / ``clean_source``: the same number unpatched on the target / on the source prompt.
    """

    layers: tuple[int, ...]
    preference: Float[Tensor, "layer item"]
    clean_target: Float[Tensor, "item"]
    clean_source: Float[Tensor, "item"]

    @property
    def recovered(self) -> Float[Tensor, "layer"]:
        """Share of the source-vs-target gap that patching each layer restores (0: none, 1: all)."""
        gap = (self.clean_source - self.clean_target).mean()
        return (self.preference.mean(-1) - self.clean_target.mean()) / gap

    def decisive_layer(self, level: float = 0.5) -> int | None:
        """The earliest patched layer from which on every later layer restores at least `level` of the gap."""
        recovered = self.recovered.tolist()
        for i, layer in enumerate(self.layers):
            if all(r >= level for r in recovered[i:]):
                return layer
        return None


@torch.no_grad()
def format_patching(model: TransformerBridge, source: MCQTask, target: MCQTask,
                    layers: Sequence[int] | None = None) -> FormatPatching:
    """Patch END's residual stream (after each of `layers`) from `source` prompts into `target` prompts.

    `source` and `target` must be the same questions in two label formats (`mcq_task` with the same seed,
    sizes and templates, different `labels`), so every prompt pair has the same length and positions.
    All layers run in one batched pass per batch: row block i patches layer ``layers[i]``.
    """
    layers = tuple(range(model.cfg.n_layers)) if layers is None else tuple(layers)
    shapes = [b.tokens.shape for b in source.batches], [b.tokens.shape for b in target.batches]
    if shapes[0] != shapes[1] or len(source.labels) != len(target.labels):
        raise ValueError(f"source and target must hold the same questions in two formats; batch shapes "
                         f"{shapes[0]} vs {shapes[1]}. Build both with mcq_task(..., seed=s) and different labels")
    if not layers or min(layers) < 0 or max(layers) >= model.cfg.n_layers:
        raise ValueError(f"layers must lie in [0, {model.cfg.n_layers}); got {layers}")
    both = torch.cat([source.answer_ids, target.answer_ids])
    n = len(source.labels)

    def preference(read: EndRead) -> Tensor:
        logits = label_logits(model, read, both)
        return logits[:, :n].mean(-1) - logits[:, n:].mean(-1)

    patched, clean_t, clean_s = [], [], []
    for src, tgt in zip(source.batches, target.batches):
        resid = capture.residual_at_end(model, src.tokens, layers)  # the source's END stream after each layer
        clean_s.append(preference(capture.read_end(model, src.tokens)))
        clean_t.append(preference(capture.read_end(model, tgt.tokens)))
        final = interventions.final_with_end_patches(model, tgt.tokens, [(layer, resid[layer]) for layer in layers])
        logits = label_logits_from_final(model, final.reshape(-1, final.shape[-1]), both)
        patched.append((logits[:, :n].mean(-1) - logits[:, n:].mean(-1)).reshape(len(layers), -1))
    return FormatPatching(layers=layers, preference=torch.cat(patched, dim=1), clean_target=torch.cat(clean_t),
                          clean_source=torch.cat(clean_s))


# --------------------------------------------------------------------------------------------------
# The steps every MCQ page runs, so that the comparison model gets exactly the same ones

FAMILY_NAMES = {"constant": "Constant", "single_letter": "Single letter", "correct_letter": "Correct letter",
                "content_gatherer": "Content gatherer", "amplification": "Amplification"}


@dataclass(frozen=True)
class Study:
    """Gate (4 options, then 2), and the attention signature read on the 4-option prompts; the same gate
    and signature on the held-out family (`mcq_prompts.HELD_OUT`: other questions, facts and option wording)."""

    model: str
    gate: MCQGate
    gate_two: MCQGate
    run: MCQRun
    signature: Signature
    held_gate: MCQGate
    held_run: MCQRun
    held_signature: Signature

    def found(self, family: str, near_misses: int = 3) -> tuple[list[Head], bool]:
        """The heads a page's screen found on the main prompts (the class's heads), or, when none passes
        the rule, the `near_misses` heads with the highest screen score; the flag says which."""
        passing = self.signature.heads(family) if family in CLASSES else []
        if passing:
            return passing, True
        return heads_module.top(self.signature.screen(family), near_misses), False

    def held_out(self, family: str, near_misses: int = 3) -> heldout.HeldOut:
        """The page's screen score recomputed on the held-out family, with the heads found on the main one
        (or its best near misses when none passes the rule). No causal check: neither offline model passes
        the gate, so there is no answer for a head to carry."""
        found, _ = self.found(family, near_misses)
        return heldout.HeldOut(HELD_OUT_NAME, found=found, screen=self.held_signature.screen(family))

    def held_out_passing(self, family: str) -> list[Head]:
        """The heads that pass the class's rule on the held-out prompts (the rule re-applied there)."""
        return self.held_signature.heads(family) if family in CLASSES else []

    def held_out_columns(self, family: str) -> dict[str, str]:
        """The held-out family's part of a findings-table row."""
        held = self.held_out(family)
        found, passed = self.found(family)
        cells = {"held-out gate (4 options)": f"{self.held_gate.accuracy} (p = {self.held_gate.p_value:.2f}), "
                                              f"picks {self.held_gate.favourite[0]!r} {self.held_gate.favourite[1]:.0%}",
                 ("held-out ranks of the found heads" if passed else "held-out ranks of the near misses"):
                     held.ranks_text()}
        if family in CLASSES:
            again = self.held_out_passing(family)
            kept = heldout.overlap(found, again) if passed else []
            cells["held-out: pass the rule"] = (f"{len(again)}" + (f" ({len(kept)} of the {len(found)} found)"
                                                                   if passed else ""))
        return cells

    def gate_columns(self) -> dict[str, object]:
        """The gate's part of a findings-table row."""
        letter, share = self.gate.favourite
        return {
            "model": self.model,
            "4 options: accuracy (95% CI)": f"{self.gate.accuracy} (p = {self.gate.p_value:.2f})",
            "picks": f"{letter!r} {share:.0%}",
            "2 options: accuracy": f"{self.gate_two.accuracy} (p = {self.gate_two.p_value:.2f})",
            "gate": "pass" if self.gate.passed or self.gate_two.passed else "fail",
        }

    def row(self, family: str | None = None) -> dict[str, object]:
        """One row of a page's findings table: the heads of `family` (one of `CLASSES`), or with None the
        number of heads with each class's signature."""
        if family is None:
            counts = ", ".join(f"{FAMILY_NAMES[name]} {count}" for name, count in self.signature.counts().items())
            return {**self.gate_columns(), "signatures (heads per class)": counts,
                    "causal role": "tested" if self.gate.passed or self.gate_two.passed else "not testable (no behaviour)"}
        found = self.signature.heads(family)
        return {
            **self.gate_columns(),
            f"{FAMILY_NAMES[family]} signature (heads)": f"{len(found)}: {labels(found[:4])}" + (" ..." if len(found) > 4 else ""),
            **self.held_out_columns(family),
            "causal role": "tested" if self.gate.passed or self.gate_two.passed else "not testable (no behaviour)",
        }


@dataclass(frozen=True)
class Sizes:
    """Questions per gate (the pages' parameters cell sets this; the protocol asks for at least 50)."""

    questions: int = 60


HELD_OUT_NAME = "other questions, facts and option wording"


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """The shared part of every MCQ page: 0-shot gates with 4 and 2 options, signature on the 4-option run,
    and the 4-option gate and signature again on as many held-out questions (`mcq_prompts.HELD_OUT`).
    Six pages read it for both models, so it is kept in the results store (computed once per code version)."""
    return store.cached("mcq-study", lambda: _study(model, sizes=sizes, seed=seed), model=models.spec_of(model).name,
                        weights=store.weights_digest(model), sizes=sizes, seed=seed)


def _study(model: TransformerBridge, *, sizes: Sizes, seed: int) -> Study:
    run, gate = task_gate(model, mcq_task(model, n=sizes.questions, seed=seed), name="4 options, 0-shot", seed=seed)
    _, gate_two = task_gate(model, mcq_task(model, n=sizes.questions, seed=seed + 1, labels="AB"),
                            name="2 options, 0-shot", seed=seed)
    held_run, held_gate = task_gate(model, mcq_task(model, n=sizes.questions, seed=seed + 2, family=HELD_OUT),
                                    name="held-out family, 4 options, 0-shot", seed=seed)
    return Study(model=models.spec_of(model).name, gate=gate, gate_two=gate_two, run=run,
                 signature=signature(run, seed=seed), held_gate=held_gate, held_run=held_run,
                 held_signature=signature(held_run, seed=seed))
