"""Function-vector helpers on hand-built cases whose answers are known, and the model-facing steps on the tiny
random model (shapes, exactness of the clean rows, first order against exact patching)."""

import pytest
import torch

from helpers import capture, interventions, patching, readout
from helpers.experiments import function_vectors as fv


def test_derange_moves_every_index_and_is_a_permutation():
    generator = torch.Generator().manual_seed(0)
    for n in (2, 3, 5, 8):
        for _ in range(50):
            order = fv._derange(n, generator)
            assert sorted(order) == list(range(n))
            assert all(i != j for i, j in enumerate(order))
    with pytest.raises(ValueError, match="at least 2"):
        fv._derange(1, generator)


def test_function_vector_sums_exactly_the_named_heads():
    outputs = torch.zeros(3, 4, 6)  # [layer, head, d_model]
    outputs[0, 1] = torch.arange(6.0)
    outputs[2, 3] = 10.0
    outputs[1, 1] = 100.0  # not named: must not appear
    torch.testing.assert_close(fv.function_vector(outputs, [(0, 1), (2, 3)]), torch.arange(6.0) + 10.0)
    torch.testing.assert_close(fv.function_vector(outputs, [(2, 3)]), torch.full((6,), 10.0))
    with pytest.raises(ValueError, match="empty"):
        fv.function_vector(outputs, [])
    with pytest.raises(ValueError):
        fv.function_vector(outputs, [(3, 0)])  # no layer 3


