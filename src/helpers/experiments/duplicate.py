"""Duplicate token heads: attention from a repeated token back to its first occurrence (Wang et al. 2023).

In the IOI circuit of GPT-2 small, early *duplicate token heads* attend from the second subject mention
(S2) to the first (S1) and mark the name as already seen; later heads use that mark to avoid copying S.
The page `notebooks/duplicate_heads.ipynb` tests this on the offline models with the steps here:

1. ``attention_between``: each head's attention from one query to one key per prompt, read with
   `capture.read_end` at the query (it stops before the unembedding, which matters for Gemma's 262k vocab);
2. ``planted_repeat``: random tokens whose last token copies an earlier one, with the repeat-free twin;
3. ``duplicate_screen`` / ``passing_heads``: the pre-registered score (the lower of IOI S2 -> S1 and the
   planted repeat) against its control (the higher of the two repeat-free twins) and the pass rule;
4. ``ablation_check``: mean-ablating the top heads vs random head sets on the IOI logit difference,
   summarised by `controls.check_from_values`;
5. ``held_out``: the IOI half of the score and the causal check re-run on the held-out IOI family
   (`tasks.ioi_held_out`: other wording, names, places and objects), with fresh random draws;
6. ``study``: all of it for one model in one call (the comparison model of the page).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers import capture, controls, heldout, models, stats, tasks
from helpers.experiments import ioi
from helpers.heads import Head, labels, top as top_heads

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

THRESHOLD = 0.3  # pre-registered: a duplicate head puts at least this much attention on the earlier copy
RATIO = 5.0  # ... and at least this many times what it puts on the same position without the repeat
METRIC = "logit(IO) - logit(S)"


@dataclass(frozen=True)
class Sizes:
    """How many prompts each step uses (the page's parameters cell sets these)."""

    prompts: int = 50  # IOI prompts for the gate and the screen
    repeat_prompts: int = 20  # random-token prompts with one planted repeat
    repeat_len: int = 20  # random tokens per planted-repeat prompt
    ablation_prompts: int = 16  # fresh IOI prompts for the causal check
    n_random: int = 20  # random head sets in the causal check
    top_k: int = 4  # heads ablated together: every passing head, up to this many
    heldout_prompts: int = 16  # held-out IOI prompts (other wording and fillers) for the re-check
    heldout_draws: int = 20  # fresh random head sets in the held-out causal check


def attention_at(attention: Float[Tensor, "layer batch head key"],
                 keys: Int[Tensor, "batch"]) -> Float[Tensor, "layer head batch"]:
    """Each head's attention on key ``keys[b]`` of prompt b, from attention rows of one query per prompt."""
    if attention.ndim != 4 or keys.shape != (attention.shape[1],):
        raise ValueError(f"attention must be [layer, batch, head, key] and keys [batch]; got "
                         f"{tuple(attention.shape)} and {tuple(keys.shape)}")
    if keys.min() < 0 or keys.max() >= attention.shape[-1]:
        raise ValueError(f"keys must lie in [0, {attention.shape[-1]}); got {keys.min().item()}..{keys.max().item()}")
    index = keys[None, :, None, None].expand(*attention.shape[:3], 1)
    return attention.gather(3, index)[..., 0].permute(0, 2, 1)


def attention_between(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], queries: Int[Tensor, "batch"],
                      keys: Int[Tensor, "batch"]) -> Float[Tensor, "layer head batch"]:
    """Each head's attention from position ``queries[b]`` to ``keys[b]`` of prompt b.

    One stopped pass per distinct query position (IOI templates put S2 at a few places), so each prompt
    is read exactly once and only the rows that are scored are kept.
    """
    if queries.shape != (len(tokens),) or keys.shape != (len(tokens),):
        raise ValueError(f"queries and keys need one position per prompt ({len(tokens)}); got "
                         f"{tuple(queries.shape)} and {tuple(keys.shape)}")
    if (keys > queries).any():
        raise ValueError("a causal head cannot attend to a later key: every key must be <= its query")
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, len(tokens))
    for query in queries.unique().tolist():
        rows = (queries == query).nonzero().flatten()
        attention = capture.read_end(model, tokens[rows], position=query).attention  # [layer, batch, head, key]
        out[:, :, rows] = attention_at(attention, keys[rows])
    return out


