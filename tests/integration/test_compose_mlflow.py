"""The compose file's MLflow service, run for real with its own arguments (skipped without PostgreSQL).

``docker compose`` cannot run here, so the ``mlflow`` service's command line is taken from
docker-compose.yaml and started as a process: only the bind address, the port and the artifact
directory are swapped for local ones, and its backend store is a fresh PostgreSQL database (created
here, dropped after), as ``MLFLOW_BACKEND_STORE_URI`` makes it in the stack. The test shows that

* the server accepts requests addressed the way the Airflow tasks address it (``Host: mlflow:5000``,
  from ``MLFLOW_TRACKING_URI``) and still rejects other host names (MLflow's DNS-rebinding protection,
  which rejects ``mlflow:5000`` under its defaults);
* a client logs a run into the PostgreSQL backend and an artifact through the server into the
  artifact store (``--serve-artifacts``), which is what the training tasks do.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from recsys.local_airflow import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
START_TIMEOUT_S = 180  # the first start migrates MLflow's schema into the empty database


def _replace_flag(args: list[str], name: str, value: str) -> list[str]:
    """``args`` with ``--name=…`` (or ``--name …``) set to ``value``; a test failure if the flag is absent."""
    out, found, skip = [], False, False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg.startswith(f"{name}="):
            out.append(f"{name}={value}")
            found = True
        elif arg == name:
            out += [name, value]
            found, skip = True, True
        else:
            out.append(arg)
    assert found, f"the compose file's mlflow command has no {name}: {args}"
    return out


def _get(port: int, path: str, host_header: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": host_header})
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.fixture(scope="module")
def mlflow_service(tmp_path_factory):
    import psycopg

    try:
        admin = psycopg.connect(f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres", autocommit=True, connect_timeout=5)
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot run here"; the reason is shown
        pytest.skip(f"PostgreSQL at {PG_HOST}:{PG_PORT} (user {PG_USER}) is unreachable: {exc}")

    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
    service = compose["services"]["mlflow"]
    tracking_uri = compose["services"]["airflow-worker"]["environment"]["MLFLOW_TRACKING_URI"]
    store_scheme = service["environment"]["MLFLOW_BACKEND_STORE_URI"].split("://", 1)[0]
    assert store_scheme.startswith("postgresql"), store_scheme
    assert service["entrypoint"][:2] == ["mlflow", "server"], service["entrypoint"]

    root = tmp_path_factory.mktemp("mlflow-service")
    artifacts = root / "artifacts"
    port = free_port()
    args = [str(a) for a in service["command"]]
    for name, value in (("--host", "127.0.0.1"), ("--port", str(port)), ("--artifacts-destination", str(artifacts))):
        args = _replace_flag(args, name, value)

    database = f"recsys_test_mlflow_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{database}"')
    log_path = root / "mlflow.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_BACKEND_STORE_URI"] = f"{store_scheme}://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"
    process = None
    try:
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [str(BIN / "mlflow"), *service["entrypoint"][1:], *args], env=env, cwd=root,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.time() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited with rc={process.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"mlflow server not healthy after {START_TIMEOUT_S}s:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        yield {"port": port, "artifacts": artifacts, "database": database, "tracking_uri": tracking_uri, "log": log_path}
    finally:
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=20)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


def test_the_server_accepts_the_host_name_the_tasks_use_and_rejects_others(mlflow_service):
    port, task_host = mlflow_service["port"], urlsplit(mlflow_service["tracking_uri"]).netloc
    path = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert _get(port, path, task_host) == 200, f"the server rejects Host: {task_host}; see {mlflow_service['log']}"
    assert _get(port, path, f"localhost:{port}") == 200  # the browser on the published port
    assert _get(port, path, "attacker.example:5000") == 403  # the protection is still on


def test_a_run_lands_in_postgres_and_its_artifact_in_the_store(mlflow_service, tmp_path):
    import psycopg
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{mlflow_service['port']}")
    experiment_id = client.create_experiment("compose-check")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "ndcg_at_10", 0.42)
    note = tmp_path / "note.txt"
    note.write_text("served through the tracking server")
    client.log_artifact(run.info.run_id, str(note))
    client.set_terminated(run.info.run_id)

    with psycopg.connect(f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{mlflow_service['database']}") as con:
        rows = con.execute("select key, value from metrics where run_uuid = %s", (run.info.run_id,)).fetchall()
    assert rows == [("ndcg_at_10", 0.42)]
    stored = list(mlflow_service["artifacts"].rglob("note.txt"))
    assert [p.read_text() for p in stored] == ["served through the tracking server"], stored
