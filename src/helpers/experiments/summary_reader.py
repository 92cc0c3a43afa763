"""Summary readers: heads whose query at the last token reads a character's mood from the positions where it
was summarised (the comma and the period closing that character's sentence) rather than from the sentiment
words themselves (Tigges et al. 2023, the "summarization motif"), on ToyMoodStory prompts (`helpers.stories`).

The page's steps, in order, each one function here:

- `gate`: the mood logit difference at END (positive minus negative mood words,
  `sentiment.sentiment_difference` with `stories.mood_pairs`) is higher when the story ends on the character
  who loves the activity than when the same story ends on the one who hates it.
- `screen`: every head's direct effect on the signed mood difference at END, split by the key it reads
  from (`attribution.head_source_attribution`): summary positions, sentiment words, everything else
  (`route_scores`). A head passes when its summary-route score is above the 99th percentile of its own
  sign-flip null (`NULL_DRAWS` random signs over the prompts) and at least `MIN_SHARE` of the largest one.
- `patching_check`: patch the top-k heads' outputs at END from the swapped story (the two characters'
  sentiments exchanged), against k heads drawn from all heads.
- `route_check`: the same heads, but only the values at one group of source positions come from the swapped
  story while their attention stays clean (`values_patched_z`): how much of the effect passes through the
  summary positions, how much through the sentiment words; the summary route against drawn heads too.
- `held_out`: the screen and the END patching check on another story frame (`stories.DIARY_STORY`).

`study(model, *, sizes, seed)` runs them all, as the page does, for the comparison model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers import attribution, capture, controls, heads, heldout, models, patching, readout, stats, store, stories, tasks
from helpers.experiments.sentiment import sentiment_difference
from helpers.heads import Head

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

NULL_DRAWS = 200  # per-head sign-flip null of the screen
NULL_QUANTILE = 0.99
MIN_SHARE = 0.25  # a passing head's summary-route score is at least this share of the largest one
ROUTES = ("summary", "words", "other")
HELD_OUT_FAMILY = 'another frame: "A loved dances; A attended every dance. ... Today they both went to a dance. A was very"'


@dataclass(frozen=True)
class Sizes:
    """How many stories and draws each step uses (the notebook's parameters cell sets these)."""

    gate_stories: int = 60  # 2 prompts each (ending on the lover, on the hater)
    screen_stories: int = 24
    null_draws: int = NULL_DRAWS
    top_k: int = 3
    check_stories: int = 6
    n_random: int = 100  # END patching null: p >= 1/101
    route_random: int = 40  # summary-route null: p >= 1/41
    heldout_stories: int = 12
    heldout_draws: int = 20  # p >= 1/21


def mood_difference(model: TransformerBridge, final: Float[Tensor, "... d_model"]) -> Float[Tensor, "..."]:
    """Mean logit of the positive mood words minus the negative ones (`stories.mood_pairs`)."""
    return sentiment_difference(model, final, stories.mood_pairs(model))


def mood_direction(model: TransformerBridge) -> Float[Tensor, "d_model"]:
    """``mean W_U[:, positive] - mean W_U[:, negative]``: the residual direction (after the final norm) of
    `mood_difference`."""
    pairs = stories.mood_pairs(model)
    good = torch.tensor([tasks.single_token_id(model, g) for g, _ in pairs])
    bad = torch.tensor([tasks.single_token_id(model, b) for _, b in pairs])
    unembed = model.W_U.float().cpu()
    return unembed[:, good].mean(-1) - unembed[:, bad].mean(-1)


# --------------------------------------------------------------------------------------------------
# Behaviour gate


@dataclass(frozen=True)
class Gate:
    """Mood difference per story when it ends on the lover and on the hater (same story otherwise)."""

    lover: Float[Tensor, "story"]
    hater: Float[Tensor, "story"]
    strict: float  # share of prompts whose top-1 token over the whole vocabulary is a right-mood word
    test: stats.GateResult

    @property
    def effect(self) -> Float[Tensor, "story"]:
        return self.lover - self.hater

    @property
    def correct(self) -> float:
        """Share of stories where naming the lover gives the higher mood difference."""
        return float((self.effect > 0).float().mean())

    @property
    def absolute(self) -> float:
        """Share of prompts whose mood difference has the right sign outright (not only relative)."""
        return float(torch.cat([self.lover > 0, self.hater < 0]).float().mean())

    @property
    def passed(self) -> bool:
        return self.test.passed and self.correct >= 0.8

    def summary(self) -> str:
        return (f"{'PASS' if self.passed else 'FAIL'}: naming the lover rather than the hater raises the mood "
                f"difference on {self.correct:.0%} of {len(self.lover)} stories (rule: >= 80 % and p < 0.01); "
                f"shift {self.test.difference}; right sign outright on {self.absolute:.0%} of prompts; top-1 "
                f"word of the right mood on {self.strict:.0%}")


def gate(model: TransformerBridge, *, n: int, seed: int, template: stories.Template = stories.MOOD_STORY) -> Gate:
    """Mood difference at END for `n` stories, each ending on the lover and on the hater; sign-flip test of
    lover minus hater against 0 (p < 0.01, interval above 0, and >= 80 % of stories)."""
    data = stories.story_pairs(model, n=n, seed=seed, template=template)
    final = capture.final_at(model, data.tokens)
    diff = mood_difference(model, final)  # [2n]
    lover, hater = diff[0::2], diff[1::2]  # rows alternate: ending on the lover, on the hater
    pairs = stories.mood_pairs(model)
    good = {tasks.single_token_id(model, g) for g, _ in pairs}
    bad = {tasks.single_token_id(model, b) for _, b in pairs}
    top1 = readout.logits(model, final).argmax(-1).tolist()
    strict = sum((t in good) if s > 0 else (t in bad) for t, s in zip(top1, data.sign.tolist())) / len(top1)
    test = stats.behaviour_gate(lover, hater, paired=True, seed=seed, name="mood story",
                                metric_name="mood difference, story ending on the lover",
                                null_name="the same story ending on the hater")
    return Gate(lover=lover, hater=hater, strict=strict, test=test)


# --------------------------------------------------------------------------------------------------
# Screen: each head's direct effect at END, split by the key it reads from.


def route_scores(per_key: Float[Tensor, "layer head batch key"], sign: Int[Tensor, "batch"],
                 routes: dict[str, Sequence[int]]) -> dict[str, Float[Tensor, "layer head batch"]]:
    """Per route (a named set of key positions): each head's signed direct effect summed over those keys.

    ``sign`` (+1 / -1 per prompt) turns "pushes towards the positive mood" into "pushes towards the right
    mood". Routes may not overlap (the parts must add up to no more than the whole).

    Raises:
        ValueError: if `sign` does not match the batch, a position lies outside the keys, or routes overlap.
    """
    n_keys = per_key.shape[-1]
    if sign.shape != (per_key.shape[2],):
        raise ValueError(f"sign must be [batch] = ({per_key.shape[2]},); got {tuple(sign.shape)}")
    seen: set[int] = set()
    out = {}
    for name, where in routes.items():
        where = list(where)
        if any(not 0 <= p < n_keys for p in where):
            raise ValueError(f"route {name!r} has positions {where} outside the {n_keys} keys")
        if seen & set(where):
            raise ValueError(f"route {name!r} overlaps an earlier route at {sorted(seen & set(where))}")
        seen |= set(where)
        out[name] = per_key[..., where].sum(-1) * sign.to(per_key.dtype)
    return out


def sign_flip_null(values: Float[Tensor, "layer head batch"], n_draws: int, *, seed: int
                   ) -> Float[Tensor, "layer head draw"]:
    """Each head's mean over prompts with the prompts' signs flipped at random (one sign vector per draw,
    shared by all heads): what a head's score looks like when it does not follow the right mood."""
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1; got {n_draws}")
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (n_draws, values.shape[-1]), generator=generator).float() * 2 - 1
    return torch.einsum("lhb,db->lhd", values, signs) / values.shape[-1]


