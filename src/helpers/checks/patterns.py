"""Checkers for the attention-pattern pages (previous-token, induction, duplicate, associative memories)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from helpers import scores


def random_causal_patterns(seed: int, *shape: int, scale: float = 1.0) -> Float[Tensor, "... query key"]:
    """Seeded random attention patterns of `shape` (its last two axes: query, key): softmax of standard
    normal scores times `scale`, masked to the causal triangle. The checkers' synthetic attention."""
    logits = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale
    causal = torch.ones(shape[-2], shape[-1], dtype=torch.bool).tril()
    return logits.masked_fill(~causal, -torch.inf).softmax(-1)


def check_previous_token_score(reader_fn: Callable[[Float[Tensor, "query key"]], float]) -> str:
    """Check a one-head previous-token score: mean attention from query q to key q - 1, over q >= 1."""
    cases = {
        "a pure previous-token head": torch.nn.functional.one_hot((torch.arange(6) - 1).clamp(min=0), 6).float(),
        "a head that attends to itself": torch.eye(6),
        "a uniform causal head": torch.ones(6, 6).tril() / torch.arange(1, 7)[:, None],
    }
    cases.update({f"random pattern (seed {seed})": random_causal_patterns(seed, 7, 7) for seed in range(3)})
    for label, pattern in cases.items():
        seq_len = pattern.shape[0]
        expected = scores.attention_on_targets(pattern[None, None, None], scores.previous_token_targets(1, seq_len)).item()
        got = float(reader_fn(pattern.clone()))
        assert abs(got - expected) < 1e-5, f"on {label} your score is {got:.4f}; expected {expected:.4f}"
    return f"All {len(cases)} previous-token cases match the reference."


def check_induction_targets(reader_fn: Callable[[Int[Tensor, "pos"]], Bool[Tensor, "query key"]]) -> str:
    """Check an induction-target mask for one sequence against `scores.induction_targets`."""
    cases = {
        "a sequence repeated twice": torch.tensor([4, 1, 2, 3, 1, 2, 3]),
        "a sequence with no repeats": torch.arange(6),
        "a token repeated three times": torch.tensor([5, 9, 5, 7, 5, 2]),
    }
    for label, tokens in cases.items():
        expected = scores.induction_targets(tokens[None])[0]
        got = torch.as_tensor(reader_fn(tokens.clone())).bool()
        assert got.shape == expected.shape, f"on {label} your mask has shape {tuple(got.shape)}; expected {tuple(expected.shape)}"
        wrong = (got != expected).nonzero().tolist()
        assert not wrong, (f"on {label} ({tokens.tolist()}) your mask differs at (query, key) = {wrong[:4]}; "
                           f"expected targets at {expected.nonzero().tolist()}")
    return f"All {len(cases)} induction-target cases match the reference."


def check_uniform_baseline(reader_fn: Callable[[int], float]) -> str:
    """Check the previous-token score of a head that spreads its attention evenly over every visible key,
    as a function of the sequence length (no BOS token)."""
    lengths = (2, 3, 5, 40)
    for seq_len in lengths:
        uniform = torch.ones(seq_len, seq_len).tril() / torch.arange(1, seq_len + 1)[:, None]
        expected = scores.attention_on_targets(uniform[None, None, None],
                                               scores.previous_token_targets(1, seq_len)).item()
        got = float(reader_fn(seq_len))
        assert abs(got - expected) < 1e-5, (f"for n = {seq_len} your baseline is {got:.4f}; expected {expected:.4f} "
                                            f"(the score of a uniform causal pattern over queries 1..n-1)")
    return f"All {len(lengths)} sequence lengths match the reference."


# --- induction heads -------------------------------------------------------------------------------------

def _phase_change_cases() -> dict[str, tuple[list[int], list[float]]]:
    return {
        "a sharp drop": ([0, 20, 40, 60, 80, 100], [4.0, 4.0, 3.9, 1.0, 0.5, 0.5]),
        "a loss that rises again after its lowest point": ([0, 20, 40, 60, 80], [4.0, 3.5, 1.0, 2.0, 3.0]),
        "a bump above the first loss before the drop": ([0, 20, 40, 60], [3.0, 5.0, 2.2, 1.0]),
        "a loss that lands exactly on the halfway level": ([10, 30, 50], [2.0, 1.5, 1.0]),
        "a flat curve": ([20, 40, 60], [2.0, 2.0, 2.0]),
        "a single evaluation": ([0], [3.0]),
    }


def check_phase_change_step(reader_fn: Callable[[list[int], list[float]], int]) -> str:
    """Check the phase-change step of a training curve against `induction.phase_change_step`: the first
    evaluation step at which the loss has fallen by half of its total drop (from the first loss to the
    lowest one)."""
    from helpers.experiments import induction

    cases = _phase_change_cases()
    for label, (steps, losses) in cases.items():
        expected = induction.phase_change_step(steps, losses)
        got = reader_fn(list(steps), list(losses))
        assert got == expected, (f"on {label} (steps {steps}, losses {losses}) your step is {got}; expected "
                                 f"{expected}, the first step whose loss is at most halfway from the first loss "
                                 f"({losses[0]}) down to the lowest ({min(losses)})")
    return f"All {len(cases)} training curves match the reference."


