"""The synthetic multiple-choice task on which a two-layer toy learns to answer with a label, and its training.

A prompt lists four options, each a label and a content token, then asks a question whose answer is
one of the contents; the target is that option's **label**:

    label_first:    A c07  B c02  C c11  D c05  Q: q03   ->  C     (q03's answer is c11: a stored fact)
    content_first:  c07 A  c02 B  c11 C  c05 D  Q: q03   ->  C

Which content answers which question is a fixed random pairing (``McqTask.fact_seed``), so the model must
store 16 facts, and labels come in three formats (A-D, Q/Z/R/X, or four random symbols from a pool of 16,
Lieberum's random-label control), so it must copy the label rather than map a slot to a letter.
Counterfactual prompts: ``shuffle_options`` (contents move, labels stay), ``move_labels`` (labels
replaced by unused symbols), ``relabel`` (another label format). ``train_mcq_toys`` trains one toy per
seed, side by side; the head-level analysis is in `helpers.experiments.mcq_toy`.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers.store import cached
from helpers.toy import AttentionOnlyTransformer, ToyConfig
from helpers.toy_train import ToyBatch, TrainConfig, TrainHistory, one_thread, train_together

N_OPTIONS = 4
LABEL_NAMES = ("A", "B", "C", "D", "Q", "Z", "R", "X", "#", "$", "%", "&", "*", "+", "@", "~")
LABEL_FORMATS = ("abcd", "qzrx", "random")
LAYOUTS = ("label_first", "content_first")
QUESTION_MARK = 0  # token id of "Q:"


@dataclass(frozen=True)
class McqTask:
    """Vocabulary and prompt layout of the synthetic MCQ task.

    Token ids: 0 is ``Q:``; ``1..16`` the labels (``LABEL_NAMES``: A-D, then Q/Z/R/X, then 8 symbols);
    then ``n_facts`` question tokens ``q00..`` and ``n_facts`` content tokens ``c00..``. Question i's answer
    is content ``fact_answers()[i]``. ``label_mix`` gives the training share of each ``LABEL_FORMATS``.
    """

    n_facts: int = 16
    layout: str = "label_first"
    label_mix: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    fact_seed: int = 1234

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}.")
        if self.n_facts < N_OPTIONS:
            raise ValueError(f"n_facts must be at least {N_OPTIONS} (one content per option), got {self.n_facts}.")
        if len(self.label_mix) != 3 or min(self.label_mix) < 0 or sum(self.label_mix) <= 0:
            raise ValueError(f"label_mix must be three non-negative shares for {LABEL_FORMATS}, got {self.label_mix}.")

    @property
    def first_question(self) -> int:
        return 1 + len(LABEL_NAMES)

    @property
    def first_content(self) -> int:
        return self.first_question + self.n_facts

    @property
    def vocab_size(self) -> int:
        return self.first_content + self.n_facts

    @property
    def prompt_len(self) -> int:
        return 2 * N_OPTIONS + 2  # four (label, content) pairs, "Q:", the question token

    @property
    def end(self) -> int:
        """Position of the question token, where the answer label is predicted (the paper's END)."""
        return self.prompt_len - 1

    @property
    def label_positions(self) -> tuple[int, ...]:
        first = 0 if self.layout == "label_first" else 1
        return tuple(range(first, 2 * N_OPTIONS, 2))

    @property
    def content_positions(self) -> tuple[int, ...]:
        first = 1 if self.layout == "label_first" else 0
        return tuple(range(first, 2 * N_OPTIONS, 2))

    def fact_answers(self) -> Int[Tensor, "fact"]:
        """Index of the content that answers each question (a seeded permutation: the stored facts)."""
        return torch.randperm(self.n_facts, generator=torch.Generator().manual_seed(self.fact_seed))

    def token_names(self) -> list[str]:
        return (["Q:", *LABEL_NAMES] + [f"q{i:02d}" for i in range(self.n_facts)]
                + [f"c{i:02d}" for i in range(self.n_facts)])

    def sample(self, generator: torch.Generator, batch_size: int) -> ToyBatch:
        """Training batch for ``toy_train.train``: prompt + answer label, loss only on predicting the label."""
        fmt = torch.multinomial(torch.tensor(self.label_mix, dtype=torch.float), batch_size, replacement=True,
                                generator=generator)
        prompts = _draw(self, generator, batch_size, fmt, torch.randint(0, N_OPTIONS, (batch_size,),
                                                                       generator=generator))
        tokens = torch.cat([prompts.tokens, prompts.answer[:, None]], dim=1)
        loss_mask = torch.zeros_like(tokens, dtype=torch.bool)
        loss_mask[:, self.end] = True
        return ToyBatch(tokens=tokens, loss_mask=loss_mask)


@dataclass(frozen=True)
class McqPrompts:
    """Seeded evaluation prompts with every position named.

    ``labels`` / ``contents`` are token ids per option slot (slot j sits at ``task.label_positions[j]`` /
    ``task.content_positions[j]``); ``correct`` is the slot whose content answers the question and
    ``answer`` its label's token id. ``fmt`` is the label format index (into ``LABEL_FORMATS``) per prompt.
    """

    task: McqTask
    tokens: Int[Tensor, "batch pos"]
    labels: Int[Tensor, "batch option"]
    contents: Int[Tensor, "batch option"]
    correct: Int[Tensor, "batch"]
    fmt: Int[Tensor, "batch"]

    @property
    def answer(self) -> Int[Tensor, "batch"]:
        return self.labels.gather(1, self.correct[:, None])[:, 0]

    @property
    def wrong(self) -> Bool[Tensor, "batch option"]:
        """True at the three slots that are not the answer."""
        return torch.arange(N_OPTIONS)[None, :] != self.correct[:, None]

    def __len__(self) -> int:
        return self.tokens.shape[0]


def _label_ids(task: McqTask, generator: torch.Generator, fmt: Int[Tensor, "batch"]) -> Int[Tensor, "batch option"]:
    batch = fmt.shape[0]
    fixed = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])  # A B C D, Q Z R X
    random = torch.rand(batch, len(LABEL_NAMES), generator=generator).argsort(dim=1)[:, :N_OPTIONS] + 1
    return torch.where((fmt == 2)[:, None], random, fixed[fmt.clamp(max=1)])


