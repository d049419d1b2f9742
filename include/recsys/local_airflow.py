"""Run the real Airflow 3 services on this machine, and backfills through them: ``make backfill``.

``airflow backfill create`` only *creates* the runs; a scheduler executes them. On a laptop or a single
VM there may be none running, so ``python -m recsys.local_airflow backfill --from-date … --to-date …``
(what ``make backfill FROM=… TO=…`` calls):

1. migrates the metadata DB, creates the ``recsys_compute`` pool and parses ``dags/`` into the DB;
2. runs ``airflow backfill create --dag-id recsys_daily --from-date … --to-date …`` (before any service
   runs, so no other process holds SQLite's write lock);
3. starts ``airflow api-server --apps execution``, ``airflow dag-processor`` and ``airflow scheduler``
   (LocalExecutor), each in its own process group with its log under ``$AIRFLOW_HOME/services/``, and
   logs each day's progress until every run has finished;
4. stops every service it started (SIGTERM, then SIGKILL), and exits non-zero naming the failed days.

If a scheduler of yours is already running against the same ``AIRFLOW_HOME``, use
``airflow backfill create`` directly instead. The same classes start the services in the end-to-end
tests and in ``bench/e2e.py``. Nothing here is imported by the DAGs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import date
from pathlib import Path

log = logging.getLogger("recsys.local_airflow")

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAG_ID = "recsys_daily"
TERMINAL_STATES = {"success", "failed"}
STARTUP_TIMEOUT_S = 180


class AirflowError(RuntimeError):
    """An Airflow command or service failed; the message carries its output."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 60) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


#: The one user of the SimpleAuthManager settings below (Airflow generates its password at start).
ADMIN = "admin"


def simple_auth_settings(airflow_home: Path) -> dict[str, str]:
    """Auth on, as in every shipped configuration: Airflow's SimpleAuthManager with one admin, whose
    password the api-server generates into a file in ``airflow_home`` (:func:`generated_password`)."""
    return {
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(Path(airflow_home) / "simple_auth_manager_passwords.json"),
    }


def generated_password(airflow_home: Path, username: str = ADMIN) -> str:
    """The password the api-server generated for ``username`` at start (SimpleAuthManager's passwords file)."""
    return json.loads((Path(airflow_home) / "simple_auth_manager_passwords.json").read_text())[username]


def api_request(url: str, body: dict | None = None, token: str | None = None, method: str | None = None) -> tuple[int, dict | str]:
    """One JSON request to the api-server: (status, decoded body); 4xx/5xx are returned, not raised."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method or ("POST" if data else "GET"))
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def api_token(base_url: str, username: str, password: str) -> str:
    """A bearer token for the REST API from the auth manager's ``/auth/token`` (what ``curl`` users do)."""
    status, body = api_request(f"{base_url}/auth/token", {"username": username, "password": password})
    if status != 201:
        raise AirflowError(f"POST {base_url}/auth/token answered {status}: {body}")
    return body["access_token"]


#: SQLite fails a transaction at once, without waiting out the lock, when another process committed a
#: write after this one's transaction began reading (WAL mode: its snapshot is stale); only a retry helps.
SQLITE_LOCKED = "database is locked"
#: Tries of a backfill creation that hit :data:`SQLITE_LOCKED`, and the pause between them (seconds).
LOCKED_TRIES, LOCKED_PAUSE_S = 5, 2.0


class BackfillAlreadyRunning(AirflowError):
    """Airflow still marks another backfill of the DAG running (one at a time per DAG)."""


def create_backfill_via_api(base_url: str, token: str, start: date, end: date, reprocess: str = "completed",
                            max_active_runs: int = 1, dag_id: str = DAG_ID, wait_for_previous_s: float = 300) -> dict:
    """``POST /api/v2/backfills``: the REST twin of :func:`create_backfill`; the created backfill as JSON."""
    body = {
        "dag_id": dag_id, "from_date": f"{start.isoformat()}T00:00:00Z", "to_date": f"{end.isoformat()}T00:00:00Z",
        "reprocess_behavior": reprocess, "max_active_runs": max_active_runs,
    }

    def post() -> dict:
        status, answer = api_request(f"{base_url}/api/v2/backfills", body, token)
        if status == 409:
            raise BackfillAlreadyRunning(f"POST /api/v2/backfills answered 409: {answer}")
        if status != 200:
            raise AirflowError(f"POST {base_url}/api/v2/backfills {json.dumps(body)} answered {status}: {answer}")
        return answer

    return _after_previous_backfill(post, dag_id, wait_for_previous_s)


