"""Copy suppression: which token a head reads, what it writes about that token, and the ablation bookkeeping."""

import pytest
import torch

from helpers import attribution, capture
from helpers.experiments import copy_suppression as cs


def test_attended_key_skips_the_first_position_and_end():
    attention = torch.zeros(1, 2, 1, 6)
    attention[0, 0, 0] = torch.tensor([0.6, 0.1, 0.25, 0.05, 0.0, 0.0])  # the sink (key 0) is ignored
    attention[0, 1, 0] = torch.tensor([0.0, 0.1, 0.1, 0.1, 0.2, 0.5])  # END (key 5) is not an earlier token
    keys, weights = cs.attended_keys(attention, first_key=1)
    assert keys.tolist() == [[[2], [4]]]
    torch.testing.assert_close(weights, torch.tensor([[[0.25], [0.2]]]))


def test_attended_key_errors_name_the_shape_and_the_range():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        cs.attended_keys(torch.rand(2, 3))
    with pytest.raises(ValueError, match="first_key must lie in"):
        cs.attended_keys(torch.rand(1, 1, 1, 3), first_key=2)


def test_control_keys_are_earlier_keys_other_than_the_attended_one_and_seeded():
    attended = torch.randint(1, 7, (3, 50, 4), generator=torch.Generator().manual_seed(0))
    control = cs.control_keys(attended, 8, first_key=1, seed=5)
    assert (control != attended).all()
    assert control.min() >= 1 and control.max() <= 6
    assert torch.equal(control, cs.control_keys(attended, 8, first_key=1, seed=5))
    assert len(control.unique()) == 6  # every other earlier key gets drawn
    with pytest.raises(ValueError, match="at least 2 earlier keys"):
        cs.control_keys(attended, 3, first_key=1, seed=0)


def test_direct_effects_match_a_loop_and_reject_mismatched_shapes():
    generator = torch.Generator().manual_seed(1)
    outputs, directions = torch.randn(2, 3, 4, 5, generator=generator), torch.randn(2, 3, 4, 5, generator=generator)
    effects = cs.direct_effects(outputs, directions)
    for layer in range(2):
        for batch in range(3):
            for head in range(4):
                expected = outputs[layer, batch, head] @ directions[layer, batch, head]
                torch.testing.assert_close(effects[layer, head, batch], expected)
    with pytest.raises(ValueError, match="same shape"):
        cs.direct_effects(outputs, directions[:, :2])


def test_weighted_scores_ignore_prompts_without_attention():
    effects = torch.tensor([[[-2.0, 5.0]]])  # [layer=1, head=1, batch=2]
    weights = torch.tensor([[[0.5], [0.0]]])  # [layer, batch, head]: the second prompt gets no weight
    torch.testing.assert_close(cs.weighted_scores(effects, weights), torch.tensor([[-2.0]]))


def test_logprob_metric_tiles_targets_over_the_head_sets():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])).repeat(2, 1)[:, None]  # 2 sets x 2
    metric = cs.attended_logprob_metric(torch.tensor([0, 1]))
    values = metric(logits, torch.zeros(4, 3, dtype=torch.long))
    torch.testing.assert_close(values, torch.log(torch.tensor([0.5, 0.8, 0.5, 0.8])))


def test_head_effects_add_up_to_the_attention_layer_effect_on_the_centred_logit(tiny_llama_gqa):
    """Exactness of the direct path: the heads of a layer rebuild the layer's output read through the unembedding."""
    model = tiny_llama_gqa
    tokens = torch.randint(3, model.cfg.d_vocab, (3, 7), generator=torch.Generator().manual_seed(2))
    run = capture.read_end(model, tokens)
    outputs = attribution.head_outputs_from_read(model, run)  # [layer, batch, head, d_model]
    token_ids = torch.tensor([4, 9, 11])
    direction = cs.folded_unembedding(model, token_ids)  # [batch, d_model]: one token per prompt
    per_head = torch.einsum("lbhm,bm->lbh", outputs, direction)
    _, cache = model.run_with_cache(tokens)
    unembed = model.W_U.float()
    centred = unembed[:, token_ids].T - unembed.mean(1)
    read = attribution.final_read(model, centred) / cache["ln_final.hook_scale"][:, -1].float()
    expected = torch.stack([(cache[f"blocks.{layer}.hook_attn_out"][:, -1].float() * read).sum(-1)
                            for layer in range(model.cfg.n_layers)])
    torch.testing.assert_close(per_head.sum(-1), expected, atol=1e-4, rtol=1e-4)


def test_read_prose_effects_use_the_token_each_head_attends_to(tiny_llama_gqa):
    model = tiny_llama_gqa
    tokens = torch.randint(3, model.cfg.d_vocab, (4, 8), generator=torch.Generator().manual_seed(3))
    read = cs.read_prose(model, tokens, seed=0)
    run = capture.read_end(model, tokens)
    outputs = attribution.head_outputs_from_read(model, run)
    layer, batch, head = 1, 2, 3
    key = read.attended_key[layer, batch, head]
    assert 1 <= key < tokens.shape[1] - 1
    assert read.attended_token[layer, batch, head] == tokens[batch, key]
    direction = cs.folded_unembedding(model, tokens[batch, key][None])[0]
    torch.testing.assert_close(read.effect[layer, head, batch], outputs[layer, batch, head] @ direction,
                               atol=1e-5, rtol=1e-5)


