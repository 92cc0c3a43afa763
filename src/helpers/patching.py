"""Activation patching and path patching of attention heads, read at the last position (END).

Patching asks a counterfactual question: if this head had computed what it computes on another prompt
(IOI's "ABC" twin, an acronym with other words), how much of the answer survives? Three tools:

- `patched_final`: each head set's ``hook_z`` is replaced by the source run's, one set per copy of the
  batch. With ``path=True`` every *other* head is frozen at its clean output, so only the direct paths
  from the senders to the logits (through MLPs and norms, not through later heads) change: Wang et al.'s
  path patching to the logits. `patched_final_at_end` gives the same numbers for a source that differs from
  the clean run at END only, caching the clean prefix's keys and values and running END alone per set.
- `path_patched_receivers`: the same sender change, but it reaches the model only through chosen
  receiver heads' *queries* at END (Wang et al.'s sender -> receiver-query patching; how S-inhibition heads
  were found). Returns the receivers' attention rows and the final residual of the second pass.
- `attribution_patching`: a first-order estimate of every head's patching effect from one forward and
  one backward pass, to rank all heads before checking the top ones exactly.

Everything stops at the final norm and returns its output at END: the logit difference of two answers
needs two columns of the unembedding (`helpers.readout.logit_difference`), not Gemma's 262k. With
`capture` and `interventions`, this is one of the three modules that name hook points.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers import heads
from helpers.attribution import answer_directions
from helpers.capture import FINAL_IN, FINAL_OUT, check_tokens, final_at, pattern_hook, run_until, z_hook
from helpers.heads import Head

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

DEFAULT_MAX_ROWS = 512


def q_hook(layer: int) -> str:
    """Per-query-head queries before the rotary embedding, ``[batch, pos, head, d_head]``."""
    return f"blocks.{layer}.attn.hook_q"


@torch.no_grad()
def head_outputs(model: TransformerBridge, tokens: Int[Tensor, "batch pos"]
                 ) -> Float[Tensor, "layer batch pos head d_head"]:
    """Every head's ``hook_z`` on `tokens`, from one pass that stops before the final norm."""
    check_tokens(model, tokens)
    store: dict[int, Tensor] = {}

    def keep(layer: int):
        def hook(activation: Tensor, hook=None) -> None:
            store[layer] = activation.detach().clone()
        return hook

    run_until(model, tokens, [(z_hook(layer), keep(layer)) for layer in range(model.cfg.n_layers)], stop_at=FINAL_IN)
    return torch.stack([store[layer] for layer in range(model.cfg.n_layers)])


def _check_source(model: TransformerBridge, tokens: Tensor, source_z: Tensor) -> None:
    batch, seq_len = tokens.shape
    expected = (model.cfg.n_layers, batch, seq_len, model.cfg.n_heads)
    if tuple(source_z.shape[:4]) != expected:
        raise ValueError(f"source_z must be [layer, batch, pos, head, d_head] = {expected} + (d_head,), as returned "
                         f"by head_outputs on prompts of the same shape as tokens; got {tuple(source_z.shape)}. "
                         "Clean and source prompts need equal token lengths.")


def _replace_hook(patch: Tensor, source: Tensor, base: Tensor | None):
    """z -> base + patch * (source - base), where base is the running z (activation patching) or the
    frozen clean z (path patching). ``patch``: ``[rows, head]`` 1 where a head takes the source value."""
    def hook(z: Tensor, hook=None) -> Tensor:
        weight = patch.to(z.device, z.dtype)[:, None, :, None]
        start = z if base is None else base.to(z.device, z.dtype)
        return start + weight * (source.to(z.device, z.dtype) - start)
    return hook


