"""Function vector heads: heads whose mean output at the last token carries "which task is this" from
in-context examples into a prompt that lacks them (Todd et al. 2024).

The page's steps, in order, each one function here:

- `gate`: N-shot top-1 accuracy (whole vocabulary) on each in-context task, against the same queries with
  no examples (zero-shot) and with the examples' answers shuffled among them. A task the model cannot do
  is dropped from the study and named.
- `screen`: the average indirect effect (AIE) of every head. A head's mean output at the last token over
  clean N-shot prompts is patched into the shuffled-label prompts (that position only); the gain in the
  correct token's probability is averaged over prompts and then over the kept tasks.
- `steering`: the function vector (sum of the top-k heads' mean outputs, written into the residual stream)
  added after one middle layer of zero-shot prompts; the gain in top-1 accuracy against `n_draws` sets of k
  heads drawn from all heads (their outputs summed the same way) and against another task's vector.
- `held_out`: the AIE screen and the steering again on a prompt template the screen never saw, and on a
  task not used for ranking.

`study(model, *, sizes, seed)` runs them all, as the page does, for the comparison model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from helpers import (capture, controls, heads, heldout, interventions, models, patching, readout, stats, store,
                     tasks)
from helpers.attribution import norm_gain
from helpers.heads import Head

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

K = 10  # pre-registered: Todd et al. sum the top 10 heads for GPT-J
MIN_EFFECT = 0.1  # the gate: N-shot accuracy beats both baselines by at least this much (interval lower bound)
LAYER_FRACTION = 1 / 3  # pre-registered: add the vector after block n_layers // 3 (early-middle, as the paper)


@dataclass(frozen=True)
class Template:
    """How one in-context example is written; ``{x}`` and ``{y}`` are single tokens after a space."""

    name: str
    example: str  # e.g. "Q: {x}\nA: {y}\n\n"
    prefix: str = ""  # written once before the examples

    def __post_init__(self) -> None:
        if not self.example.count(" {x}") == 1 or not self.example.count(" {y}") == 1:
            raise ValueError(f"a template writes ' {{x}}' and ' {{y}}' once each (a space before each slot); "
                             f"got {self.example!r}")
        if self.example.index("{x}") > self.example.index("{y}"):
            raise ValueError(f"the query slot {{x}} must come before the answer slot {{y}}; got {self.example!r}")

    def prompt(self, demos: Sequence[tuple[str, str]], query: str) -> str:
        """The examples, then the query written up to (not including) the answer's leading space."""
        shown = "".join(self.example.format(x=x, y=y) for x, y in demos)
        return self.prefix + shown + self.example.split(" {y}")[0].format(x=query)


QA = Template("Q/A lines", "Q: {x}\nA: {y}\n\n")
ARROW = Template("arrows in one line", " {x} → {y},", prefix="Pairs:")


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    return tuple(tuple(pair.split(":")) for pair in text.split())  # type: ignore[misc]


