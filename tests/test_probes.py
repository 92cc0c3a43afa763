"""helpers.probes on synthetic heads with a planted direction: the planted head is found, the rest are chance."""

import pytest
import torch

from helpers import probes


def planted(n_items: int = 200, n_layers: int = 3, n_heads: int = 4, d_head: int = 8, *, seed: int = 0,
            head=(1, 2), gap: float = 6.0, direction: torch.Tensor | None = None):
    """Gaussian features; in `head` alone, class 1 sits `gap` further along a fixed unit direction."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n_items, n_layers, n_heads, d_head, generator=generator)
    labels = (torch.arange(n_items) % 2).long()
    if direction is None:
        direction = torch.randn(d_head, generator=generator)
        direction = direction / direction.norm()
    features[:, head[0], head[1]] += gap * labels[:, None].float() * direction
    return features, labels, direction


def test_planted_head_scores_near_one_and_other_heads_near_chance():
    features, labels, _ = planted()
    accuracy = probes.cross_validated_accuracy(features, labels)
    assert accuracy.shape == (3, 4)
    assert accuracy[1, 2] > 0.97
    others = torch.cat([accuracy.flatten()[:6], accuracy.flatten()[7:]])
    assert others.max() < 0.7 and 0.4 < others.mean() < 0.6


def test_shuffled_labels_bring_the_planted_head_to_chance():
    features, labels, _ = planted()
    shuffled = probes.shuffled_accuracy(features, labels, n_shuffles=4, seed=1)
    assert shuffled.shape == (4, 3, 4)
    assert 0.4 < float(shuffled.mean()) < 0.6
    assert float(shuffled[:, 1, 2].mean()) < 0.65


def test_shuffle_within_keeps_each_folds_class_balance():
    labels = torch.tensor([0, 1] * 10)
    folds = torch.tensor([0] * 8 + [1] * 12)
    out = probes.shuffle_within(labels, folds, seed=3)
    for fold in (0, 1):
        assert int(out[folds == fold].sum()) == int(labels[folds == fold].sum())


def test_mass_mean_recovers_the_planted_direction_and_its_spread():
    features, labels, direction = planted()
    found = probes.mass_mean(features, labels)
    assert found.unit.shape == (3, 4, 8) and found.spread.shape == (3, 4)
    assert float(found.unit[1, 2] @ direction) > 0.95
    torch.testing.assert_close(found.unit.norm(dim=-1), torch.ones(3, 4))
    assert found.spread[1, 2] > 2.5  # the two classes 6 apart along it: spread about sqrt(1 + 9)


def test_batched_fit_equals_one_fit_per_probe():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(3, 40, 5, generator=generator, dtype=torch.float64)
    y = (torch.rand(40, generator=generator) > 0.5).double()
    w, b = probes.fit_logistic(x, y)
    for i in range(3):
        wi, bi = probes.fit_logistic(x[i:i + 1], y)
        torch.testing.assert_close(w[i:i + 1], wi)
        torch.testing.assert_close(b[i:i + 1], bi)
    # the gradient of the penalised loss vanishes at the fit
    p = torch.sigmoid((x @ w[..., None])[..., 0] + b[:, None])
    gradient = (x * (p - y)[..., None]).sum(1) + probes.RIDGE * w
    assert float(gradient.abs().max()) < 1e-6


def test_transfer_carries_a_planted_head_to_new_items():
    features, labels, direction = planted(seed=0)
    other, other_labels, _ = planted(seed=5, n_items=60, direction=direction)
    accuracy = probes.transfer_accuracy(features, labels, other, other_labels)
    assert accuracy[1, 2] > 0.95 and accuracy[0, 0] < 0.75


def test_bad_inputs_name_the_shapes():
    features, labels, _ = planted()
    with pytest.raises(ValueError, match=r"\[item, layer, head, d_head\]"):
        probes.cross_validated_accuracy(features[0], labels)
    with pytest.raises(ValueError, match="labels must be"):
        probes.cross_validated_accuracy(features, labels[:-1])
    with pytest.raises(ValueError, match="0 or 1"):
        probes.cross_validated_accuracy(features, labels * 2)
    with pytest.raises(ValueError, match="two folds"):
        probes.cross_validated_accuracy(features, labels, torch.zeros_like(labels))
    with pytest.raises(ValueError, match="both classes"):
        probes.mass_mean(features, torch.zeros_like(labels))
