"""The head atlas on both offline models: wall time of one atlas run (after the model is loaded) and the
process's peak memory, in a fresh interpreter per model so one model's memory never counts for the other.

    python benchmarks/atlas.py
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TQDM_DISABLE"] = "1"
os.environ["ATTENTION_HEADS_RESULTS"] = "off"  # every shared study the task screens read is computed here

import json
import subprocess
import sys

from common import banner, load_average, print_table

CHILD = """
import json, resource, time
from helpers import models
from helpers.experiments import atlas
start = time.perf_counter()
model = models.load_model({name!r}, device="cpu")
loaded = time.perf_counter() - start
found = atlas.run(model, seed=0, reuse=False)
print(json.dumps({{"load": loaded, "atlas": found.seconds,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "passing": {{key: len(screen.passing) for key, screen in found.screens.items()}}}}))
"""


def main() -> None:
    banner("atlas: three attention-pattern and twenty task families, every head, both offline models")
    rows = []
    for name in ("smollm2-135m", "gemma3-270m"):
        done = subprocess.run([sys.executable, "-c", CHILD.format(name=name)], capture_output=True, text=True,
                              check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append([name, f"{result['load']:.1f}", f"{result['atlas']:.1f}", f"{result['peak_mb']:.0f}",
                     ", ".join(f"{key} {count}" for key, count in result["passing"].items())])
    print_table(["model", "load s", "atlas s", "peak MB", "heads passing"], rows)
    print("target (issue 11): at most 180 s per offline model on 2 cores")
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
