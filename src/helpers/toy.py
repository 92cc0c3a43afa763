"""Small transformers trained from scratch in a notebook (the survey's "simplified model training").

Three parts, in the order a notebook uses them:

- ``AttentionOnlyTransformer``: token + positional embeddings, attention-only residual blocks with a
  causal mask, an unembedding. Weights are seeded from ``ToyConfig.seed``; per-head weights are exposed
  as stacked ``[layer, head, ...]`` tensors for OV/QK analysis. ``run_with_heads`` returns a ``ToyRun``
  with every head's output and the residual stream, and applies ``HeadPatch`` / ``ResidPatch``
  replacements (activation and path patching, mean ablation) without hooks.
- ``train``: a generic, deterministic AdamW loop over any ``sample_batch(generator, batch_size)``.
- Data for the induction toy: ``repeated_segment_batch`` (training) and ``repeated_sequence`` (probe).

``INDUCTION_TOY``, ``INDUCTION_TRAIN`` and ``INDUCTION_DATA`` are defaults under which the default
2-layer model shows the induction-head phase change in well under a minute on a laptop CPU.
A segment copied to a *random* later position is essential: with a fixed repeat offset the model
learns a positional shortcut and no induction head forms (toolchain notes §10).

Example::

    model = AttentionOnlyTransformer(INDUCTION_TOY)
    history = train(model, INDUCTION_DATA.sample, INDUCTION_TRAIN, evaluate)  # evaluate(model, step) -> dict
    pandas.DataFrame(history.evals)  # one row per evaluation step
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
    ``resid[-1] = resid[0] + head_outputs.sum((0, 2))`` and ``logits = resid[-1] @ W_U`` exactly.
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


class AttentionOnlyTransformer(nn.Module):
    """Embeddings, ``n_layers`` blocks ``resid += attn(ln(resid))``, then ``logits = ln(resid) @ W_U``.

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
        for ln, attn in zip(self.ln, self.blocks):
            out, pattern = attn(ln(resid))
            resid = resid + out
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
            resid = resid + per_head.sum(dim=1)
            patterns.append(pattern)
            outputs.append(per_head)
        if resid_patch is not None and resid_patch.layer == self.config.n_layers:
            resid = resid_patch.apply(resid)
        resids.append(resid)
        return ToyRun(logits=self.ln_final(resid) @ self.unembed, patterns=torch.stack(patterns),
                      head_outputs=torch.stack(outputs), resid=torch.stack(resids))

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


