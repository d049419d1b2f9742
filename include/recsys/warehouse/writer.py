"""Publishes one day of recommendations (and its run record) to the warehouse atomically, in DuckDB or PostgreSQL.

A publish validates the frame, bulk-loads it into a connection-private staging table, then swaps the day's
partition in a single transaction, so readers see either the old day or the new one, never a mix.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import numbers
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.warehouse.schema import (
    DEFAULT_SCHEMA,
    RECOMMENDATION_COLUMNS,
    RECOMMENDATION_FRAME_COLUMNS,
    RECOMMENDATION_KEY_COLUMNS,
    RECOMMENDATIONS_TABLE,
    RUN_COLUMNS,
    RUN_RECORD_KEYS,
    RUNS_TABLE,
    reader_role_ddl,
    schema_ddl,
    validate_schema_name,
)

__all__ = [
    "Warehouse",
    "DuckDBWarehouse",
    "PostgresWarehouse",
    "open_warehouse",
    "validate_recommendations",
    "SUPPORTED_SCHEMES",
]

logger = logging.getLogger(__name__)

SUPPORTED_SCHEMES = ("duckdb", "postgresql", "postgres")
_TEXT_COLUMNS = ("sources", "reason", "run_id")
_COUNT_KEYS = ("raw_rows", "clean_rows", "quarantined_rows", "users", "items", "published_rows")

BeforeSwapHook = Callable[[], None]


# --------------------------------------------------------------------------------------------------- validation


def _as_date(ds: dt.date | str, where: str) -> dt.date:
    # datetime is a date subclass, but a timestamp would silently pick a day in some time zone.
    if isinstance(ds, dt.datetime):
        raise TypeError(f"{where}: ds must be a datetime.date or 'YYYY-MM-DD' string, got a datetime ({ds!r}); pass .date() or Airflow's ds")
    if isinstance(ds, dt.date):
        return ds
    if isinstance(ds, str):
        try:
            return dt.date.fromisoformat(ds)
        except ValueError:
            raise ValueError(f"{where}: ds {ds!r} is not a 'YYYY-MM-DD' date") from None
    raise TypeError(f"{where}: ds must be a datetime.date or 'YYYY-MM-DD' string, got {type(ds).__name__}")


def validate_recommendations(recommendations: pd.DataFrame, ds: dt.date | str) -> pd.DataFrame:
    """Check a frame against the recommendations contract and return it with exactly the contract's columns.

    Rules (each failure is a ValueError naming the rule and the number of offending rows): columns
    user_id, rank, product_id, score, sources, reason, run_id present; at least one row; no null in
    user_id, rank, product_id, which are integer columns; (user_id, rank) and (user_id, product_id)
    unique; each user's ranks exactly 1..n; score numeric; sources, reason, run_id text or null; a ds
    column, if present, equal to ``ds``. Extra columns are dropped.
    """
    where = "publish_partition"
    day = _as_date(ds, where)
    if not isinstance(recommendations, pd.DataFrame):
        raise TypeError(f"{where}: recommendations must be a pandas DataFrame, got {type(recommendations).__name__}")
    missing = [column for column in RECOMMENDATION_FRAME_COLUMNS if column not in recommendations.columns]
    if missing:
        raise ValueError(
            f"{where}: recommendations for {day} are missing column(s) {missing}; "
            f"the contract is {list(RECOMMENDATION_FRAME_COLUMNS)} (see recsys.warehouse.schema)"
        )
    if recommendations.empty:
        # Publishing nothing would erase the day for every reader; that is never what a healthy run means.
        raise ValueError(f"{where}: recommendations for {day} are empty; refusing to replace the partition with nothing")

    if "ds" in recommendations.columns:
        other_days = int((pd.to_datetime(recommendations["ds"]).dt.date != day).sum())
        if other_days:
            raise ValueError(f"{where}: {other_days} row(s) have a ds column different from the ds argument {day}")

    null_keys = int(recommendations[list(RECOMMENDATION_KEY_COLUMNS)].isna().any(axis=1).sum())
    if null_keys:
        raise ValueError(f"{where}: {null_keys} row(s) have a null in {list(RECOMMENDATION_KEY_COLUMNS)}; drop or fix them")
    for column in RECOMMENDATION_KEY_COLUMNS:
        if not pd.api.types.is_integer_dtype(recommendations[column]):
            raise ValueError(
                f"{where}: column {column!r} must be an integer dtype (BIGINT/INTEGER in the warehouse), "
                f"got {recommendations[column].dtype}; cast it with .astype('int64')"
            )
    if not pd.api.types.is_numeric_dtype(recommendations["score"]) or pd.api.types.is_bool_dtype(recommendations["score"]):
        raise ValueError(f"{where}: column 'score' must be numeric, got {recommendations['score'].dtype}")
    for column in _TEXT_COLUMNS:
        kind = pd.api.types.infer_dtype(recommendations[column], skipna=True)
        if kind not in ("string", "empty"):
            raise ValueError(f"{where}: column {column!r} must hold strings or nulls, found {kind} values; join lists with ','")

    duplicated_ranks = int(recommendations.duplicated(["user_id", "rank"], keep=False).sum())
    if duplicated_ranks:
        raise ValueError(f"{where}: {duplicated_ranks} row(s) share a (user_id, rank) with another row; each rank must hold one item")
    duplicated_items = int(recommendations.duplicated(["user_id", "product_id"], keep=False).sum())
    if duplicated_items:
        raise ValueError(f"{where}: {duplicated_items} row(s) repeat a product within one user's list; deduplicate before ranking")

    # With (user_id, rank) unique, ranks are exactly 1..n iff the smallest is 1 and the largest is n.
    ranks_by_user = recommendations.groupby("user_id")["rank"]
    contiguous = (ranks_by_user.transform("min") == 1) & (ranks_by_user.transform("max") == ranks_by_user.transform("size"))
    gapped = int((~contiguous).sum())
    if gapped:
        raise ValueError(
            f"{where}: {gapped} row(s) belong to users whose ranks are not exactly 1..n "
            f"(a gap, or not starting at 1); re-rank each user's list"
        )

    frame = recommendations[list(RECOMMENDATION_FRAME_COLUMNS)].copy()
    frame = frame.astype({"user_id": "int64", "rank": "int64", "product_id": "int64", "score": "float64"})
    for column in _TEXT_COLUMNS:
        # pandas' string dtype and NaN placeholders both become plain str / None for the database drivers.
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame.reset_index(drop=True)


def _run_row(day: dt.date, run_record: Mapping[str, Any], published_rows: int) -> dict[str, Any]:
    where = "publish_partition"
    if not isinstance(run_record, Mapping):
        raise TypeError(f"{where}: run_record must be a dict, got {type(run_record).__name__}")
    required = [key for key in RUN_RECORD_KEYS if key != "published_rows"]
    missing = [key for key in required if key not in run_record]
    unknown = sorted(set(run_record) - set(RUN_RECORD_KEYS))
    if missing or unknown:
        raise ValueError(
            f"{where}: run_record for {day} is missing key(s) {missing} / has unknown key(s) {unknown}; "
            f"expected {list(RUN_RECORD_KEYS)}"
        )
    declared = run_record.get("published_rows")
    if declared is not None and declared != published_rows:
        raise ValueError(
            f"{where}: run_record['published_rows'] is {declared} but the frame for {day} has {published_rows} rows; "
            f"leave it out and the writer fills it in"
        )
    metrics = run_record["metrics"]
    if not isinstance(metrics, Mapping):
        raise ValueError(f"{where}: run_record['metrics'] must be a dict {{model_name: {{metric: value}}}}, got {type(metrics).__name__}")
    try:
        metrics_json = json.dumps(metrics, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: run_record['metrics'] is not JSON-serialisable (NaN/inf or non-JSON values): {error}") from error
    counts = {"published_rows": published_rows}
    for key in _COUNT_KEYS:
        if key == "published_rows":
            continue
        value = run_record[key]
        # numbers.Integral covers numpy integers; bool is excluded because True would be stored as 1.
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            raise ValueError(f"{where}: run_record[{key!r}] must be an integer or None, got {value!r}")
        counts[key] = None if value is None else int(value)
    return {
        "ds": day,
        "airflow_run_id": run_record["airflow_run_id"],
        "mlflow_run_id": run_record["mlflow_run_id"],
        # TIMESTAMP (without zone) columns hold UTC by contract, so store naive UTC.
        "published_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),
        **counts,
        "metrics": metrics_json,
    }


def _staging_name(day: dt.date) -> str:
    # Unique per publish (ds + random suffix), and TEMP so it is private to the connection anyway.
    return f"recsys_staging_{day:%Y%m%d}_{uuid.uuid4().hex[:12]}"


def _partition_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(RECOMMENDATION_FRAME_COLUMNS))
    frame = frame.astype({"user_id": "int64", "rank": "int64", "product_id": "int64", "score": "float64"})
    for column in _TEXT_COLUMNS:
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def _runs_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    return frame.astype({key: "Int64" for key in _COUNT_KEYS})


def _upsert_run_sql(schema: str, placeholder: str) -> str:
    updates = ", ".join(f"{column} = excluded.{column}" for column in RUN_COLUMNS if column != "ds")
    return (
        f"INSERT INTO {schema}.{RUNS_TABLE} ({', '.join(RUN_COLUMNS)}) "
        f"VALUES ({', '.join([placeholder] * len(RUN_COLUMNS))}) "
        f"ON CONFLICT (ds) DO UPDATE SET {updates}"
    )


# ---------------------------------------------------------------------------------------------------- warehouse


class Warehouse(ABC):
    """One connection to the recommendation warehouse; use one instance per thread.

    Subclasses implement the backend-specific SQL; validation and the run record are shared here.
    """

    dialect: str

    def __init__(self, schema: str = DEFAULT_SCHEMA) -> None:
        self.schema = validate_schema_name(schema)

    @abstractmethod
    def ensure_schema(self) -> None:
        """Create the schema, tables and view if missing (idempotent; safe to call on every run)."""

    def publish_partition(
        self,
        ds: dt.date | str,
        recommendations: pd.DataFrame,
        run_record: Mapping[str, Any],
        *,
        _before_swap: BeforeSwapHook | None = None,
    ) -> int:
        """Replace the ``ds`` partition with ``recommendations`` and upsert its pipeline_runs row, atomically.

        Args:
            ds: the partition's day (datetime.date or 'YYYY-MM-DD').
            recommendations: see ``validate_recommendations`` for the contract.
            run_record: airflow_run_id, mlflow_run_id, raw_rows, clean_rows, quarantined_rows, users, items,
                metrics ({model_name: {metric: value}}, stored as JSON text) and optionally published_rows
                (must equal the number of rows if given).
            _before_swap: test hook, called inside the swap transaction just before it commits.

        Returns:
            The number of rows published.

        Raises:
            ValueError / TypeError: the frame or run record breaks the contract (nothing is written).
            Any database error or exception from ``_before_swap``: rolled back, the old partition is intact.
        """
        day = _as_date(ds, "publish_partition")
        frame = validate_recommendations(recommendations, day)
        run_row = _run_row(day, run_record, len(frame))
        self._publish(day, frame, run_row, _before_swap)
        logger.info("published %d recommendation rows for %s to %s.%s", len(frame), day, self.schema, RECOMMENDATIONS_TABLE)
        return len(frame)

    def read_partition(self, ds: dt.date | str) -> pd.DataFrame:
        """The ``ds`` partition (contract columns, without ds), ordered by user_id, rank; empty if not published."""
        return _partition_frame(self._read_partition_rows(_as_date(ds, "read_partition")))

    def read_runs(self) -> pd.DataFrame:
        """Every pipeline_runs row, ordered by ds (metrics as JSON text, published_at as naive UTC)."""
        return _runs_frame(self._read_run_rows())

    @abstractmethod
    def close(self) -> None:
        """Close the connection (idempotent)."""

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @abstractmethod
    def _publish(self, day: dt.date, frame: pd.DataFrame, run_row: dict[str, Any], before_swap: BeforeSwapHook | None) -> None: ...

    @abstractmethod
    def _read_partition_rows(self, day: dt.date) -> list[tuple]: ...

    @abstractmethod
    def _read_run_rows(self) -> list[tuple]: ...

    def _select_partition_sql(self, placeholder: str) -> str:
        return (
            f"SELECT {', '.join(RECOMMENDATION_FRAME_COLUMNS)} FROM {self.schema}.{RECOMMENDATIONS_TABLE} "
            f"WHERE ds = {placeholder} ORDER BY user_id, rank"
        )

    def _select_runs_sql(self) -> str:
        return f"SELECT {', '.join(RUN_COLUMNS)} FROM {self.schema}.{RUNS_TABLE} ORDER BY ds"


# DuckDB lets one process write a database file; connections opened in the same process share one database
# instance. Publishes through different connections to the same file are serialised by this per-file lock,
# so two threads never race into DuckDB's optimistic-concurrency conflicts (e.g. re-publishing the same day).
_DUCKDB_WRITE_LOCKS: dict[str, threading.Lock] = {}
_DUCKDB_WRITE_LOCKS_GUARD = threading.Lock()


def _duckdb_write_lock(path: Path) -> threading.Lock:
    with _DUCKDB_WRITE_LOCKS_GUARD:
        return _DUCKDB_WRITE_LOCKS.setdefault(str(path), threading.Lock())


class DuckDBWarehouse(Warehouse):
    """Embedded warehouse in one DuckDB file (a single writer process; threads each open their own instance)."""

    dialect = "duckdb"

    def __init__(self, path: str | Path, schema: str = DEFAULT_SCHEMA) -> None:
        super().__init__(schema)
        import duckdb  # imported here so a PostgreSQL-only deployment does not need it

        self.path = Path(path)
        if not self.path.is_absolute():
            raise ValueError(f"DuckDBWarehouse: the database path must be absolute (duckdb:///abs/path.duckdb), got {str(path)!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = _duckdb_write_lock(self.path.resolve())
        self._connection = duckdb.connect(str(self.path))

    def ensure_schema(self) -> None:
        with self._write_lock:
            for statement in schema_ddl(self.schema, self.dialect):
                self._connection.execute(statement)

    def _publish(self, day: dt.date, frame: pd.DataFrame, run_row: dict[str, Any], before_swap: BeforeSwapHook | None) -> None:
        import pyarrow as pa

        staging = _staging_name(day)
        arrow_frame = pa.Table.from_pandas(
            frame,
            schema=pa.schema(
                [
                    ("user_id", pa.int64()),
                    ("rank", pa.int32()),
                    ("product_id", pa.int64()),
                    ("score", pa.float64()),
                    ("sources", pa.string()),
                    ("reason", pa.string()),
                    ("run_id", pa.string()),
                ]
            ),
            preserve_index=False,
        )
        columns = ", ".join(RECOMMENDATION_FRAME_COLUMNS)
        connection = self._connection
        with self._write_lock:
            try:
                connection.register(f"{staging}_arrow", arrow_frame)
                try:
                    connection.execute(f"CREATE TEMP TABLE {staging} AS SELECT {columns} FROM {staging}_arrow")
                finally:
                    connection.unregister(f"{staging}_arrow")
                connection.begin()
                try:
                    connection.execute(f"DELETE FROM {self.schema}.{RECOMMENDATIONS_TABLE} WHERE ds = ?", [day])
                    connection.execute(
                        f"INSERT INTO {self.schema}.{RECOMMENDATIONS_TABLE} ({', '.join(RECOMMENDATION_COLUMNS)}) "
                        f"SELECT CAST(? AS DATE), {columns} FROM {staging}",
                        [day],
                    )
                    connection.execute(_upsert_run_sql(self.schema, "?"), [run_row[column] for column in RUN_COLUMNS])
                    if before_swap is not None:
                        before_swap()
                    connection.commit()
                except BaseException:
                    _rollback_quietly(connection.rollback)
                    raise
            finally:
                _drop_staging_quietly(lambda: connection.execute(f"DROP TABLE IF EXISTS temp.{staging}"))

    def _read_partition_rows(self, day: dt.date) -> list[tuple]:
        return self._connection.execute(self._select_partition_sql("?"), [day]).fetchall()

    def _read_run_rows(self) -> list[tuple]:
        return self._connection.execute(self._select_runs_sql()).fetchall()

    def close(self) -> None:
        self._connection.close()


class PostgresWarehouse(Warehouse):
    """Shared warehouse in PostgreSQL (psycopg 3); one connection per instance, any number of writer processes."""

    dialect = "postgresql"

    def __init__(self, conninfo: str, schema: str = DEFAULT_SCHEMA) -> None:
        super().__init__(schema)
        import psycopg  # imported here so a DuckDB-only deployment does not need it

        self._psycopg = psycopg
        # Autocommit, with explicit transaction blocks: nothing is ever left open between calls.
        self._connection = psycopg.connect(conninfo, autocommit=True)

    def ensure_schema(self) -> None:
        connection = self._connection
        with connection.transaction(), connection.cursor() as cursor:
            # Concurrent CREATE ... IF NOT EXISTS / OR REPLACE can still collide in the catalogue; queue them.
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"recsys.ensure_schema:{self.schema}"])
            for statement in schema_ddl(self.schema, self.dialect):
                cursor.execute(statement)
            try:
                with connection.transaction():  # a savepoint: a refused grant must not undo the tables
                    for statement in reader_role_ddl(self.schema):
                        cursor.execute(statement)
            except self._psycopg.errors.InsufficientPrivilege as error:
                logger.warning(
                    "could not create or grant the read-only role for schema %s (%s); "
                    "ask a database admin to run the statements of recsys.warehouse.schema.reader_role_ddl",
                    self.schema,
                    str(error).strip(),
                )

    def _publish(self, day: dt.date, frame: pd.DataFrame, run_row: dict[str, Any], before_swap: BeforeSwapHook | None) -> None:
        staging = _staging_name(day)
        columns = ", ".join(RECOMMENDATION_FRAME_COLUMNS)
        connection = self._connection
        rows = frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None)
        try:
            with connection.transaction(), connection.cursor() as cursor:
                cursor.execute(
                    f"CREATE TEMP TABLE {staging} (user_id BIGINT, rank INTEGER, product_id BIGINT, "
                    f"score DOUBLE PRECISION, sources TEXT, reason TEXT, run_id TEXT)"
                )
                with cursor.copy(f"COPY {staging} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            with connection.transaction(), connection.cursor() as cursor:
                # Two publishes of the same day would both delete the old rows and then collide on the key;
                # the lock makes the second wait and replace the first's rows cleanly. Other days run in parallel.
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"recsys.publish:{self.schema}:{day.isoformat()}"])
                cursor.execute(f"DELETE FROM {self.schema}.{RECOMMENDATIONS_TABLE} WHERE ds = %s", [day])
                cursor.execute(
                    f"INSERT INTO {self.schema}.{RECOMMENDATIONS_TABLE} ({', '.join(RECOMMENDATION_COLUMNS)}) "
                    f"SELECT %s::date, {columns} FROM {staging}",
                    [day],
                )
                cursor.execute(_upsert_run_sql(self.schema, "%s"), [run_row[column] for column in RUN_COLUMNS])
                if before_swap is not None:
                    before_swap()
        finally:
            _drop_staging_quietly(lambda: connection.execute(f"DROP TABLE IF EXISTS pg_temp.{staging}"))

    def _read_partition_rows(self, day: dt.date) -> list[tuple]:
        with self._connection.cursor() as cursor:
            return cursor.execute(self._select_partition_sql("%s"), [day]).fetchall()

    def _read_run_rows(self) -> list[tuple]:
        with self._connection.cursor() as cursor:
            return cursor.execute(self._select_runs_sql()).fetchall()

    def close(self) -> None:
        self._connection.close()


def _rollback_quietly(rollback: Callable[[], Any]) -> None:
    # The original error is what matters; a failed rollback (e.g. no transaction left) must not mask it.
    try:
        rollback()
    except Exception:  # noqa: BLE001
        logger.exception("rollback after a failed publish also failed")


def _drop_staging_quietly(drop: Callable[[], Any]) -> None:
    # Staging is TEMP (dropped with the connection anyway), so a failed clean-up must not mask the real error.
    try:
        drop()
    except Exception:  # noqa: BLE001
        logger.warning("could not drop a staging table; it disappears when the connection closes", exc_info=True)


def open_warehouse(uri: str, schema: str = DEFAULT_SCHEMA) -> Warehouse:
    """Open the warehouse named by ``uri``: ``duckdb:///abs/path/warehouse.duckdb`` or ``postgresql://user[:pw]@host:port/db``.

    The DuckDB file's parent folder is created. ``ensure_schema()`` is not called: do it once per run
    before publishing. Raises ValueError for any other scheme or an invalid schema name.
    """
    validate_schema_name(schema)
    if not isinstance(uri, str) or "://" not in uri:
        raise ValueError(
            f"open_warehouse: the warehouse URI must look like scheme://..., with scheme one of {list(SUPPORTED_SCHEMES)}"
        )
    scheme, rest = uri.split("://", 1)
    # Only the scheme goes into error messages: the rest of a PostgreSQL URI may hold a password.
    if scheme == "duckdb":
        if not rest.startswith("/"):
            raise ValueError("open_warehouse: a DuckDB URI needs an absolute path, e.g. duckdb:///opt/airflow/data/warehouse.duckdb")
        return DuckDBWarehouse(rest, schema)
    if scheme in ("postgresql", "postgres"):
        return PostgresWarehouse(uri, schema)
    raise ValueError(
        f"open_warehouse: unsupported URI scheme {scheme!r}; supported: duckdb:///abs/path.duckdb, "
        f"postgresql://user[:password]@host:port/dbname (or postgres://)"
    )
