"""The import layering, read from the source (every import counts: lazy ones inside a function and
those under `if TYPE_CHECKING` included).

Packages: unlearning imports none of the other packages; cluster imports none of ours.
Inside sweeps/ two rooms: the record layer ("what to try": catalogue, spec, space, samplers, journal,
study, results) and sweeps/report/ ("how to report"), which reads the record layer and is never
imported by it. The metric catalogue is a leaf; spec never imports what samples or runs the search
(samplers, space, study, journal) nor the record it writes; and there is no import circle in sweeps/
at all.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("unlearning", "sweeps", "orchestrator", "cluster")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module name an import in `path` names: `from a.b import c` gives a.b and a.b.c (c may
    be a module or a name in a.b)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


SWEEPS = {module_name(p): p for p in sorted((ROOT / "sweeps").rglob("*.py"))}


def sweeps_imports(module: str) -> set[str]:
    """The sweeps modules `module` imports (packages only where nothing below them is named)."""
    names = imported(SWEEPS[module])
    return {n for n in names if n in SWEEPS and n != module and
            not any(m.startswith(n + ".") for m in names if m in SWEEPS)}


def test_every_module_is_seen():
    assert {"sweeps.catalogue", "sweeps.spec", "sweeps.results", "sweeps.report.analysis",
            "sweeps.report.plots"} <= set(SWEEPS)


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """An import circle of `graph` (module -> modules it imports) as a path back to its start."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n, path + [n])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def test_find_circle_finds_one():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_in_sweeps():
    circle = find_circle({m: sweeps_imports(m) for m in SWEEPS})
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_record_layer_never_imports_the_report():
    for m in SWEEPS:
        if not m.startswith("sweeps.report"):
            assert not {n for n in imported(SWEEPS[m]) if n.startswith("sweeps.report")}, m


def test_the_metric_catalogue_is_a_leaf():
    assert not {n for n in imported(SWEEPS["sweeps.catalogue"]) if n.split(".")[0] in OURS}


@pytest.mark.parametrize("module, above", [
    ("sweeps.spec", ["sweeps.samplers", "sweeps.space", "sweeps.study", "sweeps.journal", "sweeps.results"]),
    ("sweeps.space", ["sweeps.samplers", "sweeps.study", "sweeps.journal", "sweeps.results"]),
    ("sweeps.samplers", ["sweeps.space", "sweeps.study", "sweeps.journal", "sweeps.results"]),
    ("sweeps.study", ["sweeps.results"]),
])
def test_sweeps_layers_import_one_way(module, above):
    names = imported(SWEEPS[module])
    bad = sorted(n for n in names for a in above if n == a or n.startswith(a + "."))
    assert not bad, f"{module} imports {bad}"


def test_packages_keep_their_rules():
    for path in (ROOT / "unlearning").rglob("*.py"):
        names = imported(path)
        assert not {n for n in names if n.split(".")[0] in ("sweeps", "orchestrator", "cluster", "optuna",
                                                             "ray", "wandb")}, path
    for path in (ROOT / "cluster").rglob("*.py"):
        names = imported(path)
        assert not {n for n in names if n.split(".")[0] in ("sweeps", "orchestrator", "unlearning")}, path
