import pytest
import torch

from helpers import capture, interventions


def last_logprob(logits, tokens):
    """Log-probability of the top next token at the last position, one number per prompt."""
    return logits[:, -1].log_softmax(-1).max(-1).values


@pytest.fixture(scope="module")
def tokens(tiny_gpt2):
    return torch.cat([tiny_gpt2.to_tokens("When Mary and John went to the store , John gave a drink to"),
                      tiny_gpt2.to_tokens("When John and Mary went to the store , Mary gave a drink to")])


def test_ablating_no_heads_gives_the_clean_metric(tiny_gpt2, tokens):
    values = interventions.ablated_metric(tiny_gpt2, tokens, [[]], last_logprob)
    torch.testing.assert_close(values[0], last_logprob(tiny_gpt2(tokens), tokens))


def test_batched_per_head_effects_equal_one_forward_pass_per_head(tiny_gpt2, tokens):
    batched = interventions.per_head_effects(tiny_gpt2, tokens, last_logprob, max_rows=6)
    clean = last_logprob(tiny_gpt2(tokens), tokens)
    naive = torch.zeros(2, 4)
    for layer in range(2):
        for head in range(4):
            def zero_head(z, hook, head=head):
                z = z.clone()
                z[:, :, head] = 0
                return z
            logits = tiny_gpt2.run_with_hooks(tokens, fwd_hooks=[(capture.z_hook(layer), zero_head)])
            naive[layer, head] = (last_logprob(logits, tokens) - clean).mean()
    torch.testing.assert_close(batched, naive, atol=1e-5, rtol=1e-4)
    assert batched.abs().max() > 0, "ablating a head of a random model should change something"


def test_mean_ablation_with_the_prompts_own_activations_changes_nothing(tiny_gpt2, tokens):
    single = tokens[:1]
    means = capture.mean_head_outputs(tiny_gpt2, single, per_position=True)
    values = interventions.ablated_metric(tiny_gpt2, single, [[(0, 1), (1, 3)]], last_logprob, mode="mean", means=means)
    torch.testing.assert_close(values[0], last_logprob(tiny_gpt2(single), single), atol=1e-5, rtol=1e-5)


def test_gqa_ablation_removes_one_query_head_only(tiny_llama_gqa):
    tokens = tiny_llama_gqa.to_tokens("a b c d e f")
    effects = interventions.per_head_effects(tiny_llama_gqa, tokens, last_logprob)
    assert effects.shape == (2, 4) and (effects != 0).sum() >= 3


def test_head_out_of_range_names_the_model_size(tiny_gpt2, tokens):
    with pytest.raises(ValueError, match=r"L2H0 is outside this model.*layers 0..1.*heads 0..3"):
        interventions.ablated_metric(tiny_gpt2, tokens, [[(2, 0)]], last_logprob)


def test_mean_mode_without_means_says_where_to_get_them(tiny_gpt2, tokens):
    with pytest.raises(ValueError, match="mean_head_outputs"):
        interventions.ablated_metric(tiny_gpt2, tokens, [[(0, 0)]], last_logprob, mode="mean")


def test_last_position_only_gives_the_same_metric(tiny_gpt2):
    tokens = torch.randint(3, 40, (3, 6), generator=torch.Generator().manual_seed(5))
    means = capture.mean_head_outputs(tiny_gpt2, tokens)

    def last_logit(logits, toks):
        return logits[:, -1, 7]

    sets = [[], [(0, 1)], [(1, 0), (0, 0)]]
    full = interventions.ablated_metric(tiny_gpt2, tokens, sets, last_logit, mode="mean", means=means)
    last = interventions.ablated_metric(tiny_gpt2, tokens, sets, last_logit, mode="mean", means=means,
                                        last_position_only=True)
    torch.testing.assert_close(last, full, atol=1e-5, rtol=1e-5)


def test_a_few_answer_columns_give_the_full_vocabulary_logit_difference(tiny_gpt2):
    tokens = torch.randint(3, 40, (3, 6), generator=torch.Generator().manual_seed(6))
    answers, wrong = torch.tensor([7, 9, 7]), torch.tensor([11, 7, 2])
    means = capture.mean_head_outputs(tiny_gpt2, tokens)

    def full_difference(logits, toks):
        prompt = torch.arange(len(toks)) % len(answers)
        return logits[torch.arange(len(toks)), -1, answers[prompt]] - logits[torch.arange(len(toks)), -1, wrong[prompt]]

    sets = [[], [(0, 1)], [(1, 0), (0, 0)]]
    ids, metric = interventions.logit_difference_metric(answers, wrong)
    assert ids.tolist() == [2, 7, 9, 11]
    few = interventions.ablated_metric(tiny_gpt2, tokens, sets, metric, mode="mean", means=means,
                                       last_position_only=True, ids=ids, max_rows=4)  # two passes, rows wrap
    full = interventions.ablated_metric(tiny_gpt2, tokens, sets, full_difference, mode="mean", means=means)
    torch.testing.assert_close(few, full, atol=1e-5, rtol=1e-5)


def test_per_prompt_positions_read_the_same_logits_as_the_full_pass(tiny_gpt2):
    tokens = torch.randint(3, 40, (3, 8), generator=torch.Generator().manual_seed(7))
    at = torch.tensor([[1, 2], [4, 5], [6, 7]])  # each prompt's own positions, far apart across prompts
    means = capture.mean_head_outputs(tiny_gpt2, tokens)

    def picked_logits(columns):
        def metric(logits, toks):
            prompt = torch.arange(len(toks)) % len(at)
            rows = logits if columns is None else logits[torch.arange(len(toks))[:, None], at[prompt]]
            return rows[..., 7].sum(-1) - rows[..., 11].sum(-1)
        return metric

    sets = [[], [(0, 1)], [(1, 0), (0, 0)]]
    few = interventions.ablated_metric(tiny_gpt2, tokens, sets, picked_logits(None), mode="mean", means=means,
                                       at=at, max_rows=4)  # one head set per pass
    full = interventions.ablated_metric(tiny_gpt2, tokens, sets, picked_logits(at), mode="mean", means=means)
    torch.testing.assert_close(few, full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="one of"):
        interventions.ablated_metric(tiny_gpt2, tokens, sets, picked_logits(None), at=at, last_position_only=True)
    with pytest.raises(ValueError, match="outside"):
        interventions.ablated_metric(tiny_gpt2, tokens, sets, picked_logits(None), at=at + 1)


def test_logit_difference_metric_needs_one_answer_and_one_competitor_per_prompt():
    with pytest.raises(ValueError, match="one id per prompt"):
        interventions.logit_difference_metric(torch.tensor([1, 2]), torch.tensor([3]))
