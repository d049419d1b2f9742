"""Publishes one day of recommendations (and its run record) to the warehouse atomically, in DuckDB or PostgreSQL.

A publish validates the recommendations (vectorised numpy checks), bulk-loads them and swaps the day's
partition in a single transaction, so readers see either the old day or the new one, never a mix. They may
come as a pandas DataFrame or as a pyarrow Table: a Table (e.g. ``pq.read_table`` of the fuse task's Parquet)
is checked on numpy views of its buffers and loaded as it is, skipping the conversion of Python string
objects to Arrow that a DataFrame needs (the largest cost of a DuckDB publish after the load itself).

* DuckDB: the rows, as Arrow, are registered on the connection (a private staging view) and
  ``DELETE`` day + ``INSERT … SELECT`` run in one transaction. The table has no index (see
  ``recsys.warehouse.schema``); uniqueness comes from validation plus whole-day replacement.
* PostgreSQL: partition exchange. The rows are COPYed (CSV written by pyarrow in large chunks, see
  ``copy_csv``) into a fresh table of the day with a ``CHECK (ds = day)``, its primary key is built in
  one sort, and the table is swapped in for the day's partition (DETACH + DROP the old one, ATTACH the
  new one). All of it is one transaction: a failure leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import numbers
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.warehouse.schema import (
    DEFAULT_SCHEMA,
    RECOMMENDATION_COLUMNS,
    RECOMMENDATION_FRAME_COLUMNS,
    RECOMMENDATION_KEY_COLUMNS,
    RECOMMENDATION_UNIQUE_KEY,
    RECOMMENDATIONS_TABLE,
    RUN_COLUMNS,
    RUN_RECORD_KEYS,
    RUNS_TABLE,
    partition_name,
    reader_role_ddl,
    recommendation_columns_ddl,
    schema_ddl,
    validate_schema_name,
)

__all__ = [
    "Warehouse",
    "DuckDBWarehouse",
    "PostgresWarehouse",
    "open_warehouse",
    "validate_recommendations",
    "copy_csv",
    "SUPPORTED_SCHEMES",
    "WarehouseUnavailableError",
]

logger = logging.getLogger(__name__)

SUPPORTED_SCHEMES = ("duckdb", "postgresql", "postgres")
_TEXT_COLUMNS = ("sources", "reason", "run_id")
_COUNT_KEYS = ("raw_rows", "clean_rows", "quarantined_rows", "users", "items", "published_rows")
_INT64_MAX = np.iinfo(np.int64).max
#: Rows per CSV chunk handed to COPY (about 5 MB of text for a typical recommendation row).
COPY_CHUNK_ROWS = 65_536
#: Seconds to wait for the PostgreSQL warehouse to answer before the publish fails (and Airflow retries).
CONNECT_TIMEOUT_S = 10


class WarehouseUnavailableError(ConnectionError):
    """The warehouse server could not be reached; the message names host:port/database, never the password."""


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


def validate_recommendations(recommendations: pd.DataFrame | pa.Table, ds: dt.date | str) -> pd.DataFrame | pa.Table:
    """Check recommendations (a pandas DataFrame or a pyarrow Table) against the contract and return them
    with exactly the contract's columns, as the same kind of object.

    Rules (each failure is a ValueError naming the rule and the number of offending rows): columns
    user_id, rank, product_id, score, sources, reason, run_id present; at least one row; no null in
    user_id, rank, product_id, which are integer columns (within BIGINT); (user_id, rank) and
    (user_id, product_id) unique; each user's ranks exactly 1..n; score numeric; sources, reason, run_id
    text or null (str, or bytes holding UTF-8; in Arrow: string, binary holding UTF-8, or a dictionary of
    those); a ds column, if present, equal to ``ds``. Extra columns are dropped.

    A DataFrame comes back as a copy with int64 keys, float64 score and text as str / None (rows in the
    input order); a Table as the table ``publish_partition`` loads: the warehouse's Arrow types (rank
    int32, text string), NaN scores as nulls, sharing the input's buffers wherever the types already match.
    """
    checked = _checked(recommendations, _as_date(ds, "publish_partition"))
    if isinstance(checked, pa.Table):
        return checked
    _arrow_table(checked)  # checks the text columns
    frame = checked[list(RECOMMENDATION_FRAME_COLUMNS)].copy()
    frame = frame.astype({"user_id": "int64", "rank": "int64", "product_id": "int64", "score": "float64"})
    for column in _TEXT_COLUMNS:
        # pandas' string dtype and NaN placeholders both become plain str / None for the database drivers.
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame.reset_index(drop=True)


def _checked(recommendations: pd.DataFrame | pa.Table, day: dt.date) -> pd.DataFrame | pa.Table:
    """What ``publish_partition`` loads, once every rule holds: a DataFrame itself (its text columns are
    checked while ``_arrow_table`` converts it), or an Arrow table already in the contract's schema."""
    if isinstance(recommendations, pd.DataFrame):
        _check_rules(_FrameColumns(recommendations), day)
        return recommendations
    if isinstance(recommendations, pa.Table):
        _check_rules(_TableColumns(recommendations), day)
        return _contract_table(recommendations)
    raise TypeError(
        f"publish_partition: recommendations must be a pandas DataFrame or a pyarrow Table, got {type(recommendations).__name__}"
    )


