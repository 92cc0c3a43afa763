"""Positional heads: heads whose strongest attention falls on one fixed relative position whatever the text,
and what next-token prediction on prose loses without them (Voita et al. 2019, in a causal decoder).

The page's steps, in order, each one function here:

- `prose_gate`: the model predicts prose far better than a unigram model of the same corpus (paired over
  windows). Positional heads serve next-token prediction in general; this is the behaviour they can matter for.
- `screen`: `scores.argmax_offset_shares` on random tokens (no content cues) and on prose; a head is positional
  when the *same* fixed bin (offset 0..`MAX_OFFSET` or the first position) takes at least `THRESHOLD` of its
  argmax choices on both (`passing_heads`). A head that attends by content moves between the two and fails.
- `prose_ablation`: mean-ablate the top offset heads (positional heads that are not first-position sinks) and
  sets of as many heads drawn from all heads; the rise of the loss on prose, on random tokens (specificity)
  and their difference.
- `held_out`: the shares and the ablation again on the Python language reference, a corpus no screen read.

`study(model, *, sizes, seed)` runs them all, as the page does, for the comparison model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers import capture, controls, heads, heldout, interventions, models, scores, stats, tasks
from helpers.heads import Head

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

THRESHOLD = 0.9  # pre-registered: Voita et al.'s "at least 90 % of cases", on both kinds of text
MAX_OFFSET = 3  # offset bins 0 (itself), 1, 2, 3; then the first position, then "elsewhere"
FIRST_QUERY = MAX_OFFSET + 1  # earlier queries would have an offset bin on position 0 (see argmax_offset_shares)
FIRST_BIN = MAX_OFFSET + 1  # index of the first-position bin
FIXED_BINS = MAX_OFFSET + 2  # bins 0 .. FIRST_BIN are fixed positions; the last bin ("elsewhere") is not
BIN_NAMES = scores.argmax_bin_names(MAX_OFFSET)
HELD_OUT_FAMILY = "the Python language reference (pydoc topics)"


@dataclass(frozen=True)
class Sizes:
    """How many windows, tokens and draws each step uses (the notebook's parameters cell sets these)."""

    gate_windows: int = 60
    gate_len: int = 32
    screen_prompts: int = 30
    screen_len: int = 40
    ablation_prompts: int = 8
    ablation_len: int = 24
    top_k: int = 3
    n_random: int = 20
    heldout_prompts: int = 10  # reference windows for the held-out shares (screen_len tokens each)
    heldout_draws: int = 20  # fresh draws for the held-out ablation; 0 skips it


# --------------------------------------------------------------------------------------------------
# Behaviour gate: prose is predicted from context, far better than from token frequencies alone.


def unigram_losses(counts: Int[Tensor, "d_vocab"], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos"]:
    """``-log p(token)`` under the unigram distribution of `counts`: the loss of a predictor that knows how often
    each token occurs and nothing else.

    Raises:
        ValueError: if a token of `tokens` has count 0 (its loss would be infinite): count the corpus the
            tokens were cut from.
    """
    missing = counts[tokens] == 0
    if missing.any():
        raise ValueError(f"{int(missing.sum())} token(s) never occur in the counted corpus (e.g. id "
                         f"{int(tokens[missing][0])}); count the corpus the windows were cut from")
    return -(counts[tokens].double() / counts.sum()).log().float()


def prose_gate(model: TransformerBridge, *, windows: int, length: int, seed: int) -> stats.GateResult:
    """Does the model predict prose from its context? Per window, the model's mean next-token loss against the
    loss of the docstrings' own unigram distribution on the same tokens (paired). The unigram counts include the
    test windows, which favours the null. Passes when p < 0.01 and the interval of the gap clears 1 nat."""
    batch = tasks.natural_text(model, batch=windows, length=length, seed=seed)
    counts = torch.bincount(torch.tensor(tasks.token_ids(model, tasks.stdlib_prose())), minlength=model.cfg.d_vocab)
    model_loss = capture.loss_per_token(model, batch.tokens).mean(1)  # [window]
    unigram = unigram_losses(counts, batch.tokens[:, 1:]).mean(1)  # the same predicted tokens
    return stats.behaviour_gate(model_loss, unigram, paired=True, higher_is_better=False, min_effect=1.0, seed=seed,
                                name="prose prediction", metric_name="next-token loss on prose",
                                null_name="for the docstrings' unigram distribution")


# --------------------------------------------------------------------------------------------------
# Screen: the same fixed bin on random tokens and on prose.


def agreement(random: Float[Tensor, "layer head bin"], prose: Float[Tensor, "layer head bin"]
              ) -> tuple[Float[Tensor, "layer head"], Int[Tensor, "layer head"]]:
    """Each head's positional score and bin: over the fixed bins (offsets 0..MAX_OFFSET, first position), the
    largest of min(share on random tokens, share on prose), and the bin where it falls. A score of at least
    `THRESHOLD` means one bin holds that share of the argmax choices on both texts."""
    if random.shape != prose.shape or random.ndim != 3 or random.shape[-1] != FIXED_BINS + 1:
        raise ValueError(f"random and prose must both be [layer, head, {FIXED_BINS + 1}] shares "
                         f"(argmax_offset_shares with max_offset={MAX_OFFSET}); got {tuple(random.shape)} and "
                         f"{tuple(prose.shape)}")
    lower = torch.minimum(random, prose)[..., :FIXED_BINS]  # [layer, head, fixed bin]
    score, where = lower.max(dim=-1)
    return score, where


def passing_heads(random: Float[Tensor, "layer head bin"], prose: Float[Tensor, "layer head bin"], *,
                  threshold: float = THRESHOLD) -> list[Head]:
    """The pass rule: heads whose same fixed bin takes at least `threshold` of the argmax choices on random
    tokens and on prose, best first."""
    score, _ = agreement(random, prose)
    return heads.top(score, where=score >= threshold)


@dataclass(frozen=True)
class PositionalScreen:
    """Argmax-offset shares of every head on random tokens and on prose, and the pass rule applied to them."""

    random: Float[Tensor, "layer head bin"]
    prose: Float[Tensor, "layer head bin"]
    threshold: float = THRESHOLD

    @property
    def scores(self) -> Float[Tensor, "layer head"]:
        """The positional score: the lower of the two texts' shares in the best common fixed bin."""
        return agreement(self.random, self.prose)[0]

    @property
    def bins(self) -> Int[Tensor, "layer head"]:
        """Index of each head's best common fixed bin (`BIN_NAMES`)."""
        return agreement(self.random, self.prose)[1]

    @property
    def passing(self) -> list[Head]:
        return passing_heads(self.random, self.prose, threshold=self.threshold)

    def top(self, k: int) -> list[Head]:
        return heads.top(self.scores, k)

    def offset_heads(self, k: int | None = None) -> list[Head]:
        """Passing heads whose bin is an offset (not the first position), best first; the first `k` of them."""
        bins = self.bins
        found = [head for head in self.passing if int(bins[head]) != FIRST_BIN]
        return found if k is None else found[:k]

    def sink_heads(self) -> list[Head]:
        """Passing heads whose bin is the first position."""
        return [head for head in self.passing if int(self.bins[head]) == FIRST_BIN]

    def by_bin(self) -> dict[str, int]:
        """How many passing heads each fixed bin holds."""
        bins = self.bins
        return {name: sum(int(bins[h]) == i for h in self.passing) for i, name in enumerate(BIN_NAMES[:FIXED_BINS])}

    def best_bin(self, text: str) -> tuple[Int[Tensor, "layer head"], Float[Tensor, "layer head"]]:
        """Each head's own best fixed bin on one text (``"random"`` or ``"prose"``) and its share there."""
        shares = {"random": self.random, "prose": self.prose}[text][..., :FIXED_BINS]
        share, where = shares.max(dim=-1)
        return where, share

    def random_bin_shares(self) -> tuple[Float[Tensor, "layer head"], Float[Tensor, "layer head"]]:
        """Each head's share in its best fixed bin on random tokens, and the share of that same bin on prose: the
        two axes of the page's control figure. With a threshold above 0.5, a head passes exactly when both are
        at least the threshold (a bin holding most of the random-token choices is the random-token best)."""
        where, share = self.best_bin("random")
        return share, self.prose.gather(-1, where[..., None])[..., 0]

    def near_misses(self, low: float = 0.8, *, offsets_only: bool = False) -> list[Head]:
        """Heads that fail the rule although one text puts at least `low` of their argmax choices in one fixed
        bin: heads just under the threshold, and content heads that look positional on one text only. With
        `offsets_only`, only heads whose bin on that stronger text is an offset. Strongest first."""
        (random_bin, random_share), (prose_bin, prose_share) = self.best_bin("random"), self.best_bin("prose")
        stronger = torch.maximum(random_share, prose_share)
        bin_there = torch.where(random_share >= prose_share, random_bin, prose_bin)
        close = (self.scores < self.threshold) & (stronger >= low)
        if offsets_only:
            close &= bin_there != FIRST_BIN
        return heads.top(stronger, where=close)

    def describe(self, head: Head) -> str:
        """``L3H2: offset 1 0.98 on random tokens, offset 1 0.95 on prose``."""
        parts = []
        for text, label in (("random", "random tokens"), ("prose", "prose")):
            where, share = self.best_bin(text)
            parts.append(f"{BIN_NAMES[int(where[head])]} {float(share[head]):.2f} on {label}")
        return f"{heads.label(head)}: " + ", ".join(parts)

    def summary(self) -> str:
        passing = self.passing
        counts = ", ".join(f"{name} {n}" for name, n in self.by_bin().items() if n)
        return (f"positional: {len(passing)} of {self.scores.numel()} heads put >= {self.threshold:.0%} of their "
                f"argmax choices in the same bin on random tokens and on prose ({counts or 'none'}); "
                f"top offset heads: {heads.labels(self.offset_heads(5), self.scores, signed=False)}")


def shares_on(model: TransformerBridge, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "layer head bin"]:
    """`scores.argmax_offset_shares` of every head on `tokens` (one forward pass, patterns only)."""
    return scores.argmax_offset_shares(capture.capture_patterns(model, tokens), first_query=FIRST_QUERY,
                                       max_offset=MAX_OFFSET)


def screen(model: TransformerBridge, *, prompts: int, length: int, seed: int,
           threshold: float = THRESHOLD) -> PositionalScreen:
    """Argmax-offset shares of every head on random tokens (seed) and on docstring prose (seed + 1)."""
    random_batch = tasks.random_tokens(model, batch=prompts, length=length, seed=seed)
    prose_batch = tasks.natural_text(model, batch=prompts, length=length, seed=seed + 1)
    return PositionalScreen(random=shares_on(model, random_batch.tokens), prose=shares_on(model, prose_batch.tokens),
                            threshold=threshold)


# --------------------------------------------------------------------------------------------------
# Causal check: the loss on prose with the top offset heads mean-ablated, against random sets from all heads.


def mean_loss(logits: Float[Tensor, "batch pos vocab"], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch"]:
    """Metric for ablations: each window's mean next-token loss."""
    return scores.next_token_losses(logits, tokens).mean(dim=1)


@dataclass(frozen=True)
class ProseAblation:
    """One mean ablation of `found` and of each drawn set, on prose and on random tokens.

    Attributes:
        prose: change of the mean next-token loss on prose windows.
        random: the same ablations on random tokens (nothing to predict from content).
        specific: (prose - random) change per window: what the heads do for prose beyond what they do anywhere.
    """

    prose: controls.CausalCheck
    random: controls.CausalCheck | None
    specific: controls.CausalCheck | None

    def summary(self) -> str:
        text = f"prose: {self.prose.summary()}"
        if self.random is not None and self.specific is not None:
            text += f"\nrandom tokens: {self.random.summary()}\ndifference in differences: {self.specific.summary()}"
        return text


def prose_ablation(model: TransformerBridge, found: Sequence[Head], *, prompts: int, length: int, n_random: int,
                   seed: int, corpus: str = "docstrings", specificity: bool = True) -> ProseAblation:
    """Mean-ablate `found`, and `n_random` sets of as many heads drawn from all heads (seeded), on prose windows
    of `corpus`; with `specificity`, also on random tokens of the same shape. Head means come from other prose
    windows of the same corpus (seed + 1), so an ablated head writes what it writes on average on such text."""
    found = [tuple(head) for head in found]
    if not found:
        raise ValueError("found is empty: pass the positional heads to ablate, e.g. screen.offset_heads(3)")
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(found), n_random, seed=seed)
    prose = tasks.natural_text(model, batch=prompts, length=length, seed=seed, corpus=corpus)
    reference = tasks.natural_text(model, batch=prompts, length=length, seed=seed + 1, corpus=corpus)
    means = capture.mean_head_outputs(model, reference.tokens)
    null = f"{len(found)} heads drawn from all {model.cfg.n_layers * model.cfg.n_heads}"

    def values(tokens: Tensor) -> Tensor:  # [set, window]: clean, found, draws
        return interventions.ablated_metric(model, tokens, [[], found, *draws], mean_loss, mode="mean", means=means)

    def check(rows: Tensor, metric_name: str) -> controls.CausalCheck:
        return controls.check_from_values(rows, found, metric_name=metric_name, mode="mean-ablated", null=null,
                                          seed=seed)

    on_prose = values(prose.tokens)
    if not specificity:
        return ProseAblation(prose=check(on_prose, "next-token loss on prose"), random=None, specific=None)
    on_random = values(tasks.random_tokens(model, batch=prompts, length=length, seed=seed + 2).tokens)
    return ProseAblation(prose=check(on_prose, "next-token loss on prose"),
                         random=check(on_random, "next-token loss on random tokens"),
                         specific=check(on_prose - on_random, "loss, prose minus random tokens"))


# --------------------------------------------------------------------------------------------------
# Held-out text: the Python language reference, which no screen read.


@dataclass(frozen=True)
class HeldOutText:
    """The found heads on held-out prose: their shares there, and the ablation against fresh draws."""

    shares: Float[Tensor, "layer head bin"]
    check: heldout.HeldOut  # screen: every head's held-out share in its own screen bin

    def kept(self, threshold: float = THRESHOLD) -> list[Head]:
        """Found heads whose screen bin still takes at least `threshold` of their argmax choices."""
        return [head for head in self.check.found if float(self.check.screen[head]) >= threshold]


def held_out(model: TransformerBridge, screened: PositionalScreen, found: Sequence[Head], *, sizes: Sizes,
             seed: int) -> HeldOutText:
    """Shares on `sizes.heldout_prompts` windows of the language reference; the held-out score of a head is its
    share there in the bin the screen gave it. The ablation of `found` is re-run on reference windows against
    `sizes.heldout_draws` fresh draws (other seeds than the page's), without the specificity control."""
    batch = tasks.natural_text(model, batch=sizes.heldout_prompts, length=sizes.screen_len, seed=seed,
                               corpus="reference")
    shares = shares_on(model, batch.tokens)
    in_bin = shares.gather(-1, screened.bins[..., None])[..., 0]  # [layer, head]
    check = None
    if sizes.heldout_draws > 0:
        check = prose_ablation(model, found, prompts=sizes.ablation_prompts, length=sizes.ablation_len,
                               n_random=sizes.heldout_draws, seed=seed + 1, corpus="reference",
                               specificity=False).prose
    return HeldOutText(shares=shares, check=heldout.HeldOut(HELD_OUT_FAMILY, found=tuple(found), screen=in_bin,
                                                            check=check))


# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Study:
    """Positional heads measured on one model: gate, screen, ablation of the top offset heads, held-out text."""

    model: str
    gate: stats.GateResult
    screen: PositionalScreen
    ablation: ProseAblation | None  # None when the gate failed or no offset head passed
    held_out: HeldOutText | None = None

    def checks(self) -> dict[str, controls.CausalCheck]:
        """The causal checks that ran, by what they measured (for `plots.effect_vs_draws`)."""
        found: dict[str, controls.CausalCheck | None] = {}
        if self.ablation is not None:
            found = {"prose": self.ablation.prose, "random tokens": self.ablation.random,
                     "prose minus random tokens": self.ablation.specific}
        if self.held_out is not None:
            found["held-out prose"] = self.held_out.check.check
        return {name: check for name, check in found.items() if check is not None}

    def row(self) -> dict[str, object]:
        """One row of the findings table."""
        passing = self.screen.passing
        bins = ", ".join(f"{name}: {n}" for name, n in self.screen.by_bin().items() if n)
        row: dict[str, object] = {
            "model": self.model,
            "behaviour gate": "pass" if self.gate.passed else "fail",
            "positional heads": f"{len(passing)} of {self.screen.scores.numel()} ({bins or 'none'})",
            "top offset heads (score)": heads.labels(self.screen.offset_heads(3), self.screen.scores, signed=False),
        }
        if self.ablation is None:
            return row | {"ablation on prose": "not run"}
        row |= {"ablation on prose (nats)": str(self.ablation.prose.top),
                "random-k on prose (from all heads)": self.ablation.prose.draws_summary()}
        if self.ablation.specific is not None:
            row["prose minus random tokens (p)"] = (f"{self.ablation.specific.top} "
                                                    f"(p = {self.ablation.specific.p_value:.3f})")
        if self.held_out is not None:
            held = self.held_out
            row["held-out: keep their bin >= 0.9"] = f"{len(held.kept())} of {len(held.check.found)}"
            if held.check.check is not None:
                row["held-out ablation (p)"] = f"{held.check.check.top} (p = {held.check.check.p_value:.3f})"
        return row


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Gate, screen, ablation of the top offset heads and the held-out check, as the positional page runs them.

    Seeds: the gate `seed`, the screen `seed + 10`, the ablation `seed + 20`, the held-out text `seed + 40`.
    """
    name = models.spec_of(model).name
    gate = prose_gate(model, windows=sizes.gate_windows, length=sizes.gate_len, seed=seed)
    found = screen(model, prompts=sizes.screen_prompts, length=sizes.screen_len, seed=seed + 10)
    top = found.offset_heads(sizes.top_k)
    if not gate.passed or not top:
        return Study(model=name, gate=gate, screen=found, ablation=None)
    ablation = prose_ablation(model, top, prompts=sizes.ablation_prompts, length=sizes.ablation_len,
                              n_random=sizes.n_random, seed=seed + 20)
    held = held_out(model, found, top, sizes=sizes, seed=seed + 40)
    return Study(model=name, gate=gate, screen=found, ablation=ablation, held_out=held)
