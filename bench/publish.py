"""Benchmark: publish one day of recommendations (default 100k users x K=20 = 2M rows) to the warehouse.

For DuckDB and PostgreSQL, prints the rows/s of ``Warehouse.publish_partition`` (validation, staging,
atomic swap, run record) beside a bare bulk load of the same rows into a plain, unconstrained table of
the same database, and the ratio (target >= 0.5). The bare loads are the fastest plain ways found:
DuckDB: INSERT from a registered Arrow table; PostgreSQL: COPY FROM STDIN fed CSV written by pyarrow in
large chunks (``recsys.warehouse.writer.copy_csv``, the same feed the writer uses; about 2x psycopg's
per-row ``write_row``). Both bare loads start from the Arrow table, converted before the clock starts,
while publish_partition is timed from the pandas frame.

    .venv/bin/python bench/publish.py [--users 100000] [--k 20] [--postgres postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from recsys.warehouse.writer import copy_csv, open_warehouse

RESULTS = Path(__file__).resolve().parent / "results" / "publish.json"


def make_frame(users: int, k: int, seed: int = 42) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = users * k
    return pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(1, users + 1, dtype=np.int64), k),
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), users),
            "product_id": (np.tile(np.arange(k, dtype=np.int64), users) * 7919 + np.repeat(rng.integers(0, 10**6, users), k)),
            "score": rng.random(n),
            "sources": rng.choice(["collaborative", "content,sequence", "sequence", "popularity"], n),
            "reason": rng.choice(["because you viewed Acme phone", "similar to Acme phone", "popular in electronics"], n),
            "run_id": "bench",
        }
    )


def run_record(rows: int) -> dict:
    return {
        "airflow_run_id": "bench", "mlflow_run_id": "bench", "raw_rows": rows, "clean_rows": rows, "quarantined_rows": 0,
        "users": rows, "items": rows, "published_rows": rows, "metrics": {"hybrid": {"ndcg@10": 0.1}},
    }


def bench_publish(uri: str, schema: str, frame: pd.DataFrame, repeats: int) -> float:
    """Best-of-n seconds for publish_partition (the first call also creates the partition; reruns replace it)."""
    best = float("inf")
    with open_warehouse(uri, schema=schema) as warehouse:
        warehouse.ensure_schema()
        for _ in range(repeats):
            started = time.perf_counter()
            warehouse.publish_partition(date(2026, 1, 1), frame, run_record(len(frame)))
            best = min(best, time.perf_counter() - started)
    return best


def bench_bare_duckdb(path: Path, frame: pd.DataFrame, repeats: int) -> float:
    import duckdb
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    best = float("inf")
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE OR REPLACE TABLE bare (user_id BIGINT, rank INTEGER, product_id BIGINT, score DOUBLE, sources TEXT, reason TEXT, run_id TEXT)")
        con.register("bare_arrow", table)
        for _ in range(repeats):
            con.execute("DELETE FROM bare")
            started = time.perf_counter()
            con.execute("INSERT INTO bare SELECT * FROM bare_arrow")
            best = min(best, time.perf_counter() - started)
    return best


def bench_bare_postgres(uri: str, schema: str, frame: pd.DataFrame, repeats: int) -> float:
    import psycopg
    import pyarrow as pa

    best = float("inf")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with psycopg.connect(uri) as con:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.bare (user_id BIGINT, rank INTEGER, product_id BIGINT, score DOUBLE PRECISION, sources TEXT, reason TEXT, run_id TEXT)"
        )
        con.commit()
        for _ in range(repeats):
            con.execute(f"TRUNCATE {schema}.bare")
            con.commit()
            started = time.perf_counter()
            with con.cursor() as cur, cur.copy(f"COPY {schema}.bare FROM STDIN (FORMAT csv)") as copy:
                copy_csv(copy, table)
            con.commit()
            best = min(best, time.perf_counter() - started)
    return best


def postgres_reachable(uri: str) -> bool:
    parts = urlsplit(uri)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), timeout=3):
            return True
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    frame = make_frame(args.users, args.k)
    rows = len(frame)
    results = {"rows": rows}
    print(f"publishing {rows:,} rows ({args.users:,} users x K={args.k}), best of {args.repeats}")
    print(f"{'backend':<12}{'publish rows/s':>18}{'bare load rows/s':>20}{'ratio':>8}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.duckdb"
        publish = bench_publish(f"duckdb:///{path}", "recsys", frame, args.repeats)
        bare = bench_bare_duckdb(path, frame, args.repeats)
        results["duckdb"] = {"publish_rows_per_s": rows / publish, "bare_rows_per_s": rows / bare, "ratio": bare / publish}
        print(f"{'duckdb':<12}{rows / publish:>18,.0f}{rows / bare:>20,.0f}{bare / publish:>8.2f}")

    if postgres_reachable(args.postgres):
        import psycopg

        schema = f"recsys_bench_{uuid.uuid4().hex[:8]}"
        try:
            publish = bench_publish(args.postgres, schema, frame, args.repeats)
            bare = bench_bare_postgres(args.postgres, schema, frame, args.repeats)
            results["postgres"] = {"publish_rows_per_s": rows / publish, "bare_rows_per_s": rows / bare, "ratio": bare / publish}
            print(f"{'postgres':<12}{rows / publish:>18,.0f}{rows / bare:>20,.0f}{bare / publish:>8.2f}")
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as con:
                con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    else:
        print(f"{'postgres':<12}  skipped: nothing listens at {args.postgres}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"(target: publish >= 0.5 x the bare load; figures written to {RESULTS})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
