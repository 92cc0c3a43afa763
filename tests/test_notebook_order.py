"""The order `make notebooks` hands pages out in (tests/notebooks/longest_first.py)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "notebooks"))
import longest_first  # noqa: E402


def test_every_listed_page_exists_once():
    pages = {path.stem for path in (ROOT / "notebooks").glob("*.ipynb")}
    assert len(set(longest_first.LONGEST_FIRST)) == len(longest_first.LONGEST_FIRST)
    assert set(longest_first.LONGEST_FIRST) <= pages, set(longest_first.LONGEST_FIRST) - pages


def test_listed_pages_start_first_and_the_rest_keep_collection_order():
    class Item:
        def __init__(self, stem):
            self.path = Path(f"/stage/notebooks/{stem}.ipynb")

    stems = ["accuracy_heads", "summary_reader_heads", "constant_heads", "in_context_heads", "amplification_heads"]
    items = [Item(stem) for stem in stems]
    longest_first.pytest_collection_modifyitems(items)
    assert [item.path.stem for item in items] == ["in_context_heads", "summary_reader_heads", "accuracy_heads",
                                                    "constant_heads", "amplification_heads"]


def test_a_page_runs_before_the_page_that_reads_its_studies():
    assert longest_first.page_rank("ioi_circuit") < longest_first.page_rank("inhibition_heads")
    assert longest_first.page_rank("relation_heads") < longest_first.page_rank("subject_heads")


@pytest.mark.parametrize("stem", ["head_atlas", "not_a_page"])
def test_unlisted_pages_rank_after_every_listed_one(stem):
    assert longest_first.page_rank(stem) == len(longest_first.LONGEST_FIRST)
