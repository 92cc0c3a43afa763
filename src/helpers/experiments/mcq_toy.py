"""What the heads of the MCQ toys do: scores per head, patching, the E2 rule table, readings over seeds.

Both offline models fail letter-labelled multiple choice (shared experiment E2), so the Chinchilla head
classes of Lieberum et al. (2023) cannot be tested in them; the toys of `helpers.experiments.mcq_toy_task`
make the behaviour exist. The layout decides which head class can exist, because attention is causal:
with the label first, the label token cannot see its content, so the answer can only be found by
attending to the **content** (content gatherers); with the content first, a label position can read its
content, and a head can attend to the correct **label** (correct-letter heads).

Example::

    task = dataclasses.replace(mcq_toy_task.MCQ_TASK, layout="content_first")
    toys = mcq_toy_task.train_mcq_toys((0, 1, 2, 3, 4), task=task)
    readings = [mcq_toy.read_toy(toy, task) for toy in toys]  # roles and patching per head, per seed
    mcq_toy.seed_table(readings, "correct letter")

Parts: scores per head from one ``run_with_heads`` pass (``label_attention``, ``content_attention``,
``end_attention``, ``binding_attention``, ``head_dla``), interventions (``patch_heads``,
``patch_head_sets``, ``ablate_head_sets``, ``path_patch``, ``format_switch``), ``layer_label_logits``
(vocabulary projection), ``classify_heads`` (the rule table of E2) and the claims over seeds
(``read_toy``, ``rank_head_set``, ``seed_table``, ``findings_row``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from helpers.experiments import mcq
from helpers.experiments.mcq_toy_task import (N_OPTIONS, McqPrompts, McqTask, TrainedToy, accuracy, logit_difference,
                                              make_prompts, move_labels, shuffle_options)
from helpers.toy import AttentionOnlyTransformer, HeadPatch, ResidPatch, ToyConfig, ToyRun

# --- scores per head (pure functions of one run) -----------------------------------------------------------

def run(model: AttentionOnlyTransformer, prompts: McqPrompts) -> ToyRun:
    """``model.run_with_heads`` on the prompts, without gradients."""
    with torch.no_grad():
        return model.run_with_heads(prompts.tokens)


def label_attention(patterns: Float[Tensor, "layer batch head query key"], prompts: McqPrompts
                    ) -> Float[Tensor, "layer head batch option"]:
    """Attention from END to each option's label token (raw probabilities, slot order)."""
    end = patterns[:, :, :, prompts.task.end]  # [layer, batch, head, key]
    return end[..., list(prompts.task.label_positions)].transpose(1, 2)


def content_attention(patterns: Float[Tensor, "layer batch head query key"], prompts: McqPrompts
                      ) -> Float[Tensor, "layer head batch option"]:
    """Attention from END to each option's content token (raw probabilities, slot order)."""
    end = patterns[:, :, :, prompts.task.end]
    return end[..., list(prompts.task.content_positions)].transpose(1, 2)


def end_attention(patterns: Float[Tensor, "layer batch head query key"], prompts: McqPrompts, recent: int = 2
                  ) -> Float[Tensor, "layer head batch"]:
    """Attention from END to itself and the ``recent - 1`` tokens before it (``Q:``): where an amplifier looks."""
    end = prompts.task.end
    return patterns[:, :, :, end, end - recent + 1: end + 1].sum(-1).transpose(1, 2)


def binding_attention(patterns: Float[Tensor, "layer batch head query key"], prompts: McqPrompts
                      ) -> Float[Tensor, "layer head"]:
    """Mean attention from the second token of each option to the first (content -> its label when the label
    comes first, label -> its content otherwise): the previous-token heads that bind an option's two tokens,
    which the END heads' keys or values rely on."""
    task = prompts.task
    second = list(max(pair) for pair in zip(task.label_positions, task.content_positions))
    first = [position - 1 for position in second]
    return patterns[:, :, :, second, first].mean(dim=(1, 3))


