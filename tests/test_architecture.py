"""The package's shape (docs/architecture.md): one folder per stage, imports only downward, no circles."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lerobot_stream_loader"
NAME = PACKAGE.name

# Bottom to top; a module may import its own folder and anything of a lower rank (equal ranks are
# peers that do not import each other). The package's top-level modules are the face.
RANKS = {
    "errors": 0, "util": 1, "storage": 2, "parquet": 2, "mp4": 2, "meta": 3, "plan": 4, "fetch": 5,
    "items": 6, "batch": 7, "<face>": 8, "mix": 9, "train": 9.5, "synthetic": 10, "tools": 11, "cli": 12,
}
MAX_TOP_LEVEL_MODULES = 12
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _stage(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and (parts[1] == "errors" or (PACKAGE / parts[1]).is_dir()):
        return parts[1]
    return "<face>"


def _imports(module: str) -> set[str]:
    """Modules of the package that ``module`` imports anywhere (lazily and for type checking too)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not (target == NAME or target.startswith(NAME + ".")):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(NAME + "."))
    found.discard(module)
    return {m for m in found if m in MODULES}


GRAPH = {module: _imports(module) for module in MODULES}


def test_imports_run_only_downward() -> None:
    upward = []
    for module, targets in GRAPH.items():
        if module == NAME:
            continue  # the package face re-exports from every stage
        mine = RANKS[_stage(module)]
        for target in targets:
            theirs = RANKS[_stage(target)]
            if _stage(target) != _stage(module) and theirs >= mine and target != NAME:
                upward.append(f"{module} ({_stage(module)}) imports {target} ({_stage(target)})")
    assert not upward, "imports that run up or sideways between stages:\n" + "\n".join(sorted(upward))


def test_no_import_circles() -> None:
    state: dict[str, int] = defaultdict(int)  # 0 unseen, 1 on the path, 2 done
    circles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if target == NAME:
                continue
            if state[target] == 1:
                circles.append(path[path.index(target):] + [target])
            elif state[target] == 0:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(GRAPH):
        if state[module] == 0:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_the_package_top_stays_small() -> None:
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules directly in the package: {sorted(top)}"


@pytest.mark.parametrize("path", sorted(MODULES.values()), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_short(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines (at most {MAX_LINES})"


def test_every_stage_folder_is_known() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(RANKS), f"folders without a rank in the architecture: {sorted(folders - set(RANKS))}"