class _FrameColumns:
    """What ``_check_rules`` asks of a pandas DataFrame."""

    cast_hint = ".astype('int64')"

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.names = list(frame.columns)
        self.rows = len(frame)

    def ds(self) -> pd.Series:
        return self.frame["ds"]

    def null_key_rows(self) -> int:
        return int(self.frame[list(RECOMMENDATION_KEY_COLUMNS)].isna().any(axis=1).sum())

    def dtype(self, column: str) -> Any:
        return self.frame[column].dtype

    def is_integer(self, column: str) -> bool:
        return pd.api.types.is_integer_dtype(self.frame[column])

    def is_unsigned(self, column: str) -> bool:
        return pd.api.types.is_unsigned_integer_dtype(self.frame[column])

    def is_numeric(self, column: str) -> bool:
        values = self.frame[column]
        return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)

    def max(self, column: str) -> int:
        return int(self.frame[column].max())

    def int64(self, column: str) -> np.ndarray:
        return self.frame[column].to_numpy(dtype=np.int64)


class _TableColumns:
    """What ``_check_rules`` asks of a pyarrow Table: null counts are Arrow metadata, and the key columns are
    numpy views of the Arrow buffers (copied only to widen an int32 rank or join chunks)."""

    cast_hint = ".cast(pa.int64())"

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.names = table.column_names
        self.rows = table.num_rows

    def ds(self) -> pd.Series:
        return self.table.column("ds").to_pandas()  # rare, and read exactly like a DataFrame's ds column

    def null_key_rows(self) -> int:
        keys = [self.table.column(column) for column in RECOMMENDATION_KEY_COLUMNS]
        if not any(values.null_count for values in keys):
            return 0
        any_null = pc.is_null(keys[0])
        for values in keys[1:]:
            any_null = pc.or_(any_null, pc.is_null(values))
        return pc.sum(any_null).as_py()

    def dtype(self, column: str) -> Any:
        return self.table.column(column).type

    def is_integer(self, column: str) -> bool:
        return pa.types.is_integer(self.dtype(column))

    def is_unsigned(self, column: str) -> bool:
        return pa.types.is_unsigned_integer(self.dtype(column))

    def is_numeric(self, column: str) -> bool:
        return pa.types.is_integer(self.dtype(column)) or pa.types.is_floating(self.dtype(column))

    def max(self, column: str) -> int:
        return pc.max(self.table.column(column)).as_py()

    def int64(self, column: str) -> np.ndarray:
        return np.asarray(self.table.column(column).to_numpy(), dtype=np.int64)


def _check_rules(columns: _FrameColumns | _TableColumns, day: dt.date) -> None:
    """Raise the contract's ValueError for the first rule ``columns`` break (all but the text columns' rule)."""
    where = "publish_partition"
    missing = [column for column in RECOMMENDATION_FRAME_COLUMNS if column not in columns.names]
    if missing:
        raise ValueError(
            f"{where}: recommendations for {day} are missing column(s) {missing}; "
            f"the contract is {list(RECOMMENDATION_FRAME_COLUMNS)} (see recsys.warehouse.schema)"
        )
    if not columns.rows:
        # Publishing nothing would erase the day for every reader; that is never what a healthy run means.
        raise ValueError(f"{where}: recommendations for {day} are empty; refusing to replace the partition with nothing")

    if "ds" in columns.names:
        other_days = int((pd.to_datetime(columns.ds()).dt.date != day).sum())
        if other_days:
            raise ValueError(f"{where}: {other_days} row(s) have a ds column different from the ds argument {day}")

    null_keys = columns.null_key_rows()
    if null_keys:
        raise ValueError(f"{where}: {null_keys} row(s) have a null in {list(RECOMMENDATION_KEY_COLUMNS)}; drop or fix them")
    for column in RECOMMENDATION_KEY_COLUMNS:
        if not columns.is_integer(column):
            raise ValueError(
                f"{where}: column {column!r} must be an integer dtype (BIGINT/INTEGER in the warehouse), "
                f"got {columns.dtype(column)}; cast it with {columns.cast_hint}"
            )
        if columns.is_unsigned(column) and columns.max(column) > _INT64_MAX:
            raise ValueError(f"{where}: column {column!r} has values above the BIGINT maximum {_INT64_MAX}")
    if not columns.is_numeric("score"):
        raise ValueError(f"{where}: column 'score' must be numeric, got {columns.dtype('score')}")
    # The text columns (strings or nulls) are checked where each form becomes the loaded Arrow table: a frame's
    # by the conversion that loading needs anyway (see _arrow_table; a separate pass over 6M objects cost
    # ~40 ms), a table's by its cast to the contract's types (see _contract_table). Same ValueError for both.

    duplicated_ranks, duplicated_items, gapped = _key_violations(*(columns.int64(column) for column in ("user_id", "rank", "product_id")))
    if duplicated_ranks:
        raise ValueError(f"{where}: {duplicated_ranks} row(s) share a (user_id, rank) with another row; each rank must hold one item")
    if duplicated_items:
        raise ValueError(f"{where}: {duplicated_items} row(s) repeat a product within one user's list; deduplicate before ranking")
    if gapped:
        raise ValueError(
            f"{where}: {gapped} row(s) belong to users whose ranks are not exactly 1..n "
            f"(a gap, or not starting at 1); re-rank each user's list"
        )


