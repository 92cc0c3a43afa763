"""Small transformers for the survey's "simplified model training": the model, read and patched without hooks.

``AttentionOnlyTransformer``: token + positional embeddings, attention-only residual blocks with a
causal mask, an unembedding. ``ToyConfig(d_mlp=...)`` adds a ReLU MLP after attention (in every layer,
or in ``mlp_layers``) for tasks whose step needs a non-linear function of what the heads gathered (the
iteration toy's parity). Weights are seeded from ``ToyConfig.seed``; per-head weights are exposed as
stacked ``[layer, head, ...]`` tensors for OV/QK analysis. ``run_with_heads`` returns a ``ToyRun`` with
every head's output and the residual stream, and applies ``HeadPatch`` / ``ResidPatch`` replacements
(activation and path patching, mean ablation) without hooks. Training and the induction toy's data are
in `helpers.toy_train`.

Example::

    model = AttentionOnlyTransformer(toy_train.INDUCTION_TOY)
    history = toy_train.train(model, toy_train.INDUCTION_DATA.sample, toy_train.INDUCTION_TRAIN, evaluate)
    pandas.DataFrame(history.evals)  # one row per evaluation step
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn


@dataclass(frozen=True)
class ToyConfig:
    """Shape of a toy transformer. ``seed`` fixes the initial weights (a local generator is used)."""

    vocab_size: int
    n_ctx: int
    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    d_head: int = 16
    layer_norm: bool = False  # off keeps the residual stream linear, so OV/QK circuits read directly
    init_std: float = 0.02
    seed: int = 0
    d_mlp: int = 0  # 0: attention only; > 0: a ReLU MLP of this width after attention in `mlp_layers`
    mlp_layers: tuple[int, ...] | None = None  # the layers that get an MLP when d_mlp > 0; None: every layer


@dataclass(frozen=True)
class HeadPatch:
    """Replace the outputs of chosen heads at chosen positions by given values (activation patching).

    ``values`` holds every head's output from another run (``ToyRun.head_outputs``) or a mean over
    prompts broadcast to that shape (mean ablation); only the heads in ``heads`` and the positions in
    ``positions`` (all positions when None) are replaced.
    """

    heads: Bool[Tensor, "layer head"]
    values: Float[Tensor, "layer batch head pos d_model"]
    positions: Bool[Tensor, "batch pos"] | None = None

    def check(self, shape: tuple[int, ...]) -> None:
        if self.heads.dtype != torch.bool or tuple(self.heads.shape) != shape[0:3:2]:
            raise ValueError(f"HeadPatch.heads must be a bool [layer, head] mask of shape {shape[0:3:2]}, "
                             f"got {self.heads.dtype} {tuple(self.heads.shape)}.")
        if tuple(self.values.shape) != shape:
            raise ValueError(f"HeadPatch.values must have the shape of ToyRun.head_outputs {shape} "
                             f"(layer, batch, head, pos, d_model), got {tuple(self.values.shape)}; run the "
                             "source prompts with the same batch size and length.")
        if self.positions is not None and tuple(self.positions.shape) != (shape[1], shape[3]):
            raise ValueError(f"HeadPatch.positions must be a bool [batch, pos] mask {(shape[1], shape[3])}, "
                             f"got {tuple(self.positions.shape)}.")

    def apply(self, layer: int, per_head: Float[Tensor, "batch head pos d_model"]
              ) -> Float[Tensor, "batch head pos d_model"]:
        where = self.heads[layer][None, :, None, None]  # [1, head, 1, 1]
        if self.positions is not None:
            where = where & self.positions[:, None, :, None]  # [batch, head, pos, 1]
        return torch.where(where, self.values[layer], per_head)


@dataclass(frozen=True)
class ResidPatch:
    """Replace the residual stream entering ``layer`` at chosen positions (``layer == n_layers``: the
    stream the unembedding reads). ``values`` is ``ToyRun.resid[layer]`` of another run."""

    layer: int
    values: Float[Tensor, "batch pos d_model"]
    positions: Bool[Tensor, "batch pos"] | None = None

    def check(self, n_layers: int, shape: tuple[int, ...]) -> None:
        if not 0 <= self.layer <= n_layers:
            raise ValueError(f"ResidPatch.layer must lie in 0..{n_layers} (n_layers is the final stream), "
                             f"got {self.layer}.")
        if tuple(self.values.shape) != shape:
            raise ValueError(f"ResidPatch.values must be [batch, pos, d_model] = {shape}, "
                             f"got {tuple(self.values.shape)}.")
        if self.positions is not None and tuple(self.positions.shape) != shape[:2]:
            raise ValueError(f"ResidPatch.positions must be a bool [batch, pos] mask {shape[:2]}, "
                             f"got {tuple(self.positions.shape)}.")

    def apply(self, resid: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        if self.positions is None:
            return self.values
        return torch.where(self.positions[..., None], self.values, resid)


@dataclass(frozen=True)
class ToyRun:
    """Everything one ``run_with_heads`` pass exposes.

    ``head_outputs[l, :, h]`` is what head (l, h) adds to the residual stream, so with ``layer_norm=False``
    and no MLP ``resid[-1] = resid[0] + head_outputs.sum((0, 2))`` and ``logits = resid[-1] @ W_U`` exactly
    (with ``d_mlp > 0`` the MLPs' writes add to that sum).
    ``resid[l]`` is the stream entering layer l; ``resid[n_layers]`` the one the unembedding reads.
    """

    logits: Float[Tensor, "batch pos d_vocab"]
    patterns: Float[Tensor, "layer batch head query key"]
    head_outputs: Float[Tensor, "layer batch head pos d_model"]
    resid: Float[Tensor, "layer_plus_1 batch pos d_model"]


class Attention(nn.Module):
    """Multi-head causal self-attention with per-head weight matrices (no biases)."""

    def __init__(self, config: ToyConfig, generator: torch.Generator) -> None:
        super().__init__()
        h, d, e = config.n_heads, config.d_model, config.d_head

        def init(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=generator) * config.init_std)

        self.W_Q, self.W_K, self.W_V = init(h, d, e), init(h, d, e), init(h, d, e)
        self.W_O = init(h, e, d)

    def per_head(self, x: Float[Tensor, "batch pos d_model"]
                 ) -> tuple[Float[Tensor, "batch head pos d_model"], Float[Tensor, "batch head query key"]]:
        """Each head's output (after ``W_O``, before the sum over heads) and its attention probabilities."""
        pattern, v = self._pattern_and_values(x)
        return torch.einsum("bhqe,hed->bhqd", pattern @ v, self.W_O), pattern

    def _pattern_and_values(self, x: Float[Tensor, "batch pos d_model"]
                            ) -> tuple[Float[Tensor, "batch head query key"], Float[Tensor, "batch head pos d_head"]]:
        q = torch.einsum("bpd,hde->bhpe", x, self.W_Q)
        k = torch.einsum("bpd,hde->bhpe", x, self.W_K)
        v = torch.einsum("bpd,hde->bhpe", x, self.W_V)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.W_Q.shape[-1])  # [batch, head, query, key]
        n = x.shape[1]
        future = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        return scores.masked_fill(future, float("-inf")).softmax(dim=-1), v

    def forward(self, x: Float[Tensor, "batch pos d_model"]
                ) -> tuple[Float[Tensor, "batch pos d_model"], Float[Tensor, "batch head query key"]]:
        """The heads' summed output (the training path: contracting over heads in one einsum keeps
        losses bit-identical to earlier versions of this module) and the attention probabilities."""
        pattern, v = self._pattern_and_values(x)
        return torch.einsum("bhqe,hed->bqd", pattern @ v, self.W_O), pattern


