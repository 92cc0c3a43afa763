"""Run every benchmark in its own subprocess and print their tables (``make benchmarks``).

Each script runs in a fresh interpreter so that one script's imports, caches and allocator state
never flatter the next one's timings. Takes about 4-5 minutes on 2 idle cores; much longer while
something else is using the CPU (each script prints the load average so the reader can tell).

    python benchmarks/run_all.py [--skip-cold] [--full-ablation]
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # inherited by every script (they set it themselves too)
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TQDM_DISABLE"] = "1"

import argparse
import datetime
import subprocess
import sys
import time
from pathlib import Path

from common import load_average, print_table

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-cold", action="store_true", help="skip the ~30 s cold SmolLM2 build in load.py")
    parser.add_argument("--full-ablation", action="store_true",
                        help="run ablation.py's per-head loops on all 270 heads instead of extrapolating")
    args = parser.parse_args()
    scripts = [
        ["load.py"] + (["--skip-cold"] if args.skip_cold else []),
        ["scores.py"],
        ["ablation.py"] + (["--full"] if args.full_ablation else []),
        ["patching.py"],
        ["end_patching.py"],
        ["atlas.py"],
        ["store.py"],
    ]
    print(f"Benchmarks for DESIGN.md §7, {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"load average at start: {load_average()}")
    print("Times are wall-clock seconds on this machine; compare the ratios, which each script measures "
          "within one run, rather than the absolute numbers.", flush=True)

    started = time.perf_counter()
    durations, failed = [], []
    for command in scripts:
        script_started = time.perf_counter()
        done = subprocess.run([sys.executable, str(HERE / command[0]), *command[1:]], cwd=HERE.parent)
        durations.append([" ".join(command), f"{time.perf_counter() - script_started:.0f}",
                          "ok" if done.returncode == 0 else f"FAILED (exit {done.returncode})"])
        if done.returncode != 0:
            failed.append(command[0])

    print("\n=== run_all.py summary ===")
    print_table(["script", "wall s", "status"], durations)
    print(f"total: {time.perf_counter() - started:.0f} s; load average at end: {load_average()}")
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
