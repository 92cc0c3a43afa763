"""In-context recall in a pretrained model: "... T x ... T" -> x among random tokens.

The toy of `helpers.experiments.associative` learns to recall, after a trigger's second occurrence, the
token that followed its first. The same behaviour in a pretrained model's vocabulary: random ordinary
tokens holding a few key-value bigrams "T x", ending with one of the keys. The control replaces that
key's earlier occurrence with a fresh token, so x is still in the context but nothing ties it to T.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers import capture, models, readout, stats, tasks

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge




def associative_recall_prompts(model: TransformerBridge, *, batch: int, n_pairs: int, length: int, seed: int
                               ) -> tasks.TaskBatch:
    """Random ordinary tokens holding ``n_pairs`` key-value bigrams "T x"; the prompt ends on one key T.

    The answer is the value x that followed that key earlier: the toy's in-context trigger recall, in a
    pretrained model's vocabulary. Keys, values and filler tokens are all distinct within a prompt,
    and pairs sit at random, non-adjacent places, so only the earlier "T x" predicts x.

    ``corrupted`` is the matched control: the queried key's earlier occurrence is replaced by a fresh
    token, so x is still in the context but nothing links it to T (Bietti et al.'s shuffled triggers).
    Positions: ``key`` (the queried key's earlier occurrence) and ``query`` (the last position).
    """
    if batch < 1 or n_pairs < 1 or length < 3 * n_pairs:
        raise ValueError(f"need batch >= 1, n_pairs >= 1 and length >= 3 * n_pairs (each pair plus a gap); "
                         f"got batch={batch}, n_pairs={n_pairs}, length={length}")
    generator = torch.Generator().manual_seed(seed)
    pool = tasks.ordinary_token_ids(model)
    if len(pool) < length + 1:
        raise ValueError(f"the tokenizer has {len(pool)} ordinary tokens but a prompt needs {length + 1} distinct "
                         "ones; use a smaller length")
    bos = tasks.bos_column(model, 1)[0].tolist()
    rows, twins, answers, keys = [], [], [], []
    for _ in range(batch):
        ids = pool[torch.randperm(len(pool), generator=generator)[: length + 1]].tolist()  # distinct tokens
        pair_ids, fresh = ids[: 2 * n_pairs], ids[-1]
        filler = ids[2 * n_pairs: length]
        # choose n_pairs start slots among the filler gaps so that pairs never touch each other
        gaps = torch.randperm(length - 2 * n_pairs - 1, generator=generator)[:n_pairs].sort().values + 1
        body, starts, taken = [], [], 0
        for index, gap in enumerate(gaps.tolist()):
            body += filler[taken:gap]
            taken = gap
            starts.append(len(body))
            body += pair_ids[2 * index: 2 * index + 2]
        body += filler[taken: length - 2 * n_pairs]
        which = int(torch.randint(n_pairs, (1,), generator=generator))
        key, value = pair_ids[2 * which], pair_ids[2 * which + 1]
        control = list(body)
        control[starts[which]] = fresh
        rows.append(bos + body + [key])
        twins.append(bos + control + [key])
        answers.append(value)
        keys.append(len(bos) + starts[which])
    tokens = torch.tensor(rows)
    return tasks.TaskBatch(name="associative_recall", tokens=tokens, prompts=tasks.joined_text(model, tokens),
                           answers=torch.tensor(answers), corrupted=torch.tensor(twins),
                           positions={"key": torch.tensor(keys), "query": torch.full((batch,), tokens.shape[1] - 1)},
                           info={"n_pairs": n_pairs, "length": length, "seed": seed})


@torch.no_grad()
def last_token_recall(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], answers: Int[Tensor, "batch"]
                      ) -> tuple[Bool[Tensor, "batch"], Float[Tensor, "batch"]]:
    """Is the answer the top-1 prediction at the last position, and its log-probability, per prompt.

    Only the last position is unembedded (`capture.final_at`), in mini-batches: Gemma's full logits are
    1 MB per position.
    """
    capture.check_tokens(model, tokens)
    rows = capture.rows_per_chunk(model, 1)
    top, logp = [], []
    for chunk, wanted in zip(tokens.split(rows), answers.split(rows)):
        last = readout.logits(model, capture.final_at(model, chunk)).log_softmax(dim=-1)  # [rows, vocab]
        top.append(last.argmax(dim=-1) == wanted)
        logp.append(last.gather(1, wanted[:, None]).flatten())
    return torch.cat(top), torch.cat(logp)


@dataclass(frozen=True)
class Sizes:
    """Prompts and their shape (the page's parameters cell sets these)."""

    prompts: int = 50
    pairs: int = 3
    length: int = 24


@dataclass(frozen=True)
class Study:
    """The recall gate (log p(x) against the control, paired) and the top-1 accuracy, on one model."""

    model: str
    gate: stats.GateResult
    top1: stats.Estimate
    control_top1: float
    example: str

    def row(self) -> dict[str, object]:
        return {"model": self.model, "in-context recall gate": "pass" if self.gate.passed else "fail",
                "top-1 recall": str(self.top1), "control": f"no earlier 'T x': {self.control_top1:.2f}"}


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Recall prompts, their controls, the gate (at least 1 nat over the control) and top-1 accuracy."""
    name = models.spec_of(model).name
    batch = associative_recall_prompts(model, batch=sizes.prompts, n_pairs=sizes.pairs, length=sizes.length, seed=seed)
    top1, logp = last_token_recall(model, batch.tokens, batch.answers)
    control_top1, control_logp = last_token_recall(model, batch.corrupted, batch.answers)
    gate = stats.behaviour_gate(logp, control_logp, paired=True, min_effect=1.0, seed=seed, name=f"{name} recall",
                                metric_name="log p(x)", null_name="without the earlier 'T x'")
    return Study(model=name, gate=gate, top1=stats.bootstrap_ci(top1.float(), seed=seed),
                 control_top1=control_top1.float().mean().item(), example=batch.prompts[0])
