"""Shared by the benchmark scripts: seeding, interleaved median timing, machine state, plain-text tables.

Each script sets ``HF_HUB_OFFLINE=1`` itself before importing this module or anything from the model
stack. This module imports only the standard library and torch, so importing it never loads a model.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")


def seed_everything(seed: int = 0) -> None:
    """Seed every global RNG a benchmark might touch (the helpers themselves take explicit seeds)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_average() -> str:
    """The 1/5/15-minute load averages: on a shared 2-core machine they say how far to trust a timing."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min) on {os.cpu_count()} CPUs"


def machine_line() -> str:
    return (f"Python {platform.python_version()} | torch {torch.__version__} | "
            f"{torch.get_num_threads()} torch threads | device cpu")


def banner(title: str) -> None:
    print(f"\n=== {title} ===")
    print(f"load average at start: {load_average()}")
    print(machine_line())


def timed(function: Callable[[], T]) -> tuple[float, T]:
    """Seconds one call takes, and what it returned."""
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def time_once(function: Callable[[], object]) -> float:
    return timed(function)[0]


def time_interleaved(functions: Mapping[str, Callable[[], object]], *, repeats: int,
                     warmup: bool = True) -> dict[str, list[float]]:
    """Seconds per call of each function, `repeats` times, taking turns.

    Taking turns (a, b, a, b, ...) rather than timing all of a then all of b means a burst of load from
    another process slows both sides of a ratio instead of one. One untimed call of each comes first:
    the first forward pass pays for lazy imports, allocator growth and kernel selection.
    """
    if warmup:
        for function in functions.values():
            function()
    timings: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            timings[name].append(time_once(function))
    return timings


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    """min..max of the repeats, shown next to each median so a noisy figure is visible as such."""
    return f"{min(values):.3f}..{max(values):.3f}" if len(values) > 1 else "-"


def verdict(value: float, target: float, *, at_most: bool) -> str:
    met = value <= target if at_most else value >= target
    return f"{'meets' if met else 'MISSES'} target {'<=' if at_most else '>='} {target:g}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain-text table: first column left-aligned, the rest right-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(str(header)), *(len(row[i]) for row in cells)) for i, header in enumerate(headers)]

    def line(row: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                         for i, (cell, width) in enumerate(zip(row, widths)))

    print(line([str(header) for header in headers]))
    print("  ".join("-" * width for width in widths))
    for row in cells:
        print(line(row))
