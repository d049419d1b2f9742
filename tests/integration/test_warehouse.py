"""Integration tests of recsys.warehouse against real DuckDB files and a real PostgreSQL (skipped if unreachable).

Each PostgreSQL test works in its own schema (recsys_test_<uuid>) that is dropped afterwards, so tests can run
against a shared server without seeing each other's rows.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
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


def test_publish_then_read_back_equals_input(backend: Backend):
    warehouse = backend.open()
    recommendations = make_recommendations(n_users=5, k=4, seed=1)
    recommendations.loc[3, "score"] = np.nan  # a null score is allowed and stays null

    published = warehouse.publish_partition(DAY_1, recommendations, run_record())

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


def test_failure_before_swap_keeps_the_old_partition(backend: Backend):
    warehouse = backend.open()
    old = make_recommendations(n_users=3, k=3, seed=7, run_id="old")
    warehouse.publish_partition(DAY_1, old, run_record("old-airflow-run"))

    new = make_recommendations(n_users=5, k=5, seed=8, run_id="new")
    with pytest.raises(InjectedFailure):
        warehouse.publish_partition(DAY_1, new, run_record("new-airflow-run"), _before_swap=fail_before_swap)

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
def test_invalid_frames_are_rejected_and_nothing_is_written(backend: Backend, frame: pd.DataFrame, message: str):
    warehouse = backend.open()
    with pytest.raises(ValueError, match=message):
        warehouse.publish_partition(DAY_1, frame, run_record())
    assert warehouse.read_partition(DAY_1).empty
    assert warehouse.read_runs().empty


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
