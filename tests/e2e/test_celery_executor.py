"""End to end on the team configuration of docker-compose.yaml: CeleryExecutor, Redis, PostgreSQL.

The compose file cannot be started on a machine without a Docker engine, so this test runs the same
configuration as plain processes against a real PostgreSQL and a real Redis on 127.0.0.1:

* metadata DB: a fresh PostgreSQL database (``postgresql+psycopg2://``), created here and dropped after;
* ``[core] executor = CeleryExecutor`` with ``[celery] broker_url = redis://127.0.0.1:6379/<n>`` (a Redis
  database number found empty, flushed after) and ``[celery] result_backend = db+postgresql://`` (the
  metadata DB, as in the compose file);
* ``airflow api-server --apps execution``, ``dag-processor``, ``scheduler`` and ``celery worker``
  (concurrency 4) as separate processes;
* the warehouse on PostgreSQL through ``AIRFLOW_CONN_WAREHOUSE_DEFAULT``. The warehouse schema is fixed
  to ``recsys`` by the warehouse contract, so the warehouse gets its own fresh database too rather than
  the shared ``test`` one, where other test sessions on the same server write ``recsys`` as well.

The executor and the URI schemes (``postgresql+psycopg2``, ``db+postgresql``, ``redis``, ``postgresql``) are
read from docker-compose.yaml, so a change there is a change here. MLflow stays on its file store under
the data dir (tests/integration/test_compose_mlflow.py runs the compose file's tracking server).

It triggers ``recsys_daily`` on a small generated landing zone and asserts that the run succeeds, that
every task instance went through Celery (its ``external_executor_id`` is a Celery task id that the
result backend in PostgreSQL recorded as SUCCESS and the worker's log shows received), that the
recommendations landed in the PostgreSQL warehouse, and that the four training tasks overlapped in time
on the worker. Everything started is stopped and both databases are dropped, pass or fail. It skips,
saying which, when PostgreSQL or Redis is unreachable.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest

from recsys import local_airflow
from recsys.constants import MODEL_NAMES
from tests.e2e.airflow_stack import (
    DAG_ID, TERMINAL_STATES, Services, airflow_cli, assert_tasks_overlapped, free_port, json_output, scheduler_env, tail,
)

pytestmark = pytest.mark.e2e

PG_HOST, PG_PORT, PG_ADMIN_USER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
RUN_ID = "manual__celery_executor_test"
TRAIN_TASKS = tuple(f"train_{name}" for name in MODEL_NAMES)
ALL_TASKS = {"validate_raw", "build_features", *TRAIN_TASKS, "fuse", "publish"}
WORKER_CONCURRENCY = 4
RUN_TIMEOUT_S = 12 * 60  # the whole DAG run, triggered to finished


def _pg_uri(database: str, driver: str = "postgresql") -> str:
    return f"{driver}://{PG_ADMIN_USER}@{PG_HOST}:{PG_PORT}/{database}"


def _compose_airflow_config() -> dict[str, str]:
    """The executor and URI schemes the compose file gives the Celery worker (the tasks' environment)."""
    import yaml

    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yaml").read_text())
    env = compose["services"]["airflow-worker"]["environment"]

    def scheme(key: str) -> str:
        return str(env[key]).split("://", 1)[0]

    config = {
        "executor": env["AIRFLOW__CORE__EXECUTOR"],
        "metadata": scheme("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"),
        "result_backend": scheme("AIRFLOW__CELERY__RESULT_BACKEND"),
        "broker": scheme("AIRFLOW__CELERY__BROKER_URL"),
        "warehouse": scheme("AIRFLOW_CONN_WAREHOUSE_DEFAULT"),
    }
    assert config["executor"] == "CeleryExecutor" and config["broker"] == "redis", config
    return config


def _pg_admin():
    """An autocommit connection to the server's ``postgres`` database (CREATE/DROP DATABASE)."""
    import psycopg

    return psycopg.connect(_pg_uri("postgres"), autocommit=True, connect_timeout=5)


def _postgres_unreachable() -> str | None:
    try:
        with _pg_admin() as con:
            con.execute("select 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot run here"; the reason is shown
        return f"PostgreSQL at {PG_HOST}:{PG_PORT} (user {PG_ADMIN_USER}) is unreachable: {exc}"
    return None


def _redis_unreachable() -> str | None:
    import redis

    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        return f"Redis at {REDIS_HOST}:{REDIS_PORT} is unreachable: {exc}"
    return None


def _claim_empty_redis_db():
    """A Redis database number that holds no keys, claimed with a marker key so a concurrent test picks another.

    Numbers are tried from a random start so that parallel test sessions rarely race for the same one.
    """
    import random

    import redis

    try:
        count = int(redis.Redis(host=REDIS_HOST, port=REDIS_PORT).config_get("databases").get("databases", 16))
    except redis.ResponseError:  # CONFIG may be disabled on a managed server: Redis's default count
        count = 16
    start = random.randrange(1, count)
    for offset in range(count - 1):
        number = 1 + (start - 1 + offset) % (count - 1)  # never db 0: the usual default of other users
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number)
        if client.dbsize() == 0 and client.set("recsys-e2e-claim", "celery-executor-test", nx=True):
            if client.dbsize() == 1:
                return number, client
            client.delete("recsys-e2e-claim")
    pytest.skip(f"every Redis database 1..{count - 1} at {REDIS_HOST}:{REDIS_PORT} holds keys; none is free for the broker")


def _query(database: str, sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(_pg_uri(database), connect_timeout=5) as con:
        return con.execute(sql, params).fetchall()


def _task_logs(airflow_home) -> str:
    logs = sorted((airflow_home / "logs").glob(f"dag_id={DAG_ID}/run_id={RUN_ID}/task_id=*/attempt=*.log"))
    if not logs:
        return f"(no task logs under {airflow_home / 'logs'})"
    return "\n".join(f"===== {path.relative_to(airflow_home)}\n{tail(path, 60)}" for path in logs)


@pytest.fixture(scope="module")
def celery_run(tmp_path_factory):
    for reason in (_postgres_unreachable(), _redis_unreachable()):
        if reason:
            pytest.skip(f"{reason}; the CeleryExecutor end-to-end test needs both")
    from recsys.data.synthetic import GeneratorConfig, generate

    team = _compose_airflow_config()
    suffix = uuid.uuid4().hex[:10]
    metadata_db, warehouse_db = f"recsys_e2e_airflow_{suffix}", f"recsys_e2e_warehouse_{suffix}"
    redis_db, redis_client = _claim_empty_redis_db()
    root = tmp_path_factory.mktemp("celery")
    data_dir, airflow_home = root / "data", root / "airflow"
    services = None
    created: list[str] = []
    # Everything is stopped, flushed and dropped before the tests look at the results, so the last
    # test can check that nothing is left; a failure on the way still runs the same clean-up.
    try:
        with _pg_admin() as con:
            for name in (metadata_db, warehouse_db):
                con.execute(f'CREATE DATABASE "{name}"')
                created.append(name)
        summary = generate(data_dir, GeneratorConfig(users=300, products=80, days=8, seed=7))
        ds = summary.end_date.isoformat()
        port = free_port()
        env = scheduler_env(
            airflow_home, data_dir, port,
            metadata_db_uri=_pg_uri(metadata_db, team["metadata"]),
            AIRFLOW__CORE__EXECUTOR=team["executor"],
            AIRFLOW__CELERY__BROKER_URL=f"{team['broker']}://{REDIS_HOST}:{REDIS_PORT}/{redis_db}",
            AIRFLOW__CELERY__RESULT_BACKEND=_pg_uri(metadata_db, team["result_backend"]),
            AIRFLOW__CELERY__WORKER_CONCURRENCY=str(WORKER_CONCURRENCY),
            AIRFLOW_CONN_WAREHOUSE_DEFAULT=_pg_uri(warehouse_db, team["warehouse"]),
            RECSYS_ALS_TRIALS="1",  # the executor is under test here; the MovieLens e2e test runs the full ALS search
        )
        local_airflow.prepare(env)  # migrate, the recsys_compute pool, parse the DAGs
        services = Services(root, env)
        node_name = f"recsys-e2e-{suffix}@%h"
        services.start_celery_worker(WORKER_CONCURRENCY, node_name)
        services.start_scheduler_stack(
            port, dag_parsed=lambda: _query(metadata_db, "select 1 from serialized_dag where dag_id = %s", (DAG_ID,))
        )
        services.wait("the Celery worker to be ready", lambda: "ready." in (root / "celery-worker.log").read_text(errors="replace"), 120)

        triggered = json_output(
            airflow_cli(["dags", "trigger", DAG_ID, "--logical-date", f"{ds}T00:00:00+00:00", "--run-id", RUN_ID, "-o", "json"], env)
        )
        assert triggered[0]["dag_run_id"] == RUN_ID
        started = time.time()

        def finished():
            rows = _query(metadata_db, "select state from dag_run where dag_id = %s and run_id = %s", (DAG_ID, RUN_ID))
            return rows[0][0] if rows and rows[0][0] in TERMINAL_STATES else None

        state = services.wait(f"DAG run {RUN_ID} to finish", finished, RUN_TIMEOUT_S, interval=5)
        run_seconds = time.time() - started
        task_instances = {
            row[0]: dict(zip(("task_id", "state", "start_date", "end_date", "queue", "external_executor_id", "try_number"), row))
            for row in _query(
                metadata_db,
                "select task_id, state, start_date, end_date, queue, external_executor_id, try_number"
                " from task_instance where dag_id = %s and run_id = %s",
                (DAG_ID, RUN_ID),
            )
        }
        if state != "success":
            pytest.fail(
                f"DAG run {RUN_ID} ended {state!r} after {run_seconds:.0f}s; task states: "
                + json.dumps({t: ti["state"] for t, ti in task_instances.items()})
                + f"\n{_task_logs(airflow_home)}\n--- scheduler\n{tail(root / 'scheduler.log', 40)}"
                + f"\n--- celery-worker\n{tail(root / 'celery-worker.log', 40)}"
            )
        # The worker stores a Celery task's result once the Airflow task process has exited, a moment
        # after the task instance (and so the last one's DAG run) turned success: wait for every result.
        celery_ids = [ti["external_executor_id"] for ti in task_instances.values() if ti["external_executor_id"]]

        def stored_results():
            rows = dict(_query(metadata_db, "select task_id, status from celery_taskmeta"))
            return rows if all(rows.get(celery_id) in ("SUCCESS", "FAILURE") for celery_id in celery_ids) else None

        celery_results = services.wait("the Celery worker to store every task's result", stored_results, 60, interval=1)
        recommendations = _query(
            warehouse_db, "select count(*), count(distinct user_id), min(ds)::text, max(ds)::text, min(run_id), max(run_id)"
            " from recsys.recommendations"
        )[0]
        pipeline_runs = _query(warehouse_db, "select ds::text, airflow_run_id, published_rows from recsys.pipeline_runs")
        services.stop()
        worker_log = (root / "celery-worker.log").read_text(errors="replace")
        results = {
            "ds": ds, "state": state, "run_seconds": run_seconds, "task_instances": task_instances,
            "celery_results": celery_results, "worker_log": worker_log, "node_name": node_name,
            "recommendations": recommendations, "pipeline_runs": pipeline_runs, "data_dir": data_dir,
            "services": services, "databases": (metadata_db, warehouse_db), "redis_db": redis_db,
        }
    finally:
        if services is not None:
            services.stop()
        redis_client.flushdb()  # only the database this test claimed
        with _pg_admin() as con:
            for name in created:
                con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    yield results


def test_dag_run_succeeds_on_the_celery_executor(celery_run):
    print(f"\nCeleryExecutor DAG run: {celery_run['run_seconds']:.0f}s from trigger to success")
    assert celery_run["state"] == "success"
    task_instances = celery_run["task_instances"]
    assert set(task_instances) == ALL_TASKS
    assert {ti["state"] for ti in task_instances.values()} == {"success"}


def test_every_task_instance_ran_on_the_celery_worker(celery_run):
    """The CeleryExecutor's task id is recorded on each TI; the result backend and the worker both saw it."""
    worker_log, results = celery_run["worker_log"], celery_run["celery_results"]
    node = celery_run["node_name"].split("@")[0]
    assert re.search(rf"{node}@\S+ ready\.", worker_log), f"the worker log never shows node {node} ready"
    received = set(re.findall(r"execute_workload\[([0-9a-f-]{36})\] received", worker_log))
    succeeded = set(re.findall(r"execute_workload\[([0-9a-f-]{36})\] succeeded", worker_log))
    for task_id, ti in celery_run["task_instances"].items():
        celery_id = ti["external_executor_id"]
        assert celery_id, f"{task_id} has no external_executor_id: it was not sent through Celery"
        assert ti["queue"] == "default", (task_id, ti["queue"])
        assert results.get(celery_id) == "SUCCESS", f"{task_id}: Celery task {celery_id} has result {results.get(celery_id)!r} in PostgreSQL"
        assert celery_id in received, f"{task_id}: the worker's log shows no Celery task {celery_id} received"
        assert celery_id in succeeded, f"{task_id}: the worker's log shows no Celery task {celery_id} succeeded"


def test_recommendations_landed_in_the_postgres_warehouse(celery_run):
    rows, users, min_ds, max_ds, min_run, max_run = celery_run["recommendations"]
    assert rows > 0 and users > 0
    assert min_ds == max_ds == celery_run["ds"]
    assert min_run == max_run  # one run wrote the partition
    summary = json.loads((celery_run["data_dir"] / "runs" / f"ds={celery_run['ds']}" / "summary.json").read_text())
    assert summary["published_rows"] == rows
    assert celery_run["pipeline_runs"] == [(celery_run["ds"], RUN_ID, rows)]


def test_training_tasks_overlap_on_the_worker(celery_run):
    task_instances = celery_run["task_instances"]
    intervals = {task_id: (task_instances[task_id]["start_date"], task_instances[task_id]["end_date"]) for task_id in TRAIN_TASKS}
    assert_tasks_overlapped(
        intervals, task_instances["build_features"]["end_date"], task_instances["fuse"]["start_date"],
        "training task intervals on the Celery worker",
    )


def test_everything_started_is_stopped_and_dropped(celery_run):
    import redis

    assert celery_run["services"].all_gone()
    with _pg_admin() as con:
        left = con.execute("select datname from pg_database where datname = any(%s)", (list(celery_run["databases"]),)).fetchall()
    assert left == [], f"databases not dropped: {left}"
    assert redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=celery_run["redis_db"]).dbsize() == 0
