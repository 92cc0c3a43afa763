"""Every experiment's `study` runs end to end on a tiny random model with SmolLM2's tokenizer, and its `row`
fills a findings table: the one API the pages and the atlas call (`study(model, *, sizes, seed)`).

A random model fails every behaviour gate, so the steps that need the behaviour are skipped as the pages
skip them; the causal steps are tested on their own in each experiment's test file."""

from __future__ import annotations

import importlib

import pytest

from helpers.experiments import findings_table

SMALL = {  # module -> sizes small enough for a tiny model (seconds, not minutes)
    "previous_token": dict(gate_prompts=6, gate_half_len=4, screen_prompts=2, screen_len=8, ablation_prompts=2,
                           ablation_half_len=4, top_k=2, n_random=2),
    "induction": dict(gate_prompts=6, gate_half_len=4, screen_prompts=2, screen_len=8, ablation_prompts=2,
                      ablation_half_len=4, top_k=2, n_random=2),
    "duplicate": dict(prompts=6, repeat_prompts=4, repeat_len=8, ablation_prompts=4, n_random=2, top_k=2),
    "name_movers": dict(prompts=6, check_prompts=4, top_k=2, n_random=2, candidates=2, random_singles=2),
    "inhibition": dict(prompts=6, check_prompts=4, top_k=2, n_random=2, candidates=2, random_singles=2),
    "circuit": dict(prompts=6, check_prompts=4, top_k=2, n_random=2, candidates=2, random_singles=2),
    "self_repair": dict(prompts=6, top_k=2, n_random=2, pool=4),
    "copy_suppression": dict(ioi_prompts=6, screen_windows=4, window_length=12, ov_tokens=10, check_pool=8,
                             check_windows=4, check_prompts=4, top_k=2, n_random=2),
    "conflict": dict(screen_prompts=6, ablation_prompts=4, reference_prompts=4, top_k=2, n_random=2),
    "conflict_formats": dict(prompts=4, min_known=2),
    "mover": dict(screen_prompts=4, ablation_prompts=2, top_k=2, n_random=2),
    "acronyms": dict(gate_prompts=8, screen_prompts=4, top_k=2, n_random=2),
    "yesno": dict(gate_pairs_per_kind=2, screen_pairs_per_kind=1, ablation_pairs_per_kind=1, top_k=2, n_random=2),
    "mcq": dict(questions=8),
    "recall": dict(prompts=4, pairs=2, length=12),
    "positional": dict(gate_windows=6, gate_len=8, screen_prompts=2, screen_len=10, ablation_prompts=2,
                       ablation_len=8, top_k=2, n_random=2, heldout_prompts=2, heldout_draws=2),
    "subwords": dict(gate_windows=4, screen_windows=4, window_len=48, heldout_windows=4),
    "syntax": dict(gate_prompts=6, screen_prompts=3, screen_len=24, heldout_prompts=3, ablation_prompts=4, top_k=2,
                   n_random=3, n_boot=50),
    "rare_words": dict(sentences=12, ablation_prompts=4, top_k=2, n_random=2, mean_windows=2, mean_len=12,
                       heldout_windows=4, heldout_len=16, n_boot=50),
    "retrieval": dict(screen_prompts=3, control_prompts=2, length=40, top_k=2, ablation_prompts=2, n_random=2,
                      heldout_prompts=2, heldout_draws=1, induction_prompts=2, induction_half_len=5),
    "global_retrieval": dict(screen_prompts=3, control_prompts=2, length=40, prompts=2, global_counts=(0, 2),
                             n_random=2),
    "sentiment": dict(gate_pairs=2, direction_pairs=2, screen_pairs=2, neutral_prompts=2, random_directions=5,
                      top_k=2, check_pairs=1, n_random=2, ablation_directions=2, heldout_pairs=2, heldout_draws=2),
    "semantic_induction": dict(n_permutations=9, top_k=2, n_random=2, ablation_pairs=2, heldout_draws=2, max_pairs=6),
    "fact_sources": dict(facts_per_relation=2, ablation_facts=4, top_k=2, n_random=2),
    "successor": dict(n_shuffles=5, top_k=2, n_random=2, heldout_draws=2),
    "function_vectors": dict(n=4, shots=2, n_zero=3, n_draws=2, sweep=False),
    "in_context": dict(shots=4, gate_prompts=8, screen_prompts=4, top_k=2, check_prompts=4, n_random=2,
                       heldout_prompts=4, heldout_draws=2),
    "consistency": dict(n_shuffles=2, top_k=2, n_random=2),
    "truthfulness": dict(n_shuffles=2, top_k=2, n_random=2, max_facts=8),
    "accuracy": dict(n_shuffles=2, n_random=2),
    "vulnerable": dict(prompts=8, per_position=1, top_k=2, n_perm=10, n_random=2, check_flips=4, heldout_prompts=8,
                       heldout_draws=2, mover_prompts=4),
    "summary_reader": dict(gate_stories=4, screen_stories=2, null_draws=5, top_k=2, check_stories=2, n_random=2,
                           route_random=2, heldout_stories=2, heldout_draws=2),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_study_runs_on_a_tiny_model_and_fills_a_findings_row(tiny_smol, name):
    module = importlib.import_module(f"helpers.experiments.{name}")
    done = module.study(tiny_smol, sizes=module.Sizes(**SMALL[name]), seed=0)
    assert isinstance(done, module.Study) and done.model == "tiny-smol"
    row = done.row()
    assert row["model"] == "tiny-smol" and len(row) >= 3
    assert list(findings_table(done).index) == ["tiny-smol"]


TOY = {  # module -> sizes for experiments whose study trains toy models instead of reading a pretrained one
    "iteration": dict(seeds=(0,), steps=20, probe=8, gate=8, heldout=8),
}


@pytest.mark.parametrize("name", sorted(TOY))
def test_every_toy_study_trains_and_fills_a_findings_row(name):
    module = importlib.import_module(f"helpers.experiments.{name}")
    done = module.study(sizes=module.Sizes(**TOY[name]), seed=0)
    assert isinstance(done, module.Study) and done.model.startswith("toy")
    assert list(findings_table(done).index) == [done.model] and len(done.row()) >= 3


def test_every_experiment_with_a_study_is_smoke_tested():
    from pathlib import Path

    folder = Path(importlib.import_module("helpers.experiments").__file__).parent
    with_study = {p.stem for p in folder.glob("*.py")
                  if hasattr(importlib.import_module(f"helpers.experiments.{p.stem}"), "study")}
    assert with_study == set(SMALL) | set(TOY), f"studies without a smoke test: {with_study - set(SMALL) - set(TOY)}"
