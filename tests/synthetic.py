"""Hand-built attention patterns shared by the score and family tests."""

import torch


def one_hot_pattern(seq_len: int, offset: int) -> torch.Tensor:
    """[query, key] pattern attending to key q - offset (key 0 when q < offset)."""
    keys = (torch.arange(seq_len) - offset).clamp(min=0)
    return torch.nn.functional.one_hot(keys, seq_len).float()


def uniform_causal(seq_len: int) -> torch.Tensor:
    """[query, key] pattern spreading each query's attention evenly over the keys it can see."""
    pattern = torch.ones(seq_len, seq_len).tril()
    return pattern / pattern.sum(-1, keepdim=True)


def mean_of_inverse_positions(queries) -> float:
    """Uniform causal attention puts 1 / (q + 1) on each of query q's keys; the mean over one-target queries."""
    queries = list(queries)
    return sum(1 / (q + 1) for q in queries) / len(queries)
