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

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers import heads, readout
from helpers.capture import check_tokens, final_at, rows_per_chunk, z_hook
from helpers.heads import Head

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

Metric = Callable[[Float[Tensor, "batch pos vocab"], Int[Tensor, "batch pos"]], Float[Tensor, "batch"]]
Mode = Literal["zero", "mean"]


def ablation_hook(keep: Float[Tensor, "row head"], replacement: Float[Tensor, "... head d_head"] | None):
    """A hook on one layer's ``z`` that keeps each row's heads by `keep` (1 = keep, 0 = ablate) and puts
    `replacement` (the heads' mean outputs) or zeros in place of the ablated ones: one row per head set
    lets a single pass ablate many sets, as `ablated_metric` does."""
    def hook(z: Float[Tensor, "row pos head d_head"], hook=None) -> Float[Tensor, "row pos head d_head"]:
        weight = keep.to(z.device, z.dtype)[:, None, :, None]
        out = z * weight  # a new tensor: the cached activation is never written in place
        if replacement is not None:
            out = out + (1 - weight) * replacement.to(z.device, z.dtype)
        return out

    return hook


def ablation_hooks(model: TransformerBridge, head_set: Sequence[Head], *,
                   means: Float[Tensor, "layer ... head d_head"] | None = None) -> list:
    """Hooks that remove the heads of `head_set` in every row of a pass (zeros, or `means` when given), for reads that
    take ``fwd_hooks`` such as `capture.read_end`."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    mask = heads.masks([head_set], n_layers, n_heads)[0]  # [layer, head]
    return [(z_hook(layer), ablation_hook((~mask[layer]).float()[None], None if means is None else means[layer]))
            for layer in range(n_layers) if mask[layer].any()]


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
    last_position_only: bool = False,
    positions: slice | None = None,
    ids: Int[Tensor, "n"] | None = None,
    at: Int[Tensor, "batch k"] | None = None,
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
        last_position_only: unembed only the last position, so `metric` receives logits
            ``[rows, 1, vocab]``; for metrics read at the answer slot this saves most of a
            large-vocabulary model's cost (Gemma).
        positions: unembed only these positions (a slice), so `metric` receives logits
            ``[rows, len(positions), vocab]``: e.g. the positions that predict a repeated half.
            ``last_position_only`` is ``positions=slice(-1, None)``.
        ids: unembed only these token columns, so `metric` receives logits ``[rows, span, len(ids)]``
            (column i is token ``ids[i]``): a logit difference needs two columns, not Gemma's 262k.
            `logit_difference_metric` gives the ids and the metric for per-prompt answers.
        at: unembed only these positions of each prompt, ``[batch, k]`` (prompt b's row in every head set
            reads ``at[b]``), so `metric` receives logits ``[rows, k, vocab]``: for spans that sit at a
            different place in each right-padded prompt, where one slice covering all of them would unembed
            many positions no prompt needs.

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
    if sum((last_position_only, positions is not None, at is not None)) > 1:
        raise ValueError("pass one of last_position_only, positions and at")
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    masks = heads.masks(head_sets, n_layers, n_heads)
    batch, seq_len = tokens.shape
    if at is not None:
        if at.ndim != 2 or at.shape[0] != batch or at.shape[1] < 1:
            raise ValueError(f"at must be [batch={batch}, k >= 1] positions; got {tuple(at.shape)}")
        if int(at.min()) < 0 or int(at.max()) >= seq_len:
            raise ValueError(f"at holds positions outside [0, {seq_len}): {int(at.min())}..{int(at.max())}")
        positions = slice(int(at.min()), int(at.max()) + 1)
    if last_position_only:
        positions = slice(seq_len - 1, seq_len)
    if ids is not None and positions is None:
        positions = slice(None)
    span = seq_len if positions is None else len(range(seq_len)[positions])
    if at is not None:
        span = at.shape[1]
    if span < 1:
        raise ValueError(f"positions {positions} select no position of a sequence of {seq_len}")
    rows = max(max_rows or rows_per_chunk(model, span), 1)
    sets_per_pass = max(1, rows // batch)
    results = []
    for start in range(0, len(head_sets), sets_per_pass):
        chunk = masks[start:start + sets_per_pass]  # [sets, layer, head]
        keep = (~chunk).float().repeat_interleave(batch, dim=0)  # [sets * batch, layer, head]
        repeated = tokens.repeat(len(chunk), 1)  # set-major rows: set i holds rows i*batch..(i+1)*batch
        hooks = [
            (z_hook(layer), ablation_hook(keep[:, layer], None if means is None else means[layer]))
            for layer in range(n_layers) if chunk[:, layer].any()
        ]
        device_tokens = repeated.to(model.cfg.device)
        if positions is not None:
            final = final_at(model, device_tokens, position=positions, fwd_hooks=hooks)  # [rows, span, d_model]
            if at is not None:  # keep each row's own positions: [rows, k, d_model]
                index = (at - positions.start).repeat(len(chunk), 1).to(final.device)
                final = final.gather(1, index[:, :, None].expand(-1, -1, final.shape[-1]))
            logits = readout.logits(model, final, ids).to(model.cfg.device)
        else:
            logits = model.run_with_hooks(device_tokens, fwd_hooks=hooks) if hooks else model(device_tokens)
        values = metric(logits, device_tokens).float().cpu()
        results.append(values.reshape(len(chunk), batch))
    return torch.cat(results)


def logit_difference_metric(answers: Int[Tensor, "batch"], wrong: Int[Tensor, "batch"]
                            ) -> tuple[Int[Tensor, "n"], Metric]:
    """The columns to unembed and the metric for ``ablated_metric(..., last_position_only=True, ids=ids)``:
    ``logit[answer] - logit[wrong]`` at the last position, per prompt.

    `ablated_metric` stacks the prompts once per head set, so row r of a pass is prompt ``r % batch``.
    """
    if answers.shape != wrong.shape or answers.ndim != 1:
        raise ValueError(f"answers and wrong must be one id per prompt; got {tuple(answers.shape)} and "
                         f"{tuple(wrong.shape)}")
    ids = torch.unique(torch.cat([answers, wrong]))
    answer_column, wrong_column = torch.searchsorted(ids, answers), torch.searchsorted(ids, wrong)

    def metric(logits: Float[Tensor, "row 1 n"], tokens: Int[Tensor, "row pos"]) -> Float[Tensor, "row"]:
        rows = torch.arange(len(tokens), device=logits.device)
        prompt = (rows % len(answers)).cpu()
        last = logits[:, -1]
        return last[rows, answer_column[prompt].to(logits.device)] - last[rows, wrong_column[prompt].to(logits.device)]

    return ids, metric


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


@torch.no_grad()
def final_with_end_patches(model: TransformerBridge, tokens: Int[Tensor, "batch pos"],
                           patches: Sequence[tuple[int, Float[Tensor, "batch d_model"]]]
                           ) -> Float[Tensor, "patch batch d_model"]:
    """The final norm's output at END with END's residual after a layer replaced, one patch per copy.

    The batch is repeated once per ``(layer, values)`` patch and copy i gets its own patch, so every
    layer of a layer-by-layer patching sweep runs in one forward pass. Stops before the unembedding.
    """
    check_tokens(model, tokens)
    batch = tokens.shape[0]
    for layer, values in patches:
        if not 0 <= layer < model.cfg.n_layers or values.shape[0] != batch:
            raise ValueError(f"each patch is (layer in [0, {model.cfg.n_layers}), values [batch={batch}, d_model]); "
                             f"got layer {layer}, values {tuple(values.shape)}")
    def patch(block: int, values: Tensor):
        def hook(activation: Tensor, hook=None) -> Tensor:
            out = activation.clone()
            out[block * batch:(block + 1) * batch, -1] = values.to(out.device, out.dtype)
            return out
        return hook

    hooks = [(f"blocks.{layer}.hook_resid_post", patch(i, values)) for i, (layer, values) in enumerate(patches)]
    return final_at(model, tokens.repeat(len(patches), 1), fwd_hooks=hooks).reshape(len(patches), batch, -1)


@torch.no_grad()
def final_with_end_added(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], layer: int | Sequence[int],
                         vectors: Float[Tensor, "set d_model"], *, max_rows: int = 2048
                         ) -> Float[Tensor, "set batch d_model"]:
    """The final norm's output at END with ``vectors[i]`` added to END's residual after block `layer`.

    The batch is repeated once per vector (copy i gets vector i; a zero row gives the clean run), so a
    function vector, its controls and every random draw run in a few batched passes (Todd et al. 2024 add
    a function vector to the residual stream of a zero-shot prompt this way). `layer` is one block for
    every vector, or one block per vector (a layer sweep in one call). Only END changes, so the prefix
    (every position but END) runs once with a KV cache and each copy runs END alone, as
    `patching.patched_final_at_end` does; it stops before the unembedding.
    """
    check_tokens(model, tokens)
    if vectors.ndim != 2 or vectors.shape[1] != model.cfg.d_model:
        raise ValueError(f"vectors must be [set, d_model={model.cfg.d_model}]; got {tuple(vectors.shape)}")
    layers = [layer] * len(vectors) if isinstance(layer, int) else list(layer)
    if len(layers) != len(vectors):
        raise ValueError(f"pass one layer, or one layer per vector; got {len(layers)} layers for "
                         f"{len(vectors)} vectors")
    bad = [value for value in layers if not 0 <= value < model.cfg.n_layers]
    if bad:
        raise ValueError(f"layer must lie in [0, {model.cfg.n_layers}); got {bad[0]}")
    if tokens.shape[1] < 2:
        raise ValueError("tokens need at least two positions: a prefix to cache and END")
    device, batch = model.cfg.device, tokens.shape[0]
    _, prefix = model.run_with_hooks(tokens[:, :-1].to(device), return_type="logits_and_cache")
    finals = []
    per_pass = max(1, max_rows // batch)
    for start in range(0, len(vectors), per_pass):
        stop = min(start + per_pass, len(vectors))
        rows = vectors[start:stop].repeat_interleave(batch, dim=0)  # [sets * batch, d_model], set-major
        where = torch.tensor(layers[start:stop]).repeat_interleave(batch)  # [sets * batch]

        def add(at: int):
            def hook(activation: Tensor, hook=None) -> Tensor:
                move = rows * (where == at).to(rows.dtype)[:, None]  # only the rows that add after `at`
                return activation + move.to(activation.device, activation.dtype)[:, None]  # END alone
            return hook

        cache = copy.deepcopy(prefix)
        cache.batch_select_indices(torch.arange(batch, device=device).repeat(stop - start))
        hooks = [(f"blocks.{at}.hook_resid_post", add(at)) for at in sorted(set(layers[start:stop]))]
        final = final_at(model, tokens[:, -1:].repeat(stop - start, 1), fwd_hooks=hooks, past_key_values=cache)
        finals.append(final.reshape(stop - start, batch, -1))
    return torch.cat(finals)


@torch.no_grad()
def final_with_end_z_added(model: TransformerBridge, tokens: Int[Tensor, "batch pos"],
                           additions: Float[Tensor, "set layer head d_head"], *, max_rows: int = 1024
                           ) -> Float[Tensor, "set batch d_model"]:
    """The final norm's output at END with ``additions[i]`` added to every head's ``hook_z`` at END, per copy.

    Directional addition at the heads (Li et al. 2023's inference-time intervention, at one position): copy i
    of the batch gets ``z[:, END] += additions[i]`` (a zero row leaves a head alone; an all-zero set is the
    clean run). As in `final_with_end_added`, the prefix runs once with a KV cache and each copy runs END alone.
    """
    check_tokens(model, tokens)
    expected = (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head)
    if additions.ndim != 4 or tuple(additions.shape[1:]) != expected:
        raise ValueError(f"additions must be [set, layer, head, d_head] = [set, {', '.join(map(str, expected))}]; "
                         f"got {tuple(additions.shape)}")
    if tokens.shape[1] < 2:
        raise ValueError("tokens need at least two positions: a prefix to cache and END")
    device, batch = model.cfg.device, tokens.shape[0]
    _, prefix = model.run_with_hooks(tokens[:, :-1].to(device), return_type="logits_and_cache")
    used = [layer for layer in range(expected[0]) if bool(additions[:, layer].any())]
    finals = []
    per_pass = max(1, max_rows // batch)
    for start in range(0, len(additions), per_pass):
        stop = min(start + per_pass, len(additions))

        def add(layer: int):
            rows = additions[start:stop, layer].repeat_interleave(batch, dim=0)  # [sets * batch, head, d_head]

            def hook(z: Tensor, hook=None) -> Tensor:
                return z + rows.to(z.device, z.dtype)[:, None]  # z is END alone: [rows, 1, head, d_head]
            return hook

        cache = copy.deepcopy(prefix)
        cache.batch_select_indices(torch.arange(batch, device=device).repeat(stop - start))
        hooks = [(z_hook(layer), add(layer)) for layer in used]
        final = final_at(model, tokens[:, -1:].repeat(stop - start, 1), fwd_hooks=hooks, past_key_values=cache)
        finals.append(final.reshape(stop - start, batch, -1))
    return torch.cat(finals)
