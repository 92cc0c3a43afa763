"""Tests for helpers.experiments.circuit: the upstream roles' attention reads and the published-head lines."""

import pytest
import torch

from helpers import tasks
from helpers.experiments import circuit


def test_pattern_scores_read_the_three_upstream_attention_pairs():
    layers, batch, heads, seq = 2, 2, 3, 6
    patterns = torch.zeros(layers, batch, heads, seq, seq)
    s1, s2 = torch.tensor([1, 2]), torch.tensor([4, 5])
    for b in range(batch):
        patterns[0, b, 1, s2[b], s1[b]] = 1.0  # duplicate token head L0H1
        patterns[1, b, 2, s2[b], s1[b] + 1] = 1.0  # induction head L1H2
        patterns[0, b, 0, s1[b] + 1, s1[b]] = 1.0  # previous-token head L0H0
    data = tasks.TaskBatch(name="ioi", tokens=torch.zeros(batch, seq, dtype=torch.long), prompts=("a", "b"),
                           positions={"s1": s1, "s2": s2, "io": torch.tensor([0, 0])})
    scores = circuit._pattern_scores(patterns, data)
    for role, head in (("duplicate token", (0, 1)), ("induction", (1, 2)), ("previous token", (0, 0))):
        assert scores[role].shape == (layers, heads)
        assert scores[role][head] == 1.0 and scores[role].sum() == 1.0, role


def test_published_lines_compare_each_role_with_gpt2_small(tiny_gpt2):
    roles = {"name mover": [(9, 9), (1, 0)], "S-inhibition": [(7, 3)], "subject suppressor": [(1, 1)]}
    lines = circuit.published_lines(tiny_gpt2, roles)
    assert len(lines) == 2  # the subject suppressor has no published class
    assert lines[0].startswith("name mover: published name-mover heads") and "found L9H9" in lines[0]
    assert "missed L9H6, L10H0" in lines[0] and "not published: L1H0" in lines[0]
    assert "found L7H3" in lines[1] and "missed L7H9, L8H6, L8H10" in lines[1]


def _ioi_batch(model, seed):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(3, model.cfg.d_vocab, (4, 7), generator=generator)
    corrupted = torch.randint(3, model.cfg.d_vocab, (4, 7), generator=generator)
    return tasks.TaskBatch(
        name="ioi", tokens=tokens, prompts=("p",) * 4, answers=torch.tensor([3, 4, 5, 6]),
        wrong=torch.tensor([7, 8, 9, 10]), corrupted=corrupted,
        positions={"io": torch.tensor([1, 2, 1, 2]), "s1": torch.tensor([2, 1, 2, 1]),
                   "s2": torch.tensor([4, 4, 5, 5]), "end": torch.full((4,), 6)})


ROLES = {"previous token": ((0, 1),), "duplicate token": ((0, 2),), "induction": (), "S-inhibition": ((0, 0),),
         "name mover": ((1, 1), (1, 2)), "negative name mover": ((1, 3),), "subject suppressor": ((1, 0),)}


def test_recoveries_batch_several_circuits_like_separate_recoveries(tiny_llama_gqa):
    from helpers.experiments import ioi

    model, data = tiny_llama_gqa, _ioi_batch(tiny_llama_gqa, 0)
    sizes = ioi.Sizes(check_prompts=4, n_random=3)
    small = {role: ROLES[role] for role in ("S-inhibition", "name mover")}
    both = circuit.recoveries(model, {"small": small, "all": ROLES}, sizes=sizes, data=data)
    for name, roles in (("small", small), ("all", ROLES)):
        alone = circuit.recovery(model, roles, sizes=sizes, data=data)
        assert both[name].heads == alone.heads and both[name].random_sets == alone.random_sets
        assert both[name].recovered == pytest.approx(alone.recovered, abs=1e-4)
        torch.testing.assert_close(both[name].layer_recovered, alone.layer_recovered, atol=1e-4, rtol=1e-4)
        check = both[name].check("all")  # the recovery as a causal check: same fraction, same draws
        assert check.top.mean == pytest.approx(both[name].recovered, abs=1e-5) and check.n_draws == 3
        torch.testing.assert_close(check.draws, both[name].random_recovered)
        torch.testing.assert_close(both[name].check("layer").draws, both[name].layer_recovered)
    assert len(both["small"].heads) == 3 and len(both["all"].heads) == 7


def test_held_out_check_recovers_on_other_prompts_and_ranks_every_role(tiny_llama_gqa, monkeypatch):
    from helpers.experiments import ioi

    model = tiny_llama_gqa
    monkeypatch.setattr(ioi, "held_out_data", lambda model, n, seed: _ioi_batch(model, 50 + seed))
    sizes = ioi.Sizes(prompts=4, check_prompts=4, n_random=3)
    found = circuit.recoveries(model, {"all": ROLES}, sizes=sizes, data=_ioi_batch(model, 0))
    checked = circuit.held_out_check(model, found, sizes=sizes, seed=0)["all"]
    fresh = circuit.recovery(model, ROLES, sizes=sizes, seed=10, data=_ioi_batch(model, 52))
    assert checked.held_out.recovered == pytest.approx(fresh.recovered, abs=1e-4)
    assert checked.held_out.random_sets != found["all"].random_sets  # fresh draws
    assert set(checked.held_out_roles) == {role for role, group in ROLES.items() if group}
    read = ioi.ioi_read(model, _ioi_batch(model, 50))
    dla, to_io, to_s = read.dla.mean(-1), read.to_io.mean(-1), read.to_s.mean(-1)
    movers = checked.held_out_roles["name mover"]
    for head, rank in zip(movers.found, movers.ranks()):
        passes = bool(to_io[head] > to_s[head] and dla[head] > 0)
        assert passes == (movers.screen[head] > float("-inf")) and rank >= 1
    assert (checked.held_out_roles["previous token"].screen[1] == -1).all()  # upstream roles act before layer 1
    assert "held-out recovered" in checked.row() and "roles' held-out ranks" in checked.row()


def test_recoveries_measure_a_circuit_of_the_same_heads_once(tiny_llama_gqa):
    from helpers.experiments import ioi

    model, data = tiny_llama_gqa, _ioi_batch(tiny_llama_gqa, 1)
    same = dict(ROLES, **{"subject suppressor": ((1, 1),)})  # the suppressor is already a name mover
    both = circuit.recoveries(model, {"a": ROLES, "b": ROLES, "c": same}, sizes=ioi.Sizes(check_prompts=4, n_random=2),
                              data=data)
    assert both["a"].recovered == both["b"].recovered and both["c"].roles["subject suppressor"] == ((1, 1),)
    assert len(both["c"].heads) == 6 and both["c"].random_sets != both["a"].random_sets