@dataclass(frozen=True)
class Screen:
    """Every head's mean signed direct effect at END by route (``routes[name]``: ``[layer, head]``), the
    summary route's sign-flip null (``null``: ``[layer, head, draw]``), each head's attention from END to
    the summary positions and to the sentiment words (``attention``), and the attribution-patching estimate
    of each head's total effect by route (``estimate``: "END output", "summary", "words", "other")."""

    routes: dict[str, Float[Tensor, "layer head"]]
    null: Float[Tensor, "layer head draw"]
    attention: dict[str, Float[Tensor, "layer head"]]
    uniform: dict[str, float]
    estimate: dict[str, Float[Tensor, "layer head"]]

    @property
    def scores(self) -> Float[Tensor, "layer head"]:
        """The screen's score: the estimated drop of the signed mood difference (first-moment logit
        difference of the first mood pair) when the head's values at the summary positions come from the
        swapped story (attribution patching: all heads from one forward and backward pass)."""
        return self.estimate["summary"]

    @property
    def bar(self) -> float:
        """The pass bar: the 99th percentile of all heads' scores (a named percentile over all heads)."""
        return float(torch.quantile(self.scores.flatten(), NULL_QUANTILE))

    @property
    def total(self) -> Float[Tensor, "layer head"]:
        return sum(self.routes.values())

    @property
    def threshold(self) -> Float[Tensor, "layer head"]:
        """Each head's own bar for its direct effect via the summary positions (99th pct of sign flips)."""
        return torch.quantile(self.null, NULL_QUANTILE, dim=-1)

    @property
    def direct_passing(self) -> list[Head]:
        """Heads whose *direct* effect via the summary positions beats their own sign-flip bar."""
        direct = self.routes["summary"]
        return heads.top(direct, where=(direct > self.threshold) & (direct >= MIN_SHARE * direct.max()))

    @property
    def passing(self) -> list[Head]:
        """Heads above `bar` and at least `MIN_SHARE` of the strongest score."""
        rule = (self.scores > self.bar) & (self.scores >= MIN_SHARE * self.scores.max())
        return heads.top(self.scores, where=rule)

    def top(self, k: int) -> list[Head]:
        return heads.top(self.scores, k)

    def summary_share(self, found: Sequence[Head]) -> float:
        """Share of the found heads' summed direct effect that comes through the summary positions."""
        total = sum(float(self.total[h]) for h in found)
        return sum(float(self.scores[h]) for h in found) / total

    def describe(self, head: Head) -> str:
        return (f"{heads.label(head)}: estimated drop via summary {float(self.scores[head]):+.3f}, via words "
                f"{float(self.estimate['words'][head]):+.3f}, whole END output "
                f"{float(self.estimate['END output'][head]):+.3f}; direct effect via summary "
                f"{float(self.routes['summary'][head]):+.4f} (own bar {float(self.threshold[head]):.4f}); attention to summary "
                f"{float(self.attention['summary'][head]):.2f} (uniform {self.uniform['summary']:.2f}), to words "
                f"{float(self.attention['words'][head]):.2f} (uniform {self.uniform['words']:.2f})")

    def summary(self) -> str:
        found = self.passing
        return (f"{len(found)} of {self.scores.numel()} heads pass (estimated drop via the summary positions above "
                f"the 99th percentile of all heads, {self.bar:.3f}, and >= {MIN_SHARE:.0%} of the largest); top: "
                f"{heads.labels(self.top(5), self.scores)}; {len(self.direct_passing)} heads pass the direct-effect "
                f"rule (above the 99th percentile of {self.null.shape[-1]} sign flips)")