def label_directions(model: AttentionOnlyTransformer, prompts: McqPrompts) -> Float[Tensor, "batch d_model"]:
    """``W_U[:, correct label] - mean of W_U[:, other labels]``: what the logit difference reads."""
    unembed = model.W_U[:, prompts.labels]  # [d_model, batch, option]
    correct = unembed.gather(2, prompts.correct[None, :, None].expand(unembed.shape[0], -1, 1))[..., 0]
    others = (unembed * prompts.wrong[None]).sum(-1) / (N_OPTIONS - 1)
    return (correct - others).T


def head_dla(model: AttentionOnlyTransformer, toy_run: ToyRun, prompts: McqPrompts
             ) -> Float[Tensor, "layer head batch"]:
    """Direct logit attribution of every head at END on ``logit_difference``.

    Exact without layer norm: the logits are the residual stream times ``W_U``, so the heads' terms plus
    the embeddings' term add up to the logit difference.
    """
    if model.config.layer_norm:
        raise ValueError("head_dla needs a toy built with layer_norm=False (the residual stream is then read "
                         "linearly); with layer norm the attribution would need its scale frozen.")
    out = toy_run.head_outputs[:, :, :, prompts.task.end]  # [layer, batch, head, d_model]
    return torch.einsum("lbhd,bd->lhb", out, label_directions(model, prompts))


def layer_label_logits(model: AttentionOnlyTransformer, toy_run: ToyRun, prompts: McqPrompts
                       ) -> Float[Tensor, "layer batch option"]:
    """Vocabulary projection (Wiegreffe et al.): each layer's attention output at END read by the four
    labels' unembeddings, in slot order."""
    out = toy_run.head_outputs[:, :, :, prompts.task.end].sum(2)  # [layer, batch, d_model]
    unembed = model.W_U[:, prompts.labels]  # [d_model, batch, option]
    return torch.einsum("lbd,dbo->lbo", out, unembed)


# --- interventions (through run_with_heads, no hooks) ------------------------------------------------------

def _check_pair(clean: McqPrompts, corrupt: McqPrompts) -> None:
    if clean.tokens.shape != corrupt.tokens.shape or clean.task != corrupt.task:
        raise ValueError(f"clean and corrupt prompts must come from the same task with the same shape, got "
                         f"{tuple(clean.tokens.shape)} and {tuple(corrupt.tokens.shape)}; build corrupt with "
                         "shuffle_options(clean, seed) or relabel(clean, ...).")


def pair_difference(logits: Float[Tensor, "batch pos d_vocab"], clean: McqPrompts, corrupt: McqPrompts
                    ) -> Float[Tensor, "batch"]:
    """``logit[clean answer] - logit[corrupt answer]`` at END: positive on the clean run, negative on the
    corrupt one."""
    end = logits[:, clean.task.end]
    return end.gather(1, clean.answer[:, None])[:, 0] - end.gather(1, corrupt.answer[:, None])[:, 0]


@dataclass(frozen=True)
class PatchResult:
    """``pair_difference`` on the clean run, the corrupt run, and the clean run with patches applied.

    ``fraction`` is how much of the clean-to-corrupt change each patch reproduces:
    ``(mean clean - mean patched) / (mean clean - mean corrupt)``; 1 means the patched heads carry it all.
    """

    clean: Float[Tensor, "batch"]
    corrupt: Float[Tensor, "batch"]
    patched: Float[Tensor, "... batch"]

    @property
    def fraction(self) -> Float[Tensor, "..."]:
        gap = self.clean.mean() - self.corrupt.mean()
        return (self.clean.mean() - self.patched.mean(-1)) / gap


def _positions(prompts: McqPrompts, positions: str) -> Bool[Tensor, "batch pos"] | None:
    if positions not in ("end", "all"):
        raise ValueError(f"positions must be 'end' (patch only the answer position) or 'all', got {positions!r}.")
    if positions == "all":
        return None
    mask = torch.zeros(prompts.tokens.shape, dtype=torch.bool)
    mask[:, prompts.task.end] = True
    return mask


