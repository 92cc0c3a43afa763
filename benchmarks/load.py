"""Model load time, warm (cache present) and cold (dequantize the GGUF, write the cache, boot).

Every load runs in a fresh Python subprocess, because a second load in the same process would find
transformers' modules imported and its files in the page cache. The child reports wall-clock
timestamps, so the parent can split each run into:

- python start: from spawning the child to its first line of code;
- imports: ``torch``, ``transformer_lens.model_bridge`` and ``helpers.models``;
- boot from cache: ``helpers.models.load_model(name)`` alone, imports excluded (this is the number
  the ≤ 2 s warm target in DESIGN.md §7 is about: what a notebook pays after its import cell);
- python start + import + boot: everything a fresh kernel pays before it has a model.

Cold loads use a temporary ``ATTENTION_HEADS_CACHE`` folder, so the real cache is never touched.

    python benchmarks/load.py [--repeats 3] [--skip-cold]
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before any import that might reach the Hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TQDM_DISABLE"] = "1"  # transformers' "Loading weights" bar would clutter the tables

import argparse
import json
import subprocess
import sys
import tempfile
import time

from common import banner, load_average, median, print_table, seed_everything, spread, verdict

WARM_MODELS = ("smollm2-135m", "gemma3-270m")
COLD_MODEL = "smollm2-135m"  # Gemma's cold build takes ~50 s and has no target; SmolLM2's is the one §7 names
WARM_TARGET_S = 2.0
COLD_TARGET_S = 20.0

# The child reports time.time() stamps (wall clock, comparable across processes on one machine).
# Imports come before the first boot stamp, so "boot" excludes them by construction.
WARM_CHILD = """
import json, sys, time
started = time.time()
import torch, transformer_lens.model_bridge, helpers.models
torch.manual_seed(0)
imported = time.time()
model = helpers.models.load_model(sys.argv[1])
booted = time.time()
print(json.dumps({"started": started, "imported": imported, "booted": booted}))
"""

# Cold: split the first load into building the cache entry (read GGUF, dequantize, save safetensors,
# hash into the manifest) and booting from the entry just built. Their sum is what the first
# load_model call costs on a fresh machine.
COLD_CHILD = """
import json, sys, time
import torch, transformer_lens.model_bridge, helpers.model_cache, helpers.models
torch.manual_seed(0)
spec = helpers.models.get_spec(sys.argv[1])
if helpers.model_cache.verify_cache(helpers.model_cache.cache_folder(spec)):
    raise RuntimeError("the temporary cache already holds this model, so the load would not be cold")
start = time.time()
helpers.model_cache.ensure_cached(spec)
cached = time.time()
model = helpers.models.load_model(sys.argv[1])
booted = time.time()
print(json.dumps({"start": start, "cached": cached, "booted": booted}))
"""


def run_child(code: str, model_name: str, env: dict[str, str]) -> tuple[float, dict[str, float]]:
    """Run `code` in a fresh interpreter; return the spawn time and the stamps it printed."""
    spawned = time.time()
    done = subprocess.run([sys.executable, "-c", code, model_name], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"loading {model_name} in a subprocess failed:\n{done.stderr[-3000:]}")
    stamps = json.loads(done.stdout.strip().splitlines()[-1])
    return spawned, stamps


def read_cache_files(model_name: str) -> None:
    """Read the model's cache entry once, so "warm" means the files are in the OS page cache too.

    Cheaper than an untimed warm-up subprocess (~0.3 s instead of ~8 s for a full boot).
    """
    import helpers.model_cache, helpers.models  # light: transformer_lens is imported only when a model is loaded

    folder = helpers.model_cache.cache_folder(helpers.models.get_spec(model_name))
    if not helpers.model_cache.verify_cache(folder):
        raise RuntimeError(f"no warm cache for {model_name} in {folder}; run `make models` first")
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass


def warm_loads(repeats: int) -> None:
    print(f"\nWarm load (cache present), median of {repeats} fresh subprocesses per model; "
          f"range = min..max of the repeats")
    rows = []
    for name in WARM_MODELS:
        boots, totals, imports, starts = [], [], [], []
        read_cache_files(name)
        for _ in range(repeats):
            spawned, stamps = run_child(WARM_CHILD, name, dict(os.environ))
            starts.append(stamps["started"] - spawned)
            imports.append(stamps["imported"] - stamps["started"])
            boots.append(stamps["booted"] - stamps["imported"])
            totals.append(stamps["booted"] - spawned)
        rows.append([name, f"{median(starts):.2f}", f"{median(imports):.2f}", f"{median(boots):.2f}",
                     spread(boots), f"{median(totals):.2f}", spread(totals),
                     verdict(median(boots), WARM_TARGET_S, at_most=True)])
    print_table(["model", "python start s", "imports s", "boot from cache s", "boot range",
                 "start+import+boot s", "total range", "boot vs SmolLM2's target"], rows)


def cold_load() -> None:
    print(f"\nCold load of {COLD_MODEL} (empty temporary ATTENTION_HEADS_CACHE; one run, ~20-30 s; "
          "imports excluded)")
    with tempfile.TemporaryDirectory(prefix="attention-heads-cold-") as empty_cache:
        env = dict(os.environ, ATTENTION_HEADS_CACHE=empty_cache)
        _, stamps = run_child(COLD_CHILD, COLD_MODEL, env)
    build = stamps["cached"] - stamps["start"]
    boot = stamps["booted"] - stamps["cached"]
    total = stamps["booted"] - stamps["start"]
    print_table(["model", "dequantize + write cache s", "then boot s", "cold total s", "total vs target"],
                [[COLD_MODEL, f"{build:.2f}", f"{boot:.2f}", f"{total:.2f}",
                  verdict(total, COLD_TARGET_S, at_most=True)]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh subprocesses per warm model (default 3)")
    parser.add_argument("--skip-cold", action="store_true", help="skip the ~20-30 s cold SmolLM2 build")
    args = parser.parse_args()
    seed_everything(0)
    banner("load.py: model load time")
    warm_loads(args.repeats)
    if args.skip_cold:
        print(f"\nCold load of {COLD_MODEL}: skipped (--skip-cold)")
    else:
        cold_load()
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
