"""Global retrieval heads (RazorAttention, Tang et al. 2024; MoA, Fu et al. 2024): keep full attention for a few
heads and a local window for all others, and ask how few full heads needle recall needs.

- `local_window_mask`: the keys a local head may see, the first `sinks` tokens (attention sinks) and the last
  `window` tokens up to the query itself.
- `windowed_correct`: recall of the code (correct tokens per prompt) with every head outside a set G restricted
  to that window, many sets in batched passes. The restriction is a hook on each layer's attention scores
  (``hook_attn_scores``, before the softmax): masked keys get ``-inf``, so the head's softmax runs over its window.
- `kv_share`: the share of the KV cache such a model keeps, counted per query head.
- `study`: G = the top retrieval heads (`helpers.experiments.retrieval`) against G = random heads, as |G| grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from helpers import capture, controls, heads, models, needles, readout, store
from helpers.experiments import retrieval
from helpers.heads import Head

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

WINDOW = 32  # RazorAttention's local heads keep the last tokens ...
SINKS = 1  # ... and the first token (the attention sink)


def scores_hook(layer: int) -> str:
    """Attention scores before the softmax, ``[batch, head, query, key]`` (the bridge's ``hook_attn_scores``)."""
    return f"blocks.{layer}.attn.hook_attn_scores"


def local_window_mask(seq_len: int, *, window: int = WINDOW, sinks: int = SINKS) -> Bool[Tensor, "query key"]:
    """True where a local head may attend: key < `sinks`, or ``query - window < key <= query``."""
    if seq_len < 1 or window < 1 or sinks < 0:
        raise ValueError(f"need seq_len >= 1, window >= 1, sinks >= 0; got {seq_len}, {window}, {sinks}")
    query = torch.arange(seq_len)[:, None]
    key = torch.arange(seq_len)[None, :]
    return (key <= query) & ((key < sinks) | (key > query - window))


def kv_share(seq_len: int, n_global: int, n_heads: int, *, window: int = WINDOW, sinks: int = SINKS) -> float:
    """Share of the KV cache kept at `seq_len` tokens when `n_global` of `n_heads` query heads keep everything
    and the rest keep sinks + window entries (per query head; under GQA a shared KV head is kept if any of its
    query heads is global, so the real saving is smaller)."""
    local = min(seq_len, sinks + window)
    return (n_global * seq_len + (n_heads - n_global) * local) / (n_heads * seq_len)


def window_hook(local: Bool[Tensor, "row head"], allowed: Bool[Tensor, "query key"]):
    """A hook on one layer's scores: in row r, every head with ``local[r, h]`` sees only `allowed` keys."""
    def hook(scores: Float[Tensor, "row head query key"], hook=None) -> Float[Tensor, "row head query key"]:
        n_q, n_k = scores.shape[-2:]
        block = ~allowed[-n_q:, :n_k].to(scores.device)  # [query, key]: keys a local head loses
        drop = local.to(scores.device)[:, :, None, None] & block  # [row, head, query, key]
        return scores.masked_fill(drop, float("-inf"))  # a new tensor: nothing written in place
    return hook


@torch.no_grad()
def windowed_correct(model: TransformerBridge, prompts: needles.Needles, global_sets: Sequence[Sequence[Head]], *,
                     window: int = WINDOW, sinks: int = SINKS, max_rows: int = 8) -> Float[Tensor, "set prompt"]:
    """Correct code tokens (teacher forced, top-1 over the whole vocabulary) per prompt, with every head outside
    each set of `global_sets` restricted to the local window; ``heads.every(...)`` as a set is the full model."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    keep = heads.masks(global_sets, n_layers, n_heads)  # [set, layer, head]: True = global
    tokens = prompts.teacher_forced()
    allowed = local_window_mask(tokens.shape[1], window=window, sinks=sinks)
    span = slice(prompts.prompt_len - 1, tokens.shape[1])
    batch = len(tokens)
    rows = [(s, b) for s in range(len(global_sets)) for b in range(batch)]  # set-major
    out = torch.zeros(len(global_sets), batch)
    for start in range(0, len(rows), max_rows):
        chunk = rows[start:start + max_rows]
        sets = torch.tensor([s for s, _ in chunk])
        prompt = torch.tensor([b for _, b in chunk])
        local = ~keep[sets]  # [row, layer, head]
        hooks = [(scores_hook(layer), window_hook(local[:, layer], allowed)) for layer in range(n_layers)
                 if local[:, layer].any()]
        final = capture.final_at(model, tokens[prompt], position=span, fwd_hooks=hooks)
        said = readout.logits(model, final).argmax(-1).cpu()  # [row, n]
        out[sets, prompt] = (said == prompts.answers[prompt]).float().sum(-1)
    return out


@dataclass(frozen=True)
class Sizes:
    screen_prompts: int = 24
    control_prompts: int = 8
    length: int = 150
    prompts: int = 4  # prompts for each |G|
    global_counts: tuple[int, ...] = (0, 5, 10, 20)
    n_random: int = 5  # random sets per |G|


@dataclass(frozen=True)
class Study:
    """Exact-match recall with G global and every other head local, for G = top retrieval heads and random G.

    Attributes:
        counts: the |G| tried.
        full: exact-match rate of the unrestricted model on the same prompts.
        top: ``[count]`` exact-match rate with G = the top |G| retrieval heads.
        random: ``[count, draw]`` the same with G drawn from all heads.
        kv: ``[count]`` KV-cache share kept (per query head) at the prompts' length.
    """

    model: str
    ranking: tuple[Head, ...]
    counts: tuple[int, ...]
    full: float
    top: Float[Tensor, "count"]
    random: Float[Tensor, "count draw"]
    kv: Float[Tensor, "count"]

    def smallest(self, within: float = 0.1) -> int | None:
        """The smallest |G| of top retrieval heads whose recall is within `within` of the full model's."""
        for count, value in zip(self.counts, self.top.tolist()):
            if value >= self.full - within:
                return count
        return None

    def p_value(self, count: int) -> float:
        """Rank of the top heads' recall among the random sets at `count`: (1 + draws at least as high) / (N + 1)."""
        i = self.counts.index(count)
        draws = self.random[i]
        return (1 + int((draws >= self.top[i]).sum())) / (len(draws) + 1)

    def row(self) -> dict[str, object]:
        smallest = self.smallest()
        return {
            "model": self.model,
            "full-attention exact recall": round(self.full, 2),
            "recall, top |G| (|G|: rate)": ", ".join(f"{c}: {v:.2f}" for c, v in zip(self.counts, self.top.tolist())),
            "recall, random |G| (best draw)": ", ".join(f"{c}: {v:.2f}" for c, v in
                                                        zip(self.counts, self.random.max(1).values.tolist())),
            "smallest top G within 0.1": "none tried" if smallest is None else f"{smallest} heads "
                                         f"(KV kept {self.kv[self.counts.index(smallest)]:.0%})",
        }


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Rank heads by the retrieval screen (seed), then recall on fresh prompts (seed + 30, needles kept out of the
    last `WINDOW` tokens' reach: depth 0.1-0.7) for each |G| with the top heads and with random sets (seed + 50).

    The screen is `retrieval.needle_gate`'s stored run (the retrieval page's, when the sizes match); the whole
    result is kept in the results store too (about 30 s for the comparison model on 2 CPU cores)."""
    return store.cached("global-retrieval-study", lambda: _study(model, sizes=sizes, seed=seed),
                        model=models.spec_of(model).name, weights=store.weights_digest(model), sizes=sizes, seed=seed)


def _study(model: TransformerBridge, *, sizes: Sizes, seed: int) -> Study:
    name = models.spec_of(model).name
    run = retrieval.needle_gate(model, prompts=sizes.screen_prompts, controls_n=sizes.control_prompts,
                                length=sizes.length, seed=seed)
    ranking = heads.top(retrieval.screen(run).scores) if run.exact.any() else heads.every(model.cfg.n_layers,
                                                                                          model.cfg.n_heads)
    prompts = needles.needle_prompts(model, batch=sizes.prompts, length=sizes.length, seed=seed + 30,
                                     depth=(0.1, 0.7))
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    sets: list[list[Head]] = [heads.every(n_layers, n_heads)]
    for i, count in enumerate(sizes.global_counts):
        sets.append(ranking[:count])
        sets += (controls.uniform_sets(n_layers, n_heads, count, sizes.n_random, seed=seed + 50 + i) if count
                 else [[] for _ in range(sizes.n_random)])
    exact = (windowed_correct(model, prompts, sets) == prompts.n_answer).float().mean(dim=1)  # [set]
    per_count = exact[1:].view(len(sizes.global_counts), 1 + sizes.n_random)
    seq_len = prompts.teacher_forced().shape[1]
    kv = torch.tensor([kv_share(seq_len, count, n_layers * n_heads) for count in sizes.global_counts])
    return Study(model=name, ranking=tuple(ranking[:max(sizes.global_counts, default=0)]),
                 counts=tuple(sizes.global_counts), full=float(exact[0]), top=per_count[:, 0],
                 random=per_count[:, 1:], kv=kv)
