"""The IOI circuit (Wang et al. 2023): every role's heads found by its screen, and how much of the logit
difference the circuit keeps when every other head is mean-ablated.

Roles: previous-token, duplicate-token and induction heads upstream (by their attention pattern on the
IOI prompts), S-inhibition heads (path patching into the name movers' queries), name movers, the
negative name mover, and a subject suppressor (END -> S, positive direct effect), which is not one of
Wang et al.'s classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from helpers import capture, controls, models, stats, tasks
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

    @property
    def heads(self) -> list[Head]:
        return sorted({head for group in self.roles.values() for head in group})

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
        }

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


def recovery(model, roles: dict[str, Sequence[Head]], *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Keep only the heads of `roles` (every other head mean-ablated with ABC means) and measure how much of
    the logit difference survives, against random circuits of the same size."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    heads = sorted({tuple(head) for group in roles.values() for head in group})
    data = ioi.ioi_data(model, n=sizes.check_prompts, seed=seed + 2)
    everything = ioi.all_heads_except([], n_layers, n_heads)
    draws = controls.uniform_sets(n_layers, n_heads, len(heads), sizes.n_random, seed=seed)  # from all heads
    layer_draws = controls.layer_matched_sets(heads, n_heads, sizes.n_random, seed=seed + 1)
    sets = [[], ioi.all_heads_except(heads, n_layers, n_heads), everything]
    sets += [ioi.all_heads_except(draw, n_layers, n_heads) for draw in draws + layer_draws]
    values = ioi.ablated_logit_diff(model, data, sets)
    full, circuit, nothing = values[0], values[1], values[2]
    fractions = torch.tensor([ioi.recovered_fraction(v, full, nothing) for v in values[3:]])
    random_recovered, layer_recovered = fractions[:len(draws)], fractions[len(draws):]
    return Study(model=models.spec_of(model).name, roles={role: tuple(group) for role, group in roles.items()},
                        full=stats.bootstrap_ci(full, seed=seed), circuit=stats.bootstrap_ci(circuit, seed=seed),
                        nothing=stats.bootstrap_ci(nothing, seed=seed),
                        recovered=ioi.recovered_fraction(circuit, full, nothing), random_recovered=random_recovered,
                        random_sets=tuple(tuple(d) for d in draws), layer_recovered=layer_recovered,
                        layer_sets=tuple(tuple(d) for d in layer_draws), n_total=n_layers * n_heads)


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




def study(model, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Every IOI screen on `model` (name movers, S-inhibition one by one, the upstream roles), then the
    circuit's recovery: what the circuit page runs for its comparison model."""
    data = ioi.ioi_data(model, n=sizes.prompts, seed=seed)
    read = ioi.ioi_read(model, data)
    movers = ioi.name_mover_ranking(read, sizes.top_k)
    inhibitors = inhibition.study(model, sizes=sizes, seed=seed, read=read, receivers=movers, joint=False).inhibitors
    return recovery(model, circuit_roles(model, data, read, inhibitors), sizes=sizes, seed=seed)
