"""OV-circuit readings against hand-built weights with known answers, and against a tiny bridge's own modules."""

import pytest
import torch

from helpers import ov


def _weights(w_v: torch.Tensor, *, heads: int, normalization: str = "RMS", vocab: int = 6) -> ov.OVWeights:
    """A one-layer model where embedding, unembedding and W_O are identities, so the OV table is W_V."""
    d = vocab
    eye = torch.eye(d)
    return ov.OVWeights(embed=eye * 3.0, ln_gain=torch.ones(1, d), w_v=w_v[None],
                        w_o=eye.expand(heads, d, d).clone()[None], post_gain=None, final_gain=torch.ones(d),
                        unembed=eye, normalization=normalization)


def test_identity_ov_copies_every_token():
    weights = _weights(torch.eye(6)[None], heads=1)
    tokens = list(range(6))
    assert ov.ov_copying_scores(weights, tokens)[0, 0].item() == 1.0
    assert ov.ov_diagonal_strength(weights, tokens)[0, 0].item() > 0
    table = ov.ov_logits(weights, (0, 0), [2], tokens)
    assert table.argmax().item() == 2


def test_negated_ov_never_copies_and_has_negative_strength():
    weights = _weights(-torch.eye(6)[None], heads=1)
    tokens = list(range(6))
    assert ov.ov_copying_scores(weights, tokens)[0, 0].item() == 0.0
    assert ov.ov_diagonal_strength(weights, tokens)[0, 0].item() < 0


def test_gqa_query_head_reads_its_group_value_head():
    # 4 query heads share 2 value heads: heads 0, 1 read the identity, heads 2, 3 the negation.
    weights = _weights(torch.stack([torch.eye(6), -torch.eye(6)]), heads=4)
    scores = ov.ov_copying_scores(weights, list(range(6)))[0]
    assert scores.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert [weights.kv_head(h) for h in range(4)] == [0, 0, 1, 1]


def test_mapping_scores_follow_partners():
    # W_V maps token i to token (i + 1) mod 6: a "successor" head. Partners i + 1 score 1, identity 0.
    shift = torch.roll(torch.eye(6), shifts=1, dims=1)
    weights = _weights(shift[None], heads=1)
    sources = torch.arange(6)
    assert ov.ov_mapping_scores(weights, sources, (sources + 1) % 6, sources)[0, 0].item() == 1.0
    assert ov.ov_mapping_scores(weights, sources, sources, sources)[0, 0].item() == 0.0
    assert ov.ov_partner_strength(weights, sources, (sources + 1) % 6, sources)[0, 0].item() > 0


def test_layer_norm_centring_removes_a_shared_offset():
    # With LayerNorm an embedding offset shared by all tokens is removed before W_V, so copying survives it.
    weights = _weights(torch.eye(6)[None], heads=1, normalization="LN")
    shifted = ov.OVWeights(**{**weights.__dict__, "embed": weights.embed + 5.0})
    assert ov.ov_copying_scores(shifted, list(range(6)))[0, 0].item() == 1.0


def test_bad_inputs_raise_clear_errors():
    weights = _weights(torch.eye(6)[None], heads=1)
    with pytest.raises(ValueError, match="outside the model"):
        ov.ov_logits(weights, (0, 3), [0], [1])
    with pytest.raises(ValueError, match="outside the model"):
        ov.ov_logits(weights, (1, 0), [0], [1])
    with pytest.raises(ValueError, match="among the candidates"):
        ov.ov_mapping_scores(weights, [0, 1], [2, 3], [0, 1])
    with pytest.raises(ValueError, match="one partner per source"):
        ov.ov_mapping_scores(weights, [0, 1], [0], [0, 1])
    with pytest.raises(ValueError, match="ids must lie"):
        ov.ov_copying_scores(weights, [0, 99])


