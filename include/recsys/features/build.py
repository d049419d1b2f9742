"""The ``build_features`` job: extract the window's events (as stored daily partials), transform, load Parquet.

Layout written under ``features/ds=YYYY-MM-DD/``::

    items/                      one row per product (text, category, popularity counts)
    <stage>/interactions/       (user, product, weight, n_events, last_event_time, purchased)
    <stage>/sequences/          (user, product_ids[], event_types[], length)
    <stage>/seen/               (user, product) every pair with any event: what exclude_seen removes
    <stage>/targets/            (user, product) new items in the scored slice (val and test only)
    summary.json                row counts and the stage boundaries

with the stages of :data:`recsys.constants.STAGES`.

Incremental by default. Each day's clean events are reduced once to small partial aggregates
(:mod:`recsys.features.partials`), stored under ``features/partials/<table>/ds=YYYY-MM-DD/`` with a
manifest ``features/partials/_manifests/ds=YYYY-MM-DD.json`` that records the fingerprint of the
clean partition it was computed from (file names, sizes, modification times) and the settings it
depends on. A run for ``ds`` (re)computes the partials of the window days that have none, whose
clean partition changed since (a re-validated or backfilled day), or whose settings differ, all in
one Spark job, then combines the window's partials. A backfill of an old day therefore rewrites that
day's partials only. ``mode="rebuild"`` recomputes every partial of the window; ``mode="reference"``
is the one-shot computation over the clean events (no partials read or written), which the
incremental result must equal table by table (``tests/integration/test_features_incremental.py``).

The combine is one aggregation of the window's ``pairs`` partials into (user, product) figures of
every stage side by side, cached range-partitioned by user and sorted by (user, product), from which
every stage's interactions, seen and targets are written with no shuffle and no sort; the sequences
(from the ``steps`` partials) and the session count run beside it. Each stage's rows change every day
(the window slides and the decay is relative to the stage's cut-off), so a run rewrites them all: the
cost of a one-day incremental run is that combine, bounded by the rows written, not the partials read.

Runs of the DAG are serialised (``max_active_runs=1``), so two runs never write the same day's
partials at once; a day's partials are written to a staging folder and moved into place, and its
manifest is written last, so a run that dies half-way leaves the day marked for recomputation.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.constants import RAW_COLUMNS, STAGES
from recsys.errors import FeatureBuildError
from recsys.features import partials as P
from recsys.features import transforms as T
from recsys.features.transforms import day_start
from recsys.features.spark import session_conf

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from recsys.config import Settings

log = logging.getLogger(__name__)

MODES = ("incremental", "rebuild", "reference")
#: Parquet bytes read per shuffle partition: columnar input grows ~4x once decoded into shuffle rows,
#: so this keeps shuffle partitions near AQE's 64 MB advisory size before it coalesces them.
INPUT_BYTES_PER_SHUFFLE_PARTITION = 16 * 1024 * 1024
MAX_SHUFFLE_PARTITIONS = 2000


@dataclass(frozen=True)
class FeaturePaths:
    root: Path

    @property
    def items(self) -> Path:
        return self.root / "items"

    def stage(self, stage: str, table: str) -> Path:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
        return self.root / stage / table

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"


def feature_paths(settings: "Settings", ds: date) -> FeaturePaths:
    return FeaturePaths(settings.features_dir / f"ds={ds.isoformat()}")


@dataclass(frozen=True)
class PartialStore:
    """Where the daily partials live: ``<root>/<table>/ds=YYYY-MM-DD/`` plus one manifest per day."""

    root: Path

    def table(self, table: str) -> Path:
        return self.root / table

    def day(self, table: str, day: date) -> Path:
        return self.root / table / f"ds={day.isoformat()}"

    def manifest(self, day: date) -> Path:
        return self.root / "_manifests" / f"ds={day.isoformat()}.json"

    @property
    def staging(self) -> Path:
        return self.root / "_staging"


def partial_store(settings: "Settings") -> PartialStore:
    return PartialStore(settings.features_dir / "partials")


# ---- extract ------------------------------------------------------------------------------------
def window_days(ds: date, lookback_days: int) -> list[date]:
    """The days ``ds - lookback_days + 1 .. ds``, oldest first."""
    return [ds - timedelta(days=offset) for offset in range(lookback_days - 1, -1, -1)]


def clean_day_dirs(clean_events_dir: Path, days: list[date]) -> dict[date, Path]:
    """The clean partitions of ``days`` that exist on disk (any ``ds=`` folder tree: raw ones too)."""
    folders = {d: Path(clean_events_dir) / f"ds={d.isoformat()}" for d in days}
    return {d: folder for d, folder in folders.items() if folder.is_dir()}


def _require_clean(present: dict, clean_events_dir: Path, ds: date, lookback_days: int) -> None:
    if not present:
        raise FeatureBuildError(
            f"no clean events in {clean_events_dir} for the {lookback_days} days up to ds={ds}. "
            "Run validate_raw for those days first (a backfill validates each day)."
        )


def read_clean_days(spark: "SparkSession", clean_events_dir: Path, folders: list[Path]) -> "DataFrame":
    """Clean events of the given day folders, with their day as column ``ds``; off-day rows dropped."""
    events = spark.read.option("basePath", str(clean_events_dir)).parquet(*[str(f) for f in folders])
    return T.on_partition_day(events.withColumn("ds", events["ds"].cast("date")))


def extract_events(spark: "SparkSession", clean_events_dir: Path, ds: date, lookback_days: int) -> "DataFrame":
    """Clean events of the days ``ds - lookback_days + 1 .. ds`` that exist on disk (column ``ds``: their day)."""
    present = clean_day_dirs(clean_events_dir, window_days(ds, lookback_days))
    _require_clean(present, clean_events_dir, ds, lookback_days)
    log.info("reading %d day(s) of clean events (lookback %d days)", len(present), lookback_days)
    return read_clean_days(spark, clean_events_dir, list(present.values()))


def extract_catalog(spark: "SparkSession", catalog_path: Path) -> "DataFrame | None":
    if not Path(catalog_path).is_file():
        log.info("no catalog at %s: item text comes from category_code and brand", catalog_path)
        return None
    schema = "product_id long, title string, description string, category_code string, brand string, price double"
    return spark.read.option("header", True).option("multiLine", True).option("escape", '"').schema(schema).csv(str(catalog_path))


def extract_partials(spark: "SparkSession", store: PartialStore, table: str, days: list[date]) -> "DataFrame":
    """The stored partial ``table`` of ``days`` (a day without rows has no folder: an empty frame then)."""
    folders = [str(store.day(table, d)) for d in days if store.day(table, d).is_dir()]
    schema = P.PARTIAL_SCHEMAS[table]
    if not folders:
        return spark.createDataFrame([], schema)
    return spark.read.schema(schema).option("basePath", str(store.table(table))).parquet(*folders)


def _size_of(folders) -> int:
    return sum(f.stat().st_size for folder in folders for f in Path(folder).rglob("*") if f.is_file())


def raw_window_mb(raw_events_dir: Path, ds: date, lookback_days: int) -> float:
    """Size in MB of the raw event files of the ``lookback_days`` ending at ``ds``: a run's scale, known before
    Spark starts (recsys.features.spark.quick_jit)."""
    return _size_of(clean_day_dirs(raw_events_dir, window_days(ds, lookback_days)).values()) / 2**20


def clean_fingerprint(folder: Path) -> str:
    """What identifies a clean partition's content: its files' names, sizes and modification times."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _partial_params(settings: "Settings") -> dict:
    return {
        "version": P.PARTIALS_VERSION,
        "half_life_days": float(settings.half_life_days),
        "session_gap_minutes": int(settings.session_gap_minutes),
    }