def planted_repeat(model: TransformerBridge, *, batch: int, length: int, seed: int) -> tasks.TaskBatch:
    """`length` random tokens whose last token repeats the token at a random earlier position.

    ``positions["first"]`` is the earlier copy and ``positions["second"]`` the repeat (the last position);
    ``corrupted`` holds the same tokens without the repeat: the control for exactly the thing scored.
    """
    if length < 5:
        raise ValueError(f"length must be at least 5 (room for a copy and a gap before the repeat); got {length}")
    plain = tasks.random_tokens(model, batch=batch, length=length, seed=seed)
    start = 1 if model.cfg.default_prepend_bos else 0
    first = torch.randint(start, plain.tokens.shape[1] - 3, (batch,), generator=torch.Generator().manual_seed(seed))
    tokens = plain.tokens.clone()
    tokens[:, -1] = tokens[torch.arange(batch), first]
    return tasks.TaskBatch(name="planted_repeat", tokens=tokens,
                           prompts=tuple(model.tokenizer.decode(t) for t in tokens), corrupted=plain.tokens,
                           positions={"first": first, "second": torch.full((batch,), tokens.shape[1] - 1)})


@dataclass(frozen=True)
class DuplicateScreen:
    """Mean attention from the repeat to its first copy, per head, on each prompt set and its control."""

    ioi: Float[Tensor, "layer head"]  # S2 -> S1 on IOI prompts
    ioi_control: Float[Tensor, "layer head"]  # the same positions on the ABC twins (no repeated name)
    repeat: Float[Tensor, "layer head"]  # repeat -> first copy on random tokens
    repeat_control: Float[Tensor, "layer head"]  # the same positions without the planted copy

    @property
    def score(self) -> Float[Tensor, "layer head"]:
        """The lower of the two tasks: a duplicate head must look back on both kinds of text."""
        return torch.minimum(self.ioi, self.repeat)

    @property
    def control(self) -> Float[Tensor, "layer head"]:
        """The higher of the two controls: a position habit on either kind of text counts against a head."""
        return torch.maximum(self.ioi_control, self.repeat_control)


def duplicate_screen(model: TransformerBridge, ioi_data: tasks.TaskBatch, *, repeat_prompts: int, repeat_len: int,
                     seed: int) -> DuplicateScreen:
    """Screen every head: S2 -> S1 on `ioi_data` and its ABC twins, repeat -> first copy on planted repeats."""
    if ioi_data.corrupted is None or "s1" not in ioi_data.positions or "s2" not in ioi_data.positions:
        raise ValueError("ioi_data must be an IOI batch with ABC twins and s1/s2 positions (helpers.ioi.ioi_data)")
    planted = planted_repeat(model, batch=repeat_prompts, length=repeat_len, seed=seed)
    s1, s2 = ioi_data.positions["s1"], ioi_data.positions["s2"]
    first, second = planted.positions["first"], planted.positions["second"]
    return DuplicateScreen(ioi=attention_between(model, ioi_data.tokens, s2, s1).mean(-1),
                           ioi_control=attention_between(model, ioi_data.corrupted, s2, s1).mean(-1),
                           repeat=attention_between(model, planted.tokens, second, first).mean(-1),
                           repeat_control=attention_between(model, planted.corrupted, second, first).mean(-1))


def passing_heads(screen: DuplicateScreen, *, threshold: float = THRESHOLD, ratio: float = RATIO) -> list[Head]:
    """Heads with score >= `threshold` and >= `ratio` x their control, best score first."""
    score, control = screen.score, screen.control
    return [h for h in top_heads(score) if score[h] >= threshold and score[h] >= ratio * control[h]]


def ablated_heads(screen: DuplicateScreen, found: Sequence[Head], k: int) -> list[Head]:
    """The heads the causal check ablates: the best `k` passing heads, or the `k` best scores if none pass."""
    return list(found[:k]) or top_heads(screen.score, k)


