"""The house's layering, read from the imports: no arrow runs back up, no circle, and nothing
outside ``pipeline.py`` reaches into the pipeline's private stages."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "audioguide"

# Lower layers first; a module may import only from its own rank or below.
LAYERS: list[tuple[str, ...]] = [
    ("core",),
    ("audio", "checkpoints", "manifest", "metrics", "train_config"),
    ("conditioners", "representations"),
    ("models",),
    ("guidance",),
    ("sampling",),
    ("registry",),
    ("recipes",),
    ("components",),
    ("pipeline",),
    ("render", "serve", "evaluation", "corpus", "training"),
    ("cli", ""),  # "" is the package facade, audioguide/__init__.py
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _unit(module: str) -> str:
    """``audioguide.models.dit`` -> ``models``; ``audioguide`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every audioguide module ``path`` imports, at module level or inside functions."""
    module, out = _module_of(path), set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {t for t in out if t == "audioguide" or t.startswith("audioguide.")}


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        source = _unit(_module_of(path))
        edges[source] |= {_unit(t) for t in _imports(path)} - {source}
    return edges


def test_every_part_of_the_package_has_a_layer():
    units = {_unit(_module_of(p)) for p in PACKAGE.rglob("*.py")}
    assert units <= set(RANK), f"give these a layer: {sorted(units - set(RANK))}"


def test_no_import_runs_from_a_lower_layer_to_a_higher_one():
    upward = sorted(f"{s or 'audioguide'} -> {t}" for s, targets in _graph().items() for t in targets if RANK[t] > RANK[s])
    assert not upward, upward


def test_the_parts_of_the_package_import_each_other_without_a_circle():
    graph, state, cycles = _graph(), {}, []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_generation_never_imports_training():
    below = [p for p in PACKAGE.rglob("*.py") if RANK[_unit(_module_of(p))] <= RANK["pipeline"]]
    offenders = sorted(str(p.relative_to(ROOT)) for p in below
                       if any(t.startswith("audioguide.training") for t in _imports(p)))
    assert not offenders, offenders


def _private_pipeline_names() -> set[str]:
    tree = ast.parse((PACKAGE / "pipeline.py").read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Pipeline")
    names = {n.name for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    names |= {t.attr for n in ast.walk(cls) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Attribute)}
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_only_the_pipeline_calls_its_private_stages():
    private = _private_pipeline_names()
    assert "_length" in private  # the check reads the class it guards
    offenders = []
    for folder in ("audioguide", "scripts", "benchmarks", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == PACKAGE / "pipeline.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute) and node.attr in private:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert not offenders, offenders
