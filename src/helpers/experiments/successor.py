"""Successor heads: heads whose OV circuit turns an ordinal token into the next one (3 -> 4, Monday -> Tuesday),
read from the weights as Gould et al. 2024 do, against shuffled orders, and checked by ablation.

The page's steps, in order, each one function here:

- `gate`: does the model continue an incrementing sequence ("Monday then Tuesday then Wednesday then" ->
  " Thursday") on every window of three consecutive items of the five tasks? Top-1 among the task's tokens
  against a guess among the tokens the prompt has not used; the strict top-1 over the whole vocabulary beside it.
- `screen`: Gould et al.'s succession score of every head (`ov.effective_ov_logits`, `ov.order_scores`) on the
  screen tasks, pooled over their tokens, and the same score for `n_shuffles` shuffled orders of each task.
  The pass rule (`passing`) is family-wise: a head passes when its score is above the `QUANTILE` of the
  best head's score over the shuffles, a bar that a model without successor heads clears in 5 % of shuffles.
- `ablation`: mean-ablate the top heads by succession score and sets of as many heads drawn from all heads; the
  change of the successor's log-probability among its task's tokens on the screen tasks' prompts.
- `held_out`: the score and the ablation again on tasks the screen never read (letters, ordinal words).

`study(model, *, sizes, seed)` runs them all, as the page does, for the comparison model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers import capture, controls, heads, heldout, interventions, models, ov, readout, stats, tasks
from helpers.heads import Head

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

QUANTILE = 0.95  # pre-registered: above the 95th percentile of the best head's score over shuffled orders
MIN_EFFECT = 0.3  # the gate: top-1 among the task's tokens beats the unused-token guess by this much
THEN = " then"  # the prompt format in which both models continue word sequences best (see the page)


@dataclass(frozen=True)
class Task:
    """An ordered set of single tokens, and how a prompt strings them together."""

    name: str
    words: tuple[str, ...]  # in their order, each with the leading space it has inside a sentence
    separator: str  # written after every item of a prompt

    def ids(self, model: TransformerBridge) -> Int[Tensor, "n"]:
        """The tokens' ids; a ValueError names any word this tokenizer splits."""
        why = f"the {self.name} task scores single tokens"
        return torch.tensor([tasks.require_single_token(model, word, why=why) for word in self.words])

    def prompt(self, start: int, context: int) -> str:
        """Items ``start .. start + context - 1``, each followed by the separator."""
        return "".join(word + self.separator for word in self.words[start:start + context])


def _words(text: str) -> tuple[str, ...]:
    return tuple(f" {word}" for word in text.split())


# Digits are single tokens only without a space in both models' tokenizers (" 4" is " " then "4"), so the numbers
# task is the ten digits written "0,1,2,"; every other task is words with their leading space.
TASKS: dict[str, Task] = {task.name: task for task in (
    Task("numbers", tuple(str(digit) for digit in range(10)), ","),
    Task("number words", _words("one two three four five six seven eight nine ten eleven twelve thirteen "
                                "fourteen fifteen sixteen seventeen eighteen nineteen twenty"), THEN),
    Task("days", _words("Monday Tuesday Wednesday Thursday Friday Saturday Sunday"), THEN),
    Task("months", _words("January February March April May June July August September October November "
                          "December"), THEN),
    Task("letters", _words("A B C D E F G H I J K L M N O P Q R S T U V W X Y Z"), THEN),
    Task("ordinal words", _words("first second third fourth fifth sixth seventh eighth ninth tenth"), THEN),
)}
GATE_TASKS = ("numbers", "number words", "days", "months", "letters")  # the five tasks of the issue
SCREEN_TASKS = ("numbers", "number words", "days", "months")
HELD_OUT_TASKS = ("letters", "ordinal words")  # tokens the screen never scores
HELD_OUT_FAMILY = "letters and ordinal words (tokens the screen never scored)"


@dataclass(frozen=True)
class Sizes:
    """How many context items, shuffles and draws each step uses (the notebook's parameters cell sets these)."""

    context: int = 3  # items before the one to predict
    n_shuffles: int = 200  # shuffled orders per task for the screen's control
    top_k: int = 3
    n_random: int = 20
    heldout_draws: int = 20  # fresh draws for the held-out ablation; 0 skips it


def _check_tasks(names: Sequence[str]) -> None:
    unknown = [name for name in names if name not in TASKS]
    if unknown or not names:
        raise ValueError(f"unknown or no tasks {unknown or list(names)}; the tasks are: {', '.join(TASKS)}")