def story_routes(data: stories.Stories) -> dict[str, list[int]]:
    """The key groups of the screen: summary positions, sentiment words, everything else."""
    return {"summary": data.positions["summary"], "words": data.positions["words"], "other": data.other()}


@torch.no_grad()
def screen(model: TransformerBridge, *, n: int, seed: int, n_null: int = NULL_DRAWS,
           template: stories.Template = stories.MOOD_STORY) -> Screen:
    """Direct effect of every head at END on the signed mood difference, split by route (one pass)."""
    data = stories.story_pairs(model, n=n, seed=seed, template=template)
    run, values = attribution.read_end_with_values(model, data.tokens)
    direction = mood_direction(model)[None].expand(data.tokens.shape[0], -1)
    per_key = attribution.source_attribution_from_values(model, run, values, direction)  # [l, h, b, key]
    routes = route_scores(per_key, data.sign, story_routes(data))
    attention = run.attention.permute(0, 2, 1, 3)  # [layer, head, batch, key]
    keys = run.attention.shape[-1]
    to = {name: attention[..., data.positions[name]].sum(-1).mean(-1) for name in ("summary", "words")}
    uniform = {name: len(data.positions[name]) / keys for name in ("summary", "words")}
    clean_z, twin_z = patching.head_outputs(model, data.tokens), patching.head_outputs(model, data.swapped)
    _, twin_v = attribution.read_end_with_values(model, data.swapped)
    good, bad = _first_mood_pair(model)
    answers = torch.where(data.sign > 0, good, bad)
    wrong = torch.where(data.sign > 0, bad, good)
    z_end = torch.stack(run.z)
    estimate = {"END output": -patching.attribution_patching(
        model, data.tokens, _end_source(clean_z, twin_z[:, :, -1]), answers, wrong)}
    for name, where in story_routes(data).items():
        source = _end_source(clean_z, values_patched_z(run.attention, z_end, values, twin_v, where))
        estimate[name] = -patching.attribution_patching(model, data.tokens, source, answers, wrong)
    return Screen(routes={k: v.mean(-1) for k, v in routes.items()},
                  null=sign_flip_null(routes["summary"], n_null, seed=seed + 1), attention=to, uniform=uniform,
                  estimate=estimate)


