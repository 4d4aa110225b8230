"""The base of every config: strict pydantic models whose errors read as one line naming the key."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    """Unknown keys are errors; values are validated on assignment too; instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def one_line(err: ValidationError, prefix: str = "") -> str:
    """The first error of a ValidationError as `path.to.key: message` (one line, what the CLI prints)."""
    first = err.errors()[0]
    path = ".".join(str(p) for p in (*([prefix] if prefix else []), *first["loc"]))
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required key is missing"
    extra = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{path or '<root>'}: {msg}{extra}"


def set_path(tree: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Return a copy of a nested dict with `a.b.c` set to value (intermediate dicts created)."""
    out = dict(tree)
    head, _, rest = path.partition(".")
    if rest:
        sub = out.get(head)
        out[head] = set_path(sub if isinstance(sub, dict) else {}, rest, value)
    else:
        out[head] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file holding a mapping; any problem is one UserError line naming the file."""
    from unlearning.errors import UserError

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping at the top level")
    return data
