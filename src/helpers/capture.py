"""Read activations out of a model: attention patterns, per-head outputs, the final residual, losses.

With `interventions` and `patching`, this is one of the three modules that name hook points. Everything here runs one
forward pass (or a few mini-batches of one) and caches only the hooks it needs: a full
``run_with_cache`` on SmolLM2 keeps 1,725 tensors (about 1.8 GB at 8 x 64 tokens).

`run_until` is the one way to end a pass early: the reads below stop at the final norm (or earlier),
because what they need is there and Gemma's 262k-column unembedding would cost more than the rest of
the model. `final_at` is the stopped pass that returns the final norm's output at one position, which
`helpers.readout` turns into the few logits a metric needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers.scores import next_token_losses

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def pattern_hook(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


def z_hook(layer: int) -> str:
    """Per-head attention output before W_O, ``[batch, pos, head, d_head]`` (query heads under GQA)."""
    return f"blocks.{layer}.attn.hook_z"


def check_tokens(model: TransformerBridge, tokens: Tensor) -> None:
    """Raise a clear error for token tensors the model cannot run."""
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be an integer tensor [batch, pos]; got {shape}. "
                         "Build them with helpers.tasks or model.to_tokens.")
    vocab = model.cfg.d_vocab
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab):
        raise ValueError(f"token ids must lie in [0, {vocab}); got {tokens.min().item()}..{tokens.max().item()}")


@torch.no_grad()
def capture_patterns(
    model: TransformerBridge, tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "layer batch head query key"]:
    """Attention probabilities of every head, from one forward pass that keeps only the patterns and stops at
    the last layer's (no final norm, no unembedding: Gemma's 262k-column unembedding was most of the cost)."""
    check_tokens(model, tokens)
    kept: dict[int, Tensor] = {}

    def keep(layer: int):
        def hook(activation: Tensor, hook=None) -> None:
            kept[layer] = activation.detach()
        return hook

    n_layers = model.cfg.n_layers
    run_until(model, tokens, [(pattern_hook(layer), keep(layer)) for layer in range(n_layers)],
              stop_at=pattern_hook(n_layers - 1))
    return torch.stack([kept[layer] for layer in range(n_layers)]).float().cpu()


@torch.no_grad()
def mean_head_outputs(
    model: TransformerBridge, tokens: Int[Tensor, "batch pos"], *, per_position: bool = False
) -> Float[Tensor, "layer ... head d_head"]:
    """Mean of every head's ``hook_z`` over a reference batch, for mean ablation.

    Returns ``[layer, head, d_head]`` (averaged over batch and positions) or, with `per_position`,
    ``[layer, pos, head, d_head]`` (averaged over the batch only: the IOI convention, where every
    prompt shares one template).
    """
    check_tokens(model, tokens)
    dims = (0,) if per_position else (0, 1)
    means: dict[int, Tensor] = {}

    def keep(layer: int):
        def hook(activation: Tensor, hook=None) -> None:
            means[layer] = activation.mean(dim=dims)
        return hook

    run_until(model, tokens, [(z_hook(layer), keep(layer)) for layer in range(model.cfg.n_layers)], stop_at=FINAL_IN)
    return torch.stack([means[layer] for layer in range(model.cfg.n_layers)])


@torch.no_grad()
def loss_per_token(
    model: TransformerBridge, tokens: Int[Tensor, "batch pos"], *, max_rows: int | None = None
) -> Float[Tensor, "batch pos_minus_1"]:
    """Next-token losses of a whole batch, run in mini-batches to bound the logits' memory.

    Gemma's 262k-token vocabulary makes full logits 1 MB per position, so the default mini-batch is
    sized to keep each logits tensor near 256 MB.
    """
    check_tokens(model, tokens)
    rows = max_rows or rows_per_chunk(model, tokens.shape[1])
    out = [next_token_losses(model(chunk.to(model.cfg.device)), chunk).cpu() for chunk in tokens.split(rows)]
    return torch.cat(out)


def rows_per_chunk(model: TransformerBridge, seq_len: int, budget_bytes: float = 256e6) -> int:
    """How many sequences fit in one forward pass when the logits may take about `budget_bytes`."""
    return max(1, int(budget_bytes // (seq_len * model.cfg.d_vocab * 4)))


FINAL_IN = "ln_final.hook_in"  # the residual stream entering the final norm
FINAL_OUT = "ln_final.hook_out"  # the final norm's output: what the unembedding reads


class StopForward(Exception):
    """Raised at `run_until`'s stop point, after every read there, so nothing later runs."""


