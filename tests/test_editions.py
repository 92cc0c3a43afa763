"""Every page's exercises follow the course layout, and both editions built from it work.

See `tests/notebooks/editions.py` for the layout. These tests read the committed notebooks (no model is
loaded): the student's stubs run on their own and report "Not attempted yet"; every solution that calls a
checker runs on its own and passes it; nothing outside the solutions reads a name a solution defines, so
the student edition (the page without its solutions) runs exactly as the page does under nbmake.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "notebooks"))
import editions  # noqa: E402

from helpers import checks  # noqa: E402

NOTEBOOKS = sorted((editions.ROOT / "notebooks").glob("*.ipynb"))
EXERCISE_LABEL = re.compile(r"```\{exercise\}[^\n]*\n:label: (\S+)")
SOLUTION_LABEL = re.compile(r"```\{solution(?:-start)?\} (\S+)")
MIN_CHECKED = 2  # code exercises with a checker on every page


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


@pytest.fixture(scope="module", params=NOTEBOOKS, ids=lambda p: p.stem)
def page(request) -> tuple[str, nbformat.NotebookNode]:
    return request.param.stem, read(request.param)


def test_every_exercise_has_one_solution_in_solution_cells(page):
    name, notebook = page
    text = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    exercises = EXERCISE_LABEL.findall(text)
    assert 2 <= len(exercises) <= 4, f"{name}: {len(exercises)} exercises; a page has 2-4"
    solutions = [label for cell in notebook.cells if editions.is_solution(cell)
                 for label in SOLUTION_LABEL.findall(cell.source)]
    assert sorted(solutions) == sorted(exercises), (
        f"{name}: exercises {exercises} but solutions (in cells tagged 'solution') {solutions}")
    for cell in notebook.cells:
        if "{solution" in cell.source and not editions.is_solution(cell):
            pytest.fail(f"{name}: a solution directive sits in an untagged cell: {cell.source[:80]!r}")


def test_every_page_has_checked_code_exercises(page):
    name, notebook = page
    stubs = editions.exercise_cells(notebook)
    assert len(stubs) >= MIN_CHECKED, f"{name}: {len(stubs)} code exercises with a checker; a page has >= {MIN_CHECKED}"
    for source in stubs:
        assert "NotImplementedError" in source and "checks.verdict(" in source, (
            f"{name}: an 'exercise' cell is a stub that raises NotImplementedError and prints checks.verdict(...):\n{source}")
        assert not editions.defined_names(source) & {"solution"}, name
    checked = editions.checked_solution_cells(notebook)
    assert len(checked) >= len(stubs), f"{name}: {len(stubs)} exercise cells but {len(checked)} checked solutions"


def test_solutions_never_overwrite_the_learners_names(page):
    name, notebook = page
    learner = set().union(*(editions.defined_names(s) for s in editions.exercise_cells(notebook)), set())
    for cell in notebook.cells:
        if cell.cell_type == "code" and editions.is_solution(cell):
            clash = editions.defined_names(cell.source) & learner
            assert not clash, f"{name}: a solution redefines the learner's {sorted(clash)}; name it solution_..."


def test_nothing_outside_the_solutions_reads_what_a_solution_defines(page):
    name, notebook = page
    defined: set[str] = set()
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        if editions.is_solution(cell):
            defined |= editions.defined_names(cell.source)
        else:
            used = editions.used_names(cell.source) & (defined - editions.defined_names(cell.source))
            assert not used, f"{name}: a cell outside the solutions reads {sorted(used)}, which only a solution defines"


def test_the_student_edition_runs_its_stubs_to_not_attempted(page):
    name, notebook = page
    student = editions.student(notebook)
    assert not any(editions.is_solution(cell) for cell in student.cells)
    assert "{solution" not in "\n".join(cell.source for cell in student.cells)
    namespace: dict = {}
    editions.run_cells(editions.import_cells(student), namespace)
    for printed in editions.run_cells(editions.exercise_cells(student), namespace):
        assert printed.startswith(checks.NOT_ATTEMPTED), f"{name}: a stub printed {printed!r}"


def test_the_answer_keys_solutions_pass_their_checkers(page):
    name, notebook = page
    key = editions.answer_key(notebook)
    assert ":class: dropdown" not in "\n".join(cell.source for cell in key.cells if editions.is_solution(cell))
    namespace: dict = {}
    editions.run_cells(editions.import_cells(key), namespace)
    for printed in editions.run_cells(editions.checked_solution_cells(key), namespace):
        assert printed.strip() and not printed.startswith((checks.NOT_ATTEMPTED, checks.NOT_YET)), f"{name}: {printed!r}"


def test_a_wrong_solution_fails_and_a_stub_never_raises():
    """The two halves of the layout can fail: a checker raises on a wrong solution, a verdict never does."""
    wrong = "def solution_previous_token_score(pattern):\n    return pattern.diagonal().mean().item()\n" \
            "print(checks.patterns.check_previous_token_score(solution_previous_token_score))"
    with pytest.raises(AssertionError, match="pure previous-token head"):
        editions.run_cells(["from helpers import checks", wrong])
    printed = editions.run_cells(["from helpers import checks", wrong.replace("print(checks.patterns", "print(checks.verdict(checks.patterns").replace(
        "(solution_previous_token_score))", ", solution_previous_token_score))")])
    assert printed[1].startswith(checks.NOT_YET)


def test_the_editions_are_written_for_every_page(tmp_path):
    editions.write_editions(tmp_path, NOTEBOOKS)
    for path in NOTEBOOKS:
        student = read(tmp_path / "student" / "notebooks" / path.name)
        key = read(tmp_path / "answers" / "notebooks" / path.name)
        assert len(student.cells) < len(read(path).cells) < len(key.cells)
        assert any("Answer key" in cell.source for cell in key.cells)
