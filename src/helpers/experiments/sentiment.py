"""Sentiment summarizers: heads that carry the sentiment of a review's words onto the summary positions after them
(the comma, the period, "Conclusion:"), read along a linear sentiment direction (Tigges et al. 2023).

The page's steps, in order, each one function here:

- `gate`: on ToyMovieReview prompts (`helpers.reviews`) the logit difference between positive and negative
  answer words at END (" great" - " terrible", averaged over the pairs that are single tokens) has the sign of
  the review, on most prompts and on average.
- `fit_direction`: the sentiment direction d of every layer, the mean difference of the residual stream at the
  adjective between positive and negative prompts, fitted on half of the adjectives; the held-out half must
  separate along d (`Direction.accuracy`), and random directions give the chance level.
- `screen`: every head's output at the summary positions projected on the middle layer's d, positive minus
  negative prompts (`Screen.scores`, the largest over the summary positions). The control a head can fail: the
  same score on `RANDOM_DIRECTIONS` random unit directions (`Screen.null`); a head passes when its score on d is
  above the 99th percentile of its own random-direction scores and at least `MIN_SHIFT` of the largest head's.
  Neutral reviews show where a head sits when no word carries sentiment.
- `patching_check`: patch the top-k heads' outputs from the sentiment-flipped twin of each prompt and measure
  the drop of the signed logit difference, against k heads drawn from all heads.
- `direction_ablation`: mean-ablate d in the residual stream (every layer's own d: its component set to the
  batch mean) at every position, at the summary positions only, or at the adjective and verb only, against
  random directions ablated the same way.
- `held_out`: the screen and the patching check again on another frame (`reviews.FILM_VERDICT`).

`study(model, *, sizes, seed)` runs them all, as the page does, for the comparison model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers import capture, controls, heads, heldout, models, patching, readout, reviews, stats, store, tasks
from helpers.attribution import norm_gain
from helpers.heads import Head

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

RANDOM_DIRECTIONS = 200  # per-head null: the same score on this many random unit directions
NULL_QUANTILE = 0.99  # pass rule: above this quantile of the head's own random-direction scores ...
MIN_SHIFT = 0.25  # ... and at least this share of the strongest head's score (a visible writer, not a whisper)
HELD_OUT_FAMILY = 'another frame: "The film was ADJ and I VERB every minute of it. Overall, the film was"'


@dataclass(frozen=True)
class Sizes:
    """How many prompts and draws each step uses (the notebook's parameters cell sets these)."""

    gate_pairs: int = 40  # positive + negative prompts: 2 x this
    direction_pairs: int = 40  # per half of the adjectives (fit, test)
    screen_pairs: int = 24
    neutral_prompts: int = 24
    random_directions: int = RANDOM_DIRECTIONS
    top_k: int = 3
    check_pairs: int = 4  # prompts for the causal checks: 2 x this (the effects are large and tight)
    n_random: int = 30
    ablation_directions: int = 19  # random directions for the directional-ablation control (p >= 1/20)
    heldout_pairs: int = 12
    heldout_draws: int = 20  # 0 skips the held-out patching check


# --------------------------------------------------------------------------------------------------
# One read: residual, head outputs and attention rows at chosen positions, and the final norm at END.


@dataclass(frozen=True)
class Read:
    """What one pass leaves at positions `where` (on the CPU).

    ``resid``: ``[layer, batch, where, d_model]`` after each block; ``z``: ``[layer, batch, where, head, d_head]``;
    ``attention``: ``[layer, batch, head, where, key]`` the attention rows of those queries; ``final``:
    ``[batch, d_model]`` the final norm's output at END.
    """

    where: tuple[int, ...]
    resid: Float[Tensor, "layer batch where d_model"]
    z: Float[Tensor, "layer batch where head d_head"]
    attention: Float[Tensor, "layer batch head where key"]
    final: Float[Tensor, "batch d_model"]


@torch.no_grad()
def read(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], where: Sequence[int]) -> Read:
    """Residuals, head outputs and attention rows at `where` for every layer, from one pass that stops at the
    final norm (only END's row of it is kept): a few MB instead of a full cache."""
    capture.check_tokens(model, tokens)
    index = list(where)
    store: dict[tuple[str, int], Tensor] = {}

    def keep(kind: str, layer: int):
        def hook(activation: Tensor, hook=None) -> None:
            picked = activation[:, :, index] if kind == "pattern" else activation[:, index]
            store[(kind, layer)] = picked.detach().float().cpu()
        return hook

    def keep_final(activation: Tensor, hook=None) -> None:
        store[("final", 0)] = activation[:, -1].detach().float().cpu()

    n_layers = model.cfg.n_layers
    hooks = []
    for layer in range(n_layers):
        hooks += [(capture.resid_post_hook(layer), keep("resid", layer)), (capture.z_hook(layer), keep("z", layer)),
                  (capture.pattern_hook(layer), keep("pattern", layer))]
    capture.run_until(model, tokens, [*hooks, (capture.FINAL_OUT, keep_final)], stop_at=capture.FINAL_OUT)

    def stack(kind: str) -> Tensor:
        return torch.stack([store[(kind, layer)] for layer in range(n_layers)])

    return Read(tuple(index), stack("resid"), stack("z"), stack("pattern"), store[("final", 0)])


