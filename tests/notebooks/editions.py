"""The course's two editions of every page, built from the one notebook the book runs.

A page's exercises follow one layout (``../shared/NOTEBOOK.md`` §8, `book/course/syllabus.md`):

- the task is a markdown ``{exercise}`` block;
- a code exercise has one cell tagged ``exercise``: the learner's stub (``raise NotImplementedError``)
  and ``print(checks.verdict(checks.<module>.check_..., my_...))``, which never raises;
- the solution is in cells tagged ``solution`` (``{solution}``, or ``{solution-start}`` ... code ...
  ``{solution-end}``). Its code defines ``solution_...`` names, never the learner's ``my_...`` ones, and
  calls the checker directly, so a wrong solution fails the page under nbmake.

From that layout:

- the **student edition** drops every ``solution`` cell (the exercises stay to do; Colab-ready, with the
  setup cell);
- the **answer key** keeps everything, with the solutions open instead of collapsed, under a banner.

`tests/test_editions.py` checks the layout on every page, builds both editions, and runs every page's
exercise cells on their own: the student's stubs report "Not attempted yet" and the answer key's
solutions pass their checkers.

Usage: python tests/notebooks/editions.py OUT_DIR   (writes OUT_DIR/student and OUT_DIR/answers)
"""

from __future__ import annotations

import ast
import copy
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
EXERCISE, SOLUTION = "exercise", "solution"
ANSWER_KEY_BANNER = (
    "```{admonition} Answer key\n:class: important\n\n"
    "This is the teachers' edition of the page: every exercise's solution is shown open. Students get the\n"
    "student edition (`make editions`), which has the exercises and their checkers but no solutions.\n```"
)


def tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def is_solution(cell) -> bool:
    return SOLUTION in tags(cell)


def student(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The page without its solutions."""
    out = copy.deepcopy(notebook)
    out.cells = [cell for cell in out.cells if not is_solution(cell)]
    return out


def answer_key(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The page with every solution open and a banner saying what this edition is."""
    out = copy.deepcopy(notebook)
    for cell in out.cells:
        if is_solution(cell) and cell.cell_type == "markdown":
            cell.source = "\n".join(line for line in cell.source.splitlines() if line.strip() != ":class: dropdown")
    title = next(i for i, cell in enumerate(out.cells) if cell.cell_type == "markdown" and cell.source.startswith("# "))
    out.cells.insert(title + 1, nbformat.v4.new_markdown_cell(ANSWER_KEY_BANNER))
    return out


def import_cells(notebook: nbformat.NotebookNode) -> list[str]:
    """The page's top-level import statements (what an exercise cell may rely on besides itself), without
    the rest of their cells (which load models)."""
    out = []
    for cell in notebook.cells:
        if cell.cell_type != "code" or is_solution(cell) or EXERCISE in tags(cell):
            continue
        out += [ast.unparse(node) for node in ast.parse(cell.source).body
                if isinstance(node, (ast.Import, ast.ImportFrom))]
    return out


def exercise_cells(notebook: nbformat.NotebookNode) -> list[str]:
    return [cell.source for cell in notebook.cells if cell.cell_type == "code" and EXERCISE in tags(cell)]


def checked_solution_cells(notebook: nbformat.NotebookNode) -> list[str]:
    """Solution code cells that run a checker (they must run on their own, after the imports)."""
    return [cell.source for cell in notebook.cells
            if cell.cell_type == "code" and is_solution(cell) and "checks." in cell.source]


def defined_names(source: str) -> set[str]:
    """Top-level names a cell binds (functions, classes, assignments)."""
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def used_names(source: str) -> set[str]:
    return {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}


def run_cells(sources: list[str], namespace: dict | None = None) -> list[str]:
    """Execute cells in one namespace; each cell's printed output, in order."""
    import contextlib
    import io

    namespace = {} if namespace is None else namespace
    printed = []
    for source in sources:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(compile(source, "<exercise cell>", "exec"), namespace)  # noqa: S102 - the book's own cells
        printed.append(buffer.getvalue())
    return printed


def write_editions(out: Path, notebooks: list[Path]) -> None:
    for kind, edit in (("student", student), ("answers", answer_key)):
        folder = out / kind / "notebooks"
        folder.mkdir(parents=True, exist_ok=True)
        for path in notebooks:
            nbformat.write(edit(nbformat.read(path, as_version=4)), folder / path.name)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    out = Path(argv[0])
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    write_editions(out, notebooks)
    print(f"{len(notebooks)} pages: student edition in {out / 'student'}, answer key in {out / 'answers'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
