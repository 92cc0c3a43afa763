"""Copy suppression and negative name movers: heads that attend to a token and lower its logit.

Wang et al. (2023) found two heads in GPT-2 small's IOI circuit (10.7 and 11.10) that attend from the
last token to the indirect object, like the name movers, but write *against* it: negative direct logit
attribution (DLA) on logit(IO) - logit(S). McDougall et al. (2023) showed that 10.7 does this on
ordinary text too: it attends to an earlier token that the model is about to predict and pushes that
token's logit down ("copy suppression"); ablate it and the model predicts the token again.

Everything here reads the last position (END) only, through one `capture.read_end` pass: on prose the
batch is many short windows of text, each read at its last token, so Gemma's 262k-column unembedding
is never applied to the whole sequence. The direct effect of a head on a token's logit freezes the
norms' scales at their clean values (as `attribution.head_logit_attribution` does), which makes it
exact for the direct path. Token logits are *centred* (minus the mean over the vocabulary): a shift of
every logit changes no probability, so only the centred part says whether a head suppresses a token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers import capture, controls, heldout, interventions, models, ov, stats, tasks
from helpers.experiments import ioi
from helpers.attribution import final_read, head_outputs_from_read
from helpers.heads import Head, label, labels, top as top_heads

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge



# --------------------------------------------------------------------------------------------------
# Pure pieces: which token a head attends to, and what it writes about that token.


def attended_keys(attention: Float[Tensor, "layer batch head key"], *, first_key: int = 1
                  ) -> tuple[Int[Tensor, "layer batch head"], Float[Tensor, "layer batch head"]]:
    """The earlier position each head attends to most from END, and the attention it puts there.

    Keys run from `first_key` to END - 1: position 0 (BOS, or the first token of a window without one)
    is where many heads park attention that goes nowhere, and END is the current token, not an earlier
    one that could be copied.

    Raises:
        ValueError: if `attention` is not 4-dimensional or leaves fewer than 1 key to choose from.
    """
    if attention.ndim != 4:
        raise ValueError(f"attention must be [layer, batch, head, key] (one row per head at END); got shape "
                         f"{tuple(attention.shape)}. Use capture.read_end(model, tokens).attention")
    n_keys = attention.shape[-1]
    if not 0 <= first_key < n_keys - 1:
        raise ValueError(f"first_key must lie in [0, {n_keys - 2}] so that at least one earlier key remains "
                         f"before END (key {n_keys - 1}); got {first_key}")
    window = attention[..., first_key:n_keys - 1]
    weight, index = window.max(dim=-1)
    return index + first_key, weight


def control_keys(attended: Int[Tensor, "layer batch head"], n_keys: int, *, first_key: int = 1, seed: int
                 ) -> Int[Tensor, "layer batch head"]:
    """A random earlier key other than the attended one, for every head and prompt (the control target).

    A head that lowers the logits of whatever came earlier in the window, not specifically of what it
    attends to, scores as negative on these keys as on the attended ones.
    """
    choices = n_keys - 1 - first_key  # keys first_key .. END-1
    if choices < 2:
        raise ValueError(f"need at least 2 earlier keys to draw a control key; windows of {n_keys} tokens with "
                         f"first_key={first_key} leave {choices}. Use longer windows")
    generator = torch.Generator().manual_seed(seed)
    offset = torch.randint(1, choices, attended.shape, generator=generator)  # never 0: never the attended key
    return (attended - first_key + offset) % choices + first_key


def direct_effects(head_outputs: Float[Tensor, "layer batch head d_model"],
                   directions: Float[Tensor, "layer batch head d_model"]) -> Float[Tensor, "layer head batch"]:
    """Dot product of each head's (normalised) output with its own read-out direction, per prompt."""
    if head_outputs.shape != directions.shape:
        raise ValueError(f"head_outputs {tuple(head_outputs.shape)} and directions {tuple(directions.shape)} must "
                         "have the same shape [layer, batch, head, d_model]")
    return torch.einsum("lbhm,lbhm->lhb", head_outputs, directions)