# Word pairs; only those whose two words are single tokens (after a space) for a tokenizer are used.
TASKS: dict[str, tuple[tuple[str, str], ...]] = {
    "antonym": _pairs(
        "hot:cold big:small fast:slow up:down happy:sad good:bad high:low long:short rich:poor dark:light "
        "open:closed early:late strong:weak wet:dry full:empty true:false left:right black:white day:night "
        "yes:no in:out love:hate win:lose first:last top:bottom thick:thin wide:narrow clean:dirty loud:quiet "
        "cheap:expensive inside:outside before:after above:below push:pull buy:sell give:take come:go "
        "north:south east:west alive:dead friend:enemy boy:girl man:woman always:never increase:decrease "
        "major:minor positive:negative public:private front:back rise:fall war:peace near:far old:new "
        "hard:soft heavy:light easy:difficult safe:dangerous max:min start:end"),
    "capitalize": _pairs(
        "apple:Apple river:River house:House dog:Dog tree:Tree water:Water king:King city:City music:Music "
        "world:World table:Table green:Green paper:Paper money:Money light:Light power:Power school:School "
        "music:Music house:House game:Game story:Story night:Night summer:Summer winter:Winter river:River "
        "market:Market window:Window garden:Garden bank:Bank model:Model order:Order court:Court family:Family "
        "street:Street office:Office church:Church forest:Forest island:Island mountain:Mountain ocean:Ocean "
        "star:Star moon:Moon heart:Heart field:Field school:School horse:Horse bridge:Bridge castle:Castle "
        "doctor:Doctor teacher:Teacher student:Student letter:Letter number:Number"),
    "country_capital": _pairs(
        "France:Paris Germany:Berlin Italy:Rome Spain:Madrid Japan:Tokyo China:Beijing Russia:Moscow "
        "Egypt:Cairo Greece:Athens Canada:Ottawa Australia:Canberra England:London Ireland:Dublin "
        "Portugal:Lisbon Austria:Vienna Poland:Warsaw Sweden:Stockholm Norway:Oslo Finland:Helsinki "
        "Denmark:Copenhagen Hungary:Budapest Cuba:Havana Peru:Lima Chile:Santiago Kenya:Nairobi "
        "Thailand:Bangkok Turkey:Ankara Iran:Tehran Iraq:Baghdad Syria:Damascus Lebanon:Beirut "
        "Belgium:Brussels Netherlands:Amsterdam Switzerland:Bern Colombia:Bogota Venezuela:Caracas "
        "Korea:Seoul Vietnam:Hanoi Philippines:Manila Indonesia:Jakarta Nigeria:Abuja Ghana:Accra "
        "Morocco:Rabat Israel:Jerusalem Jordan:Amman Qatar:Doha Ukraine:Kyiv Romania:Bucharest "
        "Bulgaria:Sofia Serbia:Belgrade Scotland:Edinburgh Wales:Cardiff Brazil:Brasilia Pakistan:Islamabad "
        "Afghanistan:Kabul Sudan:Khartoum Libya:Tripoli Tunisia:Tunis Algeria:Algiers Nepal:Kathmandu "
        "Iceland:Reykjavik India:Delhi Czech:Prague"),
    "english_french": _pairs(
        "one:un two:deux three:trois four:quatre five:cinq six:six seven:sept eight:huit nine:neuf ten:dix "
        "cat:chat dog:chien house:maison water:eau red:rouge blue:bleu green:vert black:noir white:blanc "
        "day:jour night:nuit sun:soleil moon:lune man:homme woman:femme book:livre bread:pain wine:vin "
        "king:roi city:ville world:monde love:amour sea:mer time:temps life:vie friend:ami school:école "
        "car:voiture hello:bonjour yes:oui thanks:merci good:bon big:grand small:petit new:nouveau old:vieux "
        "word:mot heart:coeur head:tête hand:main name:nom street:rue door:porte tree:arbre flower:fleur "
        "fire:feu earth:terre horse:cheval bird:oiseau fish:poisson milk:lait cheese:fromage apple:pomme"),
    # Held out: never used to rank heads.
    "present_past": _pairs(
        "go:went run:ran eat:ate see:saw take:took give:gave come:came write:wrote speak:spoke drink:drank "
        "sing:sang swim:swam drive:drove ride:rode fly:flew know:knew grow:grew throw:threw draw:drew "
        "begin:began break:broke choose:chose forget:forgot get:got make:made say:said tell:told sell:sold "
        "find:found think:thought buy:bought bring:brought teach:taught catch:caught fight:fought feel:felt "
        "keep:kept sleep:slept leave:left meet:met send:sent spend:spent build:built lose:lost win:won "
        "sit:sat stand:stood hear:heard hold:held lead:led pay:paid play:played walk:walked jump:jumped "
        "open:opened call:called want:wanted"),
}
SCREEN_TASKS = ("antonym", "capitalize", "country_capital", "english_french")
HELD_OUT_TASK = "present_past"


def usable_pairs(model: TransformerBridge, task: str) -> list[tuple[str, str]]:
    """The task's pairs (first occurrence of each query) whose two words are one token each after a space."""
    if task not in TASKS:
        raise KeyError(f"unknown task {task!r}; the tasks are {sorted(TASKS)}")
    seen, kept = set(), []
    for x, y in TASKS[task]:
        if x in seen:
            continue
        seen.add(x)
        if tasks.single_token_id(model, " " + x) is not None and tasks.single_token_id(model, " " + y) is not None:
            kept.append((x, y))
    return kept


def _derange(n: int, generator: torch.Generator) -> list[int]:
    """A permutation of range(n) that moves every index (labels always land on another example)."""
    if n < 2:
        raise ValueError(f"shuffling labels needs at least 2 examples; got {n}")
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        if all(i != j for i, j in enumerate(order)):
            return order


@dataclass(frozen=True)
class Prompts:
    """One task's seeded prompts in one template: the same queries with N clean examples, the same examples
    with their answers shuffled among them, and no examples at all."""

    task: str
    template: str
    clean: Int[Tensor, "batch pos"]
    shuffled: Int[Tensor, "batch pos"]
    zero_shot: Int[Tensor, "batch pos_zero"]
    answers: Int[Tensor, "batch"]
    queries: tuple[str, ...]


def prompts(model: TransformerBridge, task: str, *, n: int, shots: int, seed: int,
            template: Template = QA) -> Prompts:
    """`n` prompts: each draws a query and `shots` other pairs from the task's usable pairs."""
    pairs = usable_pairs(model, task)
    if len(pairs) < shots + 1:
        raise ValueError(f"task {task!r} has {len(pairs)} pairs of single tokens for this tokenizer; "
                         f"{shots} examples and a query need {shots + 1}")
    generator = torch.Generator().manual_seed(seed)
    clean, shuffled, zero, answers, queries = [], [], [], [], []
    for _ in range(n):
        order = torch.randperm(len(pairs), generator=generator)[:shots + 1].tolist()
        demos, (query, answer) = [pairs[i] for i in order[:shots]], pairs[order[shots]]
        moved = _derange(shots, generator)
        clean.append(template.prompt(demos, query))
        shuffled.append(template.prompt([(x, demos[j][1]) for (x, _), j in zip(demos, moved)], query))
        zero.append(template.prompt([], query))
        answers.append(tasks.require_single_token(model, " " + answer, why="answers are read as one token"))
        queries.append(query)
    return Prompts(task=task, template=template.name, clean=tasks.tokenize_prompts(model, clean),
                   shuffled=tasks.tokenize_prompts(model, shuffled), zero_shot=tasks.tokenize_prompts(model, zero),
                   answers=torch.tensor(answers), queries=tuple(queries))


