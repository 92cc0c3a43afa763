"""Random-head controls for a causal check: which head sets to draw, and where the observed effect falls.

A page claims that *these* heads matter. The control asks how often a set drawn at random does as much,
and it must be able to say "often": so sets are drawn from **all** heads (the found heads included), and,
where the claim is about strong heads, from heads matched on layer or on a score such as the direct
effect. The verdict is the observed effect's rank among N draws,
``p = (1 + #draws at least as strong) / (N + 1)``: N = 20 can show p = 1/21 at best, a claim of
p < 0.01 needs N >= 100 (draws are batched, so they are cheap).

- `uniform_sets`, `layer_matched_sets`, `score_matched_sets`: the draws (seeded, no global RNG).
- `CausalCheck` / `check_from_values`: the observed effect against the draws' distribution.
- `ablation_check`: mean- or zero-ablate the heads and the drawn sets in batched passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from helpers import capture, heads, interventions, stats
from helpers.heads import Head

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def uniform_sets(n_layers: int, n_heads: int, k: int, n_draws: int, *, seed: int,
                 exclude: Sequence[Head] = ()) -> list[list[Head]]:
    """`n_draws` sets of k distinct heads, uniform over the model's heads (minus `exclude`, if given).

    The null of "these k heads matter" draws from all heads, the found ones included; `exclude` is for
    questions such as "what do *other* heads do" and must be named in the text when used.
    """
    excluded = set(map(tuple, exclude))
    pool = [head for head in heads.every(n_layers, n_heads) if head not in excluded]
    if not 1 <= k <= len(pool) or n_draws < 1:
        raise ValueError(f"need 1 <= k <= {len(pool)} (heads in the pool) and n_draws >= 1; got k={k}, n_draws={n_draws}")
    generator = _generator(seed)
    return [[pool[i] for i in torch.randperm(len(pool), generator=generator)[:k].tolist()] for _ in range(n_draws)]


def layer_matched_sets(found: Sequence[Head], n_heads: int, n_draws: int, *, seed: int) -> list[list[Head]]:
    """`n_draws` sets with as many heads in each layer as `found` has, drawn uniformly within those layers.

    The null for "these heads, not just any heads of these layers": depth alone (late heads write to the
    logits more directly) cannot explain an effect that beats it.
    """
    per_layer: dict[int, int] = {}
    for layer, _ in found:
        per_layer[layer] = per_layer.get(layer, 0) + 1
    if not found or any(count > n_heads for count in per_layer.values()) or n_draws < 1:
        raise ValueError(f"found must be non-empty with at most {n_heads} heads per layer and n_draws >= 1; "
                         f"got {heads.labels(found)}, n_draws={n_draws}")
    generator = _generator(seed)
    draws = []
    for _ in range(n_draws):
        drawn = []
        for layer in sorted(per_layer):
            drawn += [(layer, h) for h in torch.randperm(n_heads, generator=generator)[:per_layer[layer]].tolist()]
        draws.append(drawn)
    return draws


def score_matched_sets(found: Sequence[Head], score: Float[Tensor, "layer head"], n_draws: int, *, seed: int,
                       pool: int) -> list[list[Head]]:
    """`n_draws` sets of as many heads as `found`, drawn from the `pool` heads with the largest ``|score|``
    (the found heads included): the null for a claim about strong heads, e.g. "knocking out the name movers
    is repaired" against "knocking out any heads of comparable direct effect"."""
    k = len(found)
    if not k <= pool <= score.numel() or n_draws < 1:
        raise ValueError(f"pool must lie in [{k}, {score.numel()}] (at least the {k} found heads) and n_draws >= 1; "
                         f"got pool={pool}, n_draws={n_draws}")
    strong = heads.top(score.abs(), pool)
    generator = _generator(seed)
    return [[strong[i] for i in torch.randperm(pool, generator=generator)[:k].tolist()] for _ in range(n_draws)]


