"""The import layering: unlearning imports none of the other packages; inside sweeps/ the layers
read spec -> space -> study (a module never imports one above it, lazily inside a function
included); cluster imports none of the others."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


@pytest.mark.parametrize("module, above", [
    ("sweeps/samplers.py", ["sweeps.spec", "sweeps.space", "sweeps.study"]),
    ("sweeps/spec.py", ["sweeps.space", "sweeps.study", "sweeps.results", "sweeps.analysis"]),
    ("sweeps/space.py", ["sweeps.study", "sweeps.results", "sweeps.analysis"]),
    ("sweeps/study.py", ["sweeps.results", "sweeps.analysis"]),
])
def test_sweeps_layers_import_one_way(module, above):
    names = imported(ROOT / module)
    bad = sorted(n for n in names for a in above if n == a or n.startswith(a + "."))
    # TYPE_CHECKING-only imports are fine; samplers.py names SweepSpec only for annotations
    if module == "sweeps/samplers.py":
        bad = [b for b in bad if b not in ("sweeps.spec", "sweeps.spec.SweepSpec")]
        assert "if TYPE_CHECKING" in (ROOT / module).read_text()
    assert not bad, f"{module} imports {bad}"


def test_packages_keep_their_rules():
    for path in (ROOT / "unlearning").rglob("*.py"):
        names = imported(path)
        assert not {n for n in names if n.split(".")[0] in ("sweeps", "orchestrator", "cluster", "optuna",
                                                             "ray", "wandb")}, path
    for path in (ROOT / "cluster").rglob("*.py"):
        names = imported(path)
        assert not {n for n in names if n.split(".")[0] in ("sweeps", "orchestrator", "unlearning")}, path
