"""Exact per-head zero ablation of all 270 SmolLM2 heads: batched helpers vs one forward pass per head.

Task: repeated random tokens, 4 prompts x (12 + 12) tokens; metric: each prompt's mean loss on the
second copy (``families.repeated_half_metric``); effect = ablated minus clean, averaged over prompts.

- batched: ``interventions.per_head_effects``, which stacks many copies of the batch in one forward
  pass and zeroes a different head's ``hook_z`` in each copy (about 21 passes for 271 head sets);
- naive loop: ``model.run_with_hooks`` once per head with a hook that zeroes that head's
  ``blocks.{l}.attn.hook_z``;
- TransformerLens patching: ``transformer_lens.patching.get_act_patch_attn_head_out_all_pos``, TL
  4.3.0's per-head ``hook_z`` patching, which also runs one forward pass per head. Patching in a
  "clean cache" of zeros turns it into zero ablation, so all three compute the same numbers.

One batched sweep costs as much as dozens of naive forward passes, so by default the two per-head
loops run on a subset of heads (one per layer) and are extrapolated to 270 heads plus the clean
run, from the median seconds per head (the output says so); ``--full`` runs them on every head.
The two per-head loops are interleaved head by head, so a burst of load hits both.

    python benchmarks/ablation.py [--full] [--repeats 1]
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before any import that might reach the Hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TQDM_DISABLE"] = "1"  # TL's patching loop draws a tqdm bar per call

import argparse

import pandas as pd
import torch

from common import banner, load_average, median, print_table, seed_everything, spread, time_once, timed, verdict
from helpers import capture, families, interventions, models, tasks

MODEL = "smollm2-135m"
PROMPTS = 4
HALF_LEN = 12
SPEEDUP_TARGET = 3.0


def zero_head_hook(head: int):
    """What per-head patching does: a fresh copy of hook_z with one head's output set to zero."""
    def hook(z, hook=None):
        z = z.clone()  # [batch, pos, head, d_head]; never write into the model's own activation
        z[:, :, head] = 0
        return z
    return hook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="run the naive loop and TL patching on all 270 heads (several minutes)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed runs of the batched sweep (default 1: each is ~50 s on 2 idle cores)")
    args = parser.parse_args()
    seed_everything(0)
    banner("ablation.py: exact per-head ablation, batched vs one forward per head")
    from transformer_lens.patching import get_act_patch_attn_head_out_all_pos  # after the offline switches

    model = models.load_model(MODEL)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    batch = tasks.repeated_tokens(model, batch=PROMPTS, half_len=HALF_LEN, seed=0)
    tokens = batch.tokens
    metric = families.repeated_half_metric(batch)  # (logits, tokens) -> [batch]

    def naive_effect(layer: int, head: int) -> float:
        with torch.no_grad():
            logits = model.run_with_hooks(tokens, fwd_hooks=[(capture.z_hook(layer), zero_head_hook(head))])
        return metric(logits, tokens).mean().item() - clean

    # TL patches "clean" activations into the "corrupted" run; a cache of zeros makes that zero ablation.
    zeros = {capture.z_hook(layer): torch.zeros(PROMPTS, tokens.shape[1], n_heads, model.cfg.d_head)
             for layer in range(n_layers)}

    def tl_patching_effect(layer: int, head: int) -> float:
        patched = get_act_patch_attn_head_out_all_pos(
            model, tokens, zeros, lambda logits: metric(logits, tokens),
            index_axis_names=None, index_df=pd.DataFrame({"layer": [layer], "head": [head]}), reduce="mean")
        return patched.item() - clean

    with torch.no_grad():
        clean_seconds = [time_once(lambda: model(tokens)) for _ in range(4)][1:]  # first call warms up
        clean = metric(model(tokens), tokens).mean().item()

    # ---- batched: every head, one sweep (untimed warm-up is a plain forward, done above)
    print(f"\n{PROMPTS} prompts x {tokens.shape[1]} tokens, {n_layers * n_heads} heads, zero ablation at hook_z; "
          f"clean loss on the second copy {clean:.3f}")
    print(f"load average before the batched sweep: {load_average()}")
    batched_seconds = []
    for _ in range(args.repeats):
        seconds, batched = timed(lambda: interventions.per_head_effects(model, tokens, metric))
        batched_seconds.append(seconds)

    # ---- per-head loops, interleaved head by head
    if args.full:
        heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    else:
        heads = [(layer, layer % n_heads) for layer in range(n_layers)]  # one per layer, head index rotating
    print(f"load average before the per-head loops: {load_average()}")
    naive_effect(*heads[0]), tl_patching_effect(*heads[0])  # warm-up, untimed
    naive_seconds, tl_seconds, naive_values, tl_values = [], [], [], []
    for layer, head in heads:
        for seconds, value, method in ((naive_seconds, naive_values, naive_effect),
                                       (tl_seconds, tl_values, tl_patching_effect)):
            took, effect = timed(lambda: method(layer, head))
            seconds.append(took)
            value.append(effect)

    # ---- agreement on the heads all three measured
    batched_on_subset = torch.tensor([batched[layer, head].item() for layer, head in heads])
    naive_values, tl_values = torch.tensor(naive_values), torch.tensor(tl_values)
    largest = batched.abs().max().item()

    # ---- totals: a full per-head sweep is 270 ablated passes plus the clean pass
    sweep_passes = n_layers * n_heads + 1
    batched_s = median(batched_seconds)
    scale = "measured on all heads" if args.full else f"extrapolated from {len(heads)} heads (1 per layer)"

    def full_sweep(per_head: list[float]) -> float:
        return sum(per_head) + median(clean_seconds) if args.full else median(per_head) * sweep_passes

    naive_s, tl_s = full_sweep(naive_seconds), full_sweep(tl_seconds)
    print(f"load average after: {load_average()}")
    print()
    print_table(["method", "s per head (median)", "range s", "full sweep s", "how", "batched speed-up"], [
        ["clean forward pass (reference)", f"{median(clean_seconds):.3f}", spread(clean_seconds), "-", "median of 3", "-"],
        ["interventions.per_head_effects (batched)", f"{batched_s / sweep_passes:.3f}", spread(batched_seconds),
         f"{batched_s:.1f}", f"measured, {len(batched_seconds)} run(s), all heads", "1.0x"],
        ["naive loop: run_with_hooks per head", f"{median(naive_seconds):.3f}", spread(naive_seconds),
         f"{naive_s:.1f}", scale, f"{naive_s / batched_s:.2f}x"],
        ["TL patching: get_act_patch_attn_head_out_all_pos", f"{median(tl_seconds):.3f}", spread(tl_seconds),
         f"{tl_s:.1f}", scale, f"{tl_s / batched_s:.2f}x"],
    ])
    print(f"speed-up over TransformerLens' per-head patching: {tl_s / batched_s:.2f}x: "
          f"{verdict(tl_s / batched_s, SPEEDUP_TARGET, at_most=False)}")
    print(f"same effects? max |batched - naive| = {(batched_on_subset - naive_values).abs().max():.2e}, "
          f"max |batched - TL patching| = {(batched_on_subset - tl_values).abs().max():.2e} nats "
          f"over {len(heads)} heads (largest |effect| {largest:.3f} nats)")
    print("attribution patching (1 forward + 1 backward) vs exact patching, top-10 rank correlation: "
          "not measured yet (a later issue)")


if __name__ == "__main__":
    main()
