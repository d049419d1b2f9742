"""A small, fully known data dir for the Recommendations page tests: catalog, clean events and a warehouse.

The warehouse is written by the project's own writer (``recsys.warehouse.writer``), so the page reads
exactly what ``publish`` produces. The clean events are Parquet in the layout and column types
``recsys.quality.validation.validate_day`` writes for the good rows (``clean/events/ds=…/*.parquet``);
they are written directly here because validating needs Spark, which these tests do not otherwise need.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.constants import BASELINE_NAMES, HYBRID_NAME, MODEL_NAMES
from recsys.warehouse.writer import open_warehouse

DAYS = (dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3))
LATEST = DAYS[-1]
#: The user the lookups look up, a user who has events but no list, and one unknown to everything.
USER = 1042
USER_WITHOUT_LIST = 2077
UNKNOWN_USER = 999_999

CATALOG = {
    501: "Trail running shoes",
    502: "Merino running socks",
    503: "Hydration vest 5L",
    504: "GPS sports watch",
    505: "Foam roller",
    506: "Headlamp 400 lm",
    507: "Rain shell jacket",
}
#: Product 900 is bought but not in the catalog: the page must say so instead of failing.
OFF_CATALOG = 900

# (day, hh:mm, user, event_type, product)
EVENTS = [
    (DAYS[0], "09:15", USER, "view", 501),
    (DAYS[0], "09:17", USER, "cart", 501),
    (DAYS[1], "18:02", USER, "purchase", 501),
    (DAYS[2], "07:40", USER, "view", 502),
    (DAYS[2], "07:41", USER, "view", OFF_CATALOG),
    (DAYS[2], "12:00", USER_WITHOUT_LIST, "view", 504),
]

RAW_QUARANTINED = {DAYS[0]: (1000, 4), DAYS[1]: (1200, 30), DAYS[2]: (900, 0)}


def metrics_of(day_index: int) -> dict[str, dict[str, float]]:
    """Distinct, known metrics per day and model (the hybrid best), so charts and tables can be checked."""
    metrics = {}
    for offset, model in enumerate((*MODEL_NAMES, *BASELINE_NAMES)):
        metrics[model] = {
            "ndcg@10": round(0.05 + 0.01 * offset + 0.002 * day_index, 4),
            "hr@10": round(0.20 + 0.02 * offset, 4),
            "coverage@10": round(0.50 + 0.05 * offset, 4),
            "users": 100,
        }
    metrics[HYBRID_NAME] = {"ndcg@10": round(0.20 + 0.01 * day_index, 4), "hr@10": 0.45, "coverage@10": 0.91, "users": 100}
    return metrics


def recommendations_of(day: dt.date) -> pd.DataFrame:
    """USER's list of the day (three products, the top one changes with the day) and another user's."""
    top = 503 if day == LATEST else 505
    rows = [
        (USER, 1, top, 0.93, "sequence,cooccurrence", "often bought after Trail running shoes"),
        (USER, 2, 504, 0.81, "collaborative", "customers like you bought this"),
        (USER, 3, 506, 0.40, "content", "similar to items you viewed"),
        (3001, 1, 507, 0.70, "popularity", "popular this week"),
    ]
    return pd.DataFrame(rows, columns=["user_id", "rank", "product_id", "score", "sources", "reason"]).assign(
        run_id=f"scheduled__{day.isoformat()}"
    )


def write_catalog(data_dir: Path) -> Path:
    path = data_dir / "raw" / "catalog" / "products.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        [(pid, title, f"{title} description", "sport.running", "acme", 10.0 + pid % 7) for pid, title in CATALOG.items()],
        columns=["product_id", "title", "description", "category_code", "brand", "price"],
    ).to_csv(path, index=False)
    return path


CLEAN_SCHEMA = pa.schema(
    [
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("event_type", pa.string()),
        ("product_id", pa.int64()),
        ("category_id", pa.int64()),
        ("category_code", pa.string()),
        ("brand", pa.string()),
        ("price", pa.float64()),
        ("user_id", pa.int64()),
        ("user_session", pa.string()),
    ]
)


def write_clean_events(data_dir: Path) -> Path:
    root = data_dir / "clean" / "events"
    for day in DAYS:
        rows = [e for e in EVENTS if e[0] == day]
        times = [dt.datetime.combine(day, dt.time.fromisoformat(hhmm), dt.timezone.utc) for _, hhmm, *_ in rows]
        table = pa.table(
            {
                "event_time": times,
                "event_type": [e[3] for e in rows],
                "product_id": [e[4] for e in rows],
                "category_id": [7 for _ in rows],
                "category_code": ["sport.running" for _ in rows],
                "brand": ["acme" for _ in rows],
                "price": [12.5 for _ in rows],
                "user_id": [e[2] for e in rows],
                "user_session": [f"s-{e[2]}-{day}" for e in rows],
            },
            schema=CLEAN_SCHEMA,
        )
        folder = root / f"ds={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / "part-00000.snappy.parquet")
        (folder / "_SUCCESS").touch()  # what Spark leaves next to the data
    return root


def publish_days(uri: str, schema: str = "recsys") -> None:
    with open_warehouse(uri, schema) as warehouse:
        warehouse.ensure_schema()
        for index, day in enumerate(DAYS):
            raw, quarantined = RAW_QUARANTINED[day]
            warehouse.publish_partition(
                day,
                recommendations_of(day),
                {
                    "airflow_run_id": f"scheduled__{day.isoformat()}",
                    "mlflow_run_id": f"mlflow-{index}",
                    "raw_rows": raw,
                    "clean_rows": raw - quarantined,
                    "quarantined_rows": quarantined,
                    "users": 2,
                    "items": len(CATALOG),
                    "metrics": metrics_of(index),
                },
            )


def build_data_dir(data_dir: Path, publish: bool = True) -> str:
    """Catalog, clean events and (unless ``publish`` is False) the DuckDB warehouse; returns its URI."""
    data_dir.mkdir(parents=True, exist_ok=True)
    write_catalog(data_dir)
    write_clean_events(data_dir)
    uri = f"duckdb:///{(data_dir / 'warehouse.duckdb').resolve()}"
    if publish:
        publish_days(uri)
    return uri
