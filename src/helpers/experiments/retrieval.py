"""Retrieval heads (Wu et al. 2024): heads that copy a needle from a haystack into the answer, token by token.

The page's steps, in order, each one function here:

- `read_decoding`: one teacher-forced pass over prompt + answer gives the greedy predictions and, at the queries
  that make them, every head's attention row. When the model recalls the needle exactly (every teacher-forced
  argmax is the code's token), greedy decoding would have produced the same tokens from the same rows: the
  attention is causal, so step t sees only the prompt and the tokens before t. `greedy_decode` is the slow
  step-by-step version the unit tests compare it with.
- `needle_gate`: per-token recall (top-1 over the whole vocabulary) on needle prompts against the same prompts
  with another prompt's code in the needle; the exact-match rate beside it.
- `screen`: `needles.retrieval_scores` of every head over the recalled runs; the control is the same rule one key
  back (`needles.shifted_control`). A head passes at >= `THRESHOLD` and >= 2x its control (`screens.Screen`).
- `recall_ablation`: mean-ablate the top-k heads, and k heads drawn from all heads N times, and measure the
  exact-match rate and the per-token accuracy of recall.
- `held_out`: the score and the ablation again on the ``"digits"`` family (a meeting code in the language
  reference).

`study(model, *, sizes, seed)` runs them all, as the page does, for the comparison model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers import capture, controls, heads, heldout, interventions, models, needles, readout, stats, store
from helpers.experiments import induction
from helpers.heads import Head
from helpers.screens import Screen

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

THRESHOLD = 0.1  # Wu et al.'s cut-off for a retrieval head (the paper's figures; not stated as a rule)
RATIO = 2.0  # and at least twice the head's own control score


@dataclass(frozen=True)
class Sizes:
    """How many prompts, tokens and draws each step uses (the notebook's parameters cell sets these)."""

    screen_prompts: int = 24  # needle prompts: the gate's metric and the screen's runs (the page's)
    control_prompts: int = 8  # prompts with another prompt's code in the needle (the gate's null)
    length: int = 150  # haystack tokens
    top_k: int = 5
    ablation_prompts: int = 4
    n_random: int = 20
    heldout_prompts: int = 12  # 0 skips the held-out family
    heldout_draws: int = 10  # fresh draws for the held-out ablation; 0 skips it
    induction_prompts: int = 10  # the induction page's screen, for the overlap
    induction_half_len: int = 20


# --------------------------------------------------------------------------------------------------
# Reading decoding steps.


@dataclass(frozen=True)
class DecodingRead:
    """What the decoding steps of a batch saw and said.

    Attributes:
        predicted: ``[batch, step]`` the argmax (whole vocabulary) at each step's query.
        rows: ``[layer, batch, head, step, key]`` each head's attention row at each step's query.
        tokens: ``[batch, key]`` the tokens at the keys (prompt, then the answer fed back).
    """

    predicted: Int[Tensor, "batch step"]
    rows: Float[Tensor, "layer batch head step key"]
    tokens: Int[Tensor, "batch key"]

    @property
    def query_tokens(self) -> Int[Tensor, "batch step"]:
        """The token each step's query reads (the last prompt token, then the fed-back answer)."""
        steps = self.predicted.shape[1]
        return self.tokens[:, -steps:]


@torch.no_grad()
def read_steps(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], steps: int) -> DecodingRead:
    """The argmax and every head's attention row at the last `steps` queries of `tokens`, from one pass that stops
    at the final norm (only those rows are kept: a 180-token batch of 50 would hold 1.4 GB of patterns)."""
    capture.check_tokens(model, tokens)
    if not 1 <= steps <= tokens.shape[1]:
        raise ValueError(f"steps must lie in [1, {tokens.shape[1]}]; got {steps}")
    kept: dict[str, Tensor] = {}

    def keep(name: str, pattern: bool):
        def hook(activation: Tensor, hook=None) -> None:
            kept[name] = (activation[:, :, -steps:] if pattern else activation[:, -steps:]).detach().float().cpu()
        return hook

    n_layers = model.cfg.n_layers
    hooks = [(capture.pattern_hook(layer), keep(capture.pattern_hook(layer), True)) for layer in range(n_layers)]
    capture.run_until(model, tokens, [*hooks, (capture.FINAL_OUT, keep("final", False))], stop_at=capture.FINAL_OUT)
    predicted = readout.logits(model, kept["final"]).argmax(dim=-1).cpu()
    rows = torch.stack([kept[capture.pattern_hook(layer)] for layer in range(n_layers)])
    return DecodingRead(predicted=predicted, rows=rows, tokens=tokens.cpu())


