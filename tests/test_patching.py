"""Activation, path and attribution patching against cases whose answers are known."""

import pytest
import torch

from helpers import capture, models, patching, readout


@pytest.fixture(scope="module")
def three_layer_llama(word_tokenizer):
    """Three layers, so that a head can sit between a sender and a receiver."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    config = LlamaConfig(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                         intermediate_size=64, vocab_size=len(word_tokenizer), max_position_embeddings=64)
    spec = models.ModelSpec(name="tiny-llama-3", hf_name="local/tiny-llama-3", architecture="LlamaForCausalLM",
                            source="hub", prepend_bos=False, n_layers=3, n_heads=4, n_kv_heads=2)
    return models.bridge_from_hf(spec, LlamaForCausalLM(config), word_tokenizer, device="cpu")


def _prompts(model, seed, batch=3, length=6):
    return torch.randint(3, model.cfg.d_vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def _final_with_plain_hooks(model, tokens, heads, source_z):
    """Reference: replace the heads' z one set at a time with ordinary hooks and read the final norm at END."""
    def patch(layer, indices):
        def hook(z, hook=None):
            z = z.clone()
            z[:, :, indices] = source_z[layer][:, :, indices]
            return z
        return hook

    by_layer = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    store = {}
    hooks = [(f"blocks.{layer}.attn.hook_z", patch(layer, idx)) for layer, idx in by_layer.items()]
    hooks.append(("ln_final.hook_out", lambda act, hook=None: store.update(final=act[:, -1].float())))
    model.run_with_hooks(tokens, fwd_hooks=hooks)
    return store["final"]


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama_gqa"])
def test_clean_sets_and_self_patching_change_nothing(fixture, request):
    model = request.getfixturevalue(fixture)
    tokens = _prompts(model, 0)
    clean_z = patching.head_outputs(model, tokens)
    assert clean_z.shape[:4] == (model.cfg.n_layers, 3, 6, model.cfg.n_heads)
    final = patching.patched_final(model, tokens, clean_z, [[], [(0, 1)], [(1, 0), (1, 3)]])
    reference = capture.read_end(model, tokens).final
    for row in final:
        torch.testing.assert_close(row, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama_gqa"])
def test_batched_activation_patching_matches_one_set_at_a_time(fixture, request):
    model = request.getfixturevalue(fixture)
    tokens, source = _prompts(model, 0), _prompts(model, 1)
    source_z = patching.head_outputs(model, source)
    sets = [[(0, 2)], [(1, 1)], [(0, 0), (1, 3)]]
    batched = patching.patched_final(model, tokens, source_z, sets, max_rows=4)  # forces several chunks
    for i, heads in enumerate(sets):
        torch.testing.assert_close(batched[i], _final_with_plain_hooks(model, tokens, heads, source_z),
                                   atol=1e-5, rtol=1e-5)


def test_path_patching_equals_activation_patching_for_last_layer_senders(three_layer_llama):
    """No head sits after the last layer, so freezing the other heads changes nothing: the two must agree."""
    model = three_layer_llama
    tokens, source = _prompts(model, 2), _prompts(model, 3)
    source_z = patching.head_outputs(model, source)
    sets = [[(2, 0)], [(2, 1), (2, 3)]]
    exact = patching.patched_final(model, tokens, source_z, sets)
    path = patching.patched_final(model, tokens, source_z, sets, path=True)
    torch.testing.assert_close(path, exact, atol=1e-5, rtol=1e-5)


def test_path_patching_removes_the_route_through_later_heads(three_layer_llama):
    """A layer-0 sender also acts through layers 1-2; path patching keeps only its direct route, which equals
    activation patching with every later head pinned to its clean output by hand."""
    model = three_layer_llama
    tokens, source = _prompts(model, 4), _prompts(model, 5)
    clean_z, source_z = patching.head_outputs(model, tokens), patching.head_outputs(model, source)
    path = patching.patched_final(model, tokens, source_z, [[(0, 1)]], path=True)[0]
    exact = patching.patched_final(model, tokens, source_z, [[(0, 1)]])[0]
    pinned_source = clean_z.clone()
    pinned_source[0, :, :, 1] = source_z[0, :, :, 1]
    everything = [(layer, head) for layer in range(3) for head in range(4)]
    pinned = patching.patched_final(model, tokens, pinned_source, [everything])[0]
    torch.testing.assert_close(path, pinned, atol=1e-5, rtol=1e-5)
    assert (path - exact).abs().max() > 1e-4  # the later heads did carry part of the effect


def test_receiver_patching_with_unchanged_senders_is_the_clean_run(three_layer_llama):
    model = three_layer_llama
    tokens = _prompts(model, 6)
    clean_z = patching.head_outputs(model, tokens)
    result = patching.path_patched_receivers(model, tokens, clean_z, [[], [(0, 2)]], [(2, 1), (1, 0)])
    read = capture.read_end(model, tokens)
    assert result.attention.shape == (2, 2, 3, 6)
    for row in range(2):
        torch.testing.assert_close(result.final[row], read.final, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(result.attention[row, 0], read.attention[2, :, 1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(result.attention[row, 1], read.attention[1, :, 0], atol=1e-5, rtol=1e-5)


def test_receiver_patching_moves_only_the_receivers_queries(three_layer_llama):
    """Senders in layer 0, one receiver in layer 1: the receiver's END query is the one the sender change
    produced (heads of layer 0 are the only heads before it), keys and values stay clean."""
    model = three_layer_llama
    tokens, source = _prompts(model, 7), _prompts(model, 8)
    source_z = patching.head_outputs(model, source)
    result = patching.path_patched_receivers(model, tokens, source_z, [[(0, 0), (0, 3)]], [(1, 2)])
    queries = {}

    def patch_senders(z, hook=None):
        z = z.clone()
        z[:, :, [0, 3]] = source_z[0][:, :, [0, 3]]
        return z

    model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_z", patch_senders),
                                            ("blocks.1.attn.hook_q",
                                             lambda q, hook=None: queries.update(q=q[:, -1, 2].clone()))])
    store = {}

    def put_query(q, hook=None):
        q = q.clone()
        q[:, -1, 2] = queries["q"]
        return q

    model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_q", put_query),
                                            ("blocks.1.attn.hook_pattern",
                                             lambda p, hook=None: store.update(row=p[:, 2, -1].clone()))])
    torch.testing.assert_close(result.attention[0, 0], store["row"].float(), atol=1e-5, rtol=1e-5)


