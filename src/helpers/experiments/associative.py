"""Bietti et al.'s associative-memory toy: trigger sequences, recall metrics, weight-product memories.

Bietti et al. 2023 (*Birth of a Transformer: A Memory Viewpoint*) train a two-layer transformer on
sequences drawn from a global bigram model in which a few *trigger* tokens are always followed by an
*output* token that changes from sequence to sequence. Predicting the token after a trigger's second
occurrence needs in-context recall (an induction-like head in layer 2, fed by a previous-token head in
layer 1); every other token needs only the global bigram statistics. They read each trained weight
matrix as an associative memory ``W = sum_i u_j(i) e_i^T`` and check that ``u_j^T W e_i`` is largest
for the stored partner.

Three parts, in the order the notebook uses them:

- Data: ``TriggerTask`` (a random bigram model, its triggers, ``sample`` for ``toy_train.train``) and
  ``TriggerBatch`` (tokens plus where triggers occur).
- Behaviour: ``recall_metrics`` (in-context vs first-occurrence vs global-bigram accuracy, per
  sequence) and ``trigger_evaluator`` (the ``evaluate`` callback of ``toy_train.train``).
- Memories: ``association_scores`` / ``memory_recall`` (generic), and the three products of the
  two-layer circuit: ``ov_copy_scores`` (layer-2 W_V W_O), ``trigger_key_scores`` (layer-2 W_QK read
  through layer 1's W_V W_O) and ``positional_qk_scores`` (layer-1 W_QK on positions).

Also ``zero_ablated`` (a copy of a toy model with some heads' outputs removed), ``ablation_accuracies``
(the recall metrics with each of several head sets removed) and ``held_out_probe`` (fresh sequences of
the same task at another trigger rate, for the held-out check). The same behaviour on a pretrained LM is
`helpers.experiments.recall`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from dataclasses import dataclass

import numpy
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from helpers import heads, toy, toy_train
from helpers.heads import Head


# --------------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class TriggerBatch:
    """Sequences of a ``TriggerTask`` and where their triggers are.

    Attributes:
        tokens: ``[batch, pos]`` token ids.
        outputs: ``[batch, trigger]`` the output token each trigger maps to in each sequence.
        is_trigger: True where ``tokens`` holds a trigger.
        repeat_trigger: True where a trigger occurs that already occurred earlier in the sequence:
            the next token is that sequence's output, and only the context says which it is.
        first_trigger: True at a trigger's first occurrence (its output is unpredictable).
    """

    tokens: Int[Tensor, "batch pos"]
    outputs: Int[Tensor, "batch trigger"]
    is_trigger: Bool[Tensor, "batch pos"]
    repeat_trigger: Bool[Tensor, "batch pos"]
    first_trigger: Bool[Tensor, "batch pos"]

    def to_toy_batch(self) -> toy_train.ToyBatch:
        """Every next-token prediction is trained, as in the paper (the last position has none)."""
        mask = torch.ones_like(self.tokens, dtype=torch.bool)
        mask[:, -1] = False
        return toy_train.ToyBatch(tokens=self.tokens, loss_mask=mask)


@dataclass(frozen=True)
class TriggerTask:
    """A random global bigram model with ``n_triggers`` trigger tokens (Bietti et al.'s synthetic task).

    Sequence generation: the first token is uniform over the non-trigger tokens; after a non-trigger
    token ``i`` the next token is a trigger with probability ``trigger_rate`` (uniform over the
    triggers), otherwise it is drawn from ``bigram[i]``, a row of a Dirichlet(``concentration``)
    matrix over the non-trigger tokens (small ``concentration`` = peaked rows, learnable statistics).
    After trigger k the next token is the sequence's output ``outputs[k]``, drawn uniformly from the
    non-trigger tokens for every sequence. Triggers therefore land at random positions, so no positional
    shortcut can replace looking back (the induction toy's lesson).

    ``seed`` fixes the bigram matrix and the trigger tokens; ``sample(generator, batch)`` draws
    sequences from ``generator`` only, so it is a ready ``sample_batch`` for ``toy_train.train``.
    """

    vocab_size: int = 64
    seq_len: int = 64
    n_triggers: int = 3
    trigger_rate: float = 0.1
    concentration: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_triggers < 1 or self.vocab_size < self.n_triggers + 2:
            raise ValueError(f"need n_triggers >= 1 and vocab_size >= n_triggers + 2 (two ordinary tokens at "
                             f"least); got vocab_size={self.vocab_size}, n_triggers={self.n_triggers}")
        if self.seq_len < 4:
            raise ValueError(f"seq_len must be at least 4 to fit a trigger twice with its output; got {self.seq_len}")
        if not 0 < self.trigger_rate < 1 or self.concentration <= 0:
            raise ValueError(f"need 0 < trigger_rate < 1 and concentration > 0; got trigger_rate="
                             f"{self.trigger_rate}, concentration={self.concentration}")

    @cached_property
    def triggers(self) -> Int[Tensor, "trigger"]:
        """The trigger token ids (fixed by ``seed``)."""
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randperm(self.vocab_size, generator=generator)[: self.n_triggers].sort().values

    @cached_property
    def ordinary(self) -> Int[Tensor, "n"]:
        """Every token that is not a trigger: the candidates for outputs and for bigram continuations."""
        keep = torch.ones(self.vocab_size, dtype=torch.bool)
        keep[self.triggers] = False
        return keep.nonzero().flatten()

    @cached_property  # drawn once per task: sampling reads it for every batch
    def transitions(self) -> Float[Tensor, "vocab vocab"]:
        """The global next-token distribution of every non-trigger token (rows of triggers are zero:
        after a trigger the next token is the sequence-specific output, not a global statistic)."""
        n_ordinary = len(self.ordinary)
        # numpy's seeded Generator has a Dirichlet sampler; torch.distributions draws from the global RNG.
        rng = numpy.random.default_rng(self.seed + 1)
        rows = torch.from_numpy(rng.dirichlet(numpy.full(n_ordinary, self.concentration), size=n_ordinary)).float()
        full = torch.zeros(self.vocab_size, self.vocab_size)
        ordinary = self.ordinary
        full[ordinary[:, None], ordinary[None, :]] = rows * (1 - self.trigger_rate)
        full[ordinary[:, None], self.triggers[None, :]] = self.trigger_rate / self.n_triggers
        return full

    def sample(self, generator: torch.Generator, batch_size: int) -> toy_train.ToyBatch:
        """``sample_batch`` for ``toy_train.train``: fresh sequences, every position trained."""
        return self.sample_triggers(generator, batch_size).to_toy_batch()

    def sample_triggers(self, generator: torch.Generator, batch_size: int, *, transitions: Tensor | None = None
                        ) -> TriggerBatch:
        """Draw ``batch_size`` sequences (see the class docstring) with their trigger bookkeeping."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}")
        triggers, ordinary = self.triggers, self.ordinary
        transitions = self.transitions if transitions is None else transitions
        outputs = ordinary[torch.randint(len(ordinary), (batch_size, self.n_triggers), generator=generator)]
        trigger_index = torch.full((self.vocab_size,), -1, dtype=torch.long)
        trigger_index[triggers] = torch.arange(self.n_triggers)
        tokens = torch.empty(batch_size, self.seq_len, dtype=torch.long)
        tokens[:, 0] = ordinary[torch.randint(len(ordinary), (batch_size,), generator=generator)]
        for pos in range(1, self.seq_len):
            previous = tokens[:, pos - 1]
            which = trigger_index[previous]  # [batch]; -1 for ordinary tokens
            drawn = torch.multinomial(transitions[previous.clamp(min=0)].clamp(min=0) + (which[:, None] >= 0),
                                      1, generator=generator).flatten()
            copied = outputs.gather(1, which.clamp(min=0)[:, None]).flatten()
            tokens[:, pos] = torch.where(which >= 0, copied, drawn)
        return _with_trigger_masks(tokens, outputs, triggers)


def _with_trigger_masks(tokens: Tensor, outputs: Tensor, triggers: Tensor) -> TriggerBatch:
    is_trigger = torch.isin(tokens, triggers)
    same = tokens[:, :, None] == tokens[:, None, :]  # [batch, query, key]
    earlier = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool).tril(-1)
    seen_before = (same & earlier).any(dim=-1)
    return TriggerBatch(tokens=tokens, outputs=outputs, is_trigger=is_trigger,
                        repeat_trigger=is_trigger & seen_before, first_trigger=is_trigger & ~seen_before)


