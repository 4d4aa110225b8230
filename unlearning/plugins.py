"""Plug-ins: a researcher's own methods, models and data sets, kept outside this package.

    from unlearning import load_plugins
    loaded = load_plugins(["my_lab/unlearn_methods.py", "my_lab.models"])

A plug-in is a Python file (a path ending in `.py`: one self-contained file, its neighbours are not
part of it) or an importable module or package (a dotted name, found on `sys.path`). Loading imports
it once; what it registers with `register_method`, `register_model` and `register_dataset` is then
used by name exactly like a built-in. Each `Plugin` record says what was loaded: its resolved path,
the SHA-256 of its source and the names it registered.

The source is read once, hashed, and those very bytes are compiled and run (the hash is of what ran).
`Plugin.sha256` is the SHA-256 of the file (what `sha256sum` prints); for a package, the SHA-256 of its
manifest, one line `<sha256 of the file>  <path under the package folder>\\n` per `.py` file, sorted.

A process that lacks the files (a worker on another node) loads the same plug-in from its source
bytes: `load_plugin_source(p.name, p.sources, p.sha256, path=p.path)`, which checks the hash and
registers the same names under the same module name.

A sweep sends its plug-ins to every worker: `ship(plugins, share)` on the driver gives what travels
in a task's payload (the files' bytes, or a backend's handles on them), `load_shipped(...)` on the
worker loads them, unless that process already holds the same version (the bytes then never move).
A `TrialConfig` names the plug-ins its sweep ran with by `Plugin.ref()`, {name, sha256}: part of
its fingerprint, and checked against what is loaded where it is validated.

A plug-in that cannot be imported is one UserError line: the plug-in, the file and line where it
failed, the exception. Nothing it registered before failing remains. Loading a plug-in again after
its source changed replaces what its previous version registered.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.util
import linecache
import os
import re
import sys
import traceback
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unlearning.errors import UserError
from unlearning.files import file_problem
from unlearning.registry import _LOCK, staged

MAX_PLUGIN_BYTES = 16 << 20  # source code; anything larger is a mistake (a data file named .py)


@dataclass(frozen=True)
class Plugin:
    """One loaded plug-in: what a run records and what a worker needs to load it too."""

    spec: str  # as the user named it: a path or a dotted module name
    name: str  # its identity: the resolved path of a file, the module name of a module
    path: str  # the file, or the package's folder, where it was read
    module: str  # its name in sys.modules (the `__module__` of what it defines)
    sha256: str
    sources: Mapping[str, bytes]  # file name (or path under the package folder) -> source bytes
    methods: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    data_sets: tuple[str, ...] = ()

    def record(self) -> dict:
        """JSON-safe summary for a run's record: spec, path, module, sha256, files, registered names."""
        return {"spec": self.spec, "path": self.path, "module": self.module, "sha256": self.sha256,
                "files": sorted(self.sources), "methods": list(self.methods),
                "models": list(self.models), "data_sets": list(self.data_sets)}

    def ref(self) -> dict[str, str]:
        """What a TrialConfig names it by: {name, sha256}, the name being the file's name (not its
        folder: a lab folder moved elsewhere is the same plug-in) or the module's dotted name."""
        return {"name": Path(self.name).name if _is_file_spec(self.name) else self.name,
                "sha256": self.sha256}


_LOADED: dict[str, Plugin] = {}  # by Plugin.name


def source_sha256(sources: Mapping[str, bytes]) -> str:
    """The plug-in hash of `sources`: a single module's bytes, or a package's manifest."""
    if "__init__.py" not in sources:
        [blob] = sources.values()
        return hashlib.sha256(blob).hexdigest()
    manifest = "".join(f"{hashlib.sha256(sources[rel]).hexdigest()}  {rel}\n" for rel in sorted(sources))
    return hashlib.sha256(manifest.encode()).hexdigest()


def load_plugins(specs: Iterable[str], *, base: str | Path | None = None) -> list[Plugin]:
    """Load each plug-in once (files relative to `base`, default the working directory) and return
    their records in order. UserError (one line) for a plug-in that is missing or fails to import."""
    return [_load_spec(str(s), Path(base) if base is not None else Path.cwd()) for s in specs]


def plugin_name(spec: str, *, base: str | Path | None = None) -> str:
    """What `Plugin.name` will be for `spec`, without loading it: a file's resolved path (relative
    to `base`, default the working directory), a module's name as given."""
    if not _is_file_spec(spec):
        return spec
    return str(((Path(base) if base is not None else Path.cwd()) / Path(spec).expanduser()).resolve())