def _text_column_error(column: str, kind: Any) -> ValueError:
    return ValueError(f"publish_partition: column {column!r} must hold strings or nulls, found {kind} values; join lists with ','")


def _key_violations(user: np.ndarray, rank: np.ndarray, product: np.ndarray) -> tuple[int, int, int]:
    """Rows in a repeated (user, rank), rows in a repeated (user, product), rows of users whose ranks are not 1..n.

    Counts are of every row involved (like pandas' ``duplicated(keep=False)``). The work is on arrays
    ordered by (user, rank): frames normally arrive in that order, which one O(n) comparison confirms;
    otherwise one lexsort puts them there. Then repeats are equal neighbours, users are runs of equal
    ids, and the ranks of a run with no repeated rank are 1..n iff the first is 1 and the last is n.
    """
    n = len(user)
    same_user = user[1:] == user[:-1]
    if not np.all((user[1:] > user[:-1]) | (same_user & (rank[1:] >= rank[:-1]))):
        order = np.lexsort((rank, user))
        user, rank, product = user[order], rank[order], product[order]
        same_user = user[1:] == user[:-1]
    duplicated_ranks = _rows_in_runs(same_user & (rank[1:] == rank[:-1]))

    starts = np.flatnonzero(np.concatenate(([True], ~same_user)))
    sizes = np.diff(np.append(starts, n))
    gapped_users = (rank[starts] != 1) | (rank[starts + sizes - 1] != sizes)
    gapped = int(sizes[gapped_users].sum())

    # Products within a user: sort (user index, product) pairs. They usually pack into one int64 key
    # (user index in the high bits, product offset in the low bits), which sorts far faster than a lexsort.
    group = np.repeat(np.arange(len(starts), dtype=np.int64), sizes)
    low = int(product.min())
    offset_bits = (int(product.max()) - low).bit_length()
    if offset_bits + (len(starts) - 1).bit_length() <= 63:
        keys = (group << offset_bits) | (product - np.int64(low))  # wraps mod 2**64 to the exact offset
        # The keys are already ordered by user (the high bits), so they are short unsorted runs in ascending
        # order: timsort ("stable") merges those almost for free (9 ms for 2M keys vs 170 ms for quicksort).
        keys.sort(kind="stable")
        same_item = keys[1:] == keys[:-1]
    else:
        order = np.lexsort((product, group))
        group, product = group[order], product[order]
        same_item = (group[1:] == group[:-1]) & (product[1:] == product[:-1])
    return duplicated_ranks, _rows_in_runs(same_item), gapped


def _rows_in_runs(equal_to_next: np.ndarray) -> int:
    """Given sorted values' neighbour equality (length n-1), the number of values equal to another one."""
    involved = np.zeros(len(equal_to_next) + 1, dtype=bool)
    involved[1:] |= equal_to_next
    involved[:-1] |= equal_to_next
    return int(involved.sum())


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
    # Unique per publish (ds + random suffix): the DuckDB name the frame is registered under (private to the
    # connection), and in PostgreSQL the day's load table, which no other session sees before it commits.
    return f"recsys_staging_{day:%Y%m%d}_{uuid.uuid4().hex[:12]}"


def _arrow_schema() -> pa.Schema:
    return pa.schema(
        [
            ("user_id", pa.int64()),
            ("rank", pa.int32()),
            ("product_id", pa.int64()),
            ("score", pa.float64()),
            ("sources", pa.string()),
            ("reason", pa.string()),
            ("run_id", pa.string()),
        ]
    )