#: Import path Airflow reads the SQLite metadata DB's connect arguments from (a lock wait of a minute).
SQLITE_CONNECT_ARGS = "recsys.airflow_sqlite.CONNECT_ARGS"


def airflow_env(airflow_home: Path, data_dir: Path, metadata_db_uri: str | None = None, **extra: str) -> dict:
    """Environment of the Airflow CLI on ``airflow_home`` and the given data dir.

    The metadata DB is SQLite in ``airflow_home`` unless ``metadata_db_uri`` names another one (e.g.
    ``postgresql+psycopg2://…``); a value inherited from the caller's environment is never used, so nothing
    here writes into someone's real metadata DB by accident.
    """
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "RECSYS_DATA_DIR": str(data_dir),
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
        **extra,
    }
    if "MLFLOW_TRACKING_URI" not in extra:
        env.pop("MLFLOW_TRACKING_URI", None)  # the embedded store under the data dir unless given
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)  # the default: SQLite in AIRFLOW_HOME
    if metadata_db_uri is not None:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = metadata_db_uri
    else:
        # Services and CLI commands write the one SQLite file together: wait for its lock (recsys.airflow_sqlite).
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"] = SQLITE_CONNECT_ARGS
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC"] = SQLITE_CONNECT_ARGS
    return env