# --------------------------------------------------------------------------------------------------
# Prompts: every window of `context` consecutive items of each task, and the item after it.


@dataclass(frozen=True)
class SuccessorPrompts:
    """Incrementing prompts of several tasks, all of one length, with what each must be read against.

    Attributes:
        batch: the prompts; ``answers`` holds each prompt's successor.
        task: ``[batch]`` index into `names` of each prompt's task.
        names: the tasks, in order.
        ids: ``[n_ids]`` every token of every task (the columns a metric needs).
        candidates: ``[batch, n_ids]`` True at the tokens of the prompt's own task.
        answer_column: ``[batch]`` the successor's column in `ids`.
    """

    batch: tasks.TaskBatch
    task: Int[Tensor, "batch"]
    names: tuple[str, ...]
    ids: Int[Tensor, "n_ids"]
    candidates: Bool[Tensor, "batch n_ids"]
    answer_column: Int[Tensor, "batch"]


def incrementing_prompts(model: TransformerBridge, names: Sequence[str], *, context: int) -> SuccessorPrompts:
    """``"Monday then Tuesday then Wednesday then"`` -> `` Thursday`` for every window of each task."""
    _check_tasks(names)
    if context < 1:
        raise ValueError(f"context must be at least 1 item; got {context}")
    task_ids = [TASKS[name].ids(model) for name in names]
    ids = torch.cat(task_ids)
    texts, answers, task_of, candidates = [], [], [], []
    for index, (name, own) in enumerate(zip(names, task_ids)):
        mask = torch.isin(ids, own)
        for start in range(len(own) - context):
            texts.append(TASKS[name].prompt(start, context))
            answers.append(int(own[start + context]))
            task_of.append(index)
            candidates.append(mask)
    if not texts:
        raise ValueError(f"no task among {list(names)} has more than context = {context} items")
    answers_t = torch.tensor(answers)
    batch = tasks.TaskBatch(name="incrementing", tokens=tasks.tokenize_prompts(model, texts), prompts=tuple(texts),
                            answers=answers_t)
    column = (ids[None, :] == answers_t[:, None]).float().argmax(-1)
    return SuccessorPrompts(batch=batch, task=torch.tensor(task_of), names=tuple(names), ids=ids,
                            candidates=torch.stack(candidates), answer_column=column)


def successor_log_probs(logits: Float[Tensor, "row n_ids"], prompts: SuccessorPrompts) -> Float[Tensor, "row"]:
    """Log-probability of each prompt's successor among its own task's tokens (row r is prompt r % batch)."""
    prompt = torch.arange(logits.shape[0]) % len(prompts.answer_column)
    masked = logits.float().cpu().masked_fill(~prompts.candidates[prompt], float("-inf"))
    return masked.log_softmax(-1).gather(-1, prompts.answer_column[prompt, None])[:, 0]


# --------------------------------------------------------------------------------------------------
# Behaviour gate: does the model continue an incrementing sequence?


@dataclass(frozen=True)
class SuccessorGate:
    """The gate's verdict and what it rests on.

    Attributes:
        gate: top-1 among the task's tokens against a guess among those the prompt has not used.
        strict: top-1 over the whole vocabulary is the successor, interval over prompts.
        by_task: task -> (top-1 among the task's tokens, top-1 over the whole vocabulary), intervals over
            the task's prompts.
    """

    gate: stats.GateResult
    strict: stats.Estimate
    by_task: dict[str, tuple[stats.Estimate, stats.Estimate]]

    @property
    def passed(self) -> bool:
        return self.gate.passed

    def summary(self) -> str:
        tasks_text = "; ".join(f"{name} {among.mean:.2f} / {strict.mean:.2f} (n = {among.n})"
                               for name, (among, strict) in self.by_task.items())
        return (f"{self.gate.summary()}\nstrict top-1 over the whole vocabulary: {self.strict}\n"
                f"by task (among the task's tokens / whole vocabulary): {tasks_text}")


