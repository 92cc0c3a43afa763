import torch

from helpers import needles
from helpers.experiments import retrieval


def test_one_teacher_forced_pass_gives_the_rows_and_tokens_of_step_by_step_greedy_decoding(tiny_smol):
    prompts = needles.needle_prompts(tiny_smol, batch=2, length=40, seed=0)
    greedy = retrieval.greedy_decode(tiny_smol, prompts.tokens, prompts.n_answer)
    forced = retrieval.read_steps(tiny_smol, prompts.teacher_forced(greedy.predicted), prompts.n_answer)
    assert torch.equal(forced.predicted, greedy.predicted)
    torch.testing.assert_close(forced.rows, greedy.rows, atol=1e-5, rtol=1e-4)
    assert torch.equal(forced.tokens, greedy.tokens)


def test_read_decoding_chunks_agree_with_one_pass(tiny_smol):
    prompts = needles.needle_prompts(tiny_smol, batch=3, length=40, seed=2)
    whole = retrieval.read_decoding(tiny_smol, prompts, max_rows=3)
    parts = retrieval.read_decoding(tiny_smol, prompts, max_rows=1)
    assert torch.equal(whole.predicted, parts.predicted)
    torch.testing.assert_close(whole.rows, parts.rows, atol=1e-5, rtol=1e-4)


def test_correct_tokens_metric_counts_argmax_hits_per_repeated_row():
    answers = torch.tensor([[1, 2], [3, 4]])
    logits = torch.zeros(4, 2, 6)
    logits[0, 0, 1] = logits[0, 1, 2] = 1  # prompt 0, both right
    logits[1, 0, 3] = 1  # prompt 1, first right
    logits[3, 1, 4] = 1  # prompt 1 again (second head set), second right
    got = retrieval.correct_tokens_metric(answers)(logits, torch.zeros(4, 5, dtype=torch.long))
    assert got.tolist() == [2.0, 1.0, 0.0, 1.0]


def test_the_study_runs_on_a_tiny_model_and_fills_a_row(tiny_smol):
    sizes = retrieval.Sizes(screen_prompts=3, control_prompts=2, length=32, top_k=2, ablation_prompts=2, n_random=2,
                            heldout_prompts=2, heldout_draws=1, induction_prompts=2, induction_half_len=5)
    done = retrieval.study(tiny_smol, sizes=sizes, seed=0)
    row = done.row()
    assert row["model"] == "tiny-smol" and len(row) >= 3
