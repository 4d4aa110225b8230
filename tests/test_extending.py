"""docs/extending.md runs as written: its ```python blocks, in order, from an empty folder. A block
whose first line is `# file: <path>` is that file's content (a plug-in); the others are one script,
run in a fresh process with the test session's oracle cache."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def blocks(text: str) -> tuple[dict[str, str], str]:
    """({path: content} of the file blocks, the script of the other blocks joined in order)."""
    files, script = {}, []
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        first, _, rest = block.partition("\n")
        if first.startswith("# file: "):
            files[first.removeprefix("# file: ").strip()] = rest
        else:
            script.append(block)
    return files, "\n".join(script)


def test_the_worked_example_runs_as_written(tmp_path):
    files, script = blocks(DOC.read_text())
    assert set(files) == {"my_lab/unlearn_methods.py", "my_lab/models.py", "my_lab/stripes.py"}
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