@dataclass(frozen=True)
class CausalCheck:
    """The change of a metric when `heads` are intervened on, against the same change for drawn sets.

    Attributes:
        metric_name: what was measured, e.g. "loss on the second copy".
        heads: the heads the claim is about.
        mode: the intervention, e.g. "mean-ablated", "path-patched".
        null: what the draws were, e.g. "3 heads drawn from all 270".
        clean: the metric on the intact model, interval over prompts.
        top: the change (intervened - clean) with `heads`, interval over prompts.
        draws: ``[draw]`` the mean change with each drawn set.
        larger_is_stronger: False when the expected effect is a drop (patching the name movers lowers the
            logit difference): then "at least as strong" means "at least as low".
    """

    metric_name: str
    heads: tuple[Head, ...]
    mode: str
    null: str
    clean: stats.Estimate
    top: stats.Estimate
    draws: Float[Tensor, "draw"]
    larger_is_stronger: bool = True

    @property
    def n_draws(self) -> int:
        return len(self.draws)

    @property
    def as_strong(self) -> int:
        """How many draws changed the metric at least as much as `heads` (in the expected direction)."""
        sign = 1.0 if self.larger_is_stronger else -1.0
        return int((sign * self.draws >= sign * self.top.mean).sum())

    @property
    def p_value(self) -> float:
        """``(1 + as_strong) / (n_draws + 1)``: the smallest it can be is ``1 / (n_draws + 1)``."""
        return (self.as_strong + 1) / (self.n_draws + 1)

    def quantile(self, q: float) -> float:
        return float(torch.quantile(self.draws.float(), q))

    @property
    def strongest_draw(self) -> float:
        return float(self.draws.max() if self.larger_is_stronger else self.draws.min())

    def draws_summary(self) -> str:
        """The null in a table cell: ``median +0.01, strongest -1.43 of 20; p = 0.048``."""
        return (f"median {self.quantile(0.5):+.2f}, strongest {self.strongest_draw:+.2f} of {self.n_draws}; "
                f"p = {self.p_value:.3f}")

    def summary(self) -> str:
        return (f"{self.mode} {heads.labels(self.heads)}: {self.metric_name} changes by {self.top}; "
                f"{self.n_draws} draws ({self.null}): median {self.quantile(0.5):+.3g}, 95th percentile "
                f"{self.quantile(0.95 if self.larger_is_stronger else 0.05):+.3g}, strongest {self.strongest_draw:+.3g}; "
                f"{self.as_strong} as strong, p = {self.p_value:.3g}")


def check_from_values(values: Float[Tensor, "set prompt"], found: Sequence[Head], *, metric_name: str, mode: str,
                      null: str, seed: int = 0, larger_is_stronger: bool = True) -> CausalCheck:
    """A `CausalCheck` from a metric measured with nothing changed (row 0), with `found` changed (row 1) and
    with each drawn set changed (rows 2...), all on the same prompts."""
    if values.ndim != 2 or values.shape[0] < 3:
        raise ValueError(f"values must be [set, prompt] with rows clean, found heads, draws...; got {tuple(values.shape)}")
    clean, top, drawn = values[0], values[1] - values[0], values[2:] - values[0]
    return CausalCheck(metric_name=metric_name, heads=tuple(tuple(h) for h in found), mode=mode, null=null,
                       clean=stats.bootstrap_ci(clean, seed=seed), top=stats.bootstrap_ci(top, seed=seed),
                       draws=drawn.mean(dim=1), larger_is_stronger=larger_is_stronger)


def ablation_check(model: TransformerBridge, tokens: Tensor, found: Sequence[Head],
                   metric: Callable[[Tensor, Tensor], Tensor], *, draws: Sequence[Sequence[Head]], null: str,
                   metric_name: str, seed: int = 0, mode: str = "mean", means: Tensor | None = None,
                   max_rows: int | None = None) -> CausalCheck:
    """Ablate `found` together, and each set in `draws`, in batched passes; compare the changes."""
    found = [tuple(head) for head in found]
    if not found:
        raise ValueError("found is empty: pass the (layer, head) pairs to ablate, e.g. screen.top(3)")
    repeated = sorted({head for head in found if found.count(head) > 1})
    if repeated:
        raise ValueError(f"found lists {heads.labels(repeated)} more than once: it would ablate fewer heads "
                         f"than the {len(found)} in each drawn set")
    if mode == "mean" and means is None:
        means = capture.mean_head_outputs(model, tokens)
    values = interventions.ablated_metric(model, tokens, [[], found, *draws], metric, mode=mode, means=means,
                                          max_rows=max_rows)  # [set, prompt]
    return check_from_values(values, found, metric_name=metric_name, mode=f"{mode}-ablated", null=null, seed=seed)