# Arrow types a text column may have (alone or as a dictionary's values): Arrow would also cast numbers or
# lists to text, which the contract rejects, as it does for a DataFrame.
_ARROW_TEXT_TYPES = (
    pa.types.is_string,
    pa.types.is_large_string,
    pa.types.is_string_view,
    pa.types.is_binary,
    pa.types.is_large_binary,
    pa.types.is_binary_view,
    pa.types.is_null,
)


def _contract_table(table: pa.Table) -> pa.Table:
    """A checked Arrow ``table``'s contract columns in the warehouse types (``_arrow_schema``), NaN scores as
    nulls (what they become from a DataFrame). A column already of its type is passed on without a copy."""
    columns = []
    for field in _arrow_schema():
        values = table.column(field.name)
        if field.name in _TEXT_COLUMNS:
            values = _arrow_text(field.name, values)
        else:
            values = values.cast(field.type)  # safe cast: the checks already ruled out what would overflow
        if field.name == "score":
            nan = pc.is_nan(values)
            if pc.any(nan).as_py():
                values = pc.if_else(nan, pa.scalar(None, pa.float64()), values)
        columns.append(values)
    return pa.Table.from_arrays(columns, schema=_arrow_schema())


def _arrow_text(column: str, values: pa.ChunkedArray) -> pa.ChunkedArray:
    """``values`` as Arrow strings, or the contract's ValueError if they are not text (or not UTF-8)."""
    value_type = values.type.value_type if pa.types.is_dictionary(values.type) else values.type
    if not any(is_text(value_type) for is_text in _ARROW_TEXT_TYPES):
        raise _text_column_error(column, values.type)
    try:
        return values.cast(pa.string())
    except pa.ArrowInvalid as error:  # binary holding something other than UTF-8
        raise _text_column_error(column, f"non-UTF-8 {values.type}") from error


def _arrow_table(data: pd.DataFrame | pa.Table, whole: pd.DataFrame | None = None) -> pa.Table:
    """Checked ``data`` as an Arrow table with the warehouse types: a table from ``_checked`` as it is, a
    frame converted (NaN scores and text become nulls).

    A frame's text column holding anything but str (or UTF-8 bytes) and nulls raises the contract's
    ValueError, worded from ``whole`` (the full frame, when ``data`` is a slice of it).
    """
    if isinstance(data, pa.Table):
        return data
    try:
        # The schema picks the contract's columns out of the caller's frame (by name) without copying it first.
        # One thread: the text columns hold Python objects, so pyarrow's thread pool only adds start-up latency.
        return pa.Table.from_pandas(data, schema=_arrow_schema(), preserve_index=False, nthreads=1)
    except (pa.ArrowTypeError, pa.ArrowInvalid) as error:
        for column in _TEXT_COLUMNS:
            try:
                pa.array(data[column], type=pa.string(), from_pandas=True)
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                raise _text_column_error(column, pd.api.types.infer_dtype((data if whole is None else whole)[column], skipna=True)) from error
        raise


def _arrow_batches(data: pd.DataFrame | pa.Table, chunk_rows: int = COPY_CHUNK_ROWS) -> Iterator[pa.RecordBatch]:
    """``_arrow_table`` of ``data`` as record batches of at most ``chunk_rows`` rows. A frame is converted
    lazily, slice by slice: fed to COPY, each slice is converted while the server is still parsing the
    previous one, so the conversion costs no wall time."""
    if isinstance(data, pa.Table):
        yield from data.to_batches(max_chunksize=chunk_rows)
        return
    for start in range(0, len(data), chunk_rows):
        yield from _arrow_table(data.iloc[start : start + chunk_rows], whole=data).to_batches()