def _first_mood_pair(model: TransformerBridge) -> tuple[int, int]:
    good, bad = stories.mood_pairs(model)[0]
    return tasks.single_token_id(model, good), tasks.single_token_id(model, bad)


# --------------------------------------------------------------------------------------------------
# Causal checks: patching at END from the swapped story, whole or by route.


def values_patched_z(attention: Float[Tensor, "layer batch head key"], z_end: Float[Tensor, "layer batch head d_head"],
                     clean_v: Sequence[Tensor], source_v: Sequence[Tensor], where: Sequence[int]
                     ) -> Float[Tensor, "layer batch head d_head"]:
    """Each head's output at END if the values at `where` came from the source prompts and the attention
    stayed clean: ``z + sum_{j in where} A[END, j] (v_source_j - v_clean_j)`` (query head h reads KV head
    ``h // group``).

    Raises:
        ValueError: if a layer's values do not match the attention's batch and keys.
    """
    n_layers, batch, n_heads, keys = attention.shape
    where = list(where)
    out = []
    for layer in range(n_layers):
        clean, source = clean_v[layer], source_v[layer]
        if clean.shape != source.shape or tuple(clean.shape[:2]) != (batch, keys):
            raise ValueError(f"values of layer {layer} must both be [batch, key, kv_head, d_head] with batch, key = "
                             f"({batch}, {keys}); got {tuple(clean.shape)} and {tuple(source.shape)}")
        delta = (source - clean)[:, where].repeat_interleave(n_heads // clean.shape[2], dim=2)  # [b, where, h, d]
        out.append(z_end[layer] + torch.einsum("bhk,bkhd->bhd", attention[layer][..., where], delta))
    return torch.stack(out)


def _signed(model: TransformerBridge, finals: Float[Tensor, "set batch d_model"], sign: Tensor
            ) -> Float[Tensor, "set story"]:
    """Per story, half of (mood difference ending on the lover - ending on the hater): the signed mood
    difference with the model's overall lean to one mood cancelled (rows alternate lover, hater)."""
    signed = sign * mood_difference(model, finals)  # [set, batch]
    return signed.reshape(signed.shape[0], -1, 2).mean(-1)


def _end_source(clean_z: Tensor, end_z: Tensor) -> Tensor:
    """Clean ``hook_z`` everywhere but END, where `end_z` ``[layer, batch, head, d_head]`` goes."""
    source = clean_z.clone()
    source[:, :, -1] = end_z.to(source.dtype)
    return source


@torch.no_grad()
def patching_check(model: TransformerBridge, found: Sequence[Head], *, n: int, n_random: int, seed: int,
                   template: stories.Template = stories.MOOD_STORY) -> controls.CausalCheck:
    """Patch `found` at END with their outputs on the swapped story, and as many heads drawn from all heads
    `n_random` times: the change of the signed mood difference (a drop is the effect)."""
    found = [tuple(h) for h in found]
    if not found:
        raise ValueError("found is empty: pass the heads to patch, e.g. screen.top(3)")
    data = stories.story_pairs(model, n=n, seed=seed, template=template)
    clean_z, twin_z = patching.head_outputs(model, data.tokens), patching.head_outputs(model, data.swapped)
    source = _end_source(clean_z, twin_z[:, :, -1])
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(found), n_random, seed=seed)
    finals = patching.patched_final_at_end(model, data.tokens, source, [[], found, *draws])
    null = f"{len(found)} heads drawn from all {model.cfg.n_layers * model.cfg.n_heads}"
    return controls.check_from_values(_signed(model, finals, data.sign), found, metric_name="signed mood difference",
                                      mode="patched at END from the swapped story", null=null, seed=seed,
                                      larger_is_stronger=False)


