"""The ``build_features`` job: extract clean events of the lookback window, transform, load Parquet.

Layout written under ``features/ds=YYYY-MM-DD/``::

    items/                      one row per product (text, category, popularity counts)
    <stage>/interactions/       (user, product, weight, n_events, last_event_time, purchased)
    <stage>/sequences/          (user, product_ids[], event_types[], length)
    <stage>/seen/               (user, product) every pair with any event: what exclude_seen removes
    <stage>/targets/            (user, product) new items in the scored slice (val and test only)
    summary.json                row counts and the stage boundaries

with the stages of :data:`recsys.constants.STAGES`.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.constants import STAGES
from recsys.features import transforms as T
from recsys.features.transforms import day_start

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from recsys.config import Settings

log = logging.getLogger(__name__)


class FeatureBuildError(RuntimeError):
    """The window holds too little data to build the stages; the message says what to change."""


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


# ---- extract ------------------------------------------------------------------------------------
def extract_events(spark: "SparkSession", clean_events_dir: Path, ds: date, lookback_days: int) -> "DataFrame":
    """Clean events of the days ``ds - lookback_days + 1 .. ds`` that exist on disk."""
    from pyspark.sql import functions as F

    days = [ds - timedelta(days=offset) for offset in range(lookback_days)]
    folders = [Path(clean_events_dir) / f"ds={d.isoformat()}" for d in days]
    present = [str(f) for f in folders if f.is_dir()]
    if not present:
        raise FeatureBuildError(
            f"no clean events in {clean_events_dir} for the {lookback_days} days up to ds={ds}. "
            "Run validate_raw for those days first (a backfill validates each day)."
        )
    log.info("reading %d day(s) of clean events (lookback %d days)", len(present), lookback_days)
    events = spark.read.parquet(*present)
    # Belt and braces: a day folder must hold only that day's events; never read the future.
    return events.filter(F.col("event_time") < F.lit(day_start(ds + timedelta(days=1))))


def extract_catalog(spark: "SparkSession", catalog_path: Path) -> "DataFrame | None":
    if not Path(catalog_path).is_file():
        log.info("no catalog at %s: item text comes from category_code and brand", catalog_path)
        return None
    schema = "product_id long, title string, description string, category_code string, brand string, price double"
    return spark.read.option("header", True).option("multiLine", True).option("escape", '"').schema(schema).csv(str(catalog_path))


# ---- load -----------------------------------------------------------------------------------------
def _write(frame: "DataFrame", path: Path, order_by: list[str]) -> int:
    # Sorted, few files: small outputs stay deterministic and quick to read with pandas.
    frame.orderBy(*order_by).coalesce(1).write.mode("overwrite").parquet(str(path))
    return frame.sparkSession.read.parquet(str(path)).count()


def build_features(spark: "SparkSession", settings: "Settings", ds: date) -> dict:
    """Build every stage's features for ``ds``; returns the summary (also written as JSON)."""
    paths = feature_paths(settings, ds)
    if paths.root.exists():
        shutil.rmtree(paths.root)  # a rerun of the day replaces its features entirely
    events = extract_events(spark, settings.clean_events_dir, ds, settings.lookback_days)
    catalog = extract_catalog(spark, settings.catalog_path)

    events = T.sessionize(T.deduplicate(events), settings.session_gap_minutes).persist()
    total_events = events.count()
    counts: dict = {"events": total_events}
    items_rows = _write(T.item_table(events, catalog), paths.items, ["product_id"])
    counts["items"] = items_rows

    weights = settings.event_weights.as_dict()
    bounds = T.stage_bounds(ds, settings.val_days, settings.test_days)
    for stage in STAGES:
        history_end, target_end = bounds[stage]
        history = T.slice_window(events, None, history_end)
        stage_counts = {
            "history_end_exclusive": history_end.isoformat(),
            "interactions": _write(
                T.interactions(history, weights, day_start(history_end), settings.half_life_days),
                paths.stage(stage, "interactions"),
                ["user_id", "product_id"],
            ),
            "sequences": _write(T.sequences(history, settings.sequence_length), paths.stage(stage, "sequences"), ["user_id"]),
            "seen": _write(T.seen_pairs(history), paths.stage(stage, "seen"), ["user_id", "product_id"]),
        }
        if target_end is not None:
            future = T.slice_window(events, history_end, target_end)
            stage_counts["targets"] = _write(T.targets(history, future), paths.stage(stage, "targets"), ["user_id", "product_id"])
            stage_counts["target_end_exclusive"] = target_end.isoformat()
            if stage_counts["targets"] == 0 or stage_counts["interactions"] == 0:
                raise FeatureBuildError(
                    f"ds={ds}: stage '{stage}' has {stage_counts['interactions']} training interactions and "
                    f"{stage_counts['targets']} held-out targets. The lookback window needs more than "
                    f"{settings.val_days + settings.test_days} days of events (validation + test days): "
                    "land more history, or lower RECSYS_VAL_DAYS / RECSYS_TEST_DAYS."
                )
        counts[stage] = stage_counts
        log.info("stage %s: %s", stage, stage_counts)
    events.unpersist()
    counts["users"] = counts["full"]["sequences"]
    counts["root"] = str(paths.root)
    paths.summary.write_text(json.dumps(counts, indent=2))
    return counts