def sentiment_difference(model: TransformerBridge, final: Float[Tensor, "... d_model"],
                         pairs: Sequence[tuple[str, str]] = reviews.ANSWER_PAIRS) -> Float[Tensor, "..."]:
    """Mean logit of the positive answer words minus mean logit of the negative ones (`reviews.answer_ids`;
    the summary-reader page passes its mood words as `pairs`)."""
    good, bad = reviews.answer_ids(model, pairs)
    logits = readout.logits(model, final, torch.cat([good, bad]))  # [..., 2 * pairs]
    return logits[..., :len(good)].mean(-1) - logits[..., len(good):].mean(-1)


# --------------------------------------------------------------------------------------------------
# Behaviour gate: the answer's logit difference has the review's sign.


@dataclass(frozen=True)
class Gate:
    """The signed logit difference (positive when the model leans to the review's sentiment) per prompt."""

    signed: Float[Tensor, "batch"]
    strict: float  # share of prompts whose top-1 next token over the whole vocabulary is a right-valence word
    test: stats.GateResult

    @property
    def correct(self) -> float:
        return float((self.signed > 0).float().mean())

    @property
    def passed(self) -> bool:
        return self.test.passed and self.correct >= 0.8

    def summary(self) -> str:
        return (f"{'PASS' if self.passed else 'FAIL'}: the answer's logit difference has the review's sign on "
                f"{self.correct:.0%} of {len(self.signed)} prompts (rule: >= 80 % and p < 0.01); mean "
                f"{self.test.difference}; top-1 word of the right valence on {self.strict:.0%}")


def right_valence_ids(model: TransformerBridge, words: reviews.Lexicon) -> tuple[set[int], set[int]]:
    """Token ids of positive and of negative words (answer words and the lexicon's adjectives)."""
    good, bad = reviews.answer_ids(model)
    positive = set(good.tolist()) | {tasks.single_token_id(model, " " + w) for w in words.positive_adjectives}
    negative = set(bad.tolist()) | {tasks.single_token_id(model, " " + w) for w in words.negative_adjectives}
    return positive, negative


def gate(model: TransformerBridge, *, pairs: int, seed: int) -> Gate:
    """Signed logit difference on `pairs` positive and `pairs` negative reviews, tested against 0 (sign-flip test;
    passes when p < 0.01 and its interval clears 0, and at least 80 % of prompts have the right sign). The strict
    form: how often the model's own top-1 token is a word of the review's valence."""
    data = reviews.review_pairs(model, n=pairs, seed=seed)
    final = read(model, data.tokens, [data.positions["end"]]).final
    signed = data.sentiment * sentiment_difference(model, final)
    top1 = readout.logits(model, final).argmax(-1).tolist()
    positive, negative = right_valence_ids(model, reviews.lexicon(model))
    strict = sum((t in positive) if s > 0 else (t in negative) for t, s in zip(top1, data.sentiment.tolist()))
    test = stats.behaviour_gate(signed, torch.zeros_like(signed), paired=True, seed=seed, name="sentiment",
                                metric_name="signed logit difference at END", null_name="at zero")
    return Gate(signed=signed, strict=strict / len(top1), test=test)


