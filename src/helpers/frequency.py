"""Token frequencies: how often each token of a model's tokenizer occurs in the screen corpus, and which
earlier token of a prompt is the least frequent one.

Voita et al. (2019) found a head in a translation encoder whose strongest attention lands on the least
frequent token of the sentence. Measuring that needs a frequency for every token, so this module counts
the tokens of the text the book's screens read, `tasks.stdlib_prose` (Python's standard-library
docstrings; never the held-out language reference, whose windows the rare-words page scores with these
counts). About 45k tokens: most everyday English words never occur in it (" river", " dog" and " house"
all count 0), so counts alone cannot order them.

**The order** (`rarity_rank`): fewer occurrences is rarer; among tokens with the same count, the larger
id is rarer. For byte-level BPE (SmolLM2) the id is the merge order, and later merges join rarer strings;
Gemma's SentencePiece ids roughly follow the same order. The count is the measurement, the id only breaks
its ties (the rare-words page's reference entry calls the merge rank the cheap fallback).

- `token_counts`: unigram counts of the docstrings for one tokenizer.
- `rarity_rank`: each token id's place in the order, 0 = the most frequent.
- `least_frequent_earlier`: for every query position, the position of the least frequent earlier token.
- `least_frequent_piece`: which piece of a word counts as the word's rare token.

Example::

    >>> rank = rarity_rank(torch.tensor([5, 0, 2, 0]))      # ids 1 and 3 never occur; 3 is the later id
    >>> rank.tolist()
    [0, 2, 1, 3]
    >>> least_frequent_earlier(torch.tensor([[0, 2, 3, 1, 0]]), rank).tolist()
    [[-1, -1, 1, 2, 2]]
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from torch import Tensor

from helpers import tasks

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@lru_cache(maxsize=4)
def _counts(tokenizer, d_vocab: int) -> Tensor:
    # encoding the ~200k-character corpus takes ~0.2 s; a page asks for the counts several times
    ids = torch.tensor(tokenizer.encode(tasks.stdlib_prose(), add_special_tokens=False))
    return torch.bincount(ids, minlength=d_vocab)[:d_vocab]


def token_counts(model: TransformerBridge) -> Int[Tensor, "d_vocab"]:
    """How often each token id occurs in the screen corpus (`tasks.stdlib_prose`), tokenized without BOS.

    A fresh tensor each call (the cached one is never handed out, so a caller cannot change it).
    """
    return _counts(model.tokenizer, model.cfg.d_vocab).clone()


def rarity_rank(counts: Int[Tensor, "d_vocab"]) -> Int[Tensor, "d_vocab"]:
    """Each token id's place from most frequent (0) to least frequent (``d_vocab - 1``).

    Fewer occurrences is rarer; a tie in count goes to the larger id (the later BPE merge). The order is
    total, so every prompt has exactly one least frequent token type.

    Raises:
        ValueError: if `counts` is not a 1-D tensor of non-negative integers.
    """
    if counts.ndim != 1 or counts.is_floating_point() or (counts < 0).any():
        raise ValueError(f"counts must be a 1-D tensor of non-negative integer counts, one per token id; got "
                         f"dtype {counts.dtype}, shape {tuple(counts.shape)}")
    ids = torch.arange(len(counts))
    # sort key: count descending, then id ascending; stable sorts applied from the last key to the first
    by_id = ids  # already ascending
    order = by_id[torch.sort(-counts[by_id], stable=True).indices]  # most frequent first, ties by id
    rank = torch.empty_like(ids)
    rank[order] = ids
    return rank


def least_frequent_earlier(tokens: Int[Tensor, "batch pos"], rank: Int[Tensor, "d_vocab"], *, first_key: int = 1,
                           lengths: Int[Tensor, "batch"] | None = None) -> Int[Tensor, "batch query"]:
    """For every query q, the position of the least frequent token among the keys ``first_key .. q - 1``.

    The keys before `first_key` are left out: position 0 is BOS for Gemma and, for SmolLM2 (no BOS), the
    first token, where most heads park their attention (an attention sink), so the rare-words score never
    counts it. The same token type at two earlier positions goes to the earlier one.

    Args:
        tokens: the prompts; rows may be right-padded, see `lengths`.
        rank: `rarity_rank` of the corpus counts (larger = rarer).
        first_key: the first position that counts as an earlier token.
        lengths: each row's real length; queries at or after it get -1 (padding is never a query, and a
            causal model never lets a real query see it).

    Returns:
        ``[batch, query]`` positions, -1 where a query has no earlier key (q <= first_key) or is padding.

    Raises:
        ValueError: if `first_key` is negative, a token id is outside `rank`, or `lengths` has the wrong shape
            or values.
    """
    if tokens.ndim != 2 or tokens.is_floating_point():
        raise ValueError(f"tokens must be an integer tensor [batch, pos]; got shape {tuple(tokens.shape)}")
    if first_key < 0:
        raise ValueError(f"first_key must be >= 0; got {first_key}")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= len(rank)):
        raise ValueError(f"token ids must lie in [0, {len(rank)}) (the rank's vocabulary); got "
                         f"{int(tokens.min())}..{int(tokens.max())}: rank the counts of this model's tokenizer")
    batch, seq_len = tokens.shape
    if lengths is None:
        lengths = torch.full((batch,), seq_len)
    if tuple(lengths.shape) != (batch,) or lengths.min() < 1 or lengths.max() > seq_len:
        raise ValueError(f"lengths must be {batch} values in [1, {seq_len}]; got shape {tuple(lengths.shape)}")
    pos = torch.arange(seq_len)
    keys = (pos[None, :] >= first_key) & (pos[None, :] < pos[:, None])  # [query, key]: first_key <= k < q
    value = torch.where(keys[None], rank[tokens][:, None, :], -1)  # [batch, query, key]; -1 = not a key
    where = value.argmax(dim=-1)  # the first maximum: the earliest position of the rarest type
    none = ~keys.any(-1)[None] | (pos[None, :] >= lengths[:, None])  # [batch, query]
    return torch.where(none, -1, where)


def least_frequent_piece(ids: Sequence[int], rank: Int[Tensor, "d_vocab"]) -> int:
    """Index (0-based, within `ids`) of a word's least frequent piece: the one the rare-words score targets.

    A rare word is usually several pieces (SmolLM2 cuts " ziggurat" into " z", "igg", "ur", "at"); Voita's
    metric names one token, so the word's rarest piece stands for it (the earliest if a piece repeats).

    Raises:
        ValueError: if `ids` is empty.
    """
    if len(ids) == 0:
        raise ValueError("ids is empty: pass the token ids of one word")
    ranks = rank[torch.as_tensor(list(ids))]
    return int(ranks.argmax())