@torch.no_grad()
def patch_head_sets(model: AttentionOnlyTransformer, clean: McqPrompts, corrupt: McqPrompts,
                    head_sets: Bool[Tensor, "set layer head"], positions: str = "all") -> PatchResult:
    """Activation patching: each set of heads' outputs from the corrupt run put into the clean run."""
    _check_pair(clean, corrupt)
    clean_run, corrupt_run = model.run_with_heads(clean.tokens), model.run_with_heads(corrupt.tokens)
    where = _positions(clean, positions)
    patched = [pair_difference(model.run_with_heads(clean.tokens, head_patch=HeadPatch(
        heads=heads, values=corrupt_run.head_outputs, positions=where)).logits, clean, corrupt) for heads in head_sets]
    return PatchResult(clean=pair_difference(clean_run.logits, clean, corrupt),
                       corrupt=pair_difference(corrupt_run.logits, clean, corrupt), patched=torch.stack(patched))


def single_heads(config: ToyConfig) -> Bool[Tensor, "set layer head"]:
    """One mask per head, in (layer, head) order: ``single_heads(c)[l * n_heads + h]`` selects (l, h)."""
    n = config.n_layers * config.n_heads
    return torch.eye(n, dtype=torch.bool).reshape(n, config.n_layers, config.n_heads)


def patch_heads(model: AttentionOnlyTransformer, clean: McqPrompts, corrupt: McqPrompts, positions: str = "all"
                ) -> PatchResult:
    """Every head patched alone; ``result.patched`` and ``result.fraction`` are ``[layer, head, ...]``."""
    result = patch_head_sets(model, clean, corrupt, single_heads(model.config), positions)
    shape = (model.config.n_layers, model.config.n_heads, len(clean))
    return dataclasses.replace(result, patched=result.patched.reshape(shape))


@torch.no_grad()
def ablate_head_sets(model: AttentionOnlyTransformer, prompts: McqPrompts, head_sets: Bool[Tensor, "set layer head"]
                     ) -> Float[Tensor, "set batch"]:
    """``logit_difference`` with each set's heads mean-ablated (output replaced by its mean over prompts,
    per position): necessity, which patching misses for heads whose output the corruption leaves unchanged."""
    base = model.run_with_heads(prompts.tokens)
    mean = base.head_outputs.mean(dim=1, keepdim=True).expand_as(base.head_outputs)
    return torch.stack([logit_difference(model.run_with_heads(
        prompts.tokens, head_patch=HeadPatch(heads=heads, values=mean)).logits, prompts) for heads in head_sets])


@torch.no_grad()
def path_patch(model: AttentionOnlyTransformer, clean: McqPrompts, corrupt: McqPrompts, sender: tuple[int, int],
               receivers: Bool[Tensor, "layer head"]) -> PatchResult:
    """Path patching: the sender's corrupt output reaches only the receivers (all positions).

    Pass 1 patches the sender and records the receivers' outputs; pass 2 runs the clean prompts with only
    the receivers' outputs replaced by those, so the effect counts just the sender -> receivers path.
    """
    _check_pair(clean, corrupt)
    layer, head = sender
    if not (0 <= layer < model.config.n_layers and 0 <= head < model.config.n_heads):
        raise ValueError(f"sender must be a (layer, head) of this {model.config.n_layers}x{model.config.n_heads} "
                         f"model, got {sender}.")
    if receivers.shape != (model.config.n_layers, model.config.n_heads) or not receivers.any() \
            or receivers[: layer + 1].any():
        raise ValueError(f"receivers must be a non-empty bool [layer, head] mask whose heads all sit after the "
                         f"sender's layer {layer}; got heads {receivers.nonzero().tolist()}.")
    clean_run, corrupt_run = model.run_with_heads(clean.tokens), model.run_with_heads(corrupt.tokens)
    sender_mask = torch.zeros_like(receivers)
    sender_mask[layer, head] = True
    first = model.run_with_heads(clean.tokens, head_patch=HeadPatch(heads=sender_mask, values=corrupt_run.head_outputs))
    second = model.run_with_heads(clean.tokens, head_patch=HeadPatch(heads=receivers, values=first.head_outputs))
    return PatchResult(clean=pair_difference(clean_run.logits, clean, corrupt),
                       corrupt=pair_difference(corrupt_run.logits, clean, corrupt),
                       patched=pair_difference(second.logits, clean, corrupt)[None])