def stale_days(store: PartialStore, clean: dict[date, Path], settings: "Settings") -> list[date]:
    """Days of ``clean`` whose stored partials are missing, incomplete, from other settings, or older than the clean data."""
    params = _partial_params(settings)
    stale = []
    for day, folder in sorted(clean.items()):
        path = store.manifest(day)
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            stale.append(day)
            continue
        if (
            manifest.get("params") != params
            or manifest.get("clean_fingerprint") != clean_fingerprint(folder)
            or not all(store.day(table, day).is_dir() for table in manifest.get("tables", P.PARTIAL_TABLES))
        ):
            stale.append(day)
    return stale


# ---- transform + load: partials ----------------------------------------------------------------
def run_concurrently(tasks: dict, barrier=None, after_barrier: dict | None = None) -> dict:
    """Run independent Spark actions side by side (one driver thread each) and return their results.

    Each write is a job with driver-side phases (planning, file commits) and stages that leave
    cores idle; submitting them together lets the scheduler fill those gaps. ``barrier`` (optional)
    runs in the calling thread while ``tasks`` run, and ``after_barrier`` tasks start once it is
    done: e.g. materialise a cache that they all read, while the jobs that do not read it proceed.
    """
    after_barrier = after_barrier or {}
    if barrier is None and len(tasks) + len(after_barrier) <= 1:
        return {name: task() for name, task in {**tasks, **after_barrier}.items()}
    workers = max(1, len(tasks) + len(after_barrier))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="features") as pool:
        futures = {name: pool.submit(task) for name, task in tasks.items()}
        if barrier is not None:
            barrier()
        futures.update({name: pool.submit(task) for name, task in after_barrier.items()})
        return {name: future.result() for name, future in futures.items()}