def load_plugin_source(name: str, source: bytes | Mapping[str, bytes], sha256: str | None = None, *,
                       path: str | None = None) -> Plugin:
    """Load a plug-in from its source where its files are not (a worker): `name` is `Plugin.name` (a
    file's path, or a module's dotted name), `source` its bytes or, for a package, {path under the
    package folder: bytes}. With `sha256`, the source must hash to it. `path` names the files in
    messages and tracebacks (default `name`). Registers the same names as on the machine that read
    the files."""
    if isinstance(source, (bytes, bytearray)):  # one file: keyed as load_plugins keys it
        key = Path(name).name if name.endswith(".py") else f"{name.rpartition('.')[2]}.py"
        sources = {key: bytes(source)}
    else:
        sources = dict(source)
    if not all(isinstance(b, (bytes, bytearray)) for b in sources.values()) or not (
            "__init__.py" in sources or len(sources) == 1):
        raise UserError(f"plug-in {name}: its source must be bytes, or {{file: bytes}} of one module or "
                        "of a package (with its __init__.py)")
    digest = source_sha256(sources)
    if sha256 is not None and digest != sha256:
        raise UserError(f"plug-in {name}: its source hashes to {digest[:12]}..., expected "
                        f"{sha256[:12]}... (a different version)")
    return _load(name, name, path or name, sources)


def loaded() -> list[Plugin]:
    """The plug-ins this process has loaded (each at its latest version), in load order."""
    return list(_LOADED.values())


def loaded_plugin(name: str) -> Plugin | None:
    """The loaded plug-in of that `Plugin.name` (a file's resolved path, a module's name)."""
    return _LOADED.get(name)


def ship(plugins: Iterable[Plugin], share: Callable[[bytes], Any] = lambda blob: blob) -> list[dict]:
    """What a process without the files needs to load `plugins` (`load_shipped`): per plug-in its
    name, path, sha256 and each file's bytes passed through `share` (a backend's `share`: a handle
    that moves the bytes only when a worker calls it)."""
    return [{"name": p.name, "path": p.path, "sha256": p.sha256,
             "sources": {rel: share(blob) for rel, blob in p.sources.items()}} for p in plugins]


def load_shipped(shipped: Iterable[Mapping[str, Any]]) -> list[Plugin]:
    """Load what `ship` gave, in order: a plug-in this process already holds at that sha256 is not
    loaded again and its bytes are not fetched (a long-lived worker pays once). UserError (one line)
    for one that fails to import here (a package its code imports that this node lacks)."""
    out = []
    for s in shipped:
        done = _LOADED.get(s["name"])
        if done is None or done.sha256 != s["sha256"]:
            sources = {rel: blob() if callable(blob) else blob for rel, blob in s["sources"].items()}
            done = load_plugin_source(s["name"], sources, s["sha256"], path=s["path"])
        out.append(done)
    return out


# -- finding the source ---------------------------------------------------------------------------

