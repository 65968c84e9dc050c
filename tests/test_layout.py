"""The architecture's rules, held by a test: who may import what."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
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


# the kernel's terms analysis may share: modules that import neither torch nor numpy
SHARED_TERMS = {"pipeline.cell", "pipeline.errors"}


def test_analysis_reads_tables_not_the_kernel():
    for path in _modules("analysis"):
        names = _imports(path)
        assert not _top(names - SHARED_TERMS) & {"pipeline", "study", "torch", "ray"}, path


def test_the_shared_terms_need_no_kernel():
    heavy = "sorted(set(sys.modules) & {'torch', 'numpy'})"
    probe = f"import sys; import {', '.join(sorted(SHARED_TERMS))}; print({heavy})"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_every_module_says_its_job():
    for package in ("pipeline", "study", "analysis"):
        for path in _modules(package):
            doc = ast.get_docstring(ast.parse(path.read_text()))
            assert doc, f"{path} has no module docstring"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """Every project module `path` imports, at module level or inside a function: `from x import y`
    counts as x.y where that is a module, else as x."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for package in ("pipeline", "study", "analysis") for p in _modules(package)}
    return {name: _imported_modules(path, name, set(paths)) for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as the modules along it (the first one again at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_names_the_modules_along_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    assert "pipeline.backbones" in graph["pipeline.cell"]  # imports inside functions count
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_analysis_lists_methods_in_the_registrys_order():
    """The method registry imports torch, which analysis does not: it keeps the order in which it
    lists methods, held equal to the registry's here."""
    from analysis import assemble
    from pipeline.methods import METHODS

    assert tuple(METHODS) == assemble.METHOD_ORDER


# declarative tables, read as data: the command-line parser
LONG_TABLES = {"study/cli.py:build_parser"}


def test_no_function_of_the_kernel_the_study_or_the_analysis_is_over_60_lines():
    long = []
    for package in ("pipeline", "study", "analysis"):
        for path in _modules(package):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    where = f"{path.relative_to(ROOT).as_posix()}:{node.name}"
                    if node.end_lineno - node.lineno + 1 > 60 and where not in LONG_TABLES:
                        long.append(f"{where} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def test_the_report_page_comes_from_templates_not_python_strings():
    """Pages are Jinja2 templates of analysis/templates; no analysis module writes a tag."""
    tag = re.compile(r"</(?:p|div|table|tr|td|th|h[1-6]|figure|section|ul|li|html|body)>|<img\b")
    for path in _modules("analysis"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not tag.search(node.value), f"{path.name}: {node.value[:60]!r}"
    assert {"report.html", "summary.md"} <= {p.name for p in (ROOT / "analysis" / "templates").iterdir()}
