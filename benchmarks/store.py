"""What the shared-results store saves a whole `make test` run (issue 11).

Several pages compute the same result the same way; `helpers.store` computes it once per code version and
the other readers load it. For each shared result this script times one computation with the store off
(``ATTENTION_HEADS_RESULTS=off``: what every reader paid before) and one load from the store (what every
reader after the first pays now), counts its readers in the notebooks and in the Makefile, and prints

    saved per run = readers * cold - (cold + (readers - 1) * warm)

with the suite's totals. The MCQ toys are timed from their own training (one layout, five seeds; the
other layout takes as long). Takes about 3 minutes on 2 idle cores.

    python benchmarks/store.py
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before any import that might reach the Hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TQDM_DISABLE"] = "1"

import re
from collections.abc import Callable
from pathlib import Path

from common import banner, load_average, print_table, timed
from helpers import models, store
from helpers.experiments import atlas, conflict, mcq, mcq_toy_task

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = ("smollm2-135m", "gemma3-270m")  # the pages' MODEL and COMPARISON_MODEL


def readers(pattern: str) -> int:
    """Notebooks whose code calls `pattern` (each page reads a shared result once per model it studies)."""
    return sum(bool(re.search(pattern, path.read_text())) for path in sorted((ROOT / "notebooks").glob("*.ipynb")))


def cold_and_warm(compute: Callable[[], object]) -> tuple[float, float]:
    """Seconds to compute with the store off, then to load the stored result."""
    os.environ[store.SWITCH_ENV] = "off"
    cold, _ = timed(compute)  # recomputes and overwrites the entry
    os.environ[store.SWITCH_ENV] = "on"
    warm, _ = timed(compute)
    return cold, warm


def main() -> None:
    banner("shared-results store: each shared result computed once per run instead of once per reader")
    toy_readers = readers(r"mcq_toy_task\.train_mcq_toys\(")
    shared: list[tuple[str, int, Callable[[], object]]] = [
        ("MCQ toys (5 seeds, one layout)", toy_readers, lambda: mcq_toy_task.train_mcq_toys()),
    ]
    # the pages name the default model `model` and the comparison model `comparison` in their calls
    for name, variable in zip(OFFLINE, ("model", "comparison")):
        model = models.load_model(name)
        shared += [
            (f"mcq.study, {name}", readers(rf"mcq\.study\({variable}\b"), lambda model=model: mcq.study(model)),
            (f"conflict.study, {name}", readers(rf"conflict\.study\({variable}\b"),
             lambda model=model: conflict.study(model)),
            # the atlas page reads both models, and `make atlas` reads them again
            (f"atlas, {name}", readers(r"atlas\.run\(") + 1, lambda model=model: atlas.run(model)),
        ]
    shared = [entry for entry in shared if entry[1] > 0]
    rows, total_before, total_now = [], 0.0, 0.0
    for label, count, compute in shared:
        cold, warm = cold_and_warm(compute)
        before, now = count * cold, cold + (count - 1) * warm
        total_before, total_now = total_before + before, total_now + now
        rows.append([label, count, f"{cold:.1f}", f"{warm:.2f}", f"{before:.0f}", f"{now:.0f}", f"{before - now:.0f}"])
    rows.append(["total", "", "", "", f"{total_before:.0f}", f"{total_now:.0f}", f"{total_before - total_now:.0f}"])
    print_table(["shared result", "readers", "cold s", "warm s", "without store s", "with store s", "saved s"],
                rows)
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
