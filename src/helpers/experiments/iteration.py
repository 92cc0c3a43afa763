"""Cabannes et al.'s iteration head: iterative tasks with a chain of thought, toys trained on them, the screen.

Cabannes et al. 2024 (*Iteration Head: A Mechanistic Study of Chain-of-Thought*) train small two-layer
transformers on iterative algorithms written out step by step: the input ``x_1 .. x_L``, an end-of-input
mark, then the states ``s_1 .. s_L`` with ``s_t = F(s_{t-1}, x_t)``. Predicting ``s_t`` needs ``x_t``; an
*iteration head* in layer 2 attends from the position that predicts ``s_t`` to input position ``t``, after
layer 1 has found where the input ends. The book page is ``notebooks/iteration_heads.ipynb``.

Four parts, in the order the page uses them:

- Task: ``IterationTask`` (the running sum mod ``modulus``, parity for 2, with or without the chain of
  thought) and ``IterationBatch`` (tokens, lengths, and where each state is predicted).
- Behaviour: ``step_accuracy`` (each state predicted from the true earlier ones), ``final_answer_correct``
  (greedy decoding of the whole chain, the answer at its end).
- Screen: ``iteration_targets`` (query predicting ``s_t`` -> key ``x_t``, or a shifted key as the control)
  and ``iteration_screen`` (every head's score, its shifted control and the pass rule).
- Toys and checks: ``train_toys`` (several seeds side by side, kept in ``helpers.store``),
  ``ablated_step_accuracy`` (heads zero-ablated), and ``study``, which runs the page's steps.

Token ids: inputs ``0 .. N_SYMBOLS-1``, states ``N_SYMBOLS .. 2 N_SYMBOLS-1`` (state ``s`` is token
``N_SYMBOLS + s``), then ``EOI`` and ``PAD``; one vocabulary for every modulus up to ``N_SYMBOLS``, so a
toy trained on parity reads the mod-3 task's sequences unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers import heads as heads_module, scores, stats, store, toy, toy_train
from helpers.heads import Head

N_SYMBOLS = 3  # inputs and states 0..2: parity uses 0..1, the held-out running sum mod 3 all three
EOI = 2 * N_SYMBOLS
PAD = 2 * N_SYMBOLS + 1
VOCAB_SIZE = 2 * N_SYMBOLS + 2
THRESHOLD = 0.5  # the pass rule: at least half the attention on the step's input ...
CONTROL_RATIO = 2.0  # ... and at least twice the head's own score on the shifted input (t - 1 or t + 1)


# --------------------------------------------------------------------------------------------------
# Task


@dataclass(frozen=True)
class IterationBatch:
    """Sequences of an ``IterationTask``, right-padded to one width.

    With the chain of thought: ``x_1 .. x_L EOI s_1 .. s_L PAD ..``; position ``L + t - 1`` (0-based, the
    EOI for t = 1) predicts ``s_t``. Without it: ``x_1 .. x_L EOI s_L PAD ..``; position ``L`` predicts
    the answer ``s_L``.

    Attributes:
        tokens: ``[batch, pos]`` token ids.
        lengths: ``[batch]`` input lengths L.
        inputs, states: ``[batch, max_len]`` the x_t and s_t (values, not token ids), -1 beyond L.
        cot: whether the states are written out.
    """

    tokens: Int[Tensor, "batch pos"]
    lengths: Int[Tensor, "batch"]
    inputs: Int[Tensor, "batch step"]
    states: Int[Tensor, "batch step"]
    cot: bool

    @property
    def predicts_state(self) -> Bool[Tensor, "batch pos"]:
        """True at the positions whose next token is a state (the trained and scored positions)."""
        pos = torch.arange(self.tokens.shape[1])[None, :]
        length = self.lengths[:, None]
        if self.cot:
            return (pos >= length) & (pos < 2 * length)
        return pos == length

    @property
    def answers(self) -> Int[Tensor, "batch"]:
        """The token of the final state s_L."""
        return N_SYMBOLS + self.states.gather(1, self.lengths[:, None] - 1).flatten()

    def to_toy_batch(self) -> toy_train.ToyBatch:
        """Only the states are trained, as in the paper (the input is random, nothing predicts it)."""
        return toy_train.ToyBatch(tokens=self.tokens, loss_mask=self.predicts_state)


@dataclass(frozen=True)
class IterationTask:
    """The running sum ``s_t = (s_{t-1} + x_t) mod modulus``, ``s_0 = 0``: parity for ``modulus = 2``.

    Inputs are uniform over ``0 .. modulus-1`` and lengths uniform over ``min_len .. max_len``; with
    ``cot`` every state is written after the end-of-input mark, without it only the last one.
    ``sample(generator, batch)`` draws from ``generator`` only: a ready ``sample_batch`` for
    ``toy_train.train_together``. Every sequence is ``n_ctx = 2 max_len + 1`` tokens wide, with or
    without the chain, so one toy configuration serves both.
    """

    modulus: int = 2
    min_len: int = 1
    max_len: int = 8
    cot: bool = True

    def __post_init__(self) -> None:
        if not 2 <= self.modulus <= N_SYMBOLS:
            raise ValueError(f"modulus must lie in 2..{N_SYMBOLS} (the vocabulary has {N_SYMBOLS} input "
                             f"symbols), got {self.modulus}.")
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got min_len={self.min_len}, max_len={self.max_len}.")

    @property
    def n_ctx(self) -> int:
        return 2 * self.max_len + 1

    def sample(self, generator: torch.Generator, batch_size: int) -> toy_train.ToyBatch:
        return self.sequences(generator, batch_size).to_toy_batch()

    def sequences(self, generator: torch.Generator, batch_size: int) -> IterationBatch:
        """``batch_size`` fresh sequences (lengths, then inputs, drawn from `generator`)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        lengths = torch.randint(self.min_len, self.max_len + 1, (batch_size,), generator=generator)
        inputs = torch.randint(0, self.modulus, (batch_size, self.max_len), generator=generator)
        return self.write(inputs, lengths)

    def write(self, inputs: Int[Tensor, "batch step"], lengths: Int[Tensor, "batch"]) -> IterationBatch:
        """The sequences of given inputs (entries beyond each length are ignored) and lengths."""
        batch, steps = inputs.shape
        if steps != self.max_len or tuple(lengths.shape) != (batch,):
            raise ValueError(f"inputs must be [batch, max_len={self.max_len}] and lengths [batch]; got "
                             f"{tuple(inputs.shape)} and {tuple(lengths.shape)}.")
        if lengths.min() < 1 or lengths.max() > self.max_len:
            raise ValueError(f"lengths must lie in 1..{self.max_len}, got {lengths.min()}..{lengths.max()}.")
        if inputs.min() < 0 or inputs.max() >= self.modulus:
            raise ValueError(f"inputs must lie in 0..{self.modulus - 1}, got {inputs.min()}..{inputs.max()}.")
        step = torch.arange(self.max_len)[None, :]
        inside = step < lengths[:, None]  # [batch, step]
        inputs = torch.where(inside, inputs, 0)
        states = torch.where(inside, inputs.cumsum(1) % self.modulus, -1)
        inputs = torch.where(inside, inputs, -1)
        width = self.n_ctx + self.max_len  # room to scatter, cut to n_ctx below
        tokens = torch.full((batch, width), PAD)
        tokens[:, : self.max_len] = torch.where(inside, inputs, PAD)
        rows = torch.arange(batch)
        tokens[rows, lengths] = EOI
        state_tokens = torch.where(inside, N_SYMBOLS + states, PAD)
        if self.cot:
            tokens.scatter_(1, lengths[:, None] + 1 + step, state_tokens)  # s_t at L + t (0-based)
        else:
            tokens[rows, lengths + 1] = N_SYMBOLS + states[rows, lengths - 1]
        return IterationBatch(tokens=tokens[:, : self.n_ctx].clone(), lengths=lengths, inputs=inputs,
                              states=states, cot=self.cot)


