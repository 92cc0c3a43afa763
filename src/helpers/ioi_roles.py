"""The IOI pages' studies: name movers, S-inhibition heads and the whole circuit, one call per model.

Each study runs exactly the steps its page shows (so the comparison model gets the same treatment)
and returns a frozen record with a `row()` for the findings table. Sizes are small on purpose: on a
2-core CPU a forward pass handles ~700 tokens a second, so screens use one pass (DLA, attention, the
OV circuit) and only the top heads and their random controls are patched exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from helpers import capture, families, interventions, ioi, models, ov, stats, tasks
from helpers.families import AblationCheck
from helpers.interventions import Head

ROLE_ORDER = ("previous token", "duplicate token", "induction", "S-inhibition", "name mover",
              "negative name mover", "subject suppressor")
WANG_ROLES = ROLE_ORDER[:-1]  # the classes of Wang et al.'s circuit that these screens look for
PUBLISHED_KEYS = {"previous token": "previous_token", "duplicate token": "duplicate_token",
                  "induction": "induction_ioi", "S-inhibition": "s_inhibition", "name mover": "name_mover",
                  "negative name mover": "negative_name_mover"}  # role -> key of models.GPT2_SMALL_PUBLISHED_HEADS


@dataclass(frozen=True)
class IOISizes:
    """Prompts and draws (the pages' parameters cells set these)."""

    prompts: int = 50  # gate, screen and attention
    check_prompts: int = 20  # exact patching and ablation
    top_k: int = 3
    n_random: int = 20
    candidates: int = 6  # S-inhibition candidates tested one by one
    random_singles: int = 12  # random single heads path-patched as their control


def _label(heads: Sequence[Head], grid: Tensor | None = None) -> str:
    if grid is None:
        return ", ".join(f"L{l}H{h}" for l, h in heads) or "none"
    return ", ".join(f"L{l}H{h} ({grid[l, h]:+.2f})" for l, h in heads) or "none"


def name_tokens(model) -> Tensor:
    """Ids of the IOI names that are single tokens (with their leading space) for this tokenizer."""
    return torch.tensor([tasks._single_id(model, name) for name in tasks.single_token_words(model, tasks.IOI_NAMES)])


def name_copying(model) -> tuple[Float[Tensor, "layer head"], Float[Tensor, "layer head"]]:
    """OV copying score of every head on the IOI names: from the raw embedding, and from the residual after
    block 0 (the "effective embedding" of Wang et al.), read on one-token prompts (after BOS if any)."""
    ids = name_tokens(model)
    prompts = ids[:, None]
    if model.cfg.default_prepend_bos:
        prompts = torch.cat([torch.full_like(prompts, model.tokenizer.bos_token_id), prompts], dim=1)
    effective = capture.residual_at_end(model, prompts, [0])[0].float().cpu()
    return ov.ov_copying_scores(model, ids), ov.copying_from_vectors(model, effective, ids)


# --------------------------------------------------------------------------------------------------
# Name movers


@dataclass(frozen=True)
class NameMoverStudy:
    """Gate, the DLA/attention screen, the OV copying score and path patching to the logits."""

    model: str
    gate: stats.GateResult
    read: ioi.IOIRead
    movers: tuple[Head, ...]
    copying: Float[Tensor, "layer head"]  # from the effective embedding (after block 0)
    raw_copying: Float[Tensor, "layer head"]  # from the token embedding W_E
    path: AblationCheck | None

    @property
    def dla(self) -> Tensor:
        return self.read.dla.mean(-1)

    def row(self) -> dict[str, object]:
        to_io, to_s = self.read.to_io.mean(-1), self.read.to_s.mean(-1)
        return {
            "model": self.model,
            "behaviour gate": "pass" if self.gate.passed else "fail",
            "name movers (DLA)": _label(self.movers, self.dla),
            "attention END→IO / END→S": ", ".join(f"{to_io[h]:.2f} / {to_s[h]:.2f}" for h in self.movers),
            "OV copying (effective embedding)": ", ".join(f"{self.copying[h]:.2f}" for h in self.movers),
            "path patching, top-k": str(self.path.top) if self.path else "not run",
            "path patching, random-k": str(self.path.random) if self.path else "not run",
        }


def name_mover_study(model, name: str, *, sizes: IOISizes = IOISizes(), seed: int = 0) -> NameMoverStudy:
    data = ioi.ioi_data(model, n=sizes.prompts, seed=seed)
    gate = ioi.ioi_gate(model, data, seed=seed)
    read = ioi.ioi_read(model, data)
    movers = ioi.name_mover_ranking(read, sizes.top_k)
    raw_copying, copying = name_copying(model)
    path = None
    if gate.passed and movers:
        check = ioi.ioi_data(model, n=sizes.check_prompts, seed=seed + 1)
        draws = interventions.random_head_sets(model.cfg.n_layers, model.cfg.n_heads, len(movers), sizes.n_random,
                                               seed=seed, exclude=movers)
        values = ioi.patched_logit_diff(model, check, [[], movers, *draws], path=True)
        path = families.check_from_values(values, movers, metric_name="logit(IO) - logit(S)", mode="path-patched",
                                          seed=seed, larger_is_stronger=False)
    return NameMoverStudy(model=name, gate=gate, read=read, movers=tuple(movers), copying=copying,
                          raw_copying=raw_copying, path=path)


# --------------------------------------------------------------------------------------------------
# S-inhibition


@dataclass(frozen=True)
class InhibitionStudy:
    """Senders patched from the ABC run into the name movers' END queries only.

    ``candidates``: heads before the first name mover with the most attention END -> S2, tested one by
    one (``single_shift``); ``random_single``: the same for random single heads of those layers;
    ``joint``: the top-k candidates by shift together vs random k-sets (shift and logit difference).
    """

    model: str
    receivers: tuple[Head, ...]
    to_s2: Float[Tensor, "layer head"]
    candidates: tuple[Head, ...]
    single_shift: Float[Tensor, "candidate"]
    random_single: Float[Tensor, "draw"]
    inhibitors: tuple[Head, ...]
    joint: AblationCheck | None  # None when only the one-by-one screen was run (the circuit page)
    joint_logit: AblationCheck | None

    @property
    def cutoff(self) -> float:
        """The largest attention shift any random single head produced: the bar an inhibitor must clear."""
        return float(self.random_single.max())

    def row(self) -> dict[str, object]:
        shifts = dict(zip(self.candidates, self.single_shift.tolist()))
        return {
            "model": self.model,
            "receivers (name movers)": _label(self.receivers),
            "S-inhibition heads (shift)": (", ".join(f"L{l}H{h} ({shifts[(l, h)]:+.3f})" for l, h in self.inhibitors[:3])
                                           or "none") + (f" +{len(self.inhibitors) - 3} more" if len(self.inhibitors) > 3 else ""),
            "largest random single shift": f"{self.cutoff:+.3f}",
            "joint shift, top-k": str(self.joint.top) if self.joint else "not run",
            "joint shift, random-k": str(self.joint.random) if self.joint else "not run",
            "logit diff change, top-k": str(self.joint_logit.top) if self.joint_logit else "not run",
        }


def _earlier_heads(model, before_layer: int) -> list[Head]:
    return [(layer, head) for layer in range(before_layer) for head in range(model.cfg.n_heads)]


def inhibition_study(model, name: str, read: ioi.IOIRead, receivers: Sequence[Head], *,
                     sizes: IOISizes = IOISizes(), seed: int = 0, joint: bool = True) -> InhibitionStudy:
    """Candidates by END -> S2 attention, each path-patched alone, then (with `joint`) the strongest
    together against random pairs."""
    receivers = tuple(receivers)
    first = min(layer for layer, _ in receivers)
    to_s2 = read.to_s2.mean(-1)
    pool = _earlier_heads(model, first)
    ranked = sorted(pool, key=lambda h: -to_s2[h].item())
    candidates = ranked[:sizes.candidates]
    generator = torch.Generator().manual_seed(seed)
    others = [pool[i] for i in torch.randperm(len(pool), generator=generator).tolist() if pool[i] not in candidates]
    singles = others[:sizes.random_singles]
    k = min(2, len(candidates))
    data = ioi.ioi_data(model, n=sizes.check_prompts, seed=seed + 1)
    first_pass = ioi.inhibition_shift(model, data, [[c] for c in candidates] + [[s] for s in singles], receivers)
    single_shift = first_pass.shift[:len(candidates)].mean(-1)
    random_single = first_pass.shift[len(candidates):].mean(-1)
    order = single_shift.argsort(descending=True).tolist()
    top = [candidates[i] for i in order[:k]]
    inhibitors = tuple(candidates[i] for i in order if single_shift[i] > random_single.max())
    common = dict(model=name, receivers=receivers, to_s2=to_s2, candidates=tuple(candidates),
                  single_shift=single_shift, random_single=random_single, inhibitors=inhibitors)
    if not joint:
        return InhibitionStudy(**common, joint=None, joint_logit=None)
    draws = [[others[(sizes.random_singles + i * k + j) % len(others)] for j in range(k)]
             for i in range(sizes.n_random)]
    together = ioi.inhibition_shift(model, data, [top, *draws], receivers)
    shift_values = torch.cat([torch.zeros(1, len(data)), together.shift])  # row 0: the clean run moves nothing
    logit_values = torch.cat([ioi.ioi_read(model, data).logit_diff[None], together.logit_diff])
    return InhibitionStudy(
        **common,
        joint=families.check_from_values(shift_values, top, metric_name="name movers' (S - IO) attention",
                                         mode="path-patched", seed=seed),
        joint_logit=families.check_from_values(logit_values, top, metric_name="logit(IO) - logit(S)",
                                               mode="path-patched", seed=seed, larger_is_stronger=False))


# --------------------------------------------------------------------------------------------------
# The circuit


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
class CircuitStudy:
    """Heads found per role, and the logit difference the circuit keeps when every other head is
    mean-ablated (ABC means), against the full model, everything ablated, and random circuits."""

    model: str
    roles: dict[str, tuple[Head, ...]]
    full: stats.Estimate
    circuit: stats.Estimate
    nothing: stats.Estimate
    recovered: float
    random_recovered: Float[Tensor, "draw"]

    @property
    def heads(self) -> list[Head]:
        return sorted({head for heads in self.roles.values() for head in heads})

    def row(self) -> dict[str, object]:
        return {
            "model": self.model,
            "circuit heads": f"{len(self.heads)} of {self.n_total}",
            "full model": str(self.full),
            "circuit only": str(self.circuit),
            "all heads ablated": str(self.nothing),
            "recovered": f"{self.recovered:.2f}",
            "random circuits (max)": f"{self.random_recovered.max():.2f}" if len(self.random_recovered) else "not run",
        }

    n_total: int = 0


def circuit_roles(model, data: tasks.TaskBatch, read: ioi.IOIRead, inhibitors: Sequence[Head], *,
                  per_role: int = 2, movers: int = 3) -> dict[str, tuple[Head, ...]]:
    """The heads of each IOI role: name movers, the negative name mover and the subject suppressor from the
    END read, S-inhibition as given, and the upstream roles by their attention pattern in layers before the
    S-inhibition heads and name movers."""
    name_movers = ioi.name_mover_ranking(read, movers)
    negative = ioi.negative_mover_ranking(read, 1)
    before = min([layer for layer, _ in inhibitors] + [layer for layer, _ in name_movers])
    patterns = capture.capture_patterns(model, data.tokens)
    scores = _pattern_scores(patterns, data)
    roles = {}
    for role in ("previous token", "duplicate token", "induction"):
        grid = scores[role].clone()
        grid[before:] = -1.0  # upstream roles must act before the heads that read them
        roles[role] = tuple(ioi._ranked(grid, grid > 0, per_role))
    roles["S-inhibition"] = tuple(inhibitors)
    roles["name mover"] = tuple(name_movers)
    roles["negative name mover"] = tuple(negative)
    roles["subject suppressor"] = tuple(ioi.subject_suppressor_ranking(read, 1))
    return roles


def circuit_study(model, name: str, roles: dict[str, Sequence[Head]], *, sizes: IOISizes = IOISizes(),
                  seed: int = 0) -> CircuitStudy:
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    heads = sorted({tuple(head) for group in roles.values() for head in group})
    data = ioi.ioi_data(model, n=sizes.check_prompts, seed=seed + 2)
    everything = ioi.all_heads_except([], n_layers, n_heads)
    draws = interventions.random_head_sets(n_layers, n_heads, len(heads), sizes.n_random, seed=seed, exclude=heads)
    sets = [[], ioi.all_heads_except(heads, n_layers, n_heads), everything]
    sets += [ioi.all_heads_except(draw, n_layers, n_heads) for draw in draws]
    values = ioi.ablated_logit_diff(model, data, sets)
    full, circuit, nothing = values[0], values[1], values[2]
    random_recovered = torch.tensor([ioi.recovered_fraction(v, full, nothing) for v in values[3:]])
    return CircuitStudy(model=name, roles={role: tuple(group) for role, group in roles.items()},
                        full=stats.bootstrap_ci(full, seed=seed), circuit=stats.bootstrap_ci(circuit, seed=seed),
                        nothing=stats.bootstrap_ci(nothing, seed=seed),
                        recovered=ioi.recovered_fraction(circuit, full, nothing), random_recovered=random_recovered,
                        n_total=n_layers * n_heads)


def published_lines(model, roles: dict[str, Sequence[Head]]) -> list[str]:
    """One `families.published_comparison` line per role that has published heads (GPT-2 small, e.g. in Colab)."""
    return [f"{role}: " + families.published_comparison(model, PUBLISHED_KEYS[role], heads)
            for role, heads in roles.items() if role in PUBLISHED_KEYS]


def recovered_by(model, circuits: dict[str, Sequence[Head]], *, sizes: IOISizes = IOISizes(), seed: int = 0
                 ) -> dict[str, float]:
    """`CircuitStudy.recovered` for several circuits in one batched pass (same prompts, no random control)."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    data = ioi.ioi_data(model, n=sizes.check_prompts, seed=seed + 2)
    sets = [[], ioi.all_heads_except([], n_layers, n_heads)]
    sets += [ioi.all_heads_except(heads, n_layers, n_heads) for heads in circuits.values()]
    values = ioi.ablated_logit_diff(model, data, sets)
    return {name: ioi.recovered_fraction(row, values[0], values[1]) for name, row in zip(circuits, values[2:])}


def findings_table(*studies):
    """One row per model for any of the studies above (a pandas DataFrame indexed by model)."""
    import pandas as pd

    return pd.DataFrame([study.row() for study in studies]).set_index("model")


def run_all(name: str, *, sizes: IOISizes = IOISizes(), seed: int = 0):
    """Every IOI study on model `name`: (name movers, S-inhibition, circuit), for comparison rows."""
    model = models.load_model(name)
    movers = name_mover_study(model, name, sizes=sizes, seed=seed)
    inhibition = inhibition_study(model, name, movers.read, movers.movers, sizes=sizes, seed=seed, joint=False)
    data = ioi.ioi_data(model, n=sizes.prompts, seed=seed)
    roles = circuit_roles(model, data, movers.read, inhibition.inhibitors)
    return movers, inhibition, circuit_study(model, name, roles, sizes=sizes, seed=seed)