def _chunks(n_sets: int, batch: int, max_rows: int | None) -> list[range]:
    per_pass = max(1, (max_rows or DEFAULT_MAX_ROWS) // batch)
    return [range(start, min(start + per_pass, n_sets)) for start in range(0, n_sets, per_pass)]


def _patch_hooks(model: TransformerBridge, chunk_masks: Tensor, source_z: Tensor, clean_z: Tensor | None) -> list:
    """Hooks for one chunk of head sets (set-major rows); with `clean_z`, every layer is frozen at it."""
    n_sets = chunk_masks.shape[0]
    hooks = []
    for layer in range(model.cfg.n_layers):
        layer_mask = chunk_masks[:, layer]
        if clean_z is None and not layer_mask.any():
            continue
        patch = layer_mask.float().repeat_interleave(source_z.shape[1], dim=0)  # [sets * batch, head]
        source = source_z[layer].repeat(n_sets, 1, 1, 1)
        base = None if clean_z is None else clean_z[layer].repeat(n_sets, 1, 1, 1)
        hooks.append((z_hook(layer), _replace_hook(patch, source, base)))
    return hooks


@torch.no_grad()
def patched_final(model: TransformerBridge, tokens: Int[Tensor, "batch pos"],
                  source_z: Float[Tensor, "layer batch pos head d_head"], head_sets: Sequence[Sequence[Head]], *,
                  path: bool = False, clean_z: Tensor | None = None, max_rows: int | None = None
                  ) -> Float[Tensor, "set batch d_model"]:
    """The final norm's output at END with each set's heads taking their `source_z` outputs.

    Args:
        source_z: from `head_outputs` on the source prompts (e.g. the corrupted twins), or any tensor of
            that shape (e.g. mean outputs broadcast over the batch, for mean ablation).
        head_sets: ``[[]]`` gives the clean run; ``[[(9, 6)], [(9, 9)]]`` one head at a time.
        path: freeze every head outside the set at its clean output (path patching to the logits).
        clean_z: the clean run's `head_outputs`, if already computed (only used with `path`).
    """
    check_tokens(model, tokens)
    _check_source(model, tokens, source_z)
    if len(head_sets) == 0:
        raise ValueError("head_sets is empty; pass [[]] for the clean run")
    masks = heads.masks(head_sets, model.cfg.n_layers, model.cfg.n_heads)
    if path and clean_z is None:
        clean_z = head_outputs(model, tokens)
    batch = tokens.shape[0]
    finals = []
    for chunk in _chunks(len(head_sets), batch, max_rows):
        hooks = _patch_hooks(model, masks[chunk.start:chunk.stop], source_z, clean_z if path else None)
        finals.append(final_at(model, tokens.repeat(len(chunk), 1), fwd_hooks=hooks).reshape(len(chunk), batch, -1))
    return torch.cat(finals)


@dataclass(frozen=True)
class PathResult:
    """What the receivers saw after sender -> receiver-query path patching.

    ``final``: ``[set, batch, d_model]`` final norm output at END of the second pass;
    ``attention``: ``[set, receiver, batch, key]`` each receiver's attention row at END.
    """

    final: Float[Tensor, "set batch d_model"]
    attention: Float[Tensor, "set receiver batch key"]


@torch.no_grad()
def patched_final_at_end(model: TransformerBridge, tokens: Int[Tensor, "batch pos"],
                         source_z: Float[Tensor, "layer batch pos head d_head"], head_sets: Sequence[Sequence[Head]],
                         *, max_rows: int | None = None, atol: float = 1e-4, rtol: float = 1e-5
                         ) -> Float[Tensor, "set batch d_model"]:
    """`patched_final` for a source that differs from the clean run at END only, computed from one clean pass
    over the prefix (every position but END) and, per head set, a pass over END alone that reads the
    prefix's keys and values from the model's KV cache.

    Causal attention makes this exact: no earlier position sees END, so a patch at END leaves the prefix as
    it was. Per set it costs one position instead of all of them. Sources that patch earlier positions too
    (a whole twin prompt, path patching) need `patched_final`; this function checks the prefix and refuses.
    The check allows `atol`, or `rtol` times the prefix's largest |z| if more: a pass over the prefix alone
    and one over the whole prompt differ by float rounding (1.1e-4 on Gemma 3 270M's acronym prompts, whose
    head outputs reach 69), while a source from another prompt differs by the size of the outputs themselves.
    """
    check_tokens(model, tokens)
    _check_source(model, tokens, source_z)
    if len(head_sets) == 0:
        raise ValueError("head_sets is empty; pass [[]] for the clean run")
    if tokens.shape[1] < 2:
        raise ValueError("tokens need at least two positions: a prefix to cache and END")
    prefix_z: dict[int, Tensor] = {}

    def keep(layer: int):
        def hook(z: Tensor, hook=None) -> None:
            prefix_z[layer] = z.detach().float().cpu()
        return hook

    device = model.cfg.device
    _, prefix = model.run_with_hooks(tokens[:, :-1].to(device), return_type="logits_and_cache",
                                     fwd_hooks=[(z_hook(layer), keep(layer)) for layer in range(model.cfg.n_layers)])
    clean_prefix = torch.stack([prefix_z[layer] for layer in range(model.cfg.n_layers)])
    tolerance = max(atol, rtol * float(clean_prefix.abs().max()))
    if not torch.allclose(source_z[:, :, :-1].float().cpu(), clean_prefix, atol=tolerance, rtol=0):
        raise ValueError("source_z differs from the clean run before END; this function patches END only and "
                         "reuses the clean prefix. Use patched_final for sources that change earlier positions.")
    masks = heads.masks(head_sets, model.cfg.n_layers, model.cfg.n_heads)
    batch, end_source = tokens.shape[0], source_z[:, :, -1:]
    finals = []
    for chunk in _chunks(len(head_sets), batch, max_rows):
        rows = len(chunk)
        cache = copy.deepcopy(prefix)
        cache.batch_select_indices(torch.arange(batch, device=device).repeat(rows))  # set-major, as the hooks
        hooks = _patch_hooks(model, masks[chunk.start:chunk.stop], end_source, None)
        final = final_at(model, tokens[:, -1:].repeat(rows, 1), fwd_hooks=hooks, past_key_values=cache)
        finals.append(final.reshape(rows, batch, -1))
    return torch.cat(finals)


@torch.no_grad()
def path_patched_receivers(model: TransformerBridge, tokens: Int[Tensor, "batch pos"],
                           source_z: Float[Tensor, "layer batch pos head d_head"],
                           sender_sets: Sequence[Sequence[Head]], receivers: Sequence[Head], *,
                           clean_z: Tensor | None = None, max_rows: int | None = None) -> PathResult:
    """Sender -> receiver-query path patching at END (Wang et al. 2023), one sender set per batch copy.

    Pass 1: senders take `source_z`, every other head is frozen at its clean output, and the receivers'
    queries at END are recorded. Pass 2: a clean run in which only the receivers' END queries are
    replaced by the recorded ones. The change therefore reaches the output only through the receivers'
    queries, along paths from the senders that avoid every other attention head.
    """
    check_tokens(model, tokens)
    _check_source(model, tokens, source_z)
    heads.check(receivers, model.cfg.n_layers, model.cfg.n_heads)
    if not receivers or len(sender_sets) == 0:
        raise ValueError("need at least one receiver head and one sender set ([[]] for the clean run)")
    first_receiver = min(layer for layer, _ in receivers)
    for senders in sender_sets:
        if any(layer >= first_receiver for layer, _ in senders):
            raise ValueError(f"senders must sit in layers before the first receiver (layer {first_receiver}); "
                             f"got {list(senders)}")
    masks = heads.masks(sender_sets, model.cfg.n_layers, model.cfg.n_heads)
    clean_z = head_outputs(model, tokens) if clean_z is None else clean_z
    by_layer: dict[int, list[int]] = {}
    for layer, head in receivers:
        by_layer.setdefault(layer, []).append(head)
    last_receiver = max(by_layer)
    batch = tokens.shape[0]
    finals, rows_attention = [], []
    for chunk in _chunks(len(sender_sets), batch, max_rows):
        repeated = tokens.repeat(len(chunk), 1)
        queries: dict[int, Tensor] = {}

        def record(layer: int):
            def hook(q: Tensor, hook=None) -> None:
                queries[layer] = q[:, -1, by_layer[layer]].detach().clone()
            return hook

        hooks = _patch_hooks(model, masks[chunk.start:chunk.stop], source_z, clean_z)
        run_until(model, repeated, hooks + [(q_hook(layer), record(layer)) for layer in by_layer],
                  stop_at=q_hook(last_receiver))

        def replace(layer: int):
            def hook(q: Tensor, hook=None) -> Tensor:
                out = q.clone()
                out[:, -1, by_layer[layer]] = queries[layer].to(out.device, out.dtype)
                return out
            return hook

        patterns: dict[int, Tensor] = {}

        def keep_pattern(layer: int):
            def hook(pattern: Tensor, hook=None) -> None:
                patterns[layer] = pattern[:, by_layer[layer], -1].detach().float().cpu()  # [rows, recv, key]
            return hook

        final = final_at(model, repeated, fwd_hooks=[(q_hook(layer), replace(layer)) for layer in by_layer]
                         + [(pattern_hook(layer), keep_pattern(layer)) for layer in by_layer])
        finals.append(final.reshape(len(chunk), batch, -1))
        columns = [patterns[layer][:, i] for layer, head in receivers for i in [by_layer[layer].index(head)]]
        rows_attention.append(torch.stack(columns, dim=1).reshape(len(chunk), batch, len(receivers), -1)
                              .transpose(1, 2))
    return PathResult(final=torch.cat(finals), attention=torch.cat(rows_attention))


def _z_gradients(model: TransformerBridge, tokens: Int[Tensor, "batch pos"],
                 metric: Callable[[Tensor], Tensor], *, end_only: bool) -> tuple[Tensor, Tensor]:
    """The gradient of ``metric(final norm output at END)`` (``[batch, d_model]`` -> scalar) with respect to
    every layer's ``z``, at every position (``[layer, batch, pos, head, d_head]``) or at END only
    (``[layer, batch, head, d_head]``), from one forward and one backward pass; with the clean ``z``
    ``[layer, batch, pos, head, d_head]``. Both attribution estimates below are this gradient times a move."""
    n_layers, n_heads, d_head = model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head
    shape = (tokens.shape[0], n_heads, d_head) if end_only else (*tokens.shape, n_heads, d_head)
    zeros = [torch.zeros(shape, device=model.cfg.device, requires_grad=True) for _ in range(n_layers)]
    clean: dict[int, Tensor] = {}
    store: dict[str, Tensor] = {}

    def add_zero(layer: int):
        def hook(z: Tensor, hook=None) -> Tensor:
            clean[layer] = z.detach().float().cpu()
            if not end_only:
                return z + zeros[layer].to(z.dtype)
            out = z.clone()
            out[:, -1] = out[:, -1] + zeros[layer].to(z.dtype)
            return out
        return hook

    def keep_final(activation: Tensor, hook=None) -> None:
        store["final"] = activation[:, -1]

    with torch.enable_grad():
        run_until(model, tokens, [(z_hook(layer), add_zero(layer)) for layer in range(n_layers)]
                  + [(FINAL_OUT, keep_final)], stop_at=FINAL_OUT)
        grads = torch.autograd.grad(metric(store["final"]), zeros)
    return torch.stack([g.float().cpu() for g in grads]), torch.stack([clean[layer] for layer in range(n_layers)])


def attribution_patching(model: TransformerBridge, tokens: Int[Tensor, "batch pos"],
                         source_z: Float[Tensor, "layer batch pos head d_head"],
                         answers: Int[Tensor, "batch"], wrong: Int[Tensor, "batch"]) -> Float[Tensor, "layer head"]:
    """First-order estimate of each head's activation-patching effect on the mean END logit difference.

    ``effect(h) ~= sum over batch, positions, d_head of (source_z - clean_z) * d(metric)/d(z)``, averaged
    over prompts: one forward and one backward pass for every head at once (Nanda's attribution
    patching). It is exact for a metric linear in z and drifts where attention or norms react strongly,
    so pages check the top heads with `patched_final`.
    """
    check_tokens(model, tokens)
    _check_source(model, tokens, source_z)
    directions = answer_directions(model, answers, wrong).to(model.cfg.device).float()
    gradient, clean = _z_gradients(model, tokens, lambda final: (final.float() * directions).sum(-1).mean(),
                                   end_only=False)
    return ((source_z.float().cpu() - clean) * gradient).sum(dim=(1, 2, 4))  # the metric is a batch mean already


def end_attribution(model: TransformerBridge, tokens: Int[Tensor, "batch pos"],
                    delta: Float[Tensor, "layer batch head d_head"],
                    metric: Callable[[Tensor], Tensor]) -> Float[Tensor, "layer head"]:
    """First-order estimate of each head's effect on `metric` when its ``z`` at END moves by `delta`.

    ``effect(h) ~= sum over batch and d_head of delta * d(metric)/d(z at END)``, from one forward and one
    backward pass for every head at once (attribution patching restricted to the last position, where a
    function vector head's mean output is patched). `metric` maps the final norm's output at END,
    ``[batch, d_model]``, to a scalar (e.g. the mean probability of the answers); pages check the top heads
    exactly with `patched_final`.
    """
    check_tokens(model, tokens)
    expected = (model.cfg.n_layers, tokens.shape[0], model.cfg.n_heads)
    if tuple(delta.shape[:3]) != expected:
        raise ValueError(f"delta must be [layer, batch, head, d_head] = {expected} + (d_head,); "
                         f"got {tuple(delta.shape)}")
    gradient, _ = _z_gradients(model, tokens, lambda final: metric(final.float()), end_only=True)
    return (delta.float().cpu() * gradient).sum(dim=(1, 3))
