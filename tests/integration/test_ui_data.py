"""The Recommendations page's data layer and app against a real warehouse written by the project's writer.

DuckDB always; PostgreSQL at 127.0.0.1:5432/test too when it answers (its own schema, dropped after).
The app is exercised through FastAPI's TestClient with an allow-all stand-in for Airflow's auth
dependency (the real one, in a real api-server, is tests/e2e/test_ui_plugin.py); one test swaps in a
refusing dependency to show that every route, the page included, sits behind it.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

from recsys.constants import HYBRID_NAME
from recsys.ui import data, render
from recsys.ui.app import PageSources, create_app
from tests import ui_warehouse as fx

POSTGRES_URI = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_unreachable_reason() -> str | None:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URI, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any failure means "no server to test against"
        return f"PostgreSQL not reachable at {POSTGRES_URI} within 3 s ({type(error).__name__}: {error}); start it to run these cases"
    return None


@pytest.fixture(params=["duckdb", "postgresql"])
def warehouse(request, tmp_path):
    """(PageSources, data_dir) of a published three-day warehouse in DuckDB or PostgreSQL."""
    data_dir = tmp_path / "data"
    if request.param == "duckdb":
        uri = fx.build_data_dir(data_dir)
        yield PageSources(uri, data_dir / "clean" / "events", data_dir / "raw" / "catalog" / "products.csv"), data_dir
        return
    reason = postgres_unreachable_reason()
    if reason:
        pytest.skip(reason)
    import psycopg

    schema = f"recsys_ui_test_{uuid.uuid4().hex[:12]}"
    fx.build_data_dir(data_dir, publish=False)
    fx.publish_days(POSTGRES_URI, schema)
    try:
        yield PageSources(POSTGRES_URI, data_dir / "clean" / "events", data_dir / "raw" / "catalog" / "products.csv", schema), data_dir
    finally:
        with psycopg.connect(POSTGRES_URI, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def allow_all():
    return None


def client_for(sources: PageSources, require_user=allow_all) -> TestClient:
    return TestClient(create_app(lambda: sources, require_user, lambda next_url: f"/auth/login?next={next_url}"))


# ------------------------------------------------------------------------------------------------- data layer


def test_runs_are_every_published_day_in_order_with_counts_and_metrics(warehouse):
    sources, _ = warehouse
    runs = data.read_runs(sources.warehouse_uri, sources.schema)
    assert [run.ds for run in runs] == list(fx.DAYS)
    for index, run in enumerate(runs):
        raw, quarantined = fx.RAW_QUARANTINED[run.ds]
        assert (run.raw_rows, run.clean_rows, run.quarantined_rows) == (raw, raw - quarantined, quarantined)
        assert run.published_rows == len(fx.recommendations_of(run.ds))
        assert run.metrics == {model: {k: float(v) for k, v in m.items()} for model, m in fx.metrics_of(index).items()}
    assert runs[1].quarantined_fraction == pytest.approx(30 / 1200)

    series = data.model_series(runs, "ndcg@10")
    assert list(series)[-1] == HYBRID_NAME  # models first, the hybrid last
    assert series[HYBRID_NAME] == [(day, fx.metrics_of(i)[HYBRID_NAME]["ndcg@10"]) for i, day in enumerate(fx.DAYS)]


def test_lookup_gives_newest_events_and_the_latest_list_with_titles(warehouse):
    sources, _ = warehouse
    view = data.read_user(sources.warehouse_uri, sources.clean_events_dir, sources.catalog_path, fx.USER, sources.schema)
    assert view.ds == fx.LATEST
    assert [(r.rank, r.product_id, r.title) for r in view.recommendations] == [
        (1, 503, "Hydration vest 5L"),  # the latest day's top item, not an earlier day's (505)
        (2, 504, "GPS sports watch"),
        (3, 506, "Headlamp 400 lm"),
    ]
    first = view.recommendations[0]
    assert (first.score, first.sources, first.reason) == (pytest.approx(0.93), "sequence,cooccurrence", "often bought after Trail running shoes")

    expected_events = sorted((e for e in fx.EVENTS if e[2] == fx.USER), key=lambda e: (e[0], e[1]), reverse=True)
    assert [(e.event_type, e.product_id) for e in view.events] == [(e[3], e[4]) for e in expected_events]
    assert view.events[0].event_time == dt.datetime(2024, 3, 3, 7, 41, tzinfo=dt.timezone.utc)
    titles = {e.product_id: e.title for e in view.events}
    assert titles[501] == "Trail running shoes"
    assert titles[fx.OFF_CATALOG] is None


def test_users_without_a_list_or_unknown_get_empty_answers_not_errors(warehouse):
    sources, _ = warehouse
    without = data.read_user(sources.warehouse_uri, sources.clean_events_dir, sources.catalog_path, fx.USER_WITHOUT_LIST, sources.schema)
    assert without.recommendations == [] and [e.product_id for e in without.events] == [504]
    unknown = data.read_user(sources.warehouse_uri, sources.clean_events_dir, sources.catalog_path, fx.UNKNOWN_USER, sources.schema)
    assert (unknown.ds, unknown.recommendations, unknown.events) == (fx.LATEST, [], [])


@pytest.mark.parametrize(
    "raw, message",
    [
        ("1 OR 1=1", "is not a whole number"),
        ("1042; DROP TABLE recsys.recommendations", "is not a whole number"),
        ("12.5", "is not a whole number"),
        ("", "user_id is empty"),
        ("99999999999999999999", "outside the BIGINT range"),
    ],
)
def test_user_ids_that_are_not_bigints_are_refused_with_a_clear_message(raw, message):
    with pytest.raises(data.InvalidUserId, match=message):
        data.parse_user_id(raw)


def test_user_id_accepts_surrounding_spaces_and_negative_ids():
    assert data.parse_user_id(" 1042 ") == 1042
    assert data.parse_user_id("-5") == -5


# ------------------------------------------------------------------------------------------- unavailability


def test_missing_warehouse_is_a_message_saying_what_to_run(tmp_path):
    uri = f"duckdb:///{tmp_path / 'nowhere' / 'warehouse.duckdb'}"
    with pytest.raises(data.WarehouseUnavailable, match=r"no warehouse at .*warehouse.duckdb yet.*make demo"):
        data.read_runs(uri)
    assert not (tmp_path / "nowhere").exists()  # reading never creates the file


def test_warehouse_without_tables_says_nothing_was_published(tmp_path):
    import duckdb

    path = tmp_path / "warehouse.duckdb"
    duckdb.connect(str(path)).close()
    with pytest.raises(data.WarehouseUnavailable, match=r"no recsys.pipeline_runs table yet"):
        data.read_runs(f"duckdb:///{path}")


_HOLD_WRITE_LOCK = textwrap.dedent(
    """
    import sys, duckdb
    connection = duckdb.connect(sys.argv[1])  # read-write: the lock a publish holds
    print("locked", flush=True)
    sys.stdin.readline()
    connection.close()
    """
)


def test_a_warehouse_locked_by_a_writer_process_is_a_message_not_an_error(tmp_path):
    uri = fx.build_data_dir(tmp_path / "data")
    path = uri.removeprefix("duckdb://")
    writer = subprocess.Popen([sys.executable, "-c", _HOLD_WRITE_LOCK, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "locked"
        with pytest.raises(data.WarehouseUnavailable, match=r"locked by another process .*publish.*Reload"):
            data.read_runs(uri)
        sources = PageSources(uri, tmp_path / "data" / "clean" / "events", tmp_path / "data" / "raw" / "catalog" / "products.csv")
        response = client_for(sources).get("/", params={"user_id": fx.USER})
        assert response.status_code == 200
        assert 'id="warehouse-error"' in response.text and "locked by another process" in response.text
        assert "Traceback" not in response.text
        assert client_for(sources).get("/api/runs").status_code == 503
    finally:
        writer.communicate("\n", timeout=30)
    assert writer.returncode == 0


_PUBLISH_ONE_DAY = textwrap.dedent(
    """
    import sys, datetime as dt
    from tests import ui_warehouse as fx
    from recsys.warehouse.writer import open_warehouse
    with open_warehouse(sys.argv[1]) as warehouse:
        warehouse.publish_partition(dt.date(2024, 3, 4), fx.recommendations_of(dt.date(2024, 3, 4)), {
            "airflow_run_id": "r4", "mlflow_run_id": "m4", "raw_rows": 10, "clean_rows": 10, "quarantined_rows": 0,
            "users": 2, "items": 7, "metrics": fx.metrics_of(3)})
    print("published")
    """
)


def test_reading_leaves_the_file_free_for_the_pipelines_publish(tmp_path):
    """After the page has read (page, JSON and lookup), another process can take the write lock at once."""
    data_dir = tmp_path / "data"
    uri = fx.build_data_dir(data_dir)
    sources = PageSources(uri, data_dir / "clean" / "events", data_dir / "raw" / "catalog" / "products.csv")
    client = client_for(sources)
    assert client.get("/", params={"user_id": fx.USER}).status_code == 200
    assert client.get("/api/runs").status_code == 200
    repo_root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", _PUBLISH_ONE_DAY, uri], cwd=repo_root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "published" in result.stdout, result.stderr[-3000:]
    assert [run.ds for run in data.read_runs(uri)][-1] == dt.date(2024, 3, 4)


# ---------------------------------------------------------------------------------------------------- the app


def test_page_shows_both_charts_the_quarantine_table_and_the_lookup(warehouse):
    sources, _ = warehouse
    response = client_for(sources).get("/", params={"user_id": str(fx.USER)})
    assert response.status_code == 200
    html = response.text
    for element in ('id="ndcg-chart"', 'id="coverage-chart"', 'id="quarantine"', 'id="latest-metrics"', 'id="user-events"', 'id="user-recommendations"'):
        assert element in html, element
    # One line per model with three points each (three days).
    assert html.count('<g class="series" data-model="hybrid">') == 2  # both charts
    assert html.count("<polyline") == 2 * len(fx.metrics_of(0))
    assert "hybrid 2024-03-03: 0.2200" in html  # tooltip of the hybrid's last NDCG point
    # Quarantine: 30 of 1,200 rows on the second day.
    assert "<td>2024-03-02</td><td class=num>1,200</td><td class=num>1,170</td><td class=num>30</td><td class=num>2.50%</td>" in html
    assert "Hydration vest 5L" in html and "often bought after Trail running shoes" in html
    assert "(not in catalog)" in html  # product 900 among the events
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched from anywhere


def test_invalid_user_id_is_a_422_with_the_message_on_the_page_and_in_json(warehouse):
    sources, _ = warehouse
    client = client_for(sources)
    page = client.get("/", params={"user_id": "1 OR 1=1"})
    assert page.status_code == 422
    assert 'id="user-error"' in page.text and "is not a whole number" in page.text
    assert 'value="1 OR 1=1"' in page.text  # what was typed stays in the box
    api = client.get("/api/users/abc")
    assert api.status_code == 422 and "is not a whole number" in api.json()["detail"]


def test_json_endpoints(warehouse):
    sources, _ = warehouse
    client = client_for(sources)
    runs = client.get("/api/runs").json()["runs"]
    assert [r["ds"] for r in runs] == [d.isoformat() for d in fx.DAYS]
    user = client.get(f"/api/users/{fx.USER}").json()
    assert user["ds"] == fx.LATEST.isoformat()
    assert [r["title"] for r in user["recommendations"]] == ["Hydration vest 5L", "GPS sports watch", "Headlamp 400 lm"]


def test_every_route_sits_behind_the_auth_dependency(warehouse):
    sources, _ = warehouse

    def refuse():
        raise HTTPException(401, "Not authenticated")

    app = create_app(lambda: sources, refuse, lambda next_url: f"/auth/login?next={next_url}")
    client = TestClient(app)
    paths = [route.path.replace("{user_id}", str(fx.USER)) for route in app.routes]
    assert set(paths) == {"/", "/api/runs", f"/api/users/{fx.USER}"}  # and no /docs or /openapi.json
    for path in paths:
        response = client.get(path)
        assert response.status_code == 401, path
        assert "Hydration" not in response.text and "ndcg" not in response.text
    browser = client.get("/", headers={"accept": "text/html"}, follow_redirects=False)
    assert browser.status_code == 303 and browser.headers["location"].startswith("/auth/login?next=")
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert client.get(path).status_code == 404


def test_page_of_an_empty_data_dir_explains_instead_of_failing(tmp_path):
    sources = PageSources(f"duckdb:///{tmp_path / 'warehouse.duckdb'}", tmp_path / "clean" / "events", tmp_path / "products.csv")
    response = client_for(sources).get("/", params={"user_id": "5"})
    assert response.status_code == 200
    assert "no warehouse at" in response.text and 'id="ndcg-chart"' not in response.text


def test_titles_and_reasons_are_escaped(tmp_path):
    view = data.UserView(
        7, fx.LATEST, [data.Recommendation(1, 1, "<script>alert(1)</script>", 0.5, "a&b", "<b>x</b>")], []
    )
    html = render.user_section(view)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "a&amp;b" in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_chart_of_a_single_day_draws_points_without_lines():
    svg = render.line_chart({"hybrid": [(fx.LATEST, 0.2)], "sequence": [(fx.LATEST, 0.15)]}, "ndcg@10", "c")
    assert "<polyline" not in svg and svg.count("<circle") == 2


def test_missing_browser_is_reported_with_what_to_install(tmp_path):
    from recsys.ui.screenshot import chromium_missing_reason

    reason = chromium_missing_reason(tmp_path / "chromium")
    assert "make browser" in reason and "apt-get install chromium chromium-driver" in reason