# --------------------------------------------------------------------------------------------------
# Weight products read as associative memories


def association_scores(inputs: Float[Tensor, "n_in d_in"], memory: Float[Tensor, "d_in d_out"],
                       outputs: Float[Tensor, "n_out d_out"]) -> Float[Tensor, "n_in n_out"]:
    """``scores[i, j] = outputs[j]^T memory^T inputs[i]``: how strongly the memory maps input i to output j.

    Bietti et al. read a weight matrix ``W`` as a sum of outer products ``u_j e_i^T``; reading it back
    with input embedding ``e_i`` and output embedding ``u_j`` gives this score, largest for stored pairs.
    """
    if inputs.ndim != 2 or memory.ndim != 2 or outputs.ndim != 2:
        raise ValueError(f"need 2-D inputs [n_in, d_in], memory [d_in, d_out], outputs [n_out, d_out]; got "
                         f"{tuple(inputs.shape)}, {tuple(memory.shape)}, {tuple(outputs.shape)}")
    if inputs.shape[1] != memory.shape[0] or outputs.shape[1] != memory.shape[1]:
        raise ValueError(f"inner sizes differ: inputs {tuple(inputs.shape)} @ memory {tuple(memory.shape)} @ "
                         f"outputs.T {tuple(outputs.shape[::-1])}; pass embeddings as rows")
    return inputs @ memory @ outputs.T