def weighted_scores(effects: Float[Tensor, "layer head batch"], weights: Float[Tensor, "layer batch head"]
                    ) -> Float[Tensor, "layer head"]:
    """Attention-weighted mean of each head's effect over prompts.

    Prompts where the head barely attends to its top key count little: their "attended token" is a
    tie-break among many small weights, not a token the head is reading.
    """
    w = weights.permute(0, 2, 1)  # [layer, head, batch]
    if w.shape != effects.shape:
        raise ValueError(f"effects {tuple(effects.shape)} and weights (as layer, head, batch) {tuple(w.shape)} differ")
    return (effects * w).sum(-1) / w.sum(-1).clamp_min(1e-12)


# --------------------------------------------------------------------------------------------------
# Reading a model at END.


def folded_unembedding(model: TransformerBridge, token_ids: Int[Tensor, "n"], *,
                       mean: Float[Tensor, "d_model"] | None = None) -> Float[Tensor, "n d_model"]:
    """Centred unembedding columns of `token_ids` with the final norm's gain folded in.

    Centred: ``W_U[:, t] - mean_v W_U[:, v]``, so the read-out is the token's logit minus the mean logit.
    `mean` is that mean column if already computed (on Gemma it reads all 262k columns).
    """
    unembed = model.W_U
    mean = unembed.float().mean(dim=1).cpu() if mean is None else mean
    columns = unembed[:, token_ids.to(unembed.device)].T.float().cpu() - mean
    return final_read(model, columns)


@dataclass(frozen=True)
class ProseRead:
    """What every head does at the last token of each window of text.

    Attributes:
        attended_key / attended_token: ``[layer, batch, head]`` the earlier position each head attends to
            most from END, and the token there.
        attention: ``[layer, batch, head]`` the attention on that key.
        effect: ``[layer, head, batch]`` the head's direct effect on the attended token's centred logit.
        control_effect: the same on the token at a random other earlier key.
    """

    attended_key: Int[Tensor, "layer batch head"]
    attended_token: Int[Tensor, "layer batch head"]
    attention: Float[Tensor, "layer batch head"]
    effect: Float[Tensor, "layer head batch"]
    control_effect: Float[Tensor, "layer head batch"]

    def scores(self) -> Float[Tensor, "layer head"]:
        """Copy-suppression score: attention-weighted mean direct effect on the attended token (< 0 suppresses)."""
        return weighted_scores(self.effect, self.attention)

    def control_scores(self) -> Float[Tensor, "layer head"]:
        return weighted_scores(self.control_effect, self.attention)


def read_prose(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], *, seed: int, first_key: int = 1
               ) -> ProseRead:
    """One `capture.read_end` pass over windows of text; every head's attended token and its direct effect on it."""
    run = capture.read_end(model, tokens)
    keys, weights = attended_keys(run.attention, first_key=first_key)
    controls = control_keys(keys, tokens.shape[1], first_key=first_key, seed=seed)
    outputs = head_outputs_from_read(model, run)  # [layer, batch, head, d_model]
    rows = torch.arange(tokens.shape[0])[None, :, None]
    mean = model.W_U.float().mean(dim=1).cpu()  # once for both targets
    effects = []
    for chosen in (keys, controls):
        ids = tokens[rows, chosen]  # [layer, batch, head]
        unique, inverse = ids.unique(return_inverse=True)  # read each unembedding column once
        directions = folded_unembedding(model, unique, mean=mean)[inverse]  # [layer, batch, head, d_model]
        effects.append(direct_effects(outputs, directions))
    return ProseRead(attended_key=keys, attended_token=tokens[rows, keys], attention=weights,
                     effect=effects[0], control_effect=effects[1])


