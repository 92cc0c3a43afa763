"""Acronym prompts in the format of García-Carrasco et al. (2024): "The C1 C2 C3 (A1A2" -> A3.

"The Ketchup Lark Wreck (KL" should continue with "W". The paper builds prompts from nouns that are
one GPT-2 token and tokenises the letters one by one; we do the same for any tokenizer: each noun is one
token with its leading space (" Lark"), the parenthesis is the single token " (" and every capital is its
own token ("K", "L"), so every prompt has the same length and the same positions.

Choices (documented here, used by the page):

- The three initials of a prompt are distinct, so the answer letter never already appears in the
  acronym.
- The competing ("wrong") letter is a capital that is not among the prompt's initials, drawn per prompt.
  The *current word* corruption replaces C3 by a noun that starts with exactly that letter, so on the
  corrupted prompt the roles swap and the logit difference ``logit[A3] - logit[wrong]`` changes sign
  (as IOI's metric does between its clean and ABC prompts).
- *Previous words* replaces C1 and C2 by nouns with new initials; *previous letters* replaces A1 and A2
  by new capitals. Both keep C3, the answer and the wrong letter; new initials avoid every letter in use.
- The held-out family (`held_out`) changes the carrier and the words: another lead-in ("Welcome to the"
  instead of "The") and nouns from `HELD_OUT_NOUNS`, a list that shares no noun with `NOUNS`.
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers import capture, controls, heldout, models, ov, patching, readout, stats, tasks
from helpers.heads import Head, label, top as top_heads
from helpers.tasks import TaskBatch

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

NOUNS: tuple[str, ...] = tuple("""
Apple Army Arrow Artist Author Baby Ball Bank Bear Bird Boat Body Book Bottle Box Boy Bread Bridge Brother
Camera Car Card Castle Cat Chair Child Church City Cloud Coffee Computer Cook Country Court Cup Dance Daughter Day
Desk Doctor Dog Door Dragon Dream Driver Eagle Earth Egg Engine Event Eye Face Factory Family Farm Father Field Film
Fire Fish Flag Flower Forest Friend Game Garden Gate Ghost Gift Girl Glass Gold Guard Guest Gun Hair Hall Hand Hat
Heart Hill Horse Hospital Hotel House Ice Idea Island Iron Jack Jar Jet Job Joke Judge Juice Jungle Key Kid King
Kitchen Knife Knight Lady Lake Lamp Land Law Leader Letter Library Light Lion Lord Machine Man Map Market Master
Meal Mirror Money Monkey Moon Mother Mountain Mouse Music Nation Needle Nest Net News Night Nose Note Number Nurse
Ocean Office Oil Orange Owner Paper Park Party Pen Phone Piano Picture Pilot Plane Plant Player Pocket Police Queen
Question Rabbit Radio Rain River Road Robot Rock Room Rose Salt School Sea Ship Shoe Shop Singer Sister Snow Soldier
Song Star Stone Street Student Sun Table Teacher Tea Team Tiger Tool Tower Town Train Tree Truck Uncle Union Unit
User Valley Van Village Voice Wall War Watch Water Wheel Window Wine Winter Wolf Woman Wood World Writer Yard Year
Youth Zone Zoo""".split())

# The held-out family's nouns: none of them is in NOUNS, so the screen never saw them.
HELD_OUT_NOUNS: tuple[str, ...] = tuple("""
Actor Album Angel Animal Ant Apartment Arm Aunt Axe Badge Bag Band Barn Basket Bat Beach Bean Bed Bee Bell Belt
Bench Bike Blade Blanket Board Bone Boot Bowl Brain Branch Brick Bride Brush Bucket Bull Bus Butter Cabin Cake
Camp Candle Cannon Canyon Cap Captain Carpet Cave Chain Chalk Cheese Chef Chest Chicken Chief Clock Coat Coin
Colonel Comet Cotton Cow Crab Crane Crown Cube Curtain Deer Diamond Dinner Dish Doll Dolphin Donkey Drum Duck Dust
Ear Edge Elbow Elephant Empire Fan Feather Fence Finger Flute Fog Fork Fox Frog Fruit Galaxy Gas Giant Glove Goat
Grape Grass Hammer Harbor Hawk Helmet Hero Honey Hook Horn Hunter Ink Insect Ivy Jacket Jail Jeans Jewel Journal
Jury Kettle Kite Kitten Lamb Lawyer Leaf Lemon Lens Lily Lock Lunch Magnet Maid Mask Meadow Medal Milk Mill Miner
Mint Motor Mud Nail Navy Neck Noodle Nut Oak Onion Opera Orbit Oven Owl Palace Pan Parrot Pearl Pepper Pig Pillow
Pipe Planet Plate Poet Pool Potato Prince Pump Quarter Quilt Quiz Rat Ribbon Rice Ring Roof Rope Sail Sand Scarf
Sheep Shell Shield Silk Skirt Sky Snake Soap Sofa Spider Spoon Squirrel Stove Sugar Suit Sword Tank Taxi Tent
Thread Throne Ticket Toast Tomato Tongue Tooth Towel Toy Tractor Trumpet Tube Turtle Umbrella Vase Velvet Vest
Violin Volcano Wagon Wallet Whale Whip Wing Wire Witch Worm Yacht Yogurt Zebra""".split())
HELD_OUT_LEAD = "Welcome to the"  # the main family's lead-in is "The"
HELD_OUT_FAMILY = "lead-in 'Welcome to the', nouns the screen never used"

LETTERS: tuple[str, ...] = tuple(string.ascii_uppercase)
CORRUPTIONS: tuple[str, ...] = ("current word", "previous words", "previous letters")
POSITIONS: tuple[str, ...] = ("c1", "c2", "c3", "paren", "a1", "end")


def letter_ids(model: TransformerBridge) -> dict[str, int]:
    """Token id of every capital letter written without a space ("K"); raises if one is not a single token."""
    ids = {letter: tasks.single_token_id(model, letter) for letter in LETTERS}
    missing = [letter for letter, i in ids.items() if i is None]
    if missing:
        raise ValueError(f"capital letters {missing} are not single tokens for this tokenizer; the acronym "
                         f"task needs one token per letter")
    return ids  # type: ignore[return-value]


def nouns_by_initial(model: TransformerBridge, nouns: Sequence[str] = NOUNS) -> dict[str, list[tuple[str, int]]]:
    """The nouns that are one token with a leading space (" Lark"), grouped by initial: {"L": [("Lark", id)]}."""
    groups: dict[str, list[tuple[str, int]]] = {}
    for noun in nouns:
        if not noun[:1].isupper() or noun[0] not in LETTERS:
            raise ValueError(f"noun {noun!r} must start with a capital A-Z")
        token = tasks.single_token_id(model, " " + noun)
        if token is not None:
            groups.setdefault(noun[0], []).append((noun, token))
    return groups


@dataclass(frozen=True)
class Acronyms:
    """Clean acronym prompts and their three corrupted twins (same length, same positions).

    ``clean.answers`` is A3's letter id, ``clean.wrong`` the competing letter; ``clean.corrupted`` is the
    current-word twin; ``corrupted`` holds all three by name. ``nouns`` are the C3 noun ids and
    ``initials`` their first letters' ids (for OV readings).
    """

    clean: TaskBatch
    corrupted: Mapping[str, Int[Tensor, "batch pos"]]
    letters: Int[Tensor, "26"]
    nouns: Int[Tensor, "n_nouns"]
    initials: Int[Tensor, "n_nouns"]

    def __len__(self) -> int:
        return len(self.clean)


def acronyms(model: TransformerBridge, *, n: int, seed: int, nouns: Sequence[str] = NOUNS,
             lead: str = "The") -> Acronyms:
    """`n` seeded prompts "The C1 C2 C3 (A1A2" with answer A3 and the paper's three corruptions.

    `lead` is the text before the first noun (tokenised as written, e.g. "Welcome to the"); the
    position "the" is its last token.
    """
    if n < 1:
        raise ValueError(f"n must be a positive number of prompts; got {n}")
    if not lead or lead != lead.strip():
        raise ValueError(f"lead must be non-empty text without leading or trailing spaces; got {lead!r}")
    groups = nouns_by_initial(model, nouns)
    if len(groups) < 7:
        raise ValueError(f"only {len(groups)} initials have single-token nouns; need at least 7 (three for a "
                         f"prompt, a wrong letter, two replacements): pass more nouns")
    capitals = letter_ids(model)
    lead_ids = tasks.token_ids(model, lead)
    paren = tasks.single_token_id(model, " (")
    if paren is None:
        raise ValueError("' (' must be a single token for this tokenizer")
    bos = [model.tokenizer.bos_token_id] if model.cfg.default_prepend_bos else []
    rng = random.Random(seed)
    initials = sorted(groups)

    def noun(letter: str) -> tuple[str, int]:
        return rng.choice(groups[letter])

    def build(words: list[tuple[str, int]], acronym: list[str]) -> tuple[list[int], str]:
        ids = bos + lead_ids + [token for _, token in words] + [paren] + [capitals[a] for a in acronym]
        text = lead + " " + " ".join(word for word, _ in words) + " (" + "".join(acronym)
        return ids, text

    rows: dict[str, list[list[int]]] = {"clean": [], **{name: [] for name in CORRUPTIONS}}
    prompts, answers, wrong = [], [], []
    for _ in range(n):
        first, second, third, other = rng.sample(initials, 4)
        words = [noun(first), noun(second), noun(third)]
        ids, text = build(words, [first, second])
        rows["clean"].append(ids)
        prompts.append(text)
        answers.append(capitals[third])
        wrong.append(capitals[other])
        rows["current word"].append(build([words[0], words[1], noun(other)], [first, second])[0])
        fresh = rng.sample([x for x in initials if x not in (first, second, third, other)], 2)
        rows["previous words"].append(build([noun(fresh[0]), noun(fresh[1]), words[2]], [first, second])[0])
        rows["previous letters"].append(build(words, fresh)[0])
    offset = len(bos) + len(lead_ids) - 1  # the lead's last token plays the role of "The"
    batch = torch.full((n,), 0, dtype=torch.long)
    positions = {name: batch + offset + i for i, name in enumerate(("the", "c1", "c2", "c3", "paren", "a1"))}
    positions["end"] = batch + offset + 6
    tensors = {name: torch.tensor(ids, dtype=torch.long) for name, ids in rows.items()}
    clean = TaskBatch(name="acronyms", tokens=tensors["clean"], prompts=tuple(prompts),
                      answers=torch.tensor(answers), wrong=torch.tensor(wrong),
                      corrupted=tensors["current word"], positions=positions,
                      info={"seed": seed, "initials": "".join(initials), "lead": lead,
                            "nouns": sum(len(g) for g in groups.values())})
    pairs = [(token, capitals[letter]) for letter in initials for _, token in groups[letter]]
    return Acronyms(clean=clean, corrupted={name: tensors[name] for name in CORRUPTIONS},
                    letters=torch.tensor([capitals[x] for x in LETTERS]),
                    nouns=torch.tensor([p[0] for p in pairs]), initials=torch.tensor([p[1] for p in pairs]))


def letter_logits(end_logits: Float[Tensor, "batch vocab"], letters: Int[Tensor, "26"]
                  ) -> Float[Tensor, "batch 26"]:
    """The END logits of the 26 capital letters."""
    return end_logits[:, letters.to(end_logits.device)].float().cpu()


def letter_correct(end_logits: Float[Tensor, "batch vocab"], letters: Int[Tensor, "26"],
                   answers: Int[Tensor, "batch"]) -> Bool[Tensor, "batch"]:
    """Is the answer letter the top logit among the 26 capitals?"""
    if end_logits.shape[0] != answers.shape[0]:
        raise ValueError(f"{end_logits.shape[0]} logit rows for {answers.shape[0]} answers")
    if not torch.isin(answers.cpu(), letters.cpu()).all():
        raise ValueError("every answer must be one of the letter ids")
    top = letters.cpu()[letter_logits(end_logits, letters).argmax(-1)]
    return top == answers.cpu()


def end_logit_difference(end_logits: Float[Tensor, "batch vocab"], answers: Int[Tensor, "batch"],
                         wrong: Int[Tensor, "batch"]) -> Float[Tensor, "batch"]:
    """``logit[answer] - logit[wrong]`` per prompt from END logits."""
    rows = torch.arange(end_logits.shape[0])
    logits = end_logits.float().cpu()
    return logits[rows, answers.cpu()] - logits[rows, wrong.cpu()]


@dataclass(frozen=True)
class AcronymGate:
    """The behaviour gate and the accuracy among the 26 capitals, with the per-prompt values."""

    gate: stats.GateResult
    accuracy: stats.Estimate
    chance: float
    clean_diff: Float[Tensor, "batch"]
    corrupted_diff: Float[Tensor, "batch"]

    def summary(self) -> str:
        return (f"{self.gate.summary()}\naccuracy among the 26 capitals {self.accuracy} "
                f"(chance {self.chance:.3f})")


def acronym_gate(clean_logits: Float[Tensor, "batch vocab"], corrupted_logits: Float[Tensor, "batch vocab"],
                 data: Acronyms, *, seed: int = 0) -> AcronymGate:
    """Gate: the clean logit difference vs the current-word twin's (paired).

    A model that ignored C3 would give the same two letter logits on both prompts, so the paired
    difference is centred on zero under that null; the accuracy is reported against chance (1/26).
    """
    batch = data.clean
    clean = end_logit_difference(clean_logits, batch.answers, batch.wrong)
    corrupted = end_logit_difference(corrupted_logits, batch.answers, batch.wrong)
    gate = stats.behaviour_gate(clean.numpy(), corrupted.numpy(), paired=True, seed=seed, name="acronyms",
                                metric_name="logit[A3] - logit[wrong] on the clean prompt",
                                null_name="on the current-word twin")
    correct = letter_correct(clean_logits, data.letters, batch.answers).float()
    return AcronymGate(gate=gate, accuracy=stats.bootstrap_ci(correct.numpy(), seed=seed),
                       chance=1 / len(data.letters), clean_diff=clean, corrupted_diff=corrupted)


# --------------------------------------------------------------------------------------------------
# The letter-mover study: gate -> screen -> exact patching of the top heads, run the same on any model.


@dataclass(frozen=True)
class Sizes:
    """Prompts and sets per step (the page's parameters cell sets these)."""

    gate_prompts: int = 60
    screen_prompts: int = 30
    top_k: int = 4
    n_random: int = 20


@dataclass(frozen=True)
class LetterScreen:
    """Every head's letter-mover evidence on the screen prompts.

    ``patching``: attribution-patching estimate of the logit difference a head *carries* (minus the
    change when its output is patched to the current-word twin's; positive = the head carries it).
    ``to_c3`` / ``to_previous``: mean attention from END to C3 and to C1, C2 (mean of the two).
    ``ov``: fraction of single-token nouns whose initial is the head's top OV logit among the capitals,
    each noun read through its effective embedding (the residual after block 0 of the noun alone).
    ``ov_in_context``: the same fraction over the screen prompts with the residual at C3 entering the
    head's own layer as the source (what the head reads when it attends to C3).
    ``ov_raw``: the first fraction from the raw token embedding ``W_E`` (kept to show how it misleads).
    """

    patching: Float[Tensor, "layer head"]
    to_c3: Float[Tensor, "layer head"]
    to_previous: Float[Tensor, "layer head"]
    ov: Float[Tensor, "layer head"]
    ov_chance: float
    ov_in_context: Float[Tensor, "layer head"] | None = None
    ov_raw: Float[Tensor, "layer head"] | None = None

    def top(self, k: int) -> list[Head]:
        """The pre-registered ranking: heads by the logit difference they carry (attribution patching)."""
        return top_heads(self.patching, k)

    def looks_at_c3(self, head: tuple[int, int], *, threshold: float = 0.2) -> bool:
        """Attends from END to the current word (at least `threshold`) more than to the previous words."""
        return bool(self.to_c3[head] >= threshold and self.to_c3[head] > self.to_previous[head])

    def describe(self, head: Head) -> str:
        context = "" if self.ov_in_context is None else f", at C3 {self.ov_in_context[head]:.2f}"
        return (f"{label(head)} (carries {self.patching[head]:.2f}, END->C3 {self.to_c3[head]:.2f}, "
                f"OV {self.ov[head]:.2f}{context})")


@dataclass(frozen=True)
class PatchCheck:
    """Exact patching of the top-k heads (and of drawn k-sets) to the corrupted twins' outputs.

    The metric is per prompt: the logit difference the patch removes over the mean clean-minus-corrupted
    gap of that corruption (1.0: patching the set alone does what corrupting the prompt does), so
    ``check.top`` is the share the heads carry and ``check.draws`` each drawn set's mean share. Heads are
    patched at every position; only positions from the corrupted token on differ.
    """

    check: controls.CausalCheck
    other_corruptions: Mapping[str, stats.Estimate]

    @property
    def heads(self) -> list[Head]:
        return list(self.check.heads)

    @property
    def passed(self) -> bool:
        """A small set carries most of the logit difference, more than any drawn set of the same size."""
        return self.check.top.lower > 0.5 and self.check.top.lower > self.check.strongest_draw

    def summary(self) -> str:
        others = "; ".join(f"{name}: {value}" for name, value in self.other_corruptions.items())
        return f"{self.check.summary()}; same heads, other corruptions: {others}"


def letter_screen(model: TransformerBridge, data: Acronyms, *, prompts: int) -> LetterScreen:
    """One read of END attention, one attribution-patching pass and the OV table, on `prompts` prompts."""
    batch = data.clean
    tokens = batch.tokens[:prompts]
    read = capture.read_end(model, tokens)
    attention = read.attention.float()  # [layer, batch, head, key]
    pos = {name: where[0].item() for name, where in batch.positions.items()}
    to_c3 = attention[..., pos["c3"]].mean(1)
    to_previous = (attention[..., pos["c1"]] + attention[..., pos["c2"]]).mean(1) / 2
    carried = carried_logit_difference(model, data, prompts=prompts)
    weights = ov.ov_weights(model)
    mapping = ov.mapping_from_vectors(weights, ov.effective_embedding(model, data.nouns), data.initials, data.letters)
    return LetterScreen(patching=carried, to_c3=to_c3, to_previous=to_previous, ov=mapping,
                        ov_chance=1 / len(data.letters), ov_in_context=c3_mapping(model, data, prompts=prompts,
                                                                                  weights=weights),
                        ov_raw=ov.ov_mapping_scores(weights, data.nouns, data.initials, data.letters))


def carried_logit_difference(model: TransformerBridge, data: Acronyms, *, prompts: int) -> Float[Tensor, "layer head"]:
    """The pre-registered score: the logit difference each head carries (minus the attribution-patching
    estimate of the change when its output is patched to the current-word twin's), on `prompts` prompts."""
    batch = data.clean
    source_z = patching.head_outputs(model, batch.corrupted[:prompts])
    return -patching.attribution_patching(model, batch.tokens[:prompts], source_z, batch.answers[:prompts],
                                          batch.wrong[:prompts])


def mapping_at_layer_inputs(weights: ov.OVWeights, inputs: Sequence[Float[Tensor, "batch d_model"]],
                            partners: Int[Tensor, "batch"], candidates: Int[Tensor, "c"]) -> Float[Tensor, "layer head"]:
    """Per head, the share of rows whose partner is the top OV logit among `candidates`, each head reading
    `inputs[layer]`, the residual entering its own layer (one tensor per layer)."""
    if len(inputs) != weights.n_layers:
        raise ValueError(f"give one residual per layer ({weights.n_layers}); got {len(inputs)}")
    return torch.stack([ov.mapping_from_vectors(weights, vectors, partners, candidates)[layer]
                        for layer, vectors in enumerate(inputs)])


def c3_mapping(model: TransformerBridge, data: Acronyms, *, prompts: int, weights: ov.OVWeights | None = None
               ) -> Float[Tensor, "layer head"]:
    """OV noun -> initial read in context: the source is the residual at C3 entering the head's layer.

    The prompts are cut after C3 (the model is causal, so C3's residual does not change), and the answer
    A3 is the initial of C3. Layer 0 reads the token embedding itself.
    """
    weights = weights or ov.ov_weights(model)
    c3 = int(data.clean.positions["c3"][0])
    tokens = data.clean.tokens[:prompts, :c3 + 1]
    residual = capture.residual_at_end(model, tokens, list(range(weights.n_layers - 1)))
    inputs = [weights.embed[tokens[:, -1].to(weights.embed.device)].float().cpu()]
    inputs += [residual[layer].float().cpu() for layer in range(weights.n_layers - 1)]
    return mapping_at_layer_inputs(weights, inputs, data.clean.answers[:prompts], data.letters)


def patch_check(model: TransformerBridge, data: Acronyms, found: Sequence[Head], *, prompts: int,
                n_random: int, seed: int, corruptions: Sequence[str] = ("previous words", "previous letters")) -> PatchCheck:
    """Patch `found` (all positions) to the current-word twin's outputs vs `n_random` sets of as many heads
    drawn from all heads (the found ones included, so a draw may hold a mover); `corruptions` are the
    corruptions under which the found heads alone are also patched."""
    batch = data.clean
    tokens, answers, wrong = batch.tokens[:prompts], batch.answers[:prompts], batch.wrong[:prompts]
    found = [tuple(h) for h in found]
    randoms = controls.uniform_sets(model.cfg.n_layers, model.cfg.n_heads, len(found), n_random, seed=seed)

    def diffs(source: Tensor, sets: list) -> tuple[Tensor, Tensor]:
        """The source prompts' own logit difference, and the clean prompts' with each set patched."""
        source_z = patching.head_outputs(model, source)
        own = readout.logit_difference(model, patching.patched_final(model, source, source_z, [[]])[0], answers, wrong)
        final = patching.patched_final(model, tokens, source_z, sets)
        return own, readout.logit_difference(model, final, answers, wrong)

    def share(clean: Tensor, patched: Tensor, corrupted: Tensor) -> Tensor:
        gap = float((clean - corrupted).mean())
        if abs(gap) < 1e-6:
            raise ValueError("the corruption does not change the logit difference; nothing to share out")
        return (clean - patched) / gap

    corrupted, current = diffs(batch.corrupted[:prompts], [[], found, *randoms])
    clean = current[0]
    top = share(clean, current[1], corrupted)
    drawn = share(clean[None], current[2:], corrupted)  # [set, batch]
    others = {}
    for name in corruptions:
        twin, patched = diffs(data.corrupted[name][:prompts], [[], found])
        others[name] = stats.bootstrap_ci(share(patched[0], patched[1], twin).numpy(), seed=seed)
    check = controls.CausalCheck(
        metric_name="share of the logit difference removed", heads=tuple(found), mode="patched to the current-word twin",
        null=f"{len(found)} heads drawn from all heads", clean=stats.bootstrap_ci(clean, seed=seed),
        top=stats.bootstrap_ci(top, seed=seed), draws=drawn.mean(1))
    return PatchCheck(check=check, other_corruptions=others)


@dataclass(frozen=True)
class HeldOutCheck:
    """The gate, the screen score and the patching check again, on the held-out family.

    ``held.screen`` is the carried logit difference on the held-out prompts; ``held.check`` patches the
    page's found heads there, against fresh draws from all heads.
    """

    gate: AcronymGate
    held: heldout.HeldOut

    @property
    def carried_over(self) -> bool:
        """The gate passes and `HeldOut.carries_over`: every found head ranks in the held-out top 2k, and
        no draw removes as much of the gap as the found heads (p = 1/(N+1))."""
        return bool(self.gate.gate.passed and self.held.carries_over())

    def row(self) -> dict[str, str]:
        return {"held-out gate (accuracy, 26 letters)": f"{'pass' if self.gate.gate.passed else 'fail'} "
                                                        f"({self.gate.accuracy})", **self.held.row()}

    def summary(self) -> str:
        return f"gate {self.gate.accuracy} accuracy, {'pass' if self.gate.gate.passed else 'fail'}; {self.held.summary()}"


def held_out(model: TransformerBridge, found: Sequence[Head], *, prompts: int, n_random: int, seed: int
             ) -> HeldOutCheck:
    """The held-out family (`HELD_OUT_LEAD`, `HELD_OUT_NOUNS`): gate, carried logit difference of every
    head and the current-word patching check of `found` against `n_random` fresh draws from all heads."""
    data = acronyms(model, n=prompts, seed=seed, nouns=HELD_OUT_NOUNS, lead=HELD_OUT_LEAD)
    gate = acronym_gate(end_logits(model, data.clean.tokens), end_logits(model, data.clean.corrupted), data, seed=seed)
    carried = carried_logit_difference(model, data, prompts=prompts)
    check = patch_check(model, data, found, prompts=prompts, n_random=n_random, seed=seed + 1, corruptions=())
    return HeldOutCheck(gate=gate, held=heldout.HeldOut(HELD_OUT_FAMILY, found=list(found), screen=carried,
                                                        check=check.check))


@dataclass(frozen=True)
class Study:
    """The whole page on one model: gate, screen, (when the gate passes) the patching check, and the
    held-out family's check of the same heads."""

    model: str
    gate: AcronymGate
    screen: LetterScreen
    check: PatchCheck | None
    held_out: HeldOutCheck | None = None

    def row(self) -> dict[str, object]:
        """One row of the findings table."""
        top = self.check.heads if self.check else self.screen.top(4)
        return {
            "model": self.model,
            "behaviour gate": "pass" if self.gate.gate.passed else "fail",
            "accuracy (26 letters)": str(self.gate.accuracy),
            "top heads (carries, END->C3, OV effective, OV at C3)": "; ".join(self.screen.describe(h) for h in top),
            "top-k patched: share removed": str(self.check.check.top) if self.check else "not run",
            "random-k: share removed": self.check.check.draws_summary() if self.check else "not run",
            "pass rule": ("pass" if self.check.passed else "fail") if self.check else "not run",
            **(self.held_out.row() if self.held_out else {"held-out format": "not run"}),
        }


def end_logits(model: TransformerBridge, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch vocab"]:
    """END logits, one pass that unembeds only the last position."""
    return readout.logits(model, capture.final_at(model, tokens))


def study(model: TransformerBridge, *, sizes: Sizes = Sizes(), seed: int = 0) -> Study:
    """Gate, screen and patching check, exactly as the page runs them (for the comparison model)."""
    data = acronyms(model, n=sizes.gate_prompts, seed=seed)
    gate = acronym_gate(end_logits(model, data.clean.tokens), end_logits(model, data.clean.corrupted), data, seed=seed)
    screen = letter_screen(model, data, prompts=sizes.screen_prompts)
    check = (patch_check(model, data, screen.top(sizes.top_k), prompts=sizes.screen_prompts,
                         n_random=sizes.n_random, seed=seed + 1) if gate.gate.passed else None)
    held = (held_out(model, screen.top(sizes.top_k), prompts=sizes.screen_prompts, n_random=sizes.n_random,
                     seed=seed + 100) if gate.gate.passed else None)
    return Study(model=models.spec_of(model).name, gate=gate, screen=screen, check=check, held_out=held)
