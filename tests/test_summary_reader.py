"""Summary-reader helpers on hand-built cases whose answers are known."""

import pytest
import torch

from helpers.experiments.summary_reader import route_scores, sign_flip_null, values_patched_z


def test_route_scores_sum_the_marked_keys_and_apply_the_sign():
    per_key = torch.zeros(2, 3, 2, 5)  # [layer, head, batch, key]
    per_key[1, 2, :, 1] = 1.0  # L1H2 reads +1 from key 1 on both prompts
    per_key[1, 2, :, 3] = 0.5  # and +0.5 from key 3
    sign = torch.tensor([1, -1])

    routes = route_scores(per_key, sign, {"summary": [1], "words": [3], "other": [0, 2, 4]})

    torch.testing.assert_close(routes["summary"][1, 2], torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(routes["words"][1, 2], torch.tensor([0.5, -0.5]))
    assert routes["other"].abs().sum() == 0
    assert routes["summary"].sum() - routes["summary"][1, 2].sum() == 0


def test_route_scores_reject_overlapping_routes_and_outside_keys():
    per_key = torch.zeros(1, 1, 2, 4)
    with pytest.raises(ValueError, match="overlaps"):
        route_scores(per_key, torch.ones(2), {"a": [1, 2], "b": [2]})
    with pytest.raises(ValueError, match="outside the 4 keys"):
        route_scores(per_key, torch.ones(2), {"a": [4]})
    with pytest.raises(ValueError, match=r"sign must be \[batch\]"):
        route_scores(per_key, torch.ones(3), {"a": [0]})


def test_sign_flip_null_of_a_constant_head_is_centred_and_bounded():
    values = torch.ones(1, 1, 64)  # a head that always pushes +1
    null = sign_flip_null(values, 500, seed=0)
    assert null.shape == (1, 1, 500)
    assert null.abs().max() <= 1.0
    assert abs(float(null.mean())) < 0.05  # random signs cancel on average
    torch.testing.assert_close(null, sign_flip_null(values, 500, seed=0))  # seeded
    with pytest.raises(ValueError, match="n_draws"):
        sign_flip_null(values, 0, seed=0)


def _setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n_layers, batch, n_heads, kv, keys, d_head = 2, 3, 4, 2, 5, 6
    attention = torch.softmax(torch.randn(n_layers, batch, n_heads, keys, generator=g), -1)
    clean_v = [torch.randn(batch, keys, kv, d_head, generator=g) for _ in range(n_layers)]
    source_v = [torch.randn(batch, keys, kv, d_head, generator=g) for _ in range(n_layers)]

    def z_of(values):  # hook_z at END: sum_j A_j v_j, query head h reads KV head h // 2
        return torch.stack([torch.einsum("bhk,bkhd->bhd", attention[layer],
                                         values[layer].repeat_interleave(n_heads // kv, dim=2))
                            for layer in range(n_layers)])
    return attention, clean_v, source_v, z_of


def test_values_patched_everywhere_give_the_source_values_under_clean_attention():
    attention, clean_v, source_v, z_of = _setup()
    patched = values_patched_z(attention, z_of(clean_v), clean_v, source_v, range(5))
    torch.testing.assert_close(patched, z_of(source_v))


def test_values_patched_by_route_add_up_to_the_whole_patch():
    attention, clean_v, source_v, z_of = _setup(1)
    clean = z_of(clean_v)
    parts = [values_patched_z(attention, clean, clean_v, source_v, where) - clean for where in ([0, 1], [2], [3, 4])]
    torch.testing.assert_close(sum(parts), z_of(source_v) - clean)
    untouched = values_patched_z(attention, clean, clean_v, source_v, [])
    torch.testing.assert_close(untouched, clean)


def test_values_patched_reject_values_of_the_wrong_shape():
    attention, clean_v, source_v, z_of = _setup()
    with pytest.raises(ValueError, match="values of layer 0"):
        values_patched_z(attention, z_of(clean_v), [v[:, :4] for v in clean_v], source_v, [0])
