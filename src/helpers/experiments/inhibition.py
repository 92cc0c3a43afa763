"""S-inhibition heads in IOI (Wang et al. 2023): they steer the name movers' attention away from the subject.

The test is Wang et al.'s sender -> receiver-query path patching: a candidate's output is taken from the
ABC run and reaches the model only through the name movers' queries at END; an S-inhibition head moves
their attention from IO to S. Candidates are the heads before the name movers that attend END -> S2.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from helpers import controls, heldout, models, store
from helpers.experiments import ioi
from helpers.experiments.ioi import Sizes
from helpers.heads import Head, label, labels


@dataclass(frozen=True)
class Study:
    """Senders patched from the ABC run into the name movers' END queries only.

    ``candidates``: heads before the first name mover with the most attention END -> S2, tested one by
    one (``single_shift``); ``random_single``: the same for random single heads of those layers;
    ``joint``: the top-k candidates by shift together vs random k-sets (shift and logit difference).
    """

    model: str
    receivers: tuple[Head, ...]
    to_s2: Float[Tensor, "layer head"]
    candidates: tuple[Head, ...]
    single_shift: Float[Tensor, "candidate"]
    random_single: Float[Tensor, "draw"]
    inhibitors: tuple[Head, ...]
    joint: controls.CausalCheck | None  # None when only the one-by-one screen was run (the circuit page)
    joint_logit: controls.CausalCheck | None
    held_out: heldout.HeldOut | None = None  # the screen and the joint check re-run on the held-out family

    @property
    def cutoff(self) -> float:
        """The largest attention shift any random single head produced: the bar an inhibitor must clear
        (NaN when nothing was tested)."""
        return float(self.random_single.max()) if len(self.random_single) else float("nan")

    def row(self) -> dict[str, object]:
        shifts = dict(zip(self.candidates, self.single_shift.tolist()))
        return {
            "model": self.model,
            "receivers (name movers)": labels(self.receivers),
            "S-inhibition heads (shift)": (", ".join(f"{label(h)} ({shifts[h]:+.3f})" for h in self.inhibitors[:3])
                                           or "none") + (f" +{len(self.inhibitors) - 3} more" if len(self.inhibitors) > 3 else ""),
            "largest random single shift": f"{self.cutoff:+.3f}",
            "joint shift, top-k": str(self.joint.top) if self.joint else "not run",
            "joint shift, random-k": self.joint.draws_summary() if self.joint else "not run",
            "logit diff change, top-k": str(self.joint_logit.top) if self.joint_logit else "not run",
        } | (self.held_out.row() if self.held_out is not None else {})


def _earlier_heads(model, before_layer: int) -> list[Head]:
    return [(layer, head) for layer in range(before_layer) for head in range(model.cfg.n_heads)]


def study(model, *, sizes: Sizes = Sizes(), seed: int = 0, read: ioi.IOIRead | None = None,
          receivers: Sequence[Head] | None = None, joint: bool = True, held_out: bool = False) -> Study:
    """Candidates by END -> S2 attention, each path-patched alone, then (with `joint`) the strongest
    together against random pairs.

    `read` and `receivers` default to the IOI read of `sizes.prompts` prompts and its top name movers; a
    page that has them already passes them in. With `held_out` (and `joint`), the screen and the joint
    check are re-run on the held-out IOI family (`held_out_check`).
    """
    if read is None:
        read = ioi.ioi_read(model, ioi.ioi_data(model, n=sizes.prompts, seed=seed))
    receivers = tuple(ioi.name_mover_ranking(read, sizes.top_k) if receivers is None else receivers)
    to_s2 = read.to_s2.mean(-1)
    pool = _earlier_heads(model, min(layer for layer, _ in receivers)) if receivers else []
    if not pool:  # no name movers (or only in layer 0): nothing whose queries could be steered
        return Study(model=models.spec_of(model).name, receivers=receivers, to_s2=to_s2, candidates=(),
                     single_shift=torch.zeros(0), random_single=torch.zeros(0), inhibitors=(), joint=None,
                     joint_logit=None)
    ranked = sorted(pool, key=lambda h: -to_s2[h].item())
    candidates = ranked[:sizes.candidates]
    generator = torch.Generator().manual_seed(seed)
    others = [pool[i] for i in torch.randperm(len(pool), generator=generator).tolist() if pool[i] not in candidates]
    singles = others[:sizes.random_singles]
    k = min(2, len(candidates))
    data = ioi.ioi_data(model, n=sizes.check_prompts, seed=seed + 1)

    def one_by_one() -> Tensor:  # [candidate + single], each sender alone; the IOI circuit page reads it too
        sets = [[c] for c in candidates] + [[s] for s in singles]
        return ioi.inhibition_shift(model, data, sets, receivers).shift.mean(-1)

    shifts = store.cached("s-inhibition-singles", one_by_one, model=models.spec_of(model).name,
                          receivers=tuple(receivers), candidates=tuple(candidates), singles=tuple(singles),
                          prompts=sizes.check_prompts, seed=seed)
    single_shift, random_single = shifts[:len(candidates)], shifts[len(candidates):]
    order = single_shift.argsort(descending=True).tolist()
    top = [candidates[i] for i in order[:k]]
    inhibitors = tuple(candidates[i] for i in order if single_shift[i] > random_single.max())
    common = dict(model=models.spec_of(model).name, receivers=receivers, to_s2=to_s2, candidates=tuple(candidates),
                  single_shift=single_shift, random_single=random_single, inhibitors=inhibitors)
    if not joint:
        return Study(**common, joint=None, joint_logit=None)
    draws = [[others[(sizes.random_singles + i * k + j) % len(others)] for j in range(k)]
             for i in range(sizes.n_random)]
    together = ioi.inhibition_shift(model, data, [top, *draws], receivers)
    shift_values = torch.cat([torch.zeros(1, len(data)), together.shift])  # row 0: the clean run moves nothing
    logit_values = torch.cat([ioi.ioi_read(model, data).logit_diff[None], together.logit_diff])
    null = f"{k} heads at random from the earlier layers, candidates excluded"
    found = Study(
        **common,
        joint=controls.check_from_values(shift_values, top, metric_name="name movers' (S - IO) attention",
                                         mode="path-patched", null=null, seed=seed),
        joint_logit=controls.check_from_values(logit_values, top, metric_name="logit(IO) - logit(S)",
                                               mode="path-patched", null=null, seed=seed, larger_is_stronger=False))
    if held_out and inhibitors:
        found = dataclasses.replace(found, held_out=held_out_check(model, found, sizes=sizes, seed=seed))
    return found


HELD_OUT_FAMILY = "IOI in other words: two sentences, other verbs, other names, places and objects"


def sender_screen(read: ioi.IOIRead, receivers: Sequence[Head]) -> Float[Tensor, "layer head"]:
    """The candidate screen as a ``[layer, head]`` score: attention END -> S2, with heads at or after the
    first receiver's layer set to -1 (they cannot send to the receivers' queries, so they rank last)."""
    score = read.to_s2.mean(-1).clone()
    score[min(layer for layer, _ in receivers):] = -1.0
    return score


def held_out_check(model, found: Study, *, sizes: Sizes = Sizes(), seed: int = 0) -> heldout.HeldOut:
    """`found`'s S-inhibition heads on the held-out IOI family (`ioi.held_out_data`), with the receivers kept.

    The screen (attention END -> S2 of heads before the receivers) is recomputed on `sizes.prompts` held-out
    prompts; the top pair of the joint check is path-patched again on `sizes.check_prompts` others, against
    `sizes.n_random` fresh draws of as many heads from *all* heads. A drawn head at or after the receivers'
    layer has no path into their queries and moves nothing: it stays in the draw but is not patched.
    """
    if not found.inhibitors or found.joint is None:
        raise ValueError("need S-inhibition heads and the joint check (study(..., joint=True)) to re-check them")
    receivers = list(found.receivers)
    first = min(layer for layer, _ in receivers)
    read = ioi.ioi_read(model, ioi.held_out_data(model, n=sizes.prompts, seed=seed))
    top = list(found.joint.heads)
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(top), sizes.n_random, seed=seed + 2)
    senders = [[head for head in draw if head[0] < first] for draw in draws]
    data = ioi.held_out_data(model, n=sizes.check_prompts, seed=seed + 1)
    result = ioi.inhibition_shift(model, data, [top, *senders], receivers)
    values = torch.cat([torch.zeros(1, len(data)), result.shift])
    check = controls.check_from_values(values, top, metric_name="name movers' (S - IO) attention",
                                       mode="path-patched",
                                       null=f"{len(top)} heads drawn from all {model.cfg.n_layers * model.cfg.n_heads}",
                                       seed=seed)
    return heldout.HeldOut(HELD_OUT_FAMILY, found=found.inhibitors, screen=sender_screen(read, receivers), check=check)
