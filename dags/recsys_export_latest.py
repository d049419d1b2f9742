"""
### recsys_export_latest: hand fresh recommendations to serving, whenever recsys_daily publishes

Scheduled on the `recsys_recommendations` Asset (not on a clock): every successful `publish` of
`recsys_daily`, scheduled run or backfill, emits an asset event whose extra names the day (`ds`). This DAG
reads that day's partition back from the warehouse and writes it as one Parquet file,
`$RECSYS_DATA_DIR/exports/ds=YYYY-MM-DD/recommendations.parquet` (written to a temp name, then renamed,
so a reader never sees half a file), plus `exports/latest.json` pointing at the newest day exported.

It is the template for any consumer (a serving cache, an e-mail job, a dashboard refresh): schedule on
`recsys.orchestration.RECOMMENDATIONS` and take the day from the triggering event, never from the clock.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from recsys.orchestration import RECOMMENDATIONS, default_args, warehouse_uri_for


@dag(
    dag_id="recsys_export_latest",
    schedule=[RECOMMENDATIONS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["recsys", "export", "assets"],
    doc_md=__doc__,
)
def recsys_export_latest():
    @task
    def export(**context) -> list[dict]:
        from recsys.config import load_settings
        from recsys.export import export_partition

        events = context["triggering_asset_events"][RECOMMENDATIONS]
        days = sorted({event.extra["ds"] for event in events if event.extra.get("ds")})
        if not days:
            raise ValueError(
                f"recsys_export_latest was triggered without a ds in the asset events ({len(events)} event(s)); "
                "trigger it through recsys_daily's publish, which sets extra={'ds': ...}"
            )
        settings = load_settings()
        uri = warehouse_uri_for(settings)
        return [export_partition(uri, day, settings.data_dir / "exports") for day in days]

    export()


recsys_export_latest()