@dataclass(frozen=True)
class RouteCheck:
    """The signed mood difference with the found heads' values patched from the swapped story at one route
    at a time (``routes``: name -> change per prompt, interval), and the summary route against drawn heads."""

    clean: stats.Estimate
    routes: dict[str, stats.Estimate]
    summary_null: controls.CausalCheck

    def share(self, route: str) -> float:
        """The route's drop as a share of the drop with every source position patched."""
        return self.routes[route].mean / self.routes["all"].mean

    def summary(self) -> str:
        parts = ", ".join(f"{name} {est}" for name, est in self.routes.items())
        return (f"values patched from the swapped story (attention clean), change of the signed mood difference "
                f"(clean {self.clean}): {parts}; summary route share {self.share('summary'):.0%}, words "
                f"{self.share('words'):.0%}; summary route vs drawn heads: p = {self.summary_null.p_value:.3f}")


@torch.no_grad()
def route_check(model: TransformerBridge, found: Sequence[Head], *, n: int, n_random: int, seed: int) -> RouteCheck:
    """Patch the values `found` read at END, one route at a time (all keys, summary positions, sentiment
    words, other keys), from the swapped story, holding their attention at the clean pattern; the summary
    route also for `n_random` sets of as many heads drawn from all heads."""
    found = [tuple(h) for h in found]
    if not found:
        raise ValueError("found is empty: pass the heads to patch, e.g. screen.top(3)")
    data = stories.story_pairs(model, n=n, seed=seed)
    run, clean_v = attribution.read_end_with_values(model, data.tokens)
    _, twin_v = attribution.read_end_with_values(model, data.swapped)
    clean_z = patching.head_outputs(model, data.tokens)
    z_end = torch.stack(run.z)  # [layer, batch, head, d_head]
    groups = {"all": list(range(data.tokens.shape[1])), **story_routes(data)}
    changes = {}
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(found), n_random, seed=seed)
    summary_null = None
    for name, where in groups.items():
        source = _end_source(clean_z, values_patched_z(run.attention, z_end, clean_v, twin_v, where))
        sets = [[], found, *draws] if name == "summary" else [[], found]
        values = _signed(model, patching.patched_final_at_end(model, data.tokens, source, sets), data.sign)
        changes[name] = stats.bootstrap_ci(values[1] - values[0], seed=seed)
        if name == "summary":
            summary_null = controls.check_from_values(
                values, found, metric_name="signed mood difference", mode="values at the summary positions patched",
                null=f"{len(found)} heads drawn from all {model.cfg.n_layers * model.cfg.n_heads}", seed=seed,
                larger_is_stronger=False)
    return RouteCheck(clean=summary_null.clean, routes=changes, summary_null=summary_null)