def _assemble(task: McqTask, labels: Tensor, contents: Tensor, question: Tensor) -> Int[Tensor, "batch pos"]:
    tokens = torch.empty(labels.shape[0], task.prompt_len, dtype=torch.long)
    tokens[:, list(task.label_positions)] = labels
    tokens[:, list(task.content_positions)] = contents
    tokens[:, -2] = QUESTION_MARK
    tokens[:, -1] = question
    return tokens


def _draw(task: McqTask, generator: torch.Generator, batch: int, fmt: Int[Tensor, "batch"],
          correct: Int[Tensor, "batch"]) -> McqPrompts:
    question = torch.randint(0, task.n_facts, (batch,), generator=generator)
    answer_content = task.fact_answers()[question]  # [batch]
    # Distractors: three distinct other contents, in random order.
    keys = torch.rand(batch, task.n_facts, generator=generator)
    keys[torch.arange(batch), answer_content] = 2.0  # sorts first, then dropped
    distractors = keys.argsort(dim=1, descending=True)[:, 1:N_OPTIONS]  # [batch, 3]
    slot = torch.arange(N_OPTIONS)[None, :].expand(batch, -1)
    from_distractor = (slot - (slot > correct[:, None]).long()).clamp(0, N_OPTIONS - 2)
    contents = torch.where(slot == correct[:, None], answer_content[:, None], distractors.gather(1, from_distractor))
    labels = _label_ids(task, generator, fmt)
    contents = contents + task.first_content
    tokens = _assemble(task, labels, contents, question + task.first_question)
    return McqPrompts(task=task, tokens=tokens, labels=labels, contents=contents, correct=correct, fmt=fmt)


def make_prompts(task: McqTask, n: int, seed: int, labels: str = "abcd") -> McqPrompts:
    """``n`` seeded prompts in one label format, the correct slot balanced (each slot n/4 times, shuffled)."""
    if labels not in LABEL_FORMATS:
        raise ValueError(f"labels must be one of {LABEL_FORMATS}, got {labels!r}.")
    if n < N_OPTIONS or n % N_OPTIONS:
        raise ValueError(f"n must be a positive multiple of {N_OPTIONS} so every slot is correct equally often, "
                         f"got {n}.")
    generator = torch.Generator().manual_seed(seed)
    correct = (torch.arange(n) % N_OPTIONS)[torch.randperm(n, generator=generator)]
    fmt = torch.full((n,), LABEL_FORMATS.index(labels))
    return _draw(task, generator, n, fmt, correct)


