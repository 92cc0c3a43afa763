"""OV circuits read from the weights: what a head writes into the logits when it attends to a token.

A head that attends fully to a source token copies that token's value vector through its output
matrix. Following the token embedding through the pre-attention norm, the head's value and output
matrices and the final norm to the unembedding gives a `[source, target]` table of direct logit
effects, with no forward pass at all. Copying heads (name movers, letter movers) have a table whose
row maximum sits on the source's own "partner" (the token itself, or its first letter for acronyms);
copy-suppression heads have a strongly negative diagonal.

Choices, stated once:

- The source is the raw token embedding ``W_E`` (no MLP0, no positional embedding). Some papers
  pass the embedding through MLP0 first; we keep the weight-only path so every model gets the same,
  cheap reading.
- Norms are linearised: the source embedding is normalised exactly (RMS, or centre-and-scale for
  LayerNorm) because it is a single vector. Gemma's attention post-norm normalises the head's output
  as if the head were the block's only writer, then applies its gain. The final norm contributes only
  its gain, since its scale depends on the whole residual stream. A
  per-source positive scale does not change which target wins a row, so mapping scores are exact
  under this approximation; the signed strengths are in "unit-scale" logits.
- `effective_ov_logits` and `order_scores` read a head through the residual a token leaves after block 0
  (embedding, first attention and first MLP) and score the table for an order: Gould et al.'s succession
  score, and the same score for shuffled orders as its control.
- Biases are left out: they add the same vector for every source, so they cannot make one source's
  partner win over another's.
- Grouped-query attention: the value matrices are stored per key/value head; query head ``h`` reads
  value head ``h // (n_heads // n_kv_heads)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers.attribution import norm_gain

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

Head = tuple[int, int]


@dataclass(frozen=True)
class OVWeights:
    """Every weight an OV reading needs, read from a model once (the bridge restacks weights on each access).

    ``normalization`` is ``"RMS"``, ``"LN"`` (centre, then scale) or ``"none"`` (weights already folded,
    e.g. compatibility mode with LNPre/RMSPre).
    """

    embed: Float[Tensor, "vocab d_model"]
    ln_gain: Float[Tensor, "layer d_model"]
    w_v: Float[Tensor, "layer kv_head d_model d_head"]
    w_o: Float[Tensor, "layer head d_head d_model"]
    post_gain: Float[Tensor, "layer d_model"] | None
    final_gain: Float[Tensor, "d_model"]
    unembed: Float[Tensor, "d_model vocab"]
    normalization: str = "RMS"
    eps: float = 1e-6

    def __post_init__(self) -> None:
        layers, heads = self.w_o.shape[:2]
        if self.w_v.shape[0] != layers or heads % self.w_v.shape[1]:
            raise ValueError(f"w_v {tuple(self.w_v.shape)} does not fit w_o {tuple(self.w_o.shape)}: need the same "
                             f"layers and a number of query heads divisible by the number of key/value heads")
        if self.normalization not in ("RMS", "LN", "none"):
            raise ValueError(f"normalization must be 'RMS', 'LN' or 'none'; got {self.normalization!r}")

    @property
    def n_layers(self) -> int:
        return self.w_o.shape[0]

    @property
    def n_heads(self) -> int:
        return self.w_o.shape[1]

    @property
    def group(self) -> int:
        """How many query heads share one key/value head."""
        return self.n_heads // self.w_v.shape[1]

    def kv_head(self, head: int) -> int:
        """The key/value head that query head `head` reads its values from."""
        return head // self.group


Source = Union["TransformerBridge", OVWeights]


def _ln_weight(norm: torch.nn.Module, d_model: int) -> Tensor:
    weight = dict(norm.named_parameters()).get("_original_component.weight")
    if weight is None:
        weight = dict(norm.named_parameters()).get("weight")
    return weight.detach().float().cpu() if weight is not None else torch.ones(d_model)


@torch.no_grad()
def ov_weights(model: TransformerBridge) -> OVWeights:
    """Read the embedding, norm gains, W_V, W_O and W_U of `model` once (float32, CPU)."""
    kind = model.cfg.normalization_type
    d_model = model.cfg.d_model
    if kind in ("RMS",):
        gain = lambda norm: norm_gain(norm, d_model)  # noqa: E731  (covers Gemma's 1 + weight)
        normalization = "RMS"
    elif kind in ("LN",):
        gain = lambda norm: _ln_weight(norm, d_model)  # noqa: E731
        normalization = "LN"
    elif kind in ("LNPre", "RMSPre", None):
        gain = lambda norm: torch.ones(d_model)  # noqa: E731  (gains already folded into the weights)
        normalization = "none" if kind is None else ("LN" if kind == "LNPre" else "RMS")
    else:
        raise NotImplementedError(f"OV readings do not know normalization {kind!r}")
    blocks = list(model.blocks)
    post = [getattr(block, "ln1_post", None) for block in blocks]
    post_gain = torch.stack([gain(norm) for norm in post]) if all(norm is not None for norm in post) else None
    return OVWeights(
        embed=model.W_E.detach(),  # indexed before any copy: Gemma's tables are 262k rows
        ln_gain=torch.stack([gain(block.ln1) for block in blocks]),
        w_v=model.W_V.detach().float().cpu(),
        w_o=model.W_O.detach().float().cpu(),
        post_gain=post_gain,
        final_gain=gain(model.ln_final),
        unembed=model.W_U.detach(),
        normalization=normalization,
        eps=float(getattr(model.cfg, "eps", 1e-6)),
    )


def _weights(model: Source) -> OVWeights:
    return model if isinstance(model, OVWeights) else ov_weights(model)


def _ids(ids: Sequence[int] | Tensor, name: str, vocab: int) -> Int[Tensor, "n"]:
    ids = torch.as_tensor(ids, dtype=torch.long).flatten().cpu()
    if ids.numel() == 0:
        raise ValueError(f"{name} is empty: give at least one token id")
    if ids.min() < 0 or ids.max() >= vocab:
        raise ValueError(f"{name} ids must lie in [0, {vocab}); got {ids.min().item()}..{ids.max().item()}")
    return ids


def _normalise(x: Float[Tensor, "n d_model"], weights: OVWeights) -> Float[Tensor, "n d_model"]:
    if weights.normalization == "LN":
        x = x - x.mean(-1, keepdim=True)
    if weights.normalization == "none":
        return x
    return x / (x.pow(2).mean(-1, keepdim=True) + weights.eps).sqrt()


def _check_head(weights: OVWeights, head: Head) -> None:
    layer, index = head
    if not (0 <= layer < weights.n_layers and 0 <= index < weights.n_heads):
        raise ValueError(f"head {head} is outside the model: layers 0..{weights.n_layers - 1}, "
                         f"heads 0..{weights.n_heads - 1} (give (layer, head), 0-based)")


def _ends(weights: OVWeights, sources: Tensor, targets: Tensor
          ) -> tuple[Float[Tensor, "n d_model"], Float[Tensor, "d_model m"]]:
    """The normalised source embeddings and the gain-folded unembedding columns (float32, CPU)."""
    embed = weights.embed[sources.to(weights.embed.device)].float().cpu()
    read = weights.unembed[:, targets.to(weights.unembed.device)].float().cpu()
    return _normalise(embed, weights), read * weights.final_gain[:, None]


def _layer_logits(weights: OVWeights, layer: int, source: Float[Tensor, "n d_model"],
                  read: Float[Tensor, "d_model m"]) -> Float[Tensor, "head n m"]:
    """Logit table of every query head of `layer` (value heads repeated for GQA)."""
    x = source * weights.ln_gain[layer]
    values = torch.einsum("nm,kmd->knd", x, weights.w_v[layer])  # per key/value head
    values = values.repeat_interleave(weights.group, dim=0)  # query head h -> value head h // group
    out = torch.einsum("hnd,hdm->hnm", values, weights.w_o[layer])
    if weights.post_gain is not None:  # Gemma: read as if this head were the attention block's only output
        out = out / (out.pow(2).mean(-1, keepdim=True) + weights.eps).sqrt() * weights.post_gain[layer]
    if weights.normalization == "LN":
        out = out - out.mean(-1, keepdim=True)  # the final LayerNorm centres what it reads
    return out @ read


@torch.no_grad()
def all_ov_logits(model: Source, sources: Sequence[int] | Tensor, targets: Sequence[int] | Tensor
                  ) -> Float[Tensor, "layer head n m"]:
    """`ov_logits` for every head at once (one pass over the layers)."""
    weights = _weights(model)
    vocab = weights.unembed.shape[1]
    sources = _ids(sources, "sources", weights.embed.shape[0])
    targets = _ids(targets, "targets", vocab)
    source, read = _ends(weights, sources, targets)
    return torch.stack([_layer_logits(weights, layer, source, read) for layer in range(weights.n_layers)])


@torch.no_grad()
def ov_logits(model: Source, head: Head, sources: Sequence[int] | Tensor, targets: Sequence[int] | Tensor
              ) -> Float[Tensor, "n m"]:
    """Direct effect on the logits of `targets` when `head` attends fully to each token in `sources`.

    ``W_E[source]`` -> pre-attention norm (exact normalisation, then gain) -> ``W_V`` of the head's
    key/value group -> ``W_O[head]`` -> Gemma's post-attention norm -> final norm gain ->
    ``W_U[:, targets]``. Raises ValueError for a head outside the model or out-of-range ids.
    """
    weights = _weights(model)
    _check_head(weights, head)
    layer, index = head
    vocab = weights.unembed.shape[1]
    sources = _ids(sources, "sources", weights.embed.shape[0])
    targets = _ids(targets, "targets", vocab)
    source, read = _ends(weights, sources, targets)
    return _layer_logits(weights, layer, source, read)[index]


def _partner_columns(partners: Tensor, candidates: Tensor) -> Int[Tensor, "n"]:
    matches = partners[:, None] == candidates[None, :]
    missing = ~matches.any(-1)
    if missing.any():
        raise ValueError(f"every partner must be among the candidates; {int(missing.sum())} are not "
                         f"(e.g. token id {partners[missing][0].item()}): add them to `candidates`")
    return matches.float().argmax(-1)


def _mapping_table(model: Source, sources, partners, candidates
                   ) -> tuple[Float[Tensor, "layer head n c"], Int[Tensor, "n"]]:
    weights = _weights(model)
    sources = _ids(sources, "sources", weights.embed.shape[0])
    partners = _ids(partners, "partners", weights.unembed.shape[1])
    candidates = _ids(candidates, "candidates", weights.unembed.shape[1])
    if partners.shape != sources.shape:
        raise ValueError(f"give one partner per source: {sources.numel()} sources, {partners.numel()} partners")
    if torch.unique(candidates).numel() != candidates.numel():
        raise ValueError("candidates contain duplicates; pass each candidate token once")
    return all_ov_logits(weights, sources, candidates), _partner_columns(partners, candidates)


@torch.no_grad()
def ov_mapping_scores(model: Source, sources: Sequence[int] | Tensor, partners: Sequence[int] | Tensor,
                      candidates: Sequence[int] | Tensor) -> Float[Tensor, "layer head"]:
    """Per head, the fraction of sources whose partner is the top logit among `candidates`.

    Partners say what the head should write for each source: the source itself for a copying head, the
    source word's first letter for a letter mover. Chance is ``1 / len(candidates)``.
    """
    table, column = _mapping_table(model, sources, partners, candidates)
    return (table.argmax(-1) == column).float().mean(-1)


@torch.no_grad()
def ov_partner_strength(model: Source, sources: Sequence[int] | Tensor, partners: Sequence[int] | Tensor,
                        candidates: Sequence[int] | Tensor) -> Float[Tensor, "layer head"]:
    """Signed version of `ov_mapping_scores`: mean over sources of (partner's logit minus the mean logit of
    the other candidates). Positive: the head pushes the partner; negative: it suppresses it."""
    table, column = _mapping_table(model, sources, partners, candidates)
    own = table.gather(-1, column.expand(*table.shape[:2], -1)[..., None])[..., 0]
    others = (table.sum(-1) - own) / max(table.shape[-1] - 1, 1)
    return (own - others).mean(-1)


def ov_copying_scores(model: Source, tokens: Sequence[int] | Tensor) -> Float[Tensor, "layer head"]:
    """Fraction of `tokens` that the head's OV circuit maps to themselves (top logit among `tokens`).

    Near 1 for copying heads (name movers), near 0 for copy-suppression heads."""
    tokens = torch.as_tensor(tokens, dtype=torch.long).flatten()
    return ov_mapping_scores(model, tokens, tokens, tokens)


def ov_diagonal_strength(model: Source, tokens: Sequence[int] | Tensor) -> Float[Tensor, "layer head"]:
    """Mean own-logit minus mean other-token logit per head: positive copies, negative suppresses."""
    tokens = torch.as_tensor(tokens, dtype=torch.long).flatten()
    return ov_partner_strength(model, tokens, tokens, tokens)


@torch.no_grad()
def copying_from_vectors(model: Source, vectors: Float[Tensor, "n d_model"], tokens: Sequence[int] | Tensor
                         ) -> Float[Tensor, "layer head"]:
    """`ov_copying_scores` with the residual vectors a head would actually read in place of ``W_E``.

    Wang et al. and McDougall et al. read a name through the first MLP ("effective embedding"): at
    small scale the raw embedding can hide a copying circuit that the residual stream shows. `vectors[i]`
    stands for `tokens[i]` (e.g. `capture.residual_at_end(model, one-token prompts, [0])`).
    """
    weights = _weights(model)
    tokens = _ids(tokens, "tokens", weights.unembed.shape[1])
    if vectors.ndim != 2 or vectors.shape[0] != tokens.numel():
        raise ValueError(f"vectors must be [n, d_model] with one row per token ({tokens.numel()}); "
                         f"got {tuple(vectors.shape)}")
    source = _normalise(vectors.float().cpu(), weights)
    read = weights.unembed[:, tokens.to(weights.unembed.device)].float().cpu() * weights.final_gain[:, None]
    table = torch.stack([_layer_logits(weights, layer, source, read) for layer in range(weights.n_layers)])
    return (table.argmax(-1) == torch.arange(tokens.numel())).float().mean(-1)


# --------------------------------------------------------------------------------------------------
# Readings through the vectors a head actually reads (issue 9: never raw W_E alone).


@torch.no_grad()
def effective_embedding(model: TransformerBridge, ids: Sequence[int] | Tensor) -> Float[Tensor, "n d_model"]:
    """The residual stream after block 0 of each token read alone (after BOS if the model prepends one).

    This is the "effective embedding" of Wang et al. and McDougall et al.: the token once the first
    attention layer and MLP have acted on it, which is what later heads read where a token sits (the
    same reading as the name mover page). Float32, on the CPU, one row per id.
    """
    from helpers import capture  # local import: capture is not needed for the weight-only readings

    ids = torch.as_tensor(ids, dtype=torch.long).flatten().cpu()
    if ids.numel() == 0:
        raise ValueError("ids is empty: give at least one token id")
    prompts = ids[:, None]
    if model.cfg.default_prepend_bos:
        prompts = torch.cat([torch.full_like(prompts, model.tokenizer.bos_token_id), prompts], dim=1)
    return capture.residual_at_end(model, prompts, [0])[0].float().cpu()


def _vector_table(weights: OVWeights, vectors: Float[Tensor, "n d_model"], targets: Tensor
                  ) -> Float[Tensor, "layer head n m"]:
    source = _normalise(vectors.float().cpu(), weights)
    read = weights.unembed[:, targets.to(weights.unembed.device)].float().cpu() * weights.final_gain[:, None]
    return torch.stack([_layer_logits(weights, layer, source, read) for layer in range(weights.n_layers)])


def _vector_mapping_table(model: Source, vectors: Tensor, partners, candidates
                          ) -> tuple[Float[Tensor, "layer head n c"], Int[Tensor, "n"]]:
    weights = _weights(model)
    partners = _ids(partners, "partners", weights.unembed.shape[1])
    candidates = _ids(candidates, "candidates", weights.unembed.shape[1])
    if vectors.ndim != 2 or vectors.shape[0] != partners.numel():
        raise ValueError(f"vectors must be [n, d_model] with one row per partner ({partners.numel()}); "
                         f"got {tuple(vectors.shape)}")
    if torch.unique(candidates).numel() != candidates.numel():
        raise ValueError("candidates contain duplicates; pass each candidate token once")
    return _vector_table(weights, vectors, candidates), _partner_columns(partners, candidates)


@torch.no_grad()
def mapping_from_vectors(model: Source, vectors: Float[Tensor, "n d_model"], partners: Sequence[int] | Tensor,
                         candidates: Sequence[int] | Tensor) -> Float[Tensor, "layer head"]:
    """`ov_mapping_scores` with residual vectors in place of ``W_E``: `vectors[i]` is what the head reads
    for the i-th source (e.g. `effective_embedding(model, sources)`), `partners[i]` what it should write."""
    table, column = _vector_mapping_table(model, vectors, partners, candidates)
    return (table.argmax(-1) == column).float().mean(-1)


@torch.no_grad()
def partner_strength_from_vectors(model: Source, vectors: Float[Tensor, "n d_model"],
                                  partners: Sequence[int] | Tensor, candidates: Sequence[int] | Tensor
                                  ) -> Float[Tensor, "layer head"]:
    """`ov_partner_strength` with residual vectors in place of ``W_E`` (see `mapping_from_vectors`)."""
    table, column = _vector_mapping_table(model, vectors, partners, candidates)
    own = table.gather(-1, column.expand(*table.shape[:2], -1)[..., None])[..., 0]
    others = (table.sum(-1) - own) / max(table.shape[-1] - 1, 1)
    return (own - others).mean(-1)


def diagonal_strength_from_vectors(model: Source, vectors: Float[Tensor, "n d_model"],
                                   tokens: Sequence[int] | Tensor) -> Float[Tensor, "layer head"]:
    """`ov_diagonal_strength` with residual vectors in place of ``W_E``: positive copies, negative suppresses."""
    tokens = torch.as_tensor(tokens, dtype=torch.long).flatten()
    return partner_strength_from_vectors(model, vectors, tokens, tokens)


# --------------------------------------------------------------------------------------------------
# Effective OV circuits scored for an order (successor heads: Gould et al. 2024).


@torch.no_grad()
def logits_from_vectors(model: Source, vectors: Float[Tensor, "n d_model"], targets: Sequence[int] | Tensor
                        ) -> Float[Tensor, "layer head n m"]:
    """Every head's direct logit table when it reads `vectors[i]` (a residual vector standing for the i-th
    source), on the logits of `targets`: the OV reading of `all_ov_logits` with given vectors in place of
    ``W_E``. Raises ValueError for vectors that are not ``[n, d_model]`` or out-of-range targets."""
    weights = _weights(model)
    targets = _ids(targets, "targets", weights.unembed.shape[1])
    d_model = weights.embed.shape[1]
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] != d_model:
        raise ValueError(f"vectors must be [n, d_model={d_model}] with at least one row; got {tuple(vectors.shape)}")
    return _vector_table(weights, vectors, targets)


@torch.no_grad()
def effective_ov_logits(model: TransformerBridge, ids: Sequence[int] | Tensor,
                        weights: OVWeights | None = None) -> Float[Tensor, "layer head n n"]:
    """The effective OV circuit of every head on one set of tokens: ``[layer, head, source, target]``.

    Each token of `ids` goes through block 0 alone (`effective_embedding`: embedding, first attention layer
    and first MLP, what Gould et al. call passing the embedding through MLP0), then through the head's
    pre-attention norm, W_V and W_O (Gemma's post-attention norm as if the head wrote alone), the final
    norm's gain and the unembedding columns of the same `ids`. Row i, column j: how much the head pushes
    token j when it attends to token i. Pass `weights` (`ov_weights(model)`) to reuse one reading.
    """
    ids = torch.as_tensor(ids, dtype=torch.long).flatten().cpu()
    if torch.unique(ids).numel() != ids.numel():
        raise ValueError(f"ids contain duplicates ({ids.tolist()}); pass each token of the task once")
    vectors = effective_embedding(model, ids)
    return logits_from_vectors(weights if weights is not None else ov_weights(model), vectors, ids)


def order_scores(table: Float[Tensor, "... n n"], orders: Int[Tensor, "order n"]) -> Float[Tensor, "order ..."]:
    """Per order, the share of tokens whose top column in `table` is the token that follows them in that order.

    `table[..., i, j]` is what the head writes on candidate j when it reads token i (e.g. `effective_ov_logits`).
    Each row of `orders` is a permutation of ``0..n-1``; its first n - 1 entries are scored, each against the
    entry after it (the last has no successor). With the task's own order (``torch.arange(n)``) this is Gould
    et al.'s succession score; with shuffled orders it is the same score against a successor relation that
    does not exist, a control a head can only pass by chance. Chance is 1 / n for a head that names a random
    candidate, and 1 / (n - 1) under shuffled orders for a head that never names the token itself.

    Example: a head whose table maps i to i + 1 scores 1.0 on ``arange(n)``; a copying head scores 0.0.
    """
    n = table.shape[-1]
    if table.ndim < 2 or table.shape[-2] != n:
        raise ValueError(f"table must be [..., n, n] (sources and candidates are the same tokens); "
                         f"got {tuple(table.shape)}")
    orders = torch.as_tensor(orders, dtype=torch.long)
    if orders.ndim == 1:
        orders = orders[None]
    expected = torch.arange(n).expand_as(orders)
    if orders.ndim != 2 or orders.shape[1] != n or not torch.equal(orders.sort(-1).values, expected):
        raise ValueError(f"each order must be a permutation of 0..{n - 1} (one per row); got shape "
                         f"{tuple(orders.shape)}")
    top = table.argmax(-1)  # [..., n]: each source's favourite candidate
    sources, successors = orders[:, :-1], orders[:, 1:]  # [order, n - 1]
    hits = top[..., sources] == successors  # [..., order, n - 1]
    return hits.float().mean(-1).movedim(-1, 0)
