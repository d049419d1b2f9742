"""The real Airflow 3 command line and services for the end-to-end tests.

The machinery lives in :mod:`recsys.local_airflow` (``make backfill`` and ``bench/e2e.py`` use it too);
this module adds what tests want on top: Spark pinned to ``local[2]``, CLI failures as test failures with
the command's output, waiting for a DAG to be parsed by reading the SQLite metadata DB.
"""

from __future__ import annotations

import sqlite3
import subprocess
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
