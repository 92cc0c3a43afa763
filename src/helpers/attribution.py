"""Direct logit attribution: how much each head's output, read straight through the unembedding, pushes
one answer token over another.

A head writes ``z_h @ W_O[h]`` into the residual stream. What the last position's logits see of it is
that vector passed through the final norm (and, in Gemma, through the attention block's own
post-norm first). Norms divide by a data-dependent scale; freezing each scale at its value on the
clean run makes the whole path linear, so the attributions of all components add up to the logit
difference (up to the norms' biases). This is the "direct" effect only: what a head does through
later layers is the job of ablation and patching (`helpers.interventions`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers.capture import EndRead, check_tokens, read_end

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def _check_answers(answers: Tensor, wrong: Tensor, batch: int, vocab: int) -> None:
    for name, ids in (("answers", answers), ("wrong", wrong)):
        if ids.ndim != 1 or ids.shape[0] != batch:
            raise ValueError(f"{name} must hold one token id per prompt ({batch}); got shape {tuple(ids.shape)}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= vocab):
            raise ValueError(f"{name} ids must lie in [0, {vocab}); got {ids.min().item()}..{ids.max().item()}")


def logit_difference(logits: Float[Tensor, "batch pos vocab"], answers: Int[Tensor, "batch"],
                     wrong: Int[Tensor, "batch"], *, position: int = -1) -> Float[Tensor, "batch"]:
    """``logit[answer] - logit[wrong]`` at `position` of every prompt."""
    last = logits[:, position]
    rows = torch.arange(last.shape[0], device=last.device)
    return last[rows, answers.to(last.device)] - last[rows, wrong.to(last.device)]


def answer_directions(model: TransformerBridge, answers: Int[Tensor, "batch"], wrong: Int[Tensor, "batch"]
                      ) -> Float[Tensor, "batch d_model"]:
    """``W_U[:, answer] - W_U[:, wrong]``: the residual direction (after the final norm) of the logit difference."""
    _check_answers(answers, wrong, answers.shape[0], model.cfg.d_vocab)
    unembed = model.W_U
    return (unembed[:, answers.to(unembed.device)] - unembed[:, wrong.to(unembed.device)]).T.float().cpu()


def norm_gain(norm: torch.nn.Module, d_model: int) -> Float[Tensor, "d_model"]:
    """The elementwise gain of an RMS norm, read by normalising a vector of ones.

    Reading it from the module's output (rather than its ``weight``) covers both conventions in use:
    Llama multiplies by ``weight``, Gemma by ``1 + weight``.
    """
    parameter = next(norm.parameters())
    ones = torch.ones(1, 1, d_model, device=parameter.device, dtype=parameter.dtype)
    return norm(ones)[0, 0].float().cpu()


def final_read(model: TransformerBridge, directions: Float[Tensor, "batch d_model"]
                ) -> Float[Tensor, "batch d_model"]:
    """The final norm's gain folded into the directions (its scale is applied per prompt later)."""
    d_model = model.cfg.d_model
    if model.cfg.normalization_type in ("LN", "LNPre"):
        weight = dict(model.ln_final.named_parameters()).get("_original_component.weight")
        gain = weight.float().cpu() if weight is not None else torch.ones(d_model)
        folded = directions * gain
        return folded - folded.mean(dim=-1, keepdim=True)  # LayerNorm centres its input first
    if model.cfg.normalization_type in ("RMS", "RMSPre"):
        return directions * norm_gain(model.ln_final, d_model)
    raise NotImplementedError(f"direct logit attribution does not know normalization "
                              f"{model.cfg.normalization_type!r}; load the model with compatibility_mode=True")


@torch.no_grad()
def head_logit_attribution(model: TransformerBridge, tokens: Int[Tensor, "batch pos"],
                           answers: Int[Tensor, "batch"], wrong: Int[Tensor, "batch"], *,
                           position: int = -1) -> Float[Tensor, "layer head batch"]:
    """Direct effect of every head's output at `position` on ``logit[answer] - logit[wrong]``.

    One forward pass caches each layer's ``hook_z`` at `position` and the norm scales; the rest is
    linear algebra (`attribution_from_read`). Positive values push towards `answers`.
    """
    check_tokens(model, tokens)
    _check_answers(answers, wrong, tokens.shape[0], model.cfg.d_vocab)
    return attribution_from_read(model, read_end(model, tokens, position=position), answers, wrong)


def head_outputs_from_read(model: TransformerBridge, run: EndRead) -> Float[Tensor, "layer batch head d_model"]:
    """Each head's output at the read position as the logits see it: ``z @ W_O``, Gemma's post-attention norm
    and the final norm's scale applied. Dotting it with a gain-folded unembedding column (`final_read`)
    gives the head's direct effect on that logit."""
    w_o = model.W_O.float().cpu()  # the bridge stacks every layer's weights on each access: read it once
    out = []
    for layer in range(model.cfg.n_layers):
        head_out = torch.einsum("bhd,hdm->bhm", run.z[layer], w_o[layer])
        if run.post_scale is not None:  # Gemma normalises the attention block's output before adding it
            gain = norm_gain(model.blocks[layer].ln1_post, model.cfg.d_model)
            head_out = head_out * gain / run.post_scale[layer][:, None, None]
        out.append(head_out / run.final_scale[:, None, :])
    return torch.stack(out)


