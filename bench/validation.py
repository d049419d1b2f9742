"""Benchmark: validating a first run's history, one day at a time vs all the days in one pass.

Generates a synthetic landing zone (30 days by default, with a few bad rows per day), copies it, then
validates every day of it twice in one Spark session (``local[2]``), each run on its own copy:

* ``one by one``: :func:`recsys.quality.validation.validate_day` per day, which is how history days were
  validated before ``validate_days`` existed (and how a run's own day still is, with Data Docs);
* ``one pass``: :func:`recsys.quality.validation.validate_days` over all of them.

A warm-up day (validated and thrown away) starts the JVM and Great Expectations first. The order of the
two runs alternates over ``--repeats``. For each run it prints the wall time and seconds per day, and it
checks that both runs produced the same counts for every day.

    .venv/bin/python bench/validation.py [--days 30 --users 3000 --products 400] [--repeats 2]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from recsys.config import Settings
    from recsys.data.synthetic import GeneratorConfig, generate
    from recsys.features.spark import get_spark
    from recsys.quality.validation import ValidationReport, validate_day, validate_days

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--users", type=int, default=3_000)
    parser.add_argument("--products", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/recsys-bench-validation"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")

    shutil.rmtree(args.work_dir, ignore_errors=True)
    landing = args.work_dir / "landing"
    summary = generate(landing, GeneratorConfig(users=args.users, products=args.products, days=args.days, seed=7,
                                                end_date=date(2026, 6, 30), bad_rows_fraction=0.003))
    days = [summary.end_date - timedelta(days=n) for n in range(args.days - 1, -1, -1)]
    print(f"landing zone: {summary.events:,} events over {len(days)} days", flush=True)
    settings = Settings(data_dir=landing, spark_master="local[2]", spark_shuffle_partitions=2)
    spark = get_spark(settings, app_name="bench-validation")

    def folders(run: str) -> dict:
        root = args.work_dir / run
        shutil.rmtree(root, ignore_errors=True)
        return dict(raw_events_dir=landing / "raw" / "events", clean_events_dir=root / "clean", quarantine_dir=root / "quarantine",
                    reports_dir=root / "reports", max_quarantine_fraction=0.05)

    validate_day(spark, days[0], **folders("warm-up"))

    def one_by_one() -> dict:
        where = folders("one-by-one")
        return {day: validate_day(spark, day, **where) for day in days}

    def one_pass() -> dict:
        return validate_days(spark, days, **folders("one-pass"))

    seconds: dict[str, list[float]] = {"one by one": [], "one pass": []}
    outcomes = {}
    for repeat in range(args.repeats):
        order = [("one by one", one_by_one), ("one pass", one_pass)]
        for name, run in order if repeat % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            outcomes[name] = run()
            seconds[name].append(time.perf_counter() - started)
            print(f"  {name:<11} {seconds[name][-1]:6.1f} s", flush=True)

    counts = {name: {day: (r.raw_rows, r.clean_rows, r.quarantined_rows) if isinstance(r, ValidationReport) else str(r)
                     for day, r in result.items()} for name, result in outcomes.items()}
    same = counts["one by one"] == counts["one pass"]
    raw = sum(c[0] for c in counts["one pass"].values() if isinstance(c, tuple))
    print(f"\n{len(days)} days, {raw:,} raw rows; same counts for every day in both runs: {same}")
    print(f"{'run':<12}{'median s':>10}{'s per day':>11}")
    for name, values in seconds.items():
        print(f"{name:<12}{statistics.median(values):>10.1f}{statistics.median(values) / len(days):>11.2f}")
    print(f"one pass / one by one: {statistics.median(seconds['one pass']) / statistics.median(seconds['one by one']):.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