# --------------------------------------------------------------------------------------------------
# Screen


def iteration_targets(lengths: Int[Tensor, "batch"], n_pos: int, *, shift: int = 0) -> Bool[Tensor, "batch query key"]:
    """Where an iteration head looks: from the position predicting ``s_t`` to input ``x_t``.

    Cabannes et al. index from 1: ``x_t`` at position t, the end-of-input mark at L + 1, and position
    L + t (holding ``s_{t-1}``, the mark for t = 1) attends to position t. In 0-based positions the query
    ``q = L + t - 1`` looks at key ``q - L``. ``shift`` moves the key to ``x_{t + shift}`` (the control:
    ``shift = -1`` is the input already used, ``+1`` the next one); queries whose shifted key is not an
    input have no target and are skipped by ``scores.attention_on_targets``.
    """
    if lengths.ndim != 1 or lengths.numel() == 0:
        raise ValueError(f"lengths must be a non-empty 1-D tensor [batch], got shape {tuple(lengths.shape)}.")
    if lengths.min() < 1 or 2 * lengths.max() > n_pos:
        raise ValueError(f"every length L needs 1 <= L and 2 L <= n_pos={n_pos} (the chain's queries end at "
                         f"2 L - 1); got lengths {lengths.min()}..{lengths.max()}.")
    pos = torch.arange(n_pos)
    query, key = pos[None, :, None], pos[None, None, :]
    length = lengths[:, None, None]
    is_step = (query >= length) & (query < 2 * length)
    target = query - length + shift
    return is_step & (key == target) & (target >= 0) & (target < length)


