"""Integration tests of recsys.warehouse against real DuckDB files and a real PostgreSQL (skipped if unreachable).

Each PostgreSQL test works in its own schema (recsys_test_<uuid>) that is dropped afterwards, so tests can run
against a shared server without seeing each other's rows.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from recsys.warehouse.schema import LATEST_VIEW, RECOMMENDATIONS_TABLE, RUNS_TABLE, validate_schema_name
from recsys.warehouse.writer import Warehouse, open_warehouse

POSTGRES_URI = "postgresql://postgres@127.0.0.1:5432/test"

DAY_1 = dt.date(2024, 3, 1)
DAY_2 = dt.date(2024, 3, 2)


def postgres_unreachable_reason() -> str | None:
    """None if the test PostgreSQL answers within 3 s, else why not."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URI, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any failure means "no server to test against"
        return f"PostgreSQL not reachable at {POSTGRES_URI} within 3 s: {type(error).__name__}: {error}"
    return None


@dataclass
class Backend:
    """One warehouse under test: how to open writers and raw reader connections to it."""

    name: str
    uri: str
    schema: str
    opened: list[Warehouse] = field(default_factory=list)
    raw_connections: list = field(default_factory=list)

    def open(self) -> Warehouse:
        warehouse = open_warehouse(self.uri, self.schema)
        self.opened.append(warehouse)
        return warehouse

    def raw_query(self) -> Callable[[str, list], list[tuple]]:
        """A query function on a new connection that bypasses the Warehouse class (what a dashboard would do)."""
        if self.name == "duckdb":
            import duckdb

            connection = duckdb.connect(self.uri.removeprefix("duckdb://"))
            self.raw_connections.append(connection)
            return lambda sql, params=(): connection.execute(sql.replace("%s", "?"), list(params)).fetchall()
        import psycopg

        connection = psycopg.connect(self.uri, autocommit=True)
        self.raw_connections.append(connection)

        def query(sql: str, params=()) -> list[tuple]:
            cursor = connection.execute(sql, list(params))
            return cursor.fetchall() if cursor.description else []  # SET and friends return no rows

        return query


