import pytest
import torch

from helpers import capture, heads, needles
from helpers.experiments import global_retrieval


def test_the_local_window_keeps_the_sink_and_the_last_tokens_up_to_the_query():
    mask = global_retrieval.local_window_mask(6, window=2, sinks=1)
    assert mask[5].nonzero().flatten().tolist() == [0, 4, 5]
    assert mask[1].nonzero().flatten().tolist() == [0, 1]
    assert not mask.triu(1).any(), "never a later key"


def test_a_window_as_long_as_the_sequence_is_full_causal_attention():
    assert torch.equal(global_retrieval.local_window_mask(5, window=5), torch.ones(5, 5, dtype=torch.bool).tril())


def test_kv_share_counts_full_and_windowed_heads():
    assert global_retrieval.kv_share(100, 0, 10, window=9, sinks=1) == pytest.approx(0.1)
    assert global_retrieval.kv_share(100, 10, 10) == pytest.approx(1.0)
    assert global_retrieval.kv_share(100, 5, 10, window=9, sinks=1) == pytest.approx(0.55)


def test_bad_window_sizes_are_named():
    with pytest.raises(ValueError, match="window >= 1"):
        global_retrieval.local_window_mask(5, window=0)


def test_the_scores_hook_restricts_only_local_heads_of_each_row(tiny_smol):
    tokens = needles.needle_prompts(tiny_smol, batch=1, length=40, seed=0).tokens.repeat(2, 1)
    seq_len = tokens.shape[1]
    allowed = global_retrieval.local_window_mask(seq_len, window=4)
    local = torch.tensor([[True, False, False, False], [False, False, False, False]])  # row 0: head 0 local
    kept = {}

    def keep(pattern, hook=None):
        kept["p"] = pattern.detach()

    capture.run_until(tiny_smol, tokens, [(global_retrieval.scores_hook(1), global_retrieval.window_hook(local, allowed)),
                                          (capture.pattern_hook(1), keep)], stop_at=capture.pattern_hook(1))
    pattern = kept["p"]
    assert pattern[0, 0][~allowed].abs().max() == 0, "the local head attends only inside its window"
    torch.testing.assert_close(pattern[0, 0].sum(-1), torch.ones(seq_len))
    assert pattern[0, 1][~allowed].sum() > 0 and pattern[1, 0][~allowed].sum() > 0, "other heads and rows keep all"


def test_every_head_global_is_the_full_model_and_the_study_fills_a_row(tiny_smol):
    prompts = needles.needle_prompts(tiny_smol, batch=2, length=40, seed=1)
    every = heads.every(tiny_smol.cfg.n_layers, tiny_smol.cfg.n_heads)
    windowed = global_retrieval.windowed_correct(tiny_smol, prompts, [every, []], window=4)
    from helpers.experiments import retrieval

    full = retrieval.read_decoding(tiny_smol, prompts)
    assert torch.equal(windowed[0], (full.predicted == prompts.answers).float().sum(1))
    sizes = global_retrieval.Sizes(screen_prompts=3, control_prompts=2, length=40, prompts=2, global_counts=(0, 2),
                                   n_random=2)
    row = global_retrieval.study(tiny_smol, sizes=sizes, seed=0).row()
    assert row["model"] == "tiny-smol" and len(row) >= 3
