"""Self-repair bookkeeping on hand-built DLA grids with known answers."""

import pytest
import torch

from helpers.experiments import self_repair


def _grids():
    """2 layers x 2 heads, 4 prompts. L1H0 is the 'name mover' (DLA 2); after its removal it drops to 0.5
    and L1H1 (the 'backup') rises from 0 to 1; the logit difference falls from 3 to 2.5."""
    before = torch.zeros(2, 2, 4)
    before[1, 0] = 2.0
    before[0, 0] = 1.0
    after = before.clone()
    after[1, 0] = 0.5
    after[1, 1] = 1.0
    return before, torch.full((4,), 3.0), after, torch.full((4,), 2.5)


def test_account_splits_the_drop_exactly():
    before, before_ld, after, after_ld = _grids()
    result = self_repair.account(before, before_ld, after, after_ld, [(1, 0)])
    assert torch.allclose(result.lost, torch.full((4,), 1.5))
    assert torch.allclose(result.actual, torch.full((4,), 0.5))
    assert torch.allclose(result.by_heads, torch.full((4,), 1.0))
    assert torch.allclose(result.by_rest, torch.zeros(4))
    fraction = result.fraction()
    assert fraction.mean == pytest.approx(1 - 0.5 / 1.5)
    assert fraction.lower == pytest.approx(fraction.upper)  # constant per prompt: zero-width interval
    assert "self-repair fraction" in result.summary()


def test_no_compensation_gives_fraction_zero_and_full_repair_gives_one():
    before, before_ld, after, _ = _grids()
    after[1, 1] = 0.0
    none = self_repair.account(before, before_ld, after, before_ld - 1.5, [(1, 0)])
    assert none.fraction().mean == pytest.approx(0.0)
    full = self_repair.account(before, before_ld, after, before_ld, [(1, 0)])
    assert full.fraction().mean == pytest.approx(1.0)


def test_dla_rise_blanks_removed_heads_and_finds_the_backup():
    before, _, after, _ = _grids()
    rise = self_repair.dla_rise(before, after, [(1, 0)])
    assert torch.isnan(rise[1, 0]) and rise[1, 1] == pytest.approx(1.0)
    assert rise.nan_to_num(-1.0).argmax().item() == 3  # flat index of L1H1


def test_ratio_ci_covers_the_ratio_of_means():
    generator = torch.Generator().manual_seed(0)
    den = 2.0 + torch.rand(200, generator=generator)
    num = 0.5 * den + 0.05 * torch.randn(200, generator=generator)
    estimate = self_repair.ratio_ci(num, den, seed=1)
    assert estimate.lower < 0.5 < estimate.upper and estimate.upper - estimate.lower < 0.05


def test_rise_control_summarises_each_draw():
    before, _, after, _ = _grids()
    control = self_repair.rise_control(before, [after, before], [[(0, 1)], [(1, 1)]])
    assert control.max_rise.tolist() == pytest.approx([1.0, 0.0])
    assert control.by_heads.tolist() == pytest.approx([-0.5, 0.0])  # L1H0 fell by 1.5, L1H1 rose by 1


def test_bad_input_is_explained():
    before, before_ld, after, after_ld = _grids()
    with pytest.raises(ValueError, match="outside"):
        self_repair.account(before, before_ld, after, after_ld, [(5, 0)])
    with pytest.raises(ValueError, match="empty"):
        self_repair.account(before, before_ld, after, after_ld, [])
    with pytest.raises(ValueError, match="one shape"):
        self_repair.dla_rise(before, after[:1], [(0, 0)])
    with pytest.raises(ValueError, match="zero"):
        self_repair.ratio_ci([1.0, 2.0], [0.0, 0.0])


def _ioi_batch(model, seed):
    from helpers import tasks

    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(3, model.cfg.d_vocab, (6, 7), generator=generator)
    corrupted = torch.randint(3, model.cfg.d_vocab, (6, 7), generator=generator)
    return tasks.TaskBatch(
        name="ioi", tokens=tokens, prompts=("p",) * 6, answers=torch.tensor([3, 4, 5, 6, 7, 8]),
        wrong=torch.tensor([9, 10, 11, 12, 13, 14]), corrupted=corrupted,
        positions={"io": torch.tensor([1, 2] * 3), "s1": torch.tensor([2, 1] * 3), "s2": torch.tensor([4, 5] * 3),
                   "end": torch.full((6,), 6)})


def test_held_out_check_reruns_the_knockout_with_the_same_name_movers(tiny_llama_gqa, monkeypatch):
    from helpers.experiments import ioi

    model = tiny_llama_gqa
    monkeypatch.setattr(ioi, "held_out_data", lambda model, n, seed: _ioi_batch(model, 100 + seed))
    sizes = self_repair.Sizes(prompts=6, top_k=2, n_random=3, pool=5)
    found = self_repair.knockout_study(model, _ioi_batch(model, 0), movers=[(1, 0), (1, 3)], sizes=sizes)
    checked = self_repair.held_out_check(model, found, sizes=sizes, seed=0)
    held = checked.held_out_study
    assert held.name_movers == found.name_movers == ((1, 0), (1, 3))
    again = self_repair.knockout_study(model, _ioi_batch(model, 100), movers=[(1, 0), (1, 3)], sizes=sizes, seed=10)
    torch.testing.assert_close(held.rise, again.rise, equal_nan=True)
    check = checked.held_out.check
    backup = checked.held_out.found[0]
    assert checked.held_out.found == (tuple(found.backups) or (heads_top(found.rise),))
    assert check.top.mean == pytest.approx(float(held.rise[backup]), abs=1e-5)
    torch.testing.assert_close(check.draws, held.control.max_rise)
    assert checked.held_out.ranks()[0] == 1 + int((held.rise.nan_to_num(float("-inf")) > held.rise[backup]).sum())
    assert "held-out backups" in checked.row() and "held-out check" in checked.row()


def heads_top(rise):
    from helpers import heads

    return heads.top(rise.nan_to_num(float("-inf")), 1)[0]
