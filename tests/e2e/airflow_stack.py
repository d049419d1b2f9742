"""The real Airflow 3 command line and services for the end-to-end tests.

The machinery lives in :mod:`recsys.local_airflow` (``make backfill`` and ``bench/e2e.py`` use it too);
this module adds what tests want on top: Spark pinned to ``local[2]``, CLI failures as test failures with
the command's output, waiting for a DAG to be parsed by reading the SQLite metadata DB.
"""

from __future__ import annotations

import sqlite3
import subprocess
from itertools import combinations
from pathlib import Path

import pytest

from recsys import local_airflow
from recsys.local_airflow import (  # noqa: F401 - re-exported for the tests
    BIN, DAG_ID, REPO_ROOT, STARTUP_TIMEOUT_S, TERMINAL_STATES, AirflowError, free_port, http_ok, json_output, tail,
)


def airflow_env(airflow_home: Path, data_dir: Path, metadata_db_uri: str | None = None, **extra: str) -> dict:
    """:func:`recsys.local_airflow.airflow_env` (SQLite unless ``metadata_db_uri``) with Spark local[2]."""
    return local_airflow.airflow_env(airflow_home, data_dir, metadata_db_uri, **{"RECSYS_SPARK_MASTER": "local[2]", **extra})


def scheduler_env(airflow_home: Path, data_dir: Path, port: int, metadata_db_uri: str | None = None,
                  schedule_runs: bool = False, **extra: str) -> dict:
    """:func:`recsys.local_airflow.scheduler_env` (LocalExecutor unless ``extra`` names another) with Spark local[2]."""
    return local_airflow.scheduler_env(
        airflow_home, data_dir, port, schedule_runs=schedule_runs, metadata_db_uri=metadata_db_uri,
        **{"RECSYS_SPARK_MASTER": "local[2]", **extra},
    )


def run_airflow(args: list[str], env: dict, log_path: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run an Airflow CLI command to completion with its output in ``log_path``; a test failure if it fails."""
    with open(log_path, "w") as log:
        result = subprocess.run(
            [str(BIN / "airflow"), *args], env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, cwd=REPO_ROOT
        )
    if result.returncode != 0:
        pytest.fail(f"airflow {' '.join(args)} failed (rc={result.returncode}); log {log_path}:\n{tail(log_path)}")
    return result


def airflow_cli(args: list[str], env: dict, timeout: int = 300) -> str:
    """Run an Airflow CLI command to completion; its stdout, or a test failure with its output."""
    try:
        return local_airflow.cli(args, env, timeout=timeout)
    except AirflowError as exc:
        pytest.fail(str(exc))


def query_sqlite(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read a SQLite metadata DB (read-only, waiting out the services' write locks)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
        return con.execute(sql, params).fetchall()


class Services(local_airflow.Services):
    """:class:`recsys.local_airflow.Services`; ``start_scheduler_stack`` can also wait for a DAG to be parsed."""

    def start_scheduler_stack(self, port: int, metadata_db: Path | None = None, dag_id: str = DAG_ID, dag_parsed=None,
                              apps: str = "execution") -> None:
        """Also waits for ``dag_id`` to be parsed: read from the SQLite ``metadata_db``, or asked of
        ``dag_parsed()`` (truthy once the DAG is serialized) for a metadata DB this module cannot open."""
        super().start_scheduler_stack(port, apps)
        if metadata_db is not None:
            self.wait(
                f"{dag_id} to be parsed",
                lambda: query_sqlite(metadata_db, "select 1 from serialized_dag where dag_id = ?", (dag_id,)),
                STARTUP_TIMEOUT_S,
            )
        if dag_parsed is not None:
            self.wait(f"{dag_id} to be parsed", dag_parsed, STARTUP_TIMEOUT_S)


def assert_tasks_overlapped(intervals: dict, after, before, label: str) -> None:
    """Every task in ``intervals`` ({task_id: (start, end)} datetimes) ran within ``after``..``before`` (the end
    of its upstream, the start of its downstream), every pair overlapped, and all were running at one moment:
    the executor really ran them side by side. The intervals are printed (``pytest -s`` shows them)."""
    origin = min(start for start, _ in intervals.values())
    described = {t: f"{(s - origin).total_seconds():.1f}s..{(e - origin).total_seconds():.1f}s" for t, (s, e) in intervals.items()}
    print(f"\n{label}: {described}")
    for task_id, (start, end) in intervals.items():
        assert after <= start < end <= before, (label, task_id, described)
    for (a, (a_start, a_end)), (b, (b_start, b_end)) in combinations(intervals.items(), 2):
        assert max(a_start, b_start) < min(a_end, b_end), f"{label}: {a} and {b} did not overlap: {described}"
    assert max(s for s, _ in intervals.values()) < min(e for _, e in intervals.values()), (label, described)
