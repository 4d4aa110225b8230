"""docs/extending.md runs as written: its ```python, ```yaml and ```bash blocks, in order, from an
empty folder. A block whose first line is `# file: <path>` is that file's content (a plug-in, a
spec); the other python blocks and every command of the bash blocks (`unlearn-sweep ...`, the
installed one) are one script, run in order in a fresh process with the test session's oracle
cache."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


SHELL = """import shlex as _shlex, subprocess as _subprocess, sys as _sys, os as _os
def _sh(command):  # a command of the page's bash blocks, with this Python's installed unlearn-sweep
    args = _shlex.split(command)
    args[0] = _os.path.join(_os.path.dirname(_sys.executable), args[0])
    done = _subprocess.run(args, capture_output=True, text=True)
    print(done.stdout, end="")
    assert done.returncode == 0, f"{command}: {done.stderr[-3000:]}"
"""


def blocks(text: str) -> tuple[dict[str, str], str]:
    """({path: content} of the file blocks, the script of the other blocks joined in order)."""
    files, script = {}, [SHELL]
    for lang, block in re.findall(r"```(python|yaml|bash)\n(.*?)```", text, flags=re.S):
        first, _, rest = block.partition("\n")
        if first.startswith("# file: "):
            files[first.removeprefix("# file: ").strip()] = rest
        elif lang == "python":
            script.append(block)
        elif lang == "bash":
            for line in block.splitlines():
                command = line.split("  #")[0].strip()
                if command:
                    script.append(f"_sh({command!r})")
        else:
            raise AssertionError(f"a yaml block without `# file:`: {block[:60]!r}")
    return files, "\n".join(script)


@pytest.mark.slow
def test_the_worked_example_runs_as_written(tmp_path):
    files, script = blocks(DOC.read_text())
    assert set(files) == {"my_lab/unlearn_methods.py", "my_lab/models.py", "my_lab/stripes.py", "sweep.yaml"}
    method_lines = [ln for ln in files["my_lab/unlearn_methods.py"].splitlines() if ln.strip()]
    assert len(method_lines) <= 32, "the new method is about 30 lines"
    for path, content in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(content)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         timeout=900, env={**os.environ, "PYTHONPATH": ""})
    assert out.returncode == 0, out.stderr[-4000:]
    lines = out.stdout.splitlines()
    assert any(ln.startswith(str(tmp_path / "my_lab" / "unlearn_methods.py")) for ln in lines)
    assert any(ln.startswith("Dataset(stripes, train=450, val=50") for ln in lines)
    assert any("lacks '1.weight', which the model my_mlp has" in ln for ln in lines), out.stdout
    assert (tmp_path / "released" / "original.pt").is_file()
    # the sweep: its plug-ins recorded, the winner kept and taken away, its UA/RA/TA reproduced
    assert any(ln.startswith("the winner's UA, RA, TA:") for ln in lines), out.stdout
    assert [p["name"] for p in json.loads((tmp_path / "runs" / "my_lab" / "run.json").read_text())["plugins"]] \
        == ["unlearn_methods.py", "models.py"]
    assert (tmp_path / "winner.pt").is_file() and len(list((tmp_path / "runs/my_lab/models").glob("*.pt"))) == 3
