"""Accuracy heads: heads whose output where the model is about to answer tells whether the answer will be
right, and whether adding their "right minus wrong" direction makes the model answer right more often (the
survey's proxy for Guo et al. 2024's ASMR and Yin et al. 2024's LoFiT, §5.3.6).

The page's steps, in order, each one function here (facts, prefixes, head reads and the steering addition
come from `truthfulness` and `helpers.probes`; nothing here re-implements them):

- `items`: every usable fact of the page's domains, labelled 1 when the model's answer is right (the true
  answer is the argmax among the domain's answers after the prefix), balanced per domain (as many right as
  wrong, drawn with the seed) so that the domain does not tell a probe the label, in two folds of distinct
  facts with both labels of every domain in each fold.
- `gate`: accuracy among the domain's answers against chance (one over the number of answers), and both
  right and wrong answers present (`MIN_PAIRS` right-wrong pairs once balanced, over the page domains): a
  model that is always right or always wrong gives nothing to probe. A domain the model always gets right
  adds no items.
- `screen`: a logistic probe per head on ``hook_z`` at the prefix's last token (where the answer is
  predicted), 2-fold accuracy, against the same probes on labels shuffled within each fold.
- `steering_check`: the mass-mean direction (right minus wrong) of the top-K heads, fitted on one fold and
  added at END of the *other* fold's prefixes (cross-fitted: no steered item was used to fit its direction),
  against random unit directions of the same norm in the same heads and each of K heads drawn from all heads
  with its own direction. The metric is the answer margin, ``logit[true] - max logit[other answers]``.
- `held_out_check`: the same steering, the direction fitted on every page item, on a held-out template
  family (another domain, written as a question).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers import controls, heads, interventions, models, probes, readout, stats, store, tasks
from helpers.experiments import conflict, fact_sources, truthfulness
from helpers.experiments.truthfulness import Domain, Facts
from helpers.heads import Head

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

MIN_ACCURACY, QUANTILE = probes.MIN_ACCURACY, probes.QUANTILE  # the probe screen's pass rule
MIN_PAIRS = 16  # the gate needs this many (right, wrong) pairs once balanced, summed over the page domains
TOP_SHARE = 0.10  # LoFiT keeps the top ~10 % of heads

LANGUAGES = truthfulness.LANGUAGES
CITIES = truthfulness.CITIES
PAGE_DOMAINS = (LANGUAGES, CITIES)  # where the labels, the screen and the directions come from
HELD_OUT = Domain("capitals (question)", "Q: What is the capital of {subject}?\nA:", conflict.COUNTRY_CAPITALS)
HELD_OUT_FAMILY = 'another domain written as a question: "Q: What is the capital of Spain?\\nA:"'
_ = fact_sources  # the page domains' tables live there (through `truthfulness`)


@dataclass(frozen=True)
class Sizes:
    """Draws and steering settings (the notebook's parameters cell sets these)."""

    n_shuffles: int = 10  # shuffled-label probe screens
    alpha: float = 15.0  # steering strength in units of each head's spread along its direction (ITI's alpha)
    n_random: int = 100  # draws per null: p >= 1/101


def top_k(model: TransformerBridge) -> int:
    """`TOP_SHARE` of all heads, rounded (27 of SmolLM2's 270, 7 of Gemma 3 270M's 72)."""
    return max(1, round(TOP_SHARE * model.cfg.n_layers * model.cfg.n_heads))


# --------------------------------------------------------------------------------------------------
# Items


@dataclass(frozen=True)
class Items:
    """Prompts the model answers, each labelled right (1) or wrong (0). ``true_index[i]``: the true answer's
    position in ``answers[domains[i]]``; ``folds``: 0 or 1, one fact per row."""

    prefixes: tuple[str, ...]
    domains: tuple[str, ...]
    true_answers: tuple[str, ...]
    labels: Int[Tensor, "item"]
    folds: Int[Tensor, "item"]
    answers: dict[str, tuple[str, ...]]


def balanced(labels: Sequence[int], *, seed: int) -> tuple[list[int], list[int]]:
    """Indices of as many 1s as 0s (the larger group subsampled with `seed`), and a fold for each kept index:
    each label's kept indices alternate between folds 0 and 1 after a seeded shuffle."""
    rng = random.Random(seed)
    ones = [i for i, y in enumerate(labels) if y == 1]
    zeros = [i for i, y in enumerate(labels) if y == 0]
    rng.shuffle(ones)
    rng.shuffle(zeros)
    n = min(len(ones), len(zeros))
    kept, folds = [], []
    for group in (ones[:n], zeros[:n]):
        kept += group
        folds += [k % 2 for k in range(n)]
    return kept, folds


def items(facts: Sequence[Facts], *, seed: int, balance: bool = True) -> Items:
    """Every usable fact of each domain, labelled by `Facts.known`; balanced per domain with ``balance``."""
    prefixes, names, trues, labels, folds = [], [], [], [], []
    answers: dict[str, tuple[str, ...]] = {}
    for d, table in enumerate(facts):
        answers[table.domain.name] = table.answers
        known = table.known.long().tolist()
        kept, fold = balanced(known, seed=seed + d) if balance else (list(range(len(known))),
                                                                     [i % 2 for i in range(len(known))])
        for i, f in zip(kept, fold):
            subject, answer = table.facts[i]
            prefixes.append(table.domain.prefix.format(subject=subject))
            names.append(table.domain.name)
            trues.append(answer)
            labels.append(known[i])
            folds.append(f)
    return Items(prefixes=tuple(prefixes), domains=tuple(names), true_answers=tuple(trues),
                 labels=torch.tensor(labels), folds=torch.tensor(folds), answers=answers)


def answer_margin(logits: Float[Tensor, "... item answer"], true_index: Int[Tensor, "item"]
                  ) -> Float[Tensor, "... item"]:
    """``logit[true] - max logit[any other answer]``: > 0 exactly when the model's answer is right."""
    index = true_index.expand(*logits.shape[:-1])[..., None]
    true = logits.gather(-1, index)[..., 0]
    others = logits.scatter(-1, index, float("-inf")).amax(-1)
    return true - others


# --------------------------------------------------------------------------------------------------
# Behaviour gate


@dataclass(frozen=True)
class Gate:
    """Accuracy among the domain's answers per domain (right, usable), against chance, and the strict top-1."""

    right: dict[str, tuple[int, int]]
    strict: float  # share of all usable facts whose true answer is top-1 over the whole vocabulary
    test: stats.GateResult
    min_pairs: int = MIN_PAIRS

    @property
    def pairs(self) -> int:
        """Right-wrong pairs once balanced: ``min(right, wrong)`` summed over the domains."""
        return sum(min(k, n - k) for k, n in self.right.values())

    @property
    def passed(self) -> bool:
        return self.test.passed and self.pairs >= self.min_pairs

    def summary(self) -> str:
        right = ", ".join(f"{name} {k} of {n}" for name, (k, n) in self.right.items())
        return (f"{'PASS' if self.passed else 'FAIL'}: right among the domain's answers: {right}; accuracy "
                f"minus chance {self.test.metric} (p = {self.test.p_value:.4f}); top-1 over the whole "
                f"vocabulary on {self.strict:.0%}; {self.pairs} right-wrong pairs (rule: p < 0.01 above "
                f"chance, interval above 0, >= {self.min_pairs} pairs)")


def gate(facts: Sequence[Facts], *, seed: int, min_pairs: int = MIN_PAIRS) -> Gate:
    """Right (0/1) per usable fact against ``1 / number of answers`` of its domain (sign-flip test)."""
    right = torch.cat([f.known.float() for f in facts])
    chance = torch.cat([torch.full((len(f.facts),), 1 / len(f.answers)) for f in facts])
    test = stats.behaviour_gate(right, chance, paired=True, seed=seed, name="right answers",
                                metric_name="accuracy minus chance", null_name="(chance)")
    strict = float(torch.cat([f.top1.float() for f in facts]).mean())
    return Gate(right={f.domain.name: (int(f.known.sum()), len(f.facts)) for f in facts}, strict=strict,
                test=test, min_pairs=min_pairs)


# --------------------------------------------------------------------------------------------------
# Steering


def _margins(model: TransformerBridge, data: Items, rows: Sequence[int],
             additions: Float[Tensor, "set layer head d_head"]) -> Float[Tensor, "set item"]:
    """The answer margin of each item in `rows` with each set of additions at END (equal-length groups)."""
    out = torch.zeros(len(additions), len(rows))
    prefixes = [data.prefixes[i] for i in rows]
    for where in truthfulness.by_length(model, prefixes).values():
        tokens = tasks.tokenize_prompts(model, [prefixes[i] for i in where])
        final = interventions.final_with_end_z_added(model, tokens, additions)  # [set, batch, d_model]
        for domain, answers in data.answers.items():
            sub = [w for w in where if data.domains[rows[w]] == domain]
            if not sub:
                continue
            local = torch.tensor([where.index(w) for w in sub])
            logits = readout.logits(model, final[:, local], truthfulness.answer_ids(model, answers))
            truth = torch.tensor([answers.index(data.true_answers[rows[w]]) for w in sub])
            out[:, sub] = answer_margin(logits, truth)
    return out


@dataclass(frozen=True)
class Steering:
    """The answer-margin change with the top heads steered, against the two nulls, and the accuracy before and
    after (share of items with a positive margin)."""

    same_heads: controls.CausalCheck  # random directions of the same norm in the same heads
    other_heads: controls.CausalCheck  # mass-mean directions in K heads drawn from all heads
    clean_right: float
    steered_right: float
    random_heads_right: float  # mean accuracy over the random-head draws

    @property
    def passed(self) -> bool:
        bound = 1 / (self.same_heads.n_draws + 1)
        return (self.same_heads.top.mean > 0 and self.same_heads.p_value <= 2 * bound
                and self.other_heads.p_value <= 0.05)

    def summary(self) -> str:
        return (f"{self.same_heads.summary()}\n{self.other_heads.summary()}\naccuracy {self.clean_right:.0%} "
                f"clean, {self.steered_right:.0%} steered, {self.random_heads_right:.0%} with random heads")


def _steering(values: Float[Tensor, "set item"], found: Sequence[Head], *, n_random: int, n_total: int,
              alpha: float, seed: int) -> Steering:
    n = len(found)
    mode = f"mass-mean direction added (alpha {alpha:g})"
    same = controls.check_from_values(values[: n_random + 2], found, metric_name="answer margin", mode=mode,
                                      null=f"random directions of the same norm in the same {n} heads", seed=seed)
    other = controls.check_from_values(torch.cat([values[:2], values[n_random + 2:]]), found,
                                       metric_name="answer margin", mode=mode,
                                       null=f"each head's own mass-mean direction in {n} heads drawn from all "
                                            f"{n_total}", seed=seed)
    right = (values > 0).float().mean(-1)
    return Steering(same_heads=same, other_heads=other, clean_right=float(right[0]),
                    steered_right=float(right[1]), random_heads_right=float(right[n_random + 2:].mean()))


@torch.no_grad()
def steering_check(model: TransformerBridge, features: Float[Tensor, "item layer head d_head"], data: Items,
                   found: Sequence[Head], *, alpha: float, n_random: int, seed: int) -> Steering:
    """Cross-fitted: for each fold, directions fitted on the other fold's items, added at END of this fold's
    prefixes; the same draws of random directions and heads in both folds."""
    found = [tuple(h) for h in found]
    values = torch.zeros(2 * n_random + 2, len(data.prefixes))
    for fold in (0, 1):
        fit = data.folds != fold
        direction = probes.mass_mean(features[fit], data.labels[fit])
        additions = truthfulness.steering_sets(direction, found, alpha=alpha, n_random=n_random, seed=seed)
        rows = [i for i in range(len(data.prefixes)) if int(data.folds[i]) == fold]
        values[:, rows] = _margins(model, data, rows, additions)
    n_total = model.cfg.n_layers * model.cfg.n_heads
    return _steering(values, found, n_random=n_random, n_total=n_total, alpha=alpha, seed=seed)


@torch.no_grad()
def held_out_check(model: TransformerBridge, features: Float[Tensor, "item layer head d_head"], data: Items,
                   held: Items, found: Sequence[Head], *, alpha: float, n_random: int, seed: int) -> Steering:
    """The direction fitted on every page item, added on the held-out family's prompts (all of its facts)."""
    found = [tuple(h) for h in found]
    direction = probes.mass_mean(features, data.labels)
    additions = truthfulness.steering_sets(direction, found, alpha=alpha, n_random=n_random, seed=seed)
    values = _margins(model, held, list(range(len(held.prefixes))), additions)
    n_total = model.cfg.n_layers * model.cfg.n_heads
    return _steering(values, found, n_random=n_random, n_total=n_total, alpha=alpha, seed=seed)


# --------------------------------------------------------------------------------------------------
# Study


@dataclass(frozen=True)
class Run:
    """The gated facts, the balanced items and every head's output at their END."""

    facts: tuple[Facts, ...]
    data: Items
    features: Float[Tensor, "item layer head d_head"]
    held_facts: Facts
    held: Items


def prepare(model: TransformerBridge, *, seed: int) -> Run:
    """Facts, items and head reads (kept in the results store: the page and `study` share one run)."""
    return store.cached("accuracy-run", lambda: _prepare(model, seed=seed), model=models.spec_of(model).name,
                        weights=store.weights_digest(model), seed=seed)


def _prepare(model: TransformerBridge, *, seed: int) -> Run:
    facts = tuple(truthfulness.known_facts(model, domain) for domain in PAGE_DOMAINS)
    held_facts = truthfulness.known_facts(model, HELD_OUT)
    data = items(facts, seed=seed)
    held = items([held_facts], seed=seed, balance=False)
    return Run(facts=facts, data=data, features=truthfulness.head_features(model, data.prefixes),
               held_facts=held_facts, held=held)


def screen(features: Float[Tensor, "item layer head d_head"], data: Items, *, n_shuffles: int, seed: int
           ) -> probes.Screen:
    return probes.screen(features, data.labels, data.folds, n_shuffles=n_shuffles, seed=seed, noun="prompts")


@dataclass(frozen=True)
class Study:
    """Accuracy heads measured on one model."""

    model: str
    gate: Gate
    screen: probes.Screen | None = None
    found: tuple[Head, ...] = ()
    steering: Steering | None = None
    held_out: Steering | None = None

    def row(self) -> dict[str, object]:
        right = ", ".join(f"{k}/{n}" for k, n in self.gate.right.values())
        row: dict[str, object] = {"model": self.model, "behaviour gate": self.gate.summary()[:4],
                                  "right answers": right}
        if self.screen is None:
            return row
        row["best heads (probe accuracy)"] = heads.labels(self.screen.top(3), self.screen.accuracy)
        row["shuffled (99 %)"] = f"{self.screen.bar:.0%}"
        row["passing heads"] = len(self.screen.passing)
        for name, check in (("steer", self.steering), ("held out", self.held_out)):
            if check is not None:
                row[f"{name}: margin change"] = str(check.same_heads.top)
                row[f"{name}: accuracy"] = f"{check.clean_right:.0%} -> {check.steered_right:.0%}"
                row[f"{name}: p (directions, heads)"] = (f"{check.same_heads.p_value:.3f}, "
                                                        f"{check.other_heads.p_value:.3f}")
        return row


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Gate, probe screen, cross-fitted steering and the held-out family, kept in the results store."""
    return store.cached("accuracy-study", lambda: _study(model, sizes=sizes, seed=seed),
                        model=models.spec_of(model).name, weights=store.weights_digest(model), sizes=sizes,
                        seed=seed)


def _study(model: TransformerBridge, *, sizes: Sizes, seed: int) -> Study:
    name = models.spec_of(model).name
    run = prepare(model, seed=seed)
    passed = gate(run.facts, seed=seed)
    if not passed.passed:
        return Study(model=name, gate=passed)
    found = screen(run.features, run.data, n_shuffles=sizes.n_shuffles, seed=seed + 10)
    top = found.top(top_k(model))
    steer = steering_check(model, run.features, run.data, top, alpha=sizes.alpha, n_random=sizes.n_random,
                           seed=seed + 20)
    held = held_out_check(model, run.features, run.data, run.held, top, alpha=sizes.alpha,
                          n_random=sizes.n_random, seed=seed + 30)
    return Study(model=name, gate=passed, screen=found, found=tuple(top), steering=steer, held_out=held)
