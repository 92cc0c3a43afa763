"""Name mover heads in IOI (Wang et al. 2023): attend END -> IO and copy the name into the logits.

The study: the IOI gate, the direct-logit-attribution and attention screen, the OV copying score of the
names read from the effective embedding, path patching of the top heads straight to the logits against
random sets of as many heads drawn from all heads, and both the screen and the path patching again on the
held-out IOI family (other wording, other names; `held_out`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from helpers import capture, controls, heldout, models, ov, stats, tasks
from helpers.experiments import ioi
from helpers.heads import Head, labels


@dataclass(frozen=True)
class Sizes(ioi.Sizes):
    """The IOI sizes, plus the held-out check's: prompts of the held-out family and fresh random draws."""

    held_out_prompts: int = 20
    held_out_draws: int = 20  # 0: the held-out screen only (no path patching)


HELD_OUT_FAMILY = "IOI in other words: two sentences, other verbs, names, places and objects"


def name_tokens(model) -> Tensor:
    """Ids of the IOI names that are single tokens (with their leading space) for this tokenizer."""
    return torch.tensor([tasks.require_single_token(model, " " + name, why=tasks.IOI_NAME_RULE) for name in tasks.single_token_words(model, tasks.IOI_NAMES)])


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
class Study:
    """Gate, the DLA/attention screen, the OV copying score and path patching to the logits."""

    model: str
    gate: stats.GateResult
    read: ioi.IOIRead
    movers: tuple[Head, ...]
    copying: Float[Tensor, "layer head"]  # from the effective embedding (after block 0)
    raw_copying: Float[Tensor, "layer head"]  # from the token embedding W_E
    path: controls.CausalCheck | None
    held: heldout.HeldOut | None = None

    @property
    def dla(self) -> Tensor:
        return self.read.dla.mean(-1)

    def row(self) -> dict[str, object]:
        to_io, to_s = self.read.to_io.mean(-1), self.read.to_s.mean(-1)
        return {
            "model": self.model,
            "behaviour gate": "pass" if self.gate.passed else "fail",
            "name movers (DLA)": labels(self.movers, self.dla),
            "attention END→IO / END→S": ", ".join(f"{to_io[h]:.2f} / {to_s[h]:.2f}" for h in self.movers),
            "OV copying (effective embedding)": ", ".join(f"{self.copying[h]:.2f}" for h in self.movers),
            "path patching, top-k": str(self.path.top) if self.path else "not run",
            "path patching, random-k": self.path.draws_summary() if self.path else "not run",
            **(self.held.row() if self.held else {"held-out format": "not run"}),
        }


def path_check(model, data: tasks.TaskBatch, movers: Sequence[Head], n_random: int, *, seed: int
               ) -> controls.CausalCheck:
    """Path-patch `movers` from the ABC twins straight to the logits, against `n_random` sets of as many
    heads drawn from all heads (the movers included: a draw may hold a name mover)."""
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(movers), n_random, seed=seed)
    values = ioi.patched_logit_diff(model, data, [[], list(movers), *draws], path=True)
    return controls.check_from_values(values, movers, metric_name="logit(IO) - logit(S)", mode="path-patched",
                                      null=f"{len(movers)} heads drawn from all {model.cfg.n_layers * model.cfg.n_heads}",
                                      seed=seed, larger_is_stronger=False)


def held_out(model, movers: Sequence[Head], *, prompts: int, n_random: int, seed: int
             ) -> tuple[heldout.HeldOut, ioi.IOIRead]:
    """The DLA screen and the path patching on `prompts` prompts of the held-out IOI family, which no screen
    read, with `n_random` fresh draws (0: the screen only, no patching); the read comes back too (attention
    and the logit difference there)."""
    data = ioi.held_out_data(model, n=prompts, seed=seed)
    read = ioi.ioi_read(model, data)
    check = path_check(model, data, movers, n_random, seed=seed) if n_random else None
    return heldout.HeldOut(HELD_OUT_FAMILY, found=tuple(movers), screen=read.dla.mean(-1), check=check), read


def study(model, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Gate, screen, OV copying and path patching of the top name movers vs random sets; both again on the
    held-out family."""
    data = ioi.ioi_data(model, n=sizes.prompts, seed=seed)
    gate = ioi.ioi_gate(model, data, seed=seed)
    read = ioi.ioi_read(model, data)
    movers = ioi.name_mover_ranking(read, sizes.top_k)
    raw_copying, copying = name_copying(model)
    path = held = None
    if gate.passed and movers:
        path = path_check(model, ioi.ioi_data(model, n=sizes.check_prompts, seed=seed + 1), movers, sizes.n_random,
                          seed=seed)
        held, _ = held_out(model, movers, prompts=sizes.held_out_prompts, n_random=sizes.held_out_draws,
                           seed=seed + 2)
    return Study(model=models.spec_of(model).name, gate=gate, read=read, movers=tuple(movers), copying=copying,
                 raw_copying=raw_copying, path=path, held=held)
