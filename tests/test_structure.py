"""The package's layout: no import cycle, lower layers never import higher ones, registries match their names."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import dcgan
from dcgan import config
from dcgan.networks import ARCHITECTURES
from dcgan.training import losses

PACKAGE = Path(dcgan.__file__).parent
# The flow of data through the package, bottom up: a module may import its own layer and those below.
LAYERS = (
    ("errors", "config", "files", "ops", "device", "host_memory", "limits", "images", "plots"),
    ("data",),
    ("networks", "checkpoint"),
    ("training",),
    ("sampling", "evaluation", "api", "interpolation", "export", "demo", "projection"),
    ("cli", "__main__", "__init__"),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports, at the top or inside a function."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            # `from .x import y` names module x.y when y is a module, else module x
            edges.update(next((t for t in (target, target.rpartition(".")[0]) if t in modules), None)
                         for target in targets if target.startswith("dcgan"))
        graph[name] = {edge for edge in edges if edge and edge != name}
    return graph


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return next(index for index, names in enumerate(LAYERS) if top in names)


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for nxt in graph[stack.pop()] - seen:
            seen.add(nxt)
            stack.append(nxt)
    return seen


def test_the_graph_sees_the_imports_it_should() -> None:
    graph = import_graph()
    assert {"dcgan.config", "dcgan.training.step", "dcgan.training.state"} <= graph["dcgan.training.loop"]
    assert "dcgan.networks" in graph["dcgan.training.step"] and "dcgan.ops" in graph["dcgan.training.clusters"]
    assert "dcgan.evaluation.during_training" in graph["dcgan.cli"]  # imported inside a function


def test_no_module_imports_itself_back() -> None:
    graph = import_graph()
    cycles = sorted(name for name in graph if name in reachable(graph, name))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_lower_layers_never_import_higher_ones() -> None:
    upward = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
                    if layer_of(b) > layer_of(a))
    assert not upward, upward


@pytest.mark.slow  # a fresh interpreter imports the package
def test_sampling_and_evaluation_do_not_reach_the_training_loop() -> None:
    graph = import_graph()
    for start in ("dcgan.sampling", "dcgan.evaluation.scoring", "dcgan.evaluation.during_training"):
        assert not {"dcgan.training.loop", "dcgan.training.step"} & reachable(graph, start), start
    loaded = subprocess.run([sys.executable, "-c", "import sys, dcgan.sampling, dcgan.evaluation.scoring; "
                             "print(' '.join(m for m in sys.modules if m.startswith('dcgan.training')))"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert loaded == [], loaded


def test_each_registry_implements_exactly_the_names_the_config_accepts() -> None:
    assert tuple(ARCHITECTURES) == config.ARCHITECTURES
    assert tuple(losses._DISCRIMINATOR) == tuple(losses._GENERATOR) == config.LOSSES
