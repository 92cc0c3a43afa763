"""The package's layering (STYLE §1): the core never imports an experiment, nobody imports another module's
private names, and only `capture`, `interventions` and `patching` name hook points."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "helpers"
CORE = sorted(p for p in PACKAGE.glob("*.py"))
EXPERIMENTS = sorted((PACKAGE / "experiments").glob("*.py"))
CHECKS = sorted((PACKAGE / "checks").glob("*.py"))  # exercise checkers: a leaf on top, like the notebooks
HOOK_MODULES = {"capture.py", "interventions.py", "patching.py"}


def imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every ``from helpers... import name`` and ``import helpers...`` in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("helpers"):
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.startswith("helpers")]
    return found


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_a_core_module_never_imports_an_experiment(path):
    offending = [f"{module}.{name}" for module, name in imports(path)
                 if module.startswith("helpers.experiments") or (module == "helpers" and name == "experiments")]
    assert not offending, f"{path.name} imports {offending}: experiments sit on top of the core, not under it"


@pytest.mark.parametrize("path", CORE + EXPERIMENTS, ids=lambda p: p.name)
def test_no_science_module_imports_the_exercise_checkers(path):
    offending = [f"{module}.{name}" for module, name in imports(path)
                 if module.startswith("helpers.checks") or (module == "helpers" and name == "checks")]
    assert not offending, f"{path.name} imports {offending}: the checkers sit on top of the science, not under it"


@pytest.mark.parametrize("path", CORE + EXPERIMENTS + CHECKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_module_imports_another_modules_private_names(path):
    offending = [f"{module}.{name}" for module, name in imports(path) if name.startswith("_")]
    text = path.read_text()
    for module in [p.stem for p in CORE + EXPERIMENTS + CHECKS if p != path]:
        offending += [f"{module}.{attr}" for attr in _private_attributes(text, module)]
    assert not offending, f"{path.name} reaches into private names {offending}; make them public or move the code"


def _private_attributes(text: str, module: str) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(text)):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == module
                and node.attr.startswith("_")):
            names.append(node.attr)
    return names


@pytest.mark.parametrize("path", CORE + EXPERIMENTS, ids=lambda p: p.name)
def test_only_the_hook_modules_call_run_with_hooks(path):
    if path.name in HOOK_MODULES:
        return
    text = path.read_text()
    assert "run_with_hooks" not in text and "run_with_cache" not in text, (
        f"{path.name} runs hooks itself; read through capture / interventions / patching instead")


def test_every_experiment_with_a_study_exposes_the_one_api():
    import importlib
    import inspect

    for path in EXPERIMENTS:
        module = importlib.import_module(f"helpers.experiments.{path.stem}")
        study = getattr(module, "study", None)
        if study is None:
            continue
        parameters = inspect.signature(study).parameters
        names = list(parameters)
        assert names[0] == "model" and {"sizes", "seed"} <= set(names), f"{path.stem}.study{inspect.signature(study)}"
        assert parameters["sizes"].kind is inspect.Parameter.KEYWORD_ONLY, f"{path.stem}: sizes must be keyword-only"
        assert hasattr(module, "Sizes") and hasattr(module, "Study") and hasattr(module.Study, "row"), path.stem
