import pytest
import torch

from helpers import tasks


def test_repeated_tokens_repeat_the_first_half_exactly(smollm2):
    batch = tasks.repeated_tokens(smollm2, batch=4, half_len=10, seed=0)
    first = batch.positions["first_start"][0].item()
    second = batch.positions["second_start"][0].item()
    assert batch.tokens.shape == (4, 20)  # SmolLM2: no BOS
    torch.testing.assert_close(batch.tokens[:, first:second], batch.tokens[:, second:])


def test_repeated_tokens_follow_the_bos_policy(tiny_gpt2):
    batch = tasks.repeated_tokens(tiny_gpt2, batch=2, half_len=5, seed=0)
    assert batch.tokens.shape == (2, 11)
    assert (batch.tokens[:, 0] == tiny_gpt2.tokenizer.bos_token_id).all()
    assert batch.positions["second_start"][0].item() == 6


def test_same_seed_same_batch_and_other_seed_other_batch(smollm2):
    a = tasks.repeated_tokens(smollm2, batch=3, half_len=8, seed=1)
    b = tasks.repeated_tokens(smollm2, batch=3, half_len=8, seed=1)
    c = tasks.repeated_tokens(smollm2, batch=3, half_len=8, seed=2)
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)


def test_random_tokens_are_ordinary_words(smollm2):
    batch = tasks.random_tokens(smollm2, batch=2, length=30, seed=0)
    special = set(smollm2.tokenizer.all_special_ids)
    assert not special & set(batch.tokens.flatten().tolist())


def test_ioi_prompts_have_the_answer_once_and_the_subject_twice(smollm2):
    batch = tasks.ioi(smollm2, n=20, seed=0)
    assert len(batch) == 20 and batch.corrupted.shape == batch.tokens.shape
    rows = torch.arange(20)
    assert torch.equal(batch.tokens[rows, batch.positions["io"]], batch.answers)
    assert torch.equal(batch.tokens[rows, batch.positions["s1"]], batch.wrong)
    assert torch.equal(batch.tokens[rows, batch.positions["s2"]], batch.wrong)
    assert (batch.positions["s1"] < batch.positions["s2"]).all()
    assert smollm2.tokenizer.decode(batch.tokens[0, -1]) == " to"
    # ABBA then BABA: the indirect object comes first in even prompts, second in odd ones
    assert (batch.positions["io"][0::2] < batch.positions["s1"][0::2]).all()
    assert (batch.positions["io"][1::2] > batch.positions["s1"][1::2]).all()
    # the corrupted twin mentions neither the answer nor the subject
    for row, answer, wrong in zip(batch.corrupted, batch.answers, batch.wrong):
        assert answer not in row and wrong not in row


def test_ioi_uses_every_template_on_both_offline_tokenizers(smollm2):
    batch = tasks.ioi(smollm2, n=10, seed=0)
    assert len(batch.info["templates"]) == len(tasks.IOI_TEMPLATES)


def test_prompts_of_unequal_token_length_raise_a_clear_error(smollm2):
    with pytest.raises(ValueError, match=r"2 different lengths.*single tokens"):
        tasks.tokenize_prompts(smollm2, ["Mary went home", "Mary went home to the store"])


def test_task_batch_rejects_inconsistent_fields():
    tokens = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"answers must have shape \(2,\)"):
        tasks.TaskBatch("t", tokens, ("a", "b"), answers=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="corrupted tokens .* must match"):
        tasks.TaskBatch("t", tokens, ("a", "b"), corrupted=torch.zeros(2, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="position 'end'"):
        tasks.TaskBatch("t", tokens, ("a", "b"), positions={"end": torch.tensor([4, 5])})
    with pytest.raises(ValueError, match="integer tensor"):
        tasks.TaskBatch("t", torch.zeros(2, 5), ("a", "b"))


def test_sizes_must_be_positive(smollm2):
    with pytest.raises(ValueError, match="half_len must be at least 1"):
        tasks.repeated_tokens(smollm2, batch=2, half_len=0, seed=0)
