"""End to end: the Recommendations page in a real ``airflow api-server`` with authentication on.

One api-server (all apps: core API, UI, Execution API, plugins) on a free port, a fresh AIRFLOW_HOME with
SQLite metadata and the SimpleAuthManager with one admin whose password the server generates into the
passwords file; the data dir holds a small real warehouse (three published days, written by the
project's writer), clean events and a catalog (tests/ui_warehouse.py). The DAGs are parsed into the
metadata DB and the ``recsys_compute`` pool exists (``local_airflow.prepare``, as for ``make backfill``),
so the UI shows ``recsys_daily`` as a deployment would. No scheduler: no DAG run executes.

* Plain HTTP without credentials, with a forged token, or with a forged cookie gets no data from any
  route of the plugin app; a browser without a session is sent to the login page.
* A token from Airflow's own ``POST /auth/token`` reads the JSON endpoints.
* Headless Debian Chromium logs in through Airflow's login page, opens "Recommendations" from the
  navigation, sees both charts and the quarantine table, looks a user up by typing the id and clicking,
  and sees that user's events and recommendations with product titles; a screenshot is kept in the
  test's tmp dir. Opening the page's own URL without a session goes to the login page and back to it.
  The browser tests are skipped, saying what to install, when /usr/bin/chromium is absent.
* A data engineer's backfill from the UI (issue 7: CLI, REST API and UI alike): on the ``recsys_daily``
  page "Trigger", "Backfill", From/To, "All Runs", Max Active Runs 1, "Run Backfill"; the REST API then
  holds exactly that backfill and its two runs.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import date

import pytest

from recsys import local_airflow
from recsys.ui import screenshot
from tests import ui_warehouse as fx
from tests.e2e.airflow_stack import STARTUP_TIMEOUT_S, Services, airflow_env, free_port, http_ok

pytestmark = pytest.mark.e2e

URL_PREFIX = "/recsys"  # where plugins/recsys_ui.py mounts the app
#: Two past days for the UI backfill (after the DAG's start_date, before today: the pickers refuse the future).
BACKFILL_DAYS = (date(2026, 10, 30), date(2026, 10, 31))


def plugin_paths() -> list[str]:
    """Every route of the plugin's app (read from the app itself, so a new route is covered too), plus a lookup."""
    from recsys.ui.app import create_app

    app = create_app(lambda: None, lambda: None)
    paths = [URL_PREFIX + route.path.replace("{user_id}", str(fx.USER)) for route in app.routes]
    return [*paths, f"{URL_PREFIX}/?user_id={fx.USER}"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui_plugin")
    airflow_home = root / "airflow"
    data_dir = root / "data"
    fx.build_data_dir(data_dir)
    port = free_port()
    env = airflow_env(airflow_home, data_dir, **screenshot.auth_settings(airflow_home, port))
    local_airflow.prepare(env)  # migrate, the recsys_compute pool, parse dags/ (the UI shows recsys_daily)
    services = Services(root, env)
    try:
        services.start("api-server", ["api-server"])
        base_url = f"http://127.0.0.1:{port}"
        services.wait("the api-server", lambda: http_ok(f"{base_url}/api/v2/monitor/health"), STARTUP_TIMEOUT_S, interval=1)
        yield {"base_url": base_url, "password": screenshot.generated_password(airflow_home), "root": root, "services": services}
    finally:
        services.stop()


def request(url: str, headers: dict | None = None, data: bytes | None = None) -> tuple[int, dict, str]:
    """(status, headers, body) without following redirects and without raising on 4xx/5xx."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}, data=data), timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode(errors="replace")


def assert_no_data(body: str) -> None:
    for leaked in ("Hydration vest", "Trail running", "ndcg", "quarantine", str(fx.RAW_QUARANTINED[fx.DAYS[1]][0])):
        assert leaked not in body, f"{leaked!r} in a refused response: {body[:300]}"


def test_requests_without_valid_credentials_get_no_data(server):
    base = server["base_url"]
    forged = "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl"
    paths = plugin_paths()
    assert len(paths) >= 4, paths
    for path in paths:
        status, _, body = request(base + path)
        assert status == 401, (path, status, body[:300])
        assert_no_data(body)
        for headers in ({"Authorization": f"Bearer {forged}"}, {"Cookie": f"_token={forged}"}):
            status, _, body = request(base + path, headers)
            assert status in (401, 403), (path, headers, status, body[:300])
            assert_no_data(body)
    # A browser (asks for HTML) without a session is sent to Airflow's login page, back here afterwards.
    status, headers, body = request(base + "/recsys/", {"Accept": "text/html"})
    assert status == 303 and "/auth/login?next=" in headers["location"], (status, headers)
    assert_no_data(body)
    # The interactive docs, which app-level dependencies would not cover, do not exist.
    for path in ("/recsys/docs", "/recsys/openapi.json"):
        assert request(base + path)[0] == 404


def test_a_token_from_airflows_auth_api_reads_the_json(server):
    base = server["base_url"]
    body = json.dumps({"username": screenshot.ADMIN, "password": server["password"]}).encode()
    status, _, text = request(f"{base}/auth/token", {"Content-Type": "application/json"}, body)
    assert status == 201, text
    token = json.loads(text)["access_token"]
    status, _, text = request(f"{base}/recsys/api/runs", {"Authorization": f"Bearer {token}"})
    assert status == 200, text
    assert [run["ds"] for run in json.loads(text)["runs"]] == [day.isoformat() for day in fx.DAYS]
    status, _, text = request(f"{base}/recsys/api/users/{fx.USER}", {"Authorization": f"Bearer {token}"})
    assert status == 200 and json.loads(text)["recommendations"][0]["title"] == "Hydration vest 5L"
    status, _, text = request(f"{base}/recsys/api/users/1%20OR%201=1", {"Authorization": f"Bearer {token}"})
    assert status == 422 and "is not a whole number" in json.loads(text)["detail"]


def test_browser_logs_in_opens_the_page_and_looks_up_a_user(server, tmp_path):
    reason = screenshot.chromium_missing_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    png = tmp_path / "recommendations.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(screenshot.CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport=screenshot.VIEWPORT)
            screenshot.log_in(page, server["base_url"], screenshot.ADMIN, server["password"])
            frame = screenshot.open_recommendations(page)

            for chart in ("#ndcg-chart", "#coverage-chart"):
                assert frame.locator(f"{chart} polyline").count() == len(fx.metrics_of(0)), chart
            quarantine = frame.locator("#quarantine tbody tr")
            assert quarantine.count() == len(fx.DAYS)
            assert quarantine.first.inner_text().split() == ["2024-03-03", "900", "900", "0", "0.00%"]

            screenshot.look_up_user(frame, fx.USER)
            events = frame.locator("#user-events").inner_text()
            assert "Trail running shoes" in events and "purchase" in events and "(not in catalog)" in events
            recommendations = frame.locator("#user-recommendations tbody tr")
            assert recommendations.count() == 3
            first = recommendations.first.inner_text()
            assert "Hydration vest 5L" in first and "often bought after Trail running shoes" in first
            assert recommendations.first.locator(".tag").all_inner_texts() == ["sequence", "cooccurrence"]

            page.screenshot(path=str(png))
        finally:
            browser.close()
    assert png.stat().st_size > 20_000, "the screenshot is suspiciously small"
    print(f"\nscreenshot: {png}")


def test_browser_opening_the_page_directly_is_sent_to_login_and_back(server):
    reason = screenshot.chromium_missing_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(screenshot.CHROMIUM), headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{server['base_url']}{URL_PREFIX}/?user_id={fx.USER}")
            assert "/auth/login" in page.url, page.url  # the plugin's redirect, before any data
            page.fill("input[name=username]", screenshot.ADMIN)
            page.fill("input[name=password]", server["password"])
            page.click("button[type=submit]")
            page.wait_for_url(f"**{URL_PREFIX}/?user_id={fx.USER}", timeout=60_000)
            assert "Hydration vest 5L" in page.locator("#user-recommendations").inner_text()
        finally:
            browser.close()


def run_backfill_in_the_ui(page, base_url: str, dag_id: str, start: date, end: date) -> None:
    """On the DAG's page: "Trigger", "Backfill", From ``start`` To ``end`` (00:00), "All Runs", Max Active
    Runs 1, "Run Backfill"; returns once the UI confirms with its "Backfill generated" toast.

    The From/To fields are Airflow's own picker (a button opening a popover with "YYYY/MM/DD" and "HH:mm"
    text fields over a calendar), not ``<input type=datetime-local>``: typing the date needs no month
    navigation. The popover reads the time in the time zone it names (the browser's unless changed in
    the UI), so the caller's browser runs in UTC, the zone of the DAG's schedule. Every step waits on what
    the page shows (the picked date, the dry run's count, the toast), never on time.
    """
    from playwright.sync_api import expect

    page.goto(f"{base_url}/dags/{dag_id}")
    page.get_by_role("button", name="Trigger Dag", exact=True).click()  # visible text "Trigger"; aria-label "Trigger Dag"
    form = page.get_by_role("dialog").filter(has=page.get_by_text("Single Run", exact=True))
    # The radio inputs are visually hidden behind their cards: click the card's label, as a user does.
    form.get_by_text("Backfill", exact=True).click()
    expect(form.get_by_role("radio", name="Backfill")).to_be_checked()

    for label, day in (("From", start), ("To", end)):
        picker = form.get_by_role("group").filter(has=page.get_by_text(label, exact=True)).get_by_test_id("datetime-input")
        picker.click()
        popover = page.get_by_role("dialog").filter(has=page.get_by_placeholder("YYYY/MM/DD"))
        expect(popover).to_contain_text("UTC")
        popover.get_by_placeholder("YYYY/MM/DD").fill(day.strftime("%Y/%m/%d"))
        popover.get_by_placeholder("HH:mm").fill("00:00")
        page.keyboard.press("Escape")  # closes the popover only; the form stays open
        expect(popover).to_be_hidden()
        expect(picker).to_have_text(f"{day:%b} {day.day}, {day.year} 00:00")

    form.get_by_text("All Runs", exact=True).click()  # reprocess_behavior "completed"
    expect(form.get_by_role("radio", name="All Runs")).to_be_checked()
    # "Max Active Runs" is text beside the number input, not its <label>: the input is found by its form
    # field name, which is the REST API's field name.
    max_active_runs = form.locator("input[name=max_active_runs]")
    max_active_runs.fill("1")
    expect(max_active_runs).to_have_value("1")
    days = (end - start).days + 1
    # The form's dry run (POST /api/v2/backfills/dry_run) counts the runs; "Run Backfill" waits for it.
    expect(form.get_by_text(f"{days} runs will be triggered.")).to_be_visible(timeout=60_000)
    form.get_by_role("button", name="Run Backfill", exact=True).click()
    expect(page.get_by_text("Backfill generated")).to_be_visible(timeout=60_000)
    expect(form).to_be_hidden(timeout=30_000)


def test_browser_backfill_creates_the_backfill_and_its_runs(server, tmp_path):
    """The UI path of a backfill, checked through the REST API like any other client would.

    Only the creation is the UI's: executing a backfill's runs is the scheduler's job, the same whichever
    path created them, and tests/e2e/test_scheduler_drills.py runs CLI- and REST-created backfills to the
    end under a real scheduler. So no scheduler here: the runs stay queued, which is what is asserted.
    """
    reason = screenshot.chromium_missing_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    base, (start, end) = server["base_url"], BACKFILL_DAYS
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(screenshot.CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport=screenshot.VIEWPORT, timezone_id="UTC")
            screenshot.log_in(page, base, screenshot.ADMIN, server["password"], next_path=f"dags/{local_airflow.DAG_ID}")
            try:
                run_backfill_in_the_ui(page, base, local_airflow.DAG_ID, start, end)
            except Exception:
                page.screenshot(path=str(tmp_path / "backfill-failure.png"))
                print(f"\nscreenshot of the page when it failed: {tmp_path / 'backfill-failure.png'}")
                raise
        finally:
            browser.close()

    token = local_airflow.api_token(base, screenshot.ADMIN, server["password"])
    status, body = local_airflow.api_request(f"{base}/api/v2/backfills?dag_id={local_airflow.DAG_ID}", token=token)
    assert status == 200, body
    assert body["total_entries"] == 1, body
    (backfill,) = body["backfills"]
    assert (backfill["from_date"], backfill["to_date"]) == (f"{start}T00:00:00Z", f"{end}T00:00:00Z"), backfill
    assert (backfill["max_active_runs"], backfill["reprocess_behavior"]) == (1, "completed"), backfill

    status, body = local_airflow.api_request(f"{base}/api/v2/dags/{local_airflow.DAG_ID}/dagRuns", token=token)
    assert status == 200, body
    runs = {run["logical_date"][:10]: run for run in body["dag_runs"]}
    assert sorted(runs) == [start.isoformat(), end.isoformat()], body
    assert {(run["run_type"], run["state"]) for run in runs.values()} == {("backfill", "queued")}, runs
    # "Unpause recsys_daily on trigger" is ticked by default for a paused DAG: a scheduler would now run them.
    status, dag = local_airflow.api_request(f"{base}/api/v2/dags/{local_airflow.DAG_ID}", token=token)
    assert status == 200 and dag["is_paused"] is False, dag