def attended_logprob_metric(targets: Int[Tensor, "batch"]):
    """Metric for `interventions.ablated_metric(..., last_position_only=True)`: log P(target) at END per prompt.

    The rows arrive set-major (every head set repeats the batch), so the targets are tiled to match.
    """
    def metric(logits: Float[Tensor, "row 1 vocab"], tokens: Int[Tensor, "row pos"]) -> Float[Tensor, "row"]:
        repeats = tokens.shape[0] // targets.shape[0]
        wanted = targets.repeat(repeats).to(logits.device)
        log_probs = logits[:, -1].float().log_softmax(dim=-1)
        return log_probs.gather(1, wanted[:, None])[:, 0]
    return metric


def attended_logprob_ablation(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], heads: Sequence[Head],
                              targets: Int[Tensor, "batch"], *, n_random: int, seed: int) -> controls.CausalCheck:
    """Mean-ablate `heads` (and `n_random` sets of as many heads drawn from all heads, `heads` included):
    change of log P(target) at END.

    Means are each head's output averaged over the windows and their positions, so an ablated head
    writes what it writes on average, not specifically about the token it attends to.
    """
    if targets.shape != (tokens.shape[0],):
        raise ValueError(f"targets must hold one token id per window ({tokens.shape[0]}); got {tuple(targets.shape)}")
    means = capture.mean_head_outputs(model, tokens)
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(heads), n_random, seed=seed)
    values = interventions.ablated_metric(model, tokens, [[], list(heads), *draws], attended_logprob_metric(targets),
                                          mode="mean", means=means, last_position_only=True)
    # the expected sign is a rise: ablating a suppressor gives back what it suppressed
    return controls.check_from_values(values, heads, metric_name="log P(attended token) at END", mode="mean-ablated",
                                      null=_null(model, len(heads)), seed=seed)


# --------------------------------------------------------------------------------------------------
# The pre-registered rules and the whole study.


@dataclass(frozen=True)
class ProseScreen:
    """Copy-suppression score of every head on prose, its control, and the weight-only OV reading.

    Threshold against the null: a head passes when its copy-suppression score is below every head's control
    score (the strongest effect any head has on a random earlier token); `k` only sets how many heads
    `top()` lists. The OV detector, run
    beside it, flags the 10 % of heads with the most negative OV diagonal strength, each token read
    through its effective embedding (the residual after block 0 of the token alone, as McDougall et al.
    read it through MLP0); ``ov_raw_strength`` is the same strength from the raw token embedding ``W_E``.
    """

    scores: Float[Tensor, "layer head"]
    control: Float[Tensor, "layer head"]
    ov_strength: Float[Tensor, "layer head"]
    k: int = 3
    ov_raw_strength: Float[Tensor, "layer head"] | None = None

    @property
    def control_cutoff(self) -> float:
        """The most negative control score over all heads: a head passes only below every head's control (a
        5th percentile would let about 5 % of the heads through by chance, 13 of SmolLM2's 270)."""
        return float(self.control.min())

    def top(self, k: int | None = None) -> list[Head]:
        """The most negative copy-suppression scores first."""
        return top_heads(-self.scores, k or self.k)

    @property
    def passing(self) -> list[Head]:
        """Every head below every head's control score (`control_cutoff`), most negative first: a threshold
        against the null, not a top-k rule, so the count can be 0 or 20."""
        cut = self.control_cutoff
        return [h for h in top_heads(-self.scores, self.scores.numel())
                if self.scores[h].item() < cut]

    def ov_rank(self, head: Head, *, raw: bool = False) -> int:
        """1 = the most negative OV diagonal strength of the model (`raw`: from ``W_E`` instead)."""
        strength = self.ov_raw_strength if raw else self.ov_strength
        if strength is None:
            raise ValueError("this screen has no raw-embedding OV strengths")
        return int((strength < strength[head]).sum().item()) + 1

    @property
    def ov_detected(self) -> list[Head]:
        """The OV detector: heads in the most negative 10 % of OV diagonal strengths, most negative first."""
        n = max(1, round(0.10 * self.ov_strength.numel()))
        return top_heads(-self.ov_strength, n)


