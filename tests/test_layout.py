"""The architecture's rules, held by a test: who may import what."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(package: str):
    return sorted((ROOT / package).rglob("*.py"))


def _top(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def test_pipeline_knows_no_studies_and_no_ray():
    for path in _modules("pipeline"):
        assert not _top(_imports(path)) & {"study", "analysis", "ray"}, path


def test_only_clip_module_touches_open_clip():
    users = {
        p.relative_to(ROOT).as_posix()
        for p in _modules("pipeline") + _modules("study") + _modules("analysis")
        if "open_clip" in _top(_imports(p))
    }
    assert users <= {"pipeline/clip.py"}, users


def test_only_schedule_imports_ray():
    users = {
        p.relative_to(ROOT).as_posix()
        for p in _modules("pipeline") + _modules("study") + _modules("analysis")
        if "ray" in _top(_imports(p))
    }
    assert users <= {"study/schedule.py"}, users


def test_analysis_reads_tables_not_the_kernel():
    for path in _modules("analysis"):
        assert not _top(_imports(path)) & {"pipeline", "study", "torch", "ray"}, path


def test_every_module_says_its_job():
    for package in ("pipeline", "study", "analysis"):
        for path in _modules(package):
            doc = ast.get_docstring(ast.parse(path.read_text()))
            assert doc, f"{path} has no module docstring"


def test_data_modules_import_no_cycle():
    # top-level and function-level imports alike: a cycle hidden in a lazy import is still a cycle
    package = ROOT / "pipeline" / "data"
    names = {p.stem: f"pipeline.data.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    edges = {mod: _imports(package / f"{stem}.py") & set(names.values()) for stem, mod in names.items()}

    def reaches(start: str, goal: str, seen: set) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in edges[start])

    cycles = sorted(mod for mod in edges if reaches(mod, mod, set()))
    assert not cycles, cycles
