"""Knowledge conflicts across prompt formats: does the memory/context balance, and do the heads, carry over?

The memory and context pages screen their heads in one wording ("The capital of France is Rome. Q: What is
the capital of France? A:"). A small model may recall facts far better in another wording, and a claim
about which side wins a conflict is only worth as much as the model's recall in the format it was
measured in. This module runs the same measurements in several formats:

1. `FORMATS`: the pages' Q/A format, the same with one solved example, a plain statement ("The capital of
   France is"), the statement with one solved example; `HELD_OUT`: other wording of both the question
   and the context sentence, never used to pick heads.
2. `format_row`: in one format, top-1 recall over the whole vocabulary with no context (against the same
   answers scored as another country's capital), then, on the pairs recalled top-1, how the conflict is
   decided (top-1 answer kinds; two-way share where the context capital beats the remembered one) and
   every head's direct effect on ``logit[memory] - logit[context]``.
3. `study(model, *, sizes, seed)`: every format on one model, with `Study.table` and `Study.keeps`
   (which named heads keep the sign of their role in each format). Both conflict pages show it, so the
   result is kept in `helpers.store` and the second page reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from helpers import attribution, capture, models, readout, stats, store
from helpers.experiments import conflict
from helpers.experiments.conflict import Pair, PromptFormat
from helpers.heads import Head, label
from helpers.tasks import tokenize_prompts

EXAMPLE: Pair = ("Japan", "Tokyo")

FORMATS: tuple[PromptFormat, ...] = (
    conflict.QA,
    PromptFormat("Q/A, one solved example", conflict.QUESTION,
                 preamble="Q: What is the capital of Japan? A: Tokyo\n", example=EXAMPLE),
    PromptFormat("statement", "The capital of {country} is"),
    PromptFormat("statement, one solved example", "The capital of {country} is",
                 preamble="The capital of Japan is Tokyo.\n", example=EXAMPLE),
)
# Held out: other wording of the question and of the context sentence; no head is picked in it.
HELD_OUT = PromptFormat("held out: other wording, one solved example",
                        "Everyone knows that the capital city of {country} is",
                        context="In {country}, the seat of government is {capital}. ",
                        preamble="Everyone knows that the capital city of Japan is Tokyo.\n", example=EXAMPLE)


@dataclass(frozen=True)
class Sizes:
    """Conflict prompts per format, the fewest recalled pairs for which the conflict is measured, and the
    held-out causal check's prompts and random draws."""

    prompts: int = 40
    min_known: int = 8
    ablation_prompts: int = 12
    reference_prompts: int = 24
    n_random: int = 20


@dataclass(frozen=True)
class FormatRow:
    """One format on one model.

    Attributes:
        recall / recall_null: no context, the top-1 token over the whole vocabulary is the capital / is a
            deranged pair's capital, over every usable pair.
        known: the pairs recalled top-1 (the conflict prompts ask only about these).
        top1: under conflict, shares of top-1 answers that are the remembered capital, the context's, or other.
        context_share: under conflict, two-way share of prompts whose context capital's logit beats the
            remembered capital's.
        dla: ``[layer, head]`` mean direct effect of each head on ``logit[memory] - logit[context]`` under
            conflict (positive = pushes memory).
        The last three are None when fewer than `Sizes.min_known` pairs are recalled.
    """

    fmt: str
    recall: stats.Estimate
    recall_null: stats.Estimate
    known: tuple[Pair, ...]
    top1: dict[str, stats.Estimate] | None
    context_share: stats.Estimate | None
    dla: Float[Tensor, "layer head"] | None


def usable_pairs(model, fmt: PromptFormat) -> list[Pair]:
    """`conflict.capital_pairs` without the format's solved example."""
    return [pair for pair in conflict.capital_pairs(model)
            if fmt.example is None or (pair[0] != fmt.example[0] and pair[1] != fmt.example[1])]


def format_row(model, fmt: PromptFormat, *, sizes: Sizes = Sizes(), seed: int = 0) -> FormatRow:
    """Recall with no context, then the conflict on the recalled pairs, in one format."""
    pairs = usable_pairs(model, fmt)
    ids = conflict.capital_ids(model, pairs)
    tokens = tokenize_prompts(model, [fmt.text("memory_only", country, capital, capital) for country, capital in pairs])
    _, top1 = conflict.last_logits(model, tokens, ids[:1])
    shuffled = ids[conflict.derangement(len(pairs), seed=seed)]
    recalled = top1 == ids
    known = tuple(pair for pair, ok in zip(pairs, recalled.tolist()) if ok)
    recall = stats.bootstrap_ci(recalled.float(), seed=seed)
    recall_null = stats.bootstrap_ci((top1 == shuffled).float(), seed=seed)
    if len(known) < max(sizes.min_known, 2):  # two capitals at least: a counterfactual needs another pair
        return FormatRow(fmt.name, recall, recall_null, known, None, None, None)
    prompts = conflict.conflict_prompts(model, known, n=sizes.prompts, seed=seed + 10, counterfactuals=pairs, fmt=fmt)
    dla, difference, top1 = [], [], []
    step = capture.rows_per_chunk(model, 1)
    for part in range(0, len(prompts), step):  # one stopped pass per chunk: answers and DLA
        rows = slice(part, part + step)
        run = capture.read_end(model, prompts.conflict[rows])
        memory_ids, context_ids = prompts.memory_ids[rows], prompts.context_ids[rows]
        dla.append(attribution.attribution_from_read(model, run, memory_ids, context_ids))
        logits = readout.logits(model, run.final)  # [batch, vocab]
        index = torch.arange(len(logits))
        difference.append(logits[index, memory_ids] - logits[index, context_ids])
        top1.append(logits.argmax(-1))
    kinds = conflict.answer_kinds(torch.cat(top1), prompts.memory_ids, prompts.context_ids)
    context_share = stats.bootstrap_ci(conflict.context_wins(torch.cat(difference)).float(), seed=seed)
    return FormatRow(fmt.name, recall, recall_null, known, conflict.answer_shares(kinds, seed=seed), context_share,
                     torch.cat(dla, -1).mean(-1))


