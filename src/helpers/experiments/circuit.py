"""The IOI circuit (Wang et al. 2023): every role's heads found by its screen, and how much of the logit
difference the circuit keeps when every other head is mean-ablated.

Roles: previous-token, duplicate-token and induction heads upstream (by their attention pattern on the
IOI prompts), S-inhibition heads (path patching into the name movers' queries), name movers, the
negative name mover, and a subject suppressor (END -> S, positive direct effect), which is not one of
Wang et al.'s classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from helpers import capture, controls, heldout, models, stats, tasks
from helpers.experiments import inhibition, ioi
from helpers.experiments.ioi import Sizes
from helpers.heads import Head, top as top_heads

ROLE_ORDER = ("previous token", "duplicate token", "induction", "S-inhibition", "name mover",
              "negative name mover", "subject suppressor")
WANG_ROLES = ROLE_ORDER[:-1]  # the classes of Wang et al.'s circuit that these screens look for
PUBLISHED_KEYS = {"previous token": "previous_token", "duplicate token": "duplicate_token",
                  "induction": "induction_ioi", "S-inhibition": "s_inhibition", "name mover": "name_mover",
                  "negative name mover": "negative_name_mover"}  # role -> key of models.GPT2_SMALL_PUBLISHED_HEADS


def _pattern_scores(patterns: Tensor, data: tasks.TaskBatch) -> dict[str, Tensor]:
    """Mean attention of the three upstream roles on IOI prompts, each ``[layer, head]``.

    ``patterns``: ``[layer, batch, head, query, key]``. Duplicate token: S2 -> S1; induction: S2 -> the
    token after S1; previous token: the token after S1 -> S1.
    """
    rows = torch.arange(patterns.shape[1])
    s1, s2 = data.positions["s1"], data.positions["s2"]

    def at(query: Tensor, key: Tensor) -> Tensor:
        return patterns[:, rows, :, query, key].mean(0)  # indexing puts prompts first: [batch, layer, head]

    return {"duplicate token": at(s2, s1), "induction": at(s2, s1 + 1), "previous token": at(s1 + 1, s1)}


@dataclass(frozen=True)
class Study:
    """Heads found per role, and the logit difference the circuit keeps when every other head is
    mean-ablated (ABC means), against the full model, everything ablated, and two nulls of circuits of the
    same size: heads drawn from all heads (``random_sets``), and heads drawn within the circuit's layers, as
    many per layer (``layer_sets``: depth alone cannot explain a recovery that beats them)."""

    model: str
    roles: dict[str, tuple[Head, ...]]
    full: stats.Estimate
    circuit: stats.Estimate
    nothing: stats.Estimate
    recovered: float
    random_recovered: Float[Tensor, "draw"]
    random_sets: tuple[tuple[Head, ...], ...] = ()
    layer_recovered: Float[Tensor, "draw"] = torch.empty(0)
    layer_sets: tuple[tuple[Head, ...], ...] = ()
    per_prompt: Float[Tensor, "batch"] = torch.empty(0)  # the circuit's logit difference, as a recovered fraction
    held_out: Study | None = None  # the same circuit's recovery on the held-out family (`held_out_check`)
    held_out_roles: dict[str, heldout.HeldOut] | None = None  # each role's screen on the held-out family

    @property
    def heads(self) -> list[Head]:
        return sorted({head for group in self.roles.values() for head in group})

    def check(self, null: str = "all") -> controls.CausalCheck:
        """The recovery as a `controls.CausalCheck`: the circuit's recovered fraction (interval over prompts,
        the full-vs-ablated gap held fixed) against the draws from all heads (`null="all"`) or within the
        circuit's layers (`null="layer"`); 0 = every head ablated."""
        draws = {"all": self.random_recovered, "layer": self.layer_recovered}[null]
        if not len(self.per_prompt) or not len(draws):
            raise ValueError("this study has no per-prompt values or no draws of that null")
        where = f"from all {self.n_total} heads" if null == "all" else "within the circuit's layers, as many per layer"
        return controls.CausalCheck(
            metric_name="recovered fraction of logit(IO) - logit(S)", heads=tuple(self.heads),
            mode="kept alone (every other head mean-ablated)", null=f"{len(self.heads)} heads drawn {where}",
            clean=stats.Estimate(mean=0.0, lower=0.0, upper=0.0, n=len(self.per_prompt), level=0.95),
            top=stats.bootstrap_ci(self.per_prompt), draws=draws)

    def row(self) -> dict[str, object]:
        return {
            "model": self.model,
            "circuit heads": f"{len(self.heads)} of {self.n_total}",
            "full model": str(self.full),
            "circuit only": str(self.circuit),
            "all heads ablated": str(self.nothing),
            "recovered": f"{self.recovered:.2f}",
            "random circuits (max)": f"{self.random_recovered.max():.2f}" if len(self.random_recovered) else "not run",
            "layer-matched circuits (max)": f"{self.layer_recovered.max():.2f}" if len(self.layer_recovered) else "not run",
        } | ({} if self.held_out is None else {
            "held-out recovered": f"{self.held_out.recovered:.2f}",
            "held-out draws, all heads": self.held_out.check("all").draws_summary(),
            "held-out draws, layer-matched": self.held_out.check("layer").draws_summary(),
            "roles' held-out ranks": "; ".join(f"{role}: {held.ranks_text()}" for role, held in self.held_out_roles.items()),
        })

    n_total: int = 0