@pytest.fixture(params=["duckdb", "postgresql"])
def backend(request, tmp_path: Path) -> Iterator[Backend]:
    schema = f"recsys_test_{uuid.uuid4().hex[:12]}"
    if request.param == "duckdb":
        # A nested, not-yet-existing folder: open_warehouse must create it.
        uri = f"duckdb://{tmp_path / 'warehouse' / 'nested' / 'warehouse.duckdb'}"
    else:
        reason = postgres_unreachable_reason()
        if reason:
            pytest.skip(reason)
        uri = POSTGRES_URI
    under_test = Backend(request.param, uri, schema)
    under_test.open().ensure_schema()
    yield under_test
    for closable in [*under_test.opened, *under_test.raw_connections]:
        closable.close()
    if request.param == "postgresql":
        import psycopg

        with psycopg.connect(POSTGRES_URI, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA IF EXISTS {validate_schema_name(schema)} CASCADE")


def make_recommendations(n_users: int, k: int, seed: int, run_id: str = "run-a") -> pd.DataFrame:
    """k ranked rows per user with distinct products, in shuffled row order."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(1, n_users + 1, dtype=np.int64) * 1000, k)
    ranks = np.tile(np.arange(1, k + 1, dtype=np.int64), n_users)
    products = rng.choice(10**9, size=n_users * k, replace=False).astype(np.int64)
    frame = pd.DataFrame(
        {
            "user_id": users,
            "rank": ranks,
            "product_id": products,
            "score": np.round(rng.random(n_users * k), 6),
            "sources": np.where(ranks % 2 == 0, "collaborative,content", "sequence"),
            "reason": [f"because you viewed {p % 97}" for p in products],
            "run_id": run_id,
        }
    )
    frame["reason"] = frame["reason"].astype(object)
    frame.loc[frame.index[::7], "reason"] = None  # nullable text survives the round trip
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def sorted_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["user_id", "rank"]).reset_index(drop=True)


#: The two forms publish_partition accepts: a pandas DataFrame, and a pyarrow Table (the pipeline's fast path).
FORMS = ["pandas", "arrow"]


def as_form(frame: pd.DataFrame, form: str) -> pd.DataFrame | pa.Table:
    """``frame`` itself, or the Arrow table pyarrow makes of it (NaN becomes null, object text becomes string)."""
    return frame if form == "pandas" else pa.Table.from_pandas(frame, preserve_index=False)


def run_record(airflow_run_id: str = "scheduled__2024-03-01", **overrides) -> dict:
    record = {
        "airflow_run_id": airflow_run_id,
        "mlflow_run_id": "mlflow-123",
        "raw_rows": 1000,
        "clean_rows": 990,
        "quarantined_rows": 10,
        "users": 3,
        "items": 50,
        "metrics": {"hybrid": {"ndcg@10": 0.21, "recall@10": 0.3}, "popularity": {"ndcg@10": 0.1}},
    }
    record.update(overrides)
    return record


def count_rows(query, schema: str, day: dt.date) -> int:
    return query(f"SELECT count(*) FROM {schema}.{RECOMMENDATIONS_TABLE} WHERE ds = %s", [day])[0][0]


# ------------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("form", FORMS)
def test_publish_then_read_back_equals_input(backend: Backend, form: str):
    warehouse = backend.open()
    recommendations = make_recommendations(n_users=5, k=4, seed=1)
    recommendations.loc[3, "score"] = np.nan  # a null score is allowed and stays null

    published = warehouse.publish_partition(DAY_1, as_form(recommendations, form), run_record())

    assert published == 20
    read_back = warehouse.read_partition(DAY_1)
    pd.testing.assert_frame_equal(read_back, sorted_frame(recommendations))
    assert read_back["reason"].isna().sum() == recommendations["reason"].isna().sum() > 0
    if backend.name == "duckdb":
        assert Path(backend.uri.removeprefix("duckdb://")).is_file()


def test_read_of_unpublished_day_is_empty(backend: Backend):
    read_back = backend.open().read_partition("2030-01-01")
    assert read_back.empty
    assert list(read_back.columns) == ["user_id", "rank", "product_id", "score", "sources", "reason", "run_id"]


def test_rerun_of_same_day_replaces_it_with_exactly_one_copy(backend: Backend):
    warehouse = backend.open()
    first = make_recommendations(n_users=4, k=3, seed=2, run_id="run-a")
    warehouse.publish_partition(DAY_1, first, run_record())
    warehouse.publish_partition(DAY_1, first, run_record())

    again = warehouse.read_partition(DAY_1)
    pd.testing.assert_frame_equal(again, sorted_frame(first))
    assert count_rows(backend.raw_query(), backend.schema, DAY_1) == 12

    # A rerun with different (and fewer) rows replaces the day completely: no leftovers of the old run.
    second = make_recommendations(n_users=2, k=2, seed=3, run_id="run-b")
    warehouse.publish_partition(DAY_1, second, run_record())
    pd.testing.assert_frame_equal(warehouse.read_partition(DAY_1), sorted_frame(second))


def test_publishing_another_day_leaves_the_first_untouched(backend: Backend):
    warehouse = backend.open()
    day_1 = make_recommendations(n_users=3, k=3, seed=4, run_id="day-1")
    day_2 = make_recommendations(n_users=6, k=2, seed=5, run_id="day-2")
    warehouse.publish_partition(DAY_1, day_1, run_record())
    warehouse.publish_partition(DAY_2, day_2, run_record("scheduled__2024-03-02"))

    pd.testing.assert_frame_equal(warehouse.read_partition(DAY_1), sorted_frame(day_1))
    pd.testing.assert_frame_equal(warehouse.read_partition(DAY_2), sorted_frame(day_2))


def test_ensure_schema_is_idempotent_and_keeps_data(backend: Backend):
    warehouse = backend.open()
    recommendations = make_recommendations(n_users=2, k=2, seed=6)
    warehouse.publish_partition(DAY_1, recommendations, run_record())
    warehouse.ensure_schema()
    warehouse.ensure_schema()
    pd.testing.assert_frame_equal(warehouse.read_partition(DAY_1), sorted_frame(recommendations))


# -------------------------------------------------------------------------------------------------- atomicity


class InjectedFailure(RuntimeError):
    pass


def fail_before_swap() -> None:
    raise InjectedFailure("injected by the test just before the swap commits")


@pytest.mark.parametrize("form", FORMS)
def test_failure_before_swap_keeps_the_old_partition(backend: Backend, form: str):
    warehouse = backend.open()
    old = make_recommendations(n_users=3, k=3, seed=7, run_id="old")
    warehouse.publish_partition(DAY_1, old, run_record("old-airflow-run"))

    new = make_recommendations(n_users=5, k=5, seed=8, run_id="new")
    with pytest.raises(InjectedFailure):
        warehouse.publish_partition(DAY_1, as_form(new, form), run_record("new-airflow-run"), _before_swap=fail_before_swap)

    pd.testing.assert_frame_equal(warehouse.read_partition(DAY_1), sorted_frame(old))
    runs = warehouse.read_runs()
    assert runs["airflow_run_id"].tolist() == ["old-airflow-run"]
    # The same connection still works after the rollback.
    assert warehouse.publish_partition(DAY_1, new, run_record("new-airflow-run")) == 25
    pd.testing.assert_frame_equal(warehouse.read_partition(DAY_1), sorted_frame(new))


def test_failure_before_swap_of_a_new_day_writes_nothing(backend: Backend):
    warehouse = backend.open()
    with pytest.raises(InjectedFailure):
        warehouse.publish_partition(DAY_2, make_recommendations(3, 3, seed=9), run_record(), _before_swap=fail_before_swap)
    assert warehouse.read_partition(DAY_2).empty
    assert warehouse.read_runs().empty
    # No staging table is left behind in the shared schema either (staging is TEMP and dropped).
    tables = backend.raw_query()(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY table_name", [backend.schema]
    )
    assert sorted(name for (name,) in tables) == sorted([LATEST_VIEW, RECOMMENDATIONS_TABLE, RUNS_TABLE])


def test_reader_only_ever_sees_old_or_new_count_during_a_large_publish(backend: Backend):
    writer = backend.open()
    old = make_recommendations(n_users=100, k=10, seed=10)
    writer.publish_partition(DAY_1, old, run_record())
    new = make_recommendations(n_users=2500, k=20, seed=11)  # 50,000 rows
    old_count, new_count = len(old), len(new)

    swap_open = threading.Event()

    def hold_swap_open() -> None:
        # Keep the uncommitted swap (old rows deleted, new rows inserted) open while the reader polls.
        swap_open.set()
        time.sleep(0.5)

    query = backend.raw_query()
    counts_during_swap: list[int] = []
    all_counts: list[int] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        publish = pool.submit(writer.publish_partition, DAY_1, new, run_record(), _before_swap=hold_swap_open)
        while not publish.done():
            count = count_rows(query, backend.schema, DAY_1)
            all_counts.append(count)
            if swap_open.is_set() and not publish.done():
                counts_during_swap.append(count)
        assert publish.result() == new_count
    all_counts.append(count_rows(query, backend.schema, DAY_1))

    assert set(all_counts) <= {old_count, new_count}, f"reader saw a partial day: {sorted(set(all_counts))}"
    assert counts_during_swap, "the reader never polled while the swap was open; the test proved nothing"
    assert counts_during_swap[0] == old_count
    assert all_counts[-1] == new_count


def test_concurrent_publishes_of_different_days_both_land(backend: Backend):
    # Each thread has its own Warehouse (its own connection). DuckDB: connections in one process share the
    # database, and the writer serialises their publishes with a per-file lock. PostgreSQL: the two swaps
    # really overlap, which the barrier inside the swap checks (it would time out if one blocked the other).
    frames = {
        DAY_1: make_recommendations(n_users=50, k=10, seed=12, run_id="day-1"),
        DAY_2: make_recommendations(n_users=40, k=10, seed=13, run_id="day-2"),
    }
    warehouses = {day: backend.open() for day in frames}
    start = threading.Barrier(2, timeout=10)
    both_swapping = threading.Barrier(2, timeout=10) if backend.name == "postgresql" else None

    def publish(day: dt.date) -> int:
        start.wait()
        hook = both_swapping.wait if both_swapping else None
        return warehouses[day].publish_partition(day, frames[day], run_record(f"run-{day}"), _before_swap=hook)

    with ThreadPoolExecutor(max_workers=2) as pool:
        published = dict(zip(frames, pool.map(publish, frames)))

    assert published == {DAY_1: 500, DAY_2: 400}
    reader = backend.open()
    for day, frame in frames.items():
        pd.testing.assert_frame_equal(reader.read_partition(day), sorted_frame(frame))
    assert reader.read_runs()["airflow_run_id"].tolist() == [f"run-{DAY_1}", f"run-{DAY_2}"]


# ------------------------------------------------------------------------------------------ runs and the view


def test_pipeline_runs_row_is_upserted_per_day(backend: Backend):
    warehouse = backend.open()
    before = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    warehouse.publish_partition(DAY_1, make_recommendations(3, 2, seed=14), run_record("first-try"))
    rerun_metrics = {"hybrid": {"ndcg@10": 0.25}, "content": {"ndcg@10": 0.12}}
    warehouse.publish_partition(
        DAY_1, make_recommendations(4, 2, seed=15), run_record("second-try", raw_rows=2000, metrics=rerun_metrics)
    )
    warehouse.publish_partition(DAY_2, make_recommendations(2, 2, seed=16), run_record("other-day", quarantined_rows=None))
    after = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)

    runs = warehouse.read_runs()
    assert runs["ds"].tolist() == [DAY_1, DAY_2]
    day_1 = runs.iloc[0]
    assert day_1["airflow_run_id"] == "second-try"
    assert day_1["mlflow_run_id"] == "mlflow-123"
    assert day_1["raw_rows"] == 2000
    assert day_1["clean_rows"] == 990
    assert day_1["published_rows"] == 8  # filled in from the frame: 4 users x 2
    assert json.loads(day_1["metrics"]) == rerun_metrics
    # published_at is naive UTC, taken at publish time (a local-time clock would fail this off UTC).
    assert before - dt.timedelta(seconds=1) <= day_1["published_at"].to_pydatetime() <= after + dt.timedelta(seconds=1)
    assert pd.isna(runs.iloc[1]["quarantined_rows"])


def test_latest_view_shows_the_newest_day(backend: Backend):
    warehouse = backend.open()
    newest = make_recommendations(3, 2, seed=17, run_id="newest")
    warehouse.publish_partition(DAY_2, newest, run_record())
    # Publishing an older day afterwards (a backfill) must not move the view back in time.
    warehouse.publish_partition(DAY_1, make_recommendations(5, 2, seed=18, run_id="older"), run_record())

    rows = backend.raw_query()(f"SELECT ds, user_id, rank, product_id, run_id FROM {backend.schema}.{LATEST_VIEW} ORDER BY user_id, rank")
    assert {row[0] for row in rows} == {DAY_2}
    assert [(row[1], row[2], row[3]) for row in rows] == list(
        sorted_frame(newest)[["user_id", "rank", "product_id"]].itertuples(index=False, name=None)
    )


# ------------------------------------------------------------------------------------------------- validation


def bad_frame(change: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
    return change(sorted_frame(make_recommendations(n_users=3, k=3, seed=19)))


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (bad_frame(lambda f: f.drop(columns=["reason", "score"])), r"missing column\(s\) \['score', 'reason'\]"),
        (bad_frame(lambda f: f.iloc[0:0]), "are empty; refusing to replace the partition with nothing"),
        (bad_frame(lambda f: f.astype({"user_id": float}).assign(user_id=lambda g: g.user_id.where(g.index != 4))), r"1 row\(s\) have a null"),
        (bad_frame(lambda f: f.astype({"product_id": float})), "'product_id' must be an integer dtype"),
        (bad_frame(lambda f: f.assign(rank=[1, 2, 3, 1, 1, 3, 1, 2, 3])), r"2 row\(s\) share a \(user_id, rank\)"),
        (bad_frame(lambda f: f.assign(rank=[1, 2, 4, 1, 2, 3, 2, 3, 4])), r"6 row\(s\) belong to users whose ranks are not exactly 1..n"),
        (bad_frame(lambda f: f.assign(product_id=[7, 8, 7, 1, 2, 3, 4, 5, 6])), r"2 row\(s\) repeat a product"),
        (bad_frame(lambda f: f.assign(sources=[["a"]] * 9)), "'sources' must hold strings or nulls"),
        (bad_frame(lambda f: f.assign(ds="2024-02-29")), r"9 row\(s\) have a ds column different from the ds argument 2024-03-01"),
    ],
    ids=["missing-columns", "empty", "null-key", "float-key", "duplicate-rank", "rank-gap", "duplicate-product", "list-sources", "other-ds"],
)
@pytest.mark.parametrize("form", FORMS)
def test_invalid_frames_are_rejected_and_nothing_is_written(backend: Backend, frame: pd.DataFrame, message: str, form: str):
    warehouse = backend.open()
    with pytest.raises(ValueError, match=message):
        warehouse.publish_partition(DAY_1, as_form(frame, form), run_record())
    assert warehouse.read_partition(DAY_1).empty
    assert warehouse.read_runs().empty


def contract_table(**changes: pa.Array) -> pa.Table:
    """The valid 9-row frame of ``bad_frame`` as an Arrow table, with ``changes`` (name -> array) swapped in or added."""
    table = pa.Table.from_pandas(bad_frame(lambda f: f), preserve_index=False)
    for name, values in changes.items():
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, values)
        else:
            table = table.append_column(name, values)
    return table


@pytest.mark.parametrize(
    ("table", "message"),
    [
        # Arrow casts numbers to text without complaint; the contract does not.
        (contract_table(sources=pa.array(range(9))), "'sources' must hold strings or nulls, found int64 values"),
        (contract_table(reason=pa.array([b"caf\xe9"] * 9, pa.binary())), "'reason' must hold strings or nulls, found non-UTF-8 binary values"),
        (contract_table(rank=pa.array([1, 2, 3, 1, None, 3, 1, 2, 3], pa.int64())), r"1 row\(s\) have a null in \['user_id', 'rank', 'product_id'\]"),
        (contract_table(user_id=pa.array(["1"] * 9)), r"'user_id' must be an integer dtype .* got string; cast it with \.cast\(pa\.int64\(\)\)"),
        (contract_table(score=pa.array([True] * 9)), "'score' must be numeric, got bool"),
        (contract_table(product_id=pa.array([2**63, *range(8)], pa.uint64())), "'product_id' has values above the BIGINT maximum"),
        (contract_table(ds=pa.array([DAY_2] * 9, pa.date32())), r"9 row\(s\) have a ds column different from the ds argument 2024-03-01"),
    ],
    ids=["numbers-as-text", "non-utf8-binary", "null-in-int-key", "text-key", "bool-score", "uint-beyond-bigint", "other-ds-date"],
)
def test_arrow_only_violations_are_rejected_and_nothing_is_written(backend: Backend, table: pa.Table, message: str):
    warehouse = backend.open()
    with pytest.raises(ValueError, match=message):
        warehouse.publish_partition(DAY_1, table, run_record())
    with pytest.raises(TypeError, match="must be a pandas DataFrame or a pyarrow Table, got RecordBatch"):
        warehouse.publish_partition(DAY_1, contract_table().to_batches()[0], run_record())
    assert warehouse.read_partition(DAY_1).empty
    assert warehouse.read_runs().empty


def test_arrow_columns_of_other_types_publish_the_same_rows_as_the_frame(backend: Backend):
    """What pyarrow or Parquet may hand over instead of the warehouse types: narrower and unsigned ids, an int64
    rank, a dictionary, large_string and UTF-8 binary text, NaN as a value (not a null), a ds column, an extra
    column, several chunks. The warehouse must end up with exactly what the DataFrame would have given."""
    frame = sorted_frame(make_recommendations(n_users=4, k=3, seed=60))
    frame.loc[2, "score"] = np.nan
    table = pa.table(
        {
            "extra": pa.array(range(len(frame))),
            "ds": pa.array([DAY_1] * len(frame), pa.date32()),
            "user_id": pa.array(frame["user_id"], pa.int32()),
            "rank": pa.array(frame["rank"], pa.int64()),
            "product_id": pa.array(frame["product_id"], pa.uint64()),
            "score": pa.array(frame["score"].to_numpy(), pa.float64()),  # a plain array: NaN stays NaN
            "sources": pa.array(frame["sources"]).dictionary_encode(),
            "reason": pa.array(frame["reason"], pa.large_string()),
            "run_id": pa.array([text.encode() for text in frame["run_id"]], pa.binary()),
        }
    )
    table = pa.concat_tables([table.slice(0, 5), table.slice(5)])
    assert table["score"].num_chunks == 2 and table["score"].null_count == 0  # the NaN is a value here

    warehouse = backend.open()
    assert warehouse.publish_partition(DAY_1, table, run_record()) == 12
    pd.testing.assert_frame_equal(warehouse.read_partition(DAY_1), frame)
    # Stored as NULL, as from the frame, not as a NaN double.
    query = backend.raw_query()
    assert query(f"SELECT count(*) FROM {backend.schema}.{RECOMMENDATIONS_TABLE} WHERE score IS NULL", []) == [(1,)]


def test_validate_recommendations_returns_what_publish_loads_in_the_form_it_was_given():
    from recsys.warehouse.writer import validate_recommendations

    frame = sorted_frame(make_recommendations(n_users=3, k=2, seed=61)).assign(ds=DAY_1.isoformat(), extra=1)
    table = pa.Table.from_pandas(frame, preserve_index=False)

    checked = validate_recommendations(table, DAY_1)

    assert checked.schema == pa.schema(
        [("user_id", pa.int64()), ("rank", pa.int32()), ("product_id", pa.int64()), ("score", pa.float64()),
         ("sources", pa.string()), ("reason", pa.string()), ("run_id", pa.string())]
    )
    # Columns already of their warehouse type are the caller's buffers, not copies made through pandas.
    assert checked["user_id"].chunk(0).buffers()[1].address == table["user_id"].chunk(0).buffers()[1].address
    pd.testing.assert_frame_equal(checked.to_pandas().astype({"rank": "int64"}), validate_recommendations(frame, DAY_1))
    with pytest.raises(ValueError, match=r"2 row\(s\) repeat a product within one user's list"):
        validate_recommendations(table.set_column(2, "product_id", pa.array([7, 7, 1, 2, 3, 4])), DAY_1)


@pytest.mark.parametrize(
    ("record", "error", "message"),
    [
        ({k: v for k, v in run_record().items() if k != "metrics"}, ValueError, r"missing key\(s\) \['metrics'\]"),
        (run_record(rows_raw=3), ValueError, r"unknown key\(s\) \['rows_raw'\]"),
        (run_record(published_rows=99), ValueError, r"published_rows'\] is 99 but the frame .* has 9 rows"),
        (run_record(metrics={"hybrid": {"ndcg@10": float("nan")}}), ValueError, "not JSON-serialisable"),
        (run_record(raw_rows="1000"), ValueError, r"run_record\['raw_rows'\] must be an integer"),
    ],
    ids=["missing-key", "unknown-key", "wrong-published-rows", "nan-metric", "text-count"],
)
def test_invalid_run_records_are_rejected(backend: Backend, record: dict, error: type, message: str):
    warehouse = backend.open()
    with pytest.raises(error, match=message):
        warehouse.publish_partition(DAY_1, bad_frame(lambda f: f), record)
    assert warehouse.read_partition(DAY_1).empty


def test_ds_must_be_a_date_not_a_timestamp(backend: Backend):
    warehouse = backend.open()
    with pytest.raises(TypeError, match="got a datetime"):
        warehouse.publish_partition(dt.datetime(2024, 3, 1, 12), bad_frame(lambda f: f), run_record())
    with pytest.raises(ValueError, match="'03/01/2024' is not a 'YYYY-MM-DD' date"):
        warehouse.read_partition("03/01/2024")
    # An ISO string is accepted (Airflow's ds) and means the same day as the date.
    warehouse.publish_partition("2024-03-01", bad_frame(lambda f: f), run_record())
    assert len(warehouse.read_partition(DAY_1)) == 9


# --------------------------------------------------------------------------------------- opening and the role


@pytest.mark.parametrize("schema", ["recsys; drop table x", "Recsys", "1recsys", "", "a" * 64, 'recsys"'])
def test_schema_name_is_validated_before_connecting(tmp_path: Path, schema: str):
    uri = f"duckdb://{tmp_path / 'never' / 'created.duckdb'}"
    with pytest.raises(ValueError, match="warehouse schema name .* is not allowed"):
        open_warehouse(uri, schema)
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("sqlite:///tmp/x.db", r"unsupported URI scheme 'sqlite'; supported: duckdb:///abs/path.duckdb, postgresql://"),
        ("warehouse.duckdb", "must look like scheme://"),
        ("duckdb://relative/path.duckdb", "needs an absolute path"),
    ],
)
def test_unsupported_uris_are_rejected(uri: str, message: str):
    with pytest.raises(ValueError, match=message):
        open_warehouse(uri)


def test_unsupported_scheme_error_does_not_echo_the_password():
    with pytest.raises(ValueError) as raised:
        open_warehouse("mysql://admin:s3cret@db:3306/recsys")
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # the read-only role is PostgreSQL-only
def test_postgres_read_only_role_can_read_the_schema(backend: Backend):
    backend.open().publish_partition(DAY_1, make_recommendations(2, 2, seed=20), run_record())
    query = backend.raw_query()
    assert query("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'recsys_reader'", []) == [(False,)]
    privileges = query(
        "SELECT has_schema_privilege('recsys_reader', %s, 'USAGE'), "
        "has_table_privilege('recsys_reader', %s, 'SELECT'), "
        "has_table_privilege('recsys_reader', %s, 'SELECT'), "
        "has_table_privilege('recsys_reader', %s, 'SELECT'), "
        "has_table_privilege('recsys_reader', %s, 'INSERT')",
        [
            backend.schema,
            f"{backend.schema}.{RECOMMENDATIONS_TABLE}",
            f"{backend.schema}.{RUNS_TABLE}",
            f"{backend.schema}.{LATEST_VIEW}",
            f"{backend.schema}.{RECOMMENDATIONS_TABLE}",
        ],
    )
    assert privileges == [(True, True, True, True, False)]
    # And the role really reads through the view.
    query("SET ROLE recsys_reader", [])  # the raw connection is private to this test
    try:
        assert len(query(f"SELECT * FROM {backend.schema}.{LATEST_VIEW}", [])) == 4
    finally:
        query("RESET ROLE", [])


def test_context_manager_closes_the_connection(backend: Backend):
    with backend.open() as warehouse:
        assert warehouse.read_runs().empty
    with pytest.raises(Exception, match="(?i)closed"):
        warehouse.read_runs()
    warehouse.close()  # closing twice is harmless (the fixture closes it again too)


# --------------------------------------------------------------------------- fast paths (partitions, CSV COPY)


def duplicate_keys(query, schema: str) -> list[tuple]:
    return query(
        f"SELECT ds, user_id, rank, count(*) FROM {schema}.{RECOMMENDATIONS_TABLE} GROUP BY ds, user_id, rank HAVING count(*) > 1",
        [],
    )


@pytest.mark.parametrize("form", FORMS)
def test_awkward_text_and_full_precision_doubles_survive_the_round_trip(backend: Backend, form: str):
    # PostgreSQL receives these as CSV written by pyarrow: quoting, empty vs null and float formatting must be exact.
    texts = ["", 'say "hi", then\nleave', "back\\slash\t tab", "\\.", "ünïcödé ✓", "NULL", None, "a,b,c"]
    scores = [0.1 + 0.2, 5e-324, 1.7976931348623157e308, float("inf"), float("-inf"), np.nan, 1 / 3, -2.5e-10]
    frame = pd.DataFrame(
        {
            "user_id": np.arange(1, len(texts) + 1, dtype=np.int64) * 10**15,
            "rank": 1,
            "product_id": np.arange(len(texts), dtype=np.int64) - 2**62,
            "score": scores,
            "sources": pd.Series(texts, dtype="string"),  # pandas' string dtype (pd.NA) as well as object
            "reason": pd.Series(texts[::-1], dtype=object),
            "run_id": texts[3],
        }
    )
    warehouse = backend.open()
    warehouse.publish_partition(DAY_1, as_form(frame, form), run_record())

    read_back = warehouse.read_partition(DAY_1)
    expected = frame.astype({"sources": object})
    expected["sources"] = expected["sources"].where(expected["sources"].notna(), None)
    pd.testing.assert_frame_equal(read_back, expected, check_exact=True)
    assert read_back["sources"].tolist()[0] == "" and read_back["sources"].tolist()[6] is None


def test_concurrent_publishes_of_the_same_day_leave_exactly_one_of_them(backend: Backend):
    frames = [make_recommendations(60, 5, seed=30, run_id="one"), make_recommendations(45, 4, seed=31, run_id="two")]
    warehouses = [backend.open() for _ in frames]
    start = threading.Barrier(2, timeout=10)

    def publish(index: int) -> int:
        start.wait()
        return warehouses[index].publish_partition(DAY_1, frames[index], run_record(f"run-{index}"))

    with ThreadPoolExecutor(max_workers=2) as pool:
        assert sorted(pool.map(publish, range(2))) == [180, 300]

    reader = backend.open()
    read_back = reader.read_partition(DAY_1)
    winner = 0 if read_back["run_id"].iloc[0] == "one" else 1
    pd.testing.assert_frame_equal(read_back, sorted_frame(frames[winner]))
    assert reader.read_runs()["airflow_run_id"].tolist() == [f"run-{winner}"]
    assert duplicate_keys(backend.raw_query(), backend.schema) == []


def test_reruns_keep_every_key_unique(backend: Backend):
    # DuckDB has no index on the table: uniqueness rests on validation plus whole-day replacement.
    warehouse = backend.open()
    for seed in range(3):
        warehouse.publish_partition(DAY_1, make_recommendations(30, 6, seed=40 + seed), run_record())
        warehouse.publish_partition(DAY_2, make_recommendations(20, 6, seed=50 + seed), run_record())
    query = backend.raw_query()
    assert duplicate_keys(query, backend.schema) == []
    assert count_rows(query, backend.schema, DAY_1) == 180 and count_rows(query, backend.schema, DAY_2) == 120


def partitions(query, schema: str) -> list[str]:
    return [
        name
        for (name,) in query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass ORDER BY c.relname",
            [f"{schema}.{RECOMMENDATIONS_TABLE}"],
        )
    ]


def schema_tables(query, schema: str) -> list[str]:
    return [
        name
        for (name,) in query("SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY table_name", [schema])
    ]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_postgres_each_day_is_a_partition_and_a_rerun_exchanges_it(backend: Backend):
    import psycopg

    warehouse = backend.open()
    query = backend.raw_query()
    warehouse.publish_partition(DAY_1, make_recommendations(4, 3, seed=60), run_record())
    warehouse.publish_partition(DAY_2, make_recommendations(3, 3, seed=61), run_record())
    first_oid = query("SELECT %s::regclass::oid", [f"{backend.schema}.recommendations_p20240301"])[0][0]

    rerun = make_recommendations(5, 2, seed=62, run_id="rerun")
    with pytest.raises(InjectedFailure):
        warehouse.publish_partition(DAY_1, rerun, run_record(), _before_swap=fail_before_swap)
    warehouse.publish_partition(DAY_1, rerun, run_record())

    assert partitions(query, backend.schema) == ["recommendations_p20240301", "recommendations_p20240302"]
    assert query("SELECT %s::regclass::oid", [f"{backend.schema}.recommendations_p20240301"])[0][0] != first_oid
    # No load table survives, neither from the failed publish nor from the successful ones.
    assert schema_tables(query, backend.schema) == sorted(
        [LATEST_VIEW, RECOMMENDATIONS_TABLE, RUNS_TABLE, "recommendations_p20240301", "recommendations_p20240302"]
    )
    pd.testing.assert_frame_equal(warehouse.read_partition(DAY_1), sorted_frame(rerun))
    # Each partition carries its part of the parent's primary key: a duplicate is refused, by the parent too.
    indexes = query(
        "SELECT c.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid "
        "WHERE c.relnamespace = %s::regnamespace AND x.indisunique ORDER BY 1",
        [backend.schema],
    )
    assert [(name, "(ds, user_id, rank)" in definition) for name, definition in indexes if name.startswith("recommendations")] == [
        ("recommendations", True),
        ("recommendations_p20240301", True),
        ("recommendations_p20240302", True),
    ]
    row = sorted_frame(rerun).iloc[0]
    with pytest.raises(psycopg.errors.UniqueViolation):
        query(
            f"INSERT INTO {backend.schema}.{RECOMMENDATIONS_TABLE} (ds, user_id, rank, product_id) VALUES (%s, %s, %s, 1)",
            [DAY_1, int(row["user_id"]), int(row["rank"])],
        )


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_postgres_concurrent_reruns_of_different_days_both_land(backend: Backend):
    # Reruns DETACH the old partition (ACCESS EXCLUSIVE on the parent for the final moment): two at once must
    # queue, not deadlock, and both days must end up replaced.
    first = backend.open()
    for day, seed in ((DAY_1, 70), (DAY_2, 71)):
        first.publish_partition(day, make_recommendations(10, 3, seed=seed, run_id="old"), run_record())
    frames = {DAY_1: make_recommendations(30, 4, seed=72, run_id="new-1"), DAY_2: make_recommendations(20, 4, seed=73, run_id="new-2")}
    warehouses = {day: backend.open() for day in frames}
    both_loaded = threading.Barrier(2, timeout=10)

    def publish(day: dt.date) -> int:
        return warehouses[day].publish_partition(day, frames[day], run_record(f"rerun-{day}"), _before_swap=both_loaded.wait)

    with ThreadPoolExecutor(max_workers=2) as pool:
        assert list(pool.map(publish, frames)) == [120, 80]
    for day, frame in frames.items():
        pd.testing.assert_frame_equal(first.read_partition(day), sorted_frame(frame))
    assert partitions(backend.raw_query(), backend.schema) == ["recommendations_p20240301", "recommendations_p20240302"]


# ---------------------------------------------------------------------- migration of tables of older releases

OLD_RECOMMENDATIONS_DDL = """
    CREATE TABLE {schema}.recommendations (
        ds DATE NOT NULL, user_id BIGINT NOT NULL, rank INTEGER NOT NULL CHECK (rank >= 1), product_id BIGINT NOT NULL,
        score {double}, sources TEXT, reason TEXT, run_id TEXT,
        PRIMARY KEY (ds, user_id, rank)
    )
"""


def test_ensure_schema_migrates_the_old_primary_key_table(backend: Backend):
    # Warehouses created before this release have a plain recommendations table with PRIMARY KEY (ds, user_id, rank).
    schema = f"recsys_old_{uuid.uuid4().hex[:8]}"
    query = backend.raw_query()
    double = "DOUBLE" if backend.name == "duckdb" else "DOUBLE PRECISION"
    query(f"CREATE SCHEMA {schema}", [])
    old = Backend(backend.name, backend.uri, schema)
    try:
        query(OLD_RECOMMENDATIONS_DDL.format(schema=schema, double=double), [])
        query(f"CREATE VIEW {schema}.{LATEST_VIEW} AS SELECT * FROM {schema}.recommendations WHERE ds = (SELECT max(ds) FROM {schema}.recommendations)", [])
        days = {DAY_1: make_recommendations(4, 3, seed=80, run_id="old-1"), DAY_2: make_recommendations(3, 2, seed=81, run_id="old-2")}
        for day, frame in days.items():
            for row in frame.itertuples(index=False):
                query(
                    f"INSERT INTO {schema}.recommendations VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    [day, int(row.user_id), int(row.rank), int(row.product_id), float(row.score), row.sources, row.reason, row.run_id],
                )

        warehouse = old.open()
        warehouse.ensure_schema()
        warehouse.ensure_schema()  # and idempotent afterwards

        for day, frame in days.items():
            pd.testing.assert_frame_equal(warehouse.read_partition(day), sorted_frame(frame))
        latest = query(f"SELECT DISTINCT ds FROM {schema}.{LATEST_VIEW}", [])
        assert latest == [(DAY_2,)]
        if backend.name == "duckdb":
            keys = query(
                "SELECT count(*) FROM duckdb_constraints() WHERE schema_name = %s AND table_name = %s "
                "AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')",
                [schema, RECOMMENDATIONS_TABLE],
            )
            assert keys == [(0,)]
        else:
            assert query("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [f"{schema}.recommendations"]) == [("p",)]
            assert partitions(query, schema) == ["recommendations_p20240301", "recommendations_p20240302"]
        assert sorted(schema_tables(query, schema)) == sorted(
            [LATEST_VIEW, RECOMMENDATIONS_TABLE, RUNS_TABLE]
            + (["recommendations_p20240301", "recommendations_p20240302"] if backend.name == "postgresql" else [])
        )
        rerun = make_recommendations(5, 2, seed=82, run_id="rerun")
        warehouse.publish_partition(DAY_1, rerun, run_record())
        pd.testing.assert_frame_equal(warehouse.read_partition(DAY_1), sorted_frame(rerun))
        pd.testing.assert_frame_equal(warehouse.read_partition(DAY_2), sorted_frame(days[DAY_2]))
    finally:
        for closable in old.opened:
            closable.close()
        query(f"DROP SCHEMA IF EXISTS {schema} CASCADE", [])


# ----------------------------------------------------------------------------- vectorised key checks vs pandas


def pandas_key_violations(frame: pd.DataFrame) -> tuple[int, int, int]:
    """The pandas formulation the numpy checks replaced (slow on millions of rows, obviously right)."""
    ranks = int(frame.duplicated(["user_id", "rank"], keep=False).sum())
    items = int(frame.duplicated(["user_id", "product_id"], keep=False).sum())
    by_user = frame.groupby("user_id")["rank"]
    contiguous = (by_user.transform("min") == 1) & (by_user.transform("max") == by_user.transform("size"))
    return ranks, items, int((~contiguous).sum())


@pytest.mark.parametrize("seed", range(12))
def test_vectorised_key_checks_match_pandas(seed: int):
    from recsys.warehouse.writer import _key_violations

    rng = np.random.default_rng(seed)
    users = rng.integers(1, 40)
    sizes = rng.integers(1, 8, size=users)
    frame = pd.DataFrame(
        {
            "user_id": np.repeat(rng.choice(10**6, size=users, replace=False) - 500_000, sizes),
            "rank": np.concatenate([np.arange(1, size + 1) for size in sizes]),
            "product_id": rng.integers(0, 60, size=sizes.sum()),
        }
    )
    if seed % 3 == 0:  # product ids too far apart to pack with the user index into one int64: the lexsort path
        frame["product_id"] = frame["product_id"] * (2**56) - 2**62
    broken = rng.choice(len(frame), size=rng.integers(0, 4), replace=False)
    frame.loc[broken, "rank"] = rng.integers(0, 9, size=len(broken))  # repeats, gaps, ranks starting at 0
    if seed % 2:
        frame = frame.sample(frac=1.0, random_state=seed)  # unsorted input: the lexsort path
    arrays = [frame[column].to_numpy(dtype=np.int64) for column in ("user_id", "rank", "product_id")]
    assert _key_violations(*arrays) == pandas_key_violations(frame)


def test_invalid_shuffled_frame_is_rejected_with_row_counts(backend: Backend):
    frame = make_recommendations(n_users=20, k=5, seed=90)  # shuffled rows
    frame.loc[frame.index[frame["user_id"] == 3000], "rank"] += 1  # user 3000's ranks are 2..6
    with pytest.raises(ValueError, match=r"5 row\(s\) belong to users whose ranks are not exactly 1..n"):
        backend.open().publish_partition(DAY_1, frame, run_record())


def test_unsigned_ids_beyond_bigint_are_rejected(backend: Backend):
    frame = bad_frame(lambda f: f.astype({"product_id": "uint64"}))
    frame.loc[0, "product_id"] = np.uint64(2**63)
    with pytest.raises(ValueError, match="'product_id' has values above the BIGINT maximum"):
        backend.open().publish_partition(DAY_1, frame, run_record())


def test_bad_text_deep_in_a_large_frame_is_rejected_and_nothing_is_written(backend: Backend):
    # Text is checked while converting to Arrow; for PostgreSQL that happens chunk by chunk during the COPY,
    # so a bad value past the first chunk (65,536 rows) aborts a COPY already under way.
    warehouse = backend.open()
    old = make_recommendations(n_users=3, k=3, seed=91, run_id="old")
    warehouse.publish_partition(DAY_1, old, run_record("old-run"))
    frame = sorted_frame(make_recommendations(n_users=7000, k=10, seed=92))
    frame.loc[69_999, "reason"] = 12345
    with pytest.raises(ValueError, match="'reason' must hold strings or nulls, found mixed-integer values"):
        warehouse.publish_partition(DAY_1, frame, run_record("new-run"))
    pd.testing.assert_frame_equal(warehouse.read_partition(DAY_1), sorted_frame(old))
    assert warehouse.read_runs()["airflow_run_id"].tolist() == ["old-run"]
    expected = [LATEST_VIEW, RECOMMENDATIONS_TABLE, RUNS_TABLE] + (["recommendations_p20240301"] if backend.name == "postgresql" else [])
    assert schema_tables(backend.raw_query(), backend.schema) == sorted(expected)


def test_utf8_bytes_are_stored_as_text(backend: Backend):
    frame = bad_frame(lambda f: f.assign(reason=[b"caf\xc3\xa9"] * 9))
    warehouse = backend.open()
    warehouse.publish_partition(DAY_1, frame, run_record())
    assert warehouse.read_partition(DAY_1)["reason"].tolist() == ["café"] * 9


def test_unreachable_postgres_names_the_endpoint_and_hides_the_password():
    """A refused connection fails fast with host:port/database and what to check, never the password."""
    from recsys.warehouse.writer import WarehouseUnavailableError, open_warehouse

    with socket.socket() as probe:  # a port nothing listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        with pytest.raises(WarehouseUnavailableError) as error:
            open_warehouse(f"postgresql://recsys:s3cret@127.0.0.1:{port}/recsys")
    message = str(error.value)
    assert f"127.0.0.1:{port}/recsys" in message
    assert "warehouse_default" in message and "nothing was published" in message
    assert "s3cret" not in message


def test_duckdb_second_process_waits_for_the_first_instead_of_failing(tmp_path: Path):
    """Two processes on one DuckDB file (two days' publishes, or publish and the export DAG): the second waits."""
    import subprocess
    import sys

    from recsys.warehouse.writer import open_warehouse

    uri = f"duckdb://{tmp_path / 'warehouse.duckdb'}"
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time\n"
            "from recsys.warehouse.writer import open_warehouse\n"
            f"w = open_warehouse({uri!r}); w.ensure_schema()\n"
            "print('open', flush=True); time.sleep(3)\n"
            "import pandas as pd\n"
            "frame = pd.DataFrame({'user_id': [1], 'rank': [1], 'product_id': [7], 'score': [0.5], 'sources': ['x'], 'reason': ['r'], 'run_id': ['other']})\n"
            f"w.publish_partition('2024-03-01', frame, {run_record()!r}); w.close()\n"
        )],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        started = time.monotonic()
        with open_warehouse(uri) as warehouse:  # blocks until the other process closes, then sees its day
            waited = time.monotonic() - started
            read_back = warehouse.read_partition("2024-03-01")
        assert holder.wait(timeout=60) == 0
    finally:
        holder.kill()
    assert waited > 1.0
    assert read_back["run_id"].tolist() == ["other"]


