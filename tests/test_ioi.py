"""The IOI readers and rankings on tiny models and hand-built reads."""

import pytest
import torch

from helpers import attribution, capture, tasks
from helpers.experiments import ioi


def _batch(model, seed=0, *, corrupted=None):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(3, model.cfg.d_vocab, (4, 7), generator=generator)
    corrupted = torch.randint(3, model.cfg.d_vocab, (4, 7), generator=generator) if corrupted is None else corrupted
    return tasks.TaskBatch(
        name="ioi", tokens=tokens, prompts=("p",) * 4, answers=torch.tensor([3, 4, 5, 6]),
        wrong=torch.tensor([7, 8, 9, 10]), corrupted=corrupted,
        positions={"io": torch.tensor([1, 2, 1, 2]), "s1": torch.tensor([2, 1, 2, 1]),
                   "s2": torch.tensor([4, 4, 5, 5]), "end": torch.full((4,), 6)})


def test_read_agrees_with_attribution_and_attention(tiny_llama_gqa):
    model = tiny_llama_gqa
    data = _batch(model)
    read = ioi.ioi_read(model, data)
    torch.testing.assert_close(read.dla, attribution.head_logit_attribution(model, data.tokens, data.answers,
                                                                            data.wrong))
    attention = capture.read_end(model, data.tokens).attention  # [layer, batch, head, key]
    rows = torch.arange(4)
    torch.testing.assert_close(read.to_io, attention[:, rows, :, data.positions["io"]].permute(1, 2, 0))
    expected_s = attention[:, rows, :, data.positions["s1"]] + attention[:, rows, :, data.positions["s2"]]
    torch.testing.assert_close(read.to_s, expected_s.permute(1, 2, 0))
    logits = model(data.tokens)
    torch.testing.assert_close(read.logit_diff, attribution.logit_difference(logits, data.answers, data.wrong).float(),
                               atol=1e-4, rtol=1e-4)


def test_empty_ablation_is_the_clean_model_and_ablation_moves_it(tiny_llama_gqa):
    model = tiny_llama_gqa
    data = _batch(model, 1)
    clean = ioi.ioi_read(model, data)
    values = ioi.ablated_logit_diff(model, data, [[], [(1, 0), (1, 2)]])
    torch.testing.assert_close(values[0], clean.logit_diff, atol=1e-4, rtol=1e-4)
    assert (values[1] - values[0]).abs().max() > 1e-4
    after = ioi.dla_after_ablation(model, data, [])
    torch.testing.assert_close(after.dla, clean.dla)
    ablated = ioi.dla_after_ablation(model, data, [(0, 1)])
    assert ablated.dla[0, 1].abs().max() > 0  # mean ablation writes the ABC mean, not zero
    torch.testing.assert_close(ablated.logit_diff, ioi.ablated_logit_diff(model, data, [[(0, 1)]])[0],
                               atol=1e-4, rtol=1e-4)


def test_patching_from_an_identical_twin_changes_nothing(tiny_llama_gqa):
    model = tiny_llama_gqa
    data = _batch(model, 2)
    twin = _batch(model, 2, corrupted=data.tokens.clone())
    clean = ioi.ioi_read(model, twin).logit_diff
    for path in (False, True):
        values = ioi.patched_logit_diff(model, twin, [[(0, 0)], [(1, 3)]], path=path)
        torch.testing.assert_close(values, clean.expand(2, -1), atol=1e-4, rtol=1e-4)
    shift = ioi.inhibition_shift(model, twin, [[(0, 0)], [(0, 2), (0, 3)]], [(1, 1)])
    assert shift.shift.abs().max() < 1e-5


def _read(dla, to_io, to_s):
    shape = dla.shape + (1,)
    return ioi.IOIRead(dla=dla.reshape(shape), to_io=to_io.reshape(shape), to_s=to_s.reshape(shape),
                       to_s2=to_s.reshape(shape), logit_diff=torch.zeros(1))


