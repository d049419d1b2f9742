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
import time
from datetime import datetime
from itertools import combinations

import pytest

from recsys.constants import MODEL_NAMES
from tests.e2e.airflow_stack import (
    DAG_ID, TERMINAL_STATES, Services, airflow_cli, free_port, json_output, query_sqlite, scheduler_env, tail,
)

pytestmark = pytest.mark.e2e

RUN_ID = "manual__scheduler_parallel_test"
TRAIN_TASKS = tuple(f"train_{name}" for name in MODEL_NAMES)
RUN_TIMEOUT_S = 12 * 60  # the whole DAG run, triggered to finished


def _task_logs(airflow_home) -> str:
    logs = sorted((airflow_home / "logs").glob(f"dag_id={DAG_ID}/run_id={RUN_ID}/task_id=*/attempt=*.log"))
    if not logs:
        return f"(no task logs under {airflow_home / 'logs'})"
    return "\n".join(f"===== {path.relative_to(airflow_home)}\n{tail(path, 80)}" for path in logs)


@pytest.fixture(scope="module")
def scheduled_run(tmp_path_factory):
    from recsys.data.synthetic import GeneratorConfig, generate

    root = tmp_path_factory.mktemp("scheduler")
    data_dir = root / "data"
    airflow_home = root / "airflow"
    summary = generate(data_dir, GeneratorConfig(users=600, products=150, days=9, seed=11))
    ds = summary.end_date.isoformat()
    port = free_port()
    env = scheduler_env(airflow_home, data_dir, port)
    metadata_db = airflow_home / "airflow.db"

    airflow_cli(["db", "migrate"], env)
    services = Services(root, env)
    try:
        services.start_scheduler_stack(port, metadata_db)
        triggered = json_output(
            airflow_cli(["dags", "trigger", DAG_ID, "--logical-date", f"{ds}T00:00:00+00:00", "--run-id", RUN_ID, "-o", "json"], env)
        )
        assert triggered[0]["dag_run_id"] == RUN_ID

        started = time.time()

        def finished():
            rows = query_sqlite(metadata_db, "select state from dag_run where dag_id = ? and run_id = ?", (DAG_ID, RUN_ID))
            return rows[0][0] if rows and rows[0][0] in TERMINAL_STATES else None

        state = services.wait(f"DAG run {RUN_ID} to finish", finished, RUN_TIMEOUT_S, interval=5)
        run_seconds = time.time() - started
        # The CLI's view of the run and of its task instances (with their start and end times).
        cli_state = airflow_cli(["dags", "state", DAG_ID, RUN_ID], env).strip().splitlines()[-1]
        tasks = json_output(airflow_cli(["tasks", "states-for-dag-run", DAG_ID, RUN_ID, "-o", "json"], env))
        if state != "success":
            pytest.fail(
                f"DAG run {RUN_ID} ended {state!r}; task states: "
                + json.dumps({t["task_id"]: t["state"] for t in tasks})
                + f"\n{_task_logs(airflow_home)}\n--- scheduler\n{tail(root / 'scheduler.log', 40)}"
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
    assert scheduled_run["services"].all_gone()
