"""The truthfulness checkers accept the right answer and reject wrong ones."""

import pytest
import torch

from helpers import heads, probes
from helpers.checks import truthfulness


def right_mass_mean(features, labels):
    return features[labels == 1].mean(0) - features[labels == 0].mean(0)


def right_shift(features, labels, found, alpha):
    direction = probes.mass_mean(features, labels)
    mask = heads.masks([found], *features.shape[1:3])[0].float()[..., None]
    return alpha * direction.spread[..., None] * direction.unit * mask


def test_right_answers_pass():
    assert "match" in truthfulness.check_mass_mean(right_mass_mean)
    assert "match" in truthfulness.check_iti_shift(right_shift)


def test_direction_from_true_to_false_is_named():
    with pytest.raises(AssertionError, match="true to false"):
        truthfulness.check_mass_mean(lambda f, y: -right_mass_mean(f, y))


def test_shift_in_every_head_fails():
    def everywhere(features, labels, found, alpha):
        direction = probes.mass_mean(features, labels)
        return alpha * direction.spread[..., None] * direction.unit
    with pytest.raises(AssertionError, match="outside found"):
        truthfulness.check_iti_shift(everywhere)


def test_unit_direction_without_the_spread_fails():
    def unscaled(features, labels, found, alpha):
        mask = heads.masks([found], *features.shape[1:3])[0].float()[..., None]
        return alpha * probes.mass_mean(features, labels).unit * mask
    with pytest.raises(AssertionError, match="spread"):
        truthfulness.check_iti_shift(unscaled)
