"""Checkers for the IOI pages (name movers, backup and negative name movers, S-inhibition, the circuit)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import SimpleNamespace

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers import controls, heads, interventions, ov, stats
from helpers.experiments import copy_suppression, ioi, self_repair
from helpers.heads import Head

# --------------------------------------------------------------------------------------------------
# Small synthetic inputs (no model is ever loaded here).


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _heads(got: object) -> list[Head]:
    return [(int(layer), int(head)) for layer, head in got]


def _labels(found: Sequence[Head]) -> str:
    return "[" + ", ".join(heads.label(head) for head in found) + "]"


def _read(dla: Tensor, to_io: Tensor, to_s: Tensor) -> ioi.IOIRead:
    """An `ioi.IOIRead` of one prompt whose per-head means are the given ``[layer, head]`` grids."""
    return ioi.IOIRead(dla=dla[..., None], to_io=to_io[..., None], to_s=to_s[..., None],
                       to_s2=to_s[..., None], logit_diff=torch.zeros(1))


def _close(got: float, expected: float, tol: float = 1e-5) -> bool:
    return abs(got - expected) < tol


# --------------------------------------------------------------------------------------------------
# Name movers.


def _name_mover_cases() -> dict[str, tuple[Tensor, Tensor, Tensor, int]]:
    strongest_on_s = (torch.tensor([[0.1, 0.0, 0.3], [2.0, 0.8, -0.5], [0.6, 0.2, 0.05]]),
                      torch.tensor([[0.3, 0.1, 0.5], [0.1, 0.6, 0.7], [0.4, 0.5, 0.2]]),
                      torch.tensor([[0.2, 0.3, 0.1], [0.8, 0.1, 0.1], [0.1, 0.2, 0.1]]), 3)
    few_eligible = (torch.tensor([[0.4, -1.0], [0.2, 0.9]]), torch.tensor([[0.5, 0.9], [0.3, 0.1]]),
                    torch.tensor([[0.1, 0.0], [0.3, 0.6]]), 3)  # (1, 0) ties IO and S: not eligible
    cases = {"a grid whose strongest head looks at S": strongest_on_s,
             "a grid with fewer eligible heads than k": few_eligible}
    for seed in range(2):
        generator = _generator(seed)
        cases[f"random grid (seed {seed})"] = (torch.randn(4, 5, generator=generator),
                                               torch.rand(4, 5, generator=generator) * 0.5,
                                               torch.rand(4, 5, generator=generator) * 0.5, 3)
    return cases


def check_name_mover_ranking(reader_fn: Callable[[Tensor, Tensor, Tensor, int], Sequence[Head]]) -> str:
    """Check the name-mover rule against `ioi.name_mover_ranking`: the `k` heads with the largest positive
    mean DLA among those that attend END -> IO strictly more than END -> S, largest first."""
    cases = _name_mover_cases()
    for label, (dla, to_io, to_s, k) in cases.items():
        expected = ioi.name_mover_ranking(_read(dla, to_io, to_s), k)
        got = _heads(reader_fn(dla.clone(), to_io.clone(), to_s.clone(), k))
        assert got == expected, (f"on {label} (k = {k}) you chose {_labels(got)}; expected {_labels(expected)} "
                                 f"(DLA {[round(float(dla[h]), 2) for h in expected]})")
    return f"All {len(cases)} name-mover cases match the reference."


def _one_head_ov(table: Tensor) -> ov.OVWeights:
    """OV weights of a model with one head whose name-to-name logit table is `table` (identity ends)."""
    n = table.shape[0]
    eye = torch.eye(n)
    return ov.OVWeights(embed=eye, ln_gain=torch.ones(1, n), w_v=eye[None, None], w_o=table[None, None].float(),
                        post_gain=None, final_gain=torch.ones(n), unembed=eye, normalization="none")


def _copying_cases() -> dict[str, Tensor]:
    n = 5
    cases = {"a head that copies every name": torch.eye(n) * 3 + 0.1 * torch.arange(n)[None, :],
             "a head that suppresses every name": -torch.eye(n) * 2 + 0.1 * torch.arange(n)[None, :],
             "a head that always writes the same name": torch.eye(n) + torch.tensor([0.0, 0.0, 5.0, 0.0, 0.0])[None]}
    for seed in range(3):
        table = torch.randn(n, n, generator=_generator(seed))
        cases[f"random table (seed {seed})"] = table + 1.2 * torch.eye(n)
    return cases


def check_copying_score(reader_fn: Callable[[Float[Tensor, "read written"]], float]) -> str:
    """Check an OV copying score against `ov.ov_copying_scores`: the share of names (rows, the name the head
    reads) whose own logit (the diagonal) is the largest in the row (the logits it writes)."""
    cases = _copying_cases()
    for label, table in cases.items():
        expected = float(ov.ov_copying_scores(_one_head_ov(table), range(table.shape[0]))[0, 0])
        got = float(reader_fn(table.clone()))
        assert _close(got, expected), f"on {label} your score is {got:.4f}; expected {expected:.4f}"
    return f"All {len(cases)} copying-score cases match the reference."


# --------------------------------------------------------------------------------------------------
# Backup name movers (self-repair).


def _knockout(seed: int, removed: Sequence[Head], repair: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    generator = _generator(seed)
    before = torch.randn(4, 3, 6, generator=generator) * 0.3
    after = before + torch.randn(4, 3, 6, generator=generator) * 0.2
    for layer, head in removed:
        before[layer, head] += 1.0 + torch.rand(6, generator=generator) * 3.0  # per-prompt effects differ
        after[layer, head] = 0.1 * torch.randn(6, generator=generator)
    before_ld = before.sum((0, 1)) + 0.5
    lost = sum(before[layer, head] - after[layer, head] for layer, head in removed)
    after_ld = before_ld - (1 - repair) * lost + 0.2 * torch.randn(6, generator=generator)
    return before, after, before_ld, after_ld


def check_self_repair_fraction(reader_fn: Callable[..., float]) -> str:
    """Check the self-repair fraction ``1 - mean(actual drop) / mean(direct effect lost)`` (a ratio of means
    over prompts) against `self_repair.account`."""
    cases = {"one head removed, little repair": ((3, 1),), "two heads removed, half repaired": ((3, 1), (2, 0)),
             "three heads removed, over-repaired": ((3, 0), (3, 1), (3, 2))}
    repairs = (0.1, 0.5, 1.3)
    for seed, ((label, removed), repair) in enumerate(zip(cases.items(), repairs)):
        before, after, before_ld, after_ld = _knockout(seed, removed, repair)
        expected = self_repair.account(before, before_ld, after, after_ld, list(removed)).fraction().mean
        got = float(reader_fn(before.clone(), after.clone(), before_ld.clone(), after_ld.clone(), list(removed)))
        assert _close(got, expected, 1e-4), f"on {label} your fraction is {got:.4f}; expected {expected:.4f}"
    return f"All {len(cases)} knockout cases match the reference."


def _backup_cases() -> dict[str, tuple[Tensor, Tensor, float]]:
    rise = torch.tensor([[0.05, -0.2, 0.4], [0.9, 0.3, 0.0], [float("nan"), float("nan"), 0.7]])
    cases = {"rises where the control sets the bar": (rise, torch.tensor([0.2, 0.5, 0.35]), 2.0),
             "rises where 10 % of the loss sets the bar": (rise, torch.tensor([0.1, 0.05]), 5.0),
             "rises that no head clears": (rise, torch.tensor([0.2, 1.1]), 1.0)}
    generator = _generator(0)
    random_rise = torch.randn(5, 4, generator=generator) * 0.5
    random_rise[4, :3] = float("nan")  # the removed heads
    cases["random rises (seed 0)"] = (random_rise, torch.rand(6, generator=generator) * 0.6, 3.0)
    return cases


def check_backups(reader_fn: Callable[[Tensor, Tensor, float], Sequence[Head]]) -> str:
    """Check the backup rule against `self_repair.Study.backups`: heads whose DLA rise beats both the largest
    rise of any head after any control knockout and 10 % of the direct effect lost, largest rise first
    (the removed heads' rise is NaN)."""
    cases = _backup_cases()
    for label, (rise, control_max, lost) in cases.items():
        study = self_repair.Study(model="synthetic", gate=None, name_movers=(), dla=torch.zeros_like(rise),
                                  rise=rise, repair=SimpleNamespace(lost=torch.tensor([lost])),
                                  control=SimpleNamespace(max_rise=control_max))
        expected = study.backups
        got = _heads(reader_fn(rise.clone(), control_max.clone(), lost))
        bar = max(control_max.max().item(), 0.1 * lost)
        assert got == expected, (f"on {label} (largest control rise {control_max.max():.2f}, direct effect lost "
                                 f"{lost:.1f}) you chose {_labels(got)}; expected {_labels(expected)} "
                                 f"(rises above {bar:.2f})")
    return f"All {len(cases)} backup-rule cases match the reference."


# --------------------------------------------------------------------------------------------------
# Negative name movers and copy suppression.


def _attended_cases() -> dict[str, Tensor]:
    cases = {"a head parked on position 0": torch.tensor([0.9, 0.01, 0.02, 0.03, 0.01, 0.01, 0.01, 0.005, 0.005]),
             "a head that looks at the current token": torch.tensor([0.1, 0.05, 0.2, 0.05, 0.0, 0.0, 0.0, 0.0, 0.6])}
    for seed in range(2):
        cases[f"random row (seed {seed})"] = torch.rand(9, generator=_generator(seed)).softmax(-1)
    return cases


def check_attended_key(reader_fn: Callable[[Float[Tensor, "key"], Int[Tensor, "key"]], tuple[int, int]]) -> str:
    """Check which earlier token a head reads from END against `copy_suppression.attended_keys`: the key with
    the most attention among positions 1 .. END - 1, returned as (position, token id)."""
    cases = _attended_cases()
    tokens = torch.tensor([7, 31, 4, 18, 25, 9, 12, 40, 3])
    for label, row in cases.items():
        keys, _ = copy_suppression.attended_keys(row[None, None, None])
        key = int(keys[0, 0, 0])
        expected = (key, int(tokens[key]))
        got = tuple(int(x) for x in reader_fn(row.clone(), tokens.clone()))
        assert got == expected, f"on {label} you said (position, token) = {got}; expected {expected}"
    return f"All {len(cases)} attended-key cases match the reference."


def _passing_cases() -> dict[str, tuple[Tensor, Tensor]]:
    cases = {"heads below their own control only": (torch.tensor([[-0.3, 0.1], [-0.05, 0.05]]),
                                                     torch.tensor([[-0.1, 0.0], [-0.2, 0.1]])),
             "no head below the null": (torch.tensor([[-0.1, 0.1], [0.0, -0.15]]),
                                        torch.tensor([[-0.2, 0.0], [0.05, 0.1]]))}
    generator = _generator(1)
    scores = torch.randn(4, 3, generator=generator) * 0.3
    scores[2, 1], scores[0, 2] = -1.2, -0.8
    cases["random scores (seed 1)"] = (scores, torch.randn(4, 3, generator=generator) * 0.2)
    return cases


def check_copy_suppression_passing(reader_fn: Callable[[Tensor, Tensor], Sequence[Head]]) -> str:
    """Check the prose rule against `copy_suppression.ProseScreen.passing`: every head whose score lies below
    the most negative control score of *any* head, most negative first."""
    cases = _passing_cases()
    for label, (scores, control) in cases.items():
        screen = copy_suppression.ProseScreen(scores=scores, control=control, ov_strength=torch.zeros_like(scores))
        expected = screen.passing
        got = _heads(reader_fn(scores.clone(), control.clone()))
        assert got == expected, (f"on {label} (most negative control {screen.control_cutoff:+.2f}) you chose "
                                 f"{_labels(got)}; expected {_labels(expected)}")
    return f"All {len(cases)} pass-rule cases match the reference."


# --------------------------------------------------------------------------------------------------
# S-inhibition.


def _preference(attention: Tensor, s1: Tensor, s2: Tensor, io: Tensor) -> Tensor:
    """The receivers' mean (END -> S1 + END -> S2) - (END -> IO), as `ioi.inhibition_shift` computes it."""
    rows = torch.arange(attention.shape[1])
    to_s = attention[..., rows, s1] + attention[..., rows, s2]
    return (to_s - attention[..., rows, io]).mean(dim=0)


def _preference_cases() -> dict[str, tuple[Tensor, Tensor, Tensor, Tensor]]:
    hand = torch.zeros(2, 2, 5)  # two receivers, two prompts, five keys
    hand[0, 0, 1], hand[1, 0, 1], hand[0, 0, 3] = 0.6, 0.2, 0.1
    hand[:, 1, 2] = 0.5
    cases = {"two prompts worked by hand": (hand, torch.tensor([1, 0]), torch.tensor([3, 4]), torch.tensor([2, 2]))}
    one = torch.zeros(1, 3, 6)
    one[0, :, 2], one[0, :, 4] = torch.tensor([0.7, 0.1, 0.3]), torch.tensor([0.1, 0.6, 0.3])
    cases["one receiver, S1 at 2, IO at 4"] = (one, torch.tensor([2, 2, 2]), torch.tensor([5, 5, 5]),
                                               torch.tensor([4, 4, 4]))
    generator = _generator(0)
    random = torch.rand(3, 4, 8, generator=generator).softmax(-1)
    positions = torch.tensor([1, 2, 1, 0]), torch.tensor([5, 6, 4, 3]), torch.tensor([2, 1, 3, 2])
    cases["three receivers, random attention (seed 0)"] = (random, *positions)
    return cases


def check_attention_preference(reader_fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]) -> str:
    """Check the name movers' preference for the subject, as `ioi.inhibition_shift` computes it before taking
    the change: per prompt, the mean over receivers of (attention to S1 + attention to S2) - attention to IO,
    from rows ``[receiver, batch, key]`` at END and one position per prompt."""
    cases = _preference_cases()
    for label, (attention, s1, s2, io) in cases.items():
        expected = _preference(attention, s1, s2, io)
        got = torch.as_tensor(reader_fn(attention.clone(), s1.clone(), s2.clone(), io.clone())).float()
        assert got.shape == expected.shape, (f"on {label} your answer has shape {tuple(got.shape)}; expected "
                                             f"{tuple(expected.shape)} (one value per prompt)")
        assert torch.allclose(got, expected, atol=1e-5), (f"on {label} you got {[round(x, 4) for x in got.tolist()]}; "
                                                          f"expected {[round(x, 4) for x in expected.tolist()]}")
    return f"All {len(cases)} attention-preference cases match the reference."


