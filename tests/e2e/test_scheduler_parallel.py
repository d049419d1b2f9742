"""End to end under a real scheduler: the training tasks of one DAG run execute at the same time.

`airflow dags test` (test_daily_dag.py) runs tasks one after another, so it cannot show what the README
promises: that an executor running tasks in parallel trains the models at once. Here the real
Airflow 3 services run as separate processes on a temp AIRFLOW_HOME with the SQLite metadata DB:

* ``airflow api-server --apps execution`` on a free port: the Execution API the task processes talk to;
* ``airflow dag-processor``: parses ``dags/`` into the metadata DB;
* ``airflow scheduler --skip-serve-logs`` with the LocalExecutor (parallelism 4).

The cron schedule is switched off (``[scheduler] use_job_schedule = False``) so the only run is the one
triggered with ``airflow dags trigger --logical-date <ds>``. The test waits for that run to finish, then
reads every task instance's start and end time with ``airflow tasks states-for-dag-run -o json`` and
asserts that the training intervals overlap pairwise. Every process started here is terminated
(its whole process group and any escaped descendants) when the module is done, pass or fail.
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
from datetime import datetime
from itertools import combinations
from pathlib import Path

import pytest

from recsys.constants import MODEL_NAMES

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAG_ID = "recsys_daily"
RUN_ID = "manual__scheduler_parallel_test"
TRAIN_TASKS = tuple(f"train_{name}" for name in MODEL_NAMES)
STARTUP_TIMEOUT_S = 180  # api-server healthy and the DAG parsed into the metadata DB
RUN_TIMEOUT_S = 12 * 60  # the whole DAG run, triggered to finished
TERMINAL_STATES = {"success", "failed"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 60) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Services:
    """The Airflow services of this test, each a process-group leader logging to its own file."""

    def __init__(self, root: Path, env: dict):
        self.root, self.env = root, env
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str]) -> None:
        with open(self.root / f"{name}.log", "w") as log:
            self.processes[name] = subprocess.Popen(
                [str(BIN / "airflow"), *args], env=self.env, cwd=REPO_ROOT,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                pytest.fail(f"airflow {name} exited with rc={process.returncode}:\n{_tail(self.root / f'{name}.log')}")

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


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # start_new_session=True made pid the group id
    except ProcessLookupError:
        pass


def _airflow(args: list[str], env: dict, timeout: int = 300) -> str:
    """Run an Airflow CLI command to completion; its stdout, or a test failure with its output."""
    result = subprocess.run(
        [str(BIN / "airflow"), *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        pytest.fail(f"airflow {' '.join(args)} failed (rc={result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def _json_line(stdout: str):
    """The JSON document in a CLI's stdout (Airflow may print warnings on stdout before it)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(("[", "{")):
            return json.loads(line)
    raise AssertionError(f"no JSON in the CLI output:\n{stdout[-4000:]}")