def prose_screen(model: TransformerBridge, *, windows: int, length: int, ov_tokens: int, k: int, seed: int
                 ) -> tuple[ProseScreen, tasks.TaskBatch, ProseRead]:
    """Copy-suppression scores on `windows` windows of prose; OV strengths (effective embedding, and raw
    ``W_E``) on `ov_tokens` distinct tokens of the windows."""
    batch = tasks.natural_text(model, batch=windows, length=length, seed=seed)
    read = read_prose(model, batch.tokens, seed=seed)
    vocab = batch.tokens[:, 1:].unique()
    vocab = vocab[torch.randperm(len(vocab), generator=torch.Generator().manual_seed(seed))[:ov_tokens]]
    weights = ov.ov_weights(model)
    effective = ov.effective_embedding(model, vocab)
    return ProseScreen(scores=read.scores(), control=read.control_scores(),
                       ov_strength=ov.diagonal_strength_from_vectors(weights, effective, vocab), k=k,
                       ov_raw_strength=ov.ov_diagonal_strength(weights, vocab)), batch, read


@dataclass(frozen=True)
class ProseCheck:
    """Ablating a copy-suppression head on windows where it attends to an earlier token (>= `min_attention`)."""

    head: Head
    check: controls.CausalCheck
    windows: int
    min_attention: float


def prose_check(model: TransformerBridge, head: Head, *, pool: int, length: int, max_windows: int,
                min_attention: float, n_random: int, seed: int) -> ProseCheck | None:
    """Fresh windows; keep those where `head` puts at least `min_attention` on one earlier token; ablate.

    The target of every window is the token `head` attends to most, so "ablating random heads" asks
    how much any head's removal gives back that same token. None when fewer than 4 of the `pool` windows
    qualify (raise `pool` or lower `min_attention` to test the head anyway).
    """
    batch = tasks.natural_text(model, batch=pool, length=length, seed=seed)
    keys, weights = attended_keys(capture.read_end(model, batch.tokens).attention)  # where heads look; no effects
    weight = weights[head[0], :, head[1]]
    chosen = (weight >= min_attention).nonzero().flatten()[:max_windows]
    if len(chosen) < 4:
        return None
    targets = batch.tokens[chosen, keys[head[0], chosen, head[1]]]
    check = attended_logprob_ablation(model, batch.tokens[chosen], [head], targets, n_random=n_random, seed=seed)
    return ProseCheck(head=head, check=check, windows=len(chosen), min_attention=min_attention)


def _null(model: TransformerBridge, k: int) -> str:
    total = model.cfg.n_layers * model.cfg.n_heads
    return f"{k} head{'s' if k > 1 else ''} drawn from all {total}"


def ioi_check(model: TransformerBridge, heads: Sequence[Head], data: tasks.TaskBatch, *, n_random: int, seed: int
              ) -> controls.CausalCheck:
    """Mean-ablate (ABC means of `data`) `heads` vs `n_random` sets of as many heads drawn from all heads:
    change of logit(IO) - logit(S) on the IOI prompts `data` (`ioi.ioi_data`, or `ioi.held_out_data`)."""
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(heads), n_random, seed=seed)
    values = ioi.ablated_logit_diff(model, data, [[], list(heads), *draws])
    return controls.check_from_values(values, heads, metric_name="logit(IO) - logit(S)", mode="mean-ablated",
                                      null=_null(model, len(heads)), seed=seed)


HELD_OUT_FAMILY = "IOI in other words: two sentences, other verbs, names, places and objects"


def held_out(model: TransformerBridge, movers: Sequence[Head], *, prompts: int, n_random: int, seed: int
             ) -> tuple[heldout.HeldOut, ioi.IOIRead]:
    """The negative-DLA screen and the IOI ablation of the top negative name mover on `prompts` prompts of
    the held-out IOI family (no screen read them), with `n_random` fresh draws (0: the screen only, no
    ablation). The screen is the *negated* mean DLA, so the most negative head ranks first; the read comes
    back too (attention there)."""
    data = ioi.held_out_data(model, n=prompts, seed=seed)
    read = ioi.ioi_read(model, data)
    check = ioi_check(model, list(movers)[:1], data, n_random=n_random, seed=seed) if n_random else None
    return heldout.HeldOut(HELD_OUT_FAMILY, found=tuple(movers), screen=-read.dla.mean(-1), check=check), read