@dataclass(frozen=True)
class IterationScreen:
    """Every head's iteration score and its shifted control, with the pass rule applied.

    ``score[l, h]``: mean share of attention from the positions predicting a state on that state's
    input. ``control[l, h]``: the larger of the same share on the input one step back and one step on.
    A head passes when ``score >= THRESHOLD`` and ``score >= CONTROL_RATIO * control``.
    """

    score: Float[Tensor, "layer head"]
    control: Float[Tensor, "layer head"]

    @property
    def passing(self) -> list[Head]:
        """Heads that pass, best score first."""
        ok = (self.score >= THRESHOLD) & (self.score >= CONTROL_RATIO * self.control)
        return [h for h in heads_module.top(self.score) if bool(ok[h])]

    @property
    def best(self) -> Head:
        """The head with the highest score (passing or not)."""
        return heads_module.top(self.score, 1)[0]

    def summary(self) -> str:
        best = self.best
        found = ", ".join(heads_module.label(h) for h in self.passing) or "none"
        return (f"passing: {found}; best {heads_module.label(best)} scores {self.score[best]:.2f} "
                f"(shifted control {self.control[best]:.2f})")


def iteration_screen(patterns: Float[Tensor, "layer batch head query key"], lengths: Int[Tensor, "batch"]
                     ) -> IterationScreen:
    """Score every head from one pass's attention patterns (``scores.attention_on_targets`` on the targets)."""
    n_pos = patterns.shape[-1]
    score = scores.attention_on_targets(patterns, iteration_targets(lengths, n_pos))
    shifted = [scores.attention_on_targets(patterns, iteration_targets(lengths, n_pos, shift=s)) for s in (-1, 1)]
    return IterationScreen(score=score, control=torch.maximum(*shifted))


# --------------------------------------------------------------------------------------------------
# Behaviour


def step_accuracy(logits: Float[Tensor, "batch pos vocab"], batch: IterationBatch) -> Float[Tensor, "batch"]:
    """Per sequence, the share of states predicted right (top-1 over the whole vocabulary) from the true
    earlier tokens (teacher forcing). Without the chain of thought: whether the answer is right."""
    right = logits[:, :-1].argmax(-1) == batch.tokens[:, 1:]
    where = batch.predicts_state[:, :-1]
    return (right & where).sum(1).float() / where.sum(1).float()


