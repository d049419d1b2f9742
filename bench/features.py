"""Benchmark: the Spark feature build at 1M and 10M events, full and incremental, against DuckDB SQL.

For each size: generate the synthetic landing zone (90 days by default), write clean Parquet per day
(DuckDB cast, no Great Expectations: validation is not what is measured), then time

* ``spark full``: ``build_features(mode="rebuild")``: every day's partial from the clean events, then
  the combine (what a first run, or a run after a settings change, costs);
* ``spark incremental``: the run of the last day when the other days' partials are stored (89 of 90):
  that day's partial, then the combine;
* ``spark one-shot``: ``mode="reference"``, the pre-incremental code path (every stage recomputed from
  the window's events), for comparison (``--skip-one-shot`` to leave it out);
* ``duckdb``: the same aggregations as DuckDB SQL over the same Parquet files, writing the same
  tables as Parquet, in a child process (so its memory is measured alone).

Prints wall time, events/s and peak RSS (the Python process and its children, i.e. the Spark driver
JVM, sampled every 100 ms), the ratios against the targets, and writes bench/results/features.json.

    .venv/bin/python bench/features.py [--sizes 1m,10m] [--work-dir /tmp/recsys-bench-features]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import psutil

RESULTS = Path(__file__).resolve().parent / "results" / "features.json"
GIB = 1024**3
#: ~2.2 events per user and day with the generator's defaults.
SIZES = {
    "1m": {"users": 5_200, "products": 5_000},
    "10m": {"users": 52_000, "products": 50_000},
}
END = date(2026, 6, 30)

log = logging.getLogger("bench.features")


class PeakRSS:
    """Peak resident memory of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        total = 0
        try:
            for proc in [self.process, *self.process.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


# ---- data ----------------------------------------------------------------------------------------
def prepare(data_dir: Path, users: int, products: int, days: int, seed: int) -> dict:
    """Generated raw CSV -> clean Parquet per day (cast with DuckDB); cached across runs in ``data_dir``."""
    import duckdb

    from recsys.data.synthetic import GeneratorConfig, generate

    info_path = data_dir / "bench_data.json"
    if info_path.exists():
        return json.loads(info_path.read_text())
    if data_dir.exists():
        shutil.rmtree(data_dir)
    started = time.perf_counter()
    summary = generate(data_dir, GeneratorConfig(users=users, products=products, days=days, seed=seed, end_date=END))
    generated_s = time.perf_counter() - started
    started = time.perf_counter()
    (data_dir / "clean").mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    varchar = ", ".join(f"'{c}': 'VARCHAR'" for c in
                        ("event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price", "user_id", "user_session"))
    con.execute(f"""
        COPY (
            SELECT strptime(event_time, '%Y-%m-%d %H:%M:%S UTC')::TIMESTAMPTZ AS event_time, event_type,
                   product_id::BIGINT AS product_id, category_id::BIGINT AS category_id,
                   nullif(category_code, '') AS category_code, nullif(brand, '') AS brand, price::DOUBLE AS price,
                   user_id::BIGINT AS user_id, user_session, ds
            FROM read_csv('{data_dir}/raw/events/*/events.csv', header = true, hive_partitioning = true,
                          hive_types = {{'ds': 'VARCHAR'}}, columns = {{{varchar}}})
        ) TO '{data_dir}/clean/events' (FORMAT parquet, PARTITION_BY (ds), COMPRESSION snappy)
    """)
    con.close()
    info = {
        "events": summary.events, "users": summary.users, "products": products, "days": days,
        "start": summary.start_date.isoformat(), "end": summary.end_date.isoformat(),
        "generate_s": round(generated_s, 1), "clean_parquet_s": round(time.perf_counter() - started, 1),
        "clean_parquet_mb": round(sum(f.stat().st_size for f in (data_dir / "clean" / "events").rglob("*.parquet")) / 1e6, 1),
    }
    info_path.write_text(json.dumps(info, indent=2))
    return info


# ---- DuckDB reference ----------------------------------------------------------------------------
def duckdb_build(data_dir: Path, out_dir: Path, ds: date, lookback_days: int, val_days: int, test_days: int,
                 half_life_days: float, gap_minutes: int, max_len: int, weights: dict[str, float]) -> dict:
    """The feature tables in DuckDB SQL: the same aggregations as the Spark job, written as Parquet."""
    import duckdb

    from recsys.features.transforms import stage_bounds

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    first = ds - timedelta(days=lookback_days - 1)
    started = time.perf_counter()
    con.execute(f"""
        CREATE TEMP TABLE ev AS
        SELECT DISTINCT event_time, event_type, product_id, category_id, category_code, brand, price, user_id,
               user_session, ds::DATE AS ds
        FROM read_parquet('{data_dir}/clean/events/*/*.parquet', hive_partitioning = true)
        WHERE ds::DATE BETWEEN DATE '{first}' AND DATE '{ds}' AND event_time::DATE = ds::DATE
    """)
    counts = {"events": con.execute("SELECT count(*) FROM ev").fetchone()[0]}
    weight = "CASE event_type " + " ".join(f"WHEN '{k}' THEN {float(v)}" for k, v in weights.items()) + " END"
    strength = "CASE event_type WHEN 'view' THEN 1 WHEN 'remove_from_cart' THEN 2 WHEN 'cart' THEN 3 WHEN 'purchase' THEN 4 END"
    order = "event_time, event_type, product_id, user_session"
    counts["sessions"] = con.execute(f"""
        SELECT sum(s) FROM (
            SELECT CASE WHEN lag(event_time) OVER w IS NULL
                          OR epoch(event_time) - epoch(lag(event_time) OVER w) > {gap_minutes * 60}
                          OR coalesce(lag(user_session) OVER w, '') <> coalesce(user_session, '') THEN 1 ELSE 0 END AS s
            FROM ev WINDOW w AS (PARTITION BY user_id ORDER BY {order}))
    """).fetchone()[0]

    def copy(sql: str, name: str) -> int:
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        con.execute(f"COPY ({sql}) TO '{path}.parquet' (FORMAT parquet)")
        return con.execute(f"SELECT count(*) FROM '{path}.parquet'").fetchone()[0]

    catalog = data_dir / "raw" / "catalog" / "products.csv"
    counts["items"] = copy(f"""
        WITH s AS (
            SELECT product_id, min(event_time) AS first_seen, count(*) AS n_events, count(DISTINCT user_id) AS n_users,
                   sum((event_type = 'purchase')::BIGINT) AS n_purchases,
                   arg_max({{'category_code': category_code, 'brand': brand, 'price': price}},
                           (event_time, event_type, price, category_code, brand)) AS latest
            FROM ev GROUP BY product_id),
        c AS (SELECT * FROM read_csv('{catalog}', header = true,
              columns = {{'product_id': 'BIGINT', 'title': 'VARCHAR', 'description': 'VARCHAR', 'category_code': 'VARCHAR',
                         'brand': 'VARCHAR', 'price': 'DOUBLE'}})),
        j AS (
            SELECT coalesce(s.product_id, c.product_id) AS product_id,
                   coalesce(c.category_code, s.latest.category_code) AS category_code,
                   coalesce(c.brand, s.latest.brand) AS brand, coalesce(s.latest.price, c.price) AS price,
                   c.title, c.description, s.first_seen, coalesce(s.n_events, 0) AS n_events,
                   coalesce(s.n_users, 0) AS n_users, coalesce(s.n_purchases, 0) AS n_purchases
            FROM s FULL OUTER JOIN c ON s.product_id = c.product_id)
        SELECT *, trim(concat_ws(' ', title, description, regexp_replace(coalesce(category_code, ''), '[._]', ' ', 'g'), brand)) AS text,
               split_part(coalesce(category_code, 'unknown'), '.', 1) AS top_category
        FROM j ORDER BY product_id""", "items")
    for stage, (history_end, target_end) in stage_bounds(ds, val_days, test_days).items():
        h = f"DATE '{history_end}'"
        stage_counts = {}
        stage_counts["interactions"] = copy(f"""
            SELECT user_id, product_id, sum(w * d) AS weight, count(*) AS n_events, max(event_time) AS last_event_time,
                   bool_or(event_type = 'purchase') AS purchased
            FROM (SELECT *, {weight} AS w,
                         pow(0.5, greatest(epoch({h}::TIMESTAMPTZ) - epoch(event_time), 0) / 86400.0 / {half_life_days}) AS d
                  FROM ev WHERE ds < {h})
            GROUP BY user_id, product_id HAVING sum(w * d) > 1e-9 * sum(abs(w) * d)
            ORDER BY user_id, product_id""", f"{stage}/interactions")
        stage_counts["sequences"] = copy(f"""
            WITH o AS (
                SELECT user_id, product_id, event_type, {strength} AS strength,
                       CASE WHEN lag(product_id) OVER w IS DISTINCT FROM product_id THEN 1 ELSE 0 END AS start, event_time,
                       row_number() OVER w AS rn
                FROM ev WHERE ds < {h} WINDOW w AS (PARTITION BY user_id ORDER BY event_time, event_type, product_id)),
            r AS (SELECT *, sum(start) OVER (PARTITION BY user_id ORDER BY rn ROWS UNBOUNDED PRECEDING) AS step FROM o),
            st AS (SELECT user_id, step, any_value(product_id) AS product_id, arg_max(event_type, strength) AS event_type
                   FROM r GROUP BY user_id, step),
            l AS (SELECT user_id, list(product_id ORDER BY step) AS p, list(event_type ORDER BY step) AS t, count(*) AS n
                  FROM st GROUP BY user_id)
            SELECT user_id, list_slice(p, greatest(n - {max_len} + 1, 1), n) AS product_ids,
                   list_slice(t, greatest(n - {max_len} + 1, 1), n) AS event_types, least(n, {max_len})::INTEGER AS length
            FROM l ORDER BY user_id""", f"{stage}/sequences")
        stage_counts["seen"] = copy(f"SELECT DISTINCT user_id, product_id FROM ev WHERE ds < {h} ORDER BY ALL", f"{stage}/seen")
        if target_end is not None:
            t = f"DATE '{target_end}'"
            stage_counts["targets"] = copy(f"""
                SELECT DISTINCT f.user_id, f.product_id FROM ev f
                WHERE f.ds >= {h} AND f.ds < {t}
                  AND f.user_id IN (SELECT user_id FROM ev WHERE ds < {h})
                  AND NOT EXISTS (SELECT 1 FROM ev p WHERE p.ds < {h} AND p.user_id = f.user_id AND p.product_id = f.product_id)
                ORDER BY ALL""", f"{stage}/targets")
        counts[stage] = stage_counts
    counts["wall_s"] = time.perf_counter() - started
    con.close()
    return counts


def run_duckdb_child(args_json: str) -> None:
    spec = json.loads(args_json)
    result = duckdb_build(
        Path(spec["data_dir"]), Path(spec["out_dir"]), date.fromisoformat(spec["ds"]), spec["lookback_days"],
        spec["val_days"], spec["test_days"], spec["half_life_days"], spec["gap_minutes"], spec["max_len"], spec["weights"],
    )
    print(json.dumps(result, default=str))


def time_duckdb(settings, data_dir: Path, ds: date) -> dict:
    spec = {
        "data_dir": str(data_dir), "out_dir": str(data_dir / "duckdb_features"), "ds": ds.isoformat(),
        "lookback_days": settings.lookback_days, "val_days": settings.val_days, "test_days": settings.test_days,
        "half_life_days": settings.half_life_days, "gap_minutes": settings.session_gap_minutes,
        "max_len": settings.sequence_length, "weights": settings.event_weights.as_dict(),
    }
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, "--duckdb-child", json.dumps(spec)], stdout=subprocess.PIPE, text=True)
    with PeakRSS(child.pid) as peak:
        out, _ = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"DuckDB child failed with {child.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    return {"wall_s": time.perf_counter() - started, "query_s": result.pop("wall_s"), "peak_rss": peak.peak, "counts": result}