def test_rankings_keep_only_heads_that_look_at_the_indirect_object():
    dla = torch.tensor([[0.5, 3.0, -2.0], [1.0, -0.5, 2.0]])
    to_io = torch.tensor([[0.6, 0.1, 0.7], [0.5, 0.9, 0.8]])
    to_s = torch.tensor([[0.1, 0.8, 0.1], [0.2, 0.0, 0.1]])  # L0H1 has the largest DLA but looks at S
    read = _read(dla, to_io, to_s)
    assert ioi.name_mover_ranking(read, 2) == [(1, 2), (1, 0)]
    assert ioi.negative_mover_ranking(read, 2) == [(0, 2), (1, 1)]
    assert len(ioi.name_mover_ranking(read)) == 3 and len(ioi.negative_mover_ranking(read)) == 2
    assert ioi.subject_suppressor_ranking(read) == [(0, 1)]  # looks at S, pushes IO - S up


def test_recovered_fraction_and_complement():
    full, baseline = torch.tensor([4.0, 6.0]), torch.tensor([0.0, 0.0])
    assert ioi.recovered_fraction(torch.tensor([2.0, 3.0]), full, baseline) == pytest.approx(0.5)
    assert ioi.recovered_fraction(full, full, baseline) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="nothing to recover"):
        ioi.recovered_fraction(full, baseline, baseline)
    rest = ioi.all_heads_except([(0, 1), (1, 0)], 2, 2)
    assert rest == [(0, 0), (1, 1)]


def test_non_ioi_batches_are_refused(tiny_llama_gqa):
    plain = tasks.TaskBatch(name="plain", tokens=torch.zeros(2, 3, dtype=torch.long), prompts=("a", "b"))
    with pytest.raises(ValueError, match="not an IOI batch"):
        ioi.ioi_read(tiny_llama_gqa, plain)


def _found_inhibition(receivers, inhibitors, top):
    """A hand-made `inhibition.Study` whose joint check names `top` (only the fields the held-out check reads)."""
    from helpers import controls
    from helpers.experiments import inhibition

    joint = controls.check_from_values(torch.zeros(3, 4), top, metric_name="m", mode="path-patched", null="x")
    return inhibition.Study(model="tiny", receivers=tuple(receivers), to_s2=torch.zeros(2, 4), candidates=tuple(inhibitors),
                            single_shift=torch.zeros(len(inhibitors)), random_single=torch.zeros(1),
                            inhibitors=tuple(inhibitors), joint=joint, joint_logit=joint)


def test_inhibition_held_out_check_patches_the_pair_and_draws_from_all_heads(tiny_llama_gqa, monkeypatch):
    from helpers import controls
    from helpers.experiments import inhibition

    model = tiny_llama_gqa
    monkeypatch.setattr(ioi, "held_out_data", lambda model, n, seed: _batch(model, 10 + seed))
    found = _found_inhibition([(1, 1)], [(0, 2), (0, 0)], [(0, 2), (0, 0)])
    sizes = ioi.Sizes(prompts=4, check_prompts=4, n_random=6)
    held = inhibition.held_out_check(model, found, sizes=sizes, seed=0)
    assert held.found == ((0, 2), (0, 0)) and held.check.n_draws == 6 and held.check.heads == ((0, 2), (0, 0))
    data = _batch(model, 11)
    expected = ioi.inhibition_shift(model, data, [[(0, 2), (0, 0)]], [(1, 1)]).shift.mean()
    assert held.check.top.mean == pytest.approx(float(expected), abs=1e-5)
    # layer-1 heads sit at the receiver's layer: they cannot reach its query, so they rank last and move nothing
    assert (held.screen[1] == -1).all() and all(rank <= 4 for rank in held.ranks())
    for draw, value in zip(controls.uniform_sets(2, 4, 2, 6, seed=2), held.check.draws):
        if all(layer == 1 for layer, _ in draw):
            assert abs(value) < 1e-6, draw
    read = ioi.ioi_read(model, _batch(model, 10))
    torch.testing.assert_close(held.screen[0], read.to_s2.mean(-1)[0])
    with pytest.raises(ValueError, match="S-inhibition heads"):
        inhibition.held_out_check(model, _found_inhibition([(1, 1)], [], [(0, 2)]), sizes=sizes)


def test_gate_from_a_read_already_made_is_the_same_gate(tiny_llama_gqa):
    data = _batch(tiny_llama_gqa, 3)
    read = ioi.ioi_read(tiny_llama_gqa, data)
    assert ioi.ioi_gate(tiny_llama_gqa, data, read=read) == ioi.ioi_gate(tiny_llama_gqa, data)