NEGATIVE_MOVER_DLA = -0.1  # logits: below this, a head that prefers the IO counts as a negative name mover


def negative_name_movers(read: ioi.IOIRead, k: int) -> list[Head]:
    """Among the `k` most negative heads that attend END -> IO more than END -> S, those whose mean DLA
    is below `NEGATIVE_MOVER_DLA` (a head at -0.01 attends to the IO but does nothing with it)."""
    dla = read.dla.mean(-1)
    return [h for h in ioi.negative_mover_ranking(read, k) if dla[h] < NEGATIVE_MOVER_DLA]


@dataclass(frozen=True)
class Sizes:
    """How many prompts each step uses (the notebook's parameters cell sets these)."""

    ioi_prompts: int = 50
    screen_windows: int = 64
    window_length: int = 32
    ov_tokens: int = 100
    check_pool: int = 48
    check_windows: int = 16
    min_attention: float = 0.1
    check_prompts: int = 24
    top_k: int = 3
    n_random: int = 12
    held_out_prompts: int = 20
    held_out_draws: int = 20  # 0: the held-out screen only (no ablation)


@dataclass(frozen=True)
class Study:
    """Negative name movers (IOI) and copy suppression (prose) measured on one model."""

    model: str
    gate: stats.GateResult
    read: ioi.IOIRead
    negative_movers: list[Head]
    screen: ProseScreen
    prose: ProseCheck | None
    ioi: controls.CausalCheck | None
    held: heldout.HeldOut | None = None

    def row(self) -> dict[str, object]:
        movers = labels(self.negative_movers, self.read.dla.mean(-1))
        passing = labels(self.screen.passing, self.screen.scores)
        return {
            "model": self.model,
            "IOI gate": "pass" if self.gate.passed else "fail",
            "negative name movers (DLA)": movers,
            "copy suppression on prose (score)": passing,
            "strongest control score": round(self.screen.control_cutoff, 2),
            "OV rank of those heads": ", ".join(f"{label(h)} {self.screen.ov_rank(h)}" for h in self.screen.passing)
                                      or "-",
            "ablate top NNM: logit diff": str(self.ioi.top) if self.ioi else "not run",
            "random heads (IOI)": self.ioi.draws_summary() if self.ioi else "not run",
            "ablate top CS head: log P(attended)": str(self.prose.check.top) if self.prose else "not run",
            "random heads (prose)": self.prose.check.draws_summary() if self.prose else "not run",
            **(self.held.row() if self.held else {"held-out format": "not run"}),
        }


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """The page's steps in order: IOI gate and DLA, prose screen, both causal checks, and the IOI screen
    and check again on the held-out IOI family."""
    data = ioi.ioi_data(model, n=sizes.ioi_prompts, seed=seed)
    gate = ioi.ioi_gate(model, data, seed=seed)
    read = ioi.ioi_read(model, data)
    movers = negative_name_movers(read, sizes.top_k)
    screen, _, _ = prose_screen(model, windows=sizes.screen_windows, length=sizes.window_length,
                             ov_tokens=sizes.ov_tokens, k=sizes.top_k, seed=seed + 10)
    prose = (prose_check(model, screen.passing[0], pool=sizes.check_pool, length=sizes.window_length,
                         max_windows=sizes.check_windows, min_attention=sizes.min_attention,
                         n_random=sizes.n_random, seed=seed + 20) if screen.passing else None)
    checked = held = None
    if gate.passed and movers:
        checked = ioi_check(model, movers[:1], ioi.ioi_data(model, n=sizes.check_prompts, seed=seed + 30),
                            n_random=sizes.n_random, seed=seed + 30)
        held, _ = held_out(model, movers, prompts=sizes.held_out_prompts, n_random=sizes.held_out_draws,
                           seed=seed + 40)
    return Study(model=models.spec_of(model).name, gate=gate, read=read, negative_movers=movers, screen=screen,
                 prose=prose, ioi=checked, held=held)
