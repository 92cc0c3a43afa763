"""From the final norm's output to a few logits: the one readout every stopped forward pass ends with.

Reads stop at the final norm (``capture.final_at``) because the answer usually needs a handful of
unembedding columns, not all of them: Gemma's 262k-column unembedding costs more than the rest of the
model on short prompts. This module applies those columns, the unembedding bias, and the model's logit
soft cap when it has one (``cfg.output_logits_soft_cap > 0``, e.g. Gemma 2), so a logit read here is the
logit the model itself would output.

Direct logit attribution (``helpers.attribution``) is linear and reads the logits *before* any soft cap;
for the book's models (no soft cap) the two agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def _check_ids(model: TransformerBridge, ids: Tensor, name: str) -> None:
    vocab = model.cfg.d_vocab
    if ids.ndim != 1:
        raise ValueError(f"{name} must be a 1-d tensor of token ids; got shape {tuple(ids.shape)}")
    if ids.numel() and (ids.min() < 0 or ids.max() >= vocab):
        raise ValueError(f"{name} ids must lie in [0, {vocab}); got {ids.min().item()}..{ids.max().item()}")


def _bias(model: TransformerBridge) -> Tensor | None:
    bias = getattr(model.unembed, "b_U", None)
    return bias.detach().float().cpu() if isinstance(bias, Tensor) else None


def _capped(model: TransformerBridge, logits: Tensor) -> Tensor:
    cap = getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0
    return cap * torch.tanh(logits / cap) if cap > 0 else logits


def logits(model: TransformerBridge, final: Float[Tensor, "... d_model"], ids: Int[Tensor, "n"] | None = None
           ) -> Float[Tensor, "... n"]:
    """The logits of tokens `ids` (every token when None) from the final norm's output."""
    if ids is None:
        columns, bias = model.W_U.detach().float().cpu(), _bias(model)
    else:
        _check_ids(model, ids, "ids")
        columns = model.W_U[:, ids.to(model.W_U.device)].detach().float().cpu()  # [d_model, n]
        bias = _bias(model)
        bias = None if bias is None else bias[ids.cpu()]
    out = final.float().cpu() @ columns
    return _capped(model, out if bias is None else out + bias)


def logit_difference(model: TransformerBridge, final: Float[Tensor, "... batch d_model"],
                     answers: Int[Tensor, "batch"], wrong: Int[Tensor, "batch"]) -> Float[Tensor, "... batch"]:
    """``logit[answer] - logit[wrong]`` per prompt (one answer and one competitor per prompt)."""
    for name, ids in (("answers", answers), ("wrong", wrong)):
        _check_ids(model, ids, name)
        if ids.shape[0] != final.shape[-2]:
            raise ValueError(f"{name} holds {ids.shape[0]} ids for {final.shape[-2]} prompts; give one per prompt")
    final = final.float().cpu()
    columns = model.W_U.detach()

    def per_prompt(ids: Tensor) -> Tensor:
        value = (final * columns[:, ids.to(columns.device)].T.float().cpu()).sum(-1)  # [..., batch]
        bias = _bias(model)
        return _capped(model, value if bias is None else value + bias[ids.cpu()])

    return per_prompt(answers) - per_prompt(wrong)
