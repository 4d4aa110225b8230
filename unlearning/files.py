"""What is at a path a user gave: a regular file, or why not.

`Path.is_file()` is False for a missing path and for a FIFO, a device or a socket alike, so "missing
file" was reported for a named pipe; and opening a FIFO blocks until a writer comes. Every reader of a
user's file (data, checkpoints, plug-ins, specs) asks `file_problem` first and never opens what is not
a regular file.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def file_problem(path: str | Path) -> str | None:
    """None if `path` is a regular file (after following symlinks); else what it is, as the end of
    a sentence: "no such file", "a directory, not a file", "a FIFO (named pipe), not a file"...."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except NotADirectoryError:
        return "no such file (a parent is not a folder)"
    except OSError as e:  # permission, a symlink loop, a name too long
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISREG(mode):
        return None
    what = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return f"{what}, not a file"


def folder_problem(path: str | Path) -> str | None:
    """None if `path` is a folder; else why not ("no such folder", "a file, not a folder")."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such folder"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return None if stat.S_ISDIR(mode) else "not a folder"
