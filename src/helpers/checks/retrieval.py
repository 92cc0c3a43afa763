"""Checkers for the retrieval page's exercises: one head's retrieval score on one run, and recall of a code."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from helpers import needles


def _run_cases() -> dict[str, tuple[Tensor, Tensor, Tensor, Tensor]]:
    """label -> (rows [step, key] of one head, tokens [key], needle [key] bool, generated [step])."""
    tokens = torch.tensor([5, 6, 7, 11, 12, 13, 14, 8, 9, 10])  # the needle's code is 11 12 13 14, keys 3..6
    needle = torch.zeros(10, dtype=torch.bool)
    needle[3:7] = True
    generated = torch.tensor([11, 12, 13, 14])

    def rows(keys: list[int]) -> Tensor:
        out = torch.full((4, 10), 0.01)
        out[torch.arange(4), torch.tensor(keys)] = 0.9
        return out

    generator = torch.Generator().manual_seed(0)
    cases = {
        "a head that points at each code token as it is said (score 1)": (rows([3, 4, 5, 6]), tokens, needle,
                                                                          generated),
        "a head one key late: it points at the token it reads, not the next one": (rows([2, 3, 4, 5]), tokens, needle,
                                                                                   generated),
        "a head that finds two of four": (rows([3, 0, 5, 9]), tokens, needle, generated),
        "a head inside the needle on the wrong token": (rows([6, 6, 6, 6]), tokens, needle, generated),
        "a model that said a wrong second token": (rows([3, 4, 5, 6]), tokens, needle, torch.tensor([11, 99, 13, 14])),
        "a random head": (torch.rand(4, 10, generator=generator), tokens, needle, generated),
    }
    return cases


def check_retrieval_score(candidate: Callable[[Tensor, Tensor, Tensor, Tensor], float]) -> str:
    """`candidate(rows, tokens, needle, generated)`: one head's retrieval score on one run, as
    `needles.retrieval_hits` computes it."""
    cases = _run_cases()
    for label, (rows, tokens, needle, generated) in cases.items():
        hits = needles.retrieval_hits(rows[None, None, None], tokens[None], needle[None], generated[None])
        want = float(hits[0, 0, 0])
        got = float(candidate(rows.clone(), tokens.clone(), needle.clone(), generated.clone()))
        assert abs(got - want) < 1e-6, f"{label}: expected {want:.3f}, got {got:.3f}"
    return f"All {len(cases)} retrieval-score cases match the reference."


def check_recall(candidate: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]) -> str:
    """`candidate(generated, answers) -> (exact [batch] bool, per-token accuracy [batch])`."""
    answers = torch.tensor([[11, 12, 13, 14], [21, 22, 23, 24], [31, 32, 33, 34], [41, 42, 43, 44]])
    generated = torch.tensor([[11, 12, 13, 14], [21, 22, 23, 99], [32, 33, 34, 35], [0, 0, 0, 0]])
    want_exact, want_accuracy = needles.recall(generated, answers)
    exact, accuracy = candidate(generated.clone(), answers.clone())
    exact, accuracy = torch.as_tensor(exact).bool(), torch.as_tensor(accuracy).float()
    assert exact.shape == (4,) and accuracy.shape == (4,), (
        f"return one exact flag and one accuracy per prompt, shapes (4,); got {tuple(exact.shape)}, "
        f"{tuple(accuracy.shape)}")
    assert torch.equal(exact, want_exact), f"exact match: expected {want_exact.tolist()}, got {exact.tolist()}"
    assert torch.allclose(accuracy, want_accuracy), (
        f"per-token accuracy: expected {want_accuracy.tolist()}, got {accuracy.tolist()} (a code said one token "
        "late, row 3, recalls none of its positions)")
    return "Exact match and per-token accuracy match the reference on 4 prompts."


# --------------------------------------------------------------------------------------------------
# The global-retrieval page's exercises.


def check_local_window(candidate: Callable[..., Tensor]) -> str:
    """`candidate(seq_len, window, sinks) -> [query, key] bool`: the keys a local head may see, as
    `global_retrieval.local_window_mask` builds them."""
    from helpers.experiments import global_retrieval

    cases = [(6, 2, 1), (8, 3, 0), (5, 5, 1), (10, 1, 2), (12, 4, 3)]
    for seq_len, window, sinks in cases:
        want = global_retrieval.local_window_mask(seq_len, window=window, sinks=sinks)
        got = torch.as_tensor(candidate(seq_len, window, sinks)).bool()
        assert got.shape == want.shape, (f"seq_len={seq_len}: expected shape {tuple(want.shape)}, "
                                         f"got {tuple(got.shape)}")
        wrong = (got != want).nonzero()
        if len(wrong):
            q, k = wrong[0].tolist()
            raise AssertionError(f"seq_len={seq_len}, window={window}, sinks={sinks}: query {q}, key {k} should be "
                                 f"{bool(want[q, k])} (a local head sees the first `sinks` keys and the last "
                                 "`window` keys up to the query itself, never a later key)")
    return f"All {len(cases)} window masks match the reference."


def check_kv_share(candidate: Callable[..., float]) -> str:
    """`candidate(seq_len, n_global, n_heads, window, sinks) -> float`: the share of the KV cache kept, as
    `global_retrieval.kv_share` counts it."""
    from helpers.experiments import global_retrieval

    cases = [(100, 0, 10, 9, 1), (100, 10, 10, 32, 1), (180, 5, 270, 32, 1), (20, 3, 72, 32, 1),
             (4096, 40, 270, 512, 4)]
    for seq_len, n_global, n_heads, window, sinks in cases:
        want = global_retrieval.kv_share(seq_len, n_global, n_heads, window=window, sinks=sinks)
        got = float(candidate(seq_len, n_global, n_heads, window, sinks))
        assert abs(got - want) < 1e-9, (f"seq_len={seq_len}, {n_global} of {n_heads} global, window={window}, "
                                        f"sinks={sinks}: expected {want:.4f}, got {got:.4f} (a window longer than "
                                        "the sequence keeps the whole sequence)")
    return f"All {len(cases)} KV-cache shares match the reference."
