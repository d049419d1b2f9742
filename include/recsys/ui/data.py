"""Read-only queries behind the Recommendations page: run history, a user's recent events and latest list.

Every read opens its own connection and closes it before returning. For the embedded DuckDB warehouse
that matters: DuckDB lets one process write a file while no other process has it open, so a page that
kept a connection would block the pipeline's ``publish`` task. A read-only connection that meets the
writer's lock is retried briefly, then reported as :class:`WarehouseUnavailable` (the page shows the
message; it never waits on, or breaks, a publish).

Every value that comes from a request (the user id) is validated by :func:`parse_user_id` and passed as
a bound parameter; the only identifier in the SQL is the warehouse schema, checked by
``recsys.warehouse.schema.validate_schema_name``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from recsys.constants import BASELINE_NAMES, HYBRID_NAME, MODEL_NAMES
from recsys.warehouse.schema import DEFAULT_SCHEMA, LATEST_VIEW, RECOMMENDATIONS_TABLE, RUNS_TABLE, validate_schema_name

#: Models in the order the page lists them: the four trained models, the baselines, the hybrid last.
MODEL_ORDER = (*MODEL_NAMES, *BASELINE_NAMES, HYBRID_NAME)
#: Attempts and pause when the DuckDB file is locked by the writer (a publish holds it for seconds).
LOCK_RETRIES = 3
LOCK_RETRY_PAUSE_S = 0.25
#: PostgreSQL: how long to wait for the server before telling the user it is unreachable.
PG_CONNECT_TIMEOUT_S = 5
_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1


class WarehouseUnavailable(RuntimeError):
    """The warehouse cannot be read right now (missing, locked by a publish, unreachable, no tables yet).

    The message is written for the person looking at the page: what is wrong, where, and what to do.
    """


class InvalidUserId(ValueError):
    """The user id typed into the lookup is not a whole number in BIGINT range."""


def parse_user_id(raw: Any) -> int:
    """The user id as an int, or InvalidUserId saying what is expected (the events' ``user_id`` column)."""
    text = str(raw).strip() if raw is not None else ""
    if not text:
        raise InvalidUserId("user_id is empty: type the numeric user_id of a customer (the user_id column of the events)")
    try:
        value = int(text, 10)
    except ValueError:
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise InvalidUserId(
            f"user_id {shown!r} is not a whole number: user ids are the integer user_id column of the events, e.g. 1042"
        ) from None
    if not _BIGINT_MIN <= value <= _BIGINT_MAX:
        raise InvalidUserId(f"user_id {value} is outside the BIGINT range of the user_id column")
    return value


# --------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RunDay:
    """One published day of ``recsys.pipeline_runs``: row counts and every model's held-out metrics."""

    ds: dt.date
    raw_rows: int | None
    clean_rows: int | None
    quarantined_rows: int | None
    users: int | None
    items: int | None
    published_rows: int | None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def quarantined_fraction(self) -> float | None:
        if not self.raw_rows or self.quarantined_rows is None:
            return None
        return self.quarantined_rows / self.raw_rows

    def as_dict(self) -> dict[str, Any]:
        return {
            "ds": self.ds.isoformat(),
            "raw_rows": self.raw_rows,
            "clean_rows": self.clean_rows,
            "quarantined_rows": self.quarantined_rows,
            "users": self.users,
            "items": self.items,
            "published_rows": self.published_rows,
            "metrics": self.metrics,
        }


@dataclass(frozen=True)
class Recommendation:
    rank: int
    product_id: int
    title: str | None
    score: float | None
    sources: str | None
    reason: str | None


@dataclass(frozen=True)
class Event:
    event_time: dt.datetime
    event_type: str
    product_id: int
    title: str | None
    category_code: str | None


@dataclass(frozen=True)
class UserView:
    """Everything the lookup shows for one user; ``ds`` is the latest published day (None: nothing published)."""

    user_id: int
    ds: dt.date | None
    recommendations: list[Recommendation]
    events: list[Event]

    def as_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "ds": self.ds.isoformat() if self.ds else None,
            "recommendations": [vars(r) for r in self.recommendations],
            "events": [{**vars(e), "event_time": e.event_time.isoformat()} for e in self.events],
        }


# ----------------------------------------------------------------------------------------------- connections


def describe_uri(uri: str) -> str:
    """The warehouse URI without credentials, for messages (a PostgreSQL URI may carry a password)."""
    scheme, _, rest = uri.partition("://")
    if scheme == "duckdb":
        return "/" + rest.lstrip("/")  # duckdb:///{absolute path} carries one slash too many
    parts = urlsplit(uri)
    return f"postgresql://{parts.hostname or '?'}:{parts.port or 5432}{parts.path}"