def _is_file_spec(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def _read(spec: str, path: Path) -> bytes:
    head = "plug-in " if _is_file_spec(spec) else f"plug-in {spec}: "
    if (problem := file_problem(path)) is not None:
        raise UserError(f"{head}{path}: {problem}")
    if path.stat().st_size > MAX_PLUGIN_BYTES:
        raise UserError(f"{head}{path}: larger than {MAX_PLUGIN_BYTES >> 20} MiB, not source code")
    try:
        return path.read_bytes()
    except OSError as e:
        raise UserError(f"{head}{path}: cannot be read ({e.strerror or e})") from None


def _load_spec(spec: str, base: Path) -> Plugin:
    if _is_file_spec(spec):
        path = (base / Path(spec).expanduser()).resolve()
        if path.suffix != ".py":
            raise UserError(f"plug-in {spec}: a plug-in file is a .py file; name a package by its "
                            "module name (my_lab.models), with its parent folder on PYTHONPATH")
        return _load(spec, str(path), str(path), {path.name: _read(spec, path)})
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", spec):
        raise UserError(f"plug-in {spec!r}: neither a .py file nor a module name (my_lab.models)")
    try:
        found = importlib.util.find_spec(spec)  # imports the parent packages
        missing = spec if found is None else None
    except ModuleNotFoundError as e:  # a parent package is missing
        missing = e.name or spec
    except Exception as e:  # noqa: BLE001 - a parent package that fails to import
        raise UserError(f"plug-in {spec}: {_one_line(e)}") from None
    if missing is not None:
        raise UserError(f"plug-in {spec}: no module named {missing!r} (is its folder on PYTHONPATH?)")
    assert found is not None  # missing is None only when find_spec found it
    if found.submodule_search_locations is not None:  # a package: every .py file under its folder
        if not found.origin or not found.origin.endswith("__init__.py"):
            raise UserError(f"plug-in {spec}: a namespace package (no __init__.py); name a module in it")
        root = Path(found.origin).parent
        files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
        sources = {p.relative_to(root).as_posix(): _read(spec, p) for p in files}
        return _load(spec, spec, str(root), sources)
    if not found.origin or not found.origin.endswith(".py"):
        raise UserError(f"plug-in {spec}: {found.origin or 'a built-in module'} is not Python source")
    origin = Path(found.origin)
    return _load(spec, spec, str(origin), {origin.name: _read(spec, origin)})


# -- importing it ---------------------------------------------------------------------------------

class _SourceFinder(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Imports one plug-in (and, for a package, its submodules) from source bytes held in memory,
    compiled with the plug-in's file names so tracebacks, `inspect.getsource` and error lines point
    at the plug-in's own files. Writes nothing (no __pycache__ beside the user's files)."""

    def __init__(self, module: str, sources: Mapping[str, bytes], path: str):
        self.module, self.sources, self.path = module, sources, path
        self.package = "__init__.py" in sources

    def _rel(self, fullname: str) -> str | None:
        if fullname == self.module:
            return "__init__.py" if self.package else next(iter(self.sources))
        if self.package and fullname.startswith(self.module + "."):
            stem = fullname[len(self.module) + 1:].replace(".", "/")
            return next((r for r in (f"{stem}.py", f"{stem}/__init__.py") if r in self.sources), None)
        return None

    def filename(self, rel: str) -> str:
        return os.path.join(self.path, rel) if self.package else self.path

    def filenames(self) -> set[str]:
        return {self.filename(rel) for rel in self.sources}

    def find_spec(self, fullname, path=None, target=None):
        rel = self._rel(fullname)
        if rel is None:
            return None
        spec = importlib.util.spec_from_loader(fullname, self, origin=self.filename(rel),
                                               is_package=rel.endswith("__init__.py"))
        spec.has_location = True  # sets __file__ to the plug-in's file
        return spec

    def _known(self, fullname: str) -> str:
        """`_rel`, or ImportError (InspectLoader's contract, which linecache relies on) for a module
        that is not part of this plug-in."""
        if (rel := self._rel(fullname)) is None:
            raise ImportError(f"{fullname} is not part of plug-in {self.module}", name=fullname)
        return rel

    def get_source(self, fullname: str) -> str:
        return importlib.util.decode_source(self.sources[self._known(fullname)])

    def get_code(self, fullname: str):
        rel = self._known(fullname)
        return compile(self.sources[rel], self.filename(rel), "exec", dont_inherit=True)

    def exec_module(self, module) -> None:
        exec(self.get_code(module.__name__), module.__dict__)  # noqa: S102 - the user's own plug-in


def _module_name(name: str) -> str:
    """A module's own dotted name; for a file, a name of its own that is the same on every machine
    given the same path (two files with the same stem do not collide)."""
    if not name.endswith(".py"):
        return name
    stem = re.sub(r"\W", "_", Path(name).stem)
    return f"unlearn_plugin_{stem}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _load(spec: str, name: str, path: str, sources: dict[str, bytes]) -> Plugin:
    digest = source_sha256(sources)
    with _LOCK:
        done = _LOADED.get(name)
        if done is not None and done.sha256 == digest:
            return done
        module = _module_name(name)
        finder = _SourceFinder(module, sources, path)
        # an earlier version (or the same module imported the usual way) steps aside, and comes back
        # if this one fails
        old_finders = [f for f in sys.meta_path if isinstance(f, _SourceFinder) and f.module == module]
        old_modules = {m: sys.modules.pop(m) for m in list(sys.modules)
                       if m == module or m.startswith(module + ".")}
        for f in old_finders:
            sys.meta_path.remove(f)
        for file in finder.filenames():
            linecache.cache.pop(file, None)  # tracebacks quote this version's lines
        before = set(sys.modules)
        sys.meta_path.insert(0, finder)
        try:
            _ensure_parents(module)
            with staged(module, path, digest) as names:
                importlib.import_module(module)
        except BaseException as e:
            sys.meta_path.remove(finder)
            for m in set(sys.modules) - before:
                del sys.modules[m]
            sys.modules.update(old_modules)
            sys.meta_path[:0] = old_finders
            if isinstance(e, KeyboardInterrupt):
                raise
            raise UserError(_import_error(spec, e, finder)) from None
        plugin = Plugin(spec, name, path, module, digest, sources, tuple(names["methods"]),
                        tuple(names["models"]), tuple(names["data_sets"]))
        _LOADED[name] = plugin
        return plugin


def _ensure_parents(module: str) -> None:
    """The parent packages of a dotted plug-in module: imported where they exist; where they do not
    (a worker given only the plug-in's source), empty namespace packages stand in."""
    parts = module.split(".")
    for i in range(1, len(parts)):
        parent = ".".join(parts[:i])
        if parent in sys.modules:
            continue
        if importlib.util.find_spec(parent) is not None:
            importlib.import_module(parent)
        else:
            stub = types.ModuleType(parent)
            stub.__path__ = []
            sys.modules[parent] = stub


def _one_line(e: BaseException) -> str:
    text = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
    return " ".join(text.split())[:300]


def _import_error(spec: str, e: BaseException, finder: _SourceFinder) -> str:
    """`plug-in <file>, line <n>: <exception>`: the last line of the plug-in's own files on the way to
    the exception (for a SyntaxError, where the parser stopped); a module plug-in's name first."""
    files = finder.filenames()
    if isinstance(e, SyntaxError) and e.filename in files:
        where, what = f"{e.filename}, line {e.lineno}", f"SyntaxError: {e.msg}"
    else:
        mine = [f for f in traceback.extract_tb(e.__traceback__) if f.filename in files]
        where = f"{mine[-1].filename}, line {mine[-1].lineno}" if mine else finder.path
        what = _one_line(e)
    head = "plug-in " if _is_file_spec(spec) else f"plug-in {spec}: "
    return " ".join(f"{head}{where}: {what}".split())