def memory_recall(scores: Float[Tensor, "n_in n_out"], partners: Int[Tensor, "n_in"],
                  candidates: Bool[Tensor, "n_in n_out"] | None = None) -> float:
    """Share of inputs whose highest-scoring candidate output is their stored partner.

    Args:
        scores: e.g. ``association_scores(...)``, one row per input.
        partners: the index of the output each input should recall.
        candidates: which outputs compete for each input (default: all). A partner must be a candidate.

    Ties count as failures unless the partner is the only maximum (a zero memory recalls nothing).
    """
    n_in, n_out = scores.shape
    if tuple(partners.shape) != (n_in,):
        raise ValueError(f"partners must have one entry per row of scores ({n_in},); got {tuple(partners.shape)}")
    if partners.min() < 0 or partners.max() >= n_out:
        raise ValueError(f"partners must index outputs in [0, {n_out}); got {partners.min()}..{partners.max()}")
    if candidates is None:
        candidates = torch.ones(n_in, n_out, dtype=torch.bool)
    if candidates.shape != scores.shape:
        raise ValueError(f"candidates {tuple(candidates.shape)} must match scores {tuple(scores.shape)}")
    if not candidates.gather(1, partners[:, None]).all():
        raise ValueError("every partner must be among its row's candidates; mark it True in candidates")
    masked = scores.masked_fill(~candidates, float("-inf"))
    partner_score = masked.gather(1, partners[:, None])  # [n_in, 1]
    beaten = ((masked >= partner_score) & candidates).sum(dim=1) > 1  # another candidate ties or wins
    return (~beaten).float().mean().item()


def chance_recall(candidates: Bool[Tensor, "n_in n_out"]) -> float:
    """Recall of a memory that picks a uniformly random candidate: the mean of 1 / (candidates per row)."""
    counts = candidates.sum(dim=1)
    if (counts == 0).any():
        raise ValueError("a row of candidates is empty; every input needs at least its partner")
    return (1.0 / counts.float()).mean().item()