def run_until(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], hooks: list | tuple, *, stop_at: str,
              past_key_values: object | None = None) -> None:
    """Run `tokens` through the model with `hooks` and end the pass at hook point `stop_at`.

    Hooks on `stop_at` itself run first (TransformerLens calls a point's hooks in order), so a read can
    sit on the stop point. Anything the hooks must keep, they store themselves. `past_key_values`: a KV
    cache of earlier positions (the model's own, from ``return_type="logits_and_cache"``); `tokens` then
    continue it, and the cache is extended in place.
    """
    def stop(activation: Tensor, hook=None) -> None:
        raise StopForward

    try:
        extra = {} if past_key_values is None else {"past_key_values": past_key_values}
        model.run_with_hooks(tokens.to(model.cfg.device), fwd_hooks=[*hooks, (stop_at, stop)], **extra)
    except StopForward:
        pass


@torch.no_grad()
def final_at(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], *, position: int | slice = -1,
             fwd_hooks: list | tuple = (), past_key_values: object | None = None
             ) -> Float[Tensor, "batch d_model"] | Float[Tensor, "batch span d_model"]:
    """The final norm's output at `position` (on the CPU; a slice keeps a position axis), from a pass that
    stops there; `fwd_hooks` run in the same pass (ablations, patches); `past_key_values` as in
    `run_until`. `helpers.readout` turns it into logits."""
    check_tokens(model, tokens)
    store: dict[str, Tensor] = {}

    def keep(activation: Tensor, hook=None) -> None:
        store["final"] = activation[:, position].detach().float().cpu()

    run_until(model, tokens, [*fwd_hooks, (FINAL_OUT, keep)], stop_at=FINAL_OUT, past_key_values=past_key_values)
    return store["final"]


@dataclass(frozen=True)
class EndRead:
    """What one forward pass leaves at the last position (END), on the CPU.

    ``attention``: ``[layer, batch, head, key]`` each head's attention row at END; ``z``: per layer
    ``[batch, head, d_head]``; ``final``: ``[batch, d_model]`` the final norm's output; ``final_scale``
    ``[batch, 1]``; ``post_scale``: per layer ``[batch]`` (Gemma's post-attention norm) or None.
    """

    attention: Float[Tensor, "layer batch head key"]
    z: list[Tensor]
    final: Float[Tensor, "batch d_model"]
    final_scale: Float[Tensor, "batch 1"]
    post_scale: list[Tensor] | None


@torch.no_grad()
def read_end(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], *, position: int = -1,
             fwd_hooks: list | tuple = ()) -> EndRead:
    """Attention rows, head outputs and the normed residual at END, stopping before the logits.

    `position` reads another position instead of the last one (direct logit attribution there);
    `fwd_hooks` run in the same pass (e.g. `interventions.ablation_hooks`, to read a model with heads removed).

    Gemma's 262k-token unembedding costs more than the rest of the model on short prompts; answers that
    are a handful of tokens need only those columns of it (`helpers.readout.logits(model, read.final, ids)`).
    """
    check_tokens(model, tokens)
    n_layers = model.cfg.n_layers
    has_post = hasattr(model.blocks[0], "ln1_post")
    store: dict[str, Tensor] = {}

    def keep(name: str, pattern: bool = False):
        def hook(activation: Tensor, hook=None) -> None:
            store[name] = (activation[:, :, position] if pattern else activation[:, position]).detach().float().cpu()
        return hook

    hooks = [(z_hook(layer), keep(z_hook(layer))) for layer in range(n_layers)]
    hooks += [(pattern_hook(layer), keep(pattern_hook(layer), pattern=True)) for layer in range(n_layers)]
    if has_post:
        hooks += [(f"blocks.{layer}.ln1_post.hook_scale", keep(f"post{layer}")) for layer in range(n_layers)]
    hooks += [("ln_final.hook_scale", keep("scale")), (FINAL_OUT, keep("final"))]
    run_until(model, tokens, [*fwd_hooks, *hooks], stop_at=FINAL_OUT)
    return EndRead(attention=torch.stack([store[pattern_hook(layer)] for layer in range(n_layers)]),
                   z=[store[z_hook(layer)] for layer in range(n_layers)], final=store["final"],
                   final_scale=store["scale"].reshape(-1, 1),
                   post_scale=[store[f"post{layer}"].reshape(-1) for layer in range(n_layers)] if has_post else None)


def resid_post_hook(layer: int) -> str:
    """The residual stream after block `layer`, ``[batch, pos, d_model]``."""
    return f"blocks.{layer}.hook_resid_post"


@torch.no_grad()
def residual_at_end(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], layers: list[int] | tuple[int, ...]
                    ) -> dict[int, Float[Tensor, "batch d_model"]]:
    """The residual stream at END after each of `layers` (on the model's device), for patching elsewhere."""
    check_tokens(model, tokens)
    store: dict[int, Tensor] = {}

    def keep(layer: int):
        def hook(activation: Tensor, hook=None) -> None:
            store[layer] = activation[:, -1].detach().clone()
        return hook

    run_until(model, tokens, [(resid_post_hook(layer), keep(layer)) for layer in layers], stop_at=FINAL_IN)
    return store