# --------------------------------------------------------------------------------------------------
# The sentiment direction: mean difference at the adjective, tested on adjectives it never saw.


def mean_difference(acts: Float[Tensor, "batch d_model"], sentiment: Int[Tensor, "batch"]) -> Float[Tensor, "d_model"]:
    """Mean of the positive rows minus mean of the negative rows (rows with sentiment 0 are ignored).

    Raises:
        ValueError: if either class is empty.
    """
    positive, negative = sentiment > 0, sentiment < 0
    if not positive.any() or not negative.any():
        raise ValueError(f"need positive and negative rows; got {int(positive.sum())} and {int(negative.sum())}")
    return acts[positive].mean(0) - acts[negative].mean(0)


def separation_accuracy(acts: Float[Tensor, "batch d_model"], sentiment: Int[Tensor, "batch"],
                        direction: Float[Tensor, "d_model"], midpoint: float) -> float:
    """Share of rows on the side of `midpoint` (along `direction`) that their sentiment predicts."""
    side = (acts @ direction - midpoint) > 0
    return float((side == (sentiment > 0)).float().mean())


@dataclass(frozen=True)
class Direction:
    """Per-layer sentiment directions and how well the middle layer's separates held-out adjectives.

    ``directions``: ``[layer, d_model]`` unit vectors; ``layer``: the middle layer the screen reads;
    ``accuracy``: held-out adjectives classified by the side of the fitted midpoint along d at ``layer``;
    ``random_accuracy``: the same with random unit directions (their own midpoints), the chance level.
    ``neutral_position``: where neutral adjectives fall along d between the negative (0) and positive (1) means.
    """

    directions: Float[Tensor, "layer d_model"]
    layer: int
    accuracy: float
    random_accuracy: Float[Tensor, "draw"]
    neutral_position: float
    fit_words: tuple[str, ...]
    test_words: tuple[str, ...]

    @property
    def d(self) -> Float[Tensor, "d_model"]:
        return self.directions[self.layer]

    def summary(self) -> str:
        return (f"sentiment direction at layer {self.layer}: held-out adjectives on the right side on "
                f"{self.accuracy:.0%} (random directions: median {self.random_accuracy.median():.0%}, best "
                f"{self.random_accuracy.max():.0%} of {len(self.random_accuracy)}); neutral adjectives at "
                f"{self.neutral_position:.2f} of the way from negative to positive")