def ov_copy_scores(model: toy.AttentionOnlyTransformer, head: Head) -> Float[Tensor, "vocab vocab"]:
    """``W_E W_V W_O W_U`` of one head: how attending to token i raises the logit of token j.

    For the layer-2 head that attends to the output token after an earlier trigger, the memory must
    map each token to itself (Bietti et al.'s ``W_O^2``): recall with ``partners = arange(vocab)``.
    """
    layer, index = _check_head(model, head)
    ov = model.W_V[layer, index] @ model.W_O[layer, index]  # [d_model, d_model]
    return association_scores(model.W_E, ov, model.W_U.T)


def trigger_key_scores(model: toy.AttentionOnlyTransformer, previous_head: Head, induction_head: Head
                       ) -> Float[Tensor, "query_token previous_token"]:
    """Layer-2 query-key memory read through layer 1: ``(W_E W_Q)(W_E W_V' W_O' W_K)^T``.

    Entry [q, p]: the attention score of a query holding token q for a key whose *previous* token was p,
    as written there by ``previous_head`` (K-composition). An induction-like head needs a large [q, q]
    (Bietti et al.'s ``W_K^2`` storing trigger associations): recall with ``partners = arange(vocab)``.
    """
    (l1, h1), (l2, h2) = _check_head(model, previous_head), _check_head(model, induction_head)
    if l1 >= l2:
        raise ValueError(f"previous_head {heads.label((l1, h1))} must sit in an earlier layer than induction_head "
                         f"{heads.label((l2, h2))}")
    queries = model.W_E @ model.W_Q[l2, h2]  # [vocab, d_head]
    keys = model.W_E @ model.W_V[l1, h1] @ model.W_O[l1, h1] @ model.W_K[l2, h2]  # [vocab, d_head]
    return queries @ keys.T


def positional_qk_scores(model: toy.AttentionOnlyTransformer, head: Head) -> Float[Tensor, "query key"]:
    """``(W_pos W_Q)(W_pos W_K)^T``: the attention score position t gives position s through positions alone.

    A previous-token head stores t -> t - 1 (Bietti et al.'s ``W_K^1``): recall with
    ``previous_position_pairs``.
    """
    layer, index = _check_head(model, head)
    return (model.W_pos @ model.W_Q[layer, index]) @ (model.W_pos @ model.W_K[layer, index]).T


def previous_position_pairs(n_ctx: int) -> tuple[Int[Tensor, "query"], Bool[Tensor, "query key"]]:
    """Partners (t - 1) and causal candidates (keys 0..t) for queries t = 1..n_ctx - 1 of a positional memory.

    Returns partners for rows 1..n_ctx-1 and the matching candidate rows; slice scores with ``[1:]``.
    """
    if n_ctx < 2:
        raise ValueError(f"n_ctx must be at least 2 to have a previous position; got {n_ctx}")
    partners = torch.arange(n_ctx - 1)
    candidates = torch.ones(n_ctx, n_ctx, dtype=torch.bool).tril()[1:]
    return partners, candidates


def _check_head(model: toy.AttentionOnlyTransformer, head: Head) -> Head:
    heads.check([head], model.config.n_layers, model.config.n_heads)
    return tuple(head)


# --------------------------------------------------------------------------------------------------
# Behaviour: in-context recall vs global bigrams


def next_token_correct(logits: Float[Tensor, "batch pos vocab"], tokens: Int[Tensor, "batch pos"]
                       ) -> Bool[Tensor, "batch pos"]:
    """True at [b, p] when the top-1 prediction at p is tokens[b, p + 1] (the last column is False)."""
    correct = torch.zeros_like(tokens, dtype=torch.bool)
    correct[:, :-1] = logits[:, :-1].argmax(dim=-1) == tokens[:, 1:]
    return correct


