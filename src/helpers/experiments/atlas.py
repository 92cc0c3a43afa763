"""The head atlas: every registered attention-pattern family screened on every head of one model, in one
set of forward passes, written as one JSON file and one figure.

    python -m helpers.experiments.atlas --model smollm2-135m --out _build/atlas

This first version screens the three families a head's attention pattern defines (previous-token,
duplicate and induction heads), each with its page's score and pass rule (`screens.Screen`: the score
at least the family's threshold and at least `ratio` times the head's own score on a matched control).
All three read the patterns of two batches: random tokens repeated once, and the same prompts with the
second half replaced by fresh tokens (the control: same positions, nothing to copy); `pattern_targets`
says which positions each family scores and what its control is. The task families
(IOI, knowledge conflict, multiple choice, ...) are not in it yet: they need their tasks' reads.

It runs on a `TransformerBridge` (the offline models, any Hub model online) or a toy
`helpers.toy.AttentionOnlyTransformer`, trained or built by hand.

JSON schema (``SCHEMA_VERSION`` 1)::

    {"schema": "attention-heads-atlas", "version": 1,
     "model": str, "n_layers": int, "n_heads": int, "seed": int,
     "sizes": {"prompts": int, "half_len": int},
     "families": {key: {"name": str, "stage": str, "score": str, "rule": str,
                        "threshold": float, "ratio": float,
                        "scores": [[float] * n_heads] * n_layers,   # on the repeated prompts
                        "control": [[float] * n_heads] * n_layers,  # the matched control score
                        "passing": ["L1H2", ...]}},                 # best first
     "heads": {"L1H2": [key, ...]},   # every passing head with all the families it passes
     "seconds": float, "peak_memory_mb": float}
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers import capture, heads, scores, tasks, toy
from helpers.experiments import duplicate, induction, previous_token, registry
from helpers.screens import Screen

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

SCHEMA_VERSION = 1
# registry key -> (threshold, ratio): the pass rule each family's page applies
PATTERN_RULES: dict[str, tuple[float, float]] = {
    "previous_token": (previous_token.THRESHOLD, 2.0),
    "duplicate": (duplicate.THRESHOLD, duplicate.RATIO),
    "induction": (induction.THRESHOLD, 2.0),
}


@dataclass(frozen=True)
class Sizes:
    prompts: int = 16
    half_len: int = 32


@dataclass(frozen=True)
class Probe:
    """What the atlas reads from a model: its shape, two token batches and a way to get the patterns."""

    name: str
    n_layers: int
    n_heads: int
    repeated: Int[Tensor, "batch pos"]  # each prompt: half_len tokens, then the same tokens again
    control: Int[Tensor, "batch pos"]  # the same first half, then fresh tokens
    first_query: int  # the first query position a score counts
    half_len: int  # the second copy is the last half_len positions
    patterns: Callable[[Tensor], Float[Tensor, "layer batch head query key"]]


def bridge_probe(model: TransformerBridge, *, sizes: Sizes, seed: int) -> Probe:
    from helpers import models

    batch = tasks.repeated_tokens(model, batch=sizes.prompts, half_len=sizes.half_len, seed=seed)
    return Probe(name=models.spec_of(model).name, n_layers=model.cfg.n_layers, n_heads=model.cfg.n_heads,
                 repeated=batch.tokens, control=batch.corrupted, first_query=2 if model.cfg.default_prepend_bos else 1,
                 half_len=sizes.half_len, patterns=lambda tokens: capture.capture_patterns(model, tokens))


def toy_probe(model: toy.AttentionOnlyTransformer, *, sizes: Sizes, seed: int, name: str = "toy") -> Probe:
    """Toy prompts: each first half draws distinct tokens when the vocabulary allows (no accidental repeat)."""
    config = model.config
    if 2 * sizes.half_len > config.n_ctx:
        raise ValueError(f"2 * half_len = {2 * sizes.half_len} positions do not fit the toy's n_ctx {config.n_ctx}")
    generator = torch.Generator().manual_seed(seed)
    if config.vocab_size >= sizes.half_len:
        first = torch.stack([torch.randperm(config.vocab_size, generator=generator)[:sizes.half_len]
                             for _ in range(sizes.prompts)])
    else:
        first = torch.randint(config.vocab_size, (sizes.prompts, sizes.half_len), generator=generator)
    fresh = torch.randint(config.vocab_size, (sizes.prompts, sizes.half_len), generator=generator)

    def patterns(tokens: Tensor) -> Tensor:
        with torch.no_grad():
            return model(tokens, return_patterns=True)[1]

    return Probe(name=name, n_layers=config.n_layers, n_heads=config.n_heads,
                 repeated=torch.cat([first, first], dim=1), control=torch.cat([first, fresh], dim=1),
                 first_query=1, half_len=sizes.half_len, patterns=patterns)


def probe(model, *, sizes: Sizes = Sizes(), seed: int = 0) -> Probe:
    if isinstance(model, toy.AttentionOnlyTransformer):
        return toy_probe(model, sizes=sizes, seed=seed)
    return bridge_probe(model, sizes=sizes, seed=seed)


def pattern_targets(probe: Probe) -> dict[str, tuple[str, Bool[Tensor, "b q k"], str, Bool[Tensor, "b q k"]]]:
    """Each family's (batch, targets) for its score and (batch, targets) for its control.

    Previous-token: key q - 1 on the control prompts (random tokens, nothing to copy), against key q - 2
    (its page's control: a head that spreads attention over the last few tokens scores alike on both).
    Duplicate and induction: their targets on the repeated prompts' second copy, against the same
    positions on the control prompts, where the second half holds fresh tokens."""
    batch, length = probe.repeated.shape
    second_half = torch.zeros(batch, length, length, dtype=torch.bool)
    second_half[:, length - probe.half_len:] = True  # queries on the second copy
    duplicate_targets = scores.duplicate_token_targets(probe.repeated, first_query=probe.first_query) & second_half
    induction_targets = scores.induction_targets(probe.repeated, first_query=probe.first_query) & second_half
    return {
        "previous_token": ("control", scores.offset_targets(batch, length, 1, first_query=probe.first_query),
                           "control", scores.offset_targets(batch, length, 2, first_query=probe.first_query)),
        "duplicate": ("repeated", duplicate_targets, "control", duplicate_targets),
        "induction": ("repeated", induction_targets, "control", induction_targets),
    }


@dataclass(frozen=True)
class Atlas:
    model: str
    n_layers: int
    n_heads: int
    seed: int
    sizes: Sizes
    screens: dict[str, Screen]
    seconds: float = 0.0
    peak_memory_mb: float = 0.0

    def passing(self, key: str) -> list[heads.Head]:
        return self.screens[key].passing

    @property
    def roles(self) -> dict[heads.Head, list[str]]:
        """Every passing head with all the families it passes, in the screens' order."""
        roles: dict[heads.Head, list[str]] = {}
        for key, screen in self.screens.items():
            for head in screen.passing:
                roles.setdefault(head, []).append(key)
        return roles

    def to_json(self) -> dict[str, object]:
        families = {}
        for key, screen in self.screens.items():
            family = registry.by_key(key)
            families[key] = {"name": family.name, "stage": family.stage, "score": family.score, "rule": family.rule,
                             "threshold": screen.threshold, "ratio": screen.ratio,
                             "scores": screen.scores.tolist(), "control": screen.null.tolist(),
                             "passing": [heads.label(head) for head in screen.passing]}
        return {"schema": "attention-heads-atlas", "version": SCHEMA_VERSION, "model": self.model,
                "n_layers": self.n_layers, "n_heads": self.n_heads, "seed": self.seed,
                "sizes": {"prompts": self.sizes.prompts, "half_len": self.sizes.half_len},
                "families": families,
                "heads": {heads.label(head): keys for head, keys in sorted(self.roles.items())},
                "seconds": round(self.seconds, 2), "peak_memory_mb": round(self.peak_memory_mb, 1)}


def run(model, *, sizes: Sizes = Sizes(), seed: int = 0, progress: bool = False) -> Atlas:
    """Screen every attention-pattern family on every head of `model` (two forward passes in all)."""
    start = time.perf_counter()
    source = probe(model, sizes=sizes, seed=seed)
    steps = [("repeated", source.repeated), ("control", source.control)]
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc=f"atlas {source.name}", unit="batch")
    patterns = {name: source.patterns(tokens).float().cpu() for name, tokens in steps}
    screens = {}
    for key, (batch, targets, null_batch, null_targets) in pattern_targets(source).items():
        threshold, ratio = PATTERN_RULES[key]
        screens[key] = Screen(family=key, scores=scores.attention_on_targets(patterns[batch], targets),
                              null=scores.attention_on_targets(patterns[null_batch], null_targets),
                              threshold=threshold, baseline=scores.uniform_baseline(targets), ratio=ratio)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return Atlas(model=source.name, n_layers=source.n_layers, n_heads=source.n_heads, seed=seed, sizes=sizes,
                 screens=screens, seconds=time.perf_counter() - start, peak_memory_mb=peak)