@contextmanager
def read_connection(uri: str) -> Iterator[tuple[Any, str]]:
    """A read-only DB-API connection to the warehouse and its parameter placeholder; closed on exit."""
    scheme = uri.partition("://")[0]
    if scheme == "duckdb":
        connection = _duckdb_read_only(Path(uri.partition("://")[2]))
        placeholder = "?"
    elif scheme in ("postgresql", "postgres"):
        connection = _postgres_read_only(uri)
        placeholder = "%s"
    else:
        raise WarehouseUnavailable(
            f"unsupported warehouse URI scheme {scheme!r}: the warehouse_default connection must be of type "
            "postgres or duckdb (or absent, for the embedded DuckDB file under RECSYS_DATA_DIR)"
        )
    try:
        yield connection, placeholder
    finally:
        connection.close()


def _duckdb_read_only(path: Path):
    import duckdb

    if not path.is_file():
        raise WarehouseUnavailable(
            f"no warehouse at {path} yet: nothing has been published. Run the recsys_daily DAG "
            "(`make demo`, or `make run DS=YYYY-MM-DD`) and reload this page."
        )
    for attempt in range(LOCK_RETRIES):
        try:
            return duckdb.connect(str(path), read_only=True)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise WarehouseUnavailable(f"cannot open the warehouse {path}: {exc}") from exc
            if attempt + 1 == LOCK_RETRIES:
                raise WarehouseUnavailable(
                    f"the warehouse {path} is locked by another process (the pipeline's publish task writes it "
                    "for a few seconds at the end of each run). Reload this page in a moment."
                ) from exc
            time.sleep(LOCK_RETRY_PAUSE_S)
    raise AssertionError("unreachable")


def _postgres_read_only(uri: str):
    import psycopg

    try:
        connection = psycopg.connect(uri, connect_timeout=PG_CONNECT_TIMEOUT_S, autocommit=True)
    except psycopg.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WarehouseUnavailable(
            f"cannot reach the PostgreSQL warehouse {describe_uri(uri)}: {first_line}. "
            "Check the warehouse_default connection and that the server is up."
        ) from exc
    # Belt and braces: this session can never write, whatever a query says.
    connection.execute("SET default_transaction_read_only = on")
    return connection


def _missing_table(exc: Exception) -> bool:
    text = str(exc).lower()
    return ("does not exist" in text) or ("catalog error" in text and "not" in text)


# --------------------------------------------------------------------------------------------------- queries


def read_runs(uri: str, schema: str = DEFAULT_SCHEMA) -> list[RunDay]:
    """Every row of ``recsys.pipeline_runs``, oldest first, with the metrics JSON parsed."""
    schema = validate_schema_name(schema)
    sql = (
        "SELECT ds, raw_rows, clean_rows, quarantined_rows, users, items, published_rows, metrics "
        f"FROM {schema}.{RUNS_TABLE} ORDER BY ds"
    )
    with read_connection(uri) as (connection, _):
        try:
            rows = connection.execute(sql).fetchall()
        except Exception as exc:
            if _missing_table(exc):
                raise WarehouseUnavailable(
                    f"the warehouse {describe_uri(uri)} has no {schema}.{RUNS_TABLE} table yet: "
                    "no run has published. Run the recsys_daily DAG and reload."
                ) from exc
            raise
    return [
        RunDay(
            ds=_as_date(ds),
            raw_rows=raw, clean_rows=clean, quarantined_rows=quarantined,
            users=users, items=items, published_rows=published,
            metrics=_parse_metrics(metrics),
        )
        for ds, raw, clean, quarantined, users, items, published, metrics in rows
    ]


def _parse_metrics(text: Any) -> dict[str, dict[str, float]]:
    """The metrics column as {model: {metric: float}}; a row with unreadable JSON shows no metrics, not an error."""
    if not text:
        return {}
    try:
        parsed = json.loads(text) if isinstance(text, str) else dict(text)
    except (TypeError, ValueError):
        return {}
    metrics: dict[str, dict[str, float]] = {}
    for model, values in parsed.items():
        if not isinstance(values, dict):
            continue
        numeric = {
            name: float(value)
            for name, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        }
        if numeric:
            metrics[str(model)] = numeric
    return metrics


