"""helpers.conflict on hand-built inputs: a whitespace tokenizer stands in for the model's, so every
expected token, length and answer can be worked out on paper."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

from helpers.experiments import conflict


class WordTokenizer:
    """One token per word or punctuation mark; ids are handed out on first sight (stable within a test)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def _id(self, word: str) -> int:
        return self.ids.setdefault(word, len(self.ids))

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self._id(word) for word in re.findall(r"\w+|[^\w\s]", text)]


class StubModel:
    """Tokenizes like a model without BOS; calling it returns logits that favour a fixed token per row."""

    def __init__(self, logits_for=None) -> None:
        self.tokenizer = WordTokenizer()
        self.cfg = SimpleNamespace(device="cpu", d_vocab=64, default_prepend_bos=False)
        self.logits_for = logits_for

    def to_tokens(self, text: str) -> torch.Tensor:
        return torch.tensor([self.tokenizer.encode(text)])

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.logits_for(tokens)

    # What capture.last_position_logits needs: the final norm's output goes through W_U. Here the
    # "residual" is the logits themselves and W_U the identity.
    W_U = torch.eye(64)
    unembed = SimpleNamespace()

    def run_with_hooks(self, tokens: torch.Tensor, fwd_hooks=()) -> torch.Tensor:
        logits = self.logits_for(tokens)
        for name, hook in fwd_hooks:
            if name == "ln_final.hook_out":
                hook(logits)
        return logits


TABLE = [(f"Land{i}", f"City{i}") for i in range(12)] + [
    ("Two Words", "City20"),  # a two-token country: outnumbered by one-token countries, so dropped
    ("Land30", "Twin Cities"),  # a two-token capital: dropped
    ("Land31", "City0"),  # a second country with City0's token: both dropped (one country per answer)
]


def test_capital_pairs_keep_single_token_capitals_of_the_common_country_length():
    pairs = conflict.capital_pairs(StubModel(), TABLE)
    assert pairs == [(f"Land{i}", f"City{i}") for i in range(1, 12)]


def test_capital_pairs_say_how_many_survived_when_too_few():
    with pytest.raises(ValueError, match=r"only 3 of 3 .*single-token capital"):
        conflict.capital_pairs(StubModel(), TABLE[:3])


def test_conflict_prompts_are_aligned_equal_length_and_never_counterfactual_to_themselves():
    model = StubModel()
    pairs = conflict.capital_pairs(model, TABLE)
    prompts = conflict.conflict_prompts(model, pairs[:4], n=10, seed=3, counterfactuals=pairs)
    assert len(prompts) == 10 and prompts.memory_only.shape[0] == prompts.conflict.shape[0] == 10
    assert prompts.conflict.shape == prompts.agreeing.shape
    # "The capital of X is Y ." adds 7 tokens to the question
    assert prompts.conflict.shape[1] == prompts.memory_only.shape[1] + 7
    for i, (country, memory, context) in enumerate(prompts.rows):
        assert context != memory and (country, memory) in pairs[:4]
        assert prompts.text("conflict", i) == f"The capital of {country} is {context}. Q: What is the capital of {country}? A:"
        assert prompts.text("agreeing", i).startswith(f"The capital of {country} is {memory}. ")
        assert prompts.memory_ids[i].item() == model.tokenizer.ids[memory]
        assert prompts.context_ids[i].item() == model.tokenizer.ids[context]
        assert prompts.context_ids[i].item() in prompts.conflict[i].tolist()
        assert prompts.memory_ids[i].item() not in prompts.conflict[i].tolist()
    # every country appears before any repeats (cycled in a shuffled order)
    assert {row[0] for row in prompts.rows[:4]} == {country for country, _ in pairs[:4]}


def test_conflict_prompts_are_seeded():
    model = StubModel()
    pairs = conflict.capital_pairs(model, TABLE)
    first = conflict.conflict_prompts(model, pairs, n=8, seed=1)
    again = conflict.conflict_prompts(model, pairs, n=8, seed=1)
    other = conflict.conflict_prompts(model, pairs, n=8, seed=2)
    assert first.rows == again.rows and torch.equal(first.conflict, again.conflict)
    assert first.rows != other.rows


def test_text_names_the_forms_it_knows():
    model = StubModel()
    prompts = conflict.conflict_prompts(model, conflict.capital_pairs(model, TABLE), n=2, seed=0)
    with pytest.raises(KeyError, match="memory_only"):
        prompts.text("question")


def test_answer_kinds_and_shares_from_top1_tokens():
    memory, context = torch.tensor([5, 6, 7, 8]), torch.tensor([9, 9, 9, 9])
    top1 = torch.tensor([5, 9, 1, 8])  # memory, context, something else, memory
    kinds = conflict.answer_kinds(top1, memory, context)
    assert kinds.tolist() == [conflict.MEMORY, conflict.CONTEXT, conflict.OTHER, conflict.MEMORY]
    shares = conflict.answer_shares(kinds)
    assert shares["memory"].mean == pytest.approx(0.5) and shares["context"].mean == pytest.approx(0.25)
    assert shares["other"].mean == pytest.approx(0.25)


def test_context_wins_where_the_memory_minus_context_difference_is_negative():
    assert conflict.context_wins(torch.tensor([1.0, -0.5, 0.0, -3.0])).tolist() == [False, True, False, True]


def test_candidate_accuracy_reads_the_argmax_among_candidates():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    assert conflict.candidate_accuracy(logits, torch.tensor([0, 1])).tolist() == [True, False]
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        conflict.candidate_accuracy(logits, torch.tensor([0]))


