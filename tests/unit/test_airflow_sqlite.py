"""Airflow processes sharing the SQLite metadata DB wait for its write lock instead of failing at 5 s.

Seen in a fresh-clone `make test`: `airflow backfill create` failed with "database is locked" while the
scheduler was writing its cron run. Here a real Airflow engine, built by Airflow from the environment
:func:`recsys.local_airflow.airflow_env` gives it, writes while this process holds SQLite's write lock
for longer than sqlite3's default wait (5 s). The control run, without the setting, must fail.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recsys import local_airflow

HOLD_SECONDS = 7  # longer than sqlite3's default busy timeout of 5 s

WRITE = """
from airflow import settings
from sqlalchemy import text
if settings.engine is None:
    settings.configure_orm()
print("ready", flush=True)  # imported and configured: the wait for the lock starts now
with settings.engine.begin() as connection:
    connection.execute(text("INSERT INTO probe VALUES (2)"))
"""


def _write_while_locked(tmp_path: Path, env: dict) -> subprocess.CompletedProcess:
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    holder = sqlite3.connect(home / "airflow.db", isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")  # as Airflow opens it
    holder.execute("CREATE TABLE probe (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")  # take the write lock
    holder.execute("INSERT INTO probe VALUES (1)")
    writer = subprocess.Popen([sys.executable, "-c", WRITE], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready", writer.stderr.read()[-3000:]
    time.sleep(HOLD_SECONDS)
    holder.execute("COMMIT")
    out, err = writer.communicate(timeout=120)
    rows = holder.execute("SELECT count(*) FROM probe").fetchone()[0]
    holder.close()
    return subprocess.CompletedProcess(writer.args, writer.returncode, out, err + f"\nrows={rows}")


def test_airflow_waits_for_the_sqlite_write_lock(tmp_path):
    env = local_airflow.airflow_env(tmp_path / "airflow", tmp_path / "data")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"] == local_airflow.SQLITE_CONNECT_ARGS

    result = _write_while_locked(tmp_path, env)

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.endswith("rows=2")


def test_without_the_setting_the_same_write_fails_locked(tmp_path):
    env = local_airflow.airflow_env(tmp_path / "airflow", tmp_path / "data")
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS")
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC")

    result = _write_while_locked(tmp_path, env)

    assert result.returncode != 0 and "database is locked" in result.stderr, result.stderr[-3000:]


@pytest.mark.parametrize("uri", ["postgresql+psycopg2://airflow@127.0.0.1:5432/airflow"])
def test_other_metadata_databases_get_no_sqlite_arguments(tmp_path, uri, monkeypatch):
    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS", raising=False)
    env = local_airflow.airflow_env(tmp_path / "airflow", tmp_path / "data", metadata_db_uri=uri)
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS" not in env


def test_a_backfill_creation_that_hits_the_lock_is_tried_again_and_lands_once(tmp_path, caplog):
    """`airflow backfill create` failing with "database is locked" creates nothing and is tried again.

    Beside a scheduler, SQLite fails the creation at once when the scheduler committed after the command's
    transaction began reading (WAL: a stale snapshot; seen in the drills). Here the real CLI runs out of
    sqlite3's default 5 s wait while this test holds the write lock, which it gives up once the first
    failure is logged; the next try creates the backfill, exactly once.
    """
    import logging
    import threading
    from datetime import date

    env = local_airflow.airflow_env(tmp_path / "airflow", tmp_path / "data")
    local_airflow.prepare(env)
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS")  # sqlite3's default wait: 5 s
    db = Path(env["AIRFLOW_HOME"]) / "airflow.db"
    locked, failure_logged, released = threading.Event(), threading.Event(), threading.Event()

    def hold_the_lock():
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        locked.set()
        failure_logged.wait(timeout=180)
        holder.execute("COMMIT")
        holder.close()
        released.set()

    class OnRetry(logging.Handler):
        def emit(self, record):
            if "metadata DB was locked" in record.getMessage():
                failure_logged.set()

    handler = OnRetry(level=logging.WARNING)
    logging.getLogger(local_airflow.__name__).addHandler(handler)
    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert locked.wait(timeout=30)
        local_airflow.create_backfill(env, date(2026, 10, 1), date(2026, 10, 2))
    finally:
        failure_logged.set()
        holder.join(timeout=60)
        logging.getLogger(local_airflow.__name__).removeHandler(handler)
    assert released.is_set()
    assert "metadata DB was locked" in caplog.text  # the first try really failed on the lock
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        assert con.execute("SELECT count(*) FROM backfill").fetchone()[0] == 1
        runs = con.execute("SELECT date(logical_date) FROM dag_run WHERE backfill_id IS NOT NULL ORDER BY 1").fetchall()
    assert runs == [("2026-10-01",), ("2026-10-02",)]