def read_decoding(model: TransformerBridge, prompts: needles.Needles, *, max_rows: int = 8) -> DecodingRead:
    """`read_steps` over prompt + answer without its last token, `max_rows` prompts per pass (on 2 CPU cores a
    pass of 44 prompts of 176 tokens took 24 s, four passes of 11 took 9 s: attention memory, not arithmetic)."""
    reads = [read_steps(model, chunk, prompts.n_answer) for chunk in prompts.teacher_forced().split(max_rows)]
    return DecodingRead(predicted=torch.cat([r.predicted for r in reads]), rows=torch.cat([r.rows for r in reads], 1),
                        tokens=torch.cat([r.tokens for r in reads]))


@torch.no_grad()
def greedy_decode(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], steps: int) -> DecodingRead:
    """Greedy decoding, one full pass per step (no cache), keeping each step's attention row: the slow reference
    for `read_decoding`. ``tokens`` of the result are the prompt and the generated tokens but the last."""
    generated, rows = [], []
    current = tokens
    for _ in range(steps):
        read = read_steps(model, current, 1)
        generated.append(read.predicted)
        rows.append(read.rows)
        current = torch.cat([current, read.predicted.to(current.device)], dim=1)
    keys = tokens.shape[1] + steps - 1
    padded = [torch.nn.functional.pad(row, (0, keys - row.shape[-1])) for row in rows]  # later steps see more keys
    return DecodingRead(predicted=torch.cat(generated, dim=1), rows=torch.cat(padded, dim=3),
                        tokens=current[:, :keys].cpu())


# --------------------------------------------------------------------------------------------------
# Gate and screen.


@dataclass(frozen=True)
class NeedleRun:
    """Needle prompts, what the model said on them, and the gate that compares them with swapped codes."""

    prompts: needles.Needles
    read: DecodingRead
    exact: Tensor  # [batch] bool: the code recalled exactly (so greedy decoding says the same)
    accuracy: Float[Tensor, "batch"]  # per-token recall under teacher forcing, top-1 over the whole vocabulary
    gate: stats.GateResult

    @property
    def exact_rate(self) -> stats.Estimate:
        return stats.bootstrap_ci(self.exact.float())


def needle_gate(model: TransformerBridge, *, prompts: int, controls_n: int, length: int, seed: int,
                family: str = "passphrase") -> NeedleRun:
    """Per-token recall of the code on `prompts` needle prompts against `controls_n` prompts whose needle holds
    another prompt's code (unpaired permutation test); passes when p < 0.01 and the interval of the gap clears 0.5.

    The run is kept in the results store: the retrieval page, its comparison study and the global-retrieval page
    read the same screen, so it is computed once.
    """
    return store.cached("needle-run", lambda: _needle_gate(model, prompts=prompts, controls_n=controls_n,
                                                           length=length, seed=seed, family=family),
                        model=models.spec_of(model).name, weights=store.weights_digest(model), prompts=prompts,
                        controls_n=controls_n, length=length, seed=seed, family=family)


def _needle_gate(model: TransformerBridge, *, prompts: int, controls_n: int, length: int, seed: int,
                 family: str) -> NeedleRun:
    batch = needles.needle_prompts(model, batch=prompts, length=length, seed=seed, family=family)
    read = read_decoding(model, batch)
    exact, accuracy = needles.recall(read.predicted, batch.answers)
    control = needles.needle_prompts(model, batch=controls_n, length=length, seed=seed + 1, family=family)
    swapped = torch.cat([needles.swapped_codes(control), control.answers[:, :-1]], dim=1)
    predicted = torch.cat([read_steps(model, chunk, control.n_answer).predicted for chunk in swapped.split(8)])
    _, control_accuracy = needles.recall(predicted, control.answers)
    gate = stats.behaviour_gate(accuracy, control_accuracy, paired=False, min_effect=0.5, seed=seed,
                                name="needle recall", metric_name="per-token recall of the code",
                                null_name="with another prompt's code in the needle")
    return NeedleRun(prompts=batch, read=read, exact=exact, accuracy=accuracy, gate=gate)