def per_position_loss(model: nn.Module, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos-1"]:
    """Cross-entropy of each next-token prediction: entry [b, p] scores logits at p against tokens[b, p+1]."""
    logits = model(tokens)
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")


@dataclass(frozen=True)
class ToyBatch:
    """Token sequences and the positions whose next-token prediction is trained and measured.

    ``loss_mask[b, p]`` True means the loss includes predicting ``tokens[b, p + 1]`` from position p,
    so the last column is always False.
    """

    tokens: Int[Tensor, "batch pos"]
    loss_mask: Bool[Tensor, "batch pos"]

    def __post_init__(self) -> None:
        if self.tokens.ndim != 2 or self.tokens.shape != self.loss_mask.shape:
            raise ValueError(f"tokens {tuple(self.tokens.shape)} and loss_mask {tuple(self.loss_mask.shape)} "
                             "must both be [batch, pos] with the same shape.")
        if self.loss_mask.dtype != torch.bool or self.loss_mask[:, -1].any():
            raise ValueError(f"loss_mask must be bool (got {self.loss_mask.dtype}) with its last column False: "
                             "the last position has no next token to predict.")


def masked_loss(model: nn.Module, batch: ToyBatch) -> Float[Tensor, ""]:
    """Mean next-token cross-entropy over the positions marked in ``batch.loss_mask``."""
    if not batch.loss_mask[:, :-1].any():
        raise ValueError("loss_mask marks no position; mark at least one position whose next token counts.")
    return masked_loss_from_logits(model(batch.tokens), batch.tokens, batch.loss_mask)


def masked_loss_from_logits(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"],
                            loss_mask: Bool[Tensor, "batch pos"]) -> Float[Tensor, ""]:
    """``masked_loss`` from logits already computed (no checks: it also runs inside ``vmap``)."""
    mask = loss_mask[:, :-1]
    losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
    return (losses * mask).sum() / mask.sum()


@dataclass(frozen=True)
class TrainConfig:
    """AdamW with linear warmup, then constant learning rate. ``seed`` drives the data generator."""

    steps: int
    batch_size: int
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    eval_every: int = 100
    seed: int = 0


@dataclass
class TrainHistory:
    """What ``train`` measured.

    ``train_loss[s]`` is the loss of the batch used by update s (before that update). ``evals`` holds one
    dict per evaluation, ``{"step": s, **evaluate(model, s)}`` taken after s updates, so
    ``pandas.DataFrame(history.evals)`` is a tidy table. ``wall_seconds`` is the only non-deterministic field.
    """

    train_loss: list[float] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    wall_seconds: float = 0.0


def train(model: AttentionOnlyTransformer, sample_batch: Callable[[torch.Generator, int], ToyBatch], config: TrainConfig,
          evaluate: Callable[[nn.Module, int], dict[str, float]] | None = None) -> TrainHistory:
    """Train one model in place on ``masked_loss`` of fresh batches drawn with ``config.seed``.

    ``train_together([model], ...)``: see there for the loop, determinism and speed.
    """
    return train_together([model], sample_batch, config, evaluate)[0]


def train_together(models: Sequence[AttentionOnlyTransformer], sample_batch: Callable[[torch.Generator, int], ToyBatch],
                   config: TrainConfig, evaluate: Callable[[nn.Module, int], dict[str, float]] | None = None, *,
                   data_seeds: Sequence[int] | None = None) -> list[TrainHistory]:
    """Train several models of one architecture side by side, in place, each as if trained alone.

    Typically one model per seed: the claims a toy page makes are stated over several seeds, because
    which head takes which role depends on the initial weights and, through float rounding, on the CPU's
    vectorised kernels (``ATEN_CPU_CAPABILITY``). The models' parameters are stacked and one
    ``torch.func.vmap``-ed pass computes every model's loss on its own batch, so one step costs one
    larger pass instead of one small pass per model (measured on 2 cores: five MCQ toys in about half the
    time of five separate runs). Each model keeps its own gradient clipping (``config.grad_clip``, on its
    own gradient norm) and AdamW state, which is elementwise, so the update equals a separate run's up to
    float rounding.

    Args:
        models: toy transformers with identical parameter shapes (one config, different seeds).
        sample_batch: ``sample_batch(generator, batch_size)``, drawing only from ``generator``.
        config: optimiser, schedule and sizes, shared by all models.
        evaluate: ``evaluate(model, step)``, run under ``torch.no_grad`` on each model at step 0, every
            ``eval_every`` updates and after the last one.
        data_seeds: the data generator's seed per model (default ``config.seed`` for every model).

    Returns:
        One ``TrainHistory`` per model. Same models, seeds, config and thread count give bit-identical
        losses on one CPU.
    """
    models = list(models)
    if not models:
        raise ValueError("models is empty: pass at least one model to train.")
    if config.steps < 1 or config.batch_size < 1 or config.eval_every < 1:
        raise ValueError(f"steps, batch_size and eval_every must be positive, got {config.steps}, "
                         f"{config.batch_size}, {config.eval_every}.")
    if config.lr <= 0:
        raise ValueError(f"lr must be positive, got {config.lr}.")
    seeds = [config.seed] * len(models) if data_seeds is None else list(data_seeds)
    if len(seeds) != len(models):
        raise ValueError(f"data_seeds has {len(seeds)} entries for {len(models)} models; give one seed per model.")
    shapes = [[tuple(p.shape) for p in m.parameters()] for m in models]
    if any(s != shapes[0] for s in shapes):
        raise ValueError("models differ in parameter shapes; train_together needs one architecture "
                         "(build them from one config with different seeds).")
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    params, buffers = torch.func.stack_module_state(models)  # each [model, ...], fresh leaf tensors
    template = models[0]
    optimizer = torch.optim.AdamW(params.values(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(config.warmup_steps, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    histories = [TrainHistory() for _ in models]
    start = time.perf_counter()

    def loss_of(model_params, model_buffers, tokens, loss_mask):
        logits = torch.func.functional_call(template, (model_params, model_buffers), (tokens,), {"check": False})
        return masked_loss_from_logits(logits, tokens, loss_mask)

    losses_of = torch.func.vmap(loss_of)

    def write_back() -> None:
        with torch.no_grad():
            for i, model in enumerate(models):
                for name, value in model.named_parameters():
                    value.copy_(params[name][i])

    def run_eval(step: int) -> None:
        if evaluate is None:
            return
        write_back()
        for model, history in zip(models, histories):
            model.eval()
            with torch.no_grad():
                history.evals.append({"step": step, **evaluate(model, step)})
            model.train()

    for model in models:
        model.train()
    run_eval(0)
    for step in range(config.steps):
        batches = [sample_batch(generator, config.batch_size) for generator in generators]
        tokens = torch.stack([b.tokens for b in batches])  # [model, batch, pos]
        loss_mask = torch.stack([b.loss_mask for b in batches])
        template._check_tokens(tokens.flatten(0, 1))
        if not loss_mask[:, :, :-1].flatten(1).any(1).all():
            raise ValueError("loss_mask marks no position; mark at least one position whose next token counts.")
        losses = losses_of(params, buffers, tokens, loss_mask)  # [model]
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # model i's parameters get model i's gradient only
        if config.grad_clip is not None:
            norms = torch.stack([p.grad.flatten(1).pow(2).sum(1) for p in params.values()]).sum(0).sqrt()
            scale = (config.grad_clip / (norms + 1e-6)).clamp(max=1.0)  # torch's clip_grad_norm_ rule, per model
            for p in params.values():
                p.grad.mul_(scale.view(-1, *[1] * (p.ndim - 1)))
        optimizer.step()
        schedule.step()
        for history, loss in zip(histories, losses.tolist()):
            history.train_loss.append(loss)
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            run_eval(step + 1)
    write_back()
    elapsed = time.perf_counter() - start
    for history in histories:
        history.wall_seconds = elapsed
    return histories


def repeated_segment_batch(generator: torch.Generator, batch_size: int, seq_len: int, vocab_size: int,
                           min_segment: int, max_segment: int) -> ToyBatch:
    """Random tokens in which one segment of random length L is copied to a random later position.

    Per sequence: L ~ U{min_segment..max_segment}, the first copy starts at s1 ~ U{0..seq_len-2L}, the
    second at s2 ~ U{s1+L..seq_len-L}. ``loss_mask`` marks positions s2..s2+L-2, whose next tokens
    (copy tokens 2..L) an induction head can predict from the first copy; nothing else is trained.
    """
    if min_segment < 2 or min_segment > max_segment:
        raise ValueError(f"need 2 <= min_segment <= max_segment, got min_segment={min_segment}, "
                         f"max_segment={max_segment}; a segment of one token has nothing to predict.")
    if seq_len < 2 * max_segment:
        raise ValueError(f"seq_len={seq_len} cannot hold two copies of a segment of max_segment={max_segment} "
                         f"tokens; use seq_len >= {2 * max_segment} or a smaller max_segment.")
    if vocab_size < 2 or batch_size < 1:
        raise ValueError(f"need vocab_size >= 2 and batch_size >= 1, got {vocab_size} and {batch_size}.")
    tokens = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    # Per-row uniform integers in [low, high] (randint takes scalar bounds): low + floor(u * (high - low + 1)).
    length = torch.randint(min_segment, max_segment + 1, (batch_size,), generator=generator)
    start1 = (torch.rand(batch_size, generator=generator) * (seq_len - 2 * length + 1)).long()
    start2 = start1 + length + (torch.rand(batch_size, generator=generator)
                                * (seq_len - 2 * length - start1 + 1)).long()
    pos = torch.arange(seq_len)
    offset = pos[None, :] - start2[:, None]  # [batch, pos]: index into the second copy
    in_copy = (offset >= 0) & (offset < length[:, None])
    source = (start1[:, None] + offset).clamp(0, seq_len - 1)  # [batch, pos]
    tokens = torch.where(in_copy, tokens.gather(1, source), tokens)
    loss_mask = (offset >= 0) & (offset < length[:, None] - 1)
    return ToyBatch(tokens=tokens, loss_mask=loss_mask)


@dataclass(frozen=True)
class RepeatedSequence:
    """``half_len`` distinct random tokens followed by the same tokens again (the classic induction probe).

    ``first_half`` / ``second_half`` are loss masks (same convention as ``ToyBatch.loss_mask``) for
    predicting tokens 2..half_len of each copy; only the second half is predictable, by induction.
    The earlier occurrence of the token at query q >= half_len is at q - half_len, so an induction head
    attends to key q - half_len + 1.
    """

    tokens: Int[Tensor, "batch pos"]
    first_half: Bool[Tensor, "batch pos"]
    second_half: Bool[Tensor, "batch pos"]


def repeated_sequence(generator: torch.Generator, batch_size: int, half_len: int, vocab_size: int
                      ) -> RepeatedSequence:
    """A random sequence of ``half_len`` distinct tokens, repeated twice: tokens ``[batch, 2 * half_len]``."""
    if not 2 <= half_len <= vocab_size:
        raise ValueError(f"need 2 <= half_len <= vocab_size={vocab_size} (tokens are drawn without "
                         f"replacement so each has one earlier occurrence), got half_len={half_len}.")
    # Distinct tokens per row: the first half_len entries of a random permutation.
    half = torch.rand(batch_size, vocab_size, generator=generator).argsort(dim=1)[:, :half_len]
    tokens = torch.cat([half, half], dim=1)
    pos = torch.arange(2 * half_len)
    first = (pos < half_len - 1).expand(batch_size, -1)
    second = ((pos >= half_len) & (pos < 2 * half_len - 1)).expand(batch_size, -1)
    return RepeatedSequence(tokens=tokens, first_half=first.clone(), second_half=second.clone())


@dataclass(frozen=True)
class SegmentTask:
    """Parameters of ``repeated_segment_batch``; ``task.sample`` is a ready ``sample_batch`` for ``train``."""

    seq_len: int
    vocab_size: int
    min_segment: int
    max_segment: int

    def sample(self, generator: torch.Generator, batch_size: int) -> ToyBatch:
        return repeated_segment_batch(generator, batch_size, self.seq_len, self.vocab_size,
                                      self.min_segment, self.max_segment)


# Defaults for the induction toy. Measured on a shared 2-core CPU (seeds 0-7, model and data seed equal):
# on a repeated 24-token probe the second-half loss stays near log(48) = 3.87 until step 180-200, falls
# below 0.3 log(48) by step 240-280 and ends near 0.03 log(48); the best layer-1 induction score jumps from
# ~0.05 to > 0.5 in the same window and a layer-0 head ends as a previous-token head (~0.73). 400 steps take
# 8-22 s on 2 threads (~12 s on 1 thread while another job runs). init_std 0.1 and lr 1e-2 were needed:
# at GPT-2's 0.02 and 3e-3 nothing had moved after 300 steps. The first-half loss rises above log(48),
# because only second-copy positions are trained and the model learns to bet on tokens it has already seen.
INDUCTION_DATA = SegmentTask(seq_len=48, vocab_size=48, min_segment=4, max_segment=16)
INDUCTION_TOY = ToyConfig(vocab_size=INDUCTION_DATA.vocab_size, n_ctx=INDUCTION_DATA.seq_len, init_std=0.1)
INDUCTION_TRAIN = TrainConfig(steps=400, batch_size=64, lr=1e-2, warmup_steps=50, eval_every=20)
