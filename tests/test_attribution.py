"""Direct logit attribution must decompose the logit difference exactly (norm scales frozen)."""

import pytest
import torch

from helpers import attribution, capture


def _decomposition(model, tokens, answers, wrong):
    """Logit difference and the same quantity rebuilt from every residual component at the last position."""
    logits, cache = model.run_with_cache(tokens)
    direction = attribution.final_read(model, attribution.answer_directions(model, answers, wrong))
    direction = direction / cache["ln_final.hook_scale"][:, -1].float()
    attn = torch.stack([(cache[f"blocks.{layer}.hook_attn_out"][:, -1] * direction).sum(-1)
                        for layer in range(model.cfg.n_layers)])  # [layer, batch]
    rest = (cache["blocks.0.hook_resid_pre"][:, -1] * direction).sum(-1)
    rest = rest + sum((cache[f"blocks.{layer}.hook_mlp_out"][:, -1] * direction).sum(-1)
                      for layer in range(model.cfg.n_layers))
    return attribution.logit_difference(logits, answers, wrong), attn, rest


@pytest.mark.parametrize("fixture", ["tiny_llama_gqa", "tiny_gpt2"])
def test_head_attributions_add_up_to_each_attention_layer(fixture, request):
    model = request.getfixturevalue(fixture)
    tokens = torch.randint(3, model.cfg.d_vocab, (4, 7), generator=torch.Generator().manual_seed(0))
    answers, wrong = torch.tensor([5, 6, 7, 8]), torch.tensor([9, 10, 11, 12])
    dla = attribution.head_logit_attribution(model, tokens, answers, wrong)
    assert dla.shape == (model.cfg.n_layers, model.cfg.n_heads, 4)
    difference, attn, rest = _decomposition(model, tokens, answers, wrong)
    per_layer = dla.sum(dim=1)
    if fixture == "tiny_gpt2":  # GPT-2's attention adds a bias b_O that belongs to no head
        direction = attribution.final_read(model, attribution.answer_directions(model, answers, wrong))
        _, cache = model.run_with_cache(tokens)
        bias = torch.stack([(model.b_O[layer].float() * direction).sum(-1) for layer in range(model.cfg.n_layers)])
        per_layer = per_layer + bias / cache["ln_final.hook_scale"][:, -1, 0].float()
    torch.testing.assert_close(per_layer, attn, atol=1e-4, rtol=1e-4)
    if fixture == "tiny_llama_gqa":  # no biases anywhere: the components rebuild the logit difference
        torch.testing.assert_close(attn.sum(0) + rest, difference, atol=1e-4, rtol=1e-4)


def test_attribution_is_antisymmetric_and_zero_for_equal_answers(tiny_llama_gqa):
    tokens = torch.randint(3, 40, (3, 6), generator=torch.Generator().manual_seed(1))
    answers, wrong = torch.tensor([4, 5, 6]), torch.tensor([7, 8, 9])
    forward = attribution.head_logit_attribution(tiny_llama_gqa, tokens, answers, wrong)
    backward = attribution.head_logit_attribution(tiny_llama_gqa, tokens, wrong, answers)
    torch.testing.assert_close(forward, -backward)
    same = attribution.head_logit_attribution(tiny_llama_gqa, tokens, answers, answers)
    assert same.abs().max() == 0


def test_an_earlier_position_is_attributed_at_that_position(tiny_llama_gqa):
    tokens = torch.randint(3, 40, (2, 6), generator=torch.Generator().manual_seed(2))
    answers, wrong = torch.tensor([4, 5]), torch.tensor([7, 8])
    at_three = attribution.head_logit_attribution(tiny_llama_gqa, tokens, answers, wrong, position=3)
    truncated = attribution.head_logit_attribution(tiny_llama_gqa, tokens[:, :4], answers, wrong)
    torch.testing.assert_close(at_three, truncated, atol=1e-5, rtol=1e-5)  # causal: later tokens cannot matter


def test_a_stopped_run_leaves_no_hooks_behind(tiny_llama_gqa):
    tokens = torch.randint(3, 40, (2, 5), generator=torch.Generator().manual_seed(3))
    before = tiny_llama_gqa(tokens)
    run = capture.read_end(tiny_llama_gqa, tokens)
    assert len(run.z) == tiny_llama_gqa.cfg.n_layers and run.final_scale.shape == (2, 1)
    torch.testing.assert_close(tiny_llama_gqa(tokens), before)


def test_bad_answers_get_clear_errors(tiny_llama_gqa):
    tokens = torch.randint(3, 40, (2, 5), generator=torch.Generator().manual_seed(4))
    with pytest.raises(ValueError, match="one token id per prompt"):
        attribution.head_logit_attribution(tiny_llama_gqa, tokens, torch.tensor([1]), torch.tensor([2, 3]))
    with pytest.raises(ValueError, match="must lie in"):
        attribution.head_logit_attribution(tiny_llama_gqa, tokens, torch.tensor([1, 10**7]), torch.tensor([2, 3]))


def test_gemma_post_attention_norm_is_folded_in(gemma3):
    tokens = gemma3.to_tokens(["The capital of France is the city of", "The capital of Italy is the city of"])
    answers = torch.tensor([gemma3.to_single_token(" Paris"), gemma3.to_single_token(" Rome")])
    dla = attribution.head_logit_attribution(gemma3, tokens, answers, answers.flip(0))
    difference, attn, rest = _decomposition(gemma3, tokens, answers, answers.flip(0))
    torch.testing.assert_close(dla.sum(dim=1), attn, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(attn.sum(0) + rest, difference, atol=1e-3, rtol=1e-3)
