"""Uncertainty and significance for per-prompt metrics: bootstrap intervals, permutation nulls, the behaviour gate.

Every number the book reports about a behaviour comes with an interval, and every "the model does
this" comes with a test against a null (chance, shuffled or control prompts):

- ``Estimate``: a mean with its percentile-bootstrap interval (``bootstrap_ci``, ``paired_difference``,
  ``unpaired_difference``).
- ``permutation_test`` (two independent samples) and ``sign_flip_test`` (paired differences): p-values
  with the (count + 1) / (n + 1) correction, so a Monte Carlo p is never reported as 0.
- ``null_threshold``: a score cut-off from control prompts (e.g. the 95th percentile over all heads).
- ``behaviour_gate``: step 3 of every family notebook. The notebook protocol asks for at least 50 seeded
  prompts per gate; the code only requires 2, so that tests stay small.

All resampling uses its own ``numpy.random.Generator`` built from ``seed`` (no global RNG) and is
vectorised: one matrix of resamples per chunk, never a Python loop over resamples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

Sample = Union[Float[Tensor, "sample"], Float[np.ndarray, "sample"], Sequence[float]]

ALTERNATIVES = ("greater", "less", "two-sided")

# Resamples are drawn in chunks of at most this many numbers (32 MB of float64), so a 10,000-prompt
# sample with 10,000 permutations does not allocate a 100M-element matrix at once.
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Estimate:
    """A sample mean with a bootstrap confidence interval.

    Attributes:
        mean: the mean of the observed sample (not of the resamples).
        lower, upper: percentile-bootstrap interval bounds.
        n: number of observations behind the estimate.
        level: coverage of the interval, e.g. 0.95.

    Example:
        >>> str(Estimate(mean=0.42, lower=0.38, upper=0.47, n=50, level=0.95))
        '0.42 [0.38, 0.47]'
    """

    mean: float
    lower: float
    upper: float
    n: int
    level: float = 0.95

    def excludes(self, value: float) -> bool:
        """True if `value` lies outside the interval (e.g. ``diff.excludes(0.0)``: the effect is not zero)."""
        return value < self.lower or value > self.upper

    def __str__(self) -> str:
        decimals = _decimals(self.mean, self.lower, self.upper)
        return f"{self.mean:.{decimals}f} [{self.lower:.{decimals}f}, {self.upper:.{decimals}f}]"


def _decimals(mean: float, lower: float, upper: float) -> int:
    """Enough decimals to resolve the interval's width and the value itself: 2 by default, at most 6."""
    decimals = 2
    width = upper - lower
    if 0 < width < 0.01:
        decimals = max(decimals, math.ceil(-math.log10(width)))
    largest = max(abs(mean), abs(lower), abs(upper))
    if 0 < largest < 0.01:
        decimals = max(decimals, math.ceil(-math.log10(largest)) + 1)
    return min(decimals, 6)


# --- input checks --------------------------------------------------------------------------------


def _as_sample(values: Sample, name: str, min_n: int = 2) -> np.ndarray:
    """A 1-D float64 numpy copy of `values`, with a message naming `name` if it is not a usable sample."""
    if isinstance(values, Tensor):
        array = values.detach().to("cpu", torch.float64).numpy()
    else:
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"{name} must be a 1-D sequence of numbers (one per prompt); got {type(values).__name__} "
                f"that numpy cannot read as floats ({error})"
            ) from error
    if array.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D sample [sample] (one number per prompt); got shape {tuple(array.shape)}. "
            "Reduce the other axes first (e.g. average over positions)"
        )
    if array.shape[0] < min_n:
        raise ValueError(
            f"{name} has {array.shape[0]} value(s); expected at least {min_n} to estimate any spread. "
            "Use more prompts (the notebooks use at least 50)"
        )
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf) out of {array.shape[0]}, "
            f"first at index {int(np.flatnonzero(bad)[0])}; drop or fix those prompts first"
        )
    return array


def _check_paired(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"paired samples must have one value per prompt in both: {names[0]} has {a.shape[0]}, "
            f"{names[1]} has {b.shape[0]}. Score both on the same prompts, or use an unpaired test"
        )


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be strictly between 0 and 1 (e.g. 0.95); got {level}")


def _check_count(count: int, name: str) -> None:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"{name} must be a positive integer; got {count!r}")


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}; got {alternative!r}")