def random_units(n: int, d_model: int, *, seed: int) -> Float[Tensor, "n d_model"]:
    """`n` random unit vectors (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(n, d_model, generator=generator)
    return vectors / vectors.norm(dim=-1, keepdim=True)


def fit_direction(model: TransformerBridge, *, pairs: int, seed: int, n_random: int = RANDOM_DIRECTIONS) -> Direction:
    """Fit d on the residual at the adjective for prompts with one half of the adjectives, test on the other half."""
    fit_words, test_words = reviews.lexicon(model).halves(seed)
    fit = reviews.review_pairs(model, n=pairs, seed=seed, words=fit_words)
    test = reviews.review_pairs(model, n=pairs, seed=seed + 1, words=test_words)
    neutral = reviews.neutral_reviews(model, n=pairs, seed=seed + 2)
    adj = fit.positions["adj"]
    fit_resid = read(model, fit.tokens, [adj]).resid[:, :, 0]  # [layer, batch, d_model]
    test_resid = read(model, test.tokens, [adj]).resid[:, :, 0]
    neutral_resid = read(model, neutral.tokens, [adj]).resid[:, :, 0]
    raw = torch.stack([mean_difference(acts, fit.sentiment) for acts in fit_resid])  # [layer, d_model]
    directions = raw / raw.norm(dim=-1, keepdim=True)
    layer = model.cfg.n_layers // 2
    acts, d = fit_resid[layer], directions[layer]

    def midpoint(direction: Tensor) -> float:
        return float((acts[fit.sentiment > 0] @ direction).mean() + (acts[fit.sentiment < 0] @ direction).mean()) / 2

    accuracy = separation_accuracy(test_resid[layer], test.sentiment, d, midpoint(d))
    randoms = random_units(n_random, acts.shape[-1], seed=seed + 3)
    random_accuracy = torch.tensor([separation_accuracy(test_resid[layer], test.sentiment, r, midpoint(r))
                                    for r in randoms])
    low, high = (float((acts[fit.sentiment == s] @ d).mean()) for s in (-1, 1))
    neutral_position = (float((neutral_resid[layer] @ d).mean()) - low) / (high - low)
    return Direction(directions, layer, accuracy, random_accuracy, neutral_position,
                     tuple(fit_words.positive_adjectives + fit_words.negative_adjectives),
                     tuple(test_words.positive_adjectives + test_words.negative_adjectives))


# --------------------------------------------------------------------------------------------------
# Screen: each head's output at the summary positions along d, positive minus negative.


def head_projections(model: TransformerBridge, run: Read, directions: Float[Tensor, "n d_model"]
                     ) -> Float[Tensor, "layer batch where head n"]:
    """Each head's write into the residual stream, ``z @ W_O``, projected on each of `directions`.

    Gemma normalises the attention block's output before adding it (``ln1_post``): its gain is folded into the
    directions and its scale, computed from the heads' summed output at that position, divides the projection,
    so the number is what the head adds to the residual stream in both models.
    """
    w_o = model.W_O.float().cpu()  # [layer, head, d_head, d_model]; the bridge restacks on each access
    out = []
    for layer in range(model.cfg.n_layers):
        z = run.z[layer]  # [batch, where, head, d_head]
        block = model.blocks[layer]
        read_dirs = directions
        if hasattr(block, "ln1_post"):
            read_dirs = directions * norm_gain(block.ln1_post, model.cfg.d_model)
        values = torch.einsum("bwhe,hem,nm->bwhn", z, w_o[layer], read_dirs)
        if hasattr(block, "ln1_post"):
            summed = torch.einsum("bwhe,hem->bwm", z, w_o[layer])  # the attention block's output before its norm
            eps = float(getattr(model.cfg, "eps", 1e-6))
            scale = (summed.pow(2).mean(-1) + eps).sqrt()  # [batch, where]
            values = values / scale[:, :, None, None]
        out.append(values)
    return torch.stack(out)


def shift_scores(projections: Float[Tensor, "layer batch where head n"], sentiment: Int[Tensor, "batch"]
                 ) -> Float[Tensor, "layer head where n"]:
    """Mean projection on positive prompts minus mean on negative ones, per head, position and direction."""
    positive, negative = sentiment > 0, sentiment < 0
    difference = projections[:, positive].mean(1) - projections[:, negative].mean(1)  # [layer, where, head, n]
    return difference.permute(0, 2, 1, 3)


@dataclass(frozen=True)
class Screen:
    """Every head's sentiment shift at the summary positions along d, and along random directions.

    ``shift``: ``[layer, head, where]`` along d at each summary position (`positions` names them);
    ``null``: ``[layer, head, draw]`` each head's score along random unit directions; ``neutral``:
    ``[layer, head, where]`` where neutral reviews fall between negative (0) and positive (1) prompts;
    ``to_words``: ``[layer, head, where]`` attention from each summary position to the adjective and the verb
    (where visible), positive and negative prompts together; ``uniform``: ``[where]`` the same share for
    uniform attention; ``end_shift`` / ``end_to_words``: the same shift and attention at END, read beside the
    score (a head that writes sentiment only at END moves it to the answer, not to a summary position).
    """

    positions: tuple[str, ...]
    shift: Float[Tensor, "layer head where"]
    null: Float[Tensor, "layer head draw"]
    neutral: Float[Tensor, "layer head where"]
    to_words: Float[Tensor, "layer head where"]
    uniform: Float[Tensor, "where"]
    end_shift: Float[Tensor, "layer head"]
    end_to_words: Float[Tensor, "layer head"]

    @property
    def scores(self) -> Float[Tensor, "layer head"]:
        """The pre-registered score: the largest shift along d over the summary positions."""
        return self.shift.max(dim=-1).values

    @property
    def best_position(self) -> Int[Tensor, "layer head"]:
        return self.shift.argmax(dim=-1)

    @property
    def threshold(self) -> Float[Tensor, "layer head"]:
        """Each head's own bar: the 99th percentile of its random-direction scores."""
        return torch.quantile(self.null, NULL_QUANTILE, dim=-1)

    @property
    def passing(self) -> list[Head]:
        scores = self.scores
        rule = (scores > self.threshold) & (scores >= MIN_SHIFT * scores.max())
        return heads.top(scores, where=rule)

    def top(self, k: int) -> list[Head]:
        return heads.top(self.scores, k)

    def random_rank_share(self) -> float:
        """Share of heads whose score on d beats the 99th percentile of their random directions: about 1 % if
        d were no better than a random direction for every head."""
        return float((self.scores > self.threshold).float().mean())

    def describe(self, head: Head) -> str:
        where = int(self.best_position[head])
        return (f"{heads.label(head)}: shift {float(self.scores[head]):+.2f} at {self.positions[where]!r} "
                f"(own random-direction bar {float(self.threshold[head]):.2f}); attention to ADJ/VERB "
                f"{float(self.to_words[head][where]):.2f} (uniform {float(self.uniform[where]):.2f}); neutral at "
                f"{float(self.neutral[head][where]):.2f}; at END shift {float(self.end_shift[head]):+.2f}")

    def summary(self) -> str:
        found = self.passing
        return (f"{len(found)} of {self.scores.numel()} heads pass (shift along d above their own 99th percentile "
                f"of {self.null.shape[-1]} random directions and >= {MIN_SHIFT:.0%} of the strongest); top: "
                f"{heads.labels(found[:5], self.scores)}")


