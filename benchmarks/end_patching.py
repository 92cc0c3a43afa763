"""Patching at END from a cached clean prefix vs full passes (issue 11: patch without re-running what a patch
cannot change).

Task: the summary reader page's END check on SmolLM2-135M: 6 mood stories and their swapped twins (12
prompts), the top three heads and 100 random triples, each set's ``hook_z`` at END taken from the twin.

- full: ``patching.patched_final``, every position of every prompt once per head set;
- cached prefix: ``patching.patched_final_at_end``, one clean pass over the prefix, then END alone per set
  with the prefix's keys and values from the KV cache.

Prints both timings, their ratio and the largest difference between the two results.

    python benchmarks/end_patching.py [--model smollm2-135m] [--draws 100]
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before any import that might reach the Hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import argparse

from common import banner, load_average, print_table, seed_everything, timed, verdict
from helpers import controls, models, patching, stories
from helpers.experiments import summary_reader

SPEEDUP_TARGET = 3.0  # DESIGN.md's per-head patching target, against the full passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--draws", type=int, default=100)
    args = parser.parse_args()
    seed_everything(0)
    banner(f"END patching: cached prefix vs full passes, mood stories, {args.model}")
    model = models.load_model(args.model)
    data = stories.story_pairs(model, n=6, seed=20)
    clean_z = patching.head_outputs(model, data.tokens)
    source = clean_z.clone()
    source[:, :, -1] = patching.head_outputs(model, data.swapped)[:, :, -1]
    found = summary_reader.screen(model, n=6, seed=10, n_null=2).top(3)
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, 3, args.draws, seed=20)
    sets = [[], found, *draws]

    cached_seconds, cached = timed(lambda: patching.patched_final_at_end(model, data.tokens, source, sets))
    full_seconds, full = timed(lambda: patching.patched_final(model, data.tokens, source, sets))
    ratio = full_seconds / cached_seconds
    print_table(["measure", "value"], [
        ["prompts x positions", f"{data.tokens.shape[0]} x {data.tokens.shape[1]}"],
        ["head sets", f"{len(sets)}"],
        ["full passes (patched_final)", f"{full_seconds:.1f} s"],
        ["cached prefix (patched_final_at_end)", f"{cached_seconds:.1f} s"],
        ["speed-up", f"{ratio:.1f}x {verdict(ratio, SPEEDUP_TARGET, at_most=False)}"],
        ["largest |difference| of the final residual", f"{float((full - cached).abs().max()):.1e}"],
    ])
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