def test_attribution_patching_is_exact_for_the_last_layer_of_a_linear_read(three_layer_llama):
    """For last-layer heads the logit difference is linear in z up to the final norm, so the gradient estimate
    must rank heads like exact patching; with identical prompts every estimate is zero."""
    model = three_layer_llama
    tokens = _prompts(model, 9, batch=4)
    answers, wrong = torch.tensor([5, 6, 7, 8]), torch.tensor([9, 10, 11, 12])
    clean_z = patching.head_outputs(model, tokens)
    assert patching.attribution_patching(model, tokens, clean_z, answers, wrong).abs().max() < 1e-6
    source_z = clean_z + 0.01 * torch.randn(clean_z.shape, generator=torch.Generator().manual_seed(0))
    estimate = patching.attribution_patching(model, tokens, source_z, answers, wrong)
    sets = [[(2, head)] for head in range(4)]
    finals = patching.patched_final(model, tokens, source_z, [[]] + sets)
    values = readout.logit_difference(model, finals, answers, wrong)
    exact = (values[1:] - values[0]).mean(dim=1)
    torch.testing.assert_close(estimate[2], exact, atol=2e-4, rtol=0.05)


def test_end_logit_diff_matches_the_full_logits(tiny_gpt2):
    model = tiny_gpt2
    tokens = _prompts(model, 10)
    answers, wrong = torch.tensor([4, 5, 6]), torch.tensor([7, 8, 9])
    final = capture.read_end(model, tokens).final
    logits = model(tokens)[:, -1]
    rows = torch.arange(3)
    expected = logits[rows, answers] - logits[rows, wrong]
    torch.testing.assert_close(readout.logit_difference(model, final, answers, wrong), expected.float(),
                               atol=1e-4, rtol=1e-4)