@contextlib.contextmanager
def shuffle_partitions(spark: "SparkSession", input_bytes: int, floor: int):
    """Size ``spark.sql.shuffle.partitions`` from the input (AQE then coalesces small ones); restore it after.

    Also lists up to a few hundred day folders in the driver instead of a Spark job per read
    (a 90-day window is 90 paths; the default threshold of 32 would start a listing job each time).
    """
    parallelism = spark.sparkContext.defaultParallelism
    wanted = max(floor, parallelism, math.ceil(input_bytes / INPUT_BYTES_PER_SHUFFLE_PARTITION))
    wanted = min(MAX_SHUFFLE_PARTITIONS, math.ceil(wanted / parallelism) * parallelism)
    confs = {"spark.sql.shuffle.partitions": str(wanted), "spark.sql.sources.parallelPartitionDiscovery.threshold": "400"}
    log.info("shuffle partitions: %d for %.1f MB of input", wanted, input_bytes / 1e6)
    with session_conf(spark, confs):
        yield wanted


def build_partials(spark: "SparkSession", settings: "Settings", store: PartialStore, clean: dict[date, Path]) -> None:
    """Compute and store the partials of the given days from their clean events, in one Spark job per table."""
    days = sorted(clean)
    for day in days:  # from here until its manifest is rewritten, the day counts as stale
        store.manifest(day).unlink(missing_ok=True)
    events = read_clean_days(spark, settings.clean_events_dir, [clean[d] for d in days])
    # One shuffle by day: deduplication, the per-(day, user) windows and the per-(day, ...) aggregates
    # all need nothing else, and each day lands in one task, so one file per day and table.
    events = P.with_day_order(
        events.repartition("ds").dropDuplicates(["ds", *RAW_COLUMNS]).drop("category_id"), settings.session_gap_minutes
    ).persist()
    staging = store.staging / uuid.uuid4().hex
    try:
        events.count()  # materialise the cache once, before the writes read it side by side
        frames = P.day_partials(events, settings.half_life_days, settings.session_gap_minutes)
        run_concurrently({
            table: (lambda frame=frame, table=table: frame.write.mode("overwrite").partitionBy("ds").parquet(str(staging / table)))
            for table, frame in frames.items()
        })
        events.unpersist()
        now = datetime.now(timezone.utc).isoformat()
        for day in days:
            tables = []
            for table in P.PARTIAL_TABLES:
                target = store.day(table, day)
                if target.exists():
                    shutil.rmtree(target)
                source = staging / table / f"ds={day.isoformat()}"
                if source.is_dir():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(source, target)
                    tables.append(table)
            manifest = {
                "ds": day.isoformat(),
                "params": _partial_params(settings),
                "clean_path": str(clean[day]),
                "clean_fingerprint": clean_fingerprint(clean[day]),
                "tables": tables,
                "built_at": now,
            }
            path = store.manifest(day)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(manifest, indent=2))
            os.replace(tmp, path)
    finally:
        events.unpersist()
        shutil.rmtree(staging, ignore_errors=True)


