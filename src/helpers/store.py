"""Results computed once and reused, keyed on the code that computed them: a small on-disk store.

Several pages compute the same thing the same way (the MCQ toy models trained over five seeds are read by
six pages). ``cached(name, compute, **key)`` runs ``compute()`` the first time and saves what it returns;
later calls with the same name and key, under the same code and the same float kernels, load it instead.

The key always includes, besides ``name`` and ``key``:
- a digest of every ``.py`` file of the ``helpers`` package, so any code change recomputes (never stale);
- the torch version, the CPU's vectorised-kernel level (``ATEN_CPU_CAPABILITY`` or what the CPU picks)
  and the thread count, because trained weights differ with them in the last bits, and a result is only
  reused where recomputing it would give the same bits.

Values are stored with ``torch.save`` and read back with ``weights_only=True``: tensors, numbers,
strings, lists, tuples and dicts of those, and the ``helpers`` package's own dataclasses (a study's result):
a checkpoint that names any other class is not loaded. A value the store cannot read back is refused when
it is saved, with the class that stops it. A file that cannot be read is recomputed and replaced, never
trusted. A result computed from a model's weights keys on ``weights_digest(model)`` besides its name, so
two models that share a name (the tests' tiny models) never share a result. Set ``ATTENTION_HEADS_RESULTS=off`` to
recompute everything; entries live under ``$ATTENTION_HEADS_CACHE/results``.

Example::

    state = store.cached("mcq-toys", lambda: train_and_export(seeds), seeds=(0, 1, 2), layout="label_first")
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import torch

from helpers.model_cache import cache_root

T = TypeVar("T")
SWITCH_ENV = "ATTENTION_HEADS_RESULTS"
# helpers code no stored result depends on: the exercise checkers, and the head index (curated namings of
# the pages' heads, written to markdown)
NOT_DIGESTED = ("checks", "experiments/head_index.py")


@lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 over the source of every module of the ``helpers`` package (paths and contents), except
    `NOT_DIGESTED`, which never computes a stored result: editing an exercise or a head's naming in the
    index must not retrain the toys or recompute the atlas."""
    return package_digest(Path(__file__).resolve().parent)


def package_digest(package: Path) -> str:
    """SHA-256 over the paths and contents of the ``.py`` files under `package`, skipping NOT_DIGESTED."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if any(relative == skipped or relative.startswith(f"{skipped}/") for skipped in NOT_DIGESTED):
            continue
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def kernel_stamp() -> str:
    """What decides the last bits of a CPU computation here: torch version, kernel level, threads."""
    return f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"


def entry_path(name: str, key: dict[str, object]) -> Path:
    """Where the result for ``name`` and ``key`` lives (the file name carries a digest of everything)."""
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"name must be letters, digits, '-' or '_' (it becomes a file name), got {name!r}")
    described = repr(sorted(key.items())) + code_digest() + kernel_stamp()
    return cache_root() / "results" / f"{name}-{hashlib.sha256(described.encode()).hexdigest()[:20]}.pt"


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter's name, shape and first 4096 values: cheap (a few ms for 135M
    parameters) and different for any two differently initialised or trained models."""
    digest = hashlib.sha256()
    for name, parameter in model.named_parameters():
        digest.update(f"{name}{tuple(parameter.shape)}".encode())
        digest.update(parameter.detach().flatten()[:4096].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:20]


class Unstorable(TypeError):
    """A value ``cached`` could save but not read back with ``weights_only=True``."""


def _allowed_classes(path: Path) -> list[type]:
    """The ``helpers`` dataclasses a checkpoint names; any other class it names raises ``Unstorable``."""
    allowed = []
    for qualified in torch.serialization.get_unsafe_globals_in_checkpoint(str(path)):
        module, _, attribute = qualified.rpartition(".")
        found = getattr(importlib.import_module(module), attribute, None) if module.startswith("helpers.") else None
        if not (isinstance(found, type) and dataclasses.is_dataclass(found)):
            raise Unstorable(f"{qualified} is not a dataclass of the helpers package; store tensors, numbers, "
                             "strings, containers of those, or helpers dataclasses")
        allowed.append(found)
    return allowed


def _load(path: Path) -> object:
    with torch.serialization.safe_globals(_allowed_classes(path)):
        return torch.load(path, weights_only=True)


def cached(name: str, compute: Callable[[], T], **key: object) -> T:
    """``compute()``, or its saved result for the same ``name``, ``key``, code and float kernels.

    ``key`` holds everything the result depends on that the code does not fix (seeds, sizes, layouts);
    its values need a stable ``repr`` (numbers, strings, tuples, frozen dataclasses).
    """
    path = entry_path(name, key)
    if os.environ.get(SWITCH_ENV, "on") != "off" and path.exists():
        try:
            return _load(path)
        except Exception:  # noqa: BLE001 - a partial or foreign file is recomputed, whatever went wrong
            pass
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        torch.save(value, handle)
    try:
        _allowed_classes(Path(handle.name))
    except Unstorable:
        os.unlink(handle.name)
        raise
    os.replace(handle.name, path)  # atomic: a reader sees the old file or the whole new one
    return value