def screen_scores(run: NeedleRun) -> tuple[Float[Tensor, "layer head"], Float[Tensor, "layer head"]]:
    """Retrieval score and its control for every head, over the runs that recalled the code exactly."""
    needle = run.prompts.needle_mask(run.read.tokens.shape[1])
    hits = needles.retrieval_hits(run.read.rows, run.read.tokens, needle, run.read.predicted)
    shifted, own = needles.shifted_control(needle, run.read.query_tokens)
    control = needles.retrieval_hits(run.read.rows, run.read.tokens, shifted, own)
    return needles.retrieval_scores(hits, run.exact), needles.retrieval_scores(control, run.exact)


def screen(run: NeedleRun, *, threshold: float = THRESHOLD) -> Screen:
    """The retrieval screen: every head's score, its control, and the pass rule (>= threshold, >= 2x control)."""
    score, control = screen_scores(run)
    return Screen(family="retrieval", scores=score, null=control, threshold=threshold, baseline=0.0, ratio=RATIO)


# --------------------------------------------------------------------------------------------------
# Causal check: recall with heads mean-ablated.


def correct_tokens_metric(answers: Int[Tensor, "batch n"]):
    """Metric for `interventions.ablated_metric` over the answer span: how many of the code's tokens are the
    argmax (0..n) per row; rows are the prompts repeated once per head set."""
    def metric(logits: Float[Tensor, "row n vocab"], tokens: Int[Tensor, "row pos"]) -> Float[Tensor, "row"]:
        rows = torch.arange(len(tokens)) % len(answers)
        return (logits.argmax(-1).cpu() == answers[rows]).float().sum(dim=1)
    return metric


@dataclass(frozen=True)
class RecallAblation:
    """One mean ablation of the found heads and of each drawn set: the change of the exact-match rate and of the
    per-token accuracy of recall (both drops; `larger_is_stronger` is False)."""

    exact: controls.CausalCheck
    accuracy: controls.CausalCheck

    def summary(self) -> str:
        return f"exact match: {self.exact.summary()}\nper-token accuracy: {self.accuracy.summary()}"


def recall_ablation(model: TransformerBridge, found: Sequence[Head], *, prompts: int, length: int, n_random: int,
                    seed: int, family: str = "passphrase") -> RecallAblation:
    """Mean-ablate `found` and `n_random` sets of as many heads drawn from all heads (seeded) on needle prompts.

    Mean ablation (each head's output replaced by its mean over other needle prompts of the family, seed + 1)
    removes what a head says about *this* prompt's needle and keeps what it says on every such prompt; zero
    ablation would also remove that constant part, which the model's later layers expect.
    """
    found = [tuple(head) for head in found]
    if not found:
        raise ValueError("found is empty: pass the retrieval heads to ablate, e.g. screen.top(5)")
    batch = needles.needle_prompts(model, batch=prompts, length=length, seed=seed, family=family)
    reference = needles.needle_prompts(model, batch=prompts, length=length, seed=seed + 1, family=family)
    means = capture.mean_head_outputs(model, reference.teacher_forced())
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(found), n_random, seed=seed)
    tokens = batch.teacher_forced()
    span = slice(batch.prompt_len - 1, tokens.shape[1])
    correct = interventions.ablated_metric(model, tokens, [[], found, *draws], correct_tokens_metric(batch.answers),
                                           mode="mean", means=means, positions=span, max_rows=8)  # [set, prompt]
    null = f"{len(found)} heads drawn from all {model.cfg.n_layers * model.cfg.n_heads}"

    def check(values: Tensor, name: str) -> controls.CausalCheck:
        return controls.check_from_values(values, found, metric_name=name, mode="mean-ablated", null=null,
                                          seed=seed, larger_is_stronger=False)

    return RecallAblation(exact=check((correct == batch.n_answer).float(), "exact-match rate"),
                          accuracy=check(correct / batch.n_answer, "per-token accuracy"))


# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldOutNeedles:
    """The held-out family: its own recall, the found heads' ranks by its retrieval score, its ablation."""

    run: NeedleRun
    check: heldout.HeldOut
    ablation: RecallAblation | None


