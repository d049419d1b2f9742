"""Benchmark: publish one day of recommendations (default 100k users x K=20 = 2M rows) to the warehouse.

For DuckDB and PostgreSQL, prints the rows/s of ``Warehouse.publish_partition`` (validation, staging,
atomic swap, run record) beside a bare bulk load of the same rows into a plain, unconstrained table of
the same database, and the ratio (target >= 0.5). The bare loads are the fastest plain ways found:
DuckDB: INSERT from a registered Arrow table; PostgreSQL: COPY FROM STDIN fed CSV written by pyarrow in
large chunks (``recsys.warehouse.writer.copy_csv``, the same feed the writer uses; about 2x psycopg's
per-row ``write_row``).

The rows are converted to one Arrow table before any clock starts, and the bare loads and the headline
publish row both start from it, as the pipeline's publish task does (it reads the fuse task's Parquet with
``pq.read_table``). A second row per backend times publish_partition from the pandas frame, conversion to
Arrow included, so what a DataFrame caller pays stays visible.

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
import pyarrow as pa

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


def bench_publish(uri: str, schema: str, sources: dict[str, pd.DataFrame | pa.Table], repeats: int) -> dict[str, float]:
    """Best-of-n seconds for publish_partition of each source's rows (the first call creates the partition,
    the others replace it); the sources take turns, so a burst of load beside the bench hits them alike."""
    best = dict.fromkeys(sources, float("inf"))
    with open_warehouse(uri, schema=schema) as warehouse:
        warehouse.ensure_schema()
        for _ in range(repeats):
            for source, rows in sources.items():
                started = time.perf_counter()
                warehouse.publish_partition(date(2026, 1, 1), rows, run_record(len(rows)))
                best[source] = min(best[source], time.perf_counter() - started)
    return best


def bench_bare_duckdb(path: Path, table: pa.Table, repeats: int) -> float:
    import duckdb

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


def bench_bare_postgres(uri: str, schema: str, table: pa.Table, repeats: int) -> float:
    import psycopg

    best = float("inf")
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


def compare(results: dict, backend: str, rows: int, bare: float, publish: dict[str, float]) -> None:
    """Print and record publish (from Arrow, then from pandas) against the bare load, all in seconds."""
    results[backend] = {
        "bare_rows_per_s": rows / bare,
        "publish_rows_per_s": rows / publish["arrow"],
        "ratio": bare / publish["arrow"],
        "publish_from_pandas_rows_per_s": rows / publish["pandas"],
        "ratio_from_pandas": bare / publish["pandas"],
    }
    for source, seconds in publish.items():
        label = backend if source == "arrow" else f"{backend} (pandas)"
        print(f"{label:<20}{rows / seconds:>16,.0f}{rows / bare:>20,.0f}{bare / seconds:>8.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    frame = make_frame(args.users, args.k)
    table = pa.Table.from_pandas(frame, preserve_index=False)  # before any clock: what the bare loads start from
    sources = {"arrow": table, "pandas": frame}
    rows = len(frame)
    results = {"rows": rows}
    print(f"publishing {rows:,} rows ({args.users:,} users x K={args.k}), best of {args.repeats}")
    print(f"{'backend (from)':<20}{'publish rows/s':>16}{'bare load rows/s':>20}{'ratio':>8}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.duckdb"
        publish = bench_publish(f"duckdb:///{path}", "recsys", sources, args.repeats)
        compare(results, "duckdb", rows, bench_bare_duckdb(path, table, args.repeats), publish)

    if postgres_reachable(args.postgres):
        import psycopg

        schema = f"recsys_bench_{uuid.uuid4().hex[:8]}"
        try:
            publish = bench_publish(args.postgres, schema, sources, args.repeats)
            compare(results, "postgres", rows, bench_bare_postgres(args.postgres, schema, table, args.repeats), publish)
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as con:
                con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    else:
        print(f"{'postgres':<20}  skipped: nothing listens at {args.postgres}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"(target: publish >= 0.5 x the bare load; figures written to {RESULTS})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
