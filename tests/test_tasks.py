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


def test_ioi_held_out_family_shares_no_template_or_filler_with_the_main_family(smollm2):
    batch = tasks.ioi_held_out(smollm2, n=12, seed=0)
    main = tasks.ioi(smollm2, n=12, seed=0)
    assert batch.name == "ioi-held-out" and len(batch.info["templates"]) == len(tasks.IOI_HELD_OUT_TEMPLATES)
    assert not set(batch.info["templates"]) & set(main.info["templates"])
    held_words = {w for p in batch.prompts for w in p.replace(".", " ").replace(",", " ").split()}
    assert not held_words & (set(tasks.IOI_NAMES) | set(tasks.IOI_PLACES) | set(tasks.IOI_OBJECTS))
    rows = torch.arange(12)
    assert torch.equal(batch.tokens[rows, batch.positions["io"]], batch.answers)
    assert torch.equal(batch.tokens[rows, batch.positions["s2"]], batch.wrong)


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


# --- natural_text / stdlib_prose ------------------------------------------------------------------------------

def test_natural_text_windows_have_the_requested_length_without_bos_for_smollm2(smollm2):
    batch = tasks.natural_text(smollm2, batch=3, length=16, seed=0)
    assert batch.tokens.shape == (3, 16) and len(batch.prompts) == 3
    assert batch.info["length"] == 16 and batch.info["seed"] == 0


def test_natural_text_windows_follow_the_bos_policy(tiny_gpt2):
    batch = tasks.natural_text(tiny_gpt2, batch=2, length=8, seed=0)
    assert batch.tokens.shape == (2, 9)
    assert (batch.tokens[:, 0] == tiny_gpt2.tokenizer.bos_token_id).all()


def test_natural_text_windows_are_contiguous_pieces_of_the_prose(smollm2):
    batch = tasks.natural_text(smollm2, batch=3, length=12, seed=0)
    stream = torch.tensor(smollm2.tokenizer.encode(tasks.stdlib_prose(), add_special_tokens=False))
    windows = stream.unfold(0, 12, 1)  # every 12-token slice of the corpus
    for row in batch.tokens:
        assert (windows == row).all(dim=1).any()


def test_same_seed_same_windows_and_other_seed_other_windows(smollm2):
    a = tasks.natural_text(smollm2, batch=3, length=10, seed=5)
    b = tasks.natural_text(smollm2, batch=3, length=10, seed=5)
    c = tasks.natural_text(smollm2, batch=3, length=10, seed=6)
    assert torch.equal(a.tokens, b.tokens) and a.prompts == b.prompts
    assert not torch.equal(a.tokens, c.tokens)


def test_natural_text_is_mostly_letters(smollm2):
    text = "".join(tasks.natural_text(smollm2, batch=4, length=32, seed=0).prompts)
    letters = sum(ch.isalpha() or ch.isspace() for ch in text)
    assert letters >= 0.8 * len(text), text


def test_natural_text_longer_than_the_corpus_says_how_long_the_corpus_is(tiny_gpt2):
    with pytest.raises(ValueError, match=r"the corpus has \d+ tokens, too few for windows of 10000000"):
        tasks.natural_text(tiny_gpt2, batch=1, length=10_000_000, seed=0)


def test_natural_text_sizes_must_be_positive(tiny_gpt2):
    with pytest.raises(ValueError, match="length must be at least 1; got 0"):
        tasks.natural_text(tiny_gpt2, batch=2, length=0, seed=0)
    with pytest.raises(ValueError, match="batch must be at least 1; got 0"):
        tasks.natural_text(tiny_gpt2, batch=0, length=5, seed=0)


def test_stdlib_prose_is_paragraphs_of_english_without_doctests():
    prose = tasks.stdlib_prose()
    paragraphs = prose.split("\n\n")
    assert len(paragraphs) >= 100
    assert len(paragraphs) == len(set(paragraphs))  # de-duplicated
    assert all(len(p.split()) >= 12 and ">>>" not in p and "\n" not in p for p in paragraphs)
    words = prose.lower().split()
    for common in ("the", "of", "and", "is"):  # function words: prose, not code or tables
        assert words.count(common) >= 100, common
    assert tasks.stdlib_prose() is prose  # cached: built once per process


def test_reference_prose_is_a_second_corpus_sharing_no_paragraph_with_the_docstrings():
    reference, docstrings = tasks.reference_prose(), tasks.stdlib_prose()
    paragraphs = reference.split("\n\n")
    assert len(reference) > 100_000 and len(paragraphs) > 300
    assert not set(paragraphs) & set(docstrings.split("\n\n"))
    assert all(len(p.split()) >= 12 and ">>>" not in p for p in paragraphs)


def test_natural_text_reads_the_corpus_it_is_asked_for(smollm2):
    held = tasks.natural_text(smollm2, batch=2, length=8, seed=0, corpus="reference")
    main = tasks.natural_text(smollm2, batch=2, length=8, seed=0)
    assert "language reference" in held.info["corpus"] and not torch.equal(held.tokens, main.tokens)
    stream = smollm2.tokenizer.encode(tasks.reference_prose(), add_special_tokens=False)
    first = held.tokens[0].tolist()
    assert any(stream[i:i + 8] == first for i in range(len(stream) - 8))  # a window of the reference corpus
    with pytest.raises(ValueError, match="unknown corpus 'wikipedia'"):
        tasks.natural_text(smollm2, batch=2, length=8, seed=0, corpus="wikipedia")
