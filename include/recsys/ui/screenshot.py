"""Screenshot of the Recommendations page from a real Airflow api-server and a real headless Chromium.

``python -m recsys.ui.screenshot --out docs/ui_recommendations.png`` (or ``make ui-screenshot``) starts
``airflow api-server`` on a free port with a throw-away AIRFLOW_HOME (SQLite, SimpleAuthManager with one
admin whose password the server generates), over the data in ``$RECSYS_DATA_DIR``; logs in through
Airflow's login page, opens "Recommendations" from the navigation, looks up a user and saves a PNG.
Every process it starts is stopped again.

The browser steps (:func:`log_in`, :func:`open_recommendations`, :func:`look_up_user`) are also what the
end-to-end test drives, so the README picture and the test follow the same path. Needs the Python
package ``playwright`` (requirements-dev.txt) and Debian's ``chromium`` (``make browser``); no browser
is downloaded.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from recsys.local_airflow import ADMIN, generated_password, simple_auth_settings  # noqa: F401 - ADMIN, generated_password: for the tests

CHROMIUM = Path("/usr/bin/chromium")
NAV_ROUTE = "plugin/recommendations"
#: Viewport of the screenshot: wide enough for the two charts side by side, tall enough for the lookup.
VIEWPORT = {"width": 1500, "height": 1400}


def chromium_missing_reason(executable: Path = CHROMIUM) -> str | None:
    """None when the browser tests can run, else what to install (never downloads a browser)."""
    if not executable.exists():
        return (
            f"{executable} not found: install Debian's browser with `make browser` "
            "(apt-get install chromium chromium-driver)"
        )
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed: pip install -r requirements-dev.txt -c constraints.txt"
    return None


# ------------------------------------------------------------------------------------------- browser steps


def log_in(page: Any, base_url: str, username: str, password: str, next_path: str = NAV_ROUTE) -> None:
    """Open ``next_path`` in the Airflow UI, sign in on the auth manager's login page, land back on it."""
    page.goto(f"{base_url}/{next_path}")
    page.wait_for_url("**/auth/login**", timeout=60_000)
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)


def open_recommendations(page: Any, attempts: int = 3) -> Any:
    """Click "Recommendations" in the Airflow navigation; the frame locator of the page it shows.

    On a busy machine the UI's JavaScript can still be starting when the link is first clickable, and
    that click is lost (seen once in CI: no navigation in 30 s): the click is repeated, 20 s apart.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    link = page.get_by_role("link", name="Recommendations").first
    for attempt in range(1, attempts + 1):
        link.click()
        try:
            page.wait_for_url(f"**/{NAV_ROUTE}", timeout=20_000)
            break
        except PlaywrightTimeout:
            if attempt == attempts:
                raise
    frame = page.frame_locator("iframe")
    frame.locator("#lookup-form").wait_for(timeout=60_000)
    return frame


def look_up_user(frame: Any, user_id: int | str) -> None:
    """Type the user id into the lookup, click "Look up" and wait for that user's result."""
    frame.locator("#user_id").fill(str(user_id))
    frame.locator("#lookup-button").click()
    frame.locator(f'#user-result[data-user-id="{user_id}"], #user-error').first.wait_for(timeout=60_000)


# ------------------------------------------------------------------------------------------------ api-server


def auth_settings(airflow_home: Path, port: int) -> dict[str, str]:
    """Airflow settings of an api-server on ``port`` with auth on (:func:`recsys.local_airflow.simple_auth_settings`:
    one admin, whose password the server generates) and fresh signing secrets."""
    return {
        **simple_auth_settings(airflow_home),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(24),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(24),
    }


@contextmanager
def api_server(data_dir: Path) -> Iterator[tuple[str, str]]:
    """A running api-server over ``data_dir`` (SQLite in a throw-away AIRFLOW_HOME): yields (base URL,
    admin password); stopped and cleaned up on exit."""
    from recsys import local_airflow as la

    home = Path(tempfile.mkdtemp(prefix="recsys-ui-airflow-"))
    port = la.free_port()
    env = la.airflow_env(home, data_dir, **auth_settings(home, port))
    services = la.Services(home / "services", env)
    try:
        la.cli(["db", "migrate"], env, timeout=600)
        services.start("api-server", ["api-server"])
        services.wait("the api-server", lambda: la.http_ok(f"http://127.0.0.1:{port}/api/v2/monitor/health"), la.STARTUP_TIMEOUT_S)
        yield f"http://127.0.0.1:{port}", generated_password(home)
    finally:
        services.stop()
        shutil.rmtree(home, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- command


def pick_user(data_dir: Path) -> int:
    """A user of the latest published day, active on the newest day of events, with about a dozen events."""
    from recsys.config import Settings
    from recsys.ui import data

    settings = Settings(data_dir=Path(data_dir))
    uri = f"duckdb:///{settings.warehouse_path}"
    with data.read_connection(uri) as (connection, _):
        users = [row[0] for row in connection.execute("SELECT DISTINCT user_id FROM recsys.latest_recommendations").fetchall()]
    if not users:
        raise SystemExit(f"no recommendations published in {settings.warehouse_path}: run `make demo` first")
    import duckdb

    files = [str(p) for p in sorted(settings.clean_events_dir.glob("ds=*/*.parquet"))[-200:]]
    counts = duckdb.connect().execute(
        "SELECT user_id, count(*) AS n FROM read_parquet(?) WHERE user_id IN (SELECT unnest(?::BIGINT[])) "
        "GROUP BY user_id ORDER BY max(event_time)::DATE DESC, abs(n - 12), user_id LIMIT 1",
        [files, users],
    ).fetchall()
    return int(counts[0][0]) if counts else int(users[0])


def take_screenshot(data_dir: Path, out: Path, user_id: int | None = None) -> Path:
    from playwright.sync_api import sync_playwright

    reason = chromium_missing_reason()
    if reason:
        raise SystemExit(reason)
    user_id = user_id if user_id is not None else pick_user(data_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with api_server(data_dir) as (base_url, password), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
            log_in(page, base_url, ADMIN, password)
            frame = open_recommendations(page)
            look_up_user(frame, user_id)
            frame.locator("#user-result").scroll_into_view_if_needed()
            page.screenshot(path=str(out))
        finally:
            browser.close()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/ui_recommendations.png"))
    parser.add_argument("--user-id", type=int, default=None, help="user to look up (default: an active user of the latest day)")
    args = parser.parse_args(argv)
    from recsys.config import load_settings

    path = take_screenshot(load_settings().data_dir, args.out, args.user_id)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