def word_attention(run: Read, data: reviews.Reviews
                   ) -> tuple[Float[Tensor, "layer head where"], Float[Tensor, "where"]]:
    """Attention from each read position to the adjective and the verb (those before it), and uniform's share."""
    keys = [data.positions["adj"], data.positions["verb"]]
    shares, uniform = [], []
    for i, query in enumerate(run.where):
        visible = [k for k in keys if k <= query]
        shares.append(run.attention[:, :, :, i, visible].sum(-1).mean(1))  # [layer, head]
        uniform.append(len(visible) / (query + 1))
    return torch.stack(shares, dim=-1), torch.tensor(uniform)


def screen(model: TransformerBridge, direction: Float[Tensor, "d_model"], *, pairs: int, neutral: int, seed: int,
           n_random: int = RANDOM_DIRECTIONS, template: reviews.Template = reviews.MOVIE_REVIEW) -> Screen:
    """Shift of every head at the summary positions of `template` along `direction` (unit) and along `n_random`
    random unit directions (seeded); neutral reviews of the same frame placed between the two valences."""
    data = reviews.review_pairs(model, n=pairs, seed=seed, template=template)
    calm = reviews.neutral_reviews(model, n=neutral, seed=seed + 1, template=template)
    where = data.summary_positions + [data.positions["end"]]  # END last: read beside the score, not in it
    run = read(model, data.tokens, where)
    directions = torch.cat([direction[None], random_units(n_random, direction.shape[0], seed=seed + 2)])
    shift = shift_scores(head_projections(model, run, directions), data.sentiment)  # [layer, head, where, 1 + n]
    along_d = head_projections(model, run, direction[None])[..., 0]  # [layer, batch, where, head]
    calm_d = head_projections(model, read(model, calm.tokens, where), direction[None])[..., 0].mean(1)
    low, high = along_d[:, data.sentiment < 0].mean(1), along_d[:, data.sentiment > 0].mean(1)
    position = ((calm_d - low) / (high - low)).permute(0, 2, 1)  # [layer, head, where]
    to_words, uniform = word_attention(run, data)
    return Screen(positions=template.summary, shift=shift[:, :, :-1, 0], null=shift[:, :, :-1, 1:].max(dim=2).values,
                  neutral=position[..., :-1], to_words=to_words[..., :-1], uniform=uniform[:-1],
                  end_shift=shift[:, :, -1, 0], end_to_words=to_words[..., -1])


