"""Truthfulness heads: heads whose output at the end of a statement tells true from false, and whether adding
their "true" direction makes the model prefer true answers (Li et al. 2023's inference-time intervention, ITI).

The page's steps, in order, each one function here:

- `known_facts`: the facts of a `Domain` the model knows: from the prefix ("The capital of France is"), the
  true answer beats every other answer of the domain. Only those become statements.
- `statements`: each known fact once true and once false, in two folds. The false statement takes another
  fact's answer from the same fold and domain (a permutation with no answer left in place), so true and false
  statements share every token but the answer, and every answer appears as often true as false: which city a
  statement names, or how long it is, tells a probe nothing.
- `gate`: the true-minus-false margin at the answer slot (``logit[true] - logit[false]`` after the prefix,
  equal to the log-prob difference) over every gated fact and its false partner, against 0; the strict form
  is the share of facts whose true answer is the top-1 token over the whole vocabulary.
- `screen`: a logistic probe per head on ``hook_z`` at the statement's last token ("."), 2-fold accuracy over
  the two folds (`helpers.probes`), against the same probes on labels shuffled within each fold. A head passes
  with accuracy >= `MIN_ACCURACY` and above the `QUANTILE` of every shuffled head's accuracy.
- `steering_check`: ITI at one position: add ``alpha * sigma * unit`` (each head's mass-mean direction, fitted
  on the page's statements, times the spread along it) to the top-K heads' ``hook_z`` at the prefix's last
  token of *held-out* facts (another domain and frame, never used to fit), and measure the change of the
  true-minus-false margin against (a) random unit directions of the same norm in the same heads and (b) the
  mass-mean directions of K heads drawn from all heads.
- `transfer`: the page's probes scored on the held-out statements (does the direction carry over?).

`study(model, *, sizes, seed)` runs them all, as the page does.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers import capture, controls, heads, interventions, models, probes, readout, stats, store, tasks
from helpers.experiments import conflict, fact_sources
from helpers.heads import Head

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

MIN_ACCURACY, QUANTILE = probes.MIN_ACCURACY, probes.QUANTILE  # the probe screen's pass rule
MAX_PER_ANSWER = 2  # facts sharing one answer ("Arabic") kept per domain
MIN_KNOWN = 8  # the gate needs at least this many known facts in every domain


@dataclass(frozen=True)
class Domain:
    """A kind of fact and how a statement of it is written: ``prefix`` with a ``{subject}`` slot, then the
    answer (one token with its leading space), then ".". ``table``: (subject, answer) pairs."""

    name: str
    prefix: str
    table: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        if "{subject}" not in self.prefix or len(self.table) < 4:
            raise ValueError(f"a domain needs a {{subject}} slot and at least 4 facts; got {self.prefix!r}, "
                             f"{len(self.table)} facts")

    def statement(self, subject: str, answer: str) -> str:
        return f"{self.prefix.format(subject=subject)} {answer}."


CAPITALS = Domain("capitals", "The capital of {subject} is", conflict.COUNTRY_CAPITALS)
LANGUAGES = Domain("languages", "In {subject}, most people speak",
                   tuple((country, language) for country, language, _ in fact_sources.COUNTRIES))
CITIES = Domain("cities", "{subject} is a city in the country of", fact_sources.CITIES)
PAGE_DOMAINS = (CAPITALS, LANGUAGES)  # the screen's statements, and where the directions are fitted
HELD_OUT = CITIES  # another domain in another frame: steering and probe transfer are measured here
HELD_OUT_FAMILY = 'another domain and frame: "Munich is a city in the country of Germany."'


@dataclass(frozen=True)
class Sizes:
    """Draws and steering settings (the notebook's parameters cell sets these)."""

    n_shuffles: int = 10  # shuffled-label probe screens
    top_k: int = 16  # heads steered (ITI steers 48 of LLaMA-7B's 1024, about 5 %)
    alpha: float = 15.0  # steering strength in units of each head's spread along its direction (ITI's alpha)
    n_random: int = 100  # draws per null: p >= 1/101
    max_facts: int = 64  # per domain, after the gate


# --------------------------------------------------------------------------------------------------
# Facts and statements


def usable_facts(model: TransformerBridge, domain: Domain) -> list[tuple[str, str]]:
    """Facts whose answer is one token after a space (the margin reads one logit per answer)."""
    return [(s, a) for s, a in domain.table if tasks.single_token_id(model, " " + a) is not None]


def answer_ids(model: TransformerBridge, answers: Sequence[str]) -> Int[Tensor, "n"]:
    """The token id of each answer with its leading space (answers are single tokens by construction)."""
    return torch.tensor([tasks.require_single_token(model, " " + a, why="the margin reads one logit per answer")
                         for a in answers])


def by_length(model: TransformerBridge, texts: Sequence[str]) -> dict[int, list[int]]:
    """Indices of `texts` grouped by token length: each group runs as one unpadded batch."""
    groups: dict[int, list[int]] = {}
    for i, text in enumerate(texts):
        groups.setdefault(len(model.to_tokens(text)[0]), []).append(i)
    return groups


@torch.no_grad()
def final_at_end(model: TransformerBridge, texts: Sequence[str]) -> Float[Tensor, "batch d_model"]:
    """The final norm's output at each text's last token, texts of different lengths run in equal-length groups."""
    out = torch.zeros(len(texts), model.cfg.d_model)
    for where in by_length(model, texts).values():
        out[where] = capture.final_at(model, tasks.tokenize_prompts(model, [texts[i] for i in where]))
    return out


@dataclass(frozen=True)
class Facts:
    """A domain's usable facts and what the model predicts after each prefix.

    ``logits[i, j]``: the logit of answer j (of the domain's distinct answers, ``answers``) after fact i's
    prefix; ``known``: fact i's true answer is the argmax among them; ``top1``: it is the top-1 token over the
    whole vocabulary.
    """

    domain: Domain
    facts: tuple[tuple[str, str], ...]
    answers: tuple[str, ...]
    logits: Float[Tensor, "fact answer"]
    known: Tensor
    top1: Tensor

    @property
    def kept(self) -> list[tuple[str, str]]:
        return [fact for fact, ok in zip(self.facts, self.known.tolist()) if ok]


@torch.no_grad()
def known_facts(model: TransformerBridge, domain: Domain) -> Facts:
    """Which of the domain's facts the model gets right from the prefix alone (among the domain's answers)."""
    facts = usable_facts(model, domain)
    answers = tuple(sorted({a for _, a in facts}))
    ids = answer_ids(model, answers)
    final = final_at_end(model, [domain.prefix.format(subject=s) for s, _ in facts])
    logits = readout.logits(model, final, ids)  # [fact, answer]
    truth = torch.tensor([answers.index(a) for _, a in facts])
    # top-1 over the whole vocabulary, 16 rows at a time (Gemma's 262k columns make full logits large)
    top1 = torch.cat([readout.logits(model, rows).argmax(-1) for rows in final.split(16)]) == ids[truth]
    return Facts(domain=domain, facts=tuple(facts), answers=answers, logits=logits,
                 known=logits.argmax(-1) == truth, top1=top1)


def false_answers(answers: Sequence[str], *, seed: int) -> list[str]:
    """A permutation of `answers` with no position keeping its own value (each answer is used as a false one
    exactly as often as it is true). Raises ValueError when one answer holds more than half of the list."""
    if max(answers.count(a) for a in answers) * 2 > len(answers):
        raise ValueError(f"one answer fills more than half of {len(answers)} facts; no permutation moves them all")
    rng = random.Random(seed)
    for _ in range(1000):
        order = list(range(len(answers)))
        rng.shuffle(order)
        moved = [answers[order[(k + 1) % len(order)]] for k in range(len(order))]  # a cycle over shuffled facts
        out = [""] * len(answers)
        for k, i in enumerate(order):
            out[i] = moved[k]
        if all(o != a for o, a in zip(out, answers)):
            return out
    raise ValueError("found no permutation that moves every answer; add facts with other answers")


@dataclass(frozen=True)
class Statements:
    """True and false statements of known facts. Row ``2i`` is fact i true, ``2i + 1`` the same prefix with its
    false answer. ``labels`` 1 = true; ``folds``: both rows of a fact share a fold; ``domain``: the name."""

    texts: tuple[str, ...]
    prefixes: tuple[str, ...]
    true_answers: tuple[str, ...]
    false_answers: tuple[str, ...]
    labels: Int[Tensor, "item"]
    folds: Int[Tensor, "item"]
    domains: tuple[str, ...]


def statements(facts: Sequence[Facts], *, seed: int, max_facts: int, known_only: bool = True) -> Statements:
    """Each domain's known facts (every usable fact with ``known_only=False``; at most `max_facts`, drawn with
    `seed`) split into two folds; in each fold and domain the false answers permute the true ones
    (`false_answers`); at most `MAX_PER_ANSWER` facts per answer. Raises ValueError if a fold gets < 2."""
    rng = random.Random(seed)
    texts, prefixes, trues, falses, labels, folds, names = [], [], [], [], [], [], []
    for table in facts:
        kept = table.kept if known_only else list(table.facts)
        rng.shuffle(kept)
        kept = [fact for i, fact in enumerate(kept)  # at most 2 facts per answer, so every fold can permute
                if [a for _, a in kept[:i]].count(fact[1]) < MAX_PER_ANSWER][:max_facts]
        halves = (kept[0::2], kept[1::2])
        for fold, half in enumerate(halves):
            if len(half) < 2:
                raise ValueError(f"{table.domain.name}: fold {fold} has {len(half)} known facts; need >= 2")
            wrong = false_answers([a for _, a in half], seed=seed + 7 * fold)
            for (subject, answer), other in zip(half, wrong):
                prefix = table.domain.prefix.format(subject=subject)
                for text, label in ((table.domain.statement(subject, answer), 1), (table.domain.statement(subject, other), 0)):
                    texts.append(text)
                    prefixes.append(prefix)
                    trues.append(answer)
                    falses.append(other)
                    labels.append(label)
                    folds.append(fold)
                    names.append(table.domain.name)
    return Statements(texts=tuple(texts), prefixes=tuple(prefixes), true_answers=tuple(trues),
                      false_answers=tuple(falses), labels=torch.tensor(labels), folds=torch.tensor(folds),
                      domains=tuple(names))


@torch.no_grad()
def head_features(model: TransformerBridge, texts: Sequence[str]) -> Float[Tensor, "item layer head d_head"]:
    """Every head's ``hook_z`` at each text's last token (`capture.read_end`, in equal-length groups)."""
    cfg = model.cfg
    out = torch.zeros(len(texts), cfg.n_layers, cfg.n_heads, cfg.d_head)
    for where in by_length(model, texts).values():
        read = capture.read_end(model, tasks.tokenize_prompts(model, [texts[i] for i in where]))
        out[where] = torch.stack(read.z, dim=1)  # [batch, layer, head, d_head]
    return out


# --------------------------------------------------------------------------------------------------
# Behaviour gate


@dataclass(frozen=True)
class Gate:
    """The true-minus-false margin after each statement's prefix (one value per fact, its false partner's
    answer as the competitor), per domain how many facts the model knows, and the strict top-1."""

    margins: Float[Tensor, "fact"]
    known: dict[str, tuple[int, int]]  # domain -> (known, usable)
    strict: float  # share of the gated facts whose true answer is top-1 over the whole vocabulary
    test: stats.GateResult

    @property
    def passed(self) -> bool:
        return self.test.passed and min(k for k, _ in self.known.values()) >= MIN_KNOWN

    def summary(self) -> str:
        known = ", ".join(f"{name} {k} of {n}" for name, (k, n) in self.known.items())
        return (f"{'PASS' if self.passed else 'FAIL'}: known facts (true answer first among the domain's answers): "
                f"{known}; on the {len(self.margins)} statement pairs built from them the true answer beats the "
                f"false one by {self.test.metric} logits (p = {self.test.p_value:.4f} against 0); top-1 over the "
                f"whole vocabulary on {self.strict:.0%} (rule: p < 0.01, interval above 0, >= {MIN_KNOWN} known facts "
                f"per domain)")


def margins(model: TransformerBridge, final: Float[Tensor, "... batch d_model"], data: Statements
            ) -> Float[Tensor, "... fact"]:
    """``logit[true answer] - logit[false answer]`` per fact (the even rows of `data`)."""
    return readout.logit_difference(model, final, answer_ids(model, data.true_answers[0::2]),
                                    answer_ids(model, data.false_answers[0::2]))


@torch.no_grad()
def gate(model: TransformerBridge, facts: Sequence[Facts], data: Statements, *, seed: int) -> Gate:
    """The margin on every statement pair against 0 (sign-flip test), and the strict top-1 share."""
    final = final_at_end(model, data.prefixes[0::2])
    values = margins(model, final, data)
    test = stats.behaviour_gate(values, torch.zeros_like(values), paired=True, seed=seed, name="true statements",
                                metric_name="true-minus-false margin", null_name="(no preference)")
    top1 = torch.cat([f.top1[f.known] for f in facts]).float().mean() if any(f.known.any() for f in facts) else 0.0
    return Gate(margins=values, known={f.domain.name: (int(f.known.sum()), len(f.facts)) for f in facts},
                strict=float(top1), test=test)


# --------------------------------------------------------------------------------------------------
# Probe screen


def screen(features: Float[Tensor, "item layer head d_head"], data: Statements, *, n_shuffles: int, seed: int
           ) -> probes.Screen:
    """Probe accuracy of every head over the statements' two folds, and under `n_shuffles` label shuffles."""
    return probes.screen(features, data.labels, data.folds, n_shuffles=n_shuffles, seed=seed, noun="statements")


# --------------------------------------------------------------------------------------------------
# Steering on held-out facts


def steering_sets(direction: probes.Direction, found: Sequence[Head], *, alpha: float, n_random: int, seed: int
                  ) -> Float[Tensor, "set layer head d_head"]:
    """Additions for `interventions.final_with_end_z_added`: row 0 nothing (clean), row 1 ``alpha * spread *
    unit`` in the `found` heads, rows ``2 .. n_random + 1`` random unit directions of the same norm in the same
    heads, rows ``n_random + 2 ..`` each drawn head set's own mass-mean direction (sets from all heads)."""
    n_layers, n_heads, d_head = direction.unit.shape
    step = alpha * direction.spread[..., None] * direction.unit  # [layer, head, d_head], ITI's shift
    mask = heads.masks([found], n_layers, n_heads)[0].float()[..., None]
    randoms = probes.random_units((n_random, n_layers, n_heads, d_head), seed=seed)
    norms = step.norm(dim=-1, keepdim=True)  # the same norm per head as the real direction
    drawn = controls.uniform_sets(n_layers, n_heads, len(found), n_random, seed=seed + 1)
    drawn_masks = heads.masks(drawn, n_layers, n_heads).float()[..., None]
    return torch.cat([torch.zeros(1, n_layers, n_heads, d_head), (step * mask)[None],
                      randoms * norms * mask, step * drawn_masks])


@dataclass(frozen=True)
class Steering:
    """The margin change on held-out facts with the top heads steered, against the two nulls."""

    same_heads: controls.CausalCheck  # random directions of the same norm in the same heads
    other_heads: controls.CausalCheck  # mass-mean directions in K heads drawn from all heads
    flips: float  # share of held-out facts whose margin is positive after steering (before: ``clean_right``)
    clean_right: float

    @property
    def passed(self) -> bool:
        bound = 1 / (self.same_heads.n_draws + 1)
        return (self.same_heads.top.mean > 0 and self.same_heads.p_value <= 2 * bound
                and self.other_heads.p_value <= 0.05)

    def summary(self) -> str:
        return f"{self.same_heads.summary()}\n{self.other_heads.summary()}"


@torch.no_grad()
def steering_check(model: TransformerBridge, direction: probes.Direction, found: Sequence[Head], data: Statements,
                   *, alpha: float, n_random: int, seed: int) -> Steering:
    """Add the directions at the prefix's last token of each fact in `data` (held out: never used to fit),
    and read the true-minus-false margin; the two nulls as in `steering_sets`."""
    found = [tuple(h) for h in found]
    additions = steering_sets(direction, found, alpha=alpha, n_random=n_random, seed=seed)
    prefixes = data.prefixes[0::2]
    values = torch.zeros(len(additions), len(prefixes))
    for where in by_length(model, prefixes).values():
        tokens = tasks.tokenize_prompts(model, [prefixes[i] for i in where])
        final = interventions.final_with_end_z_added(model, tokens, additions)  # [set, batch, d_model]
        true_ids = answer_ids(model, [data.true_answers[2 * i] for i in where])
        false_ids = answer_ids(model, [data.false_answers[2 * i] for i in where])
        values[:, where] = readout.logit_difference(model, final, true_ids, false_ids)
    n = len(found)
    same = controls.check_from_values(values[: n_random + 2], found, metric_name="true-minus-false margin",
                                      mode=f"mass-mean direction added (alpha {alpha:g})",
                                      null=f"random directions of the same norm in the same {n} heads", seed=seed)
    other = controls.check_from_values(torch.cat([values[:2], values[n_random + 2:]]), found,
                                       metric_name="true-minus-false margin",
                                       mode=f"mass-mean direction added (alpha {alpha:g})",
                                       null=f"each head's own mass-mean direction in {n} heads drawn from all "
                                            f"{model.cfg.n_layers * model.cfg.n_heads}", seed=seed)
    return Steering(same_heads=same, other_heads=other, flips=float((values[1] > 0).float().mean()),
                    clean_right=float((values[0] > 0).float().mean()))


# --------------------------------------------------------------------------------------------------
# Study


@dataclass(frozen=True)
class Study:
    """Truthfulness heads measured on one model: gate, probe screen, steering and probe transfer."""

    model: str
    gate: Gate
    screen: probes.Screen | None = None
    found: tuple[Head, ...] = ()
    steering: Steering | None = None
    transfer: Float[Tensor, "layer head"] | None = None  # page probes scored on the held-out statements
    held_out_gate: Gate | None = None

    def row(self) -> dict[str, object]:
        """One row of the findings table."""
        row: dict[str, object] = {"model": self.model, "behaviour gate": self.gate.summary()[:4],
                                  "margin": str(self.gate.test.metric)}
        if self.screen is None:
            return row
        row["best heads (probe accuracy)"] = heads.labels(self.screen.top(3), self.screen.accuracy)
        row["shuffled (99 %)"] = f"{self.screen.bar:.0%}"
        row["passing heads"] = len(self.screen.passing)
        if self.steering is not None:
            row["steer top-k: margin change"] = str(self.steering.same_heads.top)
            row["random directions (p)"] = f"{self.steering.same_heads.p_value:.3f}"
            row["random heads (p)"] = f"{self.steering.other_heads.p_value:.3f}"
        return row


@dataclass(frozen=True)
class Run:
    """Everything the page builds before measuring: the gated facts, statements and features."""

    facts: tuple[Facts, ...]
    data: Statements
    features: Float[Tensor, "item layer head d_head"]
    held_facts: Facts
    held_data: Statements
    held_features: Float[Tensor, "item layer head d_head"]


def prepare(model: TransformerBridge, *, sizes: Sizes, seed: int) -> Run:
    """Gate the facts of every page domain and of the held-out one; build statements and read the heads
    (kept in the results store: the page and `study` share one run)."""
    return store.cached("truthfulness-run", lambda: _prepare(model, sizes=sizes, seed=seed),
                        model=models.spec_of(model).name, weights=store.weights_digest(model),
                        max_facts=sizes.max_facts, seed=seed)


def _prepare(model: TransformerBridge, *, sizes: Sizes, seed: int) -> Run:
    facts = tuple(known_facts(model, domain) for domain in PAGE_DOMAINS)
    held_facts = known_facts(model, HELD_OUT)
    # too few known facts: the statements use every usable fact, so the gate can report (and fail) on them
    known_only = all(int(f.known.sum()) >= MIN_KNOWN for f in (*facts, held_facts))
    data = statements(facts, seed=seed, max_facts=sizes.max_facts, known_only=known_only)
    held = statements([held_facts], seed=seed + 1, max_facts=sizes.max_facts, known_only=known_only)
    return Run(facts=facts, data=data, features=head_features(model, data.texts), held_facts=held_facts,
               held_data=held, held_features=head_features(model, held.texts))


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Gate, probe screen, steering on held-out facts and probe transfer, kept in the results store."""
    return store.cached("truthfulness-study", lambda: _study(model, sizes=sizes, seed=seed),
                        model=models.spec_of(model).name, weights=store.weights_digest(model), sizes=sizes, seed=seed)


def _study(model: TransformerBridge, *, sizes: Sizes, seed: int) -> Study:
    name = models.spec_of(model).name
    run = prepare(model, sizes=sizes, seed=seed)
    passed = gate(model, run.facts, run.data, seed=seed)
    held_gate = gate(model, [run.held_facts], run.held_data, seed=seed)
    if not (passed.passed and held_gate.passed):
        return Study(model=name, gate=passed, held_out_gate=held_gate)
    found = screen(run.features, run.data, n_shuffles=sizes.n_shuffles, seed=seed + 10)
    top = found.top(sizes.top_k)
    direction = probes.mass_mean(run.features, run.data.labels)
    steer = steering_check(model, direction, top, run.held_data, alpha=sizes.alpha, n_random=sizes.n_random,
                           seed=seed + 20)
    transfer = probes.transfer_accuracy(run.features, run.data.labels, run.held_features, run.held_data.labels)
    return Study(model=name, gate=passed, screen=found, found=tuple(top), steering=steer, transfer=transfer,
                 held_out_gate=held_gate)