def _p_value_cases() -> dict[str, tuple[float, Tensor, bool]]:
    draws = torch.tensor([0.0625, -0.125, 0.0, 0.25, 0.125], dtype=torch.float64)  # exact in binary: ties are ties
    return {"a shift that beats every draw": (0.5, draws, True),
            "a shift tied with one draw": (0.25, draws, True),
            "a drop (lower is stronger) beaten by two draws": (
                -0.75, torch.tensor([-0.125, -1.0, 0.25, -1.5, 0.0, -0.25], dtype=torch.float64), False),
            "a drop weaker than every draw": (-0.0625, torch.tensor([-0.5, -0.25, -0.375], dtype=torch.float64), False)}


def check_p_value(reader_fn: Callable[[float, Tensor, bool], float]) -> str:
    """Check the random-draw p-value against `controls.CausalCheck.p_value`:
    (1 + draws at least as strong as the found heads) / (draws + 1), where "strong" is "large" or, for a drop,
    "low"."""
    cases = _p_value_cases()
    for label, (observed, draws, larger) in cases.items():
        top = stats.Estimate(mean=observed, lower=observed, upper=observed, n=1)
        check = controls.CausalCheck(metric_name="synthetic", heads=(), mode="synthetic", null="synthetic",
                                     clean=top, top=top, draws=draws, larger_is_stronger=larger)
        got = float(reader_fn(observed, draws.clone(), larger))
        assert _close(got, check.p_value), (f"on {label} (observed {observed:+g}, draws {draws.tolist()}) your "
                                            f"p-value is {got:.4f}; expected {check.p_value:.4f} "
                                            f"= {check.as_strong + 1}/{check.n_draws + 1}")
    return f"All {len(cases)} p-value cases match the reference."