def scheduler_env(airflow_home: Path, data_dir: Path, port: int, schedule_runs: bool = False,
                  metadata_db_uri: str | None = None, **extra: str) -> dict:
    """:func:`airflow_env` for real services: LocalExecutor, the api-server on ``port``, one set of secrets.

    With ``schedule_runs`` off (``[scheduler] use_job_schedule``) the scheduler creates no runs of its own,
    neither cron runs nor Asset-triggered ones: only what is triggered or backfilled runs. Turn it on to
    see Asset-triggered DAGs run (recsys_daily then also gets its cron run for yesterday).
    """
    return airflow_env(
        airflow_home,
        data_dir,
        metadata_db_uri,
        **{
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(schedule_runs),
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


def cli(args: list[str], env: dict, timeout: int = 300) -> str:
    """Run an Airflow CLI command to completion; its stdout, or :class:`AirflowError` with its output."""
    result = subprocess.run(
        [str(BIN / "airflow"), *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AirflowError(
            f"airflow {' '.join(args)} failed (rc={result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result.stdout


def json_output(stdout: str):
    """The JSON document in a CLI's stdout (Airflow may print warnings on stdout before it)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(("[", "{")):
            return json.loads(line)
    raise AirflowError(f"no JSON in the CLI output:\n{stdout[-4000:]}")


def prepare(env: dict, pool_slots: int | None = None) -> None:
    """Migrate the metadata DB, create the compute pool and parse the DAGs into the DB (idempotent)."""
    from recsys.constants import COMPUTE_POOL, COMPUTE_POOL_SLOTS

    cli(["db", "migrate"], env, timeout=600)
    cli(["pools", "set", COMPUTE_POOL, str(pool_slots or COMPUTE_POOL_SLOTS), "recsys Spark, training and fusion"], env)
    cli(["dags", "reserialize"], env, timeout=600)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # start_new_session=True made pid the group id
    except ProcessLookupError:
        pass


class Services:
    """Airflow services, each a process-group leader logging to ``root/<name>.log``; ``stop()`` ends them all."""

    def __init__(self, root: Path, env: dict):
        self.root, self.env = Path(root), env
        self.root.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen] = {}
        self._stopped = False

    def start(self, name: str, args: list[str]) -> None:
        with open(self.root / f"{name}.log", "w") as log_file:
            self.processes[name] = subprocess.Popen(
                [str(BIN / "airflow"), *args], env=self.env, cwd=REPO_ROOT,
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def start_scheduler_stack(self, port: int, apps: str = "execution") -> None:
        """api-server (only the Execution API the tasks talk to, unless ``apps`` says e.g. "core,execution"
        for the REST API too), dag-processor and scheduler; returns once the Execution API answers."""
        self.start("api-server", ["api-server", "--apps", apps])
        self.start("dag-processor", ["dag-processor"])
        self.start("scheduler", ["scheduler", "--skip-serve-logs"])
        self.wait("the Execution API", lambda: http_ok(f"http://127.0.0.1:{port}/execution/health"), STARTUP_TIMEOUT_S)

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
                raise AirflowError(f"airflow {name} exited with rc={process.returncode}:\n{tail(self.root / f'{name}.log')}")

    def wait(self, what: str, ready, timeout: float, interval: float = 2.0):
        """Poll ``ready()`` until it returns something truthy (returned); :class:`AirflowError` with the logs on timeout."""
        deadline = time.time() + timeout
        while True:
            self.check_alive()
            value = ready()
            if value:
                return value
            if time.time() > deadline:
                raise AirflowError(
                    f"timed out after {timeout:.0f}s waiting for {what}; service logs:\n"
                    + "\n".join(f"--- {name}\n{tail(self.root / f'{name}.log', 30)}" for name in self.processes)
                )
            time.sleep(interval)

    def stop(self) -> None:
        """SIGTERM each service's process group, then SIGKILL whatever (incl. escaped descendants) is left.

        Idempotent: a second call does nothing (the group ids may belong to other processes by then)."""
        import psutil

        if self._stopped:
            return
        self._stopped = True

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


def dag_runs(env: dict, dag_id: str = DAG_ID) -> list[dict]:
    """Every run of ``dag_id`` as the CLI lists it (run_id, logical_date, state, start/end dates)."""
    return json_output(cli(["dags", "list-runs", dag_id, "-o", "json"], env)) or []


def run_day(run: dict) -> str:
    return str(run.get("logical_date") or "")[:10]


def create_backfill(env: dict, start: date, end: date, reprocess: str = "completed", max_active_runs: int = 1,
                    dag_id: str = DAG_ID, wait_for_previous_s: float = 300) -> None:
    """``airflow backfill create`` for ``start..end`` (inclusive); ``reprocess=completed`` recomputes every day.

    A backfill ignores the DAG's own ``max_active_runs`` (Airflow's default for backfills is 10), so it is
    passed explicitly: one day at a time is the fastest on 2 cores, since each run already trains four
    models side by side. Overlapping days are safe (see ``recsys.locks``), only slower.
    """
    args = ["backfill", "create", "--dag-id", dag_id, "--from-date", start.isoformat(), "--to-date", end.isoformat(),
            "--reprocess-behavior", reprocess, "--max-active-runs", str(max_active_runs)]

    def run_cli() -> None:
        # A creation that failed on the SQLite lock is tried again: Airflow 3.3 then deletes what it had
        # created (the backfill row, committed first, and its runs), so nothing is left to clash with. A
        # scheduler running meanwhile may have picked up those runs: seen once, it then exited on
        # ObjectDeletedError, so backfill() below creates the backfill before it starts the scheduler.
        for attempt in range(1, LOCKED_TRIES + 1):
            try:
                cli(args, env)
                return
            except AirflowError as exc:
                if "AlreadyRunningBackfill" in str(exc):
                    raise BackfillAlreadyRunning(str(exc)) from exc
                if SQLITE_LOCKED not in str(exc) or attempt == LOCKED_TRIES:
                    raise
                log.warning("the SQLite metadata DB was locked by another Airflow process; the backfill of %s was not "
                            "created, retrying in %.0f s (try %d of %d)", dag_id, LOCKED_PAUSE_S, attempt + 1, LOCKED_TRIES)
                time.sleep(LOCKED_PAUSE_S)

    _after_previous_backfill(run_cli, dag_id, wait_for_previous_s)


def _after_previous_backfill(create, dag_id: str, wait_s: float):
    """``create()``, retried while another backfill of ``dag_id`` is still marked running.

    Airflow allows one running backfill per DAG, and marks one complete a few scheduler loops after its
    last run ends (a cleared-and-rerun day reopens it): wait for that rather than fail.
    """
    deadline = time.time() + wait_s
    while True:
        try:
            return create()
        except BackfillAlreadyRunning:
            if time.time() > deadline:
                raise
            log.info("another backfill of %s is still marked running; retrying in 5 s", dag_id)
            time.sleep(5)


def wait_for_days(services: Services, env: dict, days: list[date], timeout: float, dag_id: str = DAG_ID,
                  interval: float = 10.0, budget_s: float | None = None) -> dict[str, str]:
    """Wait until the runs for every day in ``days`` are finished, logging each change; {day: state}.

    With ``budget_s``, stop waiting once that many seconds have passed and return the states as they are:
    days not finished keep their run's state (``running``, ``queued``) or ``not started``.
    """
    wanted = {d.isoformat() for d in days}
    seen: dict[str, str] = {}
    started = time.time()

    def finished():
        states = {}
        for run in dag_runs(env, dag_id):
            if run_day(run) in wanted:
                states[run_day(run)] = run.get("state")
        for day, state in sorted(states.items()):
            if seen.get(day) != state:
                log.info("%s ds=%s: %s", dag_id, day, state)
                seen[day] = state
        done = [d for d, s in states.items() if s in TERMINAL_STATES]
        if len(done) == len(wanted):
            return states
        if budget_s is not None and time.time() - started > budget_s:
            log.warning("time budget of %.0fs spent with %d of %d day(s) finished; not waiting for the rest",
                        budget_s, len(done), len(wanted))
            return {**dict.fromkeys(sorted(wanted), "not started"), **states}
        return None

    return services.wait(f"{len(wanted)} {dag_id} run(s) to finish", finished, timeout, interval=interval)


def backfill(airflow_home: Path, data_dir: Path, start: date, end: date, max_active_runs: int = 1,
             timeout_per_day_s: float = 1800, budget_s: float | None = None) -> dict[str, str]:
    """Start the services, backfill ``start..end``, wait for every day, stop the services; {day: state}.

    ``budget_s``: stop after that long instead (the days not finished keep a non-terminal state; stopping
    the services kills the day in progress).
    """
    from datetime import timedelta

    if end < start:
        raise ValueError(f"the backfill's --to-date {end} is before its --from-date {start}")
    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    port = free_port()
    env = scheduler_env(Path(airflow_home), Path(data_dir), port)
    services = Services(Path(airflow_home) / "services", env)
    log.info("preparing %s (metadata DB, pool, DAG parsing)", airflow_home)
    prepare(env)
    try:
        # Created before any service runs: no other process holds SQLite's write lock, and no scheduler can
        # pick up runs of a creation that the lock would undo (see create_backfill).
        log.info("backfilling %s for %s..%s (%d day(s)); starting the services", DAG_ID, start, end, len(days))
        started = time.time()
        create_backfill(env, start, end, max_active_runs=max_active_runs)
        services.start_scheduler_stack(port)
        log.info("services up (logs: %s)", services.root)
        states = wait_for_days(services, env, days, timeout=timeout_per_day_s * len(days), budget_s=budget_s)
        log.info("backfill finished in %.0fs: %s", time.time() - started, json.dumps(states))
        return states
    finally:
        services.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys.local_airflow", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("backfill", help="backfill recsys_daily for a date range on local Airflow services")
    run.add_argument("--from-date", required=True, type=date.fromisoformat)
    run.add_argument("--to-date", required=True, type=date.fromisoformat)
    run.add_argument("--max-active-runs", type=int, default=1, help="days run at once (default 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # `kill` or Ctrl-C must still stop the services this process started (the `finally` in backfill()).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    airflow_home = Path(os.environ.get("AIRFLOW_HOME") or REPO_ROOT / ".airflow").resolve()
    data_dir = Path(os.environ.get("RECSYS_DATA_DIR") or REPO_ROOT / "data").resolve()
    states = backfill(airflow_home, data_dir, args.from_date, args.to_date, args.max_active_runs)
    failed = sorted(day for day, state in states.items() if state != "success")
    if failed:
        log.error(
            "backfill: %d of %d day(s) failed: %s. Task logs: %s/logs/dag_id=%s/",
            len(failed), len(states), ", ".join(failed), airflow_home, DAG_ID,
        )
        return 1
    print(
        f"backfill: {len(states)} day(s) of {DAG_ID} succeeded ({args.from_date}..{args.to_date}); "
        "any day's report: .venv/bin/python -m recsys.report --ds YYYY-MM-DD"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
