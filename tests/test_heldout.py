"""`heldout.HeldOut` against hand-made held-out scores whose ranks are known."""

import pytest
import torch

from helpers import controls, heldout, stats


def _scores() -> torch.Tensor:
    scores = torch.zeros(3, 4)
    scores[2, 1], scores[2, 3], scores[1, 0], scores[0, 2] = 0.9, 0.8, 0.7, 0.1
    return scores


def test_ranks_and_kept_follow_the_held_out_score():
    held = heldout.HeldOut("other wording", found=[(2, 3), (1, 0), (0, 2)], screen=_scores())
    assert held.ranks() == [2, 3, 4]
    assert held.kept() == 2  # (0, 2) falls to fourth: out of the top 3
    assert held.kept(within=4) == 3
    assert held.top(2) == [(2, 1), (2, 3)]
    assert held.ranks_text() == "L2H3 #2, L1H0 #3, L0H2 #4 of 12"


def test_row_reports_the_check_when_there_is_one():
    check = controls.check_from_values(torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0], [0.9, 0.9]]), [(2, 1)],
                                       metric_name="m", mode="mean-ablated", null="2 draws", larger_is_stronger=False)
    held = heldout.HeldOut("other wording", found=[(2, 1)], screen=_scores(), check=check)
    row = held.row()
    assert row["found heads' held-out ranks"] == "L2H1 #1 of 12"
    assert "p = 0.333" in row["held-out draws"] and isinstance(check.top, stats.Estimate)
    assert "held-out check" not in heldout.HeldOut("x", found=[(2, 1)], screen=_scores()).row()


def test_bad_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="outside this model"):
        heldout.HeldOut("x", found=[(3, 0)], screen=_scores())
    with pytest.raises(ValueError, match="found is empty"):
        heldout.HeldOut("x", found=[], screen=_scores())
    with pytest.raises(ValueError, match=r"\[layer, head\]"):
        heldout.HeldOut("x", found=[(0, 0)], screen=torch.zeros(12))


def test_overlap_keeps_the_order_of_the_first_list():
    assert heldout.overlap([(1, 0), (2, 3), (0, 0)], [(0, 0), (1, 0)]) == [(1, 0), (0, 0)]


def test_carries_over_needs_the_ranks_and_a_check_no_draw_matches():
    def check(draw_change: float) -> controls.CausalCheck:  # found heads drop the metric by 1.0
        values = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0], [1.0 + draw_change] * 2])
        return controls.check_from_values(values, [(2, 3), (1, 0)], metric_name="m", mode="mean-ablated",
                                          null="2 draws", larger_is_stronger=False)

    found = [(2, 3), (1, 0)]  # held-out ranks 2 and 3: within the top 2k = 4
    assert heldout.HeldOut("x", found=found, screen=_scores(), check=check(-0.5)).carries_over()
    assert not heldout.HeldOut("x", found=found, screen=_scores(), check=check(-1.0)).carries_over()  # a draw ties
    assert not heldout.HeldOut("x", found=found, screen=_scores()).carries_over()  # nothing re-checked causally
    far = _scores()
    far[1, 0] = -1.0  # L1H0 falls to last of 12, outside the top 4
    assert not heldout.HeldOut("x", found=found, screen=far, check=check(-0.5)).carries_over()