@torch.no_grad()
def format_switch(model: AttentionOnlyTransformer, clean: McqPrompts, other: McqPrompts) -> PatchResult:
    """Patch the residual stream at END entering each layer (``n_layers``: the final stream) from prompts in
    another label format into the clean ones. ``result.fraction[l]`` near 1 means the answer symbol is
    already fixed in the stream entering layer l; the first such l follows the layer that writes it."""
    _check_pair(clean, other)
    if torch.equal(clean.answer, other.answer):
        raise ValueError("the two formats give the same answer tokens; relabel one of them (e.g. 'abcd' vs 'qzrx').")
    clean_run, other_run = model.run_with_heads(clean.tokens), model.run_with_heads(other.tokens)
    where = _positions(clean, "end")
    patched = [pair_difference(model.run_with_heads(clean.tokens, resid_patch=ResidPatch(
        layer=layer, values=other_run.resid[layer], positions=where)).logits, clean, other)
        for layer in range(model.config.n_layers + 1)]
    return PatchResult(clean=pair_difference(clean_run.logits, clean, other),
                       corrupt=pair_difference(other_run.logits, clean, other), patched=torch.stack(patched))


# --- the rule table of E2 ----------------------------------------------------------------------------------

ROLES = ("correct letter", "content gatherer", "amplification", "single letter", "constant", "other")


@dataclass(frozen=True)
class RoleRules:
    """Thresholds of the E2 rule table (reference §6.2), fixed before looking at any trained model.

    The numbers are the ones `helpers.mcq` applies to the pretrained models (one definition, imported from
    there): a label class needs ``min_label_mass`` of END's attention on the labels, and its shares are
    of that label attention; a content gatherer needs ``min_content_mass`` on the contents and more than
    ``gatherer_share`` of that on the correct content. Two things differ, because the toy's logit scale
    is large and its 8 heads are too few for a percentile: the real-model rules also ask a share to beat
    the 95th percentile of every head's decoy share, and the toy's Amplification threshold is a fraction
    of the mean logit difference instead of 0.1 logits (``recent`` counts "Q:" and END, the toy's two
    tokens after the options; the real prompts have three: "Answer", ":" and END).
    """

    min_label_mass: float = mcq.FLOOR
    constant_entropy: float = mcq.UNIFORM  # times log 4
    constant_max_bias: float = mcq.INDEPENDENT  # |share on the correct label - 1/4|
    single_letter_share: float = mcq.CONCENTRATED
    correct_letter_share: float = mcq.CONCENTRATED
    min_content_mass: float = mcq.FLOOR
    gatherer_share: float = mcq.CONCENTRATED  # share of the content attention on the correct content
    amplification_dla: float = 0.2  # fraction of the mean logit difference
    amplification_end_share: float = mcq.RECENT_SHARE
    recent: int = 2  # END and the token before it count as "END or recent tokens"