# ---- Spark -----------------------------------------------------------------------------------------
def time_spark(spark, settings, ds: date, mode: str) -> dict:
    from recsys.features.build import build_features

    started = time.perf_counter()
    with PeakRSS(psutil.Process().pid) as peak:
        summary = build_features(spark, settings, ds, mode=mode)
    return {"wall_s": time.perf_counter() - started, "peak_rss": peak.peak, "summary": summary}


def drop_partials_of(settings, day: date) -> None:
    from recsys.features import partials as P
    from recsys.features.build import partial_store

    store = partial_store(settings)
    for table in P.PARTIAL_TABLES:
        shutil.rmtree(store.day(table, day), ignore_errors=True)
    store.manifest(day).unlink(missing_ok=True)


def same_counts(spark_summary: dict, duck: dict) -> bool:
    keys = ("interactions", "sequences", "seen", "targets")
    if spark_summary["events"] != duck["events"] or spark_summary["items"] != duck["items"]:
        return False
    if spark_summary["sessions"] != duck["sessions"]:
        return False
    return all(spark_summary[s].get(k) == duck[s].get(k) for s in ("val", "test", "full") for k in keys)


def bench_size(name: str, args, spark_holder: dict) -> dict:
    from recsys.config import Settings
    from recsys.features.spark import get_spark

    spec = SIZES[name]
    data_dir = args.work_dir / f"{name}_u{spec['users']}_p{spec['products']}_d{args.days}"
    started = time.perf_counter()
    # In a child process: the generator's arrays must not count in this process's memory figures.
    subprocess.run(
        [sys.executable, __file__, "--prepare-child",
         json.dumps([str(data_dir), spec["users"], spec["products"], args.days, args.seed])],
        check=True,
    )
    info = json.loads((data_dir / "bench_data.json").read_text())
    print(f"\n[{name}] {info['events']:,} events, {info['users']:,} users, {info['products']:,} products, {info['days']} days "
          f"({info['start']}..{info['end']}); clean Parquet {info['clean_parquet_mb']:,.0f} MB "
          f"(prepared in {time.perf_counter() - started:.0f}s)", flush=True)
    settings = Settings(data_dir=data_dir, spark_master=args.master, lookback_days=args.days,
                        spark_driver_memory=args.driver_memory)
    ds = date.fromisoformat(info["end"])
    shutil.rmtree(settings.features_dir, ignore_errors=True)

    if "spark" not in spark_holder:
        started = time.perf_counter()
        with PeakRSS(psutil.Process().pid):
            spark = get_spark(settings, app_name="bench-features")
            spark.range(1).count()
        spark_holder["spark"] = spark
        spark_holder["startup_s"] = time.perf_counter() - started
        print(f"Spark session ({args.master}, driver memory {args.driver_memory}) up in {spark_holder['startup_s']:.1f}s", flush=True)
    spark = spark_holder["spark"]

    phases = {}
    phases["spark_full"] = time_spark(spark, settings, ds, "rebuild")
    print(f"  spark full          {phases['spark_full']['wall_s']:8.1f}s", flush=True)
    drop_partials_of(settings, ds)
    phases["spark_incremental"] = time_spark(spark, settings, ds, "incremental")
    print(f"  spark incremental   {phases['spark_incremental']['wall_s']:8.1f}s "
          f"(built {phases['spark_incremental']['summary']['partials']['built']}, "
          f"reused {phases['spark_incremental']['summary']['partials']['reused']})", flush=True)
    if not args.skip_one_shot:
        phases["spark_one_shot"] = time_spark(spark, settings, ds, "reference")
        print(f"  spark one-shot      {phases['spark_one_shot']['wall_s']:8.1f}s", flush=True)
    phases["duckdb"] = time_duckdb(settings, data_dir, ds)
    print(f"  duckdb              {phases['duckdb']['wall_s']:8.1f}s", flush=True)

    events = phases["spark_full"]["summary"]["events"]
    result = {
        "data": info,
        "window_events": events,
        "stored_days_for_incremental": phases["spark_incremental"]["summary"]["partials"]["reused"],
        "counts_agree_with_duckdb": same_counts(phases["spark_full"]["summary"], phases["duckdb"]["counts"]),
        "phases": {
            k: {"wall_s": round(v["wall_s"], 2), "events_per_s": round(events / v["wall_s"]), "peak_rss_gib": round(v["peak_rss"] / GIB, 2)}
            for k, v in phases.items()
        },
    }
    full, inc, duck = (phases[k]["wall_s"] for k in ("spark_full", "spark_incremental", "duckdb"))
    result["ratios"] = {"spark_full_over_duckdb": round(full / duck, 2), "incremental_over_full": round(inc / full, 3)}
    if "spark_one_shot" in phases:
        result["ratios"]["spark_one_shot_over_duckdb"] = round(phases["spark_one_shot"]["wall_s"] / duck, 2)
    return result