@torch.no_grad()
def final_answer_correct(model: toy.AttentionOnlyTransformer, batch: IterationBatch) -> Bool[Tensor, "batch"]:
    """Is the final state right when the model writes the whole chain itself (greedy, top-1 over the
    vocabulary)? Without the chain of thought: its single prediction after the end-of-input mark."""
    rows = torch.arange(len(batch.lengths))
    if not batch.cot:
        return model(batch.tokens)[rows, batch.lengths].argmax(-1) == batch.answers
    tokens = batch.tokens.clone()
    for step in range(int(batch.lengths.max())):
        predicted = model(tokens)[rows, batch.lengths + step].argmax(-1)  # causal: later tokens do not matter
        write = step < batch.lengths
        tokens[rows[write], (batch.lengths + step + 1)[write]] = predicted[write]
    return tokens[rows, 2 * batch.lengths] == batch.answers


@torch.no_grad()
def ablated_step_accuracy(model: toy.AttentionOnlyTransformer, batch: IterationBatch, removed: list[Head]
                          ) -> Float[Tensor, "batch"]:
    """``step_accuracy`` with the listed heads' outputs set to zero at every position (zero ablation:
    the toy's heads have no bias, so this removes exactly what they write)."""
    config = model.config
    heads_module.check(removed, config.n_layers, config.n_heads)
    mask = heads_module.masks([removed], config.n_layers, config.n_heads)[0]
    shape = (config.n_layers, *batch.tokens.shape[:1], config.n_heads, batch.tokens.shape[1], config.d_model)
    patch = toy.HeadPatch(heads=mask, values=torch.zeros(shape))
    return step_accuracy(model.run_with_heads(batch.tokens, head_patch=patch).logits, batch)


def single_head_ablations(model: toy.AttentionOnlyTransformer, batch: IterationBatch) -> Float[Tensor, "layer head"]:
    """Mean step accuracy with each head zero-ablated alone: the exhaustive null for one head."""
    out = torch.zeros(model.config.n_layers, model.config.n_heads)
    for head in heads_module.every(model.config.n_layers, model.config.n_heads):
        out[head] = ablated_step_accuracy(model, batch, [head]).mean()
    return out


def ablation_rank_p(accuracies: Float[Tensor, "layer head"], head: Head) -> float:
    """p = (number of heads whose ablation lowers accuracy at least as much as `head`'s) / (number of heads):
    the rank rule with every other head as a draw, (1 + draws as strong) / (draws + 1)."""
    return float((accuracies <= accuracies[head]).sum()) / accuracies.numel()


# --------------------------------------------------------------------------------------------------
# Toys


# The page's toy (measured on a shared 2-core CPU, see the page): two layers of two heads, d_model 32, an MLP
# in layer 2 only. The paper's layer-1 MLP computes the step index t from the positions; without it, that
# subtraction must happen in layer 2's query-key product, and the iteration head formed in more of our seeds
# (an MLP in both layers let the toys solve parity with attention spread over many inputs).
ITERATION_TOY = toy.ToyConfig(vocab_size=VOCAB_SIZE, n_ctx=IterationTask().n_ctx, n_layers=2, n_heads=2,
                              d_model=32, d_head=16, init_std=0.1, d_mlp=64, mlp_layers=(1,))
ITERATION_TRAIN = toy_train.TrainConfig(steps=2000, batch_size=64, lr=1e-2, warmup_steps=50, eval_every=250)
PARITY = IterationTask(modulus=2, max_len=8, cot=True)
TOY_SEEDS = (0, 1, 2, 3, 4)


@dataclass
class TrainedToy:
    """One toy trained from scratch on one task; model weights and training data both seeded by ``seed``."""

    seed: int
    model: toy.AttentionOnlyTransformer
    history: toy_train.TrainHistory