def read_latest_recommendations(
    uri: str, user_id: int, titles: dict[int, str] | None = None, schema: str = DEFAULT_SCHEMA
) -> tuple[dt.date | None, list[Recommendation]]:
    """The latest published day and ``user_id``'s list on that day (empty if the user has none that day)."""
    schema = validate_schema_name(schema)
    user_id = parse_user_id(user_id)
    titles = titles or {}
    with read_connection(uri) as (connection, placeholder):
        try:
            # The view's own definition of "latest", so the day shown is the day the rows come from.
            (latest,) = connection.execute(f"SELECT max(ds) FROM {schema}.{RECOMMENDATIONS_TABLE}").fetchone()
            rows = connection.execute(
                f"SELECT rank, product_id, score, sources, reason FROM {schema}.{LATEST_VIEW} "
                f"WHERE user_id = {placeholder} ORDER BY rank",
                [user_id],
            ).fetchall()
        except Exception as exc:
            if _missing_table(exc):
                raise WarehouseUnavailable(
                    f"the warehouse {describe_uri(uri)} has no {schema}.{LATEST_VIEW} yet: no run has published."
                ) from exc
            raise
    recommendations = [
        Recommendation(int(rank), int(product), titles.get(int(product)), score, sources, reason)
        for rank, product, score, sources, reason in rows
    ]
    return (_as_date(latest) if latest is not None else None), recommendations


def read_recent_events(
    clean_events_dir: Path, user_id: int, titles: dict[int, str] | None = None, limit: int = 30, days: int = 30
) -> list[Event]:
    """``user_id``'s newest ``limit`` clean events from the newest ``days`` day folders, newest first.

    Reads the validated Parquet (``clean/events/ds=YYYY-MM-DD/``) with an in-memory DuckDB: no warehouse
    lock is involved, and only the files of recent days are opened.
    """
    import duckdb

    user_id = parse_user_id(user_id)
    titles = titles or {}
    files = [
        str(path)
        for folder in sorted(Path(clean_events_dir).glob("ds=*"), reverse=True)[:days]
        for path in sorted(folder.glob("*.parquet"))
    ]
    if not files:
        return []
    connection = duckdb.connect()
    try:
        rows = connection.execute(
            "SELECT event_time, event_type, product_id, category_code FROM read_parquet(?, union_by_name = true) "
            "WHERE user_id = ? ORDER BY event_time DESC, product_id LIMIT ?",
            [files, user_id, int(limit)],
        ).fetchall()
    finally:
        connection.close()
    return [
        Event(_as_utc(event_time), str(event_type), int(product), titles.get(int(product)), category)
        for event_time, event_type, product, category in rows
    ]


# Titles are read once per catalog file version, not on every lookup: (path, mtime, size) -> {id: title}.
_TITLE_CACHE: dict[str, tuple[tuple[float, int], dict[int, str]]] = {}
_TITLE_CACHE_GUARD = threading.Lock()


def product_titles(catalog_path: Path) -> dict[int, str]:
    """{product_id: title} from ``raw/catalog/products.csv``; empty when the optional catalog is absent."""
    import pandas as pd

    path = Path(catalog_path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return {}
    version = (stat.st_mtime, stat.st_size)
    with _TITLE_CACHE_GUARD:
        cached = _TITLE_CACHE.get(str(path))
        if cached and cached[0] == version:
            return cached[1]
    frame = pd.read_csv(path, usecols=lambda column: column in ("product_id", "title"))
    if "product_id" not in frame.columns or "title" not in frame.columns:
        return {}
    frame = frame.dropna(subset=["product_id", "title"])
    ids = pd.to_numeric(frame["product_id"], errors="coerce")
    frame = frame[ids.notna()]
    titles = dict(zip(ids[ids.notna()].astype("int64").tolist(), frame["title"].astype(str).tolist()))
    with _TITLE_CACHE_GUARD:
        _TITLE_CACHE[str(path)] = (version, titles)
    return titles


def read_user(
    uri: str, clean_events_dir: Path, catalog_path: Path, user_id: int, schema: str = DEFAULT_SCHEMA
) -> UserView:
    """The lookup: the user's recent events and latest recommendations, both with product titles."""
    user_id = parse_user_id(user_id)
    titles = product_titles(catalog_path)
    events = read_recent_events(clean_events_dir, user_id, titles)
    ds, recommendations = read_latest_recommendations(uri, user_id, titles, schema)
    return UserView(user_id, ds, recommendations, events)


# ---------------------------------------------------------------------------------------------------- helpers


def _as_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _as_utc(value: dt.datetime) -> dt.datetime:
    """Event times in UTC (DuckDB returns TIMESTAMPTZ in the session's zone, plain TIMESTAMP naive)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def model_series(runs: list[RunDay], metric: str) -> dict[str, list[tuple[dt.date, float]]]:
    """{model: [(ds, value), …]} for one metric, models in :data:`MODEL_ORDER` then any others by name."""
    seen: dict[str, list[tuple[dt.date, float]]] = {}
    for run in runs:
        for model, values in run.metrics.items():
            if metric in values:
                seen.setdefault(model, []).append((run.ds, values[metric]))
    ordered = [m for m in MODEL_ORDER if m in seen] + sorted(m for m in seen if m not in MODEL_ORDER)
    return {model: seen[model] for model in ordered}
