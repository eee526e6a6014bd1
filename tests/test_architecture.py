"""The shape of ``core/``: planning loads no torch, no stage imports another stage, and the import graph of the
package is acyclic (every import counted, also those inside functions)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The ``core`` modules that ``path`` imports (``from core.x import y`` counts ``core.x.y`` when that is a
    module, else ``core.x``)."""
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in modules:
                    found.add(full)
                elif base in modules:
                    found.add(base)
    found.discard(module_name(path))
    return found


def graph() -> dict[str, set[str]]:
    files = sorted(CORE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) for f in files}


def test_planning_imports_no_torch():
    """What the Snakefile and rules/ import (read from rules/common.smk) loads neither torch nor anything that
    needs it, so every `snakemake` call stays light."""
    text = (ROOT / "rules" / "common.smk").read_text()
    mods = sorted(set(re.findall(r"^(?:from|import) (core(?:\.\w+)*)", text, re.M)))
    assert mods, "rules/common.smk imports nothing from core?"
    mods += ["core.status", "core.tboard"]  # `python -m core.status` plans as the workflow does, in seconds
    heavy = ("torch", "h5py", "PIL")
    code = f"import sys; import {', '.join(mods)}; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", (mods, out.stdout)


def test_no_stage_imports_another_stage():
    g = graph()
    stages = {m for m in g if m.startswith("core.stages.") and m != "core.stages"}
    assert len(stages) >= 10
    for stage in stages:
        assert not (g[stage] & stages), f"{stage} imports {sorted(g[stage] & stages)}"
    # the library never reaches into a stage; only core.launch dispatches to them (by name, at run time)
    library = {m for m in g if not m.startswith("core.stages")} - {"core.launch"}
    for mod in library:
        assert not (g[mod] & stages), f"{mod} imports {sorted(g[mod] & stages)}"


def test_the_import_graph_is_acyclic():
    g = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(g[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(n) :], n]))
            if n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert len(state) == len(g) > 20


def test_the_graph_reader_sees_imports():
    """The reader above is not vacuous: it finds the imports a known module has."""
    g = graph()
    assert "core.training" in g["core.stages.train"] and "core.paths" in g["core.plan"]
