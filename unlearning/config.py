"""The base of every config: strict pydantic models whose errors read as one line naming the key."""
from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, Collection

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    """Unknown keys are errors; values are validated on assignment too; instances are immutable;
    floats must be finite (a NaN learning rate or an infinite bound is refused where it is written,
    not discovered when every trial fails)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


_TYPE_TAGS = {"int", "float", "str", "bool", "list", "dict", "none", "literal", "list[any]",
              "dict[str,any]", "dict[str,int]", "list[int]"}


def one_line(err: ValidationError, prefix: str = "", tags: Collection[str] = (),
             model: type[BaseModel] | None = None) -> str:
    """The first error of a ValidationError as `path.to.key: message` (one line, what the CLI prints).
    `tags`: the tags of the model's discriminated unions, which pydantic puts in the path of an error
    inside a member ("space.lr.log-float.high") though they are no key. `model`: the model that was
    validated; with it an unknown key gets the known ones ("n_trails: unknown key; did you mean
    n_trials?")."""
    first = err.errors()[0]
    # a union's error names the member it tried ("low.int", "x.function-after[...]"): not a key
    loc = [p for p in first["loc"] if not (isinstance(p, str) and (p in _TYPE_TAGS or p in tags or "[" in p))]
    path = ".".join(str(p) for p in (*([prefix] if prefix else []), *loc))
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        known = known_keys(model, tuple(first["loc"])) if model is not None else None
        msg = "unknown key" + (did_you_mean(str(first["loc"][-1]), known) if known else "")
    elif first["type"] == "missing":
        msg = "required key is missing"
    n = err.error_count() - 1
    extra = f" (and {n} more problem{'s' if n > 1 else ''})" if n else ""
    return f"{path or '<root>'}: {msg}{extra}"


def did_you_mean(key: str, known: Collection[str]) -> str:
    """`; did you mean n_trials?` for a near miss, else `; known: a, b, c` (for the message of an
    unknown key)."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else f"; known: {', '.join(known)}"


def known_keys(model: Any, loc: tuple) -> list[str] | None:
    """The keys the model accepts where `loc` (a pydantic error location) ends: the fields of the
    model found by walking `loc[:-1]` through fields, dict values, list items, optionals and the
    members of (discriminated) unions. None when the walk does not end at a model."""
    ann = model
    for part in loc[:-1]:
        ann = _step(ann, part)
        if ann is None:
            return None
    ann = _unwrap(ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return list(ann.model_fields)
    return None


def _unwrap(ann: Any) -> Any:
    while typing.get_origin(ann) is typing.Annotated:
        ann = typing.get_args(ann)[0]
    return ann


def _step(ann: Any, part: Any) -> Any:
    ann = _unwrap(ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        field = ann.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field is not None else None
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is dict and len(args) == 2:
        return args[1]
    if origin is list and args:
        return args[0] if isinstance(part, int) else None
    if args:  # a union: the member a tag names ("log-float"), or the one model member with that field
        members = [_unwrap(a) for a in args if a is not type(None)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        for m in models:
            tag = m.model_fields.get("type")
            if tag is not None and part in typing.get_args(tag.annotation):
                return m
        if len(members) == 1:
            return _step(members[0], part)
        found = [m for m in models if part in m.model_fields]
        return _step(found[0], part) if len(found) == 1 else None
    return None


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


# seeds are 0 .. 2**31 - 1: every RNG takes them (scikit-learn's random_state stops at 2**32 - 1, with
# room for the small offsets derived seeds add) and the record stores them as int64
SEED_MAX = 2**31 - 1
MAX_YAML_BYTES = 1 << 20  # a spec or trial config is a few KB; anything this large is a mistake


class _NoAliasLoader(yaml.SafeLoader):
    """safe_load without anchors and aliases: an alias bomb (a billion laughs, nested anywhere) is
    refused at the first alias instead of expanding in memory. Specs never need them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"aliases (*name) are not allowed (line {mark.line + 1})")
        event = self.peek_event()
        if getattr(event, "anchor", None):
            raise yaml.YAMLError(f"anchors (&{event.anchor}) are not allowed "
                                 f"(line {event.start_mark.line + 1})")
        return super().compose_node(parent, index)


def load_yaml_text(text: str):
    """yaml.safe_load, refusing anchors/aliases (YAMLError). The one YAML reader of the project."""
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data):  # what we write must be readable by our own reader
        return True


def dump_yaml(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_NoAliasDumper, sort_keys=False)


def yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in a few words with where it is: `line 4, column 3: expected ',' or '}', but got
    '<stream end>'` (PyYAML's first line alone named no line)."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    what = " ".join(x for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) \
        or str(e).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {what}" if mark is not None else what


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file holding a mapping; any problem is one UserError line naming the file. Files over
    MAX_YAML_BYTES and YAML aliases are refused before anything is built from them."""
    from unlearning.errors import UserError
    from unlearning.files import file_problem

    p = Path(path)
    if (problem := file_problem(p)) is not None:  # a FIFO would block the read: refused, not opened
        raise UserError(f"{p}: {problem}")
    try:
        size = p.stat().st_size
        if size > MAX_YAML_BYTES:
            raise UserError(f"{p}: {size:,} bytes is too large for a spec (limit {MAX_YAML_BYTES:,})")
        data = load_yaml_text(p.read_text())
    except UnicodeDecodeError:
        raise UserError(f"{p}: not a text file") from None
    except OSError as e:
        raise UserError(f"{p}: cannot read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise UserError(f"{p}: not valid YAML ({yaml_problem(e)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping at the top level")
    return data
