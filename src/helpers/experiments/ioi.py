"""The indirect-object identification (IOI) experiment shared by the mover pages (Wang et al. 2023).

"When Mary and John went to the store, John gave a drink to" -> " Mary". The metric is the logit
difference logit(IO) - logit(S) at the last position (END); the corrupted "ABC" twin replaces the three
names with three fresh ones, so it carries no information about the answer. Everything here reads END
only (one pass that stops before the unembedding) and builds on `attribution` and `patching`.

Roles, as Wang et al. define them and as the pages test them:
- name movers attend END -> IO and push its logit up (most positive direct effect);
- negative name movers attend END -> IO and push it down (most negative direct effect);
- S-inhibition heads change *where the name movers attend*: patching their output from the ABC run into
  the name movers' queries moves attention from IO to S (`inhibition_shift`);
- backup name movers take over when the name movers are removed (`dla_after_ablation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from helpers import attribution, capture, interventions, patching, readout, stats, tasks
from helpers.heads import Head, top as top_heads

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@dataclass(frozen=True)
class Sizes:
    """Prompts and draws of the IOI studies (the pages' parameters cells set these)."""

    prompts: int = 50  # gate, screen and attention
    check_prompts: int = 20  # exact patching and ablation
    top_k: int = 3
    n_random: int = 20
    candidates: int = 6  # S-inhibition candidates tested one by one
    random_singles: int = 12  # random single heads path-patched as their control


def ioi_data(model: TransformerBridge, *, n: int = 50, seed: int = 0) -> tasks.TaskBatch:
    """Seeded IOI prompts (ABBA and BABA alternating) with their ABC twins: `tasks.ioi`."""
    return tasks.ioi(model, n=n, seed=seed)


def held_out_data(model: TransformerBridge, *, n: int = 50, seed: int = 0) -> tasks.TaskBatch:
    """IOI prompts from the held-out family (other wording, names, places, objects): `tasks.ioi_held_out`.
    Pages re-check their findings on these; no screen reads them."""
    return tasks.ioi_held_out(model, n=n, seed=seed)


def _check_ioi(data: tasks.TaskBatch) -> None:
    if data.answers is None or data.wrong is None or data.corrupted is None or "io" not in data.positions:
        raise ValueError(f"{data.name!r} is not an IOI batch: build it with helpers.ioi.ioi_data (it needs answers, "
                         "wrong, corrupted twins and the io/s1/s2 positions)")


@dataclass(frozen=True)
class IOIRead:
    """What one pass leaves at END, per head and prompt.

    ``dla``: direct effect on logit(IO) - logit(S); ``to_io``, ``to_s``, ``to_s2``: attention END -> IO,
    END -> S1 + S2 and END -> S2 alone, all ``[layer, head, batch]``; ``logit_diff``: ``[batch]``.
    """

    dla: Float[Tensor, "layer head batch"]
    to_io: Float[Tensor, "layer head batch"]
    to_s: Float[Tensor, "layer head batch"]
    to_s2: Float[Tensor, "layer head batch"]
    logit_diff: Float[Tensor, "batch"]


def _attention_to(attention: Tensor, where: Tensor) -> Tensor:
    """``attention [layer, batch, head, key]`` at one key per prompt -> ``[layer, head, batch]``."""
    index = where[None, :, None, None].expand(*attention.shape[:3], 1)
    return attention.gather(3, index)[..., 0].permute(0, 2, 1)


def ioi_read(model: TransformerBridge, data: tasks.TaskBatch, *, fwd_hooks: Sequence = ()) -> IOIRead:
    """Direct logit attribution, attention to the names and the logit difference, from one pass."""
    _check_ioi(data)
    run = capture.read_end(model, data.tokens, fwd_hooks=list(fwd_hooks))
    s2 = _attention_to(run.attention, data.positions["s2"])
    return IOIRead(dla=attribution.attribution_from_read(model, run, data.answers, data.wrong),
                   to_io=_attention_to(run.attention, data.positions["io"]),
                   to_s=_attention_to(run.attention, data.positions["s1"]) + s2, to_s2=s2,
                   logit_diff=readout.logit_difference(model, run.final, data.answers, data.wrong))


def ioi_gate(model: TransformerBridge, data: tasks.TaskBatch, *, seed: int = 0,
             read: IOIRead | None = None) -> stats.GateResult:
    """Does the model prefer the indirect object? Clean logit difference vs the ABC twin's, paired.
    `read`: the clean `ioi_read` of `data`, if already computed (saves its pass)."""
    _check_ioi(data)
    clean = (ioi_read(model, data) if read is None else read).logit_diff
    abc = readout.logit_difference(model, capture.final_at(model, data.corrupted), data.answers, data.wrong)
    return stats.behaviour_gate(clean, abc, paired=True, seed=seed, name="IOI",
                                metric_name="logit(IO) - logit(S)", null_name="on the ABC twin")


def abc_means(model: TransformerBridge, data: tasks.TaskBatch) -> Float[Tensor, "layer pos head d_head"]:
    """Per-position mean head outputs over the ABC twins: the reference for mean ablation (Wang et al.)."""
    _check_ioi(data)
    return capture.mean_head_outputs(model, data.corrupted, per_position=True).float().cpu()


def _broadcast(means: Tensor, batch: int) -> Tensor:
    return means[:, None].expand(means.shape[0], batch, *means.shape[1:])


def ablated_logit_diff(model: TransformerBridge, data: tasks.TaskBatch, head_sets: Sequence[Sequence[Head]], *,
                       means: Tensor | None = None, max_rows: int | None = None) -> Float[Tensor, "set batch"]:
    """logit(IO) - logit(S) at END with each head set mean-ablated (ABC means unless given); ``[[]]`` = clean."""
    _check_ioi(data)
    means = abc_means(model, data) if means is None else means
    final = patching.patched_final(model, data.tokens, _broadcast(means, len(data)), head_sets, max_rows=max_rows)
    return readout.logit_difference(model, final, data.answers, data.wrong)


def patched_logit_diff(model: TransformerBridge, data: tasks.TaskBatch, head_sets: Sequence[Sequence[Head]], *,
                       path: bool = False, max_rows: int | None = None) -> Float[Tensor, "set batch"]:
    """logit(IO) - logit(S) with each set's heads taking their output on the ABC twin (activation patching);
    with `path`, every other head is frozen at its clean output (path patching to the logits)."""
    _check_ioi(data)
    source = patching.head_outputs(model, data.corrupted)
    final = patching.patched_final(model, data.tokens, source, head_sets, path=path, max_rows=max_rows)
    return readout.logit_difference(model, final, data.answers, data.wrong)


def dla_after_ablation(model: TransformerBridge, data: tasks.TaskBatch, heads: Sequence[Head], *,
                       means: Tensor | None = None) -> IOIRead:
    """`ioi_read` with `heads` mean-ablated: heads whose direct effect rises are backups (self-repair)."""
    means = abc_means(model, data) if means is None else means
    return ioi_read(model, data, fwd_hooks=interventions.ablation_hooks(model, heads, means=means))


def name_mover_ranking(read: IOIRead, k: int | None = None) -> list[Head]:
    """Heads with a positive mean direct effect, largest first, among those attending END -> IO more than to S."""
    dla = read.dla.mean(-1)
    return top_heads(dla, k, where=(read.to_io.mean(-1) > read.to_s.mean(-1)) & (dla > 0))


def negative_mover_ranking(read: IOIRead, k: int | None = None) -> list[Head]:
    """Heads with a negative mean direct effect, most negative first, among those attending END -> IO more
    than to S."""
    dla = read.dla.mean(-1)
    return top_heads(-dla, k, where=(read.to_io.mean(-1) > read.to_s.mean(-1)) & (dla < 0))


def subject_suppressor_ranking(read: IOIRead, k: int | None = None) -> list[Head]:
    """Heads with a positive mean direct effect, largest first, among those attending END -> S more than to
    IO: they help by pushing the subject *down* (copy suppression aimed at S), not by copying IO."""
    dla = read.dla.mean(-1)
    return top_heads(dla, k, where=(read.to_s.mean(-1) > read.to_io.mean(-1)) & (dla > 0))


@dataclass(frozen=True)
class InhibitionShift:
    """Sender -> name-mover-query path patching from the ABC run.

    ``shift``: ``[set, batch]`` change of the receivers' mean (END -> S) - (END -> IO) attention relative
    to the clean run (positive: the senders' ABC output sends the name movers to S, i.e. the clean output
    was steering them away from S); ``logit_diff``: ``[set, batch]`` of the second pass.
    """

    shift: Float[Tensor, "set batch"]
    logit_diff: Float[Tensor, "set batch"]


def inhibition_shift(model: TransformerBridge, data: tasks.TaskBatch, sender_sets: Sequence[Sequence[Head]],
                     receivers: Sequence[Head], *, max_rows: int | None = None) -> InhibitionShift:
    """How much each sender set, patched from the ABC run into the receivers' END queries only, moves
    the receivers' attention from IO to S (Wang et al.'s test for S-inhibition heads)."""
    _check_ioi(data)
    source = patching.head_outputs(model, data.corrupted)
    result = patching.path_patched_receivers(model, data.tokens, source, [[], *sender_sets], receivers,
                                             max_rows=max_rows)
    rows = torch.arange(len(data))
    to_s = result.attention[..., rows, data.positions["s1"]] + result.attention[..., rows, data.positions["s2"]]
    to_io = result.attention[..., rows, data.positions["io"]]
    preference = (to_s - to_io).mean(dim=1)  # [set, batch], averaged over receivers
    logit_diff = readout.logit_difference(model, result.final, data.answers, data.wrong)
    return InhibitionShift(shift=preference[1:] - preference[:1], logit_diff=logit_diff[1:])


def recovered_fraction(circuit: Float[Tensor, "batch"], full: Float[Tensor, "batch"],
                       baseline: Float[Tensor, "batch"]) -> float:
    """Share of the full model's mean logit difference (above `baseline`, e.g. everything ablated) that a
    circuit keeps: 1 = all of it, 0 = none."""
    gap = (full - baseline).mean()
    if gap.abs() < 1e-6:
        raise ValueError("the full model does no better than the baseline; nothing to recover")
    return float((circuit - baseline).mean() / gap)


def all_heads_except(keep: Sequence[Head], n_layers: int, n_heads: int) -> list[Head]:
    """Every head of the model that is not in `keep` (the set mean-ablated when testing a circuit)."""
    kept = set(map(tuple, keep))
    return [(layer, head) for layer in range(n_layers) for head in range(n_heads) if (layer, head) not in kept]