# --------------------------------------------------------------------------------------------------
# The circuit.


def _recovered_cases() -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    generator = _generator(0)
    full = 3.0 + torch.rand(6, generator=generator) * 3
    t = torch.tensor
    return {"a circuit that keeps half, baseline 0": (t([2.0, 3.0]), t([4.0, 6.0]), torch.zeros(2)),
            "a baseline above zero": (t([2.0, 4.0]), t([4.0, 6.0]), t([1.0, 1.0])),
            "a circuit worse than the baseline": (t([0.2, 0.4]), t([3.0, 5.0]), t([0.5, 1.0])),
            "prompts of unequal size (seed 0)": (full * torch.rand(6, generator=generator), full,
                                                 torch.randn(6, generator=generator) * 0.3)}


def check_recovered_fraction(reader_fn: Callable[[Tensor, Tensor, Tensor], float]) -> str:
    """Check the recovered fraction against `ioi.recovered_fraction`: mean(circuit - baseline) over
    mean(full - baseline), a ratio of means over prompts."""
    cases = _recovered_cases()
    for label, (circuit, full, baseline) in cases.items():
        expected = ioi.recovered_fraction(circuit, full, baseline)
        got = float(reader_fn(circuit.clone(), full.clone(), baseline.clone()))
        assert _close(got, expected), f"on {label} your fraction is {got:.4f}; expected {expected:.4f}"
    return f"All {len(cases)} recovered-fraction cases match the reference."