def copy_csv(copy: Any, data: Any, chunk_rows: int = COPY_CHUNK_ROWS) -> None:
    """Feed Arrow ``data`` (a table, or an iterable of record batches) to a psycopg
    ``COPY … FROM STDIN (FORMAT csv)`` as CSV text written by pyarrow.

    The fastest client-side feed measured for psycopg (about 2x psycopg's per-row ``write_row``): pyarrow
    renders ``chunk_rows`` rows at a time in C++ and each chunk goes out in one ``copy.write``. The
    encoding is exactly PostgreSQL's CSV: every string is quoted (so "" is the empty string and quotes,
    commas and newlines survive), a null is an empty unquoted field (NULL), doubles are written in their
    shortest round-trip form (inf/-inf included), and the columns are in the data's order.
    """
    import pyarrow.csv as pacsv

    batches = data.to_batches(max_chunksize=chunk_rows) if hasattr(data, "to_batches") else data
    options = pacsv.WriteOptions(include_header=False)
    sink = io.BytesIO()
    for batch in batches:
        sink.seek(0)
        sink.truncate()
        pacsv.write_csv(batch, sink, options)
        copy.write(sink.getvalue())


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
        recommendations: pd.DataFrame | pa.Table,
        run_record: Mapping[str, Any],
        *,
        _before_swap: BeforeSwapHook | None = None,
    ) -> int:
        """Replace the ``ds`` partition with ``recommendations`` and upsert its pipeline_runs row, atomically.

        Args:
            ds: the partition's day (datetime.date or 'YYYY-MM-DD').
            recommendations: a pandas DataFrame or a pyarrow Table; see ``validate_recommendations`` for the
                contract. A Table is checked and loaded without a detour through pandas (its numeric columns
                are read in place), the fast path when the rows come from Parquet (``pq.read_table``).
            run_record: airflow_run_id, mlflow_run_id, raw_rows, clean_rows, quarantined_rows, users, items,
                metrics ({model_name: {metric: value}}, stored as JSON text) and optionally published_rows
                (must equal the number of rows if given).
            _before_swap: test hook, called inside the swap transaction once the new day is loaded and the
                run row upserted, just before the swap becomes visible: before COMMIT in DuckDB, and before the
                partition exchange (which is then committed at once) in PostgreSQL.

        Returns:
            The number of rows published.

        Raises:
            ValueError / TypeError: the recommendations or run record break the contract (nothing is written).
            Any database error or exception from ``_before_swap``: rolled back, the old partition is intact.
        """
        day = _as_date(ds, "publish_partition")
        data = _checked(recommendations, day)
        run_row = _run_row(day, run_record, len(data))
        self._publish(day, data, run_row, _before_swap)
        logger.info("published %d recommendation rows for %s to %s.%s", len(data), day, self.schema, RECOMMENDATIONS_TABLE)
        return len(data)

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
    def _publish(self, day: dt.date, data: pd.DataFrame | pa.Table, run_row: dict[str, Any], before_swap: BeforeSwapHook | None) -> None:
        """Replace the day with ``data`` (from ``_checked``: a checked frame, or an Arrow table in the contract's
        schema) and upsert ``run_row``, in one transaction that calls ``before_swap`` just before the swap."""

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


