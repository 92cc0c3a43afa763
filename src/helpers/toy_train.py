"""Training the toys of `helpers.toy`, and the data of the induction toy.

- ``train`` / ``train_together``: a deterministic AdamW loop over any ``sample_batch(generator,
  batch_size)``; several models of one architecture (one per seed) train side by side in one vectorised
  pass.
- Data for the induction toy: ``repeated_segment_batch`` (training) and ``repeated_sequence`` (probe).

``INDUCTION_TOY``, ``INDUCTION_TRAIN`` and ``INDUCTION_DATA`` are defaults under which the default
2-layer model shows the induction-head phase change in well under a minute on a laptop CPU.
A segment copied to a *random* later position is essential: with a fixed repeat offset the model
learns a positional shortcut and no induction head forms (toolchain notes §10).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from helpers.toy import AttentionOnlyTransformer, ToyConfig


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one CPU thread, then restore the thread count.

    Toys this small gain little from a second thread on a quiet 2-core machine (1.7x for five MCQ toys
    trained together) and lose 10-25x on a busy one, where every parallel region waits for a descheduled
    thread; one thread also keeps results independent of the machine's core count.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