def print_table(results: dict, startup_s: float) -> None:
    print()
    print(f"{'size':<5} {'phase':<20} {'wall s':>8} {'events/s':>12} {'peak RSS GiB':>13}")
    labels = {"spark_full": "spark full", "spark_incremental": "spark incremental", "spark_one_shot": "spark one-shot",
              "duckdb": "duckdb (SQL)"}
    for name, result in results.items():
        for phase, row in result["phases"].items():
            print(f"{name:<5} {labels[phase]:<20} {row['wall_s']:>8.1f} {row['events_per_s']:>12,} {row['peak_rss_gib']:>13.2f}")
    print()
    for name, result in results.items():
        r = result["ratios"]
        line = (f"{name}: {result['window_events']:,} events; spark full / duckdb = {r['spark_full_over_duckdb']:.2f} (target <= 3); "
                f"incremental / full = {r['incremental_over_full']:.3f} (target < 0.2; {result['stored_days_for_incremental']} stored days)")
        if "spark_one_shot_over_duckdb" in r:
            line += f"; one-shot / duckdb = {r['spark_one_shot_over_duckdb']:.2f}"
        line += f"; table row counts agree with DuckDB: {'yes' if result['counts_agree_with_duckdb'] else 'NO'}"
        print(line)
    print(f"(Spark session start-up, not in the figures: {startup_s:.1f}s; peak RSS = Python + driver JVM, or the DuckDB process)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1m,10m", help=f"comma-separated, from: {', '.join(SIZES)}")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--driver-memory", default="4g", help="Spark driver (local mode: the whole JVM) heap")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/recsys-bench-features"))
    parser.add_argument("--skip-one-shot", action="store_true")
    parser.add_argument("--duckdb-child", help=argparse.SUPPRESS)
    parser.add_argument("--prepare-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"--sizes: unknown size(s) {', '.join(unknown)}; choose from {', '.join(SIZES)} (e.g. --sizes 10m)")
    if args.prepare_child:
        data_dir, users, products, days, seed = json.loads(args.prepare_child)
        prepare(Path(data_dir), users, products, days, seed)
        return 0
    if args.duckdb_child:
        run_duckdb_child(args.duckdb_child)
        return 0
    logging.basicConfig(level=logging.WARNING)
    spark_holder: dict = {}
    results = {}
    try:
        for name in sizes:
            results[name] = bench_size(name, args, spark_holder)
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps({"startup_s": spark_holder.get("startup_s"), "sizes": results}, indent=2))
    finally:
        if "spark" in spark_holder:
            spark_holder["spark"].stop()
    print_table(results, spark_holder.get("startup_s", 0.0))
    print(f"figures written to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