# --------------------------------------------------------------------------------- the pipeline's publish task


def test_pipeline_publish_loads_the_fused_parquet_with_the_airflow_run_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """pipeline.publish reads the fuse task's Parquet as Arrow and publishes every row with the Airflow run id,
    counted in the run record; against a real MLflow registry (SQLite) and a real DuckDB warehouse (the task
    writes to the default schema, which a shared PostgreSQL test database must not be given)."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from recsys import pipeline, tracking
    from recsys.config import Settings

    settings = Settings(data_dir=tmp_path / "data")
    fused_rows = sorted_frame(make_recommendations(n_users=4, k=3, seed=70)).drop(columns="run_id")
    path = pipeline.run_dir(settings, DAY_1) / "recommendations.parquet"  # where the fuse task writes
    path.parent.mkdir(parents=True)
    fused_rows.to_parquet(path, index=False)  # as the fuse task does: every contract column but run_id
    experiment_id = tracking.configure(settings)
    with mlflow.start_run(experiment_id=experiment_id) as fusion:  # promote_champion registers its model
        mlflow.sklearn.log_model(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), name="model", pip_requirements=["scikit-learn"])
    airflow_run_id = "scheduled__2024-03-01T00:00:00+00:00"
    parent = tracking.ensure_parent_run(settings, "recsys_daily", airflow_run_id, DAY_1.isoformat())
    fused = {
        "recommendations_path": str(path),
        "evaluation": {"hybrid": {"ndcg@10": 0.2}, "popularity": {"ndcg@10": 0.1}},
        "users": 4,
        "mlflow_fusion_run_id": fusion.info.run_id,
    }
    uri = f"duckdb://{tmp_path / 'warehouse.duckdb'}"
    handed_over: list[type] = []  # what the task gives the (real, unchanged) writer
    publish_partition = Warehouse.publish_partition

    def recording_publish_partition(self, ds, recommendations, run_record, **hooks):
        handed_over.append(type(recommendations))
        return publish_partition(self, ds, recommendations, run_record, **hooks)

    monkeypatch.setattr(Warehouse, "publish_partition", recording_publish_partition)

    summary = pipeline.publish(
        settings, DAY_1.isoformat(), uri, fused, {"raw_rows": 100, "clean_rows": 99, "quarantined_rows": 1}, {"items": 50},
        airflow_run_id, parent,
    )

    assert handed_over == [pa.Table]  # the fast path: no round trip of the text columns through pandas
    assert summary["published_rows"] == 12
    with open_warehouse(uri) as warehouse:
        pd.testing.assert_frame_equal(warehouse.read_partition(DAY_1), fused_rows.assign(run_id=airflow_run_id))
        runs = warehouse.read_runs()
    assert runs[["airflow_run_id", "published_rows", "users", "items"]].values.tolist() == [[airflow_run_id, 12, 4, 50]]