# --------------------------------------------------------------------------------------------------
# Causal checks: patching from the flipped twin; directional ablation of the residual stream.


def signed_difference(model: TransformerBridge, finals: Float[Tensor, "set batch d_model"],
                      sentiment: Int[Tensor, "batch"]) -> Float[Tensor, "set batch"]:
    return sentiment * sentiment_difference(model, finals)


def patching_check(model: TransformerBridge, found: Sequence[Head], *, pairs: int, n_random: int, seed: int,
                   template: reviews.Template = reviews.MOVIE_REVIEW) -> controls.CausalCheck:
    """Patch `found` (all positions) with their outputs on each prompt's sentiment-flipped twin, and as many heads
    drawn from all heads `n_random` times; the change of the signed logit difference (a drop is the effect)."""
    found = [tuple(h) for h in found]
    if not found:
        raise ValueError("found is empty: pass the heads to patch, e.g. screen.top(3)")
    data = reviews.review_pairs(model, n=pairs, seed=seed, template=template)
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(found), n_random, seed=seed)
    source = patching.head_outputs(model, data.flipped)
    finals = patching.patched_final(model, data.tokens, source, [[], found, *draws])  # [set, batch, d_model]
    values = signed_difference(model, finals, data.sentiment)
    null = f"{len(found)} heads drawn from all {model.cfg.n_layers * model.cfg.n_heads}"
    return controls.check_from_values(values, found, metric_name="signed logit difference", mode="patched from the "
                                      "flipped review", null=null, seed=seed, larger_is_stronger=False)


def projection_out_hooks(model: TransformerBridge, directions: Float[Tensor, "row layer d_model"],
                         masks: Float[Tensor, "row pos"], batch: int) -> list:
    """Hooks that set, after every block, the residual stream's component along that layer's direction of each row
    to its mean over the row's group of `batch` prompts, at the positions its mask marks:
    x <- x - m ((x . u) - mean(x . u)) u.

    Mean rather than zero: the component's size stays what the model expects and only its variation across
    prompts (the sentiment) goes. Zeroing a random direction at every layer breaks Gemma, whose residual stream
    has a few huge coordinates, so a zero ablation's control would say nothing about the sentiment direction.
    """
    def remove(layer: int):
        def hook(activation: Tensor, hook=None) -> Tensor:
            u = directions[:, layer].to(activation.device, activation.dtype)[:, None]  # [row, 1, d_model]
            m = masks.to(activation.device, activation.dtype)  # [row, pos]
            along = (activation * u).sum(-1)  # [row, pos]
            grouped = along.reshape(-1, batch, along.shape[-1])  # [group, batch, pos]: one group per condition
            centred = (grouped - grouped.mean(1, keepdim=True)).reshape(along.shape)
            return activation - (m * centred)[..., None] * u
        return hook

    return [(capture.resid_post_hook(layer), remove(layer)) for layer in range(model.cfg.n_layers)]