def _query(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read the SQLite metadata DB (read-only, waiting out the services' write locks)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
        return con.execute(sql, params).fetchall()


def _wait(what: str, ready, services: Services, timeout: float, interval: float = 2.0):
    deadline = time.time() + timeout
    while True:
        services.check_alive()
        value = ready()
        if value:
            return value
        if time.time() > deadline:
            pytest.fail(
                f"timed out after {timeout:.0f}s waiting for {what}; service logs:\n"
                + "\n".join(f"--- {name}\n{_tail(services.root / f'{name}.log', 30)}" for name in services.processes)
            )
        time.sleep(interval)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _task_logs(airflow_home: Path) -> str:
    logs = sorted((airflow_home / "logs").glob(f"dag_id={DAG_ID}/run_id={RUN_ID}/task_id=*/attempt=*.log"))
    if not logs:
        return f"(no task logs under {airflow_home / 'logs'})"
    return "\n".join(f"===== {path.relative_to(airflow_home)}\n{_tail(path, 80)}" for path in logs)


@pytest.fixture(scope="module")
def scheduled_run(tmp_path_factory):
    from recsys.data.synthetic import GeneratorConfig, generate

    root = tmp_path_factory.mktemp("scheduler")
    data_dir = root / "data"
    airflow_home = root / "airflow"
    summary = generate(data_dir, GeneratorConfig(users=600, products=150, days=9, seed=11))
    ds = summary.end_date.isoformat()
    port = _free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # Only the run this test triggers: no cron run for "yesterday" competing for max_active_runs=1.
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
        "RECSYS_DATA_DIR": str(data_dir),
        "RECSYS_SPARK_MASTER": "local[2]",
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)  # the default: SQLite in AIRFLOW_HOME
    metadata_db = airflow_home / "airflow.db"

    _airflow(["db", "migrate"], env)
    services = Services(root, env)
    try:
        services.start("api-server", ["api-server", "--apps", "execution"])
        services.start("dag-processor", ["dag-processor"])
        services.start("scheduler", ["scheduler", "--skip-serve-logs"])
        _wait("the Execution API", lambda: _healthy(f"http://127.0.0.1:{port}/execution/health"), services, STARTUP_TIMEOUT_S)
        _wait(
            f"{DAG_ID} to be parsed",
            lambda: _query(metadata_db, "select 1 from serialized_dag where dag_id = ?", (DAG_ID,)),
            services,
            STARTUP_TIMEOUT_S,
        )
        triggered = _json_line(
            _airflow(["dags", "trigger", DAG_ID, "--logical-date", f"{ds}T00:00:00+00:00", "--run-id", RUN_ID, "-o", "json"], env)
        )
        assert triggered[0]["dag_run_id"] == RUN_ID

        started = time.time()

        def finished():
            rows = _query(metadata_db, "select state from dag_run where dag_id = ? and run_id = ?", (DAG_ID, RUN_ID))
            return rows[0][0] if rows and rows[0][0] in TERMINAL_STATES else None

        state = _wait(f"DAG run {RUN_ID} to finish", finished, services, RUN_TIMEOUT_S, interval=5)
        run_seconds = time.time() - started
        # The CLI's view of the run and of its task instances (with their start and end times).
        cli_state = _airflow(["dags", "state", DAG_ID, RUN_ID], env).strip().splitlines()[-1]
        tasks = _json_line(_airflow(["tasks", "states-for-dag-run", DAG_ID, RUN_ID, "-o", "json"], env))
        if state != "success":
            pytest.fail(
                f"DAG run {RUN_ID} ended {state!r}; task states: "
                + json.dumps({t["task_id"]: t["state"] for t in tasks})
                + f"\n{_task_logs(airflow_home)}\n--- scheduler\n{_tail(root / 'scheduler.log', 40)}"
            )
    finally:
        services.stop()
    yield {
        "ds": ds, "state": state, "cli_state": cli_state, "tasks": {t["task_id"]: t for t in tasks},
        "run_seconds": run_seconds, "data_dir": data_dir, "airflow_home": airflow_home, "services": services,
    }


def test_dag_run_succeeds_under_the_scheduler(scheduled_run):
    assert scheduled_run["state"] == "success"
    assert scheduled_run["cli_state"] == "success"
    tasks = scheduled_run["tasks"]
    assert set(tasks) == {"validate_raw", "build_features", *TRAIN_TASKS, "fuse", "publish"}
    assert {t["state"] for t in tasks.values()} == {"success"}
    # The run's recommendations landed, so this was the whole pipeline, not a stub.
    summary = json.loads((scheduled_run["data_dir"] / "runs" / f"ds={scheduled_run['ds']}" / "summary.json").read_text())
    assert summary["published_rows"] > 0
    assert set(summary["evaluation"]) >= set(MODEL_NAMES)


def test_training_tasks_overlap_in_time(scheduled_run):
    tasks = scheduled_run["tasks"]
    intervals = {
        task_id: (datetime.fromisoformat(tasks[task_id]["start_date"]), datetime.fromisoformat(tasks[task_id]["end_date"]))
        for task_id in TRAIN_TASKS
    }
    origin = min(start for start, _ in intervals.values())
    described = {t: f"{(s - origin).total_seconds():.1f}s..{(e - origin).total_seconds():.1f}s" for t, (s, e) in intervals.items()}
    print(f"\nDAG run {scheduled_run['run_seconds']:.0f}s; training task intervals: {described}")

    # Each after build_features ended, each before fuse started: the DAG's ordering held.
    features_end = datetime.fromisoformat(tasks["build_features"]["end_date"])
    fuse_start = datetime.fromisoformat(tasks["fuse"]["start_date"])
    for task_id, (start, end) in intervals.items():
        assert features_end <= start < end <= fuse_start, (task_id, described)
    # Pairwise overlap, and all at once: the last to start began before the first to end finished.
    for (a, (a_start, a_end)), (b, (b_start, b_end)) in combinations(intervals.items(), 2):
        assert max(a_start, b_start) < min(a_end, b_end), f"{a} and {b} did not overlap: {described}"
    assert max(s for s, _ in intervals.values()) < min(e for _, e in intervals.values()), described


def test_every_started_process_is_gone(scheduled_run):
    # The fixture's finaliser already ran: no process is left in any service's process group.
    for name, process in scheduled_run["services"].processes.items():
        assert process.returncode is not None, name
        with pytest.raises(ProcessLookupError):
            os.killpg(process.pid, 0)
