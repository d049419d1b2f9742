"""Export one published day of ``recsys.recommendations`` to Parquet for serving (used by recsys_export_latest)."""

from __future__ import annotations

import json
import logging
import os
from datetime import date
from pathlib import Path

log = logging.getLogger(__name__)


def export_partition(warehouse_uri: str, ds: str | date, exports_dir: Path) -> dict:
    """Write the ``ds`` partition to ``exports_dir/ds=…/recommendations.parquet`` and point ``latest.json`` at it.

    Both files are written under a temporary name and renamed, so a reader sees the old file or the new
    one, never a partial one. An empty partition is an error: the asset event said the day was published.
    """
    from recsys.warehouse.writer import open_warehouse

    day = date.fromisoformat(str(ds)[:10])
    with open_warehouse(warehouse_uri) as warehouse:
        frame = warehouse.read_partition(day)
    if frame.empty:
        raise ValueError(
            f"the warehouse holds no recommendations for ds={day} although recsys_daily announced it; "
            "check recsys.pipeline_runs for that day and re-run recsys_daily's publish for it"
        )
    target = Path(exports_dir) / f"ds={day.isoformat()}" / "recommendations.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_suffix(".parquet.tmp")
    frame.to_parquet(staging, index=False)
    os.replace(staging, target)
    summary = {"ds": day.isoformat(), "rows": len(frame), "users": int(frame["user_id"].nunique()), "path": str(target)}
    latest = Path(exports_dir) / "latest.json"
    previous = json.loads(latest.read_text()) if latest.exists() else {}
    if previous.get("ds", "") <= day.isoformat():  # a backfill of an old day does not move "latest" back
        staging_latest = latest.with_suffix(".json.tmp")
        staging_latest.write_text(json.dumps(summary, indent=2))
        os.replace(staging_latest, latest)
    log.info("exported ds=%s: %d rows for %d users to %s", day, summary["rows"], summary["users"], target)
    return summary