def gate(model: TransformerBridge, *, names: Sequence[str] = GATE_TASKS, context: int, seed: int) -> SuccessorGate:
    """Top-1 of the successor among its task's tokens on every incrementing window, against 1 / (task size -
    context), a guess among the tokens the prompt has not used (paired per prompt). Passes when p < 0.01 and the
    lower end of the gap's interval clears `MIN_EFFECT`."""
    prompts = incrementing_prompts(model, names, context=context)
    final = capture.final_at(model, prompts.batch.tokens)  # [batch, d_model]
    masked = readout.logits(model, final, prompts.ids).masked_fill(~prompts.candidates, float("-inf"))
    hit = (masked.argmax(-1) == prompts.answer_column).float()
    strict = (readout.logits(model, final).argmax(-1) == prompts.batch.answers).float()
    unused = 1.0 / (prompts.candidates.sum(-1).float() - context)
    result = stats.behaviour_gate(hit, unused, paired=True, min_effect=MIN_EFFECT, seed=seed,
                                  name="incrementing", metric_name="successor top-1 among the task's tokens",
                                  null_name="for a guess among the task's tokens the prompt has not used")
    by_task = {name: (stats.bootstrap_ci(hit[prompts.task == i], seed=seed),
                      stats.bootstrap_ci(strict[prompts.task == i], seed=seed)) for i, name in enumerate(prompts.names)}
    return SuccessorGate(gate=result, strict=stats.bootstrap_ci(strict, seed=seed), by_task=by_task)


# --------------------------------------------------------------------------------------------------
# Screen: the succession score of every head, against shuffled orders.


def shuffled_orders(n: int, count: int, *, seed: int) -> Int[Tensor, "order n"]:
    """`count` random orders of ``0..n-1`` (seeded): the successor relations the control scores against."""
    if n < 2 or count < 1:
        raise ValueError(f"need n >= 2 tokens and count >= 1 orders; got n={n}, count={count}")
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=generator) for _ in range(count)])


def family_threshold(shuffled: Float[Tensor, "shuffle layer head"], quantile: float = QUANTILE) -> float:
    """The pass bar: the `quantile` over shuffles of the best head's score in each shuffle. A model in which
    no head maps tokens to their successors has a head above it in only ``1 - quantile`` of the shuffles."""
    if shuffled.ndim != 3 or shuffled.shape[0] < 1:
        raise ValueError(f"shuffled must be [shuffle, layer, head] with at least one shuffle; "
                         f"got {tuple(shuffled.shape)}")
    return float(torch.quantile(shuffled.flatten(1).max(-1).values.double(), quantile))


def passing_heads(scores: Float[Tensor, "layer head"], shuffled: Float[Tensor, "shuffle layer head"], *,
                  quantile: float = QUANTILE) -> list[Head]:
    """The pass rule: heads whose succession score is above `family_threshold(shuffled)`, best first."""
    if tuple(scores.shape) != tuple(shuffled.shape[1:]):
        raise ValueError(f"scores {tuple(scores.shape)} and shuffled {tuple(shuffled.shape)} must share "
                         "[layer, head]")
    return heads.top(scores, where=scores > family_threshold(shuffled, quantile))


@dataclass(frozen=True)
class SuccessionScreen:
    """Succession scores of every head on some tasks, per task and pooled, and the shuffled-order control.

    Attributes:
        names: the tasks scored.
        per_task: ``[task, layer, head]`` the succession score on each task.
        shuffled: ``[shuffle, layer, head]`` the pooled score against shuffled orders of every task.
        copying: ``[task, layer, head]`` the share of tokens each head maps to themselves (top column = itself).
        diagonal: ``[task, layer, head]`` mean over tokens of the token's own logit minus the mean logit of the
            task's other tokens, in the table's unit-scale logits: positive copies, negative pushes the read
            token down (`ov.ov_diagonal_strength` on the effective embedding).
        counts: tokens scored per task (all but the last in the order).
    """

    names: tuple[str, ...]
    per_task: Float[Tensor, "task layer head"]
    shuffled: Float[Tensor, "shuffle layer head"]
    copying: Float[Tensor, "task layer head"]
    diagonal: Float[Tensor, "task layer head"]
    counts: tuple[int, ...]
    quantile: float = QUANTILE

    @property
    def scores(self) -> Float[Tensor, "layer head"]:
        """The pooled succession score: the share of all scored tokens whose top output is their successor."""
        weights = torch.tensor(self.counts, dtype=torch.float32)[:, None, None]
        return (self.per_task * weights).sum(0) / weights.sum()

    @property
    def threshold(self) -> float:
        return family_threshold(self.shuffled, self.quantile)

    @property
    def passing(self) -> list[Head]:
        return passing_heads(self.scores, self.shuffled, quantile=self.quantile)

    @property
    def chance(self) -> float:
        """The score of a head that picks a uniformly random candidate for every token, pooled over tasks."""
        return sum(count / (count + 1) for count in self.counts) / sum(self.counts)

    def top(self, k: int) -> list[Head]:
        return heads.top(self.scores, k)

    def task_scores(self, head: Head) -> dict[str, float]:
        """One head's succession score on each task."""
        return {name: float(self.per_task[i][head]) for i, name in enumerate(self.names)}

    def summary(self) -> str:
        passing = self.passing
        return (f"succession score on {', '.join(self.names)} ({sum(self.counts)} tokens, chance "
                f"{self.chance:.3f}): top {heads.labels(self.top(5), self.scores, signed=False)}; "
                f"pass bar {self.threshold:.3f} (the {self.quantile:.0%} quantile of the best head's score over "
                f"{self.shuffled.shape[0]} shuffled orders); {len(passing)} of {self.scores.numel()} heads pass"
                + (f": {heads.labels(passing, self.scores, signed=False)}" if passing else ""))


