"""Name movers: the path-patching null draws from all heads, and the held-out check recomputes the page's
own screen (mean DLA) and path patching on the held-out IOI family."""

import torch

from helpers import controls
from helpers.experiments import ioi, name_movers



def test_path_check_draws_from_all_heads_so_a_draw_of_the_found_head_matches_it(tiny_smol):
    data = ioi.ioi_data(tiny_smol, n=4, seed=0)
    found, n_random = [(1, 2)], 24
    draws = controls.uniform_sets(2, 4, 1, n_random, seed=0)  # the draws path_check makes (all 8 heads)
    assert found in draws  # with 24 draws of 1 head out of 8, the found head is drawn
    check = name_movers.path_check(tiny_smol, data, found, n_random, seed=0)
    assert check.n_draws == n_random and "drawn from all 8" in check.null
    same = draws.index(found)
    torch.testing.assert_close(check.draws[same], torch.tensor(check.top.mean, dtype=check.draws.dtype),
                               atol=1e-4, rtol=1e-4)
    assert check.as_strong >= 1


def test_held_out_recomputes_the_dla_screen_on_the_held_out_family(tiny_smol):
    movers = [(1, 0), (0, 3)]
    held, read = name_movers.held_out(tiny_smol, movers, prompts=4, n_random=3, seed=5)
    expected = ioi.ioi_read(tiny_smol, ioi.held_out_data(tiny_smol, n=4, seed=5)).dla.mean(-1)
    torch.testing.assert_close(held.screen, expected)
    torch.testing.assert_close(read.dla.mean(-1), expected)
    assert held.found == tuple(movers) and held.check.heads == tuple(movers) and held.check.n_draws == 3
    assert held.family == name_movers.HELD_OUT_FAMILY
    assert "held-out format" in held.row() and "held-out draws" in held.row()


def test_sizes_add_the_held_out_check_to_the_ioi_sizes():
    sizes = name_movers.Sizes(prompts=6, held_out_prompts=7)
    assert isinstance(sizes, ioi.Sizes) and sizes.prompts == 6 and sizes.held_out_prompts == 7
    assert name_movers.Sizes().held_out_draws == 20


def test_held_out_without_draws_recomputes_the_screen_only(tiny_smol):
    held, _ = name_movers.held_out(tiny_smol, [(1, 0)], prompts=4, n_random=0, seed=5)
    assert held.check is None and held.ranks_text().endswith("of 8")
