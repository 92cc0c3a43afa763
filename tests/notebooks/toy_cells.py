"""Run the toy-model claims of every page under this process's float kernels.

Which head a toy model grows into which role depends on the CPU's vectorised kernels (PyTorch's
``ATEN_CPU_CAPABILITY``), so the pages state their toy claims over several seeds and about roles, and
``make test`` checks them twice: nbmake runs every page with the CPU's native kernels, and this script
runs each page's toy part again under another setting (``make kernels`` uses ``default``, the plain C++
kernels), in a fresh kernel that inherits this process's environment.

A page's toy part is its parameters cell, the code cell after it (imports), and every cell tagged
``toy``; one of the tagged cells must assert the page's toy claims. Prints one line per page and exits 1
if any page's toy part fails, naming the page and cell.

Usage: python tests/notebooks/toy_cells.py notebooks/*.ipynb
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def toy_part(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The cells that make up a page's toy part, in page order (empty if the page trains no toy)."""
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    tagged = [cell for cell in code if "toy" in cell.metadata.get("tags", [])]
    if not tagged:
        return []
    parameters = next(i for i, cell in enumerate(code) if "parameters" in cell.metadata.get("tags", []))
    setup = code[parameters: parameters + 2]
    return setup + [cell for cell in tagged if cell not in setup]


def run(path: Path) -> tuple[bool, str]:
    notebook = nbformat.read(path, as_version=4)
    cells = toy_part(notebook)
    if not cells:
        return True, "no toy cells"
    if not any("assert" in cell.source for cell in cells if "toy" in cell.metadata.get("tags", [])):
        return False, "the page trains a toy but no cell tagged 'toy' asserts its claims"
    notebook.cells = cells
    client = NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as error:
        return False, f"toy cell failed:\n{str(error)[-3000:]}"
    return True, f"{len(cells)} cells in {time.perf_counter() - start:.0f} s"


def main(paths: list[str]) -> int:
    setting = os.environ.get("ATEN_CPU_CAPABILITY", "native")
    failed = []
    for path in map(Path, sorted(paths)):
        ok, message = run(path)
        print(f"[{setting} kernels] {path.name}: {'ok' if ok else 'FAILED'} ({message})", flush=True)
        if not ok:
            failed.append(path.name)
    if failed:
        print(f"toy claims fail under ATEN_CPU_CAPABILITY={setting}: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