def circuit_roles(model, data: tasks.TaskBatch, read: ioi.IOIRead, inhibitors: Sequence[Head], *,
                  per_role: int = 2, movers: int = 3) -> dict[str, tuple[Head, ...]]:
    """The heads of each IOI role: name movers, the negative name mover and the subject suppressor from the
    END read, S-inhibition as given, and the upstream roles by their attention pattern in layers before the
    S-inhibition heads and name movers."""
    name_movers = ioi.name_mover_ranking(read, movers)
    negative = ioi.negative_mover_ranking(read, 1)
    before = min([layer for layer, _ in inhibitors] + [layer for layer, _ in name_movers], default=model.cfg.n_layers)
    patterns = capture.capture_patterns(model, data.tokens)
    scores = _pattern_scores(patterns, data)
    roles = {}
    for role in ("previous token", "duplicate token", "induction"):
        grid = scores[role].clone()
        grid[before:] = -1.0  # upstream roles must act before the heads that read them
        roles[role] = tuple(top_heads(grid, per_role, where=grid > 0))
    roles["S-inhibition"] = tuple(inhibitors)
    roles["name mover"] = tuple(name_movers)
    roles["negative name mover"] = tuple(negative)
    roles["subject suppressor"] = tuple(ioi.subject_suppressor_ranking(read, 1))
    return roles


def recovery(model, roles: dict[str, Sequence[Head]], *, sizes: Sizes = Sizes(), seed: int = 0,
             data: tasks.TaskBatch | None = None) -> Study:
    """Keep only the heads of `roles` (every other head mean-ablated with ABC means) and measure how much of
    the logit difference survives, against random circuits of the same size."""
    return recoveries(model, {"circuit": roles}, sizes=sizes, seed=seed, data=data)["circuit"]