def test_bad_inputs_raise_clear_errors(three_layer_llama):
    model = three_layer_llama
    tokens = _prompts(model, 11)
    clean_z = patching.head_outputs(model, tokens)
    with pytest.raises(ValueError, match="equal token lengths"):
        patching.patched_final(model, _prompts(model, 11, length=5), clean_z, [[]])
    with pytest.raises(ValueError, match="outside this model"):
        patching.patched_final(model, tokens, clean_z, [[(3, 0)]])
    with pytest.raises(ValueError, match="before the first receiver"):
        patching.path_patched_receivers(model, tokens, clean_z, [[(2, 0)]], [(1, 0)])


def _end_only_source(model, tokens, other):
    """Clean head outputs everywhere but END, where they come from `other` (a prompt of the same length)."""
    source = patching.head_outputs(model, tokens).clone()
    source[:, :, -1] = patching.head_outputs(model, other)[:, :, -1]
    return source


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama_gqa"])
def test_end_patching_from_a_cached_prefix_matches_full_passes(fixture, request):
    model = request.getfixturevalue(fixture)
    tokens = _prompts(model, 0, length=7)
    source = _end_only_source(model, tokens, _prompts(model, 1, length=7))
    sets = [[], [(0, 1)], [(1, 0), (1, 3)], [(0, 0), (1, 2)]]
    full = patching.patched_final(model, tokens, source, sets)
    cached = patching.patched_final_at_end(model, tokens, source, sets, max_rows=6)  # several chunks
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(full[2], full[0], atol=1e-4)  # the patch changes something to compare


def test_end_patching_refuses_a_source_that_changes_the_prefix(tiny_llama_gqa):
    model = tiny_llama_gqa
    tokens, other = _prompts(model, 0), _prompts(model, 1)
    whole_twin = patching.head_outputs(model, other)
    with pytest.raises(ValueError, match="before END"):
        patching.patched_final_at_end(model, tokens, whole_twin, [[(0, 1)]])
    with pytest.raises(ValueError, match="at least two positions"):
        patching.patched_final_at_end(model, tokens[:, :1], whole_twin[:, :, :1], [[(0, 1)]])


def test_end_patching_allows_rounding_in_proportion_to_the_outputs_but_not_a_changed_prefix(word_tokenizer):
    """A prefix pass and a whole-prompt pass round differently; on a model with large head outputs (Gemma's
    reach 70) that rounding exceeds any fixed absolute tolerance, so the check scales with the outputs."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                         intermediate_size=64, vocab_size=len(word_tokenizer), max_position_embeddings=64)
    hf_model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in hf_model.model.layers:
            layer.self_attn.v_proj.weight.mul_(1e4)  # head outputs of order 1e3 to 1e4
    spec = models.ModelSpec(name="loud-llama", hf_name="local/loud-llama", architecture="LlamaForCausalLM",
                            source="hub", prepend_bos=False, n_layers=2, n_heads=4, n_kv_heads=2)
    model = models.bridge_from_hf(spec, hf_model, word_tokenizer, device="cpu")
    tokens = _prompts(model, 0, length=7)
    source = _end_only_source(model, tokens, _prompts(model, 1, length=7))
    allowed = 1e-5 * float(source[:, :, :-1].abs().max())
    assert allowed > 1e-3  # far above the fixed floor of 1e-4
    rounded = source.clone()
    rounded[0, 0, 0, 0, 0] += allowed / 2
    patching.patched_final_at_end(model, tokens, rounded, [[(0, 1)]])
    changed = source.clone()
    changed[0, 0, 0, 0, 0] += 2 * allowed  # a change beyond rounding: refused
    with pytest.raises(ValueError, match="before END"):
        patching.patched_final_at_end(model, tokens, changed, [[(0, 1)]])