# ---- pure scoring -----------------------------------------------------------------------------------------


def correct_probability(logits: Float[Tensor, "... vocab"], answers: Int[Tensor, "batch"]
                        ) -> Float[Tensor, "... batch"]:
    """Softmax probability of each prompt's answer over the whole vocabulary (last axis of `logits`)."""
    if logits.shape[-2] != answers.shape[0]:
        raise ValueError(f"logits [..., batch, vocab] and answers [batch] disagree: {tuple(logits.shape)} vs "
                         f"{tuple(answers.shape)}")
    probs = logits.float().softmax(-1)
    index = answers.expand(*logits.shape[:-1]).unsqueeze(-1)
    return probs.gather(-1, index).squeeze(-1)


def top1_correct(logits: Float[Tensor, "... vocab"], answers: Int[Tensor, "batch"]) -> Float[Tensor, "... batch"]:
    """1.0 where the answer is the top token of the whole vocabulary, else 0.0."""
    if logits.shape[-2] != answers.shape[0]:
        raise ValueError(f"logits [..., batch, vocab] and answers [batch] disagree: {tuple(logits.shape)} vs "
                         f"{tuple(answers.shape)}")
    return (logits.argmax(-1) == answers).float()


def end_patched_source(run_z: Float[Tensor, "layer batch pos head d_head"],
                       mean_z: Float[Tensor, "layer head d_head"]) -> Float[Tensor, "layer batch pos head d_head"]:
    """`run_z` with the last position replaced by `mean_z` for every prompt: patching a head from this
    source changes only its output at the last token (earlier positions keep the run's own values)."""
    if run_z.ndim != 5 or mean_z.shape != (run_z.shape[0], run_z.shape[3], run_z.shape[4]):
        raise ValueError(f"run_z must be [layer, batch, pos, head, d_head] and mean_z [layer, head, d_head] of the "
                         f"same layer/head/d_head; got {tuple(run_z.shape)} and {tuple(mean_z.shape)}")
    out = run_z.clone()
    out[:, :, -1] = mean_z[:, None]
    return out


def function_vector(outputs: Float[Tensor, "layer head d_model"], found: Sequence[Head]) -> Float[Tensor, "d_model"]:
    """Sum of the heads' mean outputs (each already written into the residual basis)."""
    if not found:
        raise ValueError("found is empty: pass the heads whose outputs make the function vector")
    heads.check(found, outputs.shape[0], outputs.shape[1])
    return torch.stack([outputs[layer, head] for layer, head in found]).sum(0)


# ---- model runs -------------------------------------------------------------------------------------------


