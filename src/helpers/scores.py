"""Per-head scores computed from attention patterns: pure tensor functions, ``[layer, head]`` results.

Every attention-pattern family score in the book is one question: *what share of a head's attention
falls on the keys the family's hypothesis names?* A family is therefore a boolean ``targets`` mask
(``previous_token_targets``, ``duplicate_token_targets``, ``induction_targets``, ``first_token_targets``)
and one scorer, ``attention_on_targets``. ``family_scores`` computes them all from one captured
pattern tensor, so screening every head for every family costs one forward pass.

The chapter *How results are checked* explains why scores are pre-registered and compared with the
uniform-attention baseline (``uniform_baseline``) and with control prompts.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

FAMILIES = ("previous_token", "duplicate_token", "induction", "first_token")


def attention_on_targets(
    patterns: Float[Tensor, "layer batch head query key"],
    targets: Bool[Tensor, "batch query key"],
) -> Float[Tensor, "layer head"]:
    """Share of each head's attention that falls on the target keys.

    Sums attention on the keys marked in `targets`, then averages over the batch and over queries that
    have at least one target (queries with nothing to find are skipped, not counted as zero).

    Args:
        patterns: attention probabilities; each row sums to 1 over `key`.
        targets: True at [b, q, k] where the family's hypothesis says query q should look,
            e.g. k == q - 1 for previous-token heads (`previous_token_targets`).

    Returns:
        Scores in [0, 1]; 1.0 means every scored query attends only to its targets.
        Uniform causal attention scores `uniform_baseline(targets)`.

    Raises:
        ValueError: if batch/query/key sizes differ (both shapes are named) or no query has a target.

    Example:
        >>> patterns = torch.eye(4).expand(1, 1, 1, 4, 4)          # every query looks at itself
        >>> attention_on_targets(patterns, torch.eye(4, dtype=torch.bool)[None])
        tensor([[1.]])
    """
    if patterns.ndim != 5:
        raise ValueError(
            f"patterns must be [layer, batch, head, query, key]; got {patterns.ndim} dims {tuple(patterns.shape)}"
        )
    expected = (patterns.shape[1], patterns.shape[3], patterns.shape[4])
    if targets.shape != expected:
        raise ValueError(
            f"targets {tuple(targets.shape)} do not match patterns' (batch, query, key) {expected}; "
            "build the targets from the same tokens the patterns were captured on"
        )
    scored: Bool[Tensor, "batch query"] = targets.any(dim=-1)
    if not scored.any():
        raise ValueError("no query has a target key: the prompts contain nothing this score can find")
    on_target = torch.einsum("lbhqk,bqk->lhbq", patterns, targets.to(patterns.dtype))
    return (on_target * scored).sum(dim=(-1, -2)) / scored.sum()


def uniform_baseline(targets: Bool[Tensor, "batch query key"]) -> float:
    """The score a head with uniform causal attention would get: mean of (targets / visible keys).

    It is the natural "no preference" line for a heatmap: a head scoring near it ignores the family's
    targets. Only queries with at least one target count, as in `attention_on_targets`.
    """
    seq_len = targets.shape[-1]
    visible = torch.arange(1, seq_len + 1, dtype=torch.float32)  # query q sees keys 0..q
    shares = targets.sum(-1) / visible  # [batch, query]
    scored = targets.any(-1)
    if not scored.any():
        raise ValueError("no query has a target key: the uniform baseline is undefined")
    return (shares[scored]).mean().item()


def _query_mask(batch: int, seq_len: int, first_query: int) -> Bool[Tensor, "batch query"]:
    if not 0 <= first_query < seq_len:
        raise ValueError(f"first_query must lie in [0, {seq_len}); got {first_query}")
    mask = torch.zeros(batch, seq_len, dtype=torch.bool)
    mask[:, first_query:] = True
    return mask


def offset_targets(batch: int, seq_len: int, offset: int, *, first_query: int = 1) -> Bool[Tensor, "batch query key"]:
    """Targets at a fixed distance back: query q should attend to key q - `offset`.

    Queries before ``max(first_query, offset)`` have no such key and are not scored.
    """
    if offset < 1:
        raise ValueError(f"offset must be at least 1 (a key before the query); got {offset}")
    keys = torch.arange(seq_len)
    back = keys[None, :] == keys[:, None] - offset  # [query, key]; no key for queries before `offset`
    mask = _query_mask(batch, seq_len, first_query)
    return back[None] & mask[:, :, None]


def previous_token_targets(batch: int, seq_len: int, *, first_query: int = 1) -> Bool[Tensor, "batch query key"]:
    """Targets for previous-token heads: query q should attend to key q - 1.

    `first_query` skips early queries; with a BOS token at position 0 pass ``first_query=2`` so that no
    query is scored for attending to BOS (which many heads use as a resting place).
    """
    return offset_targets(batch, seq_len, 1, first_query=first_query)


def duplicate_token_targets(
    tokens: Int[Tensor, "batch pos"], *, first_query: int = 0
) -> Bool[Tensor, "batch query key"]:
    """Targets for duplicate-token heads: earlier positions holding the same token as the query."""
    same = tokens[:, :, None] == tokens[:, None, :]  # [batch, query, key]
    earlier = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool).tril(-1)
    mask = _query_mask(*tokens.shape, first_query)
    return same & earlier & mask[:, :, None]


def induction_targets(
    tokens: Int[Tensor, "batch pos"], *, first_query: int = 0
) -> Bool[Tensor, "batch query key"]:
    """Targets for induction heads: the key *right after* an earlier occurrence of the query's token.

    For "A B ... A" the query at the second A should attend to B (key k with tokens[k - 1] == tokens[q]
    and k - 1 < q). This is Olsson et al.'s prefix-matching pattern.
    """
    batch, seq_len = tokens.shape
    prev_matches = torch.zeros(batch, seq_len, seq_len, dtype=torch.bool)
    # key k is a target when the token before it (k - 1) equals the query token; shift the match by one
    prev_matches[:, :, 1:] = tokens[:, :, None] == tokens[:, None, :-1]
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()  # k <= q, i.e. the copy is earlier
    mask = _query_mask(batch, seq_len, first_query)
    return prev_matches & causal & mask[:, :, None]


def first_token_targets(batch: int, seq_len: int, *, first_query: int = 1) -> Bool[Tensor, "batch query key"]:
    """Targets for 'resting' heads that park attention on position 0 (BOS or the first token).

    Query 0 can only see key 0, so it is skipped by default.
    """
    targets = torch.zeros(batch, seq_len, seq_len, dtype=torch.bool)
    targets[:, :, 0] = True
    return targets & _query_mask(batch, seq_len, first_query)[:, :, None]


def family_targets(
    tokens: Int[Tensor, "batch pos"], *, first_query: int = 1
) -> dict[str, Bool[Tensor, "batch query key"]]:
    """The target masks of every attention-pattern family in `FAMILIES`, for one token batch."""
    batch, seq_len = tokens.shape
    return {
        "previous_token": previous_token_targets(batch, seq_len, first_query=first_query),
        "duplicate_token": duplicate_token_targets(tokens, first_query=first_query),
        "induction": induction_targets(tokens, first_query=first_query),
        "first_token": first_token_targets(batch, seq_len, first_query=max(first_query, 1)),
    }


def family_scores(
    patterns: Float[Tensor, "layer batch head query key"],
    tokens: Int[Tensor, "batch pos"],
    *,
    first_query: int = 1,
) -> dict[str, Float[Tensor, "layer head"]]:
    """Every family score for every head from one captured pattern tensor.

    Families whose targets are absent from the prompts (e.g. induction on text without repeats) are
    left out of the result rather than scored as zero.
    """
    if tokens.shape != (patterns.shape[1], patterns.shape[3]):
        raise ValueError(
            f"tokens {tuple(tokens.shape)} do not match patterns' (batch, query) "
            f"{(patterns.shape[1], patterns.shape[3])}"
        )
    return {
        family: attention_on_targets(patterns, targets)
        for family, targets in family_targets(tokens, first_query=first_query).items()
        if targets.any()
    }


# --------------------------------------------------------------------------------------------------
# Where a head's strongest attention falls: the positional-head histogram (Voita et al. 2019).


def argmax_bin_names(max_offset: int) -> list[str]:
    """Names of the bins of `argmax_offset_shares`, in order: ``offset 0 (itself)``, ``offset 1``, ...,
    ``offset {max_offset}``, ``first position``, ``elsewhere``."""
    if isinstance(max_offset, bool) or not isinstance(max_offset, int) or max_offset < 1:
        raise ValueError(f"max_offset must be an integer >= 1 (offset 1 = the previous token); got {max_offset!r}")
    return ["offset 0 (itself)", *(f"offset {d}" for d in range(1, max_offset + 1)), "first position", "elsewhere"]


def argmax_offset_shares(
    patterns: Float[Tensor, "layer batch head query key"], *, first_query: int, max_offset: int
) -> Float[Tensor, "layer head bin"]:
    """Where each head's strongest attention falls: the share of queries in each relative-offset bin.

    Voita et al. (2019) called a head *positional* when its maximum attention falls on one fixed relative
    position in most cases. For every counted query q this takes the key k* the head attends to most
    (argmax over keys; a tie goes to the earliest key, torch's rule) and puts the query in one bin:

    - bins ``0 .. max_offset``: the offset ``q - k*`` (0 = the query itself, 1 = the previous token, ...);
    - bin ``max_offset + 1``: the first position (k* = 0): BOS when the model prepends one, else the first
      token, which models without BOS use as a resting place (an attention sink);
    - bin ``max_offset + 2``: anywhere else (further back than `max_offset`, not position 0; also a key
      after the query, which a causal pattern cannot have).

    Only queries ``q >= first_query`` count, and `first_query` must exceed `max_offset`: for an earlier query
    the key ``q - d`` of some offset bin d <= max_offset would be position 0, and that offset bin and the
    first-position bin would name the same key. `argmax_bin_names` names the bins.

    Returns:
        ``[layer, head, max_offset + 3]`` shares, averaged over batch and counted queries; each head's bins
        sum to 1. A head that always attends to its previous token has 1.0 in bin 1.

    Raises:
        ValueError: if `patterns` is not ``[layer, batch, head, query, key]`` with query == key, if
            ``max_offset < 1``, or if `first_query` is not in ``[max_offset + 1, query)``.

    Example:
        >>> previous = torch.eye(6).roll(-1, dims=1).tril()       # query q attends to q - 1 (q >= 1)
        >>> argmax_offset_shares(previous.expand(1, 1, 1, 6, 6), first_query=3, max_offset=2)[0, 0]
        tensor([0., 1., 0., 0., 0.])
    """
    names = argmax_bin_names(max_offset)  # validates max_offset
    if patterns.ndim != 5 or patterns.shape[-1] != patterns.shape[-2]:
        raise ValueError(f"patterns must be [layer, batch, head, query, key] with as many keys as queries; got "
                         f"{patterns.ndim} dims {tuple(patterns.shape)}")
    seq_len = patterns.shape[-1]
    if isinstance(first_query, bool) or not isinstance(first_query, int) or not max_offset < first_query < seq_len:
        raise ValueError(f"first_query must lie in [{max_offset + 1}, {seq_len}) so that no offset bin up to "
                         f"max_offset = {max_offset} lands on position 0 and at least one query counts; got "
                         f"{first_query!r}. Use longer sequences or a smaller max_offset")
    strongest = patterns[..., first_query:, :].argmax(dim=-1)  # [layer, batch, head, query >= first_query]
    offset = torch.arange(first_query, seq_len) - strongest
    first, elsewhere = max_offset + 1, max_offset + 2
    bins = torch.where((offset >= 0) & (offset <= max_offset), offset, torch.full_like(offset, elsewhere))
    bins = torch.where(strongest == 0, torch.full_like(bins, first), bins)  # never an offset bin: q > max_offset
    counts = torch.nn.functional.one_hot(bins, len(names)).to(torch.float32)  # [layer, batch, head, query, bin]
    return counts.mean(dim=(1, 3))


# --------------------------------------------------------------------------------------------------
# Behaviour metrics: pure functions of logits, one number per prompt (used by gates and ablations).


def next_token_losses(
    logits: Float[Tensor, "batch pos vocab"], tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos_minus_1"]:
    """Cross-entropy of each next-token prediction: entry [b, i] is the loss of predicting tokens[b, i + 1]."""
    return span_losses(logits, tokens, 1, tokens.shape[1])


def span_losses(
    logits: Float[Tensor, "batch pos vocab"], tokens: Int[Tensor, "batch pos"], start: int, stop: int
) -> Float[Tensor, "batch span"]:
    """Loss of predicting each of tokens[start:stop] from the position before it.

    Only the needed positions are normalised: with Gemma's 262k-token vocabulary the log-softmax over
    every position is most of an ablation's cost.
    """
    if not 1 <= start < stop <= tokens.shape[1]:
        raise ValueError(f"need 1 <= start < stop <= {tokens.shape[1]}; got start={start}, stop={stop}")
    predicting = logits[:, start - 1:stop - 1]  # [batch, span, vocab]
    targets = tokens[:, start:stop].to(logits.device)
    losses = torch.nn.functional.cross_entropy(predicting.flatten(0, 1).float(), targets.flatten(), reduction="none")
    return losses.reshape(targets.shape)


def span_loss(
    logits: Float[Tensor, "batch pos vocab"], tokens: Int[Tensor, "batch pos"], start: int, stop: int
) -> Float[Tensor, "batch"]:
    """Mean loss of predicting tokens[start:stop] (each from the position before it), per prompt."""
    return span_losses(logits, tokens, start, stop).mean(dim=1)


def repeated_half_losses(
    logits: Float[Tensor, "batch pos vocab"], tokens: Int[Tensor, "batch pos"], first_start: int, second_start: int
) -> tuple[Float[Tensor, "batch"], Float[Tensor, "batch"]]:
    """Per-prompt loss on the first copy and on the second copy of a repeated random sequence.

    The first token of each copy is left out: nothing in the context predicts it. Every other token of
    the second copy can be predicted by copying from the first, which is what induction heads do.
    """
    first = span_loss(logits, tokens, first_start + 1, second_start)
    second = span_loss(logits, tokens, second_start + 1, tokens.shape[1])
    return first, second