@dataclass(frozen=True)
class HeadRole:
    """One head's E2 scores (means over prompts) and the class they give, first match in ``ROLES`` order."""

    layer: int
    head: int
    role: str
    label_mass: float
    label_entropy: float  # mean entropy of the label attention, as a fraction of log 4
    fixed_slot: int  # the slot a single-letter head would favour
    fixed_slot_share: float  # its share of label attention, over prompts where it is not the answer
    correct_label_share: float
    correct_content: float  # raw END attention on the correct content
    distractor_content: float  # mean over the three distractors
    content_mass: float  # END attention on all four contents
    correct_content_share: float  # share of the content attention on the correct content
    end_share: float
    dla: float
    dla_fraction: float  # dla / mean logit difference

    @property
    def name(self) -> str:
        return f"L{self.layer}H{self.head}"


def _role(score: HeadRole, rules: RoleRules) -> str:
    looks_at_labels = score.label_mass >= rules.min_label_mass
    if looks_at_labels and score.correct_label_share > rules.correct_letter_share and score.dla > 0:
        return "correct letter"
    if score.content_mass >= rules.min_content_mass and score.correct_content_share > rules.gatherer_share:
        return "content gatherer"
    if score.dla_fraction >= rules.amplification_dla and score.end_share >= rules.amplification_end_share:
        return "amplification"
    if looks_at_labels and score.fixed_slot_share > rules.single_letter_share:
        return "single letter"
    if (looks_at_labels and score.label_entropy >= rules.constant_entropy
            and abs(score.correct_label_share - 1 / N_OPTIONS) <= rules.constant_max_bias):
        return "constant"
    return "other"


def classify_heads(model: AttentionOnlyTransformer, toy_run: ToyRun, prompts: McqPrompts,
                   rules: RoleRules = RoleRules()) -> list[HeadRole]:
    """Scores and class of every head from one run (``run(model, prompts)``), in (layer, head) order."""
    if rules.recent < 1:
        raise ValueError(f"RoleRules.recent must be at least 1 (END itself), got {rules.recent}.")
    labels = label_attention(toy_run.patterns, prompts)  # [layer, head, batch, option]
    mass = labels.sum(-1)
    share = labels / mass.clamp_min(1e-12)[..., None]
    entropy = -(share * share.clamp_min(1e-12).log()).sum(-1) / math.log(N_OPTIONS)
    pick = prompts.correct[None, None, :, None].expand(*labels.shape[:3], 1)
    correct_share = share.gather(-1, pick)[..., 0]
    not_answer = prompts.wrong.float()  # [batch, option]
    slot_share = (share * not_answer).sum(2) / not_answer.sum(0)  # [layer, head, option]
    contents = content_attention(toy_run.patterns, prompts)
    correct_content = contents.gather(-1, pick)[..., 0]
    distractor = (contents * prompts.wrong).sum(-1) / (N_OPTIONS - 1)
    content_mass = contents.sum(-1)
    content_share = correct_content / content_mass.clamp_min(1e-12)
    ends = end_attention(toy_run.patterns, prompts, rules.recent)
    dla = head_dla(model, toy_run, prompts).mean(-1)
    total = logit_difference(toy_run.logits, prompts).mean()
    roles = []
    for layer in range(model.config.n_layers):
        for head in range(model.config.n_heads):
            slot = int(slot_share[layer, head].argmax())
            score = HeadRole(
                layer=layer, head=head, role="", label_mass=mass[layer, head].mean().item(),
                label_entropy=entropy[layer, head].mean().item(), fixed_slot=slot,
                fixed_slot_share=slot_share[layer, head, slot].item(),
                correct_label_share=correct_share[layer, head].mean().item(),
                correct_content=correct_content[layer, head].mean().item(),
                distractor_content=distractor[layer, head].mean().item(),
                content_mass=content_mass[layer, head].mean().item(),
                correct_content_share=content_share[layer, head].mean().item(),
                end_share=ends[layer, head].mean().item(), dla=dla[layer, head].item(),
                dla_fraction=(dla[layer, head] / total).item())
            roles.append(dataclasses.replace(score, role=_role(score, rules)))
    return roles