def _connect_waiting_for_readers(duckdb, path: Path, timeout_s: float = 60.0):
    """``duckdb.connect`` that waits out short read-only readers (the UI page opens the file per request).

    Writers exclude each other with the flock; a reader that does not take it (``read_only=True``
    connections) still makes DuckDB refuse a writer with "Could not set lock on file" for a moment.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            logger.info("DuckDB warehouse %s is open in another process; retrying in %.1fs", path, delay)
            time.sleep(delay)
            delay = min(2.0, delay * 2)


class _ProcessFileLock:
    """An exclusive flock on a file, shared by every warehouse instance of this process on the same database.

    DuckDB lets one process open a file read-write, and connections within that process share one database
    instance; so other *processes* (another day's publish, the export DAG) must wait for this one, while
    instances in this process (threads, tests) must not wait for each other. The first instance takes the
    flock, the last one to close releases it; the kernel releases it too if the process dies.
    """

    _held: dict[str, list] = {}  # path -> [open file holding the flock, number of instances]
    _guard = threading.Lock()

    def __init__(self, path: Path) -> None:
        import fcntl

        self.path = str(path)
        with self._guard:
            entry = self._held.get(self.path)
            if entry is None:
                handle = open(path, "a+")  # noqa: SIM115 - held until the last instance closes
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    logger.info("waiting for another process to close the DuckDB warehouse (%s)", path)
                    fcntl.flock(handle, fcntl.LOCK_EX)
                entry = self._held[self.path] = [handle, 0]
            entry[1] += 1
        self._open = True

    def close(self) -> None:
        with self._guard:
            if not self._open:
                return
            self._open = False
            entry = self._held[self.path]
            entry[1] -= 1
            if entry[1] == 0:
                entry[0].close()  # closing the file releases the flock
                del self._held[self.path]


def _duckdb_write_lock(path: Path) -> threading.Lock:
    with _DUCKDB_WRITE_LOCKS_GUARD:
        return _DUCKDB_WRITE_LOCKS.setdefault(str(path), threading.Lock())


class DuckDBWarehouse(Warehouse):
    """Embedded warehouse in one DuckDB file (a single writer process; threads each open their own instance).

    ``recommendations`` has no index here: the writer keeps (ds, user_id, rank) unique by validating each
    frame and replacing whole days under a per-file lock (see ``recsys.warehouse.schema``).
    """

    dialect = "duckdb"

    def __init__(self, path: str | Path, schema: str = DEFAULT_SCHEMA) -> None:
        super().__init__(schema)
        import duckdb  # imported here so a PostgreSQL-only deployment does not need it

        self.path = Path(path)
        if not self.path.is_absolute():
            raise ValueError(f"DuckDBWarehouse: the database path must be absolute (duckdb:///abs/path.duckdb), got {str(path)!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = _duckdb_write_lock(self.path.resolve())
        # DuckDB admits one process per file: other processes (another day's publish, the export DAG) wait
        # here for this one to close, instead of failing on "Could not set lock on file".
        self._process_lock = _ProcessFileLock(self.path.with_name(self.path.name + ".lock"))
        try:
            self._connection = _connect_waiting_for_readers(duckdb, self.path)
        except BaseException:
            self._process_lock.close()
            raise

    def ensure_schema(self) -> None:
        connection = self._connection
        with self._write_lock:
            connection.begin()
            try:
                legacy = self._set_aside_indexed_table()
                for statement in schema_ddl(self.schema, self.dialect):
                    connection.execute(statement)
                if legacy:
                    self._move_rows_from(legacy)
                connection.commit()
            except BaseException:
                _rollback_quietly(connection.rollback)
                raise

    def _set_aside_indexed_table(self) -> str | None:
        """Rename a ``recommendations`` table created with the old PRIMARY KEY out of the way, for
        ``_move_rows_from`` to copy into the index-free table (DuckDB cannot drop a key in place)."""
        (keys,) = self._connection.execute(
            "SELECT count(*) FROM duckdb_constraints() WHERE schema_name = ? AND table_name = ? "
            "AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')",
            [self.schema, RECOMMENDATIONS_TABLE],
        ).fetchone()
        if not keys:
            return None
        legacy = f"{RECOMMENDATIONS_TABLE}_indexed"
        self._connection.execute(f"ALTER TABLE {self.schema}.{RECOMMENDATIONS_TABLE} RENAME TO {legacy}")
        return legacy

    def _move_rows_from(self, legacy: str) -> None:
        columns = ", ".join(RECOMMENDATION_COLUMNS)
        self._connection.execute(
            f"INSERT INTO {self.schema}.{RECOMMENDATIONS_TABLE} ({columns}) "
            f"SELECT {columns} FROM {self.schema}.{legacy} ORDER BY {', '.join(RECOMMENDATION_UNIQUE_KEY)}"
        )
        # The latest view is bound by name when queried, so it now reads the new table.
        self._connection.execute(f"DROP TABLE {self.schema}.{legacy}")
        logger.warning(
            "migrated %s.%s to the index-free layout (uniqueness of %s is now kept by the writer)",
            self.schema,
            RECOMMENDATIONS_TABLE,
            RECOMMENDATION_UNIQUE_KEY,
        )

    def _publish(self, day: dt.date, data: pd.DataFrame | pa.Table, run_row: dict[str, Any], before_swap: BeforeSwapHook | None) -> None:
        # Staging is the Arrow table registered on this connection only (no copy into a temp table). pyarrow's
        # conversion plus DuckDB's insert from Arrow measured ~20% faster than DuckDB scanning the pandas frame.
        arrow_table = _arrow_table(data)
        staging = _staging_name(day)
        columns = ", ".join(RECOMMENDATION_FRAME_COLUMNS)
        connection = self._connection
        with self._write_lock:
            connection.register(staging, arrow_table)
            try:
                connection.begin()
                try:
                    # Replacing the whole day is what keeps (ds, user_id, rank) unique without an index:
                    # the frame has unique (user_id, rank), and nothing else of the day survives.
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
                _drop_staging_quietly(lambda: connection.unregister(staging))

    def _read_partition_rows(self, day: dt.date) -> list[tuple]:
        return self._connection.execute(self._select_partition_sql("?"), [day]).fetchall()

    def _read_run_rows(self) -> list[tuple]:
        return self._connection.execute(self._select_runs_sql()).fetchall()

    def close(self) -> None:
        self._connection.close()
        self._process_lock.close()


class PostgresWarehouse(Warehouse):
    """Shared warehouse in PostgreSQL (psycopg 3); one connection per instance, any number of writer processes.

    ``recommendations`` is LIST-partitioned by ds, one partition per day, and a publish exchanges the day's
    partition (see ``_publish``). Locking, which readers should know about:

    * first publish of a day: ATTACH takes SHARE UPDATE EXCLUSIVE on the parent for the final moment of the
      publish; readers are never blocked, and publishes of other days queue for that moment only.
    * rerun of a day: DETACH + DROP of the old partition take ACCESS EXCLUSIVE on the parent for the
      final moment (milliseconds): queries on recommendations wait for the commit, then see the new day.
      A query already running delays the swap until it ends (new queries queue behind the swap meanwhile).
    * a REPEATABLE READ / SERIALIZABLE transaction whose snapshot is older than the publish and that reads
      the day only after the swap sees it empty (DDL is not MVCC-aware; the rows are written FROZEN, so
      snapshots taken while the publish ran see the complete new day). READ COMMITTED readers, the
      default, always see one complete day.

    The publishing role needs CREATE on the schema and must own ``recommendations`` (ATTACH/DETACH are
    owner-only); both hold for the role that ran ``ensure_schema``.
    """

    dialect = "postgresql"

    def __init__(self, conninfo: str, schema: str = DEFAULT_SCHEMA) -> None:
        super().__init__(schema)
        import psycopg  # imported here so a DuckDB-only deployment does not need it

        self._psycopg = psycopg
        # Autocommit, with explicit transaction blocks: nothing is ever left open between calls.
        try:
            self._connection = psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.OperationalError as exc:
            raise WarehouseUnavailableError(
                f"cannot reach the PostgreSQL warehouse at {_endpoint(conninfo)}: {(str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}. "
                "Check the warehouse_default connection (host, port, database, login) and that the server is up; "
                "nothing was published."
            ) from exc

    def _schema_lock_key(self) -> str:
        return f"recsys.ensure_schema:{self.schema}"

    def ensure_schema(self) -> None:
        connection = self._connection
        with connection.transaction(), connection.cursor() as cursor:
            # Concurrent CREATE ... IF NOT EXISTS / OR REPLACE can still collide in the catalogue; queue them.
            # Publishes hold this lock shared while they swap partitions (GRANT ON ALL TABLES touches those).
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [self._schema_lock_key()])
            legacy = self._set_aside_unpartitioned_table(cursor)
            for statement in schema_ddl(self.schema, self.dialect):
                cursor.execute(statement)
            if legacy:
                self._move_rows_into_partitions(cursor, legacy)
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

    def _set_aside_unpartitioned_table(self, cursor: Any) -> str | None:
        """Rename a plain (pre-partitioning) ``recommendations`` out of the way; ``_move_rows_into_partitions``
        then copies its rows into the partitioned table created by the DDL and drops it."""
        row = cursor.execute(
            "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            [self.schema, RECOMMENDATIONS_TABLE],
        ).fetchone()
        if row is None or row[0] == "p":
            return None
        if row[0] != "r":
            raise RuntimeError(f"{self.schema}.{RECOMMENDATIONS_TABLE} exists but is not a table (relkind {row[0]!r})")
        legacy = f"{RECOMMENDATIONS_TABLE}_unpartitioned"
        cursor.execute(f"ALTER TABLE {self.schema}.{RECOMMENDATIONS_TABLE} RENAME TO {legacy}")
        # Its key's index would hold the name the new table's primary key needs.
        cursor.execute(f"ALTER TABLE {self.schema}.{legacy} DROP CONSTRAINT IF EXISTS {RECOMMENDATIONS_TABLE}_pkey")
        return legacy

    def _move_rows_into_partitions(self, cursor: Any, legacy: str) -> None:
        from psycopg import sql

        days = [day for (day,) in cursor.execute(f"SELECT DISTINCT ds FROM {self.schema}.{legacy} ORDER BY ds").fetchall()]
        for day in days:
            cursor.execute(
                sql.SQL("CREATE TABLE {partition} PARTITION OF {parent} FOR VALUES IN ({day})").format(
                    partition=sql.Identifier(self.schema, partition_name(day)),
                    parent=sql.Identifier(self.schema, RECOMMENDATIONS_TABLE),
                    day=sql.Literal(day),
                )
            )
        columns = ", ".join(RECOMMENDATION_COLUMNS)
        cursor.execute(f"INSERT INTO {self.schema}.{RECOMMENDATIONS_TABLE} ({columns}) SELECT {columns} FROM {self.schema}.{legacy}")
        # The DDL's CREATE OR REPLACE VIEW has already re-pointed the latest view at the new table.
        cursor.execute(f"DROP TABLE {self.schema}.{legacy}")
        logger.warning(
            "migrated %s.%s to one partition per ds (%d days); grants other than %s's were not carried over",
            self.schema,
            RECOMMENDATIONS_TABLE,
            len(days),
            "recsys_reader",
        )

    def _publish(self, day: dt.date, data: pd.DataFrame | pa.Table, run_row: dict[str, Any], before_swap: BeforeSwapHook | None) -> None:
        """Partition exchange, in one transaction.

        1. CREATE the day's load table (same columns and CHECKs as the parent, ds defaulting to the day,
           plus CHECK (ds = day)), COPY the rows in (CSV, FREEZE: the table is new in this transaction),
           then ADD the PRIMARY KEY: one sort, far cheaper than maintaining an index row by row, and
           nothing like DELETE + INSERT into a shared index (dead tuples, WAL, unique checks against them).
        2. Lock (advisory) the day against a concurrent publish of the same day and ensure_schema, upsert
           the run row, call ``before_swap``.
        3. DETACH + DROP the day's old partition if any, rename the load table to the partition's name and
           ATTACH it. The CHECK proves every row belongs to the day, so ATTACH does not scan, and its primary
           key becomes the partition's part of the parent's key. COMMIT makes the new day visible at once.
        A failure anywhere rolls it all back: the old partition stays attached, no load table is left.
        """
        from psycopg import sql

        load = _staging_name(day)
        partition = partition_name(day)
        schema = self.schema
        parent = sql.Identifier(schema, RECOMMENDATIONS_TABLE)
        load_table = sql.Identifier(schema, load)
        day_literal = sql.Literal(day)  # DDL takes no bind parameters; a date renders as '2024-03-01'::date
        columns = ", ".join(RECOMMENDATION_FRAME_COLUMNS)
        connection = self._connection
        with connection.transaction(), connection.cursor() as cursor:
            # The key's sort then runs in memory (2M rows need ~150 MB); LOCAL ends with the transaction.
            cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
            cursor.execute(
                sql.SQL("CREATE TABLE {load} ({columns}, CONSTRAINT partition_ds_check CHECK (ds = {day}))").format(
                    load=load_table, columns=sql.SQL(recommendation_columns_ddl(self.dialect)), day=day_literal
                )
            )
            cursor.execute(sql.SQL("ALTER TABLE {load} ALTER COLUMN ds SET DEFAULT {day}").format(load=load_table, day=day_literal))
            with cursor.copy(sql.SQL("COPY {load} ({columns}) FROM STDIN (FORMAT csv, FREEZE)").format(load=load_table, columns=sql.SQL(columns))) as copy:
                copy_csv(copy, _arrow_batches(data))
            cursor.execute(
                sql.SQL("ALTER TABLE {load} ADD CONSTRAINT {key} PRIMARY KEY ({columns})").format(
                    load=load_table, key=sql.Identifier(f"{load}_pkey"), columns=sql.SQL(", ".join(RECOMMENDATION_UNIQUE_KEY))
                )
            )

            # Shared: publishes of different days proceed together, ensure_schema (exclusive) waits for them.
            cursor.execute("SELECT pg_advisory_xact_lock_shared(hashtext(%s))", [self._schema_lock_key()])
            # Two publishes of the same day: the second waits here and then replaces the first's partition.
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"recsys.publish:{schema}:{day.isoformat()}"])
            cursor.execute(_upsert_run_sql(schema, "%s"), [run_row[column] for column in RUN_COLUMNS])
            if before_swap is not None:
                before_swap()

            attached = cursor.execute(
                "SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE i.inhparent = %s::regclass AND n.nspname = %s AND c.relname = %s",
                [f"{schema}.{RECOMMENDATIONS_TABLE}", schema, partition],
            ).fetchone()
            if attached:
                cursor.execute(sql.SQL("ALTER TABLE {parent} DETACH PARTITION {old}").format(parent=parent, old=sql.Identifier(schema, partition)))
                cursor.execute(sql.SQL("DROP TABLE {old}").format(old=sql.Identifier(schema, partition)))
            cursor.execute(sql.SQL("ALTER TABLE {load} RENAME TO {partition}").format(load=load_table, partition=sql.Identifier(partition)))
            new = sql.Identifier(schema, partition)
            cursor.execute(
                sql.SQL("ALTER TABLE {new} RENAME CONSTRAINT {key} TO {partition_key}").format(
                    new=new, key=sql.Identifier(f"{load}_pkey"), partition_key=sql.Identifier(f"{partition}_pkey")
                )
            )
            cursor.execute(sql.SQL("ALTER TABLE {new} ALTER COLUMN ds DROP DEFAULT").format(new=new))
            cursor.execute(sql.SQL("ALTER TABLE {parent} ATTACH PARTITION {new} FOR VALUES IN ({day})").format(parent=parent, new=new, day=day_literal))

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
    # Staging is private to the connection (gone with it anyway), so a failed clean-up must not mask the real error.
    try:
        drop()
    except Exception:  # noqa: BLE001
        logger.warning("could not drop a staging table; it disappears when the connection closes", exc_info=True)


def _endpoint(conninfo: str) -> str:
    """host:port/database of a PostgreSQL URI, without the login or password (for error messages)."""
    from urllib.parse import urlsplit

    parts = urlsplit(conninfo)
    return f"{parts.hostname}:{parts.port or 5432}{parts.path or ''}"


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
