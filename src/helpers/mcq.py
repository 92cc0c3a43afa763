"""Formatted multiple-choice questions (MCQ) on pretrained models: prompts, the gate, the head signatures.

Lieberum et al. 2023 sorted the attention heads that let Chinchilla 70B answer MMLU's lettered options
into classes by where the last position looks and what it writes; Wiegreffe et al. 2024 traced where
Olmo-7B picks the answer *symbol*. This module holds what the six MCQ family pages run on a real model:

- `mcq_task`: seeded, very easy questions ("What color is a banana?") with 2 or 4 lettered options,
  the correct letter balanced over positions, 0- or k-shot, labels A-D or other symbols (Q/Z/R/X);
  prompts grouped into batches of one token length, with the positions of every label and option.
- `read_end`: one forward pass, stopped before the unembedding, that keeps what every step needs at the
  last position: each head's attention row, its output, the norm scales and the label logits.
- `mcq_gate`: accuracy over the label tokens against chance (exact binomial test) and the logit
  difference correct - mean of the others (bootstrap interval, via `helpers.stats`).
- `signature`: per-head attention over the labels and options, the direct logit attribution (DLA) of
  the correct label, and the pre-registered class rules of the book's E2 experiment.
- `layer_projection` and `format_patching`: Wiegreffe's vocabulary projection of each layer's attention
  output, and END-residual patching between two label formats, layer by layer.

No hook is registered here: `read_end` is `capture.read_end`, and `format_patching` patches through
`capture.residual_at_end` and `interventions.final_with_end_patches`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers import attribution, capture, interventions, stats, tasks

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

Head = tuple[int, int]
LETTERS = "ABCD"
SYMBOLS = "QZRX"  # Lieberum's random labels: no order, no link to "first", "second"

# Question templates with one single-token slot, and the facts that fill them. Every item names its
# answer and the pool its wrong options come from; `exclude` lists pool words that would also be right.
POOLS = {
    "color": ("red", "yellow", "blue", "green", "black", "white", "orange", "brown", "pink", "purple"),
    "animal": ("cow", "dog", "cat", "duck", "pig", "horse", "owl", "sheep", "lion", "frog"),
    "number": ("two", "four", "six", "eight"),
    "opposite": ("cold", "small", "down", "night", "slow", "dry", "sad", "right", "white", "late", "empty", "soft"),
    "thing": ("car", "chair", "book", "shoe", "rock", "table", "door", "cup", "spoon", "box"),
}
TEMPLATES = {
    "color": "What color is a{n} {x}?",
    "sound": "Which animal says {x}?",
    "legs": "How many legs does a {x} have?",
    "opposite": "What is the opposite of {x}?",
    "kind": "Which of these is a{n} {x}?",
}
# (template, slot, answer, pool of wrong options, pool words that are also right)
ITEMS = (
    ("color", "banana", "yellow", "color", ()), ("color", "lemon", "yellow", "color", ()),
    ("color", "tomato", "red", "color", ("green",)), ("color", "carrot", "orange", "color", ()),
    ("color", "frog", "green", "color", ("brown",)), ("color", "crow", "black", "color", ()),
    ("color", "cherry", "red", "color", ("black",)), ("color", "pumpkin", "orange", "color", ()),
    ("color", "swan", "white", "color", ("black",)), ("color", "leaf", "green", "color", ("yellow", "brown", "red", "orange")),
    ("sound", "moo", "cow", "animal", ()), ("sound", "woof", "dog", "animal", ()), ("sound", "meow", "cat", "animal", ()),
    ("sound", "quack", "duck", "animal", ()), ("sound", "oink", "pig", "animal", ()), ("sound", "neigh", "horse", "animal", ()),
    ("sound", "hoot", "owl", "animal", ()), ("sound", "roar", "lion", "animal", ()), ("sound", "croak", "frog", "animal", ()),
    ("legs", "dog", "four", "number", ()), ("legs", "bird", "two", "number", ()), ("legs", "spider", "eight", "number", ()),
    ("legs", "bee", "six", "number", ()), ("legs", "cat", "four", "number", ()), ("legs", "chicken", "two", "number", ()),
    ("legs", "ant", "six", "number", ()), ("legs", "horse", "four", "number", ()), ("legs", "duck", "two", "number", ()),
    ("opposite", "hot", "cold", "opposite", ()), ("opposite", "big", "small", "opposite", ()),
    ("opposite", "up", "down", "opposite", ()), ("opposite", "day", "night", "opposite", ()),
    ("opposite", "fast", "slow", "opposite", ()), ("opposite", "wet", "dry", "opposite", ()),
    ("opposite", "happy", "sad", "opposite", ()), ("opposite", "left", "right", "opposite", ()),
    ("opposite", "black", "white", "opposite", ()), ("opposite", "early", "late", "opposite", ()),
    ("opposite", "full", "empty", "opposite", ()), ("opposite", "hard", "soft", "opposite", ()),
    ("kind", "fruit", "apple", "thing", ()), ("kind", "fruit", "banana", "thing", ()), ("kind", "fruit", "grape", "thing", ()),
    ("kind", "fruit", "pear", "thing", ()), ("kind", "animal", "dog", "thing", ()), ("kind", "animal", "horse", "thing", ()),
    ("kind", "animal", "cat", "thing", ()), ("kind", "animal", "cow", "thing", ()), ("kind", "color", "red", "thing", ()),
    ("kind", "color", "blue", "thing", ()), ("kind", "color", "green", "thing", ()),
)


def _question(template: str, slot: str) -> str:
    article = "n" if slot[0] in "aeiou" else ""
    return TEMPLATES[template].format(x=slot, n=article)


@dataclass(frozen=True)
class MCQBatch:
    """Prompts of one template and one token length, with where each option sits.

    Attributes:
        tokens: ``[batch, pos]``; the last position (END) follows "Answer:".
        prompts: the text of each prompt.
        correct: ``[batch]`` index of the right option (0 = first label).
        label_pos / content_pos: ``[batch, option]`` positions of each option's label token ("B" in
            "\\nB. yellow") and content token (" yellow") in the last question.
        template: which question template the batch holds.
    """

    tokens: Int[Tensor, "batch pos"]
    prompts: tuple[str, ...]
    correct: Int[Tensor, "batch"]
    label_pos: Int[Tensor, "batch option"]
    content_pos: Int[Tensor, "batch option"]
    template: str


@dataclass(frozen=True)
class MCQTask:
    """A seeded set of MCQ prompts in batches of equal length; `answer_ids` are the tokens after "Answer:"."""

    batches: tuple[MCQBatch, ...]
    labels: str
    answer_ids: Int[Tensor, "option"]
    shots: int

    @property
    def n_options(self) -> int:
        return len(self.labels)

    @property
    def correct(self) -> Int[Tensor, "item"]:
        return torch.cat([batch.correct for batch in self.batches])

    def __len__(self) -> int:
        return sum(len(batch.prompts) for batch in self.batches)


def single_token_id(model: TransformerBridge, text: str) -> int:
    """The id of `text` if the tokenizer keeps it as one token, else a ValueError that says what to change."""
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens ({ids}) for this tokenizer; MCQ labels and answers must "
                         "be single tokens. Pick other label symbols (e.g. labels='QZRX')")
    return ids[0]


def usable_items(model: TransformerBridge, n_options: int) -> dict[str, list[tuple]]:
    """Items whose slot, answer and at least ``n_options - 1`` wrong options are single tokens, by template."""
    one = set(tasks.single_token_words(model, sorted({w for pool in POOLS.values() for w in pool}
                                                     | {item[1] for item in ITEMS} | {item[2] for item in ITEMS})))
    kept: dict[str, list[tuple]] = {}
    for template, slot, answer, pool, also_right in ITEMS:
        wrong = [w for w in POOLS[pool] if w in one and w != answer and w not in also_right and w != slot]
        if slot in one and answer in one and len(wrong) >= n_options - 1:
            kept.setdefault(template, []).append((slot, answer, tuple(wrong)))
    return {template: items for template, items in kept.items() if len(items) >= 2}


def _render(question: str, options: Sequence[str], labels: str, answer: str | None) -> str:
    lines = [f"Question: {question}"] + [f"{label}. {option}" for label, option in zip(labels, options)]
    return "\n".join(lines) + "\nAnswer:" + (f" {answer}" if answer is not None else "")


def _draw(rng: random.Random, item: tuple, n_options: int, position: int) -> list[str]:
    slot, answer, wrong = item
    options = rng.sample(list(wrong), n_options - 1)
    options.insert(position, answer)
    return options


def _option_positions(tokens: Tensor, label_ids: Sequence[int], content_ids: Tensor, dot_id: int
                      ) -> tuple[Tensor, Tensor]:
    """Positions of each label token in the *last* question, checked against "label . content"."""
    labels, contents = [], []
    for j, label_id in enumerate(label_ids):
        where = (tokens == label_id).nonzero().flatten()
        if where.numel() == 0:
            raise ValueError(f"label token {label_id} not found in the prompt")
        pos = int(where[-1])
        if pos + 2 >= tokens.shape[0] or tokens[pos + 1] != dot_id or tokens[pos + 2] != content_ids[j]:
            raise ValueError("an option does not tokenize as 'label', '.', 'content': this tokenizer merges the "
                             "label with its neighbours; use other labels")
        labels.append(pos)
        contents.append(pos + 2)
    return torch.tensor(labels), torch.tensor(contents)


def mcq_task(model: TransformerBridge, *, n: int, seed: int, shots: int = 0, labels: str = LETTERS,
             n_options: int | None = None, templates: Sequence[str] | None = None) -> MCQTask:
    """`n` seeded MCQ prompts, the correct option's position balanced within every template.

    Args:
        n: number of prompts (the gate uses at least 50).
        shots: solved examples (same template, other facts) before each question, separated by a blank line.
        labels: one character per option, e.g. "ABCD", "AB" (2 options) or "QZRX".
        n_options: defaults to ``len(labels)``.
        templates: restrict to these question templates (default: every template this tokenizer can fill).

    Raises:
        ValueError: if a label is not one token (with and without a leading space), `n` < 1, or too few
            items are left for this tokenizer.
    """
    n_options = n_options or len(labels)
    if n < 1 or shots < 0 or not 2 <= n_options <= len(labels):
        raise ValueError(f"need n >= 1, shots >= 0 and 2 <= n_options <= len(labels) = {len(labels)}; "
                         f"got n={n}, shots={shots}, n_options={n_options}")
    labels = labels[:n_options]
    answer_ids = [single_token_id(model, " " + label) for label in labels]
    label_ids = [single_token_id(model, label) for label in labels]
    dot_id = single_token_id(model, ".")
    items = usable_items(model, n_options)
    names = [t for t in (templates or TEMPLATES) if t in items and len(items[t]) > shots]
    if not names:
        raise ValueError(f"no template has {shots + 1} usable items for this tokenizer and {n_options} options")
    rng = random.Random(seed)
    grouped: dict[str, list[tuple[str, int, list[str]]]] = {name: [] for name in names}
    for i in range(n):
        name = names[i % len(names)]
        position = (len(grouped[name]) + seed) % n_options  # balanced over positions within each template
        query, *examples = rng.sample(items[name], shots + 1)
        parts = []
        for example in examples:
            where = rng.randrange(n_options)
            parts.append(_render(_question(name, example[0]), _draw(rng, example, n_options, where), labels,
                                 labels[where]))
        options = _draw(rng, query, n_options, position)
        parts.append(_render(_question(name, query[0]), options, labels, None))
        grouped[name].append(("\n\n".join(parts), position, options))
    batches = []
    for name in names:
        rows = grouped[name]
        if not rows:
            continue
        prompts = [text for text, _, _ in rows]
        tokens = tasks.tokenize_prompts(model, prompts)
        found = [_option_positions(row_tokens, label_ids,
                                   torch.tensor([single_token_id(model, " " + word) for word in options]), dot_id)
                 for row_tokens, (_, _, options) in zip(tokens, rows)]
        batches.append(MCQBatch(tokens=tokens, prompts=tuple(prompts),
                                correct=torch.tensor([position for _, position, _ in rows]),
                                label_pos=torch.stack([f[0] for f in found]),
                                content_pos=torch.stack([f[1] for f in found]), template=name))
    return MCQTask(batches=tuple(batches), labels=labels, answer_ids=torch.tensor(answer_ids), shots=shots)


# --------------------------------------------------------------------------------------------------
# One forward pass per batch, read at END


# Re-exported: `read_end` lives with the other hook code in `helpers.capture`.
EndRead = capture.EndRead
read_end = capture.read_end


def label_logits(model: TransformerBridge, read: EndRead, answer_ids: Int[Tensor, "option"]
                 ) -> Float[Tensor, "batch option"]:
    """The logits of the answer tokens at END, from the final norm's output and those unembedding columns."""
    return label_logits_from_final(model, read.final, answer_ids)


