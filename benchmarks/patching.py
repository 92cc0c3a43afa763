"""Attribution patching vs exact per-head activation patching on IOI (DESIGN §7).

Task: 16 IOI prompts on SmolLM2-135M; every head's ``hook_z`` (all positions) takes its value from the
prompt's ABC twin; metric: mean END logit difference logit(IO) - logit(S), patched minus clean.

- exact: ``patching.patched_final`` with one set per head (271 sets in batched passes);
- attribution: ``patching.attribution_patching``, one forward and one backward pass for all heads.

Prints both timings, their ratio, and how well the estimate ranks heads: Spearman correlation over the
10 heads with the largest exact |effect| (target ≥ 0.8) and over all heads, and the overlap of the two
top-10 lists.

    python benchmarks/patching.py [--prompts 16]
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before any import that might reach the Hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import argparse

import torch

from common import banner, load_average, print_table, seed_everything, timed, verdict
from helpers import ioi, models, patching

MODEL = "smollm2-135m"
RANK_TARGET = 0.8


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rank correlation of two 1-d tensors (no ties expected in continuous effects)."""
    ranks = lambda x: x.argsort().argsort().float()  # noqa: E731
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    args = parser.parse_args()
    seed_everything(0)
    banner(f"attribution patching vs exact per-head patching, IOI, {MODEL}")
    model = models.load_model(MODEL)
    data = ioi.ioi_data(model, n=args.prompts, seed=0)
    source = patching.head_outputs(model, data.corrupted)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]

    def exact() -> torch.Tensor:
        final = patching.patched_final(model, data.tokens, source, [[]] + [[h] for h in heads])
        values = patching.end_logit_diff(model, final, data.answers, data.wrong)
        return (values[1:] - values[0]).mean(-1)

    def estimate() -> torch.Tensor:
        return patching.attribution_patching(model, data.tokens, source, data.answers, data.wrong).flatten()

    estimate()  # warm-up (first backward pass allocates)
    attribution_seconds, approx = timed(estimate)
    exact_seconds, truth = timed(exact)
    top = truth.abs().argsort(descending=True)[:10]
    top_estimate = approx.abs().argsort(descending=True)[:10]
    overlap = len(set(top.tolist()) & set(top_estimate.tolist()))
    rank_top = spearman(truth[top], approx[top])
    label = lambda i: f"L{i // n_heads}H{i % n_heads}"  # noqa: E731
    print_table(["head (top-10 by exact |effect|)", "exact", "attribution"],
                [[label(i), f"{truth[i]:+.3f}", f"{approx[i]:+.3f}"] for i in top.tolist()])
    print_table(["measure", "value"], [
        ["exact per-head patching (271 sets)", f"{exact_seconds:.1f} s"],
        ["attribution patching (1 fwd + 1 bwd)", f"{attribution_seconds:.2f} s"],
        ["speed-up", f"{exact_seconds / attribution_seconds:.0f}x"],
        ["Spearman on the exact top-10", f"{rank_top:.2f} {verdict(rank_top, RANK_TARGET, at_most=False)}"],
        ["Spearman over all heads", f"{spearman(truth, approx):.2f}"],
        ["top-10 overlap", f"{overlap} of 10"],
    ])
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