@dataclass(frozen=True)
class DirectionAblation:
    """The signed logit difference with d mean-ablated at a set of positions, and with random directions.

    ``clean``: ``[batch]``; ``ablated``: condition name -> ``[batch]``; ``random``: condition name -> ``[draw]``
    the mean with a random unit direction per layer projected out instead.
    """

    clean: Float[Tensor, "batch"]
    ablated: dict[str, Tensor]
    random: dict[str, Tensor]

    def removed(self, condition: str) -> float:
        """Share of the clean signed logit difference that mean-ablating d removes (1 = all of it)."""
        return float(1 - self.ablated[condition].mean() / self.clean.mean())

    def random_removed(self, condition: str) -> Float[Tensor, "draw"]:
        return 1 - self.random[condition] / self.clean.mean()

    def p_value(self, condition: str) -> float:
        """(1 + random directions removing at least as much) / (draws + 1)."""
        as_strong = int((self.random_removed(condition) >= self.removed(condition)).sum())
        return (as_strong + 1) / (len(self.random[condition]) + 1)

    def summary(self) -> str:
        return "; ".join(f"{name}: removes {self.removed(name):.0%} (random directions: at most "
                         f"{float(self.random_removed(name).max()):.0%}, p = {self.p_value(name):.3f})"
                         for name in self.ablated)


def ablation_positions(data: reviews.Reviews) -> dict[str, list[int]]:
    """The position sets of the directional ablation: every position, the summary positions, the valenced words."""
    return {"every position": list(range(data.tokens.shape[1])), "summary positions": data.summary_positions,
            "adjective and verb": [data.positions["adj"], data.positions["verb"]]}


@torch.no_grad()
def direction_ablation(model: TransformerBridge, directions: Float[Tensor, "layer d_model"], *, pairs: int,
                       n_random: int, seed: int) -> DirectionAblation:
    """Mean-ablate every layer's d in the residual stream (`projection_out_hooks`) at each position set of
    `ablation_positions`, and `n_random` random unit directions per layer instead, all rows in one pass."""
    data = reviews.review_pairs(model, n=pairs, seed=seed)
    batch, length = data.tokens.shape
    n_layers, d_model = directions.shape
    sets = ablation_positions(data)
    rows_dirs, rows_masks = [torch.zeros(n_layers, d_model)], [torch.zeros(length)]  # clean first
    for where in sets.values():
        mask = torch.zeros(length)
        mask[where] = 1.0
        rows_dirs.append(directions)
        rows_masks.append(mask)
        for draw in range(n_random):
            rows_dirs.append(random_units(n_layers, d_model, seed=seed + 1 + draw))
            rows_masks.append(mask)
    conditions = len(rows_dirs)
    directions_rows = torch.stack(rows_dirs).repeat_interleave(batch, dim=0)  # [condition * batch, layer, d_model]
    masks_rows = torch.stack(rows_masks).repeat_interleave(batch, dim=0)  # [condition * batch, pos]
    hooks = projection_out_hooks(model, directions_rows, masks_rows, batch)
    finals = capture.final_at(model, data.tokens.repeat(conditions, 1), fwd_hooks=hooks)
    values = signed_difference(model, finals.reshape(conditions, batch, -1), data.sentiment)  # [condition, batch]
    ablated, random = {}, {}
    for i, name in enumerate(sets):
        start = 1 + i * (1 + n_random)
        ablated[name] = values[start]
        random[name] = values[start + 1:start + 1 + n_random].mean(1)
    return DirectionAblation(clean=values[0], ablated=ablated, random=random)


# --------------------------------------------------------------------------------------------------
# Held-out frame, and the study.


def held_out(model: TransformerBridge, direction: Float[Tensor, "d_model"], found: Sequence[Head], *, sizes: Sizes,
             seed: int) -> heldout.HeldOut:
    """The screen on `reviews.FILM_VERDICT` prompts (its summary positions: the period, "Overall", the comma after
    it), and the patching check of `found` there against `sizes.heldout_draws` fresh draws."""
    other = screen(model, direction, pairs=sizes.heldout_pairs, neutral=2, seed=seed, n_random=2,
                   template=reviews.FILM_VERDICT)
    check = None
    if sizes.heldout_draws > 0:
        check = patching_check(model, found, pairs=sizes.check_pairs, n_random=sizes.heldout_draws, seed=seed + 1,
                               template=reviews.FILM_VERDICT)
    return heldout.HeldOut(HELD_OUT_FAMILY, found=tuple(found), screen=other.scores, check=check)


