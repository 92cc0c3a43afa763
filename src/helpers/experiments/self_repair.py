"""Self-repair: how much of a removed head's direct effect the rest of the model makes up for.

Wang et al. found that when the IOI name movers of GPT-2 small are knocked out, the logit difference
falls far less than their direct effect predicts, because other heads (the *backup name movers*) start
doing their job. McDougall et al. traced part of this to copy-suppression heads, which push down
whatever the name movers push up and so relax when the name movers are gone.

The bookkeeping is exact because direct logit attribution (DLA, `helpers.attribution`) splits the
logit difference at END into one term per component, with the final norm's scale read on each run:

    actual drop = lost direct effect of the removed heads - rise of the other heads' DLA - rise of the rest

so the *self-repair fraction* ``1 - actual drop / lost direct effect`` is 0 when nothing compensates,
1 when the logit difference does not move, and above 1 when removing the heads even helps. Everything
here is a pure function of tensors from `helpers.ioi` (`ioi_read`, `dla_after_ablation`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from helpers import controls, heads, heldout, models, stats
from helpers.experiments import ioi  # only for the study at the end
from helpers.heads import Head



def _check_grids(before: Tensor, after: Tensor, removed: Sequence[Head]) -> None:
    if before.ndim != 3 or before.shape != after.shape:
        raise ValueError(f"before and after must be DLA grids [layer, head, batch] of one shape; got "
                         f"{tuple(before.shape)} and {tuple(after.shape)}")
    heads.check(removed, *before.shape[:2])


def others_mask(removed: Sequence[Head], n_layers: int, n_heads: int) -> Float[Tensor, "layer head"]:
    """True for every head that was *not* removed: only these can compensate."""
    return ~heads.masks([removed], n_layers, n_heads)[0]


def dla_rise(before: Float[Tensor, "layer head batch"], after: Float[Tensor, "layer head batch"],
             removed: Sequence[Head]) -> Float[Tensor, "layer head"]:
    """Mean rise of each head's direct effect after `removed` were ablated; the removed heads get NaN.

    Backup heads are the ones with the largest rise. The removed heads are blanked rather than set to
    zero: their "rise" is the loss of their own effect, not compensation.
    """
    _check_grids(before, after, removed)
    rise = (after - before).mean(-1)
    return rise.masked_fill(~others_mask(removed, *rise.shape), float("nan"))


def ratio_ci(numerator: Sequence[float] | Tensor, denominator: Sequence[float] | Tensor, *, n_boot: int = 2000,
             level: float = 0.95, seed: int = 0) -> stats.Estimate:
    """Percentile-bootstrap interval of mean(numerator) / mean(denominator), resampling prompts in pairs."""
    x = np.asarray(torch.as_tensor(numerator, dtype=torch.float64))
    y = np.asarray(torch.as_tensor(denominator, dtype=torch.float64))
    if x.ndim != 1 or x.shape != y.shape or x.shape[0] < 2:
        raise ValueError(f"need two 1-D samples of one length >= 2 (one value per prompt); got {x.shape} and {y.shape}")
    if abs(y.mean()) < 1e-9:
        raise ValueError("the denominator's mean is zero: the ratio is undefined (nothing was lost to repair)")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, x.shape[0], size=(n_boot, x.shape[0]))  # [resample, prompt]
    ratios = x[rows].mean(1) / y[rows].mean(1)
    tail = (1 - level) / 2
    lower, upper = np.quantile(ratios, [tail, 1 - tail])
    return stats.Estimate(mean=float(x.mean() / y.mean()), lower=float(lower), upper=float(upper),
                          n=x.shape[0], level=level)


@dataclass(frozen=True)
class SelfRepair:
    """One knockout, accounted for per prompt (all ``[batch]``, in logits of logit(IO) - logit(S)).

    ``lost``: the removed heads' direct effect before minus after (what a model without repair loses);
    ``actual``: the real drop of the logit difference; ``by_heads``: the other heads' summed DLA rise;
    ``by_rest``: the remainder (MLPs, embeddings, norm biases): ``lost - actual - by_heads``.
    """

    removed: tuple[Head, ...]
    clean: Float[Tensor, "batch"]
    ablated: Float[Tensor, "batch"]
    lost: Float[Tensor, "batch"]
    actual: Float[Tensor, "batch"]
    by_heads: Float[Tensor, "batch"]
    by_rest: Float[Tensor, "batch"]
    seed: int = 0

    def fraction(self) -> stats.Estimate:
        """Self-repair fraction ``1 - actual / lost`` (ratio of means) with a paired bootstrap interval."""
        share = ratio_ci(self.actual, self.lost, seed=self.seed)
        return stats.Estimate(mean=1 - share.mean, lower=1 - share.upper, upper=1 - share.lower, n=share.n,
                              level=share.level)

    def estimate(self, name: str) -> stats.Estimate:
        """Bootstrap interval of one per-prompt field, e.g. ``estimate("lost")``."""
        fields = {"clean": self.clean, "ablated": self.ablated, "lost": self.lost, "actual": self.actual,
                  "by_heads": self.by_heads, "by_rest": self.by_rest}
        return stats.bootstrap_ci(fields[name], seed=self.seed)

    def summary(self) -> str:
        return (f"ablating {heads.labels(self.removed)}: direct effect lost {self.estimate('lost')}, logit difference drop "
                f"{self.estimate('actual')}; other heads make up {self.estimate('by_heads')}, the rest "
                f"{self.estimate('by_rest')}; self-repair fraction {self.fraction()}")


def account(before_dla: Float[Tensor, "layer head batch"], before_ld: Float[Tensor, "batch"],
            after_dla: Float[Tensor, "layer head batch"], after_ld: Float[Tensor, "batch"],
            removed: Sequence[Head], *, seed: int = 0) -> SelfRepair:
    """Split the effect of removing `removed` into lost direct effect, compensation by other heads and the rest."""
    _check_grids(before_dla, after_dla, removed)
    if before_ld.shape != (before_dla.shape[-1],) or after_ld.shape != before_ld.shape:
        raise ValueError(f"logit differences must be [batch={before_dla.shape[-1]}]; got "
                         f"{tuple(before_ld.shape)} and {tuple(after_ld.shape)}")
    if not removed:
        raise ValueError("removed is empty: pass the heads that were ablated, e.g. the top name movers")
    mask = others_mask(removed, *before_dla.shape[:2])
    change = after_dla - before_dla  # [layer, head, batch]
    lost = -change[~mask].sum(0)  # the removed heads' own change, sign-flipped
    actual = before_ld - after_ld
    by_heads = change[mask].sum(0)
    return SelfRepair(removed=tuple(map(tuple, removed)), clean=before_ld, ablated=after_ld, lost=lost,
                      actual=actual, by_heads=by_heads, by_rest=lost - actual - by_heads, seed=seed)


@dataclass(frozen=True)
class RiseControl:
    """What ablating random head sets does to the other heads' direct effects.

    ``max_rise``: per random draw, the largest mean DLA rise of any head outside the draw;
    ``by_heads``: per draw, the other heads' summed mean rise.
    """

    draws: tuple[tuple[Head, ...], ...]
    max_rise: Float[Tensor, "draw"]
    by_heads: Float[Tensor, "draw"]
    seed: int = 0

    def estimate(self, name: str) -> stats.Estimate:
        """Bootstrap interval over draws of ``"max_rise"`` or ``"by_heads"``."""
        return stats.bootstrap_ci({"max_rise": self.max_rise, "by_heads": self.by_heads}[name], seed=self.seed)

    def summary(self) -> str:
        return (f"{len(self.draws)} random sets of {len(self.draws[0])} heads: largest single-head DLA rise "
                f"{self.estimate('max_rise')} (max {self.max_rise.max():.3f}); other heads' summed rise "
                f"{self.estimate('by_heads')}")


def rise_control(before_dla: Float[Tensor, "layer head batch"],
                 after_dlas: Sequence[Float[Tensor, "layer head batch"]], draws: Sequence[Sequence[Head]], *,
                 seed: int = 0) -> RiseControl:
    """Summarise the DLA rises after each random draw (``after_dlas[i]`` was read with ``draws[i]`` ablated)."""
    if len(after_dlas) != len(draws) or len(draws) < 2:
        raise ValueError(f"need one DLA grid per draw and at least 2 draws; got {len(after_dlas)} grids, "
                         f"{len(draws)} draws")
    rises = [dla_rise(before_dla, after, draw) for after, draw in zip(after_dlas, draws)]
    return RiseControl(draws=tuple(tuple(map(tuple, d)) for d in draws),
                       max_rise=torch.stack([r.nan_to_num(float("-inf")).max() for r in rises]),
                       by_heads=torch.stack([r.nansum() for r in rises]), seed=seed)


# --------------------------------------------------------------------------------------------------
# The backup-name-mover study (Wang et al.'s knockout), the same steps for every model on the page.


@dataclass(frozen=True)
class Sizes:
    """Prompts and draws of the backup study (the page's parameters cell sets these)."""

    prompts: int = 50
    top_k: int = 3
    n_random: int = 10
    pool: int = 12  # the control knocks out heads drawn from this many heads of largest |direct effect|


@dataclass(frozen=True)
class Study:
    """IOI gate, the name movers, their knockout accounted for, the backups and the random-set control.

    A head is a *backup* when its mean DLA rise after the knockout is above every single-head rise seen
    after the random knockouts (`control.max_rise`) and at least `min_share` of the lost direct effect.
    """

    model: str
    gate: stats.GateResult
    name_movers: tuple[Head, ...]
    dla: Float[Tensor, "layer head"]
    rise: Float[Tensor, "layer head"] | None
    repair: SelfRepair | None  # None when there is no name mover to knock out
    control: RiseControl | None
    min_share: float = 0.1
    held_out: heldout.HeldOut | None = None  # the knockout and its control re-run on the held-out family
    held_out_study: Study | None = None  # the same study on held-out prompts, the name movers kept
    per_prompt_rise: Float[Tensor, "layer head batch"] | None = None  # DLA after - before the knockout

    @property
    def backups(self) -> list[Head]:
        """Heads passing the backup rule, largest rise first."""
        if self.repair is None:
            return []
        bar = max(self.control.max_rise.max().item(), self.min_share * self.repair.lost.mean().item())
        grid = self.rise.nan_to_num(float("-inf"))
        return heads.top(grid, where=grid > bar)

    def row(self) -> dict[str, object]:
        label = heads.labels
        row = {"model": self.model, "behaviour gate": "pass" if self.gate.passed else "fail",
               "name movers (DLA)": label(self.name_movers, self.dla)}
        if self.repair is None:
            return row | {"knockout": "not run (no name mover)"}
        return row | {
            "direct effect lost": str(self.repair.estimate("lost")),
            "actual drop": str(self.repair.estimate("actual")),
            "self-repair fraction": str(self.repair.fraction()),
            "backups (DLA rise)": label(self.backups[:4], self.rise),
            "largest rise, random knockouts": f"{self.control.max_rise.max():.3f}",
        } | ({} if self.held_out is None else self.held_out.row()
              | {"held-out backups": label(self.held_out_study.backups[:4], self.held_out_study.rise) or "none"})


def knockout_control(model, data, read, movers: Sequence[Head], *, means, sizes: Sizes = Sizes(),
                     seed: int = 0) -> RiseControl:
    """The rises after knocking out `sizes.n_random` sets of as many heads as `movers`, drawn from the
    `sizes.pool` heads of largest mean |direct effect| (`controls.score_matched_sets`; a draw may hold name
    movers). Knocking out inert heads leaves nothing to repair, so the null removes heads that matter as much."""
    dla = read.dla.mean(-1)
    draws = controls.score_matched_sets(movers, dla, sizes.n_random, seed=seed + 1, pool=sizes.pool)
    return rise_control(read.dla, [ioi.dla_after_ablation(model, data, d, means=means).dla for d in draws], draws,
                        seed=seed)


def knockout_study(model, data, *, movers: Sequence[Head] | None = None, sizes: Sizes = Sizes(),
                   seed: int = 0) -> Study:
    """Gate, name movers (the top `sizes.top_k` on `data` unless given), knockout and control on `data`."""
    read = ioi.ioi_read(model, data)
    gate = ioi.ioi_gate(model, data, seed=seed, read=read)
    movers = ioi.name_mover_ranking(read, sizes.top_k) if movers is None else list(movers)
    name = models.spec_of(model).name
    if not movers:
        return Study(model=name, gate=gate, name_movers=(), dla=read.dla.mean(-1), rise=None, repair=None, control=None)
    means = ioi.abc_means(model, data)
    after = ioi.dla_after_ablation(model, data, movers, means=means)
    control = knockout_control(model, data, read, movers, means=means, sizes=sizes, seed=seed)
    rise = dla_rise(read.dla, after.dla, movers)
    return Study(model=name, gate=gate, name_movers=tuple(movers), dla=read.dla.mean(-1), rise=rise,
                 repair=account(read.dla, read.logit_diff, after.dla, after.logit_diff, movers, seed=seed),
                 control=control, per_prompt_rise=(after.dla - read.dla))


HELD_OUT_FAMILY = "IOI in other words: two sentences, other verbs, other names, places and objects"


def held_out_check(model, found: Study, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """`found` with the knockout re-run on the held-out IOI family (`ioi.held_out_data`, `sizes.prompts`
    prompts): the same name movers knocked out, a fresh score-matched control (the pool ranked by |DLA| on
    the held-out prompts, other seeds), the backup rule applied again.

    ``held_out.found`` is `found`'s backups (or, if there are none, its head of largest rise); its screen
    is each head's DLA rise on the held-out prompts, and its check compares the first found head's rise
    with the largest rise of any head after each control knockout (p counts control knockouts after
    which some head rose at least as much).
    """
    if found.repair is None:
        raise ValueError("no name movers were knocked out: nothing to re-check")
    data = ioi.held_out_data(model, n=sizes.prompts, seed=seed)
    held = knockout_study(model, data, movers=found.name_movers, sizes=sizes, seed=seed + 10)
    grid = held.rise.nan_to_num(float("-inf"))
    backups = tuple(found.backups) or tuple(heads.top(found.rise.nan_to_num(float("-inf")), 1))
    head = backups[0]
    rises = held.per_prompt_rise[head]
    check = controls.CausalCheck(
        metric_name=f"rise of {heads.label(head)}'s direct effect (logits)", heads=(head,),
        mode=f"{heads.labels(found.name_movers)} mean-ablated",
        null=(f"{len(held.control.draws)} knockouts of {len(found.name_movers)} of the {sizes.pool} heads of largest "
              "|DLA| on these prompts: the largest rise of any other head"),
        clean=stats.bootstrap_ci(torch.zeros_like(rises), seed=seed), top=stats.bootstrap_ci(rises, seed=seed),
        draws=held.control.max_rise)
    return dataclasses.replace(found, held_out=heldout.HeldOut(HELD_OUT_FAMILY, found=backups, screen=grid, check=check),
                               held_out_study=held)


def study(model, *, sizes: Sizes = Sizes(), seed: int = 0, held_out: bool = False) -> Study:
    """Gate, name movers, knockout and random control on `model`: what the page shows, in one call; with
    `held_out`, also re-run on the held-out IOI family (`held_out_check`)."""
    found = knockout_study(model, ioi.ioi_data(model, n=sizes.prompts, seed=seed), sizes=sizes, seed=seed)
    return held_out_check(model, found, sizes=sizes, seed=seed) if held_out and found.repair is not None else found