def figure(atlas: Atlas):
    """One heat map per family, passing heads boxed."""
    import matplotlib.pyplot as plt

    from helpers import plots

    fig, axes = plt.subplots(1, len(atlas.screens), figsize=(plots.COLUMN_INCHES, 0.22 * atlas.n_layers + 1.8),
                             layout="constrained")
    for ax, (key, screen) in zip(axes, atlas.screens.items()):
        plots.head_heatmap(screen.scores, title=registry.by_key(key).name.replace(" head", "\nheads"),
                           colorbar_label="share of attention on the targets", marked=screen.passing,
                           vmin=0, vmax=1, ax=ax)
    fig.suptitle(f"Attention-pattern families, {atlas.model}")
    return fig


def write(atlas: Atlas, out: Path) -> list[Path]:
    """`out/atlas_<model>.json` and `out/atlas_<model>.png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers import plots

    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"atlas_{atlas.model}"
    stem.with_suffix(".json").write_text(json.dumps(atlas.to_json(), indent=1) + "\n")
    with matplotlib.rc_context(plots.BOOK_STYLE):
        fig = figure(atlas)
        fig.savefig(stem.with_suffix(".png"), dpi=plots.FIGURE_DPI)
        plt.close(fig)
    return [stem.with_suffix(".json"), stem.with_suffix(".png")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.experiments.atlas", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="a book model name or a Hub id (online only)")
    parser.add_argument("--out", type=Path, required=True, help="folder for atlas_<model>.json and .png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=Sizes.prompts)
    parser.add_argument("--half-len", type=int, default=Sizes.half_len)
    args = parser.parse_args(argv)
    from helpers import models

    model = models.load_model(args.model)
    atlas = run(model, sizes=Sizes(prompts=args.prompts, half_len=args.half_len), seed=args.seed, progress=True)
    for path in write(atlas, args.out):
        print(path)
    for key, screen in atlas.screens.items():
        print(f"{registry.by_key(key).name}: {heads.labels(screen.passing)}")
    print(f"{atlas.seconds:.1f} s, peak memory {atlas.peak_memory_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