def label_logits_from_final(model: TransformerBridge, final: Float[Tensor, "batch d_model"],
                            answer_ids: Int[Tensor, "option"]) -> Float[Tensor, "batch option"]:
    """`label_logits` from the final norm's output itself (bias and Gemma's soft cap included)."""
    unembed = model.W_U[:, answer_ids.to(model.W_U.device)].float().cpu()  # [d_model, option]
    logits = final @ unembed
    bias = getattr(model, "b_U", None)
    if bias is not None:
        logits = logits + bias[answer_ids.to(bias.device)].float().cpu()
    cap = getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0
    return cap * torch.tanh(logits / cap) if cap > 0 else logits


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
    w_o = model.W_O.float().cpu()
    out = []
    for layer in range(model.cfg.n_layers):
        head_out = torch.einsum("bhd,hdm->bhm", read.z[layer], w_o[layer])
        if read.post_scale is not None:  # Gemma normalises the attention block's output before adding it
            gain = attribution.norm_gain(model.blocks[layer].ln1_post, model.cfg.d_model)
            head_out = head_out * gain / read.post_scale[layer][:, None, None]
        out.append(torch.einsum("bhm,om->hbo", head_out, read_dirs) / read.final_scale[None, :, :])
    return torch.stack(out)


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
        read = read_end(model, batch.tokens)
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

    def cutoff(self, null: str) -> float:
        """95th percentile of a null score over all heads (e.g. ``"correct_share_null"``)."""
        return stats.null_threshold(getattr(self, null), 0.95)

    @property
    def classes(self) -> dict[str, Tensor]:
        """The pre-registered rules of E2, one boolean ``[layer, head]`` mask per class."""
        reads_labels = self.label_mass >= FLOOR
        dla_cut = max(0.1, self.cutoff("dla_null"))
        return {
            "constant": reads_labels & (self.entropy >= UNIFORM)
                        & ((self.correct_share - 1 / self.n_options).abs() <= INDEPENDENT),
            "single_letter": reads_labels & (self.favourite_share > CONCENTRATED),
            "correct_letter": reads_labels & (self.correct_share > CONCENTRATED) & (self.dla > 0)
                              & (self.correct_share > self.cutoff("correct_share_null")),
            "content_gatherer": (self.content_mass >= FLOOR) & (self.content_share > CONCENTRATED)
                                & (self.content_share > self.cutoff("content_share_null")),
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
        clean_s.append(preference(read_end(model, src.tokens)))
        clean_t.append(preference(read_end(model, tgt.tokens)))
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
class MCQStudy:
    """Gate (4 options, then 2), and the attention signature read on the 4-option prompts."""

    model: str
    gate: MCQGate
    gate_two: MCQGate
    run: MCQRun
    signature: Signature

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

    def row(self, family: str) -> dict[str, object]:
        """One row of a page's findings table; `family` is one of `CLASSES`."""
        found = self.signature.heads(family)
        heads = ", ".join(plot_label(head) for head in found[:4]) or "none"
        return {
            **self.gate_columns(),
            f"{FAMILY_NAMES[family]} signature (heads)": f"{len(found)}: {heads}" + (" ..." if len(found) > 4 else ""),
            "causal role": "tested" if self.gate.passed or self.gate_two.passed else "not testable (no behaviour)",
        }


def plot_label(head: Head) -> str:
    return f"L{head[0]}H{head[1]}"


def mcq_study(model: TransformerBridge, name: str, *, n: int = 60, seed: int = 0) -> MCQStudy:
    """The shared part of every MCQ page: 0-shot gates with 4 and 2 options, signature on the 4-option run."""
    task = mcq_task(model, n=n, seed=seed)
    run = run_mcq(model, task)
    two = mcq_task(model, n=n, seed=seed + 1, labels="AB")
    two_run = run_mcq(model, two)
    return MCQStudy(model=name, gate=mcq_gate(run.logits, run.correct, labels=task.labels, name="4 options, 0-shot",
                                              seed=seed),
                    gate_two=mcq_gate(two_run.logits, two_run.correct, labels=two.labels, name="2 options, 0-shot",
                                      seed=seed),
                    run=run, signature=signature(run, seed=seed))