def accuracy_where(correct: Bool[Tensor, "batch pos"], where: Bool[Tensor, "batch pos"]) -> Float[Tensor, "batch"]:
    """Per-sequence accuracy over the positions in `where` (the last position never counts);
    NaN for sequences with no such position, so callers drop them instead of counting them as zero."""
    where = where.clone()
    where[:, -1] = False
    counts = where.sum(dim=1)
    hits = (correct & where).sum(dim=1).float()
    return torch.where(counts > 0, hits / counts.clamp(min=1), torch.full_like(hits, float("nan")))


def recall_accuracies(logits: Float[Tensor, "batch pos vocab"], batch: TriggerBatch,
                      transitions: Float[Tensor, "vocab vocab"]) -> dict[str, Float[Tensor, "batch"]]:
    """Per-sequence top-1 accuracy on the three kinds of position (NaN where a sequence has none).

    - ``in_context``: after a trigger's second or later occurrence; only the context can tell.
    - ``first_trigger``: after a trigger's first occurrence; nothing can tell (chance level).
    - ``bigram``: after ordinary tokens; the global bigram statistics tell.
    - ``bigram_oracle``: the same positions predicted by the true ``transitions`` (the ceiling).
    """
    correct = next_token_correct(logits, batch.tokens)
    ordinary = ~batch.is_trigger
    oracle = torch.zeros_like(correct)
    oracle[:, :-1] = transitions[batch.tokens[:, :-1]].argmax(dim=-1) == batch.tokens[:, 1:]
    return {"in_context": accuracy_where(correct, batch.repeat_trigger),
            "first_trigger": accuracy_where(correct, batch.first_trigger),
            "bigram": accuracy_where(correct, ordinary),
            "bigram_oracle": accuracy_where(oracle, ordinary)}


def trigger_induction_targets(batch: TriggerBatch) -> Bool[Tensor, "batch query key"]:
    """Keys right after an earlier occurrence of the query's trigger (where its output sits), for
    queries at repeated triggers only: the attention target of Bietti et al.'s layer-2 head."""
    tokens = batch.tokens
    n = tokens.shape[1]
    targets = torch.zeros(tokens.shape[0], n, n, dtype=torch.bool)
    targets[:, :, 1:] = tokens[:, :, None] == tokens[:, None, :-1]  # key k follows a copy of the query token
    return targets & torch.ones(n, n, dtype=torch.bool).tril() & batch.repeat_trigger[:, :, None]


def nanmean(values: Tensor) -> float:
    return values[~values.isnan()].mean().item()


def head_memories(model: toy.AttentionOnlyTransformer, task: TriggerTask) -> dict[str, Tensor]:
    """Memory recall of every head's weight products (the "screen" of the toy), as ``[layer, head]`` grids.

    - ``ov_copy``: ``W_E W_V W_O W_U`` maps each output token to itself (chance 1 / vocab).
    - ``positional``: ``W_pos W_QK W_pos^T`` maps each position to the previous one among the causal keys.
    - ``trigger_key``: for layer-2 head h, the best layer-1 head's K-composition memory maps each trigger
      to itself among all tokens (chance 1 / vocab); layer-1 entries are NaN (nothing feeds them).
    """
    n_layers, n_heads = model.config.n_layers, model.config.n_heads
    n_ctx = task.seq_len
    partners, candidates = previous_position_pairs(n_ctx)
    ov = torch.zeros(n_layers, n_heads)
    positional = torch.zeros(n_layers, n_heads)
    trigger_key = torch.full((n_layers, n_heads), float("nan"))
    triggers = task.triggers
    for layer in range(n_layers):
        for head in range(n_heads):
            ov[layer, head] = memory_recall(ov_copy_scores(model, (layer, head))[task.ordinary], task.ordinary)
            scores = positional_qk_scores(model, (layer, head))[:n_ctx, :n_ctx]
            positional[layer, head] = memory_recall(scores[1:], partners, candidates)
            if layer > 0:
                trigger_key[layer, head] = max(
                    memory_recall(trigger_key_scores(model, (layer - 1, h1), (layer, head))[triggers], triggers)
                    for h1 in range(n_heads))
    return {"ov_copy": ov, "positional": positional, "trigger_key": trigger_key}