def _keep_cases() -> dict[str, tuple[Tensor, Tensor, list[int]]]:
    generator = _generator(0)
    z = torch.randn(2, 3, 4, 2, generator=generator)  # [batch, pos, head, d_head]
    means = torch.randn(3, 4, 2, generator=generator)  # [pos, head, d_head]: one mean per position
    return {"keep heads 0 and 2 of 4": (z, means, [0, 2]), "keep one head": (z, means, [3]),
            "keep every head": (z, means, [0, 1, 2, 3]), "keep no head": (z, means, [])}


def check_keep_only(reader_fn: Callable[[Tensor, Tensor, list[int]], Tensor]) -> str:
    """Check a keep-only-the-circuit hook on one layer's ``z`` ``[batch, pos, head, d_head]`` against
    `interventions.ablation_hook`: the kept heads unchanged, every other head replaced by its mean output at
    that position (``means`` ``[pos, head, d_head]``)."""
    cases = _keep_cases()
    for label, (z, means, keep) in cases.items():
        mask = torch.zeros(1, z.shape[2])
        mask[0, keep] = 1.0
        expected = interventions.ablation_hook(mask, means)(z.clone())
        got = torch.as_tensor(reader_fn(z.clone(), means.clone(), list(keep)))
        assert got.shape == expected.shape, (f"on {label} your output has shape {tuple(got.shape)}; expected "
                                             f"{tuple(expected.shape)}, the shape of z")
        wrong = sorted({int(h) for h in ((got - expected).abs() > 1e-5).nonzero()[:, 2].tolist()})
        assert not wrong, (f"on {label} (keep {keep}) your heads {wrong} differ from the reference: a kept head "
                           f"passes through unchanged, every other head takes its mean at each position")
    return f"All {len(cases)} keep-only cases match the reference."
