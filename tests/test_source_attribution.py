"""Direct logit attribution split by source position must add up, over positions, to the per-head DLA."""

import pytest
import torch

from helpers import attribution, capture


@pytest.mark.parametrize("fixture", ["tiny_llama_gqa", "tiny_gpt2", "tiny_smol"])
def test_source_split_sums_to_the_per_head_attribution(fixture, request):
    model = request.getfixturevalue(fixture)
    tokens = torch.randint(3, min(model.cfg.d_vocab, 40), (3, 7), generator=torch.Generator().manual_seed(0))
    answers, wrong = torch.tensor([5, 6, 7]), torch.tensor([9, 10, 11])
    split = attribution.head_source_attribution(model, tokens, attribution.answer_directions(model, answers, wrong))
    assert split.shape == (model.cfg.n_layers, model.cfg.n_heads, 3, 7)
    whole = attribution.head_logit_attribution(model, tokens, answers, wrong)
    torch.testing.assert_close(split.sum(-1), whole, atol=1e-5, rtol=1e-4)


def test_a_source_the_head_does_not_attend_contributes_nothing(tiny_llama_gqa):
    tokens = torch.randint(3, 40, (2, 6), generator=torch.Generator().manual_seed(1))
    answers, wrong = torch.tensor([4, 5]), torch.tensor([7, 8])
    run, values = attribution.read_end_with_values(tiny_llama_gqa, tokens)
    directions = attribution.answer_directions(tiny_llama_gqa, answers, wrong)
    attention = run.attention.clone()
    attention[1, :, 2, 3] = 0.0  # L1H2 no longer reads position 3
    masked = capture.EndRead(attention=attention, z=run.z, final=run.final, final_scale=run.final_scale,
                             post_scale=run.post_scale)
    split = attribution.source_attribution_from_values(tiny_llama_gqa, masked, values, directions)
    assert split[1, 2, :, 3].abs().max() == 0
    full = attribution.source_attribution_from_values(tiny_llama_gqa, run, values, directions)
    torch.testing.assert_close(split[1, 2, :, :3], full[1, 2, :, :3])


def test_a_causal_head_reads_nothing_after_the_read_position(tiny_llama_gqa):
    tokens = torch.randint(3, 40, (2, 6), generator=torch.Generator().manual_seed(2))
    directions = attribution.answer_directions(tiny_llama_gqa, torch.tensor([4, 5]), torch.tensor([7, 8]))
    split = attribution.head_source_attribution(tiny_llama_gqa, tokens, directions, position=3)
    assert split[..., 4:].abs().max() == 0


def test_directions_of_the_wrong_shape_are_refused_with_both_shapes(tiny_llama_gqa):
    tokens = torch.randint(3, 40, (2, 5), generator=torch.Generator().manual_seed(3))
    run, values = attribution.read_end_with_values(tiny_llama_gqa, tokens)
    with pytest.raises(ValueError, match=r"\(2, 32\).*\(3, 32\)"):
        attribution.source_attribution_from_values(tiny_llama_gqa, run, values, torch.zeros(3, 32))
