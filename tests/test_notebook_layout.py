"""Every page's Colab setup cell is the one generated from `_config.yml` (the repository URL lives in one
place) and is collapsed in the book; the generator and the width rule work on hand-made notebooks."""

import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).parent / "notebooks"))
import setup_cell  # noqa: E402

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_setup_cell_is_generated_from_the_config_and_hidden_in_the_book(path):
    notebook = nbformat.read(path, as_version=4)
    cell = notebook.cells[setup_cell.setup_index(notebook)]
    assert cell.source == setup_cell.setup_source(), \
        f"{path.name}: the setup cell differs; run `python tests/notebooks/setup_cell.py --write notebooks/*.ipynb`"
    assert setup_cell.TAG in cell.metadata.get("tags", [])


def test_the_setup_cell_reads_the_repository_url_from_the_config(tmp_path):
    config = tmp_path / "_config.yml"
    config.write_text("title: t\nrepository:\n  path_to_book: ''\n  url: https://example.org/me/book\n  branch: main\n")
    url = setup_cell.repository_url(config)
    assert url == "https://example.org/me/book"
    assert 'REPOSITORY = "https://example.org/me/book"' in setup_cell.setup_source(url)
    assert max(len(line) for line in setup_cell.setup_source(url).splitlines()) <= setup_cell.MAX_CODE_WIDTH
    config.write_text("title: t\n")
    with pytest.raises(ValueError, match="no repository.url"):
        setup_cell.repository_url(config)


def test_wide_lines_counts_only_code_a_reader_sees():
    notebook = nbformat.v4.new_notebook()
    wide = "x = " + "1 + " * 30 + "1"
    notebook.cells = [nbformat.v4.new_markdown_cell(wide), nbformat.v4.new_code_cell("y = 1\n" + wide),
                      nbformat.v4.new_code_cell(wide, metadata={"tags": ["hide-input"]})]
    assert setup_cell.wide_lines(notebook) == [(1, 2, wide)]