def screen(model: TransformerBridge, *, names: Sequence[str] = SCREEN_TASKS, n_shuffles: int, seed: int,
           quantile: float = QUANTILE) -> SuccessionScreen:
    """Succession scores of every head on each task in `names` (one block-0 pass per task, then weights only),
    and the pooled score against `n_shuffles` shuffled orders (shuffle s of task i uses seed + i)."""
    _check_tasks(names)
    weights = ov.ov_weights(model)
    per_task, shuffled, copying, diagonal, counts = [], [], [], [], []
    for i, name in enumerate(names):
        ids = TASKS[name].ids(model)
        table = ov.effective_ov_logits(model, ids, weights)  # [layer, head, n, n]
        n = len(ids)
        per_task.append(ov.order_scores(table, torch.arange(n))[0])
        shuffled.append(ov.order_scores(table, shuffled_orders(n, n_shuffles, seed=seed + i)) * (n - 1))
        copying.append((table.argmax(-1) == torch.arange(n)).float().mean(-1))
        own = table.diagonal(dim1=-2, dim2=-1)  # [layer, head, n]
        diagonal.append((own - (table.sum(-1) - own) / (n - 1)).mean(-1))
        counts.append(n - 1)
    pooled = torch.stack(shuffled).sum(0) / sum(counts)  # [shuffle, layer, head], pooled like `scores`
    return SuccessionScreen(names=tuple(names), per_task=torch.stack(per_task), shuffled=pooled,
                            copying=torch.stack(copying), diagonal=torch.stack(diagonal), counts=tuple(counts),
                            quantile=quantile)


# --------------------------------------------------------------------------------------------------
# Causal check: the successor's log-probability with the top heads mean-ablated, against random sets.


def ablation(model: TransformerBridge, found: Sequence[Head], prompts: SuccessorPrompts, *, n_random: int,
             seed: int) -> controls.CausalCheck:
    """Mean-ablate `found` together, and `n_random` sets of as many heads drawn from all heads (seeded), on
    `prompts`; the change of the successor's log-probability among its task's tokens. Head means are taken over
    the same prompts (all positions). A drop is the expected effect: "as strong" means "at least as low"."""
    found = [tuple(head) for head in found]
    if not found:
        raise ValueError("found is empty: pass the heads to ablate, e.g. screen.top(3)")
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    draws = controls.uniform_sets(n_layers, n_heads, len(found), n_random, seed=seed)
    means = capture.mean_head_outputs(model, prompts.batch.tokens)

    def metric(logits: Tensor, tokens: Tensor) -> Tensor:  # logits [rows, 1, n_ids]
        return successor_log_probs(logits[:, -1], prompts)

    values = interventions.ablated_metric(model, prompts.batch.tokens, [[], found, *draws], metric, mode="mean",
                                          means=means, last_position_only=True, ids=prompts.ids)
    return controls.check_from_values(values, found, metric_name="successor log-probability among its task's tokens",
                                      mode="mean-ablated", null=f"{len(found)} heads drawn from all "
                                      f"{n_layers * n_heads}", seed=seed, larger_is_stronger=False)


def single_head_changes(model: TransformerBridge, found: Sequence[Head], prompts: SuccessorPrompts
                        ) -> Float[Tensor, "head"]:
    """The mean change of the successor's log-probability when each head of `found` is mean-ablated alone
    (means over the same prompts, as in `ablation`): which of the ablated heads carries the effect."""
    found = [tuple(head) for head in found]
    if not found:
        raise ValueError("found is empty: pass the heads to ablate one at a time")
    means = capture.mean_head_outputs(model, prompts.batch.tokens)

    def metric(logits: Tensor, tokens: Tensor) -> Tensor:  # logits [rows, 1, n_ids]
        return successor_log_probs(logits[:, -1], prompts)

    values = interventions.ablated_metric(model, prompts.batch.tokens, [[]] + [[head] for head in found], metric,
                                          mode="mean", means=means, last_position_only=True, ids=prompts.ids)
    return (values[1:] - values[0]).mean(-1)


