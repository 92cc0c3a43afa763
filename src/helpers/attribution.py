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