def test_negative_name_movers_need_io_attention_and_a_real_negative_effect():
    from helpers.experiments import ioi

    dla = torch.tensor([[-2.0, -0.05], [-1.0, 0.5]])[..., None].expand(2, 2, 3)  # [layer, head, batch]
    to_io = torch.tensor([[0.6, 0.6], [0.1, 0.6]])[..., None].expand(2, 2, 3)
    to_s = torch.tensor([[0.2, 0.2], [0.5, 0.2]])[..., None].expand(2, 2, 3)
    read = ioi.IOIRead(dla=dla, to_io=to_io, to_s=to_s, to_s2=to_s, logit_diff=torch.zeros(3))
    # L1H0 is more negative than the threshold but looks at S; L0H1 looks at the IO but does almost nothing
    assert cs.negative_name_movers(read, k=4) == [(0, 0)]


def test_ov_detector_and_ranks_use_the_effective_strength_and_keep_the_raw_one():
    # 20 heads: the effective strengths make head (0, 0) the most negative, the raw ones make it the most positive.
    effective = torch.linspace(-1.0, 1.0, 20).reshape(2, 10)
    screen = cs.ProseScreen(scores=torch.zeros(2, 10), control=torch.zeros(2, 10), ov_strength=effective,
                            ov_raw_strength=-effective)
    assert screen.ov_detected == [(0, 0), (0, 1)]  # the 10 % most negative of 20 heads
    assert screen.ov_rank((0, 0)) == 1 and screen.ov_rank((0, 0), raw=True) == 20
    no_raw = cs.ProseScreen(scores=torch.zeros(2, 10), control=torch.zeros(2, 10), ov_strength=effective)
    with pytest.raises(ValueError, match="no raw-embedding"):
        no_raw.ov_rank((0, 0), raw=True)


def test_a_head_passes_the_prose_rule_only_below_every_heads_control_score():
    scores = torch.tensor([[-0.9, -0.3, -0.1], [0.2, -0.25, -0.6]])
    control = torch.tensor([[0.1, -0.2, 0.0], [0.0, -0.28, 0.05]])  # the strongest control is -0.28
    screen = cs.ProseScreen(scores=scores, control=control, ov_strength=torch.zeros(2, 3), k=1)
    assert screen.control_cutoff == pytest.approx(-0.28)
    assert screen.passing == [(0, 0), (1, 2), (0, 1)]  # every head below -0.28, most negative first; k does not cap it
    assert screen.top() == [(0, 0)]
    calm = cs.ProseScreen(scores=torch.zeros(2, 3), control=control, ov_strength=torch.zeros(2, 3))
    assert calm.passing == []



def test_ioi_check_draws_from_all_heads_so_a_draw_of_the_found_head_matches_it(tiny_smol):
    from helpers import controls
    from helpers.experiments import ioi

    found, n_random = [(1, 1)], 24
    draws = controls.uniform_sets(2, 4, 1, n_random, seed=3)  # the draws ioi_check makes (all 8 heads)
    assert found in draws
    check = cs.ioi_check(tiny_smol, found, ioi.ioi_data(tiny_smol, n=4, seed=0), n_random=n_random, seed=3)
    assert check.n_draws == n_random and "drawn from all 8" in check.null
    torch.testing.assert_close(check.draws[draws.index(found)],
                               torch.tensor(check.top.mean, dtype=check.draws.dtype), atol=1e-4, rtol=1e-4)
    assert check.as_strong >= 1


def test_held_out_ranks_the_most_negative_dla_first_and_ablates_the_top_negative_mover(tiny_smol):
    from helpers.experiments import ioi

    movers = [(1, 3), (0, 1)]
    held, read = cs.held_out(tiny_smol, movers, prompts=4, n_random=3, seed=2)
    dla = ioi.ioi_read(tiny_smol, ioi.held_out_data(tiny_smol, n=4, seed=2)).dla.mean(-1)
    torch.testing.assert_close(held.screen, -dla)  # negated: the most negative head ranks first
    assert held.ranking()[0] == tuple(int(i) for i in divmod(int(dla.argmin()), 4))
    assert held.found == tuple(movers) and held.check.heads == ((1, 3),) and held.check.n_draws == 3
    torch.testing.assert_close(read.dla.mean(-1), dla)


def test_held_out_without_draws_recomputes_the_screen_only(tiny_smol):
    held, _ = cs.held_out(tiny_smol, [(1, 3)], prompts=4, n_random=0, seed=2)
    assert held.check is None and held.screen.shape == (2, 4) and "held-out draws" not in held.row()
