"""The accuracy checker accepts the right answer and rejects wrong ones."""

import pytest

from helpers.checks import accuracy


def right_margin(logits, true_index):
    index = true_index.expand(*logits.shape[:-1])[..., None]
    return logits.gather(-1, index)[..., 0] - logits.scatter(-1, index, float("-inf")).amax(-1)


def test_right_answer_passes():
    assert "match" in accuracy.check_answer_margin(right_margin)


def test_max_over_every_answer_is_named():
    def including_true(logits, true_index):
        index = true_index.expand(*logits.shape[:-1])[..., None]
        return logits.gather(-1, index)[..., 0] - logits.amax(-1)
    with pytest.raises(AssertionError, match="true one included"):
        accuracy.check_answer_margin(including_true)


def test_wrong_shape_fails():
    with pytest.raises(AssertionError, match="shape"):
        accuracy.check_answer_margin(lambda logits, t: right_margin(logits, t)[..., None])


def test_cross_fitted_direction_passes_and_leaks_are_named():
    from helpers import probes

    def right(features, labels, folds, fold):
        fit = folds != fold
        return probes.mass_mean(features[fit], labels[fit]).shift

    assert "match" in accuracy.check_cross_fitted(right)
    with pytest.raises(AssertionError, match="fold's own items"):
        accuracy.check_cross_fitted(lambda f, y, folds, fold: right(f, y, folds, 1 - fold))
    with pytest.raises(AssertionError, match="every item"):
        accuracy.check_cross_fitted(lambda f, y, folds, fold: probes.mass_mean(f, y).shift)