class MLP(nn.Module):
    """``W_out relu(W_in x + b_in) + b_out``: the optional feed-forward half of a block (``ToyConfig.d_mlp``)."""

    def __init__(self, config: ToyConfig, generator: torch.Generator) -> None:
        super().__init__()
        d, m = config.d_model, config.d_mlp
        self.W_in = nn.Parameter(torch.randn(d, m, generator=generator) * config.init_std)
        self.b_in = nn.Parameter(torch.zeros(m))
        self.W_out = nn.Parameter(torch.randn(m, d, generator=generator) * config.init_std)
        self.b_out = nn.Parameter(torch.zeros(d))

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        return torch.relu(x @ self.W_in + self.b_in) @ self.W_out + self.b_out


class AttentionOnlyTransformer(nn.Module):
    """Embeddings, ``n_layers`` blocks ``resid += attn(ln(resid))``, then ``logits = ln(resid) @ W_U``.

    With ``config.d_mlp > 0`` each block also adds ``resid += mlp(ln_mlp(resid))`` after its attention
    (despite the class name: one toy class, so every analysis helper reads both kinds).

    Per-head weights, stacked over layers (read-only views for analysis):
    ``W_Q``, ``W_K``, ``W_V``: ``[layer, head, d_model, d_head]``;
    ``W_O``: ``[layer, head, d_head, d_model]``;
    ``W_E``: ``[d_vocab, d_model]``; ``W_pos``: ``[n_ctx, d_model]``; ``W_U``: ``[d_model, d_vocab]``.
    With ``layer_norm=False`` (default) the OV circuit of head (l, h) is ``W_V[l, h] @ W_O[l, h]``.
    """

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        for name in ("vocab_size", "n_ctx", "n_layers", "n_heads", "d_model", "d_head"):
            if getattr(config, name) < 1:
                raise ValueError(f"ToyConfig.{name} must be a positive integer, got {getattr(config, name)}.")
        if config.d_mlp < 0:
            raise ValueError(f"ToyConfig.d_mlp must be 0 (no MLP) or a positive width, got {config.d_mlp}.")
        if config.mlp_layers is not None and (
                len(set(config.mlp_layers)) != len(config.mlp_layers)
                or not all(0 <= layer < config.n_layers for layer in config.mlp_layers)):
            raise ValueError(f"ToyConfig.mlp_layers must list distinct layers in 0..{config.n_layers - 1}, "
                             f"got {config.mlp_layers}; None puts an MLP in every layer.")
        self.config = config
        generator = torch.Generator().manual_seed(config.seed)
        std = config.init_std
        self.embed = nn.Parameter(torch.randn(config.vocab_size, config.d_model, generator=generator) * std)
        self.pos_embed = nn.Parameter(torch.randn(config.n_ctx, config.d_model, generator=generator) * std)
        self.blocks = nn.ModuleList(Attention(config, generator) for _ in range(config.n_layers))
        self.unembed = nn.Parameter(torch.randn(config.d_model, config.vocab_size, generator=generator) * std)
        norm = (lambda: nn.LayerNorm(config.d_model)) if config.layer_norm else nn.Identity
        self.ln = nn.ModuleList(norm() for _ in range(config.n_layers))
        self.ln_final = norm()
        # Built last, from the same generator: a model without MLPs gets the same weights as before they existed.
        self.mlp_layers = tuple(range(config.n_layers)) if config.mlp_layers is None else tuple(config.mlp_layers)
        if not config.d_mlp:
            self.mlp_layers = ()
        self.mlps = nn.ModuleDict({str(layer): MLP(config, generator) for layer in self.mlp_layers})
        self.ln_mlp = nn.ModuleDict({str(layer): norm() for layer in self.mlp_layers})

    def forward(self, tokens: Int[Tensor, "batch pos"], return_patterns: bool = False, *, check: bool = True
                ) -> Float[Tensor, "batch pos d_vocab"] | tuple[
                    Float[Tensor, "batch pos d_vocab"], Float[Tensor, "layer batch head query key"]]:
        """Logits for every position; with ``return_patterns`` also every head's attention probabilities.

        ``check=False`` skips the token validation (``train_together`` validates each batch once, outside
        ``vmap``, where a data-dependent check cannot run)."""
        if check:
            self._check_tokens(tokens)
        # F.embedding, not self.embed[tokens]: the backward of advanced indexing accumulates in a
        # thread-dependent order on CPU, which breaks bit-identical reruns with more than one thread.
        resid = F.embedding(tokens, self.embed) + self.pos_embed[: tokens.shape[1]]
        patterns = []
        for layer, (ln, attn) in enumerate(zip(self.ln, self.blocks)):
            out, pattern = attn(ln(resid))
            resid = self._mlp(layer, resid + out)
            patterns.append(pattern)
        logits = self.ln_final(resid) @ self.unembed
        return (logits, torch.stack(patterns)) if return_patterns else logits

    def run_with_heads(self, tokens: Int[Tensor, "batch pos"], *, head_patch: HeadPatch | None = None,
                       resid_patch: ResidPatch | None = None) -> ToyRun:
        """One forward pass that keeps each head's write into the residual stream, optionally patched.

        The toy's own hook point, so analyses (direct logit attribution, activation and path patching)
        need no hook machinery: ``head_patch`` replaces chosen heads' outputs (after ``W_O``) before they
        are summed into the residual stream; ``resid_patch`` replaces the residual stream entering one
        layer (``layer == n_layers`` is the stream the unembedding reads). Patched heads' outputs are
        what ``ToyRun.head_outputs`` reports, so later layers and the logits see the patched values.
        Unpatched, its logits equal ``forward``'s up to float rounding (heads are summed separately here).
        """
        self._check_tokens(tokens)
        batch, n_pos = tokens.shape
        shape = (self.config.n_layers, batch, self.config.n_heads, n_pos, self.config.d_model)
        if head_patch is not None:
            head_patch.check(shape)
        if resid_patch is not None:
            resid_patch.check(self.config.n_layers, (batch, n_pos, self.config.d_model))
        resid = F.embedding(tokens, self.embed) + self.pos_embed[:n_pos]
        patterns, outputs, resids = [], [], []
        for layer, (ln, attn) in enumerate(zip(self.ln, self.blocks)):
            if resid_patch is not None and resid_patch.layer == layer:
                resid = resid_patch.apply(resid)
            resids.append(resid)
            per_head, pattern = attn.per_head(ln(resid))  # [batch, head, pos, d_model]
            if head_patch is not None:
                per_head = head_patch.apply(layer, per_head)
            resid = self._mlp(layer, resid + per_head.sum(dim=1))
            patterns.append(pattern)
            outputs.append(per_head)
        if resid_patch is not None and resid_patch.layer == self.config.n_layers:
            resid = resid_patch.apply(resid)
        resids.append(resid)
        return ToyRun(logits=self.ln_final(resid) @ self.unembed, patterns=torch.stack(patterns),
                      head_outputs=torch.stack(outputs), resid=torch.stack(resids))

    def _mlp(self, layer: int, resid: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        """The residual stream after layer `layer`'s MLP (unchanged when the model has none)."""
        if layer not in self.mlp_layers:
            return resid
        return resid + self.mlps[str(layer)](self.ln_mlp[str(layer)](resid))

    def _check_tokens(self, tokens: Tensor) -> None:
        if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"tokens must be an integer tensor [batch, pos], got {tuple(tokens.shape)} "
                             f"{tokens.dtype}; add a batch axis with tokens[None] for a single sequence.")
        if tokens.shape[1] > self.config.n_ctx:
            raise ValueError(f"tokens have {tokens.shape[1]} positions but n_ctx is {self.config.n_ctx}; "
                             "truncate the sequences or build the model with a larger n_ctx.")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.config.vocab_size):
            raise ValueError(f"token ids range over {tokens.min().item()}..{tokens.max().item()}, expected "
                             f"0..{self.config.vocab_size - 1} (vocab_size={self.config.vocab_size}).")

    def _stack(self, name: str) -> Tensor:
        return torch.stack([getattr(block, name) for block in self.blocks]).detach()

    W_Q = property(lambda self: self._stack("W_Q"), doc="[layer, head, d_model, d_head]")
    W_K = property(lambda self: self._stack("W_K"), doc="[layer, head, d_model, d_head]")
    W_V = property(lambda self: self._stack("W_V"), doc="[layer, head, d_model, d_head]")
    W_O = property(lambda self: self._stack("W_O"), doc="[layer, head, d_head, d_model]")
    W_E = property(lambda self: self.embed.detach(), doc="[d_vocab, d_model]")
    W_pos = property(lambda self: self.pos_embed.detach(), doc="[n_ctx, d_model]")
    W_U = property(lambda self: self.unembed.detach(), doc="[d_model, d_vocab]")
