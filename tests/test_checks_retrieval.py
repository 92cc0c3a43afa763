import pytest
import torch

from helpers.checks import retrieval


def reference_score(rows, tokens, needle, generated):
    top = rows.argmax(-1)
    return float(((needle[top]) & (tokens[top] == generated)).sum()) / float(needle.sum())


def test_the_retrieval_score_checker_passes_the_reference():
    assert "match" in retrieval.check_retrieval_score(reference_score)


def test_the_retrieval_score_checker_fails_a_score_that_ignores_the_token():
    def wrong(rows, tokens, needle, generated):
        return float(needle[rows.argmax(-1)].sum()) / float(needle.sum())

    with pytest.raises(AssertionError, match="expected"):
        retrieval.check_retrieval_score(wrong)


def test_the_recall_checker_passes_the_reference_and_fails_a_wrong_accuracy():
    def right(generated, answers):
        same = generated == answers
        return same.all(1), same.float().mean(1)

    def wrong(generated, answers):
        same = generated == answers
        return same.all(1), torch.isin(generated, answers).float().mean(1)

    assert "match" in retrieval.check_recall(right)
    with pytest.raises(AssertionError, match="per-token"):
        retrieval.check_recall(wrong)


def reference_window(seq_len, window, sinks):
    query, key = torch.arange(seq_len)[:, None], torch.arange(seq_len)[None, :]
    return (key <= query) & ((key < sinks) | (key > query - window))


def test_the_window_checker_passes_the_reference_and_fails_a_window_without_sinks():
    assert "match" in retrieval.check_local_window(reference_window)

    def no_sinks(seq_len, window, sinks):
        return reference_window(seq_len, window, 0)

    with pytest.raises(AssertionError, match="should be"):
        retrieval.check_local_window(no_sinks)


def test_the_kv_share_checker_passes_the_reference_and_fails_an_uncapped_window():
    def right(seq_len, n_global, n_heads, window, sinks):
        local = min(seq_len, sinks + window)
        return (n_global * seq_len + (n_heads - n_global) * local) / (n_heads * seq_len)

    def uncapped(seq_len, n_global, n_heads, window, sinks):
        return (n_global * seq_len + (n_heads - n_global) * (sinks + window)) / (n_heads * seq_len)

    assert "match" in retrieval.check_kv_share(right)
    with pytest.raises(AssertionError, match="expected"):
        retrieval.check_kv_share(uncapped)
