"""README commands run as written: every command in the README's ```bash blocks, in order, from the
root of a fresh clone (`git clone` of this repository's HEAD, with its own `make venv`), must exit 0.

Skipped, by their trailing comment: commands that need what a fresh clone does not have (a comment
starting `needs ...`: a data set, a cluster, an account), and `make test` (this suite itself).
Slow (a venv, the quickstart sweep, several trials: minutes): `pytest -m slow tests/test_readme.py`.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands(text: str) -> list[tuple[str, str | None]]:
    """(command, why skipped or None) for each command of the ```bash blocks."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for cmd in re.sub(r"\\\n\s*", " ", block).splitlines():
            if not cmd.strip():
                continue
            code, _, comment = cmd.partition("   #")
            comment = comment.strip().lstrip("# ")
            skip = comment if comment.startswith("needs") else ("this suite" if code.strip() == "make test"
                                                                  else None)
            out.append((code.strip() if "#" not in code else code.split(" #")[0].strip(), skip))
    return out


def test_the_readme_commands_are_found_and_the_skips_are_few():
    cmds = readme_commands((ROOT / "README.md").read_text())
    assert len(cmds) >= 15 and sum(s is not None for _, s in cmds) <= 5
    # one way to call the tools (a `sleep N;` before one is a pause, not a tool)
    assert all(re.sub(r"^sleep \d+; ", "", c).startswith((".venv/bin/", "make ")) for c, _ in cmds)
    verbs = {m.group(1) for c, skip in cmds if not skip for m in re.finditer(r"unlearn-sweep (\w+)", c)}
    assert {"plan", "trials", "stop", "status", "analyze", "export", "compare", "run", "resume"} <= verbs


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a fresh venv and every command: 15 min on a busy machine
def test_every_readme_command_runs_on_a_fresh_clone(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "VIRTUAL_ENV", "PYTHONPATH")}
    venv = subprocess.run(["make", "venv", f"PY={sys.executable}"], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=1800)
    assert venv.returncode == 0, venv.stderr[-3000:]
    ran = []
    for cmd, skip in readme_commands((clone / "README.md").read_text()):
        if skip:
            continue
        res = subprocess.run(cmd, shell=True, cwd=clone, env=env, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, f"{cmd}\n{res.stderr[-3000:]}"
        ran.append(cmd)
    assert (clone / "table.tex").is_file() and (clone / "runs" / "mine" / "report" / "report.md").is_file()
    assert ran