# --------------------------------------------------------------------------------------------------
# Held-out frame, and the study.


def held_out(model: TransformerBridge, found: Sequence[Head], *, sizes: Sizes, seed: int) -> heldout.HeldOut:
    """The screen on `stories.DIARY_STORY` and the END patching check of `found` there."""
    other = screen(model, n=sizes.heldout_stories, seed=seed, n_null=2, template=stories.DIARY_STORY)
    check = patching_check(model, found, n=sizes.check_stories, n_random=sizes.heldout_draws, seed=seed + 1,
                           template=stories.DIARY_STORY)
    return heldout.HeldOut(HELD_OUT_FAMILY, found=tuple(found), screen=other.scores, check=check)


@dataclass(frozen=True)
class Study:
    """Summary readers measured on one model: gate, screen, END patching, route split, held-out frame."""

    model: str
    gate: Gate
    screen: Screen | None = None
    patching: controls.CausalCheck | None = None
    routes: RouteCheck | None = None
    held_out: heldout.HeldOut | None = None

    @property
    def found(self) -> list[Head]:
        return [] if self.patching is None else list(self.patching.heads)

    def row(self) -> dict[str, object]:
        """One row of the findings table."""
        row: dict[str, object] = {"model": self.model, "behaviour gate": self.gate.summary()[:4],
                                  "lover > hater": f"{self.gate.correct:.0%}"}
        if self.screen is None:
            return row
        row["top heads (via summary)"] = heads.labels(self.screen.top(3), self.screen.scores)
        row["passing heads"] = len(self.screen.passing)
        if self.patching is not None:
            row["patch top-k at END (share)"] = f"{-self.patching.top.mean / self.patching.clean.mean:.0%}"
            row["random-k (p)"] = self.patching.draws_summary()
        if self.routes is not None:
            row["route: summary / words"] = f"{self.routes.share('summary'):.0%} / {self.routes.share('words'):.0%}"
            row["summary route p"] = f"{self.routes.summary_null.p_value:.3f}"
        if self.held_out is not None:
            row["held-out ranks"] = self.held_out.ranks_text()
            row["held-out patch (p)"] = f"{self.held_out.check.top} (p = {self.held_out.check.p_value:.3f})"
        return row


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Gate, screen, patching, route split and held-out frame, as the page runs them, kept in the results
    store. Seeds: gate `seed`, screen `seed + 10`, patching `seed + 20`, routes `seed + 30`, held-out `seed + 40`."""
    return store.cached("summary-reader-study", lambda: _study(model, sizes=sizes, seed=seed),
                        model=models.spec_of(model).name, weights=store.weights_digest(model), sizes=sizes, seed=seed)


def _study(model: TransformerBridge, *, sizes: Sizes, seed: int) -> Study:
    name = models.spec_of(model).name
    passed = gate(model, n=sizes.gate_stories, seed=seed)
    if not passed.passed:
        return Study(model=name, gate=passed)
    found = screen(model, n=sizes.screen_stories, seed=seed + 10, n_null=sizes.null_draws)
    top = found.top(sizes.top_k)
    check = patching_check(model, top, n=sizes.check_stories, n_random=sizes.n_random, seed=seed + 20)
    routes = route_check(model, top, n=sizes.check_stories, n_random=sizes.route_random, seed=seed + 30)
    held = held_out(model, top, sizes=sizes, seed=seed + 40)
    return Study(model=name, gate=passed, screen=found, patching=check, routes=routes, held_out=held)
