"""Consistency heads: heads whose output at the end of a paraphrased question tells whether the model will
give the same answer it gives to the plain phrasing, and whether adding that difference back makes its
answers agree (Yang et al. 2024's model editing of semantic consistency, at one position).

The page's steps, in order, each one function here:

- `answers`: for each fact of a `Paraphrased` domain, the model's answer (argmax among the domain's answers)
  after the plain frame ("The capital of France is") and after the paraphrase ("Q: What is the capital of
  France?\\nA:"). An item is **consistent** when the two answers agree (right or wrong).
- `gate`: agreement per item against chance, the share of the other items' paraphrase answers that equal
  this item's plain answer (what pairing each item with another item's answer would give); it also needs
  at least `MIN_PER_CLASS` consistent and inconsistent items (a perfectly consistent model has nothing to fix).
- `screen`: a logistic probe per head on ``hook_z`` at the paraphrase's last token, consistent vs
  inconsistent, 2-fold (`helpers.probes`, one row per item, so folds split items), against shuffled labels.
- `injection_check`: the paper's bias: each head's mean over consistent items minus its mean over
  inconsistent ones (`probes.mass_mean`), scaled as ITI does, added to the top-K heads at the paraphrase's
  last token of *held-out* items (another domain, other frames); the metric is the paraphrase's margin for
  the plain frame's answer (its logit minus the best other answer's), against random directions in the same
  heads and K heads drawn from all heads with their own directions. Agreement and accuracy are reported too.

`study(model, *, sizes, seed)` runs them all, as the page does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers import controls, heads, interventions, models, probes, readout, stats, store, tasks
from helpers.experiments import truthfulness
from helpers.experiments.truthfulness import Domain
from helpers.heads import Head

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

MIN_PER_CLASS = 8  # the gate needs at least this many consistent and inconsistent items
MIN_ACCURACY, QUANTILE = probes.MIN_ACCURACY, probes.QUANTILE  # the probe screen's pass rule


@dataclass(frozen=True)
class Paraphrased:
    """A domain asked in two frames: ``domain.prefix`` (plain) and ``paraphrase`` (with a ``{subject}`` slot)."""

    domain: Domain
    paraphrase: str

    def __post_init__(self) -> None:
        if "{subject}" not in self.paraphrase:
            raise ValueError(f"a paraphrase needs a {{subject}} slot; got {self.paraphrase!r}")

    @property
    def name(self) -> str:
        return self.domain.name


CAPITALS = Paraphrased(truthfulness.CAPITALS, "Q: What is the capital city of {subject}?\nA:")
LANGUAGES = Paraphrased(truthfulness.LANGUAGES, "Q: What language do people in {subject} speak?\nA:")
CITIES = Paraphrased(truthfulness.CITIES, "Q: In which country is the city of {subject}?\nA:")
PAGE_DOMAINS = (CAPITALS, LANGUAGES)  # the screen's items, and where the bias is fitted
HELD_OUT = CITIES  # another domain and other frames: the injection is measured here only
HELD_OUT_FAMILY = 'another domain and frames: "Munich is a city in the country of" / "Q: In which country ...'


@dataclass(frozen=True)
class Sizes:
    """Draws and injection settings (the notebook's parameters cell sets these)."""

    n_shuffles: int = 10  # shuffled-label probe screens
    top_k: int = 27  # heads given the bias (about 10 % of SmolLM2's 270)
    alpha: float = 15.0  # bias strength in units of each head's spread along its direction (ITI's alpha)
    n_random: int = 100  # draws per null: p >= 1/101


# --------------------------------------------------------------------------------------------------
# Items and answers


@dataclass(frozen=True)
class Items:
    """One paraphrased domain's usable facts and the model's answers in both frames.

    ``plain[i]`` / ``para[i]``: index (into ``answers``) of the answer the model gives to item i in each frame;
    ``truth[i]``: the true answer's index; ``para_logits``: every answer's logit after the paraphrase."""

    source: Paraphrased
    facts: tuple[tuple[str, str], ...]
    answers: tuple[str, ...]
    plain: Int[Tensor, "item"]
    para: Int[Tensor, "item"]
    truth: Int[Tensor, "item"]
    para_logits: Float[Tensor, "item answer"]

    @property
    def consistent(self) -> Int[Tensor, "item"]:
        """1 where the two frames give the same answer."""
        return (self.plain == self.para).long()

    @property
    def paraphrases(self) -> list[str]:
        return [self.source.paraphrase.format(subject=s) for s, _ in self.facts]


@torch.no_grad()
def answers(model: TransformerBridge, source: Paraphrased) -> Items:
    """The model's answer (argmax among the domain's answers) to every usable fact in both frames."""
    facts = truthfulness.usable_facts(model, source.domain)
    names = tuple(sorted({a for _, a in facts}))
    ids = truthfulness.answer_ids(model, names)
    plain = readout.logits(model, truthfulness.final_at_end(
        model, [source.domain.prefix.format(subject=s) for s, _ in facts]), ids)  # [item, answer]
    para = readout.logits(model, truthfulness.final_at_end(
        model, [source.paraphrase.format(subject=s) for s, _ in facts]), ids)
    return Items(source=source, facts=tuple(facts), answers=names, plain=plain.argmax(-1), para=para.argmax(-1),
                 truth=torch.tensor([names.index(a) for _, a in facts]), para_logits=para)


def chance_agreement(plain: Int[Tensor, "item"], para: Int[Tensor, "item"]) -> Float[Tensor, "item"]:
    """Per item, the share of the *other* items whose paraphrase answer equals this item's plain answer: its
    agreement if its paraphrase answer were another item's (the pairing null), averaged over partners."""
    same = (plain[:, None] == para[None, :]).float()  # [item, partner]
    same.fill_diagonal_(0.0)
    return same.sum(1) / (len(plain) - 1)


def consistency_margin(logits: Float[Tensor, "... item answer"], target: Int[Tensor, "item"]
                       ) -> Float[Tensor, "... item"]:
    """The logit of answer `target` minus the best other answer's: > 0 exactly when `target` is the argmax."""
    own = logits.gather(-1, target.expand(*logits.shape[:-1])[..., None])[..., 0]
    others = logits.scatter(-1, target.expand(*logits.shape[:-1])[..., None], float("-inf"))
    return own - others.max(-1).values


# --------------------------------------------------------------------------------------------------
# Behaviour gate


@dataclass(frozen=True)
class Gate:
    """Paraphrase agreement per item against the pairing null, and how many items fall in each class."""

    agree: Float[Tensor, "item"]
    chance: Float[Tensor, "item"]
    counts: dict[str, tuple[int, int, int]]  # domain -> (consistent, items, consistent and right)
    test: stats.GateResult

    @property
    def n_consistent(self) -> int:
        return int(self.agree.sum())

    @property
    def passed(self) -> bool:
        return (self.test.passed and self.n_consistent >= MIN_PER_CLASS
                and len(self.agree) - self.n_consistent >= MIN_PER_CLASS)

    def summary(self) -> str:
        counts = ", ".join(f"{name} {c} of {n} ({r} of them right)" for name, (c, n, r) in self.counts.items())
        return (f"{'PASS' if self.passed else 'FAIL'}: the two frames agree on {counts}; agreement "
                f"{self.test.metric} against {self.test.null} when each item is paired with another item's "
                f"paraphrase answer (p = {self.test.p_value:.4f}); {self.n_consistent} consistent and "
                f"{len(self.agree) - self.n_consistent} inconsistent items (rule: p < 0.01, interval above "
                f"chance, >= {MIN_PER_CLASS} of each)")


def gate(items: Sequence[Items], *, seed: int) -> Gate:
    """Agreement against the pairing null (within each domain), paired sign-flip test over items."""
    agree = torch.cat([i.consistent.float() for i in items])
    chance = torch.cat([chance_agreement(i.plain, i.para) for i in items])
    test = stats.behaviour_gate(agree, chance, paired=True, seed=seed, name="paraphrase agreement",
                                metric_name="share of items whose two frames agree",
                                null_name="(another item's paraphrase answer)")
    counts = {i.source.name: (int(i.consistent.sum()), len(i.facts),
                              int(((i.plain == i.para) & (i.para == i.truth)).sum())) for i in items}
    return Gate(agree=agree, chance=chance, counts=counts, test=test)


# --------------------------------------------------------------------------------------------------
# Probe screen


def screen(features: Float[Tensor, "item layer head d_head"], labels: Int[Tensor, "item"], *, n_shuffles: int,
           seed: int) -> probes.Screen:
    """Probe accuracy of every head over two stratified folds of items, and under `n_shuffles` shuffles; with
    the larger class's share, since consistent items outnumber the others."""
    folds = probes.default_folds(labels, seed=seed)
    return probes.screen(features, labels, folds, n_shuffles=n_shuffles, seed=seed, majority=True)


# --------------------------------------------------------------------------------------------------
# Injecting the bias on held-out items


@dataclass(frozen=True)
class Injection:
    """The paraphrase margin for the plain answer on held-out items, with the bias injected, against nulls."""

    same_heads: controls.CausalCheck  # random directions of the same norm in the same heads
    other_heads: controls.CausalCheck  # each drawn head set's own direction, heads drawn from all heads
    agreement: tuple[float, float]  # share of held-out items whose frames agree: clean, injected
    accuracy: tuple[float, float]  # share whose paraphrase answer is right: clean, injected

    @property
    def passed(self) -> bool:
        bound = 1 / (self.same_heads.n_draws + 1)
        return (self.same_heads.top.lower > 0 and self.same_heads.p_value <= 2 * bound
                and self.other_heads.p_value <= 0.05)

    def summary(self) -> str:
        return (f"{self.same_heads.summary()}\n{self.other_heads.summary()}\nagreement {self.agreement[0]:.0%} "
                f"clean, {self.agreement[1]:.0%} injected; paraphrase accuracy {self.accuracy[0]:.0%} clean, "
                f"{self.accuracy[1]:.0%} injected")


@torch.no_grad()
def injection_check(model: TransformerBridge, direction: probes.Direction, found: Sequence[Head], held: Items,
                    *, alpha: float, n_random: int, seed: int) -> Injection:
    """Add the bias (and each null's) at the paraphrase's last token of every held-out item; read the margin
    of the plain frame's answer among the domain's answers (`truthfulness.steering_sets` builds the sets)."""
    found = [tuple(h) for h in found]
    additions = truthfulness.steering_sets(direction, found, alpha=alpha, n_random=n_random, seed=seed)
    texts, ids = held.paraphrases, truthfulness.answer_ids(model, held.answers)
    logits = torch.zeros(len(additions), len(texts), len(ids))
    for where in truthfulness.by_length(model, texts).values():
        tokens = tasks.tokenize_prompts(model, [texts[i] for i in where])
        final = interventions.final_with_end_z_added(model, tokens, additions)  # [set, batch, d_model]
        logits[:, where] = readout.logits(model, final, ids)
    values = consistency_margin(logits, held.plain)  # [set, item]
    n, name = len(found), "paraphrase margin for the plain answer"
    mode = f"consistent-minus-inconsistent mean added (alpha {alpha:g})"
    same = controls.check_from_values(values[: n_random + 2], found, metric_name=name, mode=mode,
                                      null=f"random directions of the same norm in the same {n} heads", seed=seed)
    other = controls.check_from_values(torch.cat([values[:2], values[n_random + 2:]]), found, metric_name=name,
                                       mode=mode, null=f"each head's own direction in {n} heads drawn from all "
                                                       f"{model.cfg.n_layers * model.cfg.n_heads}", seed=seed)
    picked = logits[:2].argmax(-1)  # [clean/injected, item]
    return Injection(same_heads=same, other_heads=other,
                     agreement=tuple(float((p == held.plain).float().mean()) for p in picked),
                     accuracy=tuple(float((p == held.truth).float().mean()) for p in picked))


# --------------------------------------------------------------------------------------------------
# Study


@dataclass(frozen=True)
class Run:
    """The page's items and head features at the paraphrase's last token, and the held-out items."""

    items: tuple[Items, ...]
    labels: Int[Tensor, "item"]  # 1 = consistent, over the page domains' items in order
    features: Float[Tensor, "item layer head d_head"]
    held: Items


def prepare(model: TransformerBridge, *, seed: int) -> Run:
    """Answers in both frames for every page domain and the held-out one; head features (results store)."""
    return store.cached("consistency-run", lambda: _prepare(model),
                        model=models.spec_of(model).name, weights=store.weights_digest(model), seed=seed)


def _prepare(model: TransformerBridge) -> Run:
    items = tuple(answers(model, source) for source in PAGE_DOMAINS)
    texts = [t for i in items for t in i.paraphrases]
    return Run(items=items, labels=torch.cat([i.consistent for i in items]),
               features=truthfulness.head_features(model, texts), held=answers(model, HELD_OUT))


@dataclass(frozen=True)
class Study:
    """Consistency heads measured on one model: gate, probe screen and the injected bias on held-out items."""

    model: str
    gate: Gate
    held_out_gate: Gate
    screen: probes.Screen | None = None
    found: tuple[Head, ...] = ()
    injection: Injection | None = None

    def row(self) -> dict[str, object]:
        """One row of the findings table."""
        row: dict[str, object] = {"model": self.model, "behaviour gate": self.gate.summary()[:4],
                                  "agreement": str(self.gate.test.metric)}
        if self.screen is None:
            return row
        row["best heads (probe accuracy)"] = heads.labels(self.screen.top(3), self.screen.accuracy)
        row["shuffled (99 %)"] = f"{self.screen.bar:.0%}"
        row["passing heads"] = len(self.screen.passing)
        if self.injection is not None:
            row["inject top-k: margin change"] = str(self.injection.same_heads.top)
            row["random directions (p)"] = f"{self.injection.same_heads.p_value:.3f}"
            row["random heads (p)"] = f"{self.injection.other_heads.p_value:.3f}"
        return row


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Gate, probe screen and the injection on held-out items, kept in the results store."""
    return store.cached("consistency-study", lambda: _study(model, sizes=sizes, seed=seed),
                        model=models.spec_of(model).name, weights=store.weights_digest(model), sizes=sizes, seed=seed)


def _study(model: TransformerBridge, *, sizes: Sizes, seed: int) -> Study:
    name = models.spec_of(model).name
    run = prepare(model, seed=seed)
    passed, held_gate = gate(run.items, seed=seed), gate([run.held], seed=seed)
    if not passed.passed:
        return Study(model=name, gate=passed, held_out_gate=held_gate)
    found = screen(run.features, run.labels, n_shuffles=sizes.n_shuffles, seed=seed + 10)
    top = found.top(sizes.top_k)
    if not held_gate.passed:  # no inconsistent held-out items: nothing for the bias to fix
        return Study(model=name, gate=passed, held_out_gate=held_gate, screen=found, found=tuple(top))
    direction = probes.mass_mean(run.features, run.labels)
    inject = injection_check(model, direction, top, run.held, alpha=sizes.alpha, n_random=sizes.n_random,
                             seed=seed + 20)
    return Study(model=name, gate=passed, held_out_gate=held_gate, screen=found, found=tuple(top), injection=inject)
