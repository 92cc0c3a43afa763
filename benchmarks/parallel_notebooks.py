"""Notebooks one at a time on two torch threads vs two at a time on one thread each (issue 11: run pages in
parallel where that measurably helps on 2 cores). The Makefile's ``NB_WORKERS`` / ``NB_THREADS`` follow
what this prints.

Both arms execute the same pages under nbmake, from copies in a temporary folder, with the results store
off (``ATTENTION_HEADS_RESULTS=off``) so that neither arm reads what the other computed:

- serial: ``pytest --nbmake`` on all pages, ``OMP_NUM_THREADS=2``;
- parallel: ``pytest --nbmake -n 2 --dist worksteal`` (pytest-xdist), ``OMP_NUM_THREADS=1``.

Prints the wall time of each arm and their ratio. Not in ``run_all.py``: it executes whole notebooks
(about 4 minutes with the two default pages).

    python benchmarks/parallel_notebooks.py [notebooks/name_mover_heads.ipynb notebooks/duplicate_heads.ipynb]
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import banner, load_average, print_table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PAGES = ("notebooks/name_mover_heads.ipynb", "notebooks/duplicate_heads.ipynb")


def run_arm(pages: list[Path], *, workers: int, threads: int) -> float:
    """Seconds to execute copies of `pages` under nbmake with `workers` processes of `threads` threads."""
    with tempfile.TemporaryDirectory() as folder:
        copies = []
        for page in pages:
            copies.append(Path(folder) / page.name)
            shutil.copy(page, copies[-1])
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "ATTENTION_HEADS_RESULTS": "off",
               "PYTHONHASHSEED": "0"}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake",
                   "--nbmake-timeout=1800", *[str(c) for c in copies]]
        if workers > 1:
            command += ["-n", str(workers), "--dist", "worksteal"]
        start = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=folder, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"nbmake failed ({workers} workers x {threads} threads):\n{done.stdout[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", default=list(DEFAULT_PAGES))
    args = parser.parse_args()
    pages = [(ROOT / page).resolve() for page in args.pages]
    missing = [str(p) for p in pages if not p.is_file()]
    if missing:
        raise SystemExit(f"no such notebook: {', '.join(missing)}")
    banner(f"notebooks in parallel: {', '.join(p.name for p in pages)}")
    serial = run_arm(pages, workers=1, threads=2)
    parallel = run_arm(pages, workers=2, threads=1)
    print_table(["arm", "wall time"], [
        ["one at a time, 2 threads", f"{serial:.0f} s"],
        ["two at a time, 1 thread each", f"{parallel:.0f} s"],
        ["parallel / serial", f"{parallel / serial:.2f}"],
    ])
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
