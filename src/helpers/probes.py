"""Linear probes on every head at once: cross-validated accuracy, the mass-mean direction, a shuffled control.

A probe asks whether a property of an item (a statement is true, an answer is right) can be read off one
head's output by a linear rule. The features are each head's ``hook_z`` at one position
(``[item, layer, head, d_head]``, e.g. `capture.read_end`'s ``z`` stacked); the labels are 0/1 per item.

- `cross_validated_accuracy`: an L2-regularised logistic regression per head, fitted by Newton's method for
  all heads in one batched solve, scored on the items of the fold it did not see. ``folds`` can be given
  explicitly, so that items that share a surface feature (two statements about one country) stay on one side.
- `shuffled_accuracy`: the same probes on labels permuted within each fold: what a head scores when there
  is nothing to find (about 50 % on balanced labels, more for a few heads by chance).
- `transfer_accuracy`: probes fitted on one set of items, scored on another (a held-out template family).
- `mass_mean`: the difference of the class means per head (Li et al. 2023's "mass mean shift" direction),
  with its unit vector and the spread of the items along it, the scale ITI steers with.

All functions are pure, seeded and model-agnostic; `helpers.experiments.truthfulness` uses them on
true / false statements, and any page that probes heads (accuracy, consistency) can do the same.

Example::

    accuracy = probes.cross_validated_accuracy(z, labels, folds)   # [layer, head]
    control = probes.shuffled_accuracy(z, labels, folds, n_shuffles=5, seed=0)  # [shuffle, layer, head]
    direction = probes.mass_mean(z[fit], labels[fit])               # .unit [layer, head, d_head]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers import heads
from helpers.heads import Head

RIDGE = 1.0  # L2 penalty on the weights of standardised features (sum-of-losses scale)
NEWTON_STEPS = 25
MIN_ACCURACY = 0.70  # a passing head's cross-validated probe accuracy is at least this ...
QUANTILE = 0.99  # ... and above this quantile of all heads' accuracies on shuffled labels


def _check(features: Tensor, labels: Tensor, folds: Tensor | None = None) -> None:
    if features.ndim != 4:
        raise ValueError(f"features must be [item, layer, head, d_head]; got shape {tuple(features.shape)}")
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels must be [item] = ({features.shape[0]},); got {tuple(labels.shape)}")
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("labels must be 0 or 1 (e.g. 1 = true statement)")
    if folds is not None and folds.shape != labels.shape:
        raise ValueError(f"folds must be [item] = ({features.shape[0]},), one fold id per item; got {tuple(folds.shape)}")


def fit_logistic(x: Float[Tensor, "probe item d"], y: Float[Tensor, "item"], *, ridge: float = RIDGE,
                 steps: int = NEWTON_STEPS) -> tuple[Float[Tensor, "probe d"], Float[Tensor, "probe"]]:
    """Weights and bias of an L2-regularised logistic regression per probe (same labels for all probes).

    Newton's method on ``sum(BCE) + ridge / 2 * |w|^2`` (the bias is not penalised), all probes in one batched
    solve: exact and deterministic, 25 steps for 270 heads of 64 dimensions take milliseconds.
    """
    n_probe, n_item, d = x.shape
    design = torch.cat([x, torch.ones(n_probe, n_item, 1, dtype=x.dtype)], dim=-1)  # [probe, item, d + 1]
    penalty = torch.full((d + 1,), ridge, dtype=x.dtype)
    penalty[-1] = 1e-6  # keep the bias (almost) free
    theta = torch.zeros(n_probe, d + 1, dtype=x.dtype)
    for _ in range(steps):
        p = torch.sigmoid(design @ theta[..., None])[..., 0]  # [probe, item]
        gradient = design.transpose(1, 2) @ (p - y)[..., None]  # [probe, d + 1, 1]
        gradient = gradient[..., 0] + penalty * theta
        weight = p * (1 - p)
        hessian = design.transpose(1, 2) @ (design * weight[..., None]) + torch.diag(penalty)
        theta = theta - torch.linalg.solve(hessian, gradient)
    return theta[:, :-1], theta[:, -1]


def _fold_accuracy(flat: Tensor, labels: Tensor, train: Tensor) -> Tensor:
    """Accuracy on the items outside `train` of probes fitted on `train`; features standardised on `train`."""
    mean, std = flat[:, train].mean(1, keepdim=True), flat[:, train].std(1, keepdim=True) + 1e-6
    scaled = (flat - mean) / std
    w, b = fit_logistic(scaled[:, train], labels[train])
    predicted = (scaled[:, ~train] @ w[..., None])[..., 0] + b[:, None] > 0  # [probe, test item]
    return (predicted == labels[~train].bool()).float().mean(-1)


@torch.no_grad()
def transfer_accuracy(features: Float[Tensor, "item layer head d_head"], labels: Int[Tensor, "item"],
                      other: Float[Tensor, "other layer head d_head"], other_labels: Int[Tensor, "other"], *,
                      ridge: float = RIDGE) -> Float[Tensor, "layer head"]:
    """Each head's probe, fitted on all of (`features`, `labels`), scored on (`other`, `other_labels`): does
    what a head separates on one set of items separate another (another template family, another domain)?"""
    _check(features, labels)
    _check(other, other_labels)
    if other.shape[1:] != features.shape[1:]:
        raise ValueError(f"other must have the heads of features, {tuple(features.shape[1:])}; got {tuple(other.shape[1:])}")
    n_layers, n_heads, d = features.shape[1:]
    both = torch.cat([features, other]).double().reshape(-1, n_layers * n_heads, d).transpose(0, 1)
    train = torch.arange(both.shape[1]) < len(labels)
    accuracy = _fold_accuracy(both, torch.cat([labels, other_labels]).double(), train)
    return accuracy.reshape(n_layers, n_heads).float()


def default_folds(labels: Int[Tensor, "item"], n_folds: int = 2, *, seed: int = 0) -> Int[Tensor, "item"]:
    """Fold ids that split each class evenly at random (stratified)."""
    generator = torch.Generator().manual_seed(seed)
    folds = torch.empty_like(labels)
    for value in (0, 1):
        where = (labels == value).nonzero()[:, 0]
        where = where[torch.randperm(len(where), generator=generator)]
        folds[where] = torch.arange(len(where)) % n_folds
    return folds


@torch.no_grad()
def cross_validated_accuracy(features: Float[Tensor, "item layer head d_head"], labels: Int[Tensor, "item"],
                             folds: Int[Tensor, "item"] | None = None, *, ridge: float = RIDGE
                             ) -> Float[Tensor, "layer head"]:
    """Each head's probe accuracy on held-out folds, averaged over folds (2-fold stratified by default).

    Args:
        features: each item's per-head activation, e.g. ``hook_z`` at the last token.
        labels: 0/1 per item.
        folds: a fold id per item; each fold is scored by a probe fitted on all the others. Give folds that keep
            items sharing a surface feature together, so the probe is scored on what it never saw.

    Raises:
        ValueError: on shapes that do not match, labels other than 0/1, fewer than two folds, or a fold whose
            training items hold one class only.
    """
    _check(features, labels, folds)
    folds = default_folds(labels) if folds is None else folds
    n_item, n_layers, n_heads, d = features.shape
    flat = features.double().reshape(n_item, n_layers * n_heads, d).transpose(0, 1)  # [probe, item, d]
    y = labels.double()
    ids = folds.unique()
    if len(ids) < 2:
        raise ValueError(f"need at least two folds; got fold ids {ids.tolist()}")
    scores = []
    for fold in ids:
        train = folds != fold
        if y[train].min() == y[train].max():
            raise ValueError(f"the items outside fold {int(fold)} hold one class only; balance the folds")
        scores.append(_fold_accuracy(flat, y, train))
    return torch.stack(scores).mean(0).reshape(n_layers, n_heads).float()


def shuffle_within(labels: Int[Tensor, "item"], folds: Int[Tensor, "item"], *, seed: int) -> Int[Tensor, "item"]:
    """`labels` permuted within each fold (each fold keeps its class balance; the link to the items goes)."""
    generator = torch.Generator().manual_seed(seed)
    out = labels.clone()
    for fold in folds.unique():
        where = (folds == fold).nonzero()[:, 0]
        out[where] = labels[where[torch.randperm(len(where), generator=generator)]]
    return out


@torch.no_grad()
def shuffled_accuracy(features: Float[Tensor, "item layer head d_head"], labels: Int[Tensor, "item"],
                      folds: Int[Tensor, "item"] | None = None, *, n_shuffles: int, seed: int, ridge: float = RIDGE
                      ) -> Float[Tensor, "shuffle layer head"]:
    """`cross_validated_accuracy` with the labels permuted within each fold, `n_shuffles` times (seeds
    ``seed, seed + 1, ...``): the accuracy a head reaches when the labels carry nothing."""
    _check(features, labels, folds)
    if n_shuffles < 1:
        raise ValueError(f"n_shuffles must be >= 1; got {n_shuffles}")
    folds = default_folds(labels) if folds is None else folds
    return torch.stack([cross_validated_accuracy(features, shuffle_within(labels, folds, seed=seed + i), folds,
                                                 ridge=ridge) for i in range(n_shuffles)])


@dataclass(frozen=True)
class Direction:
    """The mass-mean direction of every head: ``mean(class 1) - mean(class 0)`` (``shift``), its unit vector
    (``unit``) and the standard deviation of the items' projections on it (``spread``, ITI's sigma)."""

    shift: Float[Tensor, "layer head d_head"]
    unit: Float[Tensor, "layer head d_head"]
    spread: Float[Tensor, "layer head"]


@torch.no_grad()
def mass_mean(features: Float[Tensor, "item layer head d_head"], labels: Int[Tensor, "item"]) -> Direction:
    """Each head's class-mean difference (1 minus 0), its unit vector, and the spread along it."""
    _check(features, labels)
    if labels.min() == labels.max():
        raise ValueError("mass_mean needs items of both classes")
    x = features.float()
    shift = x[labels == 1].mean(0) - x[labels == 0].mean(0)
    unit = shift / shift.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    spread = (x * unit).sum(-1).std(0)  # [layer, head]
    return Direction(shift=shift, unit=unit, spread=spread)