@pytest.mark.parametrize("n", [2, 3, 10, 57])
def test_derangement_is_a_seeded_permutation_without_fixed_points(n):
    order = conflict.derangement(n, seed=4)
    assert sorted(order.tolist()) == list(range(n))
    assert (order != torch.arange(n)).all()
    assert torch.equal(order, conflict.derangement(n, seed=4))


def test_last_logits_keeps_the_last_position_only():
    def logits_for(tokens):  # position p favours token (first token + p); the last row decides
        batch, seq_len = tokens.shape
        out = torch.zeros(batch, seq_len, 64)
        for b in range(batch):
            for p in range(seq_len):
                out[b, p, (tokens[b, 0] + p) % 64] = 10.0
        return out

    tokens = torch.tensor([[1, 2, 3], [7, 8, 9]])
    picked, top1 = conflict.last_logits(StubModel(logits_for), tokens, torch.tensor([3, 9, 4]))
    assert top1.tolist() == [3, 9]
    assert picked.tolist() == [[10.0, 0.0, 0.0], [0.0, 10.0, 0.0]]


def test_findings_row_rejects_an_unknown_kind():
    study = conflict.Study(model="m", knowledge=None, prompts=None, answers=None, screen=None, ablation=None)
    with pytest.raises(ValueError, match="'memory' or 'context'"):
        study.row("induction")


def test_answers_under_conflict_for_a_model_that_always_copies_the_context():
    def copy_sixth_token(tokens):  # "The capital of X is Y ." : token 5 is the context capital Y
        out = torch.zeros(tokens.shape[0], tokens.shape[1], 64)
        out[torch.arange(tokens.shape[0]), -1, tokens[:, 5]] = 5.0
        return out

    model = StubModel(copy_sixth_token)
    pairs = conflict.capital_pairs(model, TABLE)
    prompts = conflict.conflict_prompts(model, pairs, n=6, seed=0)
    answers = conflict.answers_under_conflict(model, prompts)
    assert answers.context_share.mean == 1.0 and answers.top1["context"].mean == 1.0
    assert answers.memory_minus_context.tolist() == [-5.0] * 6
    assert answers.memory_only_share.mean == 0.0  # no context: both capitals tie at 0, so context does not win


def test_the_table_has_over_100_distinct_countries_and_no_capital_named_like_its_country():
    countries = [country for country, _ in conflict.COUNTRY_CAPITALS]
    assert len(countries) >= 100 and len(set(countries)) == len(countries)
    assert all(capital != country for country, capital in conflict.COUNTRY_CAPITALS)


def test_a_prompt_format_words_the_three_forms_around_one_question():
    from helpers.experiments.conflict import PromptFormat

    fmt = PromptFormat("statement, one example", "The capital of {country} is",
                       preamble="The capital of Japan is Tokyo.\n", example=("Japan", "Tokyo"))
    assert fmt.text("memory_only", "France", "Paris", "Rome") == "The capital of Japan is Tokyo.\nThe capital of France is"
    assert fmt.text("conflict", "France", "Paris", "Rome") == (
        "The capital of Japan is Tokyo.\nThe capital of France is Rome. The capital of France is")
    assert fmt.text("agreeing", "France", "Paris", "Rome").count("Paris") == 1
    with pytest.raises(KeyError, match="form must be one of"):
        fmt.text("other", "France", "Paris", "Rome")


def test_format_rows_survive_the_results_store_round_trip():
    from helpers import stats
    from helpers.experiments import conflict_formats as cf

    estimate = stats.Estimate(mean=0.5, lower=0.4, upper=0.6, n=10)
    row = cf.FormatRow("Q/A", estimate, estimate, (("France", "Paris"), ("Italy", "Rome")),
                       {"memory": estimate, "context": estimate, "other": estimate}, estimate, torch.ones(2, 3))
    back = cf._row(cf._state(row))
    assert back.known == row.known and back.top1 == row.top1 and back.recall == row.recall
    assert torch.equal(back.dla, row.dla)
    empty = cf.FormatRow("statement", estimate, estimate, (), None, None, None)
    assert cf._row(cf._state(empty)) == empty


def test_a_study_reports_which_heads_keep_their_role_in_each_measured_format():
    from helpers import stats
    from helpers.experiments import conflict_formats as cf

    estimate = stats.Estimate(mean=0.5, lower=0.4, upper=0.6, n=10)
    dla = torch.tensor([[1.0, -1.0], [0.5, 0.2]])
    rows = (cf.FormatRow("a", estimate, estimate, (), {"memory": estimate, "context": estimate, "other": estimate},
                         estimate, dla),
            cf.FormatRow("b", estimate, estimate, (), None, None, None))
    study = cf.Study(model="m", rows=rows)
    assert study.keeps([(0, 0), (0, 1)], "memory") == {"a": [True, False]}
    assert study.keeps([(0, 1)], "context") == {"a": [True]}
    with pytest.raises(ValueError, match="role must be"):
        study.keeps([(0, 0)], "neither")


def test_a_studys_shares_list_recall_for_every_format_and_the_conflict_where_it_was_measured():
    from helpers import stats
    from helpers.experiments import conflict_formats as cf

    recall, won = stats.Estimate(mean=0.8, lower=0.7, upper=0.9, n=10), stats.Estimate(mean=0.1, lower=0.0, upper=0.2, n=10)
    rows = (cf.FormatRow("a", recall, recall, (), None, won, torch.zeros(1, 1)),
            cf.FormatRow("b", recall, recall, (), None, None, None))
    assert cf.Study(model="m", rows=rows).shares() == {"a: top-1 recall": recall, "a: context beats memory": won,
                                                       "b: top-1 recall": recall}