def trigger_evaluator(task: TriggerTask, probe: TriggerBatch) -> Callable[[nn.Module, int], dict]:
    """``evaluate(model, step)`` for ``toy_train.train``: recall accuracies on a fixed probe, the best head's
    attention scores and the best memory recalls (layer 1 = index 0 in code, layer 2 = index 1).

    Keys: ``in_context``, ``first_trigger``, ``bigram``, ``bigram_oracle`` (probe means),
    ``previous_token`` (best first-layer head), ``trigger_attention`` (best last-layer head),
    ``ov_recall`` (best last-layer head), ``trigger_key_recall``, ``positional_recall`` (best first-layer head).
    """
    from helpers import scores

    transitions = task.transitions
    batch, seq_len = probe.tokens.shape
    previous_targets = scores.previous_token_targets(batch, seq_len)
    induction_targets = trigger_induction_targets(probe)

    def evaluate(model: nn.Module, step: int) -> dict:
        logits, patterns = model(probe.tokens, return_patterns=True)
        accuracies = {name: nanmean(values) for name, values in recall_accuracies(logits, probe, transitions).items()}
        memories = head_memories(model, task)
        return {**accuracies,
                "previous_token": scores.attention_on_targets(patterns, previous_targets)[0].max().item(),
                "trigger_attention": scores.attention_on_targets(patterns, induction_targets)[-1].max().item(),
                "ov_recall": memories["ov_copy"][-1].max().item(),
                "trigger_key_recall": memories["trigger_key"][-1].max().item(),
                "positional_recall": memories["positional"][0].max().item()}

    return evaluate


def zero_ablated(model: toy.AttentionOnlyTransformer, removed: Sequence[Head]) -> toy.AttentionOnlyTransformer:
    """A copy of `model` in which each listed head writes nothing (its ``W_O`` is zero); `model` is untouched.

    Zeroing ``W_O`` removes exactly that head's contribution to the residual stream, so this is zero
    ablation without hooks (the toy has none).
    """
    for head in removed:
        _check_head(model, head)
    ablated = copy.deepcopy(model)
    with torch.no_grad():
        for layer, index in removed:
            ablated.blocks[layer].W_O[index].zero_()
    return ablated.eval()


def first_step_at(steps: Sequence[int], values: Sequence[float], level: float) -> int | None:
    """First evaluation step whose value reaches `level` (None if none does), e.g. when recall passes 0.5."""
    if len(steps) != len(values):
        raise ValueError(f"need one value per step; got {len(steps)} steps and {len(values)} values")
    return next((step for step, value in zip(steps, values) if value >= level), None)


def held_out_probe(task: TriggerTask, *, sequences: int, seed: int, trigger_rate: float
                   ) -> tuple[TriggerTask, TriggerBatch]:
    """Fresh probe sequences of the same task (same triggers, same bigram rows) at another trigger rate.

    The triggers and the bigram table depend on ``task.seed`` only, so the returned task differs from
    `task` in how often triggers occur (a lower rate puts a trigger's earlier occurrence further back);
    every sequence draws its own trigger outputs, as always. Use a `seed` the page's probe did not use.
    """
    if trigger_rate == task.trigger_rate:
        raise ValueError(f"pass another trigger rate than the task's own ({task.trigger_rate}) for a held-out probe")
    held = dataclasses.replace(task, trigger_rate=trigger_rate)
    return held, held.sample_triggers(torch.Generator().manual_seed(seed), sequences)


@torch.no_grad()
def ablation_accuracies(model: toy.AttentionOnlyTransformer, probe: TriggerBatch, transitions: Tensor,
                        ablations: Mapping[str, Sequence[Head]]) -> dict[str, dict[str, Tensor]]:
    """`recall_accuracies` of the intact model ("full model") and with each named head set zero-ablated."""
    out = {"full model": recall_accuracies(model(probe.tokens), probe, transitions)}
    for name, removed in ablations.items():
        out[name] = recall_accuracies(zero_ablated(model, removed)(probe.tokens), probe, transitions)
    return out