def _chunked(model: TransformerBridge, final: Tensor, answers: Tensor, rows: int = 256,
             probabilities: bool = True) -> tuple[Tensor | None, Tensor]:
    """(P(answer), top-1 correct) for ``final`` [set, batch, d_model], a few sets at a time (Gemma's 262k
    vocabulary makes every row's logits 1 MB). Without `probabilities`, only top-1 (no softmax over the
    vocabulary, a third of Gemma's readout time) and None for P(answer)."""
    n_sets, batch = final.shape[:2]
    step = max(1, rows // batch)
    probs, hits = [], []
    for start in range(0, n_sets, step):
        logits = readout.logits(model, final[start:start + step])
        if probabilities:
            probs.append(correct_probability(logits, answers))
        hits.append(top1_correct(logits, answers))
    return (torch.cat(probs) if probabilities else None), torch.cat(hits)


def _top1(model: TransformerBridge, final: Tensor, answers: Tensor, rows: int = 256,
          shortlist: int = 64) -> Float[Tensor, "set batch"]:
    """Top-1 correctness for ``final`` [set, batch, d_model], exactly as `_chunked` gives it but cheaper.

    The first few sets are read over the whole vocabulary; the `shortlist` top tokens of each of their rows,
    with the answers, make a shortlist. Every other row is read on the shortlist first: when a shortlisted
    token beats the answer, the answer is not the top token (no full read needed); the rows left (the
    answer at least ties every shortlisted token) are read over the whole vocabulary. Most steered rows
    miss, so Gemma's 262k-column unembedding is mostly skipped; the result is the full read's.
    """
    n_sets, batch = final.shape[:2]
    step = max(1, rows // batch)
    logits = readout.logits(model, final[:step])  # [step, batch, vocab]
    head = top1_correct(logits, answers)  # [step, batch]
    if n_sets <= step:
        return head
    ids = torch.cat([logits.topk(shortlist, dim=-1).indices.flatten(), answers]).unique()  # [n]
    rest = final[step:]  # [set - step, batch, d_model]
    short = readout.logits(model, rest, ids)  # [set - step, batch, n]
    answer_at = (ids[None, :] == answers[:, None]).float().argmax(-1)  # [batch] column of each answer
    answer_logit = short.gather(-1, answer_at.expand(short.shape[0], -1).unsqueeze(-1)).squeeze(-1)
    hits = torch.zeros(rest.shape[:2])
    open_rows = (answer_logit >= short.max(-1).values).nonzero()  # [(set, prompt)] still possible
    for start in range(0, len(open_rows), rows):
        where = open_rows[start:start + rows]
        full = readout.logits(model, rest[where[:, 0], where[:, 1]])  # [rows, vocab]
        hits[where[:, 0], where[:, 1]] = (full.argmax(-1) == answers[where[:, 1]]).float()
    return torch.cat([head, hits])


def accuracy(model: TransformerBridge, tokens: Tensor, answers: Tensor) -> Float[Tensor, "batch"]:
    """Top-1 (whole vocabulary) correctness per prompt."""
    return _top1(model, capture.final_at(model, tokens)[None], answers)[0]


@dataclass(frozen=True)
class TaskGate:
    """One task's behaviour gate."""

    task: str
    n_pairs: int
    against_zero: stats.GateResult
    against_shuffled: stats.GateResult

    @property
    def passed(self) -> bool:
        return self.against_zero.passed and self.against_shuffled.passed

    def row(self) -> dict[str, object]:
        return {"task": self.task, "pairs": self.n_pairs, "N-shot": str(self.against_zero.metric),
                "zero-shot": str(self.against_zero.null), "shuffled labels": str(self.against_shuffled.null),
                "kept": self.passed}


@dataclass(frozen=True)
class Reads:
    """One pass over a task's clean and one over its shuffled prompts, read at END: the gate's accuracy
    and the screen's mean outputs come from the same passes (each few-shot pass is a few seconds on a CPU)."""

    clean: capture.EndRead
    shuffled: capture.EndRead


def read(model: TransformerBridge, batch: Prompts) -> Reads:
    """`capture.read_end` on the clean and on the shuffled prompts."""
    return Reads(clean=capture.read_end(model, batch.clean), shuffled=capture.read_end(model, batch.shuffled))


def gate(model: TransformerBridge, batch: Prompts, *, seed: int = 0, reads: Reads | None = None) -> TaskGate:
    """N-shot top-1 accuracy against zero-shot and shuffled-label accuracy on the same queries (`reads`, if
    given, are this batch's passes from `read`)."""
    reads = read(model, batch) if reads is None else reads
    clean = _top1(model, reads.clean.final[None], batch.answers)[0]
    shuffled = _top1(model, reads.shuffled.final[None], batch.answers)[0]
    kwargs = dict(paired=True, min_effect=MIN_EFFECT, seed=seed, name=batch.task, metric_name="N-shot top-1")
    return TaskGate(task=batch.task, n_pairs=len(usable_pairs(model, batch.task)),
                    against_zero=stats.behaviour_gate(clean, accuracy(model, batch.zero_shot, batch.answers),
                                                      null_name="zero-shot", **kwargs),
                    against_shuffled=stats.behaviour_gate(clean, shuffled,
                                                          null_name="with shuffled labels", **kwargs))


@dataclass(frozen=True)
class TaskScreen:
    """What one task gives the screen: every head's indirect effect (first order) and mean output, and the
    exact effect of the heads checked one at a time."""

    task: str
    aie: Float[Tensor, "layer head"]  # first-order gain of P(answer) when the head's clean mean is patched in
    baseline: float  # mean P(answer) on the shuffled-label prompts
    outputs: Float[Tensor, "layer head d_model"]  # each head's mean output at END, in the residual basis
    mean_z: Float[Tensor, "layer head d_head"]  # each head's mean z at END over the clean prompts


def mean_outputs(model: TransformerBridge, tokens: Tensor, run: capture.EndRead | None = None
                 ) -> tuple[Tensor, Tensor]:
    """Each head's mean ``z`` at END over `tokens` [layer, head, d_head], and the same mean written into the
    residual stream [layer, head, d_model] (``z @ W_O``; Gemma's post-attention norm applied with its mean
    scale at END: per prompt, the heads' ``z @ W_O * gain / scale`` sum to the attention block's output
    within 3e-4 of a norm of about 360, checked on a real pass). `run`: `tokens`' `read_end`, if done."""
    run = capture.read_end(model, tokens) if run is None else run
    mean_z = torch.stack([z.mean(0) for z in run.z])  # [layer, head, d_head]
    w_o = model.W_O.detach().float().cpu()  # [layer, head, d_head, d_model]
    outputs = torch.einsum("lhd,lhdm->lhm", mean_z, w_o)
    if run.post_scale is not None:
        for layer in range(model.cfg.n_layers):
            gain = norm_gain(model.blocks[layer].ln1_post, model.cfg.d_model)
            outputs[layer] = outputs[layer] * gain / run.post_scale[layer].mean()
    return mean_z, outputs


def screen_task(model: TransformerBridge, batch: Prompts, reads: Reads | None = None) -> TaskScreen:
    """Every head's indirect effect on the shuffled-label prompts, to first order (one forward and one
    backward pass): the gradient of the mean P(answer) at the head's END output, times the move from its
    shuffled-prompt output to its clean mean. `reads`: the batch's passes from `read`, if done."""
    reads = read(model, batch) if reads is None else reads
    mean_z, outputs = mean_outputs(model, batch.clean, reads.clean)
    shuffled = reads.shuffled
    delta = torch.stack([mean_z[layer][None] - z for layer, z in enumerate(shuffled.z)])  # [layer, batch, head, d]

    def metric(final: Tensor) -> Tensor:
        return correct_probability(readout.logits(model, final), batch.answers).mean()

    aie = patching.end_attribution(model, batch.shuffled, delta, metric)
    baseline = float(correct_probability(readout.logits(model, shuffled.final), batch.answers).mean())
    return TaskScreen(task=batch.task, aie=aie, baseline=baseline, outputs=outputs, mean_z=mean_z)


def exact_aie(model: TransformerBridge, batch: Prompts, screen: TaskScreen,
              head_sets: Sequence[Sequence[Head]]) -> Float[Tensor, "set"]:
    """The exact gain of mean P(answer) on the shuffled-label prompts when each set's heads take their clean
    mean output at END (activation patching). The source differs from the shuffled run at END only, so
    `patched_final_at_end` runs the prefix once and each set over END alone (the same numbers as
    `patched_final` within 1e-5, about 17 times faster)."""
    source = end_patched_source(patching.head_outputs(model, batch.shuffled), screen.mean_z)
    final = patching.patched_final_at_end(model, batch.shuffled, source, [[], *head_sets])
    probs, _ = _chunked(model, final, batch.answers)  # [1 + set, batch]
    return (probs[1:] - probs[0]).mean(1)


def average_aie(screens: Sequence[TaskScreen]) -> Float[Tensor, "layer head"]:
    """The AIE: each head's indirect effect averaged over tasks (each task weighs the same)."""
    if not screens:
        raise ValueError("no task screens: every task failed the gate, so there is nothing to average")
    return torch.stack([s.aie for s in screens]).mean(0)


def steering_layer(model: TransformerBridge) -> int:
    """The pre-registered layer after which the vector is added."""
    return int(model.cfg.n_layers * LAYER_FRACTION)


@dataclass(frozen=True)
class Steering:
    """Zero-shot top-1 accuracy with a vector added after `layer`, pooled over tasks.

    ``values``: ``[set, prompt]`` rows: nothing added, the function vector, another task's function vector,
    then one row per random draw of k heads, then (if `norm_matched`) the same draws rescaled to the function
    vector's norm."""

    layer: int
    found: tuple[Head, ...]
    values: Float[Tensor, "set prompt"]
    tasks: tuple[str, ...]
    n_draws: int
    norm_matched: bool = False

    @property
    def check(self) -> controls.CausalCheck:
        rows = torch.cat([self.values[:2], self.values[3:3 + self.n_draws]])
        return controls.check_from_values(rows, self.found, metric_name="zero-shot top-1 accuracy",
                                          mode="function vector added", null=f"sums of {len(self.found)} heads "
                                          "drawn from all heads")

    @property
    def matched_check(self) -> controls.CausalCheck:
        """The same draws, each rescaled to the function vector's norm (per task): a vector that works only
        because it is larger than the draws' fails here."""
        if not self.norm_matched:
            raise ValueError("run steering(..., norm_matched=True) for the norm-matched draws")
        rows = torch.cat([self.values[:2], self.values[3 + self.n_draws:]])
        return controls.check_from_values(rows, self.found, metric_name="zero-shot top-1 accuracy",
                                          mode="function vector added", null=f"sums of {len(self.found)} heads "
                                          "drawn from all heads, rescaled to the function vector's norm")

    @property
    def clean(self) -> float:
        return float(self.values[0].mean())

    @property
    def with_vector(self) -> float:
        return float(self.values[1].mean())

    @property
    def other_task(self) -> float:
        return float(self.values[2].mean())

    @property
    def against_other_task(self) -> stats.Estimate:
        """Gain of the task's own vector over another task's vector, paired by prompt."""
        return stats.paired_difference(self.values[1], self.values[2])


def steering(model: TransformerBridge, batches: Sequence[Prompts], screens: Sequence[TaskScreen],
             found: Sequence[Head], *, n_draws: int, seed: int, layer: int | None = None,
             others: Sequence[TaskScreen] | None = None, norm_matched: bool = False) -> Steering:
    """Add each task's function vector (and the controls) to its zero-shot prompts; pool the prompts.

    The other-task control gives task i the function vector of ``others[i]`` (default: task i + 1 of
    `screens`, cyclically). A random draw sums the same k random heads' mean outputs from each task's own
    clean prompts."""
    if others is None:
        if len(screens) < 2:
            raise ValueError("the other-task control needs at least 2 tasks, or pass `others`")
        others = [screens[(i + 1) % len(screens)] for i in range(len(screens))]
    if not len(batches) == len(screens) == len(others) or not batches:
        raise ValueError(f"need one screen and one other-task screen per task; got {len(batches)} tasks, "
                         f"{len(screens)} screens and {len(others)} others")
    if any(o.task == s.task for o, s in zip(others, screens)):
        raise ValueError("an other-task control must come from another task")
    layer = steering_layer(model) if layer is None else layer
    draws = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(found), n_draws, seed=seed)
    rows = []
    for batch, screen, other in zip(batches, screens, others):
        own = function_vector(screen.outputs, found)
        drawn = [function_vector(screen.outputs, d) for d in draws]
        matched = [v * (own.norm() / v.norm()) for v in drawn] if norm_matched else []
        vectors = [torch.zeros(model.cfg.d_model), own, function_vector(other.outputs, found), *drawn, *matched]
        final = interventions.final_with_end_added(model, batch.zero_shot, layer, torch.stack(vectors))
        rows.append(_top1(model, final, batch.answers))  # [set, batch]
    return Steering(layer=layer, found=tuple(tuple(h) for h in found), values=torch.cat(rows, dim=1),
                    tasks=tuple(b.task for b in batches), n_draws=n_draws, norm_matched=norm_matched)


@dataclass(frozen=True)
class Diagnosis:
    """What the vector is made of, on the steering prompts (pooled over tasks): how strong each head's mean
    output is on its own, how the sum of the top 1, 2, ..., k heads steers, and how large the vectors are
    next to the residual stream they are added to. A diagnostic after the test, not a second test."""

    layer: int
    singles: Float[Tensor, "layer head"] | None  # zero-shot top-1 with one head's mean output added, if run
    top_k: Float[Tensor, "k"]  # zero-shot top-1 with the top 1..k heads' summed outputs added
    vector_norm: float  # norm of the function vector (mean over tasks)
    draw_norms: Float[Tensor, "draw"]  # norms of the random draws' vectors (mean over tasks)
    residual_norm: float  # mean norm of the residual stream at END after `layer` (zero-shot prompts)
    draw_has_top: Tensor  # [draw] bool: the draw contains the top head (the steering's draws, same seed)

    def single_rank(self, head: Head) -> int:
        """1 + the number of heads whose output alone steers strictly better than `head`'s."""
        if self.singles is None:
            raise ValueError("the single heads were not run: pass Sizes(singles=True) to study")
        return 1 + int((self.singles > self.singles[tuple(head)]).sum())


def diagnose(model: TransformerBridge, batches: Sequence[Prompts], screens: Sequence[TaskScreen],
             found: Sequence[Head], *, n_draws: int, seed: int, layer: int | None = None,
             singles: bool = True) -> Diagnosis:
    """Every head's mean output added alone, and the top 1..k heads' sums, after `layer` of the zero-shot
    prompts (one batched call per task); vector norms against the same random draws as `steering`."""
    layer = steering_layer(model) if layer is None else layer
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    draws = controls.uniform_sets(n_layers, n_heads, len(found), n_draws, seed=seed)
    hits, norms, draw_norms, residual = [], [], [], []
    for batch, screen in zip(batches, screens):
        alone = screen.outputs.reshape(n_layers * n_heads, -1) if singles else screen.outputs[:0, 0]
        sums = torch.stack([function_vector(screen.outputs, found[:k]) for k in range(1, len(found) + 1)])
        vectors = torch.cat([torch.zeros(1, model.cfg.d_model), alone, sums])  # alone: [layer * head or 0, d]
        final = interventions.final_with_end_added(model, batch.zero_shot, layer, vectors)
        hits.append(_top1(model, final, batch.answers))  # [set, batch]
        norms.append(float(sums[-1].norm()))
        draw_norms.append(torch.stack([function_vector(screen.outputs, d).norm() for d in draws]))
        residual.append(capture.residual_at_end(model, batch.zero_shot, [layer])[layer].float().norm(dim=-1).cpu())
    pooled = torch.cat(hits, dim=1).mean(1)  # [set]
    top = tuple(found[0])
    n_alone = n_layers * n_heads if singles else 0
    return Diagnosis(layer=layer, singles=pooled[1:1 + n_alone].reshape(n_layers, n_heads) if singles else None,
                     top_k=pooled[1 + n_alone:], vector_norm=sum(norms) / len(norms),
                     draw_norms=torch.stack(draw_norms).mean(0), residual_norm=float(torch.cat(residual).mean()),
                     draw_has_top=torch.tensor([top in map(tuple, d) for d in draws]))


def layer_sweep(model: TransformerBridge, batches: Sequence[Prompts], screens: Sequence[TaskScreen],
                found: Sequence[Head]) -> Float[Tensor, "task layer"]:
    """Zero-shot accuracy gain of each task's function vector added after each layer (one row per task;
    ``.mean(0)`` pools tasks of equal size)."""
    n_layers = model.cfg.n_layers
    gains = torch.zeros(len(batches), n_layers)
    for row, (batch, screen) in enumerate(zip(batches, screens)):
        vector = function_vector(screen.outputs, found)
        # One call: the clean run (a zero vector), then the vector after each block in turn.
        vectors = torch.cat([torch.zeros_like(vector)[None], vector.expand(n_layers, -1)])
        final = interventions.final_with_end_added(model, batch.zero_shot, [0, *range(n_layers)], vectors)
        hits = _top1(model, final, batch.answers)  # [1 + layer, batch]
        gains[row] = (hits[1:] - hits[0]).mean(1)
    return gains


def decoded(model: TransformerBridge, vector: Float[Tensor, "d_model"], k: int = 10) -> list[str]:
    """The tokens the vector's direct readout favours most (final norm gain folded in, no other norm)."""
    gain = norm_gain(model.ln_final, model.cfg.d_model)
    logits = readout.logits(model, vector * gain)
    return [model.tokenizer.decode([i]) for i in logits.topk(k).indices.tolist()]


# ---- the whole study --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    n: int = 24  # prompts per task for the gate and the screen
    shots: int = 5
    n_zero: int = 24  # zero-shot prompts per task for the steering
    n_draws: int = 100  # random head sets: p >= 1 / 101, so a claim of p < 0.01 needs none as strong
    n_draws_held_out: int = 50  # on the held-out template and task: p >= 1 / 51 ≈ 0.02
    sweep: bool = True  # also add the vector after every layer (the page's figure; the comparison skips it)
    singles: bool = False  # also add every head's mean output alone (the diagnosis; costs one set per head)


@dataclass(frozen=True)
class HeldOutRun:
    """The screen and the steering again on prompts the ranking never saw."""

    family: str
    aie: Float[Tensor, "layer head"]
    steering: Steering
    gates: tuple[TaskGate, ...] = ()  # the behaviour gate on the held-out prompts (the screen's own prompts)

    def held(self, found: Sequence[Head]) -> heldout.HeldOut:
        return heldout.HeldOut(family=self.family, found=tuple(found), screen=self.aie, check=self.steering.check)


@dataclass(frozen=True)
class Study:
    """Every step's result; when no task passes its gate, only the gates (the page stops there)."""

    model: str
    gates: tuple[TaskGate, ...]
    kept: tuple[str, ...]
    screens: tuple[TaskScreen, ...] = ()
    aie: Float[Tensor, "layer head"] | None = None
    found: tuple[Head, ...] = ()
    exact: Float[Tensor, "task head"] | None = None  # exact AIE of each found head alone, per kept task
    steering: Steering | None = None
    sweep: Float[Tensor, "task layer"] | None = None  # gain per kept task and layer the vector is added after
    diagnosis: Diagnosis | None = None  # single heads, top-k sums and norms at the steering layer
    template: HeldOutRun | None = None
    task: HeldOutRun | None = None

    @property
    def exact_mean(self) -> Float[Tensor, "head"]:
        if self.exact is None:
            raise ValueError(f"{self.model}: no task passed its gate, so no head was patched")
        return self.exact.mean(0)

    def row(self) -> dict[str, str]:
        row = {"model": self.model,
               "N-shot top-1": ", ".join(f"{g.task} {g.against_zero.metric.mean:.2f}" for g in self.gates),
               "tasks kept": ", ".join(self.kept) or "none (every gate failed)"}
        if self.steering is None or self.template is None or self.task is None or self.aie is None:
            return row
        check = self.steering.check
        row.update({"top heads (AIE)": heads.labels(self.found[:3], self.aie),
                    "zero-shot top-1": f"{self.steering.clean:.2f} -> {self.steering.with_vector:.2f}",
                    f"control: {len(self.found)} random heads": check.draws_summary(),
                    "control: other task's vector": f"{self.steering.other_task:.2f}",
                    "held-out template": (f"{self.template.steering.clean:.2f} -> "
                                          f"{self.template.steering.with_vector:.2f}"),
                    "held-out task": f"{self.task.steering.clean:.2f} -> {self.task.steering.with_vector:.2f}"})
        return row


def screen_tasks(model: TransformerBridge, names: Sequence[str], *, sizes: Sizes, seed: int,
                 template: Template = QA) -> tuple[list[Prompts], list[TaskScreen]]:
    """Prompts and first-order screens for several tasks in one template."""
    batches = [prompts(model, name, n=sizes.n, shots=sizes.shots, seed=seed + i, template=template)
               for i, name in enumerate(names)]
    return batches, [screen_task(model, b) for b in batches]


def gated_screens(model: TransformerBridge, names: Sequence[str], *, sizes: Sizes, seed: int, gate_seed: int,
                  template: Template = QA) -> tuple[list[Prompts], list[TaskGate], list[TaskScreen]]:
    """`screen_tasks` with each task's gate (bootstrap seed `gate_seed`), both from two passes per task."""
    batches = [prompts(model, name, n=sizes.n, shots=sizes.shots, seed=seed + i, template=template)
               for i, name in enumerate(names)]
    reads = [read(model, b) for b in batches]
    return (batches, [gate(model, b, seed=gate_seed, reads=r) for b, r in zip(batches, reads)],
            [screen_task(model, b, r) for b, r in zip(batches, reads)])


def screened(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0
             ) -> tuple[list[Prompts], list[TaskGate], list[TaskScreen]]:
    """`gated_screens` of `SCREEN_TASKS` in the page's template with `study`'s seeds, kept in the results store
    on its own: the study and the head atlas read one computation."""
    return store.cached("function-vectors-screens",
                        lambda: gated_screens(model, SCREEN_TASKS, sizes=sizes, seed=seed, gate_seed=seed),
                        model=models.spec_of(model).name, weights=store.weights_digest(model), n=sizes.n,
                        shots=sizes.shots, seed=seed)


def zero_shot_batches(model: TransformerBridge, names: Sequence[str], *, sizes: Sizes, seed: int,
                      template: Template = QA) -> list[Prompts]:
    """Zero-shot prompts drawn apart from the screen's (another seed)."""
    return [prompts(model, name, n=sizes.n_zero, shots=sizes.shots, seed=seed + 1000 + i, template=template)
            for i, name in enumerate(names)]


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Gate every screen task, screen every head on the kept tasks, steer zero-shot prompts, then the
    held-out template and the held-out task; kept in the results store (keyed on the model's name and
    weights, the sizes and the seed), so a page's second run reads it back."""
    name = models.spec_of(model).name
    return store.cached("function-vectors-study", lambda: _study(model, name=name, sizes=sizes, seed=seed),
                        model=name, weights=store.weights_digest(model), sizes=sizes, seed=seed)


def _study(model: TransformerBridge, *, name: str, sizes: Sizes, seed: int) -> Study:
    gate_batches, all_gates, all_screens = screened(model, sizes=sizes, seed=seed)  # gate and screen share passes
    gates = tuple(all_gates)
    kept = tuple(g.task for g in gates if g.passed)
    if not kept:
        return Study(model=name, gates=gates, kept=kept)
    batches = [b for b in gate_batches if b.task in kept]
    screens = [s for b, s in zip(gate_batches, all_screens) if b.task in kept]
    aie = average_aie(screens)
    found = tuple(heads.top(aie, K))
    exact = torch.stack([exact_aie(model, b, s, [[h] for h in found]) for b, s in zip(batches, screens)])
    # Held-out task: present -> past tense, never used for ranking (screened only for its own AIE and as the
    # other-task control when a single task is kept).
    _, past_gates, past_screens = gated_screens(model, [HELD_OUT_TASK], sizes=sizes, seed=seed + 200,
                                                gate_seed=seed)
    others = None if len(screens) > 1 else past_screens
    zero = zero_shot_batches(model, kept, sizes=sizes, seed=seed)
    steer = steering(model, zero, screens, found, n_draws=sizes.n_draws, seed=seed, others=others,
                     norm_matched=True)
    sweep = layer_sweep(model, zero, screens, found) if sizes.sweep else None
    diagnosis = diagnose(model, zero, screens, found, n_draws=sizes.n_draws, seed=seed, singles=sizes.singles)
    # Held-out template: the kept tasks written as arrows in one line.
    _, arrow_gates, arrow_screens = gated_screens(model, kept, sizes=sizes, seed=seed + 100, gate_seed=seed,
                                                  template=ARROW)
    arrow_zero = zero_shot_batches(model, kept, sizes=sizes, seed=seed + 100, template=ARROW)
    template = HeldOutRun(family=f"{ARROW.name} ('Pairs: hot → cold, big → small, happy →')",
                          aie=average_aie(arrow_screens), gates=tuple(arrow_gates),
                          steering=steering(model, arrow_zero, arrow_screens, found, n_draws=sizes.n_draws_held_out,
                                            seed=seed + 1, others=None if len(kept) > 1 else past_screens))
    # The held-out task's control vector is the first kept task's.
    past_zero = zero_shot_batches(model, [HELD_OUT_TASK], sizes=sizes, seed=seed + 200)
    task = HeldOutRun(family="present -> past tense (Q/A lines)", aie=past_screens[0].aie, gates=tuple(past_gates),
                      steering=steering(model, past_zero, past_screens, found, n_draws=sizes.n_draws_held_out,
                                        seed=seed + 2, others=screens[:1]))
    return Study(model=name, gates=gates, kept=kept, screens=tuple(screens), aie=aie, found=found, exact=exact,
                 steering=steer, sweep=sweep, diagnosis=diagnosis, template=template, task=task)