# --- duplicate heads -------------------------------------------------------------------------------------

def _duplicate_cases() -> dict[str, tuple[Tensor, Tensor]]:
    tokens = torch.tensor([3, 1, 3, 2, 1, 3])
    earliest = torch.tensor([0, 1, 0, 3, 1, 0])  # each token's first occurrence
    cases = {
        "a head that looks at the first copy": (torch.nn.functional.one_hot(earliest, 6).float(), tokens),
        "a head that attends to itself": (torch.eye(6), tokens),
        "a head that splits its attention over two earlier copies": (
            torch.tensor([[1.0, 0, 0, 0, 0, 0], [0.5, 0.5, 0, 0, 0, 0], [0.4, 0.2, 0.4, 0, 0, 0],
                          [0.25, 0.25, 0.25, 0.25, 0, 0], [0.1, 0.6, 0.1, 0.1, 0.1, 0],
                          [0.3, 0.1, 0.3, 0.1, 0.1, 0.1]]), tokens),
    }
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        random_tokens = torch.randint(0, 4, (10,), generator=generator)  # 4 symbols in 10 places: repeats
        cases[f"random pattern (seed {seed})"] = (random_causal_patterns(seed, 10, 10), random_tokens)
    return cases


def check_duplicate_score(reader_fn: Callable[[Float[Tensor, "query key"], Int[Tensor, "pos"]], float]) -> str:
    """Check a one-head duplicate-token score against `scores.duplicate_token_targets` +
    `scores.attention_on_targets`: for every query whose token occurred earlier, the attention summed over
    those earlier copies, averaged over such queries."""
    cases = _duplicate_cases()
    for label, (pattern, tokens) in cases.items():
        expected = scores.attention_on_targets(pattern[None, None, None],
                                               scores.duplicate_token_targets(tokens[None])).item()
        got = float(reader_fn(pattern.clone(), tokens.clone()))
        assert abs(got - expected) < 1e-5, (f"on {label} (tokens {tokens.tolist()}) your score is {got:.4f}; "
                                            f"expected {expected:.4f}")
    return f"All {len(cases)} duplicate-token cases match the reference."


def _head_list(got: object) -> list[tuple[int, int]]:
    return sorted((int(layer), int(head)) for layer, head in got)


def _passing_cases() -> dict[str, tuple[Tensor, Tensor, Tensor, Tensor]]:
    """[layer, head] = [2, 3] grids: IOI score, IOI control, planted-repeat score, planted-repeat control."""
    def grid(*values: float) -> Tensor:
        return torch.tensor(values).reshape(2, 3)

    low = grid(0.01, 0.02, 0.01, 0.02, 0.01, 0.02)
    return {
        "one clear duplicate head (L1H0)": (grid(0.05, 0.1, 0.02, 0.8, 0.1, 0.05), low,
                                            grid(0.04, 0.05, 0.03, 0.6, 0.2, 0.02), low),
        "a head strong on IOI prompts only (L0H1)": (grid(0.05, 0.9, 0.02, 0.5, 0.1, 0.05), low,
                                                     grid(0.04, 0.2, 0.03, 0.5, 0.1, 0.02), low),
        "a head that also looks there without the planted repeat (L1H0)": (
            grid(0.05, 0.1, 0.6, 0.7, 0.1, 0.05), low, grid(0.04, 0.05, 0.5, 0.6, 0.2, 0.02),
            grid(0.01, 0.02, 0.01, 0.2, 0.01, 0.02)),
        "heads exactly at the threshold and at the ratio (L0H0, L1H2)": (
            grid(0.3, 0.29, 0.02, 0.02, 0.1, 0.3125), low, grid(0.3, 0.4, 0.03, 0.03, 0.2, 0.5),
            grid(0.01, 0.02, 0.01, 0.01, 0.01, 0.0625)),
        "no head passes": (grid(0.1, 0.2, 0.05, 0.25, 0.1, 0.05), low, grid(0.1, 0.5, 0.5, 0.6, 0.2, 0.02), low),
    }


