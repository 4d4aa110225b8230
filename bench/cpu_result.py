"""The JSON a CPU benchmark writes: its command, the machine, the versions, a note and its rows."""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import torch

from unlearning import __version__


def write_cpu_result(path: str | Path, note: str, rows: list[dict]) -> None:
    out = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "device": "cpu",
           "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "load_avg_at_end": os.getloadavg(),
           "versions": {"unlearn_sweep": __version__, "torch": torch.__version__,
                        "python": platform.python_version()},
           "note": note, "rows": rows}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=2))
    print("wrote", path)
