"""A head that several pages name is linked between them (issue: one head, several names).

SmolLM2-135M, the book's default model, shows the same heads under several families: the top memory head
is also the negative name mover and the main backup, the top mover is a memory head, and so on. Each page
that names such a head must link every other page that names it, so a reader learns its other roles.
`SHARED` lists the heads and the pages whose findings name them; a new page that names one of them joins
its list here, and the test then asks for the links both ways.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

SHARED = {  # SmolLM2-135M head -> the pages that name it in their findings
    "L24H4": ("memory_heads", "negative_name_mover_heads", "backup_name_mover_heads", "ioi_circuit"),
    "L23H4": ("memory_heads", "mover_heads"),
    "L23H1": ("name_mover_heads", "letter_mover_heads", "mover_heads", "context_heads", "ioi_circuit",
              "backup_name_mover_heads"),
    "L29H1": ("context_heads", "letter_mover_heads", "mover_heads"),
    "L23H3": ("ioi_circuit", "backup_name_mover_heads", "negative_name_mover_heads"),
}


def markdown(page: str) -> str:
    cells = json.loads((NOTEBOOKS / f"{page}.ipynb").read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


@pytest.mark.parametrize("head", sorted(SHARED))
def test_every_page_naming_a_shared_head_names_it_and_links_the_others(head):
    pages = SHARED[head]
    missing = [page for page in pages if head not in markdown(page)]
    assert not missing, f"{head}: listed for {missing}, whose text does not name it"
    unlinked = [(a, b) for a, b in itertools.permutations(pages, 2)
                if f"({b}.ipynb)" not in markdown(a) and f"{{doc}}`{b}`" not in markdown(a)]
    assert not unlinked, f"{head}: these pages name it but do not link the other page that names it: {unlinked}"