def attribution_from_read(model: TransformerBridge, run: EndRead, answers: Int[Tensor, "batch"],
                          wrong: Int[Tensor, "batch"]) -> Float[Tensor, "layer head batch"]:
    """`head_logit_attribution` from a pass already read (e.g. one run with some heads ablated)."""
    _check_answers(answers, wrong, run.final.shape[0], model.cfg.d_vocab)
    read = final_read(model, answer_directions(model, answers, wrong))  # [batch, d_model]
    return torch.einsum("lbhm,bm->lhb", head_outputs_from_read(model, run), read)


# --------------------------------------------------------------------------------------------------
# Direct logit attribution split by source position (Chughtai et al. 2024, "Summing up the facts")


def value_hook(layer: int) -> str:
    """Values of one layer, ``[batch, pos, kv_head, d_head]`` (shared by query heads under GQA)."""
    return f"blocks.{layer}.attn.hook_v"


@torch.no_grad()
def read_end_with_values(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], *, position: int = -1
                         ) -> tuple[EndRead, list[Float[Tensor, "batch pos kv_head d_head"]]]:
    """`capture.read_end` plus every layer's values at every position, from the same stopped pass.

    A head's output at END is ``sum_j A[END, j] v_j W_O``; the values ``v_j`` are what the source split needs
    besides the attention row that `read_end` already keeps.
    """
    check_tokens(model, tokens)
    kept: dict[int, Tensor] = {}

    def keep(layer: int):
        def hook(activation: Tensor, hook=None) -> None:
            kept[layer] = activation.detach().float().cpu()
        return hook

    run = read_end(model, tokens, position=position,
                   fwd_hooks=[(value_hook(layer), keep(layer)) for layer in range(model.cfg.n_layers)])
    return run, [kept[layer] for layer in range(model.cfg.n_layers)]


def source_attribution_from_values(model: TransformerBridge, run: EndRead,
                                   values: list[Float[Tensor, "batch pos kv_head d_head"]],
                                   directions: Float[Tensor, "batch d_model"]
                                   ) -> Float[Tensor, "layer head batch key"]:
    """Each head's direct effect on a logit direction at END, split by the key position it reads from.

    Entry ``[l, h, b, j]`` is ``A[END, j] * (v_j W_O)`` of head (l, h) on prompt b, read through the same
    frozen norm scales as `attribution_from_read` (Gemma's post-attention norm, then the final norm), so
    summing over ``key`` gives that function's per-head value exactly (up to float error).

    Args:
        run: the pass read by `read_end_with_values` (or `capture.read_end` with the same values).
        values: per layer ``[batch, pos, kv_head, d_head]``; query head h reads KV head ``h // group``.
        directions: residual directions after the final norm, e.g. `answer_directions` or
            ``W_U[:, answer] - mean of W_U[:, other answers]``; the final norm's gain is folded in here.
    """
    batch = run.final.shape[0]
    if directions.ndim != 2 or directions.shape != (batch, model.cfg.d_model):
        raise ValueError(f"directions must be [batch, d_model] = ({batch}, {model.cfg.d_model}); "
                         f"got {tuple(directions.shape)}")
    if len(values) != model.cfg.n_layers:
        raise ValueError(f"values must hold one tensor per layer ({model.cfg.n_layers}); got {len(values)}")
    read = final_read(model, directions.float().cpu()) / run.final_scale  # [batch, d_model]
    w_o = model.W_O.float().cpu()  # [layer, head, d_head, d_model], read once (the bridge stacks on access)
    n_heads = model.cfg.n_heads
    out = []
    for layer in range(model.cfg.n_layers):
        layer_read = read
        if run.post_scale is not None:  # Gemma: post-attention norm with its own frozen scale
            gain = norm_gain(model.blocks[layer].ln1_post, model.cfg.d_model)
            layer_read = read * gain / run.post_scale[layer][:, None]
        per_head = torch.einsum("hdm,bm->bhd", w_o[layer], layer_read)  # what each head's z is read as
        v = values[layer].repeat_interleave(n_heads // values[layer].shape[2], dim=2)  # [batch, pos, head, d_head]
        scalar = torch.einsum("bkhd,bhd->bhk", v, per_head)  # v_j W_O read along the direction
        out.append(run.attention[layer] * scalar)  # [batch, head, key]
    return torch.stack(out).permute(0, 2, 1, 3)  # [layer, head, batch, key]


def head_source_attribution(model: TransformerBridge, tokens: Int[Tensor, "batch pos"],
                            directions: Float[Tensor, "batch d_model"], *, position: int = -1
                            ) -> Float[Tensor, "layer head batch key"]:
    """`source_attribution_from_values` from one stopped pass over `tokens`."""
    run, values = read_end_with_values(model, tokens, position=position)
    return source_attribution_from_values(model, run, values, directions)