def check_duplicate_passing(reader_fn: Callable[[Tensor, Tensor, Tensor, Tensor], object]) -> str:
    """Check the duplicate-head pass rule against `duplicate.passing_heads`: a head's score is the lower of
    its IOI and planted-repeat scores, its control the higher of its two controls, and it passes with a score
    of at least `duplicate.THRESHOLD` and at least `duplicate.RATIO` times its control. Heads are compared as
    a set of (layer, head) pairs; their order does not matter."""
    from helpers.experiments import duplicate

    cases = _passing_cases()
    for label, grids in cases.items():
        expected = _head_list(duplicate.passing_heads(duplicate.DuplicateScreen(*grids)))
        got = _head_list(reader_fn(*(g.clone() for g in grids)))
        if got != expected:
            ioi_score, ioi_control, repeat_score, repeat_control = grids
            head = sorted(set(got) ^ set(expected))[0]
            verdict = "passes" if head in expected else "fails"
            raise AssertionError(
                f"on {label} you pass {[f'L{l}H{h}' for l, h in got]}; expected {[f'L{l}H{h}' for l, h in expected]}"
                f": L{head[0]}H{head[1]} {verdict} the rule (IOI {ioi_score[head]:.2f}, control "
                f"{ioi_control[head]:.2f}; planted repeat {repeat_score[head]:.2f}, control {repeat_control[head]:.2f})")
    return f"All {len(cases)} screens match the reference."


# --- associative memories ------------------------------------------------------------------------------

def _recall_cases() -> dict[str, tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(0)
    e, u = torch.randn(3, 32, generator=generator), torch.randn(5, 32, generator=generator)
    partners = torch.tensor([4, 0, 2])
    memory = sum(torch.outer(e[i], u[partners[i]]) for i in range(3))  # key i -> value partners[i]
    stored = e @ memory @ u.T
    overwritten = stored.clone()
    overwritten[1, 3] = overwritten[1].max() + 1.0  # input 1 now recalls output 3, not its partner 0
    cases = {
        "three pairs stored in a random memory": (stored, partners),
        "a memory whose second pair was overwritten": (overwritten, partners),
        "a tie between the partner and another output": (torch.tensor([[2.0, 2.0, 0.0], [0.0, 1.0, 3.0]]),
                                                          torch.tensor([0, 2])),
        "a zero memory": (torch.zeros(4, 4), torch.tensor([0, 1, 2, 3])),
    }
    for seed in range(2):
        generator = torch.Generator().manual_seed(seed + 10)
        cases[f"random scores (seed {seed})"] = (torch.randn(8, 3, generator=generator),
                                                 torch.randint(0, 3, (8,), generator=generator))
    return cases


def check_memory_recall(reader_fn: Callable[[Float[Tensor, "n_in n_out"], Int[Tensor, "n_in"]], float]) -> str:
    """Check a memory's recall against `associative.memory_recall`: the share of rows whose single largest
    score is at the partner's column (a tie counts as a failure)."""
    from helpers.experiments import associative

    cases = _recall_cases()
    for label, (stored, partners) in cases.items():
        expected = associative.memory_recall(stored, partners)
        got = float(reader_fn(stored.clone(), partners.clone()))
        assert abs(got - expected) < 1e-6, (f"on {label} (partners {partners.tolist()}) your recall is {got:.4f}; "
                                            f"expected {expected:.4f}")
    return f"All {len(cases)} memories match the reference."


def _zeroed_heads(model: torch.nn.Module) -> list[str]:
    return [f"L{layer}H{head}" for layer, block in enumerate(model.blocks)
            for head in range(block.W_O.shape[0]) if not block.W_O[head].any()]


def check_zero_ablated(reader_fn: Callable[[torch.nn.Module, list[tuple[int, int]]], torch.nn.Module]) -> str:
    """Check a zero ablation of a toy attention-only model against `associative.zero_ablated`: the returned
    model gives the same logits as the reference copy with each listed head's output removed, and the model
    passed in is left as it was."""
    import copy

    from helpers import toy
    from helpers.experiments import associative

    base = toy.AttentionOnlyTransformer(toy.ToyConfig(vocab_size=12, n_ctx=8, n_layers=2, n_heads=2, d_model=16,
                                                      d_head=4, init_std=0.3, seed=0))
    tokens = torch.randint(0, 12, (3, 8), generator=torch.Generator().manual_seed(0))
    cases = {"no head": [], "L0H1": [(0, 1)], "both heads of layer 1": [(1, 0), (1, 1)],
             "one head in each layer": [(0, 0), (1, 1)]}
    with torch.no_grad():
        clean = base(tokens)
        for label, removed in cases.items():
            given = copy.deepcopy(base)
            expected_model = associative.zero_ablated(base, removed)
            got_model = reader_fn(given, list(removed))
            assert isinstance(got_model, torch.nn.Module), (
                f"on {label} your function returned {type(got_model).__name__}; expected a model")
            assert torch.equal(given(tokens), clean), (
                f"on {label} your function changed the model it was given (W_O now zero for "
                f"{_zeroed_heads(given)}); ablate a copy and leave the original as it was")
            got, expected = got_model(tokens), expected_model(tokens)
            assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-5), (
                f"on {label} your model's logits differ from the reference (largest difference "
                f"{(got - expected).abs().max():.3g}); you removed {_zeroed_heads(got_model) or 'no head'}, "
                f"expected {_zeroed_heads(expected_model) or 'no head'}")
    return f"All {len(cases)} ablations match the reference."