def test_bridge_reading_matches_the_modules_weights(tiny_llama_gqa):
    """On a real (tiny, GQA) bridge the table equals the product of the Hugging Face module weights."""
    model = tiny_llama_gqa
    hf = model.original_model if hasattr(model, "original_model") else None
    layer, head = 1, 3  # query head 3 reads value head 1 (group of 2)
    sources, targets = torch.tensor([2, 5, 7]), torch.tensor([3, 4, 9, 11])
    table = ov.ov_logits(model, (layer, head), sources, targets)
    assert table.shape == (3, 4)
    assert torch.allclose(ov.all_ov_logits(model, sources, targets)[layer, head], table)
    if hf is None:
        pytest.skip("bridge does not expose the Hugging Face model")
    inner = hf.model
    d_head = model.cfg.d_head
    x = inner.embed_tokens.weight[sources].float()
    x = x / (x.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt() * inner.layers[layer].input_layernorm.weight
    kv = head // 2
    v = x @ inner.layers[layer].self_attn.v_proj.weight[kv * d_head:(kv + 1) * d_head].T
    out = v @ inner.layers[layer].self_attn.o_proj.weight[:, head * d_head:(head + 1) * d_head].T
    expected = (out * inner.norm.weight) @ hf.lm_head.weight[targets].T
    assert torch.allclose(table, expected.detach(), atol=1e-4)


def test_copying_from_vectors_matches_the_embedding_version(tiny_llama_gqa):
    model = tiny_llama_gqa
    ids = torch.arange(3, 12)
    from_embedding = ov.ov_copying_scores(model, ids)
    from_vectors = ov.copying_from_vectors(model, model.W_E[ids].detach(), ids)
    torch.testing.assert_close(from_vectors, from_embedding)
    with pytest.raises(ValueError, match="one row per token"):
        ov.copying_from_vectors(model, model.W_E[ids[:3]].detach(), ids)


def test_vector_readings_follow_the_vectors_not_the_embedding():
    # Identity OV: the head writes whatever direction it reads. Embedding rows are the tokens themselves,
    # but the vectors fed in are each token's successor, so a copying head now "maps" i to i + 1.
    weights = _weights(torch.eye(6)[None], heads=1)
    tokens = torch.arange(6)
    same = weights.embed[tokens]
    torch.testing.assert_close(ov.mapping_from_vectors(weights, same, tokens, tokens),
                               ov.ov_mapping_scores(weights, tokens, tokens, tokens))
    torch.testing.assert_close(ov.diagonal_strength_from_vectors(weights, same, tokens),
                               ov.ov_diagonal_strength(weights, tokens))
    shifted = weights.embed[(tokens + 1) % 6]
    assert ov.mapping_from_vectors(weights, shifted, tokens, tokens)[0, 0].item() == 0.0
    assert ov.mapping_from_vectors(weights, shifted, (tokens + 1) % 6, tokens)[0, 0].item() == 1.0
    assert ov.diagonal_strength_from_vectors(weights, -same, tokens)[0, 0].item() < 0  # reads the negation
    assert ov.partner_strength_from_vectors(weights, shifted, (tokens + 1) % 6, tokens)[0, 0].item() > 0
    with pytest.raises(ValueError, match="one row per partner"):
        ov.mapping_from_vectors(weights, same[:3], tokens, tokens)
    with pytest.raises(ValueError, match="duplicates"):
        ov.mapping_from_vectors(weights, same[:2], [0, 1], [0, 0, 1])


def test_effective_embedding_is_the_residual_after_block_zero(tiny_llama_gqa):
    from helpers import capture

    model = tiny_llama_gqa
    ids = torch.tensor([3, 5, 7])
    vectors = ov.effective_embedding(model, ids)
    assert vectors.shape == (3, model.cfg.d_model) and vectors.dtype == torch.float32
    prompts = ids[:, None]
    if model.cfg.default_prepend_bos:
        prompts = torch.cat([torch.full_like(prompts, model.tokenizer.bos_token_id), prompts], dim=1)
    torch.testing.assert_close(vectors, capture.residual_at_end(model, prompts, [0])[0].float().cpu())
    assert not torch.allclose(vectors, model.W_E[ids].detach().float().cpu())  # block 0 changed them
    with pytest.raises(ValueError, match="empty"):
        ov.effective_embedding(model, [])


# --------------------------------------------------------------------------------------------------
# Succession scores (Gould et al. 2024): the effective OV table scored for an order.


def test_a_head_whose_ov_maps_each_token_to_the_next_scores_one_and_a_copying_head_zero():
    # Heads 0, 1 read value head 0 (i -> i + 1), heads 2, 3 value head 1 (the identity: a copying head).
    shift = torch.roll(torch.eye(6), shifts=1, dims=1)
    weights = _weights(torch.stack([shift, torch.eye(6)]), heads=4)
    table = ov.logits_from_vectors(weights, weights.embed, torch.arange(6))  # [layer, head, 6, 6]
    scores = ov.order_scores(table, torch.arange(6))[0]
    assert scores[0].tolist() == [1.0, 1.0, 0.0, 0.0]
    # Against the reversed order (each token followed by its predecessor) the successor head scores 0, and the
    # copying head, which never names another token, scores 0 under any order.
    assert ov.order_scores(table, torch.arange(5, -1, -1))[0, 0].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_a_head_that_maps_tokens_to_a_random_permutation_scores_at_chance():
    n, n_heads = 8, 4000
    generator = torch.Generator().manual_seed(0)
    targets = torch.stack([torch.randperm(n, generator=generator) for _ in range(n_heads)])  # [head, source]
    table = torch.nn.functional.one_hot(targets, n).float()[None]  # [1, head, source, candidate]
    scores = ov.order_scores(table, torch.arange(n))[0, 0]  # [head]
    assert abs(scores.mean().item() - 1 / n) < 0.01  # P(pi(i) = i + 1) = 1 / n for every scored token
    # ... and a true successor head scores at chance when the order it is read against is shuffled: a shuffled
    # order follows token i with one of the other n - 1 tokens at random, which is the head's i + 1 w.p. 1/(n-1).
    successor = torch.nn.functional.one_hot((torch.arange(n) + 1) % n, n).float()[None, None]
    orders = torch.stack([torch.randperm(n, generator=generator) for _ in range(4000)])
    assert abs(ov.order_scores(successor, orders).mean().item() - 1 / (n - 1)) < 0.01


def test_order_scores_match_a_loop_over_sources():
    generator = torch.Generator().manual_seed(1)
    table = torch.randn(2, 3, 5, 5, generator=generator)
    order = torch.tensor([3, 0, 4, 1, 2])
    by_hand = torch.zeros(2, 3)
    for layer in range(2):
        for head in range(3):
            hits = [int(table[layer, head, order[k]].argmax()) == int(order[k + 1]) for k in range(4)]
            by_hand[layer, head] = sum(hits) / 4
    torch.testing.assert_close(ov.order_scores(table, order)[0], by_hand)


def test_order_scores_and_vector_tables_refuse_bad_shapes():
    with pytest.raises(ValueError, match=r"\[\.\.\., n, n\].*\(2, 5, 4\)"):
        ov.order_scores(torch.rand(2, 5, 4), torch.arange(4))
    with pytest.raises(ValueError, match="permutation of 0..3"):
        ov.order_scores(torch.rand(4, 4), torch.tensor([0, 1, 1, 2]))
    weights = _weights(torch.eye(6)[None], heads=1)
    with pytest.raises(ValueError, match=r"d_model=6.*\(3, 5\)"):
        ov.logits_from_vectors(weights, torch.rand(3, 5), [0, 1])


def test_effective_ov_logits_read_the_block_zero_residual(tiny_llama_gqa):
    model = tiny_llama_gqa
    ids = torch.tensor([3, 5, 7, 9])
    table = ov.effective_ov_logits(model, ids)
    assert table.shape == (2, 4, 4, 4)
    expected = ov.logits_from_vectors(model, ov.effective_embedding(model, ids), ids)
    torch.testing.assert_close(table, expected)
    with pytest.raises(ValueError, match="duplicates"):
        ov.effective_ov_logits(model, [3, 3, 5])