# --------------------------------------------------------------------------------------------------
# Held-out tasks: letters and ordinal words, which the screen never scored.


@dataclass(frozen=True)
class HeldOutTasks:
    """The screen and the ablation again on held-out tasks."""

    screen: SuccessionScreen
    check: heldout.HeldOut  # screen: every head's pooled succession score on the held-out tasks


def held_out(model: TransformerBridge, found: Sequence[Head], *, sizes: Sizes, seed: int) -> HeldOutTasks:
    """Succession scores (and their shuffled control, seed) on `HELD_OUT_TASKS`, and the ablation of `found` on
    their incrementing prompts against `sizes.heldout_draws` fresh draws (seed + 1)."""
    found = [tuple(head) for head in found]
    again = screen(model, names=HELD_OUT_TASKS, n_shuffles=sizes.n_shuffles, seed=seed)
    check = None
    if sizes.heldout_draws > 0:
        prompts = incrementing_prompts(model, HELD_OUT_TASKS, context=sizes.context)
        check = ablation(model, found, prompts, n_random=sizes.heldout_draws, seed=seed + 1)
    return HeldOutTasks(screen=again, check=heldout.HeldOut(HELD_OUT_FAMILY, found=tuple(found),
                                                            screen=again.scores, check=check))


# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Study:
    """Successor heads measured on one model: gate, screen, ablation of the top heads, held-out tasks."""

    model: str
    gate: SuccessorGate
    screen: SuccessionScreen
    top: tuple[Head, ...]  # the heads the causal check ablates: the top `top_k` by succession score
    ablation: controls.CausalCheck | None  # None when the gate failed
    held_out: HeldOutTasks | None = None

    def checks(self) -> dict[str, controls.CausalCheck]:
        """The causal checks that ran, by the prompts they ran on (for `plots.effect_vs_draws`)."""
        found: dict[str, controls.CausalCheck | None] = {"screen tasks": self.ablation}
        if self.held_out is not None:
            found["held-out tasks"] = self.held_out.check.check
        return {name: check for name, check in found.items() if check is not None}

    def row(self) -> dict[str, object]:
        """One row of the findings table."""
        screened = self.screen
        row: dict[str, object] = {
            "model": self.model,
            "behaviour gate (top-1 among / whole vocabulary)": (
                f"{'pass' if self.gate.passed else 'fail'} ({self.gate.gate.metric.mean:.2f} / "
                f"{self.gate.strict.mean:.2f})"),
            "top heads (succession score)": heads.labels(self.top, screened.scores, signed=False),
            "shuffled-order bar": f"{screened.threshold:.2f}",
            "successor heads": f"{len(screened.passing)} of {screened.scores.numel()}",
        }
        if self.ablation is None:
            return row | {"ablation": "not run (gate failed)"}
        row |= {"ablation of the top heads (log-prob)": str(self.ablation.top),
                "random-k (from all heads)": self.ablation.draws_summary()}
        if self.held_out is not None:
            held = self.held_out
            row["held-out: top scores"] = heads.labels(held.screen.top(1), held.screen.scores, signed=False)
            if held.check.check is not None:
                row["held-out ablation (p)"] = f"{held.check.check.top} (p = {held.check.check.p_value:.3f})"
        return row


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Gate, screen, ablation of the top heads and the held-out tasks, as the successor page runs them.

    Seeds: the gate `seed`, the screen's shuffles `seed + 10`, the ablation `seed + 20`, the held-out tasks
    `seed + 40`.
    """
    name = models.spec_of(model).name
    passed = gate(model, context=sizes.context, seed=seed)
    found = screen(model, n_shuffles=sizes.n_shuffles, seed=seed + 10)
    top = tuple(found.top(sizes.top_k))
    if not passed.passed:
        return Study(model=name, gate=passed, screen=found, top=top, ablation=None)
    prompts = incrementing_prompts(model, SCREEN_TASKS, context=sizes.context)
    check = ablation(model, top, prompts, n_random=sizes.n_random, seed=seed + 20)
    held = held_out(model, top, sizes=sizes, seed=seed + 40)
    return Study(model=name, gate=passed, screen=found, top=top, ablation=check, held_out=held)