# ---- load ---------------------------------------------------------------------------------------
def rows_in(path: Path) -> int:
    """Rows of a written Parquet folder, from the file footers (no Spark job)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in Path(path).glob("*.parquet"))


def _write(frame: "DataFrame", path: Path, order_by: list[str]) -> int:
    # Sorted, one file: small outputs stay deterministic and quick to read with pandas.
    frame.repartition(1).sortWithinPartitions(*order_by).write.mode("overwrite").parquet(str(path))
    return rows_in(path)


def _write_stages(frames: dict[str, "DataFrame"], paths: FeaturePaths, table: str, order_by: list[str],
                  stacked: "DataFrame | None" = None) -> dict[str, int]:
    """Write one table of several stages: ``<stage>/<table>/`` for each stage.

    The inputs are range-partitioned by user, so sorted partitions give files that are each sorted
    and in order: the rows of one sorted file, without a global sort. Frames read from a cache that
    is already sorted that way (see :func:`combine`) are written as they are, one plain write per
    stage: the sort below is then removed by Spark's planner, and no stage column is added. A
    ``stacked`` frame (every stage's rows with a ``stage`` column, e.g. exploded from one row per
    user) is written in one job partitioned by stage instead.
    """
    if stacked is None:
        counts = {}
        for stage, frame in frames.items():
            target = paths.stage(stage, table)
            frame.sortWithinPartitions(*order_by).write.mode("overwrite").parquet(str(target))
            counts[stage] = rows_in(target)
        return counts
    staging = paths.root / "_stages" / table
    stacked.sortWithinPartitions("stage", *order_by).write.mode("overwrite").partitionBy("stage").parquet(str(staging))
    counts = {}
    for stage, frame in frames.items():
        target = paths.stage(stage, table)
        target.parent.mkdir(parents=True, exist_ok=True)
        source = staging / f"stage={stage}"
        if source.is_dir():
            os.replace(source, target)
        else:  # no rows: still a readable, typed, empty table
            frame.limit(0).write.mode("overwrite").parquet(str(target))
        counts[stage] = rows_in(target)
    shutil.rmtree(staging)
    return counts


def _check_stage(ds: date, stage: str, stage_counts: dict, settings: "Settings") -> None:
    if "targets" not in stage_counts:
        return
    if stage_counts["targets"] == 0 or stage_counts["interactions"] == 0:
        raise FeatureBuildError(
            f"ds={ds}: stage '{stage}' has {stage_counts['interactions']} training interactions and "
            f"{stage_counts.get('targets')} held-out targets. The lookback window needs more than "
            f"{settings.val_days + settings.test_days} days of events (validation + test days): "
            "land more history, or lower RECSYS_VAL_DAYS / RECSYS_TEST_DAYS."
        )


def _stage_counts(bounds, stage: str) -> dict:
    history_end, target_end = bounds[stage]
    counts = {"history_end_exclusive": history_end.isoformat()}
    if target_end is not None:
        counts["target_end_exclusive"] = target_end.isoformat()
    return counts


def combine(spark: "SparkSession", settings: "Settings", store: PartialStore, days: list[date], ds: date,
            paths: FeaturePaths, catalog: "DataFrame | None") -> dict:
    """Write every feature table of ``ds`` from the stored partials of ``days`` (the window's clean days)."""
    from pyspark.sql import functions as F

    bounds = T.stage_bounds(ds, settings.val_days, settings.test_days)
    weights = settings.event_weights.as_dict()
    counts: dict = {}

    # (user, product) figures of every stage in one pass, range-partitioned by user so the aggregation
    # and the writes need no further shuffle, and cached sorted by (user, product): sorted once here,
    # every stage's interactions, seen and targets are written from it with no sort of their own.
    pairs = extract_partials(spark, store, "pairs", days).repartitionByRange("user_id")
    stats = P.pair_stats(pairs, weights, settings.half_life_days, bounds).sortWithinPartitions("user_id", "product_id").persist()
    steps = extract_partials(spark, store, "steps", days).repartitionByRange("user_id").sortWithinPartitions("user_id", "ds", "step")
    per_user = P.stage_sequences(steps, bounds, settings.sequence_length)  # read once, by one job: no cache
    items = extract_partials(spark, store, "items", days)
    try:
        pair_order = ["user_id", "product_id"]
        # The jobs that do not read the cached stats (the sequences read the steps partials) start at
        # once, beside the job that fills the cache; the writes of the stats tables follow it.
        results = run_concurrently(
            {
                "events": lambda: int(items.agg(F.coalesce(F.sum("n_events"), F.lit(0))).first()[0]),
                "sessions": lambda: int(
                    P.combine_sessions(extract_partials(spark, store, "sessions", days), settings.session_gap_minutes).first()[0]
                ),
                "sequences": lambda: _write_stages(
                    {s: P.sequences_of_stage(per_user, s, settings.sequence_length) for s in STAGES}, paths, "sequences",
                    ["user_id"], stacked=P.stacked_sequences(per_user, STAGES, settings.sequence_length),
                ),
            },
            barrier=stats.count,
            after_barrier={
                "items": lambda: _write(P.combine_items(items, stats, catalog), paths.items, ["product_id"]),
                "interactions": lambda: _write_stages(
                    {s: P.stage_interactions(stats, s) for s in STAGES}, paths, "interactions", pair_order
                ),
                "seen": lambda: _write_stages({s: P.stage_seen(stats, s) for s in STAGES}, paths, "seen", pair_order),
                "targets": lambda: _write_stages(
                    {s: P.stage_targets(stats, s) for s in STAGES if bounds[s][1] is not None}, paths, "targets", pair_order
                ),
            },
        )
        shutil.rmtree(paths.root / "_stages", ignore_errors=True)
        counts.update({k: results.pop(k) for k in ("events", "sessions", "items")})
        written = results
        for stage in STAGES:
            stage_counts = _stage_counts(bounds, stage)
            stage_counts.update({table: per_stage[stage] for table, per_stage in written.items() if stage in per_stage})
            _check_stage(ds, stage, stage_counts, settings)
            counts[stage] = _reorder(stage_counts)
            log.info("stage %s: %s", stage, counts[stage])
    finally:
        stats.unpersist()
    return counts


def _reorder(stage_counts: dict) -> dict:
    keys = ("history_end_exclusive", "interactions", "sequences", "seen", "targets", "target_end_exclusive")
    return {k: stage_counts[k] for k in keys if k in stage_counts}


def build_reference(spark: "SparkSession", settings: "Settings", ds: date, paths: FeaturePaths, catalog: "DataFrame | None") -> dict:
    """The one-shot build over the window's clean events with the plain transforms: the definition."""
    events = extract_events(spark, settings.clean_events_dir, ds, settings.lookback_days)
    events = T.deduplicate(events).persist()
    counts: dict = {"events": events.count()}
    counts["sessions"] = T.sessionize(events, settings.session_gap_minutes).select("session_id").distinct().count()
    counts["items"] = _write(T.item_table(events, catalog), paths.items, ["product_id"])
    weights = settings.event_weights.as_dict()
    bounds = T.stage_bounds(ds, settings.val_days, settings.test_days)
    for stage in STAGES:
        history_end, target_end = bounds[stage]
        history = T.slice_window(events, None, history_end)
        stage_counts = _stage_counts(bounds, stage)
        stage_counts["interactions"] = _write(
            T.interactions(history, weights, day_start(history_end), settings.half_life_days),
            paths.stage(stage, "interactions"),
            ["user_id", "product_id"],
        )
        stage_counts["sequences"] = _write(T.sequences(history, settings.sequence_length), paths.stage(stage, "sequences"), ["user_id"])
        stage_counts["seen"] = _write(T.seen_pairs(history), paths.stage(stage, "seen"), ["user_id", "product_id"])
        if target_end is not None:
            future = T.slice_window(events, history_end, target_end)
            stage_counts["targets"] = _write(T.targets(history, future), paths.stage(stage, "targets"), ["user_id", "product_id"])
        _check_stage(ds, stage, stage_counts, settings)
        counts[stage] = _reorder(stage_counts)
        log.info("stage %s: %s", stage, counts[stage])
    events.unpersist()
    return counts


def build_features(spark: "SparkSession", settings: "Settings", ds: date, mode: str = "incremental") -> dict:
    """Build every stage's features for ``ds``; returns the summary (also written as JSON).

    ``mode``: ``incremental`` (default: reuse the stored partials that are still fresh),
    ``rebuild`` (recompute every partial of the window) or ``reference`` (no partials at all).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    paths = feature_paths(settings, ds)
    if paths.root.exists():
        shutil.rmtree(paths.root)  # a rerun of the day replaces its features entirely
    clean = clean_day_dirs(settings.clean_events_dir, window_days(ds, settings.lookback_days))
    _require_clean(clean, settings.clean_events_dir, ds, settings.lookback_days)
    catalog = extract_catalog(spark, settings.catalog_path)
    floor = settings.spark_shuffle_partitions

    if mode == "reference":
        with shuffle_partitions(spark, _size_of(clean.values()), floor):
            counts = build_reference(spark, settings, ds, paths, catalog)
        partial_info = None
    else:
        store = partial_store(settings)
        todo = sorted(clean) if mode == "rebuild" else stale_days(store, clean, settings)
        if todo:
            log.info("computing the partials of %d day(s): %s", len(todo), ", ".join(d.isoformat() for d in todo))
            with shuffle_partitions(spark, _size_of(clean[d] for d in todo), floor):
                build_partials(spark, settings, store, {d: clean[d] for d in todo})
        days = sorted(clean)
        folders = [store.day(t, d) for t in P.PARTIAL_TABLES for d in days if store.day(t, d).is_dir()]
        with shuffle_partitions(spark, _size_of(folders), floor):
            counts = combine(spark, settings, store, days, ds, paths, catalog)
        partial_info = {"built": [d.isoformat() for d in todo], "reused": len(days) - len(todo)}

    summary = {"events": counts.pop("events"), "items": counts.pop("items")}
    summary.update({stage: counts[stage] for stage in STAGES})
    summary["users"] = summary["full"]["sequences"]
    summary["sessions"] = counts["sessions"]
    summary["days"] = len(clean)
    summary["mode"] = mode
    if partial_info is not None:
        summary["partials"] = partial_info
    summary["root"] = str(paths.root)
    paths.summary.write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m recsys.features.build --ds YYYY-MM-DD``: the job alone, with the settings from the environment."""
    from recsys.config import load_settings
    from recsys.features.spark import get_spark

    parser = argparse.ArgumentParser(description="Build the feature tables of one day.")
    parser.add_argument("--ds", required=True, type=date.fromisoformat)
    parser.add_argument("--mode", choices=MODES, default="incremental")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    input_mb = raw_window_mb(settings.raw_events_dir, args.ds, settings.lookback_days)
    spark = get_spark(settings, app_name=f"build_features {args.ds}", input_mb=input_mb)
    try:
        summary = build_features(spark, settings, args.ds, mode=args.mode)
        summary["spark_master"] = spark.sparkContext.master
        print(json.dumps(summary))
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