def held_out(model: TransformerBridge, found: Sequence[Head], *, sizes: Sizes, seed: int) -> HeldOutNeedles:
    """Gate, retrieval score and (with draws) the ablation of `found` on the ``"digits"`` family."""
    run = needle_gate(model, prompts=sizes.heldout_prompts, controls_n=max(2, sizes.heldout_prompts // 2),
                      length=sizes.length, seed=seed, family="digits")
    score, _ = screen_scores(run)
    ablation = None
    if sizes.heldout_draws > 0:
        ablation = recall_ablation(model, found, prompts=sizes.ablation_prompts, length=sizes.length,
                                   n_random=sizes.heldout_draws, seed=seed + 1, family="digits")
    check = heldout.HeldOut(needles.FAMILY_NAMES["digits"], found=tuple(found), screen=score,
                            check=ablation.exact if ablation else None)
    return HeldOutNeedles(run=run, check=check, ablation=ablation)


def share_above(scores: Float[Tensor, "layer head"], threshold: float = THRESHOLD) -> float:
    """Share of all heads whose retrieval score is above `threshold` (Wu et al.: under 5 % at 0.1)."""
    return float((scores > threshold).float().mean())


@dataclass(frozen=True)
class Study:
    """Retrieval heads measured on one model: gate, screen, recall ablation, held-out family, induction overlap."""

    model: str
    run: NeedleRun
    screen: Screen | None  # None when no run recalled the code (the score counts recalled runs only)
    ablation: RecallAblation | None
    held_out: HeldOutNeedles | None = None
    induction_heads: tuple[Head, ...] = ()

    @property
    def overlap(self) -> list[Head]:
        """Top-k retrieval heads that also pass the induction page's rule."""
        if self.screen is None:
            return []
        k = len(self.ablation.exact.heads) if self.ablation else 5
        return heldout.overlap(self.screen.top(k), self.induction_heads)

    def row(self) -> dict[str, object]:
        """One row of the findings table."""
        row: dict[str, object] = {
            "model": self.model,
            "behaviour gate": "pass" if self.run.gate.passed else "fail",
            "exact recall": str(self.run.exact_rate),
        }
        if self.screen is not None:
            row |= {"heads >= 0.1 and >= 2x control": f"{len(self.screen.passing)} of {self.screen.scores.numel()}",
                    "top heads (score)": heads.labels(self.screen.top(5), self.screen.scores, signed=False)}
        if self.ablation is None or self.screen is None:
            return row | {"ablation": "not run"}
        row |= {"exact-match change, top-k": str(self.ablation.exact.top),
                "random-k (from all heads)": self.ablation.exact.draws_summary(),
                "in the induction rule": heads.labels(self.overlap) or "none"}
        if self.held_out is not None:
            row |= {"held-out exact recall": str(self.held_out.run.exact_rate),
                    "held-out ranks": self.held_out.check.ranks_text()}
            if self.held_out.ablation is not None:
                row["held-out exact-match change (p)"] = (f"{self.held_out.ablation.exact.top} "
                                                          f"(p = {self.held_out.ablation.exact.p_value:.3f})")
        return row


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Gate, screen, ablation of the top-k heads, held-out family and induction overlap, as the page runs them.

    Seeds: the gate and screen `seed`, the ablation `seed + 20`, the held-out family `seed + 40`, the induction
    screen `seed + 10` (the induction page's). About 35 s per model on 2 CPU cores, and the global-retrieval
    experiment reads the same screen, so the result is kept in the results store.
    """
    return store.cached("retrieval-study", lambda: _study(model, sizes=sizes, seed=seed),
                        model=models.spec_of(model).name, weights=store.weights_digest(model), sizes=sizes, seed=seed)


def _study(model: TransformerBridge, *, sizes: Sizes, seed: int) -> Study:
    name = models.spec_of(model).name
    run = needle_gate(model, prompts=sizes.screen_prompts, controls_n=sizes.control_prompts, length=sizes.length,
                      seed=seed)
    if not run.gate.passed or not run.exact.any():
        return Study(model=name, run=run, screen=screen(run) if run.exact.any() else None, ablation=None)
    found = screen(run)
    top = found.top(sizes.top_k)
    ablation = recall_ablation(model, top, prompts=sizes.ablation_prompts, length=sizes.length,
                               n_random=sizes.n_random, seed=seed + 20)
    held = held_out(model, top, sizes=sizes, seed=seed + 40) if sizes.heldout_prompts > 0 else None
    inductive = induction.screen(model, prompts=sizes.induction_prompts, half_len=sizes.induction_half_len,
                                 seed=seed + 10).passing
    return Study(model=name, run=run, screen=found, ablation=ablation, held_out=held,
                 induction_heads=tuple(inductive))
