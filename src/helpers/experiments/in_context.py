"""In-context heads: heads at the last token whose removal stops the model from using a label mapping it
was shown only in the prompt (Yu & Ananiadou 2024), on sentiment sentences labelled with words that mean
nothing ("foo" / "bar").

The page's steps, in order, each one function here:

- `prompts`: N demonstrations "The film was {adj}. foo" and a query "The film was {adj}.", every adjective a
  single token so every prompt has one length; half the prompts map positive to the first label, half to
  the second (a fixed liking for one label cannot pass), and each prompt has a twin with the same lines
  whose labels are assigned independently of the sentiment (`shuffled`: nothing to learn).
- `gate`: the signed label difference at END (logit of the label the demonstrations map the query's
  sentiment to, minus the other) on the prompts against their shuffled twins (paired sign-flip test).
- `screen`: every head zero-ablated at END alone, one head at a time: the drop of the signed label
  difference (`end_ablated`). A head passes when its drop is above the 99th percentile of all heads' drops
  and at least `MIN_SHARE` of the largest.
- `ablation_check`: the top-k heads zero-ablated together at END against k heads drawn from all heads.
- `reading`: where the top heads look from END (the labels whose demonstrations share the query's
  sentiment, the other labels, the adjectives) and whether their OV circuit copies label identity
  (`label_copying`, through the labels' effective embeddings).
- `held_out`: gate, screen and ablation check on another frame with other labels (`HELD_OUT`).

`study(model, *, sizes, seed)` runs them all, as the page does, for the comparison model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers import capture, controls, heads, heldout, models, ov, patching, readout, reviews, stats, store, tasks
from helpers.heads import Head

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

QUANTILE = 0.99  # a passing head's drop is above this quantile of all heads' drops ...
MIN_SHARE = 0.25  # ... and at least this share of the largest drop


@dataclass(frozen=True)
class Frame:
    """One way to write a demonstration: ``line`` with an ``{adj}`` slot, then a label from ``labels``
    (each with its leading space, one token each)."""

    name: str
    line: str
    labels: tuple[str, str]

    def __post_init__(self) -> None:
        if "{adj}" not in self.line or len(self.labels) != 2 or self.labels[0] == self.labels[1]:
            raise ValueError(f"a frame needs one {{adj}} slot and two different labels; got {self.line!r}, "
                             f"{self.labels!r}")


FOO_BAR = Frame("film, foo / bar", "The film was {adj}.", (" foo", " bar"))
HELD_OUT = Frame("food, foo / bar", "The food was {adj}.", (" foo", " bar"))
HELD_OUT_FAMILY = 'another frame: "The food was {adj}. foo"'
OTHER_LABELS = Frame("film, X / Y", "The film was {adj}.", (" X", " Y"))


@dataclass(frozen=True)
class Sizes:
    """How many prompts and draws each step uses (the notebook's parameters cell sets these)."""

    shots: int = 12  # demonstrations per prompt, half positive, half negative
    gate_prompts: int = 64  # also the held-out frame's and the other labels' gates
    screen_prompts: int = 24
    top_k: int = 3
    check_prompts: int = 32
    n_random: int = 100  # p >= 1/101
    heldout_prompts: int = 16  # held-out screen and ablation check
    heldout_draws: int = 40  # p >= 1/41


# --------------------------------------------------------------------------------------------------
# Prompts


@dataclass(frozen=True)
class Prompts:
    """In-context prompts and their shuffled twins.

    ``tokens`` / ``shuffled``: ``[batch, pos]``, the same lines, labels following the prompt's mapping or
    assigned independently of the sentiment; ``right`` / ``wrong``: ``[batch]`` the label ids the mapping
    gives the query's sentiment and the other one; ``mapping``: +1 where the first label means positive,
    -1 where it means negative; ``query_positive``; ``labels``: the positions of the demonstrations' labels;
    ``adjectives``: of every adjective (the query's last); ``same``: ``[batch, shot]`` True where a
    demonstration has the query's sentiment (in ``tokens`` its label is the right one).
    """

    frame: Frame
    texts: tuple[str, ...]
    tokens: Int[Tensor, "batch pos"]
    shuffled: Int[Tensor, "batch pos"]
    right: Int[Tensor, "batch"]
    wrong: Int[Tensor, "batch"]
    mapping: Int[Tensor, "batch"]
    query_positive: Bool[Tensor, "batch"]
    labels: tuple[int, ...]
    adjectives: tuple[int, ...]
    same: Bool[Tensor, "batch shot"]


def adjectives(model: TransformerBridge) -> tuple[list[str], list[str]]:
    """The positive and negative adjectives of `helpers.reviews` that are one token after a space."""
    return (tasks.single_token_words(model, reviews.POSITIVE_ADJECTIVES),
            tasks.single_token_words(model, reviews.NEGATIVE_ADJECTIVES))


def demo_texts(frame: Frame, demos: Sequence[tuple[str, int]], query: str) -> str:
    """The prompt: one line per ``(adjective, label index)`` demonstration, then the query line."""
    lines = [frame.line.format(adj=adj) + frame.labels[label] for adj, label in demos]
    return "\n".join([*lines, frame.line.format(adj=query)])


def balanced_labels(sentiments: Sequence[bool], rng: random.Random) -> list[int]:
    """Label indices independent of the sentiment: within each sentiment, half the demonstrations get each
    label (the shuffled control: the demonstrations hold no mapping)."""
    out = [0] * len(sentiments)
    for value in (True, False):
        where = [i for i, s in enumerate(sentiments) if s == value]
        if len(where) % 2:
            raise ValueError(f"each sentiment needs an even number of demonstrations; got {len(where)}")
        chosen = list(range(len(where)))
        rng.shuffle(chosen)
        for rank, i in zip(chosen, where):
            out[i] = int(rank < len(where) // 2)
    return out


def prompts(model: TransformerBridge, *, n: int, shots: int, seed: int, frame: Frame = FOO_BAR) -> Prompts:
    """`n` prompts of `shots` demonstrations (half of each sentiment, in random order) and a query whose
    adjective no demonstration uses. Prompt i maps positive to the first label when ``i % 2 == 0`` and its
    query is positive when ``(i // 2) % 2 == 0``: both mappings and both answers, balanced.

    Raises:
        ValueError: if `n` is not a multiple of 4, `shots` not a multiple of 4 (the shuffled twin splits each
            sentiment in half), a label is not one token, or the prompts tokenize to different lengths.
    """
    if n < 4 or n % 4 or shots < 4 or shots % 4:
        raise ValueError(f"n and shots must be positive multiples of 4 (balanced mappings and answers); got "
                         f"n={n}, shots={shots}")
    ids = [tasks.require_single_token(model, label, why="the label is read from one logit") for label in frame.labels]
    good, bad = adjectives(model)
    rng = random.Random(seed)
    texts, twins, mapping, positive, same = [], [], [], [], []
    for i in range(n):
        flip = i % 2 == 1  # the first label means negative
        query_positive = (i // 2) % 2 == 0
        query = rng.choice(good if query_positive else bad)
        sentiments = [True] * (shots // 2) + [False] * (shots // 2)
        rng.shuffle(sentiments)
        words = [rng.choice([w for w in (good if s else bad) if w != query]) for s in sentiments]
        mapped = [int(s == flip) for s in sentiments]  # label 0 for positive unless flipped
        texts.append(demo_texts(frame, list(zip(words, mapped)), query))
        twins.append(demo_texts(frame, list(zip(words, balanced_labels(sentiments, rng))), query))
        mapping.append(-1 if flip else 1)
        positive.append(query_positive)
        same.append([s == query_positive for s in sentiments])
    tokens = tasks.tokenize_prompts(model, texts + twins)
    mapping_t, positive_t = torch.tensor(mapping), torch.tensor(positive)
    right_first = positive_t == (mapping_t > 0)
    right = torch.where(right_first, ids[0], ids[1])
    wrong = torch.where(right_first, ids[1], ids[0])
    labels, adjective_positions = _positions(model, frame, tokens[0], ids, shots)
    return Prompts(frame=frame, texts=tuple(texts), tokens=tokens[:n], shuffled=tokens[n:], right=right, wrong=wrong,
                   mapping=mapping_t, query_positive=positive_t, labels=labels, adjectives=adjective_positions,
                   same=torch.tensor(same))


def _positions(model: TransformerBridge, frame: Frame, row: Tensor, label_ids: list[int], shots: int
               ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Label positions (tokens equal to a label id) and adjective positions (the tokens just before the
    line's text after the slot, e.g. "." or " story ->"), checked against the expected count."""
    labels = tuple(int(p) for p in torch.isin(row, torch.tensor(label_ids)).nonzero()[:, 0])
    if len(labels) != shots:
        raise ValueError(f"found {len(labels)} label tokens in a prompt of {shots} demonstrations; a frame's "
                         "line must not contain a label token itself")
    after = len(tasks.token_ids(model, frame.line.split("{adj}")[1]))
    return labels, tuple(p - after - 1 for p in labels) + (len(row) - 1 - after,)


def signed_difference(model: TransformerBridge, final: Float[Tensor, "... batch d_model"], data: Prompts
                      ) -> Float[Tensor, "... batch"]:
    """``logit[right] - logit[wrong]`` at END: positive when the model follows the demonstrated mapping."""
    return readout.logit_difference(model, final, data.right, data.wrong)


def accuracy(signed: Float[Tensor, "... batch"]) -> Float[Tensor, "..."]:
    """Share of prompts where the right label beats the other one (signed difference above 0)."""
    return (signed > 0).float().mean(-1)


# --------------------------------------------------------------------------------------------------
# Behaviour gate


@dataclass(frozen=True)
class Gate:
    """Signed label difference per prompt with the mapping shown and with the shuffled twin."""

    mapped: Float[Tensor, "prompt"]
    shuffled: Float[Tensor, "prompt"]
    mapping: Int[Tensor, "prompt"]
    strict: float  # share of prompts whose top-1 token over the whole vocabulary is the right label
    test: stats.GateResult

    @property
    def accuracy(self) -> float:
        return float(accuracy(self.mapped))

    @property
    def control_accuracy(self) -> float:
        return float(accuracy(self.shuffled))

    def accuracy_by_mapping(self) -> dict[str, float]:
        """Accuracy where the first label means positive (``"first = positive"``) and where it means negative."""
        return {"first = positive": float(accuracy(self.mapped[self.mapping > 0])),
                "first = negative": float(accuracy(self.mapped[self.mapping < 0]))}

    @property
    def passed(self) -> bool:
        return self.test.passed and min(self.accuracy_by_mapping().values()) > 0.5

    def summary(self) -> str:
        by = ", ".join(f"{k} {v:.0%}" for k, v in self.accuracy_by_mapping().items())
        return (f"{'PASS' if self.passed else 'FAIL'}: accuracy {self.accuracy:.0%} ({by}) against "
                f"{self.control_accuracy:.0%} with shuffled labels, {len(self.mapped)} prompts; signed label "
                f"difference {self.test.difference} above the shuffled twin, p = {self.test.p_value:.4f} (rule: "
                f"p < 0.01, interval above 0, accuracy above 50 % in both mappings); top-1 over the whole "
                f"vocabulary is the right label on {self.strict:.0%}")


@torch.no_grad()
def gate(model: TransformerBridge, *, n: int, shots: int, seed: int, frame: Frame = FOO_BAR) -> Gate:
    """Signed label difference at END on `n` prompts and their shuffled twins; paired sign-flip test."""
    data = prompts(model, n=n, shots=shots, seed=seed, frame=frame)
    final = capture.final_at(model, torch.cat([data.tokens, data.shuffled]))
    both = readout.logit_difference(model, final, data.right.repeat(2), data.wrong.repeat(2))
    mapped, shuffled = both[:n], both[n:]
    top1 = readout.logits(model, final[:n]).argmax(-1)
    test = stats.behaviour_gate(mapped, shuffled, paired=True, seed=seed, name=f"in-context labels ({frame.name})",
                                metric_name="signed label difference", null_name="with the labels shuffled")
    return Gate(mapped=mapped, shuffled=shuffled, mapping=data.mapping,
                strict=float((top1 == data.right).float().mean()), test=test)


# --------------------------------------------------------------------------------------------------
# Screen and causal check: zero ablation at END


@torch.no_grad()
def end_ablated(model: TransformerBridge, data: Prompts, head_sets: Sequence[Sequence[Head]], *,
                shuffled: bool = False) -> Float[Tensor, "set batch"]:
    """The signed label difference with each set's heads zero-ablated at END only (``[[]]``: clean).

    One clean pass over the prompts and, per set, one pass over END reading the prefix from the KV cache
    (`patching.patched_final_at_end`): what the heads wrote at the demonstrations stays as it was.
    """
    tokens = data.shuffled if shuffled else data.tokens
    source = patching.head_outputs(model, tokens)
    source[:, :, -1] = 0.0  # zero ablation at END: the head adds nothing to the last residual
    finals = patching.patched_final_at_end(model, tokens, source, head_sets)
    return signed_difference(model, finals, data)


@dataclass(frozen=True)
class Screen:
    """Each head's drop of the signed label difference when zero-ablated alone at END (``scores``), with the
    clean difference, and each head's attention from END (``attention``: "right labels", "wrong labels",
    "adjectives") with the uniform shares (``uniform``)."""

    scores: Float[Tensor, "layer head"]
    clean: stats.Estimate
    attention: dict[str, Float[Tensor, "layer head"]]
    uniform: dict[str, float]

    @property
    def bar(self) -> float:
        return float(torch.quantile(self.scores.flatten(), QUANTILE))

    @property
    def passing(self) -> list[Head]:
        """Heads above `bar` and at least `MIN_SHARE` of the largest drop."""
        rule = (self.scores > self.bar) & (self.scores >= MIN_SHARE * self.scores.max())
        return heads.top(self.scores, where=rule)

    def top(self, k: int) -> list[Head]:
        return heads.top(self.scores, k)

    def describe(self, head: Head) -> str:
        a, u = self.attention, self.uniform
        return (f"{heads.label(head)}: drop {float(self.scores[head]):+.3f} of {self.clean.mean:.3f}; attention "
                f"from END to the right labels {float(a['right labels'][head]):.2f}, to the wrong labels "
                f"{float(a['wrong labels'][head]):.2f} (uniform {u['right labels']:.2f} each), to the adjectives "
                f"{float(a['adjectives'][head]):.2f} (uniform {u['adjectives']:.2f})")

    def summary(self) -> str:
        return (f"{len(self.passing)} of {self.scores.numel()} heads pass (drop above the 99th percentile of all "
                f"heads, {self.bar:.3f}, and >= {MIN_SHARE:.0%} of the largest); top: "
                f"{heads.labels(self.top(5), self.scores)}; clean signed label difference {self.clean}")


def attention_shares(attention: Float[Tensor, "layer batch head key"], same: Bool[Tensor, "batch shot"],
                     labels: Sequence[int], adjectives: Sequence[int]) -> dict[str, Float[Tensor, "layer head"]]:
    """Each head's mean attention from END to the labels of demonstrations that share the query's sentiment
    ("right labels"), to the other labels ("wrong labels"), and to every adjective.

    Raises:
        ValueError: if `same` is not ``[batch, len(labels)]``.
    """
    if same.shape != (attention.shape[1], len(labels)):
        raise ValueError(f"same must be [batch, shot] = ({attention.shape[1]}, {len(labels)}); got {tuple(same.shape)}")
    on_labels = attention[..., list(labels)]  # [layer, batch, head, shot]
    mask = same[None, :, None, :].to(on_labels.dtype)
    return {"right labels": (on_labels * mask).sum(-1).mean(1), "wrong labels": (on_labels * (1 - mask)).sum(-1).mean(1),
            "adjectives": attention[..., list(adjectives)].sum(-1).mean(1)}


@torch.no_grad()
def screen(model: TransformerBridge, *, n: int, shots: int, seed: int, frame: Frame = FOO_BAR) -> Screen:
    """Zero-ablate every head at END, one at a time, on `n` prompts: the mean drop of the signed difference."""
    data = prompts(model, n=n, shots=shots, seed=seed, frame=frame)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    values = end_ablated(model, data, [[]] + [[h] for h in heads.every(n_layers, n_heads)])
    scores = (values[0] - values[1:]).mean(-1).reshape(n_layers, n_heads)
    run = capture.read_end(model, data.tokens)
    keys = data.tokens.shape[1]
    uniform = {"right labels": len(data.labels) / 2 / keys, "wrong labels": len(data.labels) / 2 / keys,
               "adjectives": len(data.adjectives) / keys}
    return Screen(scores=scores, clean=stats.bootstrap_ci(values[0], seed=seed),
                  attention=attention_shares(run.attention, data.same, data.labels, data.adjectives), uniform=uniform)


@dataclass(frozen=True)
class Ablation:
    """The top heads zero-ablated together at END against drawn sets (``check``: signed label difference),
    with accuracy clean and ablated (intervals over prompts) and the same ablation on the shuffled twins."""

    check: controls.CausalCheck
    accuracy_clean: stats.Estimate
    accuracy_ablated: stats.Estimate
    draws_accuracy: Float[Tensor, "draw"]
    on_shuffled: stats.Estimate

    @property
    def share(self) -> float:
        """Share of the clean signed label difference that the ablation removes."""
        return -self.check.top.mean / self.check.clean.mean

    def summary(self) -> str:
        return (f"{self.check.summary()}; accuracy {self.accuracy_clean} -> {self.accuracy_ablated} (drawn sets: "
                f"median {float(self.draws_accuracy.median()):.2f}, lowest {float(self.draws_accuracy.min()):.2f}); "
                f"the same ablation on the shuffled twins changes the difference by {self.on_shuffled}")


@torch.no_grad()
def ablation_check(model: TransformerBridge, found: Sequence[Head], *, n: int, shots: int, n_random: int, seed: int,
                   frame: Frame = FOO_BAR) -> Ablation:
    """Zero-ablate `found` together at END, and `n_random` sets of as many heads drawn from all heads."""
    found = [tuple(h) for h in found]
    if not found:
        raise ValueError("found is empty: pass the heads to ablate, e.g. screen.top(3)")
    data = prompts(model, n=n, shots=shots, seed=seed, frame=frame)
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(found), n_random, seed=seed)
    values = end_ablated(model, data, [[], found, *draws])
    null = f"{len(found)} heads drawn from all {model.cfg.n_layers * model.cfg.n_heads}"
    check = controls.check_from_values(values, found, metric_name="signed label difference",
                                       mode="zero-ablated at END", null=null, seed=seed, larger_is_stronger=False)
    twin = end_ablated(model, data, [[], found], shuffled=True)
    correct = (values > 0).float()
    return Ablation(check=check, accuracy_clean=stats.bootstrap_ci(correct[0], seed=seed),
                    accuracy_ablated=stats.bootstrap_ci(correct[1], seed=seed), draws_accuracy=correct[2:].mean(-1),
                    on_shuffled=stats.bootstrap_ci(twin[1] - twin[0], seed=seed))


# --------------------------------------------------------------------------------------------------
# What the heads read and write


def label_copying(table: Float[Tensor, "... 2 2"]) -> Float[Tensor, "..."]:
    """From an OV table ``[source, target]`` over the two labels: how much more reading label 0 than
    label 1 raises ``logit[0] - logit[1]``. Positive: the head copies label identity; 0: it ignores it."""
    if table.shape[-2:] != (2, 2):
        raise ValueError(f"table must end in [source=2, target=2]; got {tuple(table.shape)}")
    return (table[..., 0, 0] - table[..., 0, 1]) - (table[..., 1, 0] - table[..., 1, 1])


@torch.no_grad()
def ov_label_scores(model: TransformerBridge, frame: Frame = FOO_BAR) -> Float[Tensor, "layer head"]:
    """`label_copying` of every head's effective OV circuit on the frame's two labels (`ov.effective_ov_logits`:
    the labels after block 0, through each head's W_V W_O, the final norm's gain and the unembedding)."""
    ids = [tasks.require_single_token(model, label, why="the label is read from one logit") for label in frame.labels]
    return label_copying(ov.effective_ov_logits(model, ids))


# --------------------------------------------------------------------------------------------------
# Held-out frame, and the study.


@dataclass(frozen=True)
class HeldOut:
    """The gate, screen and ablation check on `HELD_OUT`, and the gate with other labels (`OTHER_LABELS`)."""

    gate: Gate
    screen: Screen
    ablation: Ablation
    result: heldout.HeldOut
    labels_gate: Gate


def held_out(model: TransformerBridge, found: Sequence[Head], *, sizes: Sizes, seed: int) -> HeldOut:
    """Gate, screen and the ablation check of `found` on `HELD_OUT` (fresh prompts), and the gate on the
    page's frame with other labels (`OTHER_LABELS`, seed + 3)."""
    passed = gate(model, n=sizes.gate_prompts, shots=sizes.shots, seed=seed, frame=HELD_OUT)
    other = screen(model, n=sizes.heldout_prompts, shots=sizes.shots, seed=seed + 1, frame=HELD_OUT)
    check = ablation_check(model, found, n=sizes.heldout_prompts, shots=sizes.shots, n_random=sizes.heldout_draws,
                           seed=seed + 2, frame=HELD_OUT)
    labels = gate(model, n=sizes.gate_prompts, shots=sizes.shots, seed=seed + 3, frame=OTHER_LABELS)
    return HeldOut(gate=passed, screen=other, ablation=check, labels_gate=labels,
                   result=heldout.HeldOut(HELD_OUT_FAMILY, found=tuple(found), screen=other.scores, check=check.check))


@dataclass(frozen=True)
class Study:
    """In-context heads measured on one model: gate, screen, ablation check, OV reading, held-out frame."""

    model: str
    gate: Gate
    screen: Screen | None = None
    ablation: Ablation | None = None
    ov: Float[Tensor, "layer head"] | None = None
    held_out: HeldOut | None = None

    @property
    def found(self) -> list[Head]:
        return [] if self.ablation is None else list(self.ablation.check.heads)

    def row(self) -> dict[str, object]:
        """One row of the findings table."""
        row: dict[str, object] = {"model": self.model, "behaviour gate": self.gate.summary()[:4],
                                  "accuracy (shuffled)": f"{self.gate.accuracy:.0%} ({self.gate.control_accuracy:.0%})"}
        if self.screen is None:
            return row
        row["top heads (drop)"] = heads.labels(self.screen.top(3), self.screen.scores)
        row["passing heads"] = len(self.screen.passing)
        if self.ablation is not None:
            a = self.ablation
            row["ablate top-k: accuracy"] = f"{a.accuracy_clean.mean:.0%} -> {a.accuracy_ablated.mean:.0%}"
            row["random-k (p)"] = a.check.draws_summary()
        if self.held_out is not None:
            row["held-out ranks"] = self.held_out.result.ranks_text()
            row["held-out p"] = f"{self.held_out.result.check.p_value:.3f}"
        return row


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Gate, screen, ablation check, OV reading and held-out frame, as the page runs them, kept in the
    results store. Seeds: gate `seed`, screen `seed + 10`, ablation `seed + 20`, held-out `seed + 40`."""
    return store.cached("in-context-study", lambda: _study(model, sizes=sizes, seed=seed),
                        model=models.spec_of(model).name, weights=store.weights_digest(model), sizes=sizes, seed=seed)


def gated_screen(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> tuple[Gate, Screen | None]:
    """The gate (seed `seed`) and, if it passes, the screen (seed `seed + 10`), as `study` runs them; kept in
    the results store on its own, so the head atlas and the page compute them once between them."""
    def compute() -> tuple[Gate, Screen | None]:
        passed = gate(model, n=sizes.gate_prompts, shots=sizes.shots, seed=seed)
        if not passed.passed:
            return passed, None
        return passed, screen(model, n=sizes.screen_prompts, shots=sizes.shots, seed=seed + 10)

    return store.cached("in-context-screen", compute, model=models.spec_of(model).name,
                        weights=store.weights_digest(model), shots=sizes.shots, gate_prompts=sizes.gate_prompts,
                        screen_prompts=sizes.screen_prompts, seed=seed)


def _study(model: TransformerBridge, *, sizes: Sizes, seed: int) -> Study:
    name = models.spec_of(model).name
    passed, found = gated_screen(model, sizes=sizes, seed=seed)
    if found is None:
        return Study(model=name, gate=passed)
    top = found.top(sizes.top_k)
    check = ablation_check(model, top, n=sizes.check_prompts, shots=sizes.shots, n_random=sizes.n_random,
                           seed=seed + 20)
    held = held_out(model, top, sizes=sizes, seed=seed + 40)
    return Study(model=name, gate=passed, screen=found, ablation=check, ov=ov_label_scores(model), held_out=held)