def roles_table(roles: list[HeadRole]):
    """The classification as a pandas DataFrame indexed by head name (``L{layer}H{head}``)."""
    import pandas as pd

    rows = [{"head": r.name, **{k: v for k, v in dataclasses.asdict(r).items() if k not in ("layer", "head")}}
            for r in roles]
    return pd.DataFrame(rows).set_index("head")


# --- claims over seeds ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ToyReading:
    """One trained toy read on unseen random-label prompts: accuracy, every head's class and what each head
    carries when patched alone from two counterfactuals.

    ``options_moved[l, h]`` is the share of the answer change head (l, h) carries when its output, at every
    position, comes from prompts with the contents shuffled (``shuffle_options``: the labels stay).
    ``labels_moved[l, h]`` is the share it carries when only its output *at END* comes from prompts whose
    labels were replaced by unused symbols (``move_labels``). A head that reads only the labels at END
    carries nothing under the first by construction, so the second is its test; END only, because the
    classes are defined by what a head does at END (a first-layer head also works at the option tokens).
    """

    seed: int
    accuracy: Float[Tensor, ""]
    early_accuracy: float  # best evaluation accuracy in the first 100 training steps
    logit_diff: float  # mean logit difference, correct label minus the others
    roles: tuple[HeadRole, ...]
    options_moved: Float[Tensor, "layer head"]
    labels_moved: Float[Tensor, "layer head"]

    def heads(self, role: str) -> list[tuple[int, int]]:
        """Heads of one class, in (layer, head) order."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}.")
        return [(r.layer, r.head) for r in self.roles if r.role == role]

    def role(self, head: tuple[int, int]) -> HeadRole:
        return next(r for r in self.roles if (r.layer, r.head) == tuple(head))


MOVED = ("options", "labels")


def counterfactual(toy: TrainedToy, task: McqTask, moved: str, *, n: int = 200
                   ) -> tuple[McqPrompts, McqPrompts, str]:
    """The prompts a toy is read on (``n`` random-label prompts seeded ``toy.seed + 1``), their
    counterfactual (seeded ``toy.seed + 2``) and where to patch: ``moved="options"`` shuffles the contents
    and patches every position, ``"labels"`` moves the labels and patches END only (see ``ToyReading``)."""
    if moved not in MOVED:
        raise ValueError(f"moved must be one of {MOVED}, got {moved!r}.")
    prompts = make_prompts(task, n, seed=toy.seed + 1, labels="random")
    if moved == "options":
        return prompts, shuffle_options(prompts, seed=toy.seed + 2), "all"
    return prompts, move_labels(prompts, seed=toy.seed + 2), "end"


def read_toy(toy: TrainedToy, task: McqTask, *, n: int = 200) -> ToyReading:
    """``ToyReading`` of one toy on the prompts of ``counterfactual`` (the same for both corruptions)."""
    prompts, shuffled, _ = counterfactual(toy, task, "options", n=n)
    _, relabelled, _ = counterfactual(toy, task, "labels", n=n)
    toy_run = run(toy.model, prompts)
    early = [e["accuracy"] for e in toy.history.evals if e["step"] <= 100]
    return ToyReading(
        seed=toy.seed, accuracy=accuracy(toy_run.logits, prompts).mean(), early_accuracy=max(early),
        logit_diff=logit_difference(toy_run.logits, prompts).mean().item(),
        roles=tuple(classify_heads(toy.model, toy_run, prompts)),
        options_moved=patch_heads(toy.model, prompts, shuffled, positions="all").fraction,
        labels_moved=patch_heads(toy.model, prompts, relabelled, positions="end").fraction)


@dataclass(frozen=True)
class SetRank:
    """The share of the answer change one head set carries, against every other set of its size.

    ``null`` holds the share for each of the ``C(n_heads_total, k)`` sets of k heads (the observed set
    included): an exact permutation null over all heads, so ``p`` is the observed set's rank from the top
    divided by the number of sets.
    """

    heads: tuple[tuple[int, int], ...]
    carried: float
    null: Float[Tensor, "set"]

    @property
    def p(self) -> float:
        return float((self.null >= self.carried - 1e-6).sum()) / len(self.null)

    def summary(self) -> str:
        names = ", ".join(f"L{l}H{h}" for l, h in self.heads)
        return (f"{names} carry {self.carried:.2f} of the answer change; all {len(self.null)} sets of "
                f"{len(self.heads)} heads: median {self.null.median():.2f}, max {self.null.max():.2f}; p = {self.p:.3f}")


def rank_head_set(model: AttentionOnlyTransformer, clean: McqPrompts, corrupt: McqPrompts,
                  heads: list[tuple[int, int]] | tuple[tuple[int, int], ...], positions: str = "all") -> SetRank:
    """Patch ``heads`` together from ``corrupt`` (at ``positions``: "all" or "end") and rank the share they
    carry among all sets of that size."""
    n_layers, n_heads = model.config.n_layers, model.config.n_heads
    heads = tuple(sorted(tuple(h) for h in heads))
    if not heads or len(set(heads)) != len(heads) or any(not (0 <= l < n_layers and 0 <= h < n_heads) for l, h in heads):
        raise ValueError(f"heads must be distinct (layer, head) pairs of this {n_layers}x{n_heads} toy, got {heads}.")
    every = list(itertools.combinations([(l, h) for l in range(n_layers) for h in range(n_heads)], len(heads)))
    masks = torch.zeros(len(every), n_layers, n_heads, dtype=torch.bool)
    for i, head_set in enumerate(every):
        for l, h in head_set:
            masks[i, l, h] = True
    fractions = patch_head_sets(model, clean, corrupt, masks, positions).fraction
    return SetRank(heads=heads, carried=float(fractions[every.index(heads)]), null=fractions)


def rank_in_toy(toy: TrainedToy, task: McqTask, heads: list[tuple[int, int]], moved: str, *, n: int = 200) -> SetRank:
    """``rank_head_set`` on the prompts and counterfactual a ``ToyReading`` uses for ``moved``."""
    clean, corrupt, positions = counterfactual(toy, task, moved, n=n)
    return rank_head_set(toy.model, clean, corrupt, heads, positions)


def seed_table(readings: list[ToyReading], role: str):
    """One row per seed: accuracy, the heads of class ``role``, what they write directly and what they carry
    under both counterfactuals (sums over the class's heads), as a pandas DataFrame indexed by seed."""
    import pandas as pd

    rows = []
    for reading in readings:
        heads = reading.heads(role)
        rows.append({
            "seed": reading.seed, "accuracy": round(float(reading.accuracy), 3),
            f"{role} heads": ", ".join(f"L{l}H{h}" for l, h in heads) or "none",
            "direct effect (share)": round(sum(reading.role(h).dla_fraction for h in heads), 2),
            "carried, options moved": round(float(sum(reading.options_moved[h] for h in heads)), 2),
            "carried at END, labels moved": round(float(sum(reading.labels_moved[h] for h in heads)), 2),
        })
    return pd.DataFrame(rows).set_index("seed")


def findings_row(readings: list[ToyReading], role: str, *, causal: str) -> dict[str, object]:
    """The toys' row in an MCQ page's findings table (columns as ``mcq.MCQStudy.row``): ranges over seeds."""
    accuracies = [float(r.accuracy) for r in readings]
    counts = [len(r.heads(role)) for r in readings]
    family = role.replace(" ", "_")
    return {"model": f"toy ({len(readings)} seeds)",
            "4 options: accuracy (95% CI)": f"{min(accuracies):.3f} to {max(accuracies):.3f} across seeds",
            "gate": "pass" if min(accuracies) > 0.95 else "fail",
            f"{mcq.FAMILY_NAMES.get(family, role)} signature (heads)": f"{min(counts)} to {max(counts)} per seed",
            "causal role": causal}