def random_units(shape: tuple[int, ...], *, seed: int) -> Float[Tensor, "..."]:
    """Random unit vectors along the last axis of `shape` (seeded): directions with no relation to the labels."""
    vectors = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return vectors / vectors.norm(dim=-1, keepdim=True)


@dataclass(frozen=True)
class Screen:
    """Every head's cross-validated probe accuracy (``accuracy``) and the same probes on labels shuffled
    within each fold (``shuffled``: ``[shuffle, layer, head]``), on ``n_items`` items called ``noun``; with
    the accuracy of always guessing the larger class (``majority``) where the classes are unbalanced."""

    accuracy: Float[Tensor, "layer head"]
    shuffled: Float[Tensor, "shuffle layer head"]
    n_items: int
    noun: str = "items"
    majority: float | None = None

    @property
    def bar(self) -> float:
        """The `QUANTILE` of every head's accuracy under every shuffle."""
        return float(torch.quantile(self.shuffled.flatten(), QUANTILE))

    @property
    def passing(self) -> list[Head]:
        """Heads at `MIN_ACCURACY` or more and above `bar`, best first."""
        return heads.top(self.accuracy, where=(self.accuracy >= MIN_ACCURACY) & (self.accuracy > self.bar))

    def top(self, k: int) -> list[Head]:
        return heads.top(self.accuracy, k)

    def summary(self) -> str:
        larger = "" if self.majority is None else f" (larger class {self.majority:.0%})"
        return (f"{len(self.passing)} of {self.accuracy.numel()} heads pass (accuracy >= {MIN_ACCURACY:.0%} and "
                f"above the shuffled labels' {QUANTILE:.0%} quantile, {self.bar:.1%}); best "
                f"{heads.labels(self.top(5), self.accuracy)} on {self.n_items} {self.noun}{larger}; shuffled labels: "
                f"mean {float(self.shuffled.mean()):.1%}, highest {float(self.shuffled.max()):.1%}")


def screen(features: Float[Tensor, "item layer head d_head"], labels: Int[Tensor, "item"],
           folds: Int[Tensor, "item"], *, n_shuffles: int, seed: int, noun: str = "items",
           majority: bool = False) -> Screen:
    """`cross_validated_accuracy` of every head and `shuffled_accuracy` under `n_shuffles` shuffles, as a
    `Screen`; ``majority=True`` also records the larger class's share (for unbalanced labels)."""
    share = float(labels.float().mean())
    return Screen(accuracy=cross_validated_accuracy(features, labels, folds),
                  shuffled=shuffled_accuracy(features, labels, folds, n_shuffles=n_shuffles, seed=seed),
                  n_items=len(labels), noun=noun, majority=max(share, 1 - share) if majority else None)