def shuffle_options(prompts: McqPrompts, seed: int) -> McqPrompts:
    """Counterfactual prompts: same labels and question, contents rotated by 1-3 slots (seeded per prompt),
    so the correct content, and therefore the answer label, moves to another slot."""
    generator = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, N_OPTIONS, (len(prompts),), generator=generator)
    source = (torch.arange(N_OPTIONS)[None, :] - shift[:, None]) % N_OPTIONS  # new slot j holds old slot j - shift
    contents = prompts.contents.gather(1, source)
    task = prompts.task
    return dataclasses.replace(prompts, contents=contents, correct=(prompts.correct + shift) % N_OPTIONS,
                               tokens=_assemble(task, prompts.labels, contents, prompts.tokens[:, -1]))


def relabel(prompts: McqPrompts, labels: str, seed: int = 0) -> McqPrompts:
    """The same questions and options in another label format (Wiegreffe et al.'s A-D vs Q/Z/R/X)."""
    if labels not in LABEL_FORMATS:
        raise ValueError(f"labels must be one of {LABEL_FORMATS}, got {labels!r}.")
    fmt = torch.full((len(prompts),), LABEL_FORMATS.index(labels))
    new = _label_ids(prompts.task, torch.Generator().manual_seed(seed), fmt)
    return dataclasses.replace(prompts, labels=new, fmt=fmt,
                               tokens=_assemble(prompts.task, new, prompts.contents, prompts.tokens[:, -1]))


# --- training ----------------------------------------------------------------------------------------------

MCQ_TASK = McqTask()
MCQ_TOY = ToyConfig(vocab_size=MCQ_TASK.vocab_size, n_ctx=MCQ_TASK.prompt_len + 1, n_layers=2, n_heads=4,
                    d_model=64, d_head=16, init_std=0.1)
# Measured on a shared 2-core CPU, seeds 0-2, both layouts: accuracy on random-label prompts sits near
# chance (25 %) for 200-300 steps, then jumps to > 87 % within 50 steps and ends at 97-100 %. 500 steps
# take ~17-20 s of CPU on one thread (32 s wall while other jobs ran; two threads on the busy machine:
# 280 s wall for the same, bit-identical, result). Batch 256 matters: with one trained position per
# sequence, batch 64 had not left chance after 800 steps. A third layer learned more slowly and stayed idle
# (its heads' direct effect was ~0), so the default is two layers.
MCQ_TRAIN = TrainConfig(steps=500, batch_size=256, lr=1e-2, warmup_steps=50, eval_every=50)


def label_logits(logits: Float[Tensor, "batch pos d_vocab"], prompts: McqPrompts) -> Float[Tensor, "batch option"]:
    """The four option labels' logits at END, in slot order."""
    return logits[:, prompts.task.end].gather(1, prompts.labels)


def logit_difference(logits: Float[Tensor, "batch pos d_vocab"], prompts: McqPrompts) -> Float[Tensor, "batch"]:
    """Correct label's logit minus the mean of the other three labels' logits, at END."""
    options = label_logits(logits, prompts)
    correct = options.gather(1, prompts.correct[:, None])[:, 0]
    return correct - (options * prompts.wrong).sum(1) / (N_OPTIONS - 1)


def accuracy(logits: Float[Tensor, "batch pos d_vocab"], prompts: McqPrompts) -> Float[Tensor, "batch"]:
    """1.0 where the top token over the whole vocabulary at END is the answer label."""
    return (logits[:, prompts.task.end].argmax(-1) == prompts.answer).float()


def evaluator(prompts: McqPrompts):
    """``evaluate(model, step)`` for ``toy_train.train``: accuracy and mean logit difference on fixed prompts."""
    def evaluate(model: AttentionOnlyTransformer, step: int) -> dict[str, float]:
        logits = model(prompts.tokens)
        return {"accuracy": accuracy(logits, prompts).mean().item(),
                "logit_diff": logit_difference(logits, prompts).mean().item()}
    return evaluate


TOY_SEEDS = (0, 1, 2, 3, 4)  # the seeds every toy claim is stated over


@dataclass(frozen=True)
class TrainedToy:
    """One toy trained from scratch: model and data seeded by ``seed``."""

    seed: int
    model: AttentionOnlyTransformer
    history: TrainHistory


