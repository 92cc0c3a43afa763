"""The function-vector checkers accept the right answer and reject wrong ones."""

import pytest
import torch

from helpers.checks import function_vectors


def right_vector(outputs, found):
    return torch.stack([outputs[layer, head] for layer, head in found]).sum(0)


def right_derangement(n, generator):
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        if all(i != j for i, j in enumerate(order)):
            return order


def test_right_answers_pass():
    assert "match" in function_vectors.check_function_vector(right_vector)
    assert "move every label" in function_vectors.check_derangement(right_derangement)


def test_mean_instead_of_sum_fails():
    def wrong(outputs, found):
        return torch.stack([outputs[layer, head] for layer, head in found]).mean(0)
    with pytest.raises(AssertionError, match="a head that writes nothing"):
        function_vectors.check_function_vector(wrong)


def test_plain_permutation_and_fixed_rotation_fail():
    with pytest.raises(AssertionError, match="with their own label"):
        function_vectors.check_derangement(lambda n, g: torch.randperm(n, generator=g).tolist())
    with pytest.raises(AssertionError, match="must be random"):
        function_vectors.check_derangement(lambda n, g: [(i + 1) % n for i in range(n)])
