"""Where a page's time goes: execute notebooks with nbclient and report wall time per section (the page's
``##`` headings) and the slowest cells.

    python benchmarks/page_profile.py notebooks/induction_heads.ipynb [more pages]

Run it on a quiet machine, with the results store as the suite would find it (``ATTENTION_HEADS_RESULTS=off``
to time every computation; by default stored results are read, as a page after ``make toys`` reads them).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TQDM_DISABLE"] = "1"

import argparse
import datetime
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from common import banner, load_average, print_table


def cell_seconds(cell: nbformat.NotebookNode) -> float:
    """Seconds from the kernel starting the cell to its reply (nbclient's recorded timestamps)."""
    timing = cell.metadata.get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    parse = datetime.datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def profile(path: Path) -> tuple[float, dict[str, float], list[tuple[float, str, str]]]:
    notebook = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
                   record_timing=True).execute()
    total = time.perf_counter() - started
    sections: dict[str, float] = {}
    cells, section = [], "(before the first section)"
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("## "):
            section = cell.source.splitlines()[0][3:].strip()
        elif cell.cell_type == "code":
            seconds = cell_seconds(cell)
            sections[section] = sections.get(section, 0.0) + seconds
            first_line = next((line for line in cell.source.splitlines() if line and not line.startswith("#")), "")
            cells.append((seconds, section, first_line[:60]))
    return total, sections, sorted(cells, reverse=True)[:5]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="+", type=Path)
    args = parser.parse_args()
    banner("page profile: wall time per section and the slowest cells")
    for path in args.pages:
        total, sections, slowest = profile(path)
        print(f"\n{path.stem}: {total:.1f} s in all (kernel start included)")
        print_table(["section", "s"], [[name, f"{seconds:.1f}"] for name, seconds in sections.items()])
        print_table(["slowest cells", "s", "section"], [[line, f"{s:.1f}", name] for s, name, line in slowest])
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main()