def train_mcq_toys(seeds: tuple[int, ...] = TOY_SEEDS, task: McqTask = MCQ_TASK, config: ToyConfig = MCQ_TOY,
                   train_config: TrainConfig = MCQ_TRAIN) -> list[TrainedToy]:
    """Train one toy per seed, side by side (``toy_train.train_together``), or load them from the results store.

    Which head grows which role depends on the seed and, through float rounding, on the CPU's kernels, so
    the pages state their toy claims over every seed in ``seeds``. The six MCQ pages train the same toys,
    so they are kept in ``helpers.store`` (keyed on the code, the arguments and the float kernels); training
    runs on one thread (``toy_train.one_thread``), about 80 s for five toys on a 2-core CPU.
    ``python -m helpers.experiments.mcq_toy_task`` trains both layouts ahead of the pages (``make toys``).

    ``history.evals`` records accuracy and logit difference on 256 random-label prompts with seed
    ``10_000 + seed``, never seen in training (the data generator differs).
    """
    seeds = tuple(int(seed) for seed in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}.")
    if config.vocab_size != task.vocab_size or config.n_ctx < task.prompt_len:
        raise ValueError(f"config has vocab_size={config.vocab_size}, n_ctx={config.n_ctx}; the task needs "
                         f"vocab_size={task.vocab_size} and n_ctx >= {task.prompt_len}: build it with "
                         "dataclasses.replace(MCQ_TOY, ...) from the task's sizes.")

    def train_all() -> dict:
        models = [AttentionOnlyTransformer(dataclasses.replace(config, seed=seed)) for seed in seeds]
        prompts = {seed: make_prompts(task, 256, 10_000 + seed, "random") for seed in seeds}

        def evaluate(model: AttentionOnlyTransformer, step: int) -> dict[str, float]:
            return evaluator(prompts[model.config.seed])(model, step)

        with one_thread():
            histories = train_together(models, task.sample, dataclasses.replace(train_config, seed=seeds[0]), evaluate,
                                       data_seeds=seeds)
        return {"states": [model.state_dict() for model in models],
                "histories": [dataclasses.asdict(history) for history in histories]}

    saved = cached("mcq-toys", train_all, seeds=seeds, task=task, config=config, train_config=train_config)
    toys = []
    for seed, state, history in zip(seeds, saved["states"], saved["histories"]):
        model = AttentionOnlyTransformer(dataclasses.replace(config, seed=seed))
        model.load_state_dict(state)
        toys.append(TrainedToy(seed=seed, model=model.eval(), history=TrainHistory(**history)))
    return toys


def move_labels(prompts: McqPrompts, seed: int) -> McqPrompts:
    """Counterfactual prompts with the *labels* moved: every option gets a label symbol that the prompt did
    not use (drawn from ``LABEL_NAMES``), contents and question unchanged, so the answer slot stays and the
    answer token changes. The control for heads that read the labels, which ``shuffle_options`` (labels left
    in place) cannot test."""
    generator = torch.Generator().manual_seed(seed)
    symbols = torch.arange(1, len(LABEL_NAMES) + 1)
    keys = torch.rand(len(prompts), len(LABEL_NAMES), generator=generator)
    used = (symbols[None, :, None] == prompts.labels[:, None, :]).any(-1)  # [batch, symbol]
    keys[used] = 2.0  # used symbols sort last and are never drawn
    new = symbols[keys.argsort(dim=1)[:, :N_OPTIONS]]
    return dataclasses.replace(prompts, labels=new, fmt=torch.full_like(prompts.fmt, LABEL_FORMATS.index("random")),
                               tokens=_assemble(prompts.task, new, prompts.contents, prompts.tokens[:, -1]))


if __name__ == "__main__":  # `python -m helpers.experiments.mcq_toy_task [LAYOUT ...]` fills the store (`make toys`)
    unknown = sorted(set(sys.argv[1:]) - set(LAYOUTS))
    if unknown:
        sys.exit(f"unknown layout {', '.join(unknown)}; choose from {', '.join(LAYOUTS)} (none given: both)")
    for layout in sys.argv[1:] or LAYOUTS:
        toys = train_mcq_toys(TOY_SEEDS, task=dataclasses.replace(MCQ_TASK, layout=layout))
        print(f"{layout}: {len(toys)} toys in the store ({toys[0].history.wall_seconds:.0f} s when trained)")