def test_correct_probability_and_top1_on_hand_made_logits():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0],  # uniform: P = 1/4, the argmax is token 0
                           [0.0, 5.0, 0.0, 0.0],
                           [float("-inf"), 0.0, 0.0, float("-inf")]])
    answers = torch.tensor([2, 1, 1])
    torch.testing.assert_close(fv.correct_probability(logits, answers),
                               torch.tensor([0.25, torch.e ** 5 / (torch.e ** 5 + 3), 0.5]))
    torch.testing.assert_close(fv.top1_correct(logits, answers), torch.tensor([0.0, 1.0, 1.0]))
    stacked = torch.stack([logits, logits.roll(1, dims=-1)])  # [set, batch, vocab]
    assert fv.correct_probability(stacked, answers).shape == (2, 3)
    torch.testing.assert_close(fv.top1_correct(stacked, answers)[1], torch.tensor([0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="disagree"):
        fv.correct_probability(logits, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="disagree"):
        fv.top1_correct(logits, torch.tensor([0]))


def test_end_patched_source_changes_only_the_last_position():
    run_z = torch.randn(2, 3, 5, 4, 6)  # [layer, batch, pos, head, d_head]
    mean_z = torch.randn(2, 4, 6)
    out = fv.end_patched_source(run_z, mean_z)
    torch.testing.assert_close(out[:, :, :-1], run_z[:, :, :-1])
    for b in range(3):
        torch.testing.assert_close(out[:, b, -1], mean_z)
    assert not torch.equal(run_z[:, :, -1, 0], out[:, :, -1, 0])  # the input is not modified
    with pytest.raises(ValueError, match="same layer"):
        fv.end_patched_source(run_z, torch.randn(2, 3, 6))


def test_template_writes_the_examples_then_stops_before_the_answer():
    demos = [("hot", "cold"), ("big", "small")]
    assert fv.QA.prompt(demos, "up") == "Q: hot\nA: cold\n\nQ: big\nA: small\n\nQ: up\nA:"
    assert fv.QA.prompt([], "up") == "Q: up\nA:"
    assert fv.ARROW.prompt(demos, "up") == "Pairs: hot → cold, big → small, up →"
    with pytest.raises(ValueError, match="once each"):
        fv.Template("bad", "{x} -> {y}")
    with pytest.raises(ValueError, match="before the answer"):
        fv.Template("bad", " {y} <- {x}")


def test_prompts_share_queries_and_shuffle_only_the_answers(tiny_smol):
    pairs = fv.usable_pairs(tiny_smol, "antonym")
    assert len(pairs) >= 20 and len({x for x, _ in pairs}) == len(pairs)
    batch = fv.prompts(tiny_smol, "antonym", n=6, shots=3, seed=0)
    assert batch.clean.shape == batch.shuffled.shape and batch.clean.shape[0] == 6
    assert batch.zero_shot.shape[0] == 6 and batch.answers.shape == (6,)
    assert (batch.clean != batch.shuffled).any(dim=1).all()  # every prompt has its labels moved
    for query, answer in zip(batch.queries, batch.answers.tolist()):
        assert tiny_smol.tokenizer.decode([answer]) == " " + dict(pairs)[query]
    again = fv.prompts(tiny_smol, "antonym", n=6, shots=3, seed=0)
    assert torch.equal(again.clean, batch.clean) and torch.equal(again.shuffled, batch.shuffled)
    with pytest.raises(KeyError, match="unknown task"):
        fv.usable_pairs(tiny_smol, "no_such_task")


def test_adding_a_zero_vector_leaves_the_final_state_unchanged(tiny_smol):
    tokens = fv.prompts(tiny_smol, "capitalize", n=3, shots=2, seed=1).zero_shot
    clean = capture.final_at(tiny_smol, tokens)
    vectors = torch.zeros(2, tiny_smol.cfg.d_model)
    vectors[1, 0] = 3.0
    final = interventions.final_with_end_added(tiny_smol, tokens, 0, vectors)
    assert final.shape == (2, 3, tiny_smol.cfg.d_model)
    torch.testing.assert_close(final[0], clean, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(final[1], clean)
    with pytest.raises(ValueError, match="layer"):
        interventions.final_with_end_added(tiny_smol, tokens, tiny_smol.cfg.n_layers, vectors)
    with pytest.raises(ValueError, match="vectors"):
        interventions.final_with_end_added(tiny_smol, tokens, 0, torch.zeros(2, 3))


def test_adding_after_each_sets_own_layer_matches_a_full_pass_that_adds_at_end(tiny_smol):
    tokens = fv.prompts(tiny_smol, "capitalize", n=3, shots=2, seed=1).zero_shot
    n_layers, d_model = tiny_smol.cfg.n_layers, tiny_smol.cfg.d_model
    vectors = torch.randn(5, d_model, generator=torch.Generator().manual_seed(0))
    layers = [i % n_layers for i in range(5)]
    cached = interventions.final_with_end_added(tiny_smol, tokens, layers, vectors, max_rows=6)  # chunks

    for i, (layer, vector) in enumerate(zip(layers, vectors)):
        def add(activation, hook=None, vector=vector):
            out = activation.clone()
            out[:, -1] = out[:, -1] + vector
            return out

        full = capture.final_at(tiny_smol, tokens, fwd_hooks=[(f"blocks.{layer}.hook_resid_post", add)])
        torch.testing.assert_close(cached[i], full, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="one layer per vector"):
        interventions.final_with_end_added(tiny_smol, tokens, [0, 0], vectors)


def test_top1_from_a_shortlist_equals_the_full_read(tiny_smol):
    generator = torch.Generator().manual_seed(3)
    final = torch.randn(40, 3, tiny_smol.cfg.d_model, generator=generator)  # [set, batch, d_model]
    answers = torch.tensor([1, 5, 7])
    final[5:9] = final[0]  # repeated rows
    full = fv._chunked(tiny_smol, final, answers)[1]
    for shortlist in (1, 2, 8):
        torch.testing.assert_close(fv._top1(tiny_smol, final, answers, rows=6, shortlist=shortlist), full)
    best = readout.logits(tiny_smol, final).argmax(-1)  # [set, batch]: make some rows hits
    torch.testing.assert_close(fv._top1(tiny_smol, final, best[7], rows=6, shortlist=1),
                               fv._chunked(tiny_smol, final, best[7])[1])


def test_end_attribution_is_linear_and_matches_exact_patching_for_a_small_move(tiny_smol):
    batch = fv.prompts(tiny_smol, "antonym", n=4, shots=2, seed=2)
    tokens = batch.shuffled
    run_z = patching.head_outputs(tiny_smol, tokens)  # [layer, batch, pos, head, d_head]
    n_layers, _, _, n_heads, d_head = run_z.shape

    def answer_logit(final: torch.Tensor) -> torch.Tensor:  # [..., batch, d_model] -> [...]
        logits = readout.logits(tiny_smol, final)
        return logits.gather(-1, batch.answers.expand(*logits.shape[:-1]).unsqueeze(-1)).squeeze(-1).mean(-1)

    def metric(final: torch.Tensor) -> torch.Tensor:  # a random model's P(answer) is ~1e-5: read the logit
        return answer_logit(final)

    zero = torch.zeros(n_layers, 4, n_heads, d_head)
    assert fv.patching.end_attribution(tiny_smol, tokens, zero, metric).abs().max() == 0
    torch.manual_seed(0)
    delta = torch.zeros_like(zero)
    delta[1, :, 2] = 0.002 * torch.randn(4, d_head)  # only L1H2 moves, a little (the tiny model's z is small)
    estimate = patching.end_attribution(tiny_smol, tokens, delta, metric)
    assert estimate.shape == (n_layers, n_heads)
    assert (estimate.abs() > 0).sum() == 1 and estimate[1, 2] != 0
    torch.testing.assert_close(patching.end_attribution(tiny_smol, tokens, 2 * delta, metric), 2 * estimate)
    # Exact: L1H2's z at END moved by delta.
    source = run_z.clone()
    source[:, :, -1] = source[:, :, -1] + delta
    final = patching.patched_final(tiny_smol, tokens, source, [[], [(1, 2)]])
    read = answer_logit(final)
    exact = float(read[1] - read[0])
    assert abs(exact) > 1e-6, exact
    assert abs(exact - float(estimate[1, 2])) <= 0.1 * abs(exact)  # first order: close for a small move
    with pytest.raises(ValueError, match="delta must be"):
        patching.end_attribution(tiny_smol, tokens, torch.zeros(n_layers, 3, n_heads, d_head), metric)


def test_screen_exact_aie_and_steering_run_on_the_tiny_model(tiny_smol):
    names = ["antonym", "capitalize"]
    sizes = fv.Sizes(n=4, shots=2, n_zero=3, n_draws=3)
    batches, screens = fv.screen_tasks(tiny_smol, names, sizes=sizes, seed=0)
    n_layers, n_heads = tiny_smol.cfg.n_layers, tiny_smol.cfg.n_heads
    for screen in screens:
        assert screen.aie.shape == (n_layers, n_heads)
        assert screen.outputs.shape == (n_layers, n_heads, tiny_smol.cfg.d_model)
        assert 0 <= screen.baseline <= 1
    aie = fv.average_aie(screens)
    torch.testing.assert_close(aie, (screens[0].aie + screens[1].aie) / 2)
    found = fv.heads.top(aie, 2)
    exact = fv.exact_aie(tiny_smol, batches[0], screens[0], [[h] for h in found])
    assert exact.shape == (2,)
    zero = fv.zero_shot_batches(tiny_smol, names, sizes=sizes, seed=0)
    steer = fv.steering(tiny_smol, zero, screens, found, n_draws=3, seed=0, layer=0)
    assert steer.values.shape == (3 + 3, 6) and steer.layer == 0
    clean = torch.cat([fv.accuracy(tiny_smol, b.zero_shot, b.answers) for b in zero])
    torch.testing.assert_close(steer.values[0], clean)  # the zero row is the unsteered model
    assert steer.check.n_draws == 3
    sweep = fv.layer_sweep(tiny_smol, zero, screens, found)
    assert sweep.shape == (2, n_layers) and sweep.abs().max() <= 1
    with pytest.raises(ValueError, match="another task"):
        fv.steering(tiny_smol, zero, screens, found, n_draws=1, seed=0, others=screens)
    with pytest.raises(ValueError, match="at least 2 tasks"):
        fv.steering(tiny_smol, zero[:1], screens[:1], found, n_draws=1, seed=0)
    with pytest.raises(ValueError, match="every task failed"):
        fv.average_aie([])
    assert len(fv.decoded(tiny_smol, fv.function_vector(screens[0].outputs, found), k=5)) == 5


def test_norm_matched_draws_and_the_diagnosis_on_the_tiny_model(tiny_smol):
    names = ["antonym", "capitalize"]
    sizes = fv.Sizes(n=4, shots=2, n_zero=3, n_draws=3)
    _, screens = fv.screen_tasks(tiny_smol, names, sizes=sizes, seed=0)
    found = fv.heads.top(fv.average_aie(screens), 2)
    zero = fv.zero_shot_batches(tiny_smol, names, sizes=sizes, seed=0)
    plain = fv.steering(tiny_smol, zero, screens, found, n_draws=3, seed=0, layer=0)
    matched = fv.steering(tiny_smol, zero, screens, found, n_draws=3, seed=0, layer=0, norm_matched=True)
    assert matched.values.shape == (3 + 3 + 3, 6)
    torch.testing.assert_close(matched.values[:6], plain.values)  # the raw draws are the same draws
    assert matched.matched_check.n_draws == 3 and matched.check.n_draws == 3
    with pytest.raises(ValueError, match="norm_matched"):
        plain.matched_check
    n_layers, n_heads = tiny_smol.cfg.n_layers, tiny_smol.cfg.n_heads
    probe = fv.diagnose(tiny_smol, zero, screens, found, n_draws=3, seed=0, layer=0)
    assert probe.singles.shape == (n_layers, n_heads) and probe.top_k.shape == (2,)
    assert probe.draw_norms.shape == (3,) and probe.draw_has_top.shape == (3,)
    assert 1 <= probe.single_rank(found[0]) <= n_layers * n_heads
    # the top-2 sum is the function vector, so its row is the steering's own row
    assert float(probe.top_k[-1]) == float(plain.values[1].mean())
    bare = fv.diagnose(tiny_smol, zero, screens, found, n_draws=3, seed=0, layer=0, singles=False)
    assert bare.singles is None
    torch.testing.assert_close(bare.top_k, probe.top_k)
