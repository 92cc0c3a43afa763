"""Every page's Colab setup cell is the one generated from `_config.yml` (the repository URL lives in one
place) and is collapsed in the book; the code a reader sees fits the column; every page links its family and
methods to the glossary and its shared experiment; the generator and the width rule work on hand-made
notebooks."""

import re
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_code_a_reader_sees_fits_the_column(path):
    wide = setup_cell.wide_lines(nbformat.read(path, as_version=4))
    assert not wide, (f"{path.name}: {len(wide)} visible code lines over {setup_cell.MAX_CODE_WIDTH} characters, "
                      f"the first in cell {wide[0][0]}: {wide[0][2]!r}")


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


GLOSSARY = Path(__file__).parents[1] / "book" / "glossary.md"
SHARED_EXPERIMENTS = sorted((Path(__file__).parents[1] / "book" / "experiments").glob("*.md"))


def glossary_terms() -> set[str]:
    """Every term the glossary defines (lines that open an entry inside a ``{glossary}`` block)."""
    terms, inside = set(), False
    for line in GLOSSARY.read_text().splitlines():
        if line.startswith("```{glossary}"):
            inside = True
        elif line.startswith("```"):
            inside = False
        elif inside and line and not line.startswith(" "):
            terms.add(line.strip().lower())
    return terms


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_page_links_its_family_and_methods_to_the_glossary(path):
    header = nbformat.read(path, as_version=4).cells[0].source
    rows = [line for line in header.splitlines() if line.startswith("| **Glossary** |")]
    assert len(rows) == 1, f"{path.name}: the header table needs one '| **Glossary** |' row"
    linked = [term.lower() for term in re.findall(r"\{term\}`([^`<]+)`", rows[0])]
    assert len(linked) >= 3, f"{path.name}: link the family and the methods the page uses, not only {linked}"
    missing = set(linked) - glossary_terms()
    assert not missing, f"{path.name}: {sorted(missing)} are not in book/glossary.md"


def test_every_shared_experiment_page_is_linked_from_the_pages_that_read_it():
    for page in SHARED_EXPERIMENTS:
        readers = set(re.findall(r"\{doc\}`\.\./\.\./notebooks/(\w+)`", page.read_text()))
        assert len(readers) >= 2, f"{page.name} names {readers}: a shared experiment has several readers"
        for stem in readers:
            header = nbformat.read(Path(__file__).parents[1] / "notebooks" / f"{stem}.ipynb", as_version=4).cells[0].source
            assert f"{{doc}}`../book/experiments/{page.stem}`" in header, f"{stem} does not link {page.name}"


# Lines every page carries on purpose: how the exercises work, their header, the assert cells' note.
# The head-index paragraph is generated from head_index.NAMINGS: two pages naming the same heads share it.
BOILERPLATE = ("Each exercise with code has a cell", "**Difficulty**", "The cells below check", "The cell below checks",
               "Heads named on this page, in the {doc}`head index")
MIN_PARAGRAPH = 100  # characters; shorter repeats are captions' stock phrases, headings and links


def paragraphs(path: Path) -> set[str]:
    """The page's markdown paragraphs of MIN_PARAGRAPH or more characters, whitespace normalised."""
    found = set()
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown":
            for block in re.split(r"\n\s*\n", cell.source):
                text = " ".join(block.split())
                if len(text) >= MIN_PARAGRAPH and not text.startswith(BOILERPLATE):
                    found.add(text)
    return found


def test_no_paragraph_is_read_on_two_pages():
    """What several pages share (a task, a gate, a method) is told once, on a shared page, and linked."""
    seen: dict[str, str] = {}
    repeated = []
    for path in NOTEBOOKS:
        for text in paragraphs(path):
            if text in seen:
                repeated.append(f"{seen[text]} and {path.stem}: {text[:90]}...")
            seen.setdefault(text, path.stem)
    assert not repeated, f"{len(repeated)} paragraphs repeat across pages:\n" + "\n".join(repeated)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_page_draws_an_interactive_attention_view(path):
    """The built book's site check asks every page for a circuitsvis view; a page without one would pass nbmake
    and fail only at the end of `make test`."""
    notebook = nbformat.read(path, as_version=4)
    calls = [cell for cell in notebook.cells if cell.cell_type == "code" and "plots.attention_view(" in cell.source]
    assert calls, f"{path.name}: no code cell calls plots.attention_view (tests/site/check_site.py needs one)"