def held_out_check(model, row: FormatRow, memory_heads: Sequence[Head], context_heads: Sequence[Head], *,
                   fmt: PromptFormat = HELD_OUT, sizes: Sizes = Sizes(), seed: int = 0) -> conflict.ConflictAblation:
    """`conflict.causal_check` of heads picked in another format, on `fmt`'s prompts about the pairs that `row`
    (the same format's `format_row`) found recalled: do the heads and their effect carry over?"""
    if len(row.known) < 2:
        raise ValueError(f"{row.fmt}: {len(row.known)} pairs recalled; the causal check needs at least two")
    pairs = usable_pairs(model, fmt)
    prompts = conflict.conflict_prompts(model, row.known, n=sizes.ablation_prompts, seed=seed + 20,
                                        counterfactuals=pairs, fmt=fmt)
    reference = conflict.conflict_prompts(model, pairs, n=sizes.reference_prompts, seed=seed + 30, fmt=fmt)
    return conflict.causal_check(model, prompts, reference, memory_heads, context_heads, n_random=sizes.n_random,
                                 seed=seed)


@dataclass(frozen=True)
class Study:
    """Every format on one model; `rows[-1]` is the held-out format."""

    model: str
    rows: tuple[FormatRow, ...]

    def row_of(self, name: str) -> FormatRow:
        for row in self.rows:
            if row.fmt == name:
                return row
        raise KeyError(f"no format {name!r}; formats: {[r.fmt for r in self.rows]}")

    def best(self) -> FormatRow:
        """The format in which the model recalls the most facts top-1 (the first such, on a tie)."""
        return max(self.rows[:-1], key=lambda r: r.recall.mean)

    def keeps(self, found: Sequence[Head], role: str) -> dict[str, list[bool]]:
        """Per measured format, whether each head's direct effect has its role's sign (memory > 0, context < 0)."""
        if role not in ("memory", "context"):
            raise ValueError(f"role must be 'memory' or 'context'; got {role!r}")
        sign = 1 if role == "memory" else -1
        return {r.fmt: [bool(sign * r.dla[tuple(h)] > 0) for h in found] for r in self.rows if r.dla is not None}

    def shares(self) -> dict[str, stats.Estimate]:
        """Per format, top-1 recall with no context and (where measured) the share of conflicts the context
        wins: the bars of the pages' format figure."""
        return {f"{r.fmt}: {what}": value for r in self.rows
                for what, value in (("top-1 recall", r.recall), ("context beats memory", r.context_share))
                if value is not None}

    def table(self, found: Sequence[Head] = ()):
        """One row per format: recall, the conflict's outcome, and the direct effect of the `found` heads."""
        import pandas as pd

        records = []
        for r in self.rows:
            record = {"format": r.fmt, "top-1 recall, no context": str(r.recall), "recalled pairs": len(r.known)}
            if r.dla is not None:
                record |= {"conflict top-1: memory / context / other":
                           " / ".join(f"{r.top1[k].mean:.2f}" for k in conflict.ANSWER_KINDS),
                           "context beats memory (two-way)": str(r.context_share)}
                record |= {f"{label(h)} DLA": round(float(r.dla[tuple(h)]), 2) for h in found}
            records.append(record)
        return pd.DataFrame(records).set_index("format").fillna("")

    def row(self) -> dict[str, object]:
        best = self.best()
        held = self.rows[-1]
        return {"model": self.model, "best format (top-1 recall)": f"{best.fmt} ({best.recall.mean:.2f})",
                "context beats memory there": str(best.context_share) if best.context_share else "not measured",
                "held out: recall / context beats memory": f"{held.recall.mean:.2f} / "
                + (str(held.context_share) if held.context_share else "not measured")}


def _state(row: FormatRow) -> dict:
    return {"fmt": row.fmt, "recall": asdict(row.recall), "recall_null": asdict(row.recall_null),
            "known": [list(pair) for pair in row.known],
            "top1": None if row.top1 is None else {k: asdict(v) for k, v in row.top1.items()},
            "context_share": None if row.context_share is None else asdict(row.context_share), "dla": row.dla}


def _row(state: dict) -> FormatRow:
    return FormatRow(fmt=state["fmt"], recall=stats.Estimate(**state["recall"]),
                     recall_null=stats.Estimate(**state["recall_null"]), known=tuple(map(tuple, state["known"])),
                     top1=None if state["top1"] is None else {k: stats.Estimate(**v) for k, v in state["top1"].items()},
                     context_share=None if state["context_share"] is None else stats.Estimate(**state["context_share"]),
                     dla=state["dla"])


def study(model, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """`format_row` for each of `FORMATS` and `HELD_OUT`, in that order (kept in `helpers.store`)."""
    name = models.spec_of(model).name

    def compute() -> list[dict]:
        return [_state(format_row(model, fmt, sizes=sizes, seed=seed)) for fmt in FORMATS + (HELD_OUT,)]

    # the sweep reads only these sizes; the held-out check's sizes must not split the store entry
    states = store.cached("conflict-formats", compute, model=name, prompts=sizes.prompts, min_known=sizes.min_known,
                          seed=seed)
    return Study(model=name, rows=tuple(_row(state) for state in states))
