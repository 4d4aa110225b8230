"""Read back a W&B offline run (`offline-run-*/run-*.wandb`): the run record, history rows and summary.

The file is a W&B header (":W&B", magic, version: 7 bytes) and then a LevelDB-style log of protobuf
`Record`s in 32 KiB blocks (each chunk: crc32 4 bytes, length 2, type 1: full/first/middle/last)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

_BLOCK, _HEAD = 32768, 7


def records(path: Path) -> list:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    out, pos, partial = [], _HEAD, b""
    while pos + _HEAD <= len(data):
        if _BLOCK - pos % _BLOCK < _HEAD:  # a block's tail too short for a header is padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEAD])
        pos += _HEAD
        chunk, pos = data[pos:pos + length], pos + length
        if kind == 0 and length == 0:
            continue
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            partial = chunk
        elif kind == 3:
            partial += chunk
        elif kind == 4:
            out.append(partial + chunk)
            partial = b""
    recs = []
    for raw in out:
        r = pb.Record()
        r.ParseFromString(raw)
        recs.append(r)
    return recs


def _items(items) -> dict:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def read_run(path: Path) -> dict:
    """{"group", "name", "project", "config", "history": [rows], "summary": {...}, "exit_code"}."""
    run: dict = {"history": [], "summary": {}, "config": {}, "exit_code": None}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run.update(group=r.run.run_group, name=r.run.display_name, project=r.run.project)
            run["config"].update(_items(r.run.config.update))
        elif kind == "config":
            run["config"].update(_items(r.config.update))
        elif kind == "history":
            run["history"].append(_items(r.history.item))
        elif kind == "summary":
            run["summary"].update(_items(r.summary.update))
        elif kind == "exit":
            run["exit_code"] = r.exit.exit_code
    run["config"] = {k: (v.get("value") if isinstance(v, dict) and "value" in v else v)
                     for k, v in run["config"].items()}
    return run


def offline_runs(root: Path) -> list[dict]:
    return [read_run(p) for p in sorted(Path(root).glob("**/offline-run-*/run-*.wandb"))]