def train_toys(task: IterationTask = PARITY, *, seeds: tuple[int, ...] = TOY_SEEDS,
               config: toy.ToyConfig = ITERATION_TOY, train_config: toy_train.TrainConfig = ITERATION_TRAIN
               ) -> list[TrainedToy]:
    """Train one toy per seed, side by side, or load them from the results store (``helpers.store``).

    ``history.evals`` records, every ``eval_every`` steps, the step accuracy and the best layer-2
    iteration score on 256 sequences drawn with seed ``10_000 + seed`` (another generator than training's).
    Training runs on one thread (``toy_train.one_thread``).
    """
    seeds = tuple(int(seed) for seed in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}.")
    if config.vocab_size != VOCAB_SIZE or config.n_ctx < task.n_ctx:
        raise ValueError(f"config has vocab_size={config.vocab_size}, n_ctx={config.n_ctx}; the task needs "
                         f"vocab_size={VOCAB_SIZE} and n_ctx >= {task.n_ctx}: use dataclasses.replace(ITERATION_TOY, ...).")

    def train_all() -> dict:
        models = [toy.AttentionOnlyTransformer(dataclasses.replace(config, seed=seed)) for seed in seeds]
        probes = {seed: task.sequences(torch.Generator().manual_seed(10_000 + seed), 256) for seed in seeds}

        def evaluate(model: toy.AttentionOnlyTransformer, step: int) -> dict[str, float]:
            probe = probes[model.config.seed]
            logits, patterns = model(probe.tokens, return_patterns=True)
            out = {"step_accuracy": step_accuracy(logits, probe).mean().item()}
            if task.cot:
                out["iteration_score"] = iteration_screen(patterns, probe.lengths).score[-1].max().item()
            return out

        with toy_train.one_thread():
            histories = toy_train.train_together(models, task.sample, dataclasses.replace(train_config, seed=seeds[0]),
                                                 evaluate, data_seeds=seeds)
        return {"states": [model.state_dict() for model in models],
                "histories": [dataclasses.asdict(history) for history in histories]}

    saved = store.cached("iteration-toys", train_all, seeds=seeds, task=task, config=config, train_config=train_config)
    toys = []
    for seed, state, history in zip(seeds, saved["states"], saved["histories"]):
        model = toy.AttentionOnlyTransformer(dataclasses.replace(config, seed=seed))
        model.load_state_dict(state)
        toys.append(TrainedToy(seed=seed, model=model.eval(), history=toy_train.TrainHistory(**history)))
    return toys


@torch.no_grad()
def patterns_of(model: toy.AttentionOnlyTransformer, batch: IterationBatch) -> Float[Tensor, "layer batch head query key"]:
    return model(batch.tokens, return_patterns=True)[1]


# --------------------------------------------------------------------------------------------------
# The page's steps


@dataclass(frozen=True)
class Sizes:
    """How much the study trains and measures (the page's parameters cell sets these)."""

    seeds: tuple[int, ...] = TOY_SEEDS
    steps: int = ITERATION_TRAIN.steps
    probe: int = 256  # fresh sequences of every trained length: step accuracy, screen, ablations
    gate: int = 256  # fresh sequences of the longest trained length: the behaviour gate
    heldout: int = 256  # sequences of the held-out task


GATE_MARGIN = 0.1  # the gate: CoT answers beat the no-CoT toy's by more than this (lower end of the 95 % CI)


@dataclass(frozen=True)
class SeedResult:
    """What one seed's toys do: the gate, the screen, every single-head ablation, the held-out screen."""

    seed: int
    gate: stats.GateResult  # final answers on max_len-input sequences: CoT toy against no-CoT toy, paired
    cot_answer: float  # share of those answers right after greedy decoding of the chain
    no_cot_answer: float  # the same sequences, the toy trained without the chain
    step_accuracy: float  # teacher-forced, on the probe of every trained length
    screen: IterationScreen
    ablations: Float[Tensor, "layer head"]  # mean step accuracy with each head zero-ablated
    heldout: IterationScreen  # the screen on the running sum mod 3, never trained on

    @property
    def found(self) -> list[Head]:
        """Last-layer heads that pass the rule, best first."""
        last = self.screen.score.shape[0] - 1
        return [h for h in self.screen.passing if h[0] == last]

    @property
    def formed(self) -> bool:
        return bool(self.found)