def ablation_check(model: TransformerBridge, heads: Sequence[Head], *, prompts: int, n_random: int,
                   seed: int, data: tasks.TaskBatch | None = None) -> controls.CausalCheck:
    """Mean-ablate `heads` (ABC-twin means per position, Wang et al.'s convention) on `prompts` fresh IOI
    prompts, and `n_random` sets of as many heads drawn from all heads (a draw may hold one of them).

    The change is ablated - clean, so a head set the task needs gives a negative `top`; the p-value counts
    random draws that lower the logit difference at least as far. `data` replaces the fresh IOI prompts
    (e.g. the held-out family; `prompts` is then ignored).
    """
    fresh = ioi.ioi_data(model, n=prompts, seed=seed) if data is None else data
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(heads), n_random, seed=seed)
    values = ioi.ablated_logit_diff(model, fresh, [[], list(heads), *draws])  # [set, prompt]
    return controls.check_from_values(values, heads, metric_name=METRIC, mode="mean-ablated",
                                      null=f"{len(heads)} heads drawn from all heads", seed=seed,
                                      larger_is_stronger=False)


HELD_OUT_FAMILY = "IOI in other words (two sentences, other verbs, names, places, objects)"


def held_out(model: TransformerBridge, found: Sequence[Head], *, sizes: Sizes, seed: int,
             check: bool = True) -> heldout.HeldOut:
    """The IOI half of the screen (S2 -> S1 attention) and the causal check, on the held-out IOI family.

    `found` are the heads the page ablated. The check mean-ablates them on `sizes.heldout_prompts` held-out
    prompts against `sizes.heldout_draws` sets drawn from all heads with another seed than the page's draws
    (``heldout_draws=0``, or `check` False, skips the check).
    The held-out score is the IOI half alone: the planted-repeat half has no wording to hold out.
    """
    data = ioi.held_out_data(model, n=sizes.heldout_prompts, seed=seed)
    score = attention_between(model, data.tokens, data.positions["s2"], data.positions["s1"]).mean(-1)
    result = (ablation_check(model, found, prompts=sizes.heldout_prompts, n_random=sizes.heldout_draws, seed=seed + 1,
                             data=data) if check and sizes.heldout_draws > 0 else None)
    return heldout.HeldOut(HELD_OUT_FAMILY, found=tuple(tuple(h) for h in found), screen=score, check=result)


@dataclass(frozen=True)
class Study:
    """One model's duplicate-head page: IOI gate, screen, passing heads and the causal check."""

    model: str
    gate: stats.GateResult
    screen: DuplicateScreen
    found: tuple[Head, ...]
    top: tuple[Head, ...]
    check: controls.CausalCheck
    held_out: heldout.HeldOut | None = None  # the IOI score and the causal check on the held-out IOI family

    def row(self) -> dict[str, object]:
        """One column of the page's findings table."""
        return {"model": self.model, "behaviour gate": "pass" if self.gate.passed else "fail",
                "heads passing (score)": labels(self.found[:5], self.screen.score, signed=False),
                "max control": round(self.screen.control.max().item(), 3),
                "heads ablated": labels(self.top),
                "change when ablated": str(self.check.top), "change, as many random heads": self.check.draws_summary(),
                "p (random does as much)": round(self.check.p_value, 3),
                **(self.held_out.row() if self.held_out else {"held-out format": "not run"})}


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Gate, screen, pass rule and causal check on `model` with the page's seeds: the page in one call."""
    data = ioi.ioi_data(model, n=sizes.prompts, seed=seed)
    gate = ioi.ioi_gate(model, data, seed=seed)
    screen = duplicate_screen(model, data, repeat_prompts=sizes.repeat_prompts, repeat_len=sizes.repeat_len,
                              seed=seed + 10)
    found = passing_heads(screen)
    top = ablated_heads(screen, found, sizes.top_k)
    check = ablation_check(model, top, prompts=sizes.ablation_prompts, n_random=sizes.n_random, seed=seed + 20)
    held = held_out(model, top, sizes=sizes, seed=seed + 40)
    return Study(model=models.spec_of(model).name, gate=gate, screen=screen, found=tuple(found), top=tuple(top),
                 check=check, held_out=held)