def recoveries(model, circuits: dict[str, dict[str, Sequence[Head]]], *, sizes: Sizes = Sizes(), seed: int = 0,
               data: tasks.TaskBatch | None = None) -> dict[str, Study]:
    """`recovery` for several circuits (name -> roles) in one batched pass over the same prompts
    (`sizes.check_prompts` IOI prompts unless `data` is given), each with its own draws of both nulls; circuits
    of the same heads are measured once."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    data = ioi.ioi_data(model, n=sizes.check_prompts, seed=seed + 2) if data is None else data
    everything = ioi.all_heads_except([], n_layers, n_heads)
    sets, plans = [[], everything], {}
    for name, roles in circuits.items():
        heads = sorted({tuple(head) for group in roles.values() for head in group})
        same = [other for other, plan in plans.items() if plan[0] == heads]
        if same:  # a circuit of the same heads (e.g. a role that adds no head): measured once
            plans[name] = plans[same[0]]
            continue
        draws = controls.uniform_sets(n_layers, n_heads, len(heads), sizes.n_random, seed=seed)  # from all heads
        layer_draws = controls.layer_matched_sets(heads, n_heads, sizes.n_random, seed=seed + 1)
        plans[name] = (heads, draws, layer_draws, len(sets))
        sets += [ioi.all_heads_except(group, n_layers, n_heads) for group in [heads, *draws, *layer_draws]]
    values = ioi.ablated_logit_diff(model, data, sets)
    full, nothing = values[0], values[1]
    gap = (full - nothing).mean()
    studies = {}
    for name, (heads, draws, layer_draws, start) in plans.items():
        circuit = values[start]
        fractions = torch.tensor([ioi.recovered_fraction(v, full, nothing)
                                  for v in values[start + 1:start + 1 + len(draws) + len(layer_draws)]])
        studies[name] = Study(
            model=models.spec_of(model).name, roles={role: tuple(group) for role, group in circuits[name].items()},
            full=stats.bootstrap_ci(full, seed=seed), circuit=stats.bootstrap_ci(circuit, seed=seed),
            nothing=stats.bootstrap_ci(nothing, seed=seed), recovered=ioi.recovered_fraction(circuit, full, nothing),
            random_recovered=fractions[:len(draws)], random_sets=tuple(tuple(d) for d in draws),
            layer_recovered=fractions[len(draws):], layer_sets=tuple(tuple(d) for d in layer_draws),
            n_total=n_layers * n_heads, per_prompt=(circuit - nothing.mean()) / gap)
    return studies


HELD_OUT_FAMILY = "IOI in other words: two sentences, other verbs, other names, places and objects"


def role_screens(model, data: tasks.TaskBatch, read: ioi.IOIRead, *, before: int,
                 receivers: Sequence[Head]) -> dict[str, Tensor]:
    """Each role's screen as a ``[layer, head]`` score, larger = stronger, heads the role's rule excludes at
    -inf (or -1): the scores `circuit_roles` ranks, and END -> S2 attention (the S-inhibition candidates'
    screen, before the `receivers`). `before`: the layer the upstream roles must act before."""
    dla, to_io, to_s = read.dla.mean(-1), read.to_io.mean(-1), read.to_s.mean(-1)
    low = torch.full_like(dla, float("-inf"))
    screens = {}
    patterns = _pattern_scores(capture.capture_patterns(model, data.tokens), data)
    for role in ("previous token", "duplicate token", "induction"):
        grid = patterns[role].clone()
        grid[before:] = -1.0
        screens[role] = grid
    screens["S-inhibition"] = inhibition.sender_screen(read, receivers)
    screens["name mover"] = torch.where((to_io > to_s) & (dla > 0), dla, low)
    screens["negative name mover"] = torch.where((to_io > to_s) & (dla < 0), -dla, low)
    screens["subject suppressor"] = torch.where((to_s > to_io) & (dla > 0), dla, low)
    return screens


def held_out_check(model, circuits: dict[str, Study], *, sizes: Sizes = Sizes(), seed: int = 0
                   ) -> dict[str, Study]:
    """Each circuit of `circuits` (name -> its `recovery` study) re-checked on the held-out IOI family
    (`ioi.held_out_data`): its recovery on `sizes.check_prompts` held-out prompts against fresh draws of both
    nulls (seeds shifted by 10), and each role's screen recomputed on `sizes.prompts` held-out prompts (the
    roles' own heads' ranks there). Returns the studies of `circuits` with `held_out` and `held_out_roles`."""
    fresh = recoveries(model, {name: study.roles for name, study in circuits.items()}, sizes=sizes, seed=seed + 10,
                       data=ioi.held_out_data(model, n=sizes.check_prompts, seed=seed + 2))
    data = ioi.held_out_data(model, n=sizes.prompts, seed=seed)
    read = ioi.ioi_read(model, data)
    roles = max(circuits.values(), key=lambda study: len(study.heads)).roles
    late = [layer for role in ("S-inhibition", "name mover") for layer, _ in roles.get(role, ())]
    screens = role_screens(model, data, read, before=min(late, default=model.cfg.n_layers),
                           receivers=roles["name mover"])
    ranked = {role: heldout.HeldOut(HELD_OUT_FAMILY, found=group, screen=screens[role])
              for role, group in roles.items() if group}
    return {name: dataclasses.replace(study, held_out=fresh[name], held_out_roles=ranked)
            for name, study in circuits.items()}


def published_lines(model, roles: dict[str, Sequence[Head]]) -> list[str]:
    """One `models.published_comparison` line per role that has published heads (GPT-2 small, e.g. in Colab)."""
    return [f"{role}: " + models.published_comparison(model, PUBLISHED_KEYS[role], group)
            for role, group in roles.items() if role in PUBLISHED_KEYS]


def recovered_by(model, circuits: dict[str, Sequence[Head]], *, sizes: Sizes = Sizes(), seed: int = 0
                 ) -> dict[str, float]:
    """`CircuitStudy.recovered` for several circuits in one batched pass (same prompts, no random control)."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    data = ioi.ioi_data(model, n=sizes.check_prompts, seed=seed + 2)
    sets = [[], ioi.all_heads_except([], n_layers, n_heads)]
    sets += [ioi.all_heads_except(group, n_layers, n_heads) for group in circuits.values()]
    values = ioi.ablated_logit_diff(model, data, sets)
    return {name: ioi.recovered_fraction(row, values[0], values[1]) for name, row in zip(circuits, values[2:])}




def studies(model, *, sizes: Sizes = Sizes(), seed: int = 0, held_out: bool = False) -> dict[str, Study]:
    """Every IOI screen on `model` (name movers, S-inhibition one by one, the upstream roles), then the
    recovery of Wang et al.'s classes (``"wang"``) and of every role (``"all roles"``) in one batched pass;
    with `held_out`, both re-checked on the held-out IOI family (`held_out_check`)."""
    data = ioi.ioi_data(model, n=sizes.prompts, seed=seed)
    read = ioi.ioi_read(model, data)
    movers = ioi.name_mover_ranking(read, sizes.top_k)
    inhibitors = inhibition.study(model, sizes=sizes, seed=seed, read=read, receivers=movers, joint=False).inhibitors
    roles = circuit_roles(model, data, read, inhibitors)
    found = recoveries(model, {"wang": {role: roles[role] for role in WANG_ROLES}, "all roles": roles},
                       sizes=sizes, seed=seed)
    return held_out_check(model, found, sizes=sizes, seed=seed) if held_out else found


def study(model, *, sizes: Sizes = Sizes(), seed: int = 0, held_out: bool = False) -> Study:
    """The circuit of every role found on `model` (`studies`' ``"all roles"``): what the circuit page runs for
    its comparison model."""
    return studies(model, sizes=sizes, seed=seed, held_out=held_out)["all roles"]
