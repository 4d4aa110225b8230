"""The Parquet record: explicit schema, atomic files, one table back (pyarrow, pandas, DuckDB)."""
from __future__ import annotations

import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from sweeps import results as R
from sweeps.spec import load_spec
from sweeps.fingerprint import fingerprint
from unlearning.errors import Failure
from tests.sweep_util import fake_task, small_spec


def _write(run_dir, spec, number, lr, seed=0, result=True):
    seeds = {"split_seed": 0, "train_seed": 0, "unlearn_seed": seed}
    fp, cfg = fingerprint(spec.trial_config("ft", {"lr": lr}, seeds))
    res = fake_task(cfg) if result else None
    row = R.trial_row(spec=spec, number=number, fp=fp, config=cfg, seed_index=seed, result=res,
                      failure=None if result else Failure(kind="lost_worker", message="lost: worker died"),
                      node="n0",
                      started_at="2025-01-01T00:00:00+00:00", ended_at="2025-01-01T00:00:02+00:00")
    R.write_trial(run_dir, row, R.history_rows(spec, number, fp, "ft", res), R.trial_schema(spec))
    return fp


def test_round_trip_pyarrow_pandas_duckdb(tmp_path):
    spec = load_spec(small_spec())
    fps = [_write(tmp_path, spec, i, lr) for i, lr in enumerate((0.01, 0.02, 0.03))]
    fps.append(_write(tmp_path, spec, 3, 0.04, result=False))
    # a torn temp file and a stray hidden file are never read
    (tmp_path / "trials" / f".{fps[0]}.parquet.123.tmp").write_bytes(b"PAR1 torn")
    (tmp_path / "trials" / ".junk.parquet").write_bytes(b"garbage")

    t = R.read_results(tmp_path)
    assert t.num_rows == 4 and sorted(t.column("fingerprint").to_pylist()) == sorted(fps)
    assert t.schema.field("trial_number").type == pa.int64()
    assert t.schema.field("p_lr").type == pa.float64() and t.schema.field("p_epochs").type == pa.int64()
    assert t.schema.field("started_at").type == pa.timestamp("us", tz="UTC")
    states = dict(zip(t.column("fingerprint").to_pylist(), t.column("state").to_pylist()))
    assert states[fps[3]] == "FAIL"
    row = t.filter(pa.compute.equal(t["fingerprint"], fps[0])).to_pylist()[0]
    assert row["method"] == "ft" and row["selection_rule"] == "oracle" and row["node"]
    lost = t.filter(pa.compute.equal(t["fingerprint"], fps[3])).to_pylist()[0]
    assert lost["node"] == "n0" and lost["error"] == "lost: worker died" and lost["test_acc"] is None
    assert json.loads(row["params_json"])["lr"] == 0.01 and row["p_lr"] == 0.01
    assert row["forget_gap"] == abs(100 * 0.01 - 3) and row["retrain_test_acc"] == 94.5
    assert row["forget_val_gap"] == abs(row["forget_acc"] - row["val_acc"])

    df = t.to_pandas()
    assert df.groupby("state").size().to_dict() == {"COMPLETE": 3, "FAIL": 1}

    con = duckdb.connect()
    n, best = con.execute(f"select count(*), min(forget_gap) from read_parquet("
                          f"'{tmp_path}/trials/[!.]*.parquet', union_by_name=true)").fetchone()
    assert n == 4 and best == abs(100 * 0.03 - 3)
    assert con.execute("select count(*) from t where state = 'COMPLETE'").fetchone()[0] == 3  # the Table

    h = R.read_history(tmp_path)
    assert h.num_rows == 3 and set(h.column("kind").to_pylist()) == {"epoch"}
    # the footer does not repeat the spec (it lives once in spec.yaml)
    meta = pq.read_table(tmp_path / "trials" / f"{fps[0]}.parquet").schema.metadata or {}
    assert b"unlearn_sweep.spec" not in meta
    # ... nor per-column statistics, which a one-row file cannot use (a third of its bytes)
    rg = pq.read_metadata(tmp_path / "trials" / f"{fps[0]}.parquet").row_group(0)
    assert not any(rg.column(i).is_stats_set for i in range(rg.num_columns))


def test_rewrite_is_atomic_and_leaves_no_temp(tmp_path):
    spec = load_spec(small_spec())
    fp = _write(tmp_path, spec, 0, 0.01, result=False)
    assert _write(tmp_path, spec, 5, 0.01) == fp  # same configuration and seed: same file, replaced
    assert [p.name for p in (tmp_path / "trials").iterdir()] == [f"{fp}.parquet"]
    assert R.read_results(tmp_path).to_pylist()[0]["state"] == "COMPLETE"


def test_empty_run_dir_reads_as_empty_table(tmp_path):
    t = R.read_results(tmp_path)
    assert t.num_rows == 0 and "fingerprint" in t.column_names


def test_rows_table_is_from_pylist_column_by_column():
    """The one-run files' tables: the same as pyarrow's row-wise conversion, on real rows (complete,
    failed, with history), keys outside the schema left out and missing ones null."""
    spec = load_spec(small_spec())
    seeds = {"split_seed": 0, "train_seed": 0, "unlearn_seed": 0}
    fp, cfg = fingerprint(spec.trial_config("ft", {"lr": 0.01}, seeds))
    res = fake_task({**cfg, "eval": {"eval_every": 1}})
    ok = R.trial_row(spec=spec, number=0, fp=fp, config=cfg, seed_index=0, result=res, failure=None,
                     node="n0", started_at="2025-01-01T00:00:00+00:00", ended_at="2025-01-01T00:00:02+00:00")
    bad = R.trial_row(spec=spec, number=1, fp=fp, config=cfg, seed_index=0, result=None,
                      failure=Failure(kind="lost_worker", message="lost"), node="n0",
                      started_at="2025-01-01T00:00:00+00:00", ended_at="2025-01-01T00:00:02+00:00")
    schema = R.trial_schema(spec)
    for rows in ([ok], [bad], [ok, bad], [{**ok, "not_a_column": 1}], [{"fingerprint": fp}]):
        assert R.rows_table(rows, schema).equals(
            pa.Table.from_pylist([{k: v for k, v in r.items() if k in schema.names} for r in rows], schema=schema))
    history = R.history_rows(spec, 0, fp, "ft", res)
    assert len(history) == 3
    assert R.rows_table(history, R.HISTORY_SCHEMA).equals(pa.Table.from_pylist(history, schema=R.HISTORY_SCHEMA))