@dataclass(frozen=True)
class Study:
    """Every seed's results, on the toy configuration the study trained."""

    model: str
    seeds: tuple[SeedResult, ...]

    def formed(self) -> list[int]:
        """The seeds whose toy has a layer-2 head that passes the rule."""
        return [result.seed for result in self.seeds if result.formed]

    def row(self) -> dict[str, object]:
        formed = self.formed()
        return {"model": self.model,
                "gates passed": f"{sum(r.gate.passed for r in self.seeds)} of {len(self.seeds)}",
                "8-bit answers, CoT / no CoT": "; ".join(f"{r.cot_answer:.2f} / {r.no_cot_answer:.2f}"
                                                         for r in self.seeds),
                "seeds with a layer-2 iteration head": f"{len(formed)} of {len(self.seeds)}"}


def gate_sequences(task: IterationTask, n: int, seed: int) -> tuple[IterationBatch, IterationBatch]:
    """``n`` random inputs of the longest length, written with the chain and without it (same inputs)."""
    inputs = torch.randint(0, task.modulus, (n, task.max_len), generator=torch.Generator().manual_seed(seed))
    lengths = torch.full((n,), task.max_len)
    with_chain = dataclasses.replace(task, cot=True).write(inputs, lengths)
    return with_chain, dataclasses.replace(task, cot=False).write(inputs, lengths)


def parity_gate(cot: TrainedToy, no_cot: TrainedToy, sequences: tuple[IterationBatch, IterationBatch], seed: int
                ) -> stats.GateResult:
    """Final answers right, per sequence: the CoT toy writing its own chain against the no-CoT toy, paired;
    passes when the difference's 95 % interval lies above ``GATE_MARGIN`` (and p < 0.01)."""
    right = final_answer_correct(cot.model, sequences[0]).float()
    plain = final_answer_correct(no_cot.model, sequences[1]).float()
    return stats.behaviour_gate(right, plain, paired=True, min_effect=GATE_MARGIN, seed=seed,
                                name=f"parity with a chain of thought, seed {cot.seed}",
                                metric_name="final answer right, CoT toy", null_name="toy trained without CoT")


def study(model: toy.ToyConfig = ITERATION_TOY, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Train the CoT and no-CoT toys (one per seed in ``sizes.seeds``, or load them), then per seed: the gate
    on the longest sequences, the screen, every single-head ablation and the screen on the held-out task.

    ``model`` is the toy's configuration (its ``seed`` is replaced by each of ``sizes.seeds``): the one API of
    the experiments, where a toy family's "model" is the one it trains."""
    config = model
    train = dataclasses.replace(ITERATION_TRAIN, steps=sizes.steps)
    cot = train_toys(PARITY, seeds=sizes.seeds, config=config, train_config=train)
    no_cot = train_toys(dataclasses.replace(PARITY, cot=False), seeds=sizes.seeds, config=config, train_config=train)
    gate_batches = gate_sequences(PARITY, sizes.gate, seed + 1)
    probe = PARITY.sequences(torch.Generator().manual_seed(seed + 2), sizes.probe)
    heldout = dataclasses.replace(PARITY, modulus=3).sequences(torch.Generator().manual_seed(seed + 3), sizes.heldout)
    results = []
    for with_cot, without in zip(cot, no_cot):
        gate = parity_gate(with_cot, without, gate_batches, seed)
        with torch.no_grad():
            logits, patterns = with_cot.model(probe.tokens, return_patterns=True)
        results.append(SeedResult(
            seed=with_cot.seed, gate=gate, cot_answer=gate.metric.mean, no_cot_answer=gate.null.mean,
            step_accuracy=step_accuracy(logits, probe).mean().item(), screen=iteration_screen(patterns, probe.lengths),
            ablations=single_head_ablations(with_cot.model, probe),
            heldout=iteration_screen(patterns_of(with_cot.model, heldout), heldout.lengths)))
    label = f"toy ({config.n_layers} layers x {config.n_heads} heads, {sizes.steps} steps)"
    return Study(model=label, seeds=tuple(results))
