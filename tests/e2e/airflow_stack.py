"""The real Airflow 3 command line and services for the end-to-end tests, in one place.

* :func:`airflow_env` builds the environment of a fresh AIRFLOW_HOME on a temp data dir (SQLite metadata,
  the project's dags/ and plugins/, no MLflow server: the file store under the data dir).
* :func:`run_airflow` / :func:`airflow_cli` run one CLI command to completion (to a log file / captured).
* :class:`Services` starts long-running services (api-server, dag-processor, scheduler, workers), each
  the leader of its own process group logging to its own file, and stops every one of them, escaped
  descendants included, pass or fail.
* :func:`scheduler_env` adds what a real scheduler needs (LocalExecutor, an api-server port, one JWT
  secret for all services, no cron runs: only what a test triggers).
* ``metadata_db_uri=`` (both env builders) swaps SQLite for another metadata DB, e.g. PostgreSQL, and
  :meth:`Services.start_celery_worker` adds ``airflow celery worker`` for the CeleryExecutor.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAG_ID = "recsys_daily"
STARTUP_TIMEOUT_S = 180  # api-server healthy and the DAG parsed into the metadata DB
TERMINAL_STATES = {"success", "failed"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 60) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def airflow_env(airflow_home: Path, data_dir: Path, metadata_db_uri: str | None = None, **extra: str) -> dict:
    """Environment of the Airflow CLI on a fresh AIRFLOW_HOME and the given data dir.

    The metadata DB is SQLite in AIRFLOW_HOME unless ``metadata_db_uri`` names another one (a
    ``postgresql+psycopg2://`` URI for the team configuration); a value inherited from the caller's
    environment is never used, so a test cannot write into someone's real metadata DB by accident.
    """
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "RECSYS_DATA_DIR": str(data_dir),
        "RECSYS_SPARK_MASTER": "local[2]",
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
        **extra,
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)  # the default: SQLite in AIRFLOW_HOME
    if metadata_db_uri is not None:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = metadata_db_uri
    return env


def scheduler_env(airflow_home: Path, data_dir: Path, port: int, metadata_db_uri: str | None = None, **extra: str) -> dict:
    """:func:`airflow_env` for real services: LocalExecutor (``extra`` may name another executor), the
    api-server on ``port``, shared secrets."""
    return airflow_env(
        airflow_home,
        data_dir,
        metadata_db_uri,
        **{
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            # Only the runs a test triggers: no cron run for "yesterday" competing for max_active_runs=1.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            # The scheduler signs the task tokens the api-server verifies: one secret for all services.
            "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(24).hex(),
            "AIRFLOW__API__SECRET_KEY": os.urandom(24).hex(),
            **extra,
        },
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
    result = subprocess.run(
        [str(BIN / "airflow"), *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        pytest.fail(f"airflow {' '.join(args)} failed (rc={result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def json_output(stdout: str):
    """The JSON document in a CLI's stdout (Airflow may print warnings on stdout before it)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(("[", "{")):
            return json.loads(line)
    raise AssertionError(f"no JSON in the CLI output:\n{stdout[-4000:]}")


def query_sqlite(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read a SQLite metadata DB (read-only, waiting out the services' write locks)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
        return con.execute(sql, params).fetchall()


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # start_new_session=True made pid the group id
    except ProcessLookupError:
        pass


class Services:
    """Airflow services of one test module, each a process-group leader logging to ``root/<name>.log``."""

    def __init__(self, root: Path, env: dict):
        self.root, self.env = root, env
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str]) -> None:
        with open(self.root / f"{name}.log", "w") as log:
            self.processes[name] = subprocess.Popen(
                [str(BIN / "airflow"), *args], env=self.env, cwd=REPO_ROOT,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def start_scheduler_stack(
        self, port: int, metadata_db: Path | None = None, dag_id: str = DAG_ID, dag_parsed=None
    ) -> None:
        """api-server (Execution API only), dag-processor and scheduler; returns once ``dag_id`` is parsed.

        "Parsed" is read from the SQLite ``metadata_db``, or asked of ``dag_parsed()`` (truthy once the
        DAG is serialized) for a metadata DB this module cannot open, e.g. PostgreSQL.
        """
        self.start("api-server", ["api-server", "--apps", "execution"])
        self.start("dag-processor", ["dag-processor"])
        self.start("scheduler", ["scheduler", "--skip-serve-logs"])
        self.wait("the Execution API", lambda: http_ok(f"http://127.0.0.1:{port}/execution/health"), STARTUP_TIMEOUT_S)
        if metadata_db is not None:
            self.wait(
                f"{dag_id} to be parsed",
                lambda: query_sqlite(metadata_db, "select 1 from serialized_dag where dag_id = ?", (dag_id,)),
                STARTUP_TIMEOUT_S,
            )
        if dag_parsed is not None:
            self.wait(f"{dag_id} to be parsed", dag_parsed, STARTUP_TIMEOUT_S)

    def start_celery_worker(self, concurrency: int, node_name: str, name: str = "celery-worker") -> None:
        """``airflow celery worker`` (the CeleryExecutor's worker) with ``concurrency`` task slots.

        ``node_name`` (``name@host``) names the node in its log. No log server (its fixed port would clash
        with other runs on the machine; task logs are files under AIRFLOW_HOME), and no gossip or mingle:
        those talk over Redis pub/sub, which is shared by every database number of the server.
        """
        self.start(
            name,
            ["celery", "worker", "--concurrency", str(concurrency), "--celery-hostname", node_name,
             "--skip-serve-logs", "--without-gossip", "--without-mingle"],
        )

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                pytest.fail(f"airflow {name} exited with rc={process.returncode}:\n{tail(self.root / f'{name}.log')}")

    def wait(self, what: str, ready, timeout: float, interval: float = 2.0):
        """Poll ``ready()`` until it returns something truthy (returned), failing with the services' logs."""
        deadline = time.time() + timeout
        while True:
            self.check_alive()
            value = ready()
            if value:
                return value
            if time.time() > deadline:
                pytest.fail(
                    f"timed out after {timeout:.0f}s waiting for {what}; service logs:\n"
                    + "\n".join(f"--- {name}\n{tail(self.root / f'{name}.log', 30)}" for name in self.processes)
                )
            time.sleep(interval)

    def stop(self) -> None:
        """SIGTERM each service's process group, then SIGKILL whatever (incl. escaped descendants) is left."""
        import psutil

        descendants = []
        for process in self.processes.values():
            try:
                descendants += psutil.Process(process.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        for process in self.processes.values():
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGTERM)
        deadline = time.time() + 30
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
        for process in self.processes.values():
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
        for child in descendants:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(descendants, timeout=10)

    def all_gone(self) -> bool:
        """True when every started service exited and its process group is empty."""
        for process in self.processes.values():
            if process.returncode is None:
                return False
            try:
                os.killpg(process.pid, 0)
                return False
            except ProcessLookupError:
                pass
        return True
