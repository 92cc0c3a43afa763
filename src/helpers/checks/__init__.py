"""Checkers for the exercises: compare a learner's function with the book's on small synthetic inputs.

Each checker takes the learner's function and returns a short success message, or raises
``AssertionError`` naming the first input on which the answer differs from the reference, with both
values, so the fix is obvious. One module per shared experiment; `verdict` is what a learner's cell calls:

    def my_previous_token_score(pattern): ...
    print(checks.verdict(checks.patterns.check_previous_token_score, my_previous_token_score))

A learner's cell never raises: it prints "Not attempted yet", "Not yet: <what is wrong>" or the success
message. The book's solution cells call the checker directly, so a wrong solution fails the page.
"""

from __future__ import annotations

from collections.abc import Callable

from helpers.checks import (
    accuracy,
    atlas,
    consistency,
    fact_sources,
    function_vectors,
    in_context,
    ioi,
    iteration,
    mcq,
    mcq_answers,
    patterns,
    positional,
    rare_words,
    recall,
    retrieval,
    semantic_induction,
    sentiment,
    subwords,
    successor,
    summary_reader,
    syntax,
    truthfulness,
    vulnerable,
)

__all__ = ["accuracy", "atlas", "consistency", "fact_sources", "function_vectors", "in_context", "ioi", "iteration",
           "mcq", "mcq_answers", "patterns", "positional",
           "rare_words", "recall", "retrieval", "semantic_induction", "sentiment", "subwords", "successor", "summary_reader",
           "syntax", "truthfulness", "vulnerable",
           "verdict", "NOT_ATTEMPTED", "NOT_YET"]

NOT_ATTEMPTED = "Not attempted yet"
NOT_YET = "Not yet"


def verdict(checker: Callable[..., str], *answers: object) -> str:
    """What `checker` says about the learner's `answers`, as one line that never raises.

    ``NotImplementedError`` (the stub as shipped) reads as not attempted; an ``AssertionError`` from the
    checker as "Not yet" with its message; any other exception as "Not yet" with its type and message,
    since a learner's function that crashes is a wrong answer, not a broken page.
    """
    try:
        return checker(*answers)
    except NotImplementedError:
        return f"{NOT_ATTEMPTED}: fill in the function above, then run this cell again."
    except AssertionError as error:
        return f"{NOT_YET}: {error}"
    except Exception as error:  # noqa: BLE001 - a learner's crash is reported, not raised
        return f"{NOT_YET}: your function raised {type(error).__name__}: {error}"
