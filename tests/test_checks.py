"""`checks.verdict`: a learner's cell reports what the checker says and never raises."""

import pytest

from helpers import checks


def _checker(fn) -> str:
    assert fn(2) == 4, f"on 2 your answer is {fn(2)}; expected 4"
    return "All 1 cases match the reference."


def test_a_stub_as_shipped_reads_as_not_attempted():
    def stub(x):
        raise NotImplementedError("your code here")

    assert checks.verdict(_checker, stub).startswith(checks.NOT_ATTEMPTED)


def test_a_wrong_answer_reads_as_not_yet_with_the_checkers_message():
    assert checks.verdict(_checker, lambda x: x + 1).startswith("Not yet: on 2 your answer is 3; expected 4")


def test_a_crashing_answer_is_reported_not_raised():
    assert checks.verdict(_checker, lambda x: x / 0) == "Not yet: your function raised ZeroDivisionError: division by zero"


def test_a_right_answer_gets_the_checkers_success_message():
    assert checks.verdict(_checker, lambda x: x * 2) == "All 1 cases match the reference."


def test_a_broken_checker_is_not_hidden():
    def checker_with_a_typo(fn):
        return undefined_name  # noqa: F821

    message = checks.verdict(checker_with_a_typo, lambda x: x)
    assert "NameError" in message  # reported (the book's solution cells call checkers directly and would fail)


@pytest.mark.parametrize("module", [checks.ioi, checks.mcq, checks.mcq_answers, checks.patterns, checks.recall])
def test_every_checker_has_a_docstring_and_returns_a_message(module):
    for name in dir(module):
        if name.startswith("check_"):
            assert getattr(module, name).__doc__, f"{module.__name__}.{name} needs a docstring saying what it checks"