def _seeds(seed: int, count: int) -> list[int]:
    """Independent child seeds, so that two resampling steps in one call never share a stream."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(count)]


def _chunks(total: int, width: int) -> list[int]:
    """Sizes of row chunks that keep a [rows, width] matrix under _CHUNK_ELEMENTS."""
    rows = max(1, _CHUNK_ELEMENTS // max(width, 1))
    return [min(rows, total - start) for start in range(0, total, rows)]


# --- bootstrap intervals -------------------------------------------------------------------------


def _bootstrap_means(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `n_boot` resamples (with replacement) of `x`; shape [n_boot]."""
    n = x.shape[0]
    parts = [x[rng.integers(0, n, size=(rows, n))].mean(axis=1) for rows in _chunks(n_boot, n)]  # [rows, n] -> [rows]
    return np.concatenate(parts)


def _percentile_estimate(mean: float, means: np.ndarray, n: int, level: float) -> Estimate:
    tail = (1.0 - level) / 2.0
    lower, upper = np.quantile(means, [tail, 1.0 - tail])
    return Estimate(mean=float(mean), lower=float(lower), upper=float(upper), n=n, level=level)


def bootstrap_ci(values: Sample, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Estimate:
    """Percentile-bootstrap confidence interval of the mean of one sample.

    Args:
        values: one number per prompt, e.g. the logit difference on each IOI prompt.
        n_boot: number of resamples.
        level: interval coverage.
        seed: seeds a private ``numpy.random.Generator``; the same seed gives the same interval.

    Returns:
        ``Estimate`` of the mean. A constant sample gives a zero-width interval at that constant.

    Raises:
        ValueError: if `values` is not 1-D, has fewer than 2 values or contains NaN/inf, or if
            `n_boot`/`level` are out of range.

    Example:
        >>> str(bootstrap_ci([1.0, 1.0, 1.0]))
        '1.00 [1.00, 1.00]'
    """
    x = _as_sample(values, "values")
    _check_count(n_boot, "n_boot")
    _check_level(level)
    means = _bootstrap_means(x, n_boot, np.random.default_rng(seed))
    estimate = _percentile_estimate(x.mean(), means, x.shape[0], level)
    # Every resampled mean lies in [min, max]; clipping removes float round-off (a constant sample
    # would otherwise give an interval a few ulps wide around, or even beside, its mean).
    low, high = float(x.min()), float(x.max())
    return Estimate(
        mean=min(max(estimate.mean, low), high),
        lower=min(max(estimate.lower, low), high),
        upper=min(max(estimate.upper, low), high),
        n=estimate.n,
        level=level,
    )


def paired_difference(
    a: Sample, b: Sample, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> Estimate:
    """Bootstrap interval of mean(a - b) for paired samples (a[i] and b[i] measured on the same prompt).

    Raises:
        ValueError: if the lengths differ (both are named), or as in ``bootstrap_ci``.
    """
    x, y = _as_sample(a, "a"), _as_sample(b, "b")
    _check_paired(x, y, ("a", "b"))
    return bootstrap_ci(x - y, n_boot=n_boot, level=level, seed=seed)


def unpaired_difference(
    a: Sample, b: Sample, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> Estimate:
    """Bootstrap interval of mean(a) - mean(b) for independent samples (each resampled on its own).

    The returned ``n`` is the total number of observations, ``len(a) + len(b)``.
    """
    x, y = _as_sample(a, "a"), _as_sample(b, "b")
    _check_count(n_boot, "n_boot")
    _check_level(level)
    seed_a, seed_b = _seeds(seed, 2)
    means = _bootstrap_means(x, n_boot, np.random.default_rng(seed_a)) - _bootstrap_means(
        y, n_boot, np.random.default_rng(seed_b)
    )
    return _percentile_estimate(x.mean() - y.mean(), means, x.shape[0] + y.shape[0], level)


# --- permutation tests ---------------------------------------------------------------------------


def _p_value(null_stats: np.ndarray, observed: float, alternative: str) -> float:
    """Monte Carlo p-value with the (count + 1) / (n + 1) correction."""
    # A resample equal to the observed arrangement can differ from it by round-off (different
    # summation order); a relative tolerance counts it as "as extreme", as it should be.
    tolerance = 1e-9 * max(1.0, abs(observed))
    if alternative == "greater":
        count = np.count_nonzero(null_stats >= observed - tolerance)
    elif alternative == "less":
        count = np.count_nonzero(null_stats <= observed + tolerance)
    else:
        count = np.count_nonzero(np.abs(null_stats) >= abs(observed) - tolerance)
    return (int(count) + 1) / (null_stats.shape[0] + 1)


def permutation_test(
    a: Sample, b: Sample, *, n_perm: int = 10000, seed: int = 0, alternative: str = "greater"
) -> float:
    """p-value for a difference in means of two independent samples, by random relabelling.

    The statistic is mean(a) - mean(b). "greater" tests mean(a) > mean(b), "less" the reverse,
    "two-sided" either. Under the null the labels are exchangeable, so each permutation shuffles the
    pooled values and splits them back into groups of the original sizes.

    Returns:
        p in (0, 1]; the smallest possible value is 1 / (n_perm + 1).

    Raises:
        ValueError: for a sample with fewer than 2 values or NaN/inf, a bad `alternative` or `n_perm`.

    Example:
        >>> permutation_test([5.0, 6.0, 7.0, 8.0], [0.0, 1.0, 2.0, 3.0], n_perm=999) < 0.05
        True
    """
    x, y = _as_sample(a, "a"), _as_sample(b, "b")
    _check_count(n_perm, "n_perm")
    _check_alternative(alternative)
    pooled = np.concatenate([x, y])
    n_a = x.shape[0]
    rng = np.random.default_rng(seed)
    parts = []
    for rows in _chunks(n_perm, pooled.shape[0]):
        shuffled = rng.permuted(np.broadcast_to(pooled, (rows, pooled.shape[0])), axis=1)  # [rows, n_a + n_b]
        parts.append(shuffled[:, :n_a].mean(axis=1) - shuffled[:, n_a:].mean(axis=1))
    return _p_value(np.concatenate(parts), float(x.mean() - y.mean()), alternative)


def sign_flip_test(
    differences: Sample, *, n_perm: int = 10000, seed: int = 0, alternative: str = "greater"
) -> float:
    """p-value for paired differences having mean 0, by random sign flips.

    Under the null each difference (e.g. metric - control on one prompt) is symmetric around 0, so
    flipping its sign is as likely as not. "greater" tests mean > 0, "less" mean < 0.

    Note that n paired values allow only 2**n distinct sign patterns: with 7 or fewer prompts no
    one-sided p can fall below 0.01.

    Returns:
        p in (0, 1]; the smallest possible value is 1 / (n_perm + 1).

    Raises:
        ValueError: as in ``permutation_test``.
    """
    d = _as_sample(differences, "differences")
    _check_count(n_perm, "n_perm")
    _check_alternative(alternative)
    rng = np.random.default_rng(seed)
    parts = []
    for rows in _chunks(n_perm, d.shape[0]):
        signs = rng.integers(0, 2, size=(rows, d.shape[0])) * 2 - 1  # [rows, sample] of +-1
        parts.append((signs * d).mean(axis=1))
    return _p_value(np.concatenate(parts), float(d.mean()), alternative)


def null_threshold(null_scores: Float[Tensor, "..."] | Float[np.ndarray, "..."], quantile: float = 0.95) -> float:
    """The `quantile` of all scores measured on control prompts, e.g. every head's score on shuffled text.

    A head "has" the behaviour only if its score on real prompts exceeds this cut-off: with 0.95, one
    head in twenty would pass on control prompts alone.

    Args:
        null_scores: any shape (typically ``[layer, head]``); all entries are pooled.
        quantile: in [0, 1].

    Raises:
        ValueError: if `quantile` is out of range, or the scores are empty or contain NaN/inf.
    """
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1] (e.g. 0.95); got {quantile}")
    if isinstance(null_scores, Tensor):
        scores = null_scores.detach().to("cpu", torch.float64).numpy().ravel()
    else:
        scores = np.asarray(null_scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise ValueError("null_scores is empty; expected the scores of every head on control prompts")
    if not np.isfinite(scores).all():
        raise ValueError(
            f"null_scores contains {int((~np.isfinite(scores)).sum())} NaN/inf value(s) of {scores.size}; "
            "a head with nothing to score should be dropped, not passed as NaN"
        )
    return float(np.quantile(scores, quantile))


# --- the behaviour gate --------------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    """Outcome of ``behaviour_gate``; ``summary()`` (also ``str()``) is the one-line verdict a page prints."""

    passed: bool
    metric: Estimate
    null: Estimate
    difference: Estimate
    p_value: float
    alpha: float
    name: str
    metric_name: str
    higher_is_better: bool
    null_name: str = "on the null"
    min_effect: float = 0.0
    paired: bool = True
    n_perm: int = 10000

    def summary(self) -> str:
        """One line, e.g. "PASS: induction: loss on the repeated half 1.23 [1.10, 1.40] vs 7.90 [...] ..."."""
        if self.p_value < 0.001:
            p_text = "p < 0.001"
        else:
            p_text = f"p = {self.p_value:.3f}"
        n_text = f"n = {self.metric.n}" if self.paired else f"n = {self.metric.n} vs {self.null.n}"
        what = self.metric_name or "metric"
        evidence = (
            f"{what} {self.metric} vs {self.null} {self.null_name}; "
            f"difference {self.difference}, {p_text} ({n_text})"
        )
        if self.passed:
            return f"PASS: {self.name}: {evidence}" if self.name else f"PASS: {evidence}"
        reasons = []
        if self.p_value >= self.alpha:
            reasons.append(f"p is not below alpha = {self.alpha:g}")
        bound = "lower" if self.higher_is_better else "upper"
        direction = "above" if self.higher_is_better else "below"
        target = (self.min_effect if self.higher_is_better else -self.min_effect) + 0.0  # no "-0"
        if (self.difference.lower <= target) if self.higher_is_better else (self.difference.upper >= target):
            reasons.append(f"the difference's {bound} bound is not {direction} {target:g}")
        label = f" ({self.name})" if self.name else ""
        return f"FAIL: behaviour absent at this scale{label}: {evidence}; {' and '.join(reasons)}"

    def __str__(self) -> str:
        return self.summary()


def behaviour_gate(
    metric: Sample,
    null: Sample,
    *,
    paired: bool,
    higher_is_better: bool = True,
    alpha: float = 0.01,
    min_effect: float = 0.0,
    n_boot: int = 2000,
    n_perm: int = 10000,
    seed: int = 0,
    name: str = "",
    metric_name: str = "",
    null_name: str = "on the null",
) -> GateResult:
    """Does the model show the behaviour at all? Compare a per-prompt metric with a null.

    Passes iff both hold:

    1. the one-sided test in the good direction gives p < `alpha` (sign-flip test on metric - null when
       `paired`, permutation test otherwise), and
    2. the bootstrap interval of the difference (metric - null) lies entirely beyond `min_effect` in the
       good direction: lower bound > min_effect if higher is better, upper bound < -min_effect if not.

    The notebook protocol uses at least 50 seeded prompts per gate (DESIGN §4); only n >= 2 is enforced.

    Args:
        metric: one value per prompt on the real task, e.g. loss on the repeated half of a sequence.
        null: one value per prompt (paired) or per control prompt (unpaired), e.g. loss on the first half.
        paired: True when metric[i] and null[i] come from the same prompt.
        higher_is_better: direction of a good metric (False for a loss).
        alpha: significance level of the test.
        min_effect: smallest difference that counts, a non-negative magnitude in the metric's units.
        n_boot, n_perm, seed: resampling sizes and the seed (child seeds are derived for each step).
        name, metric_name, null_name: words for ``summary()``: "induction", "loss on the repeated half",
            "on the first half".

    Raises:
        ValueError: if either sample has fewer than 2 values or NaN/inf, if `paired` and the lengths
            differ, if `alpha` is not in (0, 1) or cannot be reached with `n_perm` permutations, or if
            `min_effect` is negative.

    Example:
        >>> gate = behaviour_gate([0.9] * 5 + [0.8] * 5, [0.1] * 10, paired=True, alpha=0.05)
        >>> gate.passed, gate.summary()[:4]
        (True, 'PASS')
    """
    x, y = _as_sample(metric, "metric"), _as_sample(null, "null")
    if paired:
        _check_paired(x, y, ("metric", "null"))
    _check_count(n_boot, "n_boot")
    _check_count(n_perm, "n_perm")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1 (e.g. 0.01); got {alpha}")
    if alpha <= 1.0 / (n_perm + 1):
        raise ValueError(
            f"alpha = {alpha:g} cannot be reached with n_perm = {n_perm}: the smallest p is "
            f"1 / (n_perm + 1) = {1.0 / (n_perm + 1):.2g}. Raise n_perm to at least {math.ceil(1.0 / alpha)}"
        )
    if min_effect < 0:
        raise ValueError(
            f"min_effect is a magnitude and must be >= 0; got {min_effect}. "
            "Use higher_is_better=False for metrics where lower is better"
        )

    seed_metric, seed_null, seed_diff, seed_test = _seeds(seed, 4)
    alternative = "greater" if higher_is_better else "less"
    if paired:
        difference = paired_difference(x, y, n_boot=n_boot, seed=seed_diff)
        p_value = sign_flip_test(x - y, n_perm=n_perm, seed=seed_test, alternative=alternative)
    else:
        difference = unpaired_difference(x, y, n_boot=n_boot, seed=seed_diff)
        p_value = permutation_test(x, y, n_perm=n_perm, seed=seed_test, alternative=alternative)
    clears = difference.lower > min_effect if higher_is_better else difference.upper < -min_effect
    return GateResult(
        passed=bool(p_value < alpha and clears),
        metric=bootstrap_ci(x, n_boot=n_boot, seed=seed_metric),
        null=bootstrap_ci(y, n_boot=n_boot, seed=seed_null),
        difference=difference,
        p_value=p_value,
        alpha=alpha,
        name=name,
        metric_name=metric_name,
        higher_is_better=higher_is_better,
        null_name=null_name,
        min_effect=min_effect,
        paired=paired,
        n_perm=n_perm,
    )
