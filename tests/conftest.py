"""Shared fixtures: the real default model (loaded once) and tiny, randomly initialised models that run
the Hub code path offline.

The tiny models run on ``ATTENTION_HEADS_TEST_DEVICE`` (default ``cpu``; ``cuda`` checks the path Colab's
GPU users take). ``ATTENTION_HEADS_TEST_TOKENIZER`` names a folder holding SmolLM2's tokenizer files, for a
machine without the model package (a GPU box the weights do not travel to); by default the tokenizer comes
from the model cache."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a stray Hub request fails at once instead of hanging

import pytest
import torch

from helpers import models

TEST_DEVICE = os.environ.get("ATTENTION_HEADS_TEST_DEVICE", "cpu")
WORDS = ["When", "Mary", "John", "and", "went", "to", "the", "store", "gave", "a", "drink", ",", "."] + [
    chr(c) for c in range(ord("a"), ord("z") + 1)]


@pytest.fixture(scope="session")
def word_tokenizer(tmp_path_factory):
    """A word-level tokenizer saved to and loaded from a folder (TransformerLens reloads tokenizers by path)."""
    from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["<bos>", "<unk>"] + WORDS)}
    core = Tokenizer(tok_models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder = tmp_path_factory.mktemp("word_tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", unk_token="<unk>", eos_token="<bos>",
                            pad_token="<bos>").save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="session")
def tiny_gpt2(word_tokenizer):
    """A 2-layer, 4-head GPT-2-shaped model with random weights, booted like `load_model("gpt2-small")`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=len(word_tokenizer), n_positions=64))
    return models.bridge_from_hf(models.REGISTRY["gpt2-small"], hf, word_tokenizer, device=TEST_DEVICE)


@pytest.fixture(scope="session")
def tiny_llama_gqa(word_tokenizer):
    """A 2-layer Llama with grouped-query attention: 4 query heads sharing 2 key/value heads."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                         intermediate_size=64, vocab_size=len(word_tokenizer), max_position_embeddings=64)
    spec = models.ModelSpec(name="tiny-llama", hf_name="local/tiny-llama", architecture="LlamaForCausalLM",
                            source="hub", prepend_bos=False, n_layers=2, n_heads=4, n_kv_heads=2)
    return models.bridge_from_hf(spec, LlamaForCausalLM(config), word_tokenizer, device=TEST_DEVICE)


@pytest.fixture(scope="session")
def smollm2():
    """The real default model from the offline cache (dequantized on first use)."""
    return models.load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def gemma3():
    """The second offline model (its post-attention norms are what some helpers must handle)."""
    return models.load_model("gemma3-270m", device="cpu")


@pytest.fixture(scope="session")
def tiny_smol():
    """A 2-layer Llama with grouped-query attention and random weights behind SmolLM2's real tokenizer, so
    every task (IOI names, English sentences) builds its prompts exactly as on the default model."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from helpers import model_cache, models

    folder = os.environ.get("ATTENTION_HEADS_TEST_TOKENIZER") or model_cache.ensure_cached(
        models.get_spec("smollm2-135m"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                         intermediate_size=64, vocab_size=len(tokenizer), max_position_embeddings=256)
    spec = models.ModelSpec(name="tiny-smol", hf_name="local/tiny-smol", architecture="LlamaForCausalLM",
                            source="hub", prepend_bos=False, n_layers=2, n_heads=4, n_kv_heads=2)
    return models.bridge_from_hf(spec, LlamaForCausalLM(config), tokenizer, device=TEST_DEVICE)
