"""Change activations: zero- or mean-ablate sets of attention heads, many sets in one forward pass.

Heads are ablated at ``hook_z`` (each head's output before W_O), so removing a head removes exactly
its contribution to the residual stream. Under grouped-query attention this is still per *query*
head: the shared keys and values are untouched.

The workhorse is `ablated_metric`: it takes a list of head sets, repeats the batch once per set, and
ablates a different set in each copy through a per-row mask. The per-head screen (one set per head)
and the random-heads control (one set per random draw) are the same call, and both cost a few
large forward passes instead of hundreds of small ones (measured in ``benchmarks/``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers.capture import check_tokens, rows_per_chunk, run_with_residuals, z_hook

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

Head = tuple[int, int]
Metric = Callable[[Float[Tensor, "batch pos vocab"], Int[Tensor, "batch pos"]], Float[Tensor, "batch"]]
Mode = Literal["zero", "mean"]


def check_heads(heads: Sequence[Head], n_layers: int, n_heads: int) -> None:
    """Raise a clear error for a head index outside the model."""
    for head in heads:
        if len(head) != 2:
            raise ValueError(f"a head is a (layer, head) pair; got {head!r}")
        layer, index = head
        if not (0 <= layer < n_layers and 0 <= index < n_heads):
            raise ValueError(
                f"head L{layer}H{index} is outside this model, which has layers 0..{n_layers - 1} "
                f"and heads 0..{n_heads - 1} per layer"
            )


def head_set_masks(head_sets: Sequence[Sequence[Head]], n_layers: int, n_heads: int
                   ) -> Bool[Tensor, "set layer head"]:
    """One boolean mask per head set: True where a head is ablated."""
    masks = torch.zeros(len(head_sets), n_layers, n_heads, dtype=torch.bool)
    for i, heads in enumerate(head_sets):
        check_heads(heads, n_layers, n_heads)
        for layer, head in heads:
            masks[i, layer, head] = True
    return masks


def _ablation_hook(keep: Float[Tensor, "row head"], replacement: Float[Tensor, "... head d_head"] | None):
    def hook(z: Float[Tensor, "row pos head d_head"], hook=None) -> Float[Tensor, "row pos head d_head"]:
        weight = keep.to(z.device, z.dtype)[:, None, :, None]
        out = z * weight  # a new tensor: the cached activation is never written in place
        if replacement is not None:
            out = out + (1 - weight) * replacement.to(z.device, z.dtype)
        return out

    return hook


@torch.no_grad()
def ablated_metric(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    head_sets: Sequence[Sequence[Head]],
    metric: Metric,
    *,
    mode: Mode = "zero",
    means: Float[Tensor, "layer ... head d_head"] | None = None,
    max_rows: int | None = None,
    restart: bool = True,
) -> Float[Tensor, "set batch"]:
    """`metric` on every prompt with each head set ablated in turn.

    Args:
        tokens: the prompts, all of one length.
        head_sets: e.g. ``[[]]`` for the clean model, ``[[(5, 1)], [(6, 9)]]`` for a per-head screen,
            or k random heads per set for the random control.
        metric: maps logits and tokens to one number per prompt (e.g. mean loss on the repeated half).
        mode: ``"zero"`` replaces the heads' ``hook_z`` with zeros; ``"mean"`` with `means`
            (from `capture.mean_head_outputs`), which keeps the activation on-distribution.
        max_rows: rows (prompt copies) per forward pass; defaults to a logits budget of ~256 MB.
        restart: start each set's pass at its first ablated layer from the clean residual stream
            (exact, and faster); ``False`` runs every pass from the embeddings (for comparison).

    Returns:
        ``[set, batch]`` metric values.
    """
    check_tokens(model, tokens)
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean'; got {mode!r}")
    if mode == "mean" and means is None:
        raise ValueError("mode='mean' needs `means`; compute them with helpers.capture.mean_head_outputs")
    if len(head_sets) == 0:
        raise ValueError("head_sets is empty; pass [[]] to measure the clean model")
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    masks = head_set_masks(head_sets, n_layers, n_heads)
    batch, seq_len = tokens.shape
    rows = max(max_rows or rows_per_chunk(model, seq_len), 1)
    sets_per_pass = max(1, rows // batch)
    # Before its first ablated layer a set computes exactly what the clean model does, so its pass can
    # restart there from the clean residual stream: a per-head sweep then costs about half as much.
    first_layer = [int(mask.any(-1).int().argmax()) if mask.any() else n_layers for mask in masks]
    restart_points = {layer for layer in first_layer if 0 < layer} if restart else set()
    clean_logits, residuals = (run_with_residuals(model, tokens, sorted(restart_points - {n_layers}))
                               if restart_points else (None, {}))
    results = torch.empty(len(head_sets), batch)
    for layer in sorted(set(first_layer)):
        members = [i for i, first in enumerate(first_layer) if first == layer]
        for start in range(0, len(members), sets_per_pass):
            chunk_ids = members[start:start + sets_per_pass]
            chunk = masks[chunk_ids]  # [sets, layer, head]
            device_tokens = tokens.repeat(len(chunk_ids), 1).to(model.cfg.device)  # set-major rows
            if layer == n_layers:  # nothing ablated: the clean model
                logits = clean_logits.repeat(len(chunk_ids), 1, 1) if clean_logits is not None else model(device_tokens)
            else:
                keep = (~chunk).float().repeat_interleave(batch, dim=0)  # [sets * batch, layer, head]
                hooks = [(z_hook(at), _ablation_hook(keep[:, at], None if means is None else means[at]))
                         for at in range(layer, n_layers) if chunk[:, at].any()]
                if layer in residuals:
                    start_from = residuals[layer].repeat(len(chunk_ids), 1, 1)
                    logits = model.run_with_hooks(start_from, fwd_hooks=hooks, start_at_layer=layer)
                else:
                    logits = model.run_with_hooks(device_tokens, fwd_hooks=hooks)
            results[chunk_ids] = metric(logits, device_tokens).float().cpu().reshape(len(chunk_ids), batch)
    return results


def per_head_effects(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    *,
    mode: Mode = "zero",
    means: Tensor | None = None,
    max_rows: int | None = None,
) -> Float[Tensor, "layer head"]:
    """Mean change in `metric` when each head alone is ablated (ablated minus clean), ``[layer, head]``."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    all_heads = [[(layer, head)] for layer in range(n_layers) for head in range(n_heads)]
    values = ablated_metric(model, tokens, [[]] + all_heads, metric, mode=mode, means=means, max_rows=max_rows)
    clean, ablated = values[0], values[1:]
    return (ablated - clean).mean(dim=1).reshape(n_layers, n_heads)


def random_head_sets(n_layers: int, n_heads: int, k: int, n_draws: int, *, seed: int,
                     exclude: Sequence[Head] = ()) -> list[list[Head]]:
    """`n_draws` sets of k distinct heads drawn uniformly, skipping `exclude` (e.g. the top-k heads)."""
    excluded = set(map(tuple, exclude))
    pool = [(layer, head) for layer in range(n_layers) for head in range(n_heads) if (layer, head) not in excluded]
    if not 1 <= k <= len(pool):
        raise ValueError(f"k must lie in [1, {len(pool)}] (heads left after exclusions); got {k}")
    generator = torch.Generator().manual_seed(seed)
    return [[pool[i] for i in torch.randperm(len(pool), generator=generator)[:k].tolist()] for _ in range(n_draws)]
