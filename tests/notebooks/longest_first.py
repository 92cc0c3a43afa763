"""A pytest plugin for `make notebooks`: the pages that take longest start first.

nbmake runs the pages on two workers (pytest-xdist, ``--dist load``, one page handed out at a time). In
collection (alphabetical) order the longest page can start last while the other worker has nothing left: on
a 2-core AMD EPYC with an empty results store, the summary reader page (253 s) ran alone for its last four
minutes. Handing out the longest pages first leaves only short pages for the end.

``LONGEST_FIRST`` lists the pages by their time on that run, longest first (cold store, one thread each,
2026-12-06); pages not listed keep collection order after them. A page also runs before the pages that read
what it stores: the IOI circuit page computes the S-inhibition study the S-inhibition page then reads (in
collection order both computed it at once; that page went from 139 s to 92 s).
A stale list costs only wall time, never a result: every page still runs, each in its own kernel.

Usage: ``PYTHONPATH=tests/notebooks pytest -p longest_first --nbmake -n 2 --dist load --maxschedchunk 1 ...``
"""

from __future__ import annotations

from pathlib import Path

import pytest

LONGEST_FIRST = (
    "in_context_heads", "summary_reader_heads", "function_vector_heads", "memory_heads", "mover_heads",
    "retrieval_heads", "ioi_circuit", "positional_heads", "subword_merge_heads", "induction_heads",
    "semantic_induction_heads", "sentiment_summarizer_heads", "inhibition_heads", "previous_token_heads",
    "rare_words_heads", "letter_mover_heads", "negative_name_mover_heads", "name_mover_heads",
    "backup_name_mover_heads", "global_retrieval_heads", "duplicate_heads", "iteration_heads", "context_heads",
    "relation_heads", "successor_heads", "correct_heads", "negative_heads", "syntactic_heads",
    "associative_memories",
)


def page_rank(stem: str) -> int:
    """Where page `stem` starts: its place in `LONGEST_FIRST`, or after every listed page."""
    return LONGEST_FIRST.index(stem) if stem in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: page_rank(Path(str(item.path)).stem))  # stable: unlisted pages keep their order