@dataclass(frozen=True)
class Study:
    """Sentiment summarizers measured on one model: gate, direction, screen, patching, directional ablation,
    held-out frame."""

    model: str
    gate: Gate
    direction: Direction | None = None
    screen: Screen | None = None
    patching: controls.CausalCheck | None = None
    ablation: DirectionAblation | None = None
    held_out: heldout.HeldOut | None = None

    @property
    def found(self) -> list[Head]:
        return [] if self.patching is None else list(self.patching.heads)

    def checks(self) -> dict[str, controls.CausalCheck]:
        found = {"movie review": self.patching,
                 "held-out frame": None if self.held_out is None else self.held_out.check}
        return {name: check for name, check in found.items() if check is not None}

    def row(self) -> dict[str, object]:
        """One row of the findings table."""
        row: dict[str, object] = {"model": self.model, "behaviour gate": self.gate.summary()[:4],
                                  "right sign": f"{self.gate.correct:.0%}"}
        if self.direction is None or self.screen is None:
            return row
        row["d: held-out adjectives"] = f"{self.direction.accuracy:.0%}"
        row["top heads (shift along d)"] = heads.labels(self.screen.top(3), self.screen.scores)
        row["passing heads"] = len(self.screen.passing)
        if self.patching is not None:
            clean = self.patching.clean.mean
            row["patch top-k (share of logit diff.)"] = f"{-self.patching.top.mean / clean:.0%}"
            row["random-k (p)"] = self.patching.draws_summary()
        if self.ablation is not None:
            row["d ablated: every position / summary"] = (f"{self.ablation.removed('every position'):.0%} / "
                                                          f"{self.ablation.removed('summary positions'):.0%}")
        if self.held_out is not None:
            row["held-out ranks"] = self.held_out.ranks_text()
            if self.held_out.check is not None:
                row["held-out patch (p)"] = f"{self.held_out.check.top} (p = {self.held_out.check.p_value:.3f})"
        return row


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Gate, direction, screen, patching, directional ablation and held-out frame, as the page runs them.

    Seeds: the gate `seed`, the direction `seed + 10`, the screen `seed + 20`, the patching `seed + 30`, the
    directional ablation `seed + 40`, the held-out frame `seed + 50`. This page and the summary-reader page read
    it for both models, so it is kept in the results store (computed once per code version).
    """
    return store.cached("sentiment-study", lambda: _study(model, sizes=sizes, seed=seed),
                        model=models.spec_of(model).name, weights=store.weights_digest(model), sizes=sizes, seed=seed)


def _study(model: TransformerBridge, *, sizes: Sizes, seed: int) -> Study:
    name = models.spec_of(model).name
    passed = gate(model, pairs=sizes.gate_pairs, seed=seed)
    if not passed.passed:
        return Study(model=name, gate=passed)
    direction = fit_direction(model, pairs=sizes.direction_pairs, seed=seed + 10, n_random=sizes.random_directions)
    found = screen(model, direction.d, pairs=sizes.screen_pairs, neutral=sizes.neutral_prompts, seed=seed + 20,
                   n_random=sizes.random_directions)
    top = found.top(sizes.top_k)
    check = patching_check(model, top, pairs=sizes.check_pairs, n_random=sizes.n_random, seed=seed + 30)
    ablation = direction_ablation(model, direction.directions, pairs=sizes.check_pairs,
                                  n_random=sizes.ablation_directions, seed=seed + 40)
    held = held_out(model, direction.d, top, sizes=sizes, seed=seed + 50)
    return Study(model=name, gate=passed, direction=direction, screen=found, patching=check, ablation=ablation,
                 held_out=held)
