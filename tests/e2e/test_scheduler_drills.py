"""Production drills under a real scheduler: a backfill, a SIGKILL, a quiet day, services down.

One set of real Airflow 3 services (``airflow api-server`` with auth on, ``dag-processor``,
``scheduler`` with the LocalExecutor on SQLite) runs for the whole module on one generated landing zone
with a few bad rows planted; each test is one step of a night a data engineer would recognise, in order,
each building on the state the previous one left (so they share one session of three DAG runs):

1. ``airflow backfill create`` for the last two days. The first of them is a quiet day: its file holds a
   header and no events; its run succeeds and publishes recommendations recomputed from history for every
   user seen before. The other day's bad rows are quarantined and raw = clean + quarantined. Every day is
   computed from that day's history only (no user first seen later is in an earlier day's list), the four
   training tasks of each run overlap in time, and the published Asset triggers ``recsys_export_latest``.
2. The last day is rerun through the REST API (``POST /api/v2/backfills`` with a token from Airflow's auth,
   reprocessing completed runs: Airflow clears the run and the scheduler runs it again); mid-run,
   ``train_sequence`` is SIGKILLed. Its retry succeeds, the warehouse holds exactly one copy of the day,
   and the rows equal the first run's.
3. The scheduler's own cron run, for yesterday, whose data never landed: validate_raw retries, then fails
   naming the missing folder; the backfilled days are untouched.
4. The PostgreSQL warehouse unreachable (``warehouse_default`` pointed at a closed port): publish retries,
   then fails naming host:port/database; the DuckDB copy of the day is untouched.
5. A champion far above the day's hybrid (registered by the test): publish's quality gate refuses the day at
   once, without retries, and the day's published copy stays.
6. The MLflow tracking server unreachable (``mlflow_default`` at a closed port): validate_raw retries, then
   fails naming the endpoint; nothing downstream runs, nothing is published.

Retries are shortened with ``RECSYS_RETRY_DELAY_SECONDS`` (the DAG's own knob); MLflow's HTTP client is
told not to retry on its own (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``) so Airflow's retries are what is seen.
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from recsys import local_airflow
from recsys.constants import BASELINE_NAMES, HYBRID_NAME, MODEL_NAMES, RAW_COLUMNS
from tests.e2e.airflow_stack import (
    DAG_ID, TERMINAL_STATES, Services, airflow_cli, assert_tasks_overlapped, free_port, json_output, query_sqlite, scheduler_env, tail,
)

pytestmark = pytest.mark.e2e

TRAIN_TASKS = tuple(f"train_{name}" for name in MODEL_NAMES)
RUN_TIMEOUT_S = 12 * 60
TOP_K = 10
RETRIES = 2
#: The landing zone ends on a fixed past day; "yesterday" (the cron run's day) never has data.
END_DATE = date(2026, 10, 31)
#: Long enough for the drill days' history, short enough that the cron run's window holds no landed day.
LOOKBACK_DAYS = 20


def _closed_port() -> int:
    """A port nothing listens on (bound and released: a connection to it is refused at once)."""
    return free_port()


class Drill:
    """The module's services, paths and the few metadata-DB reads the steps need."""

    def __init__(self, root: Path, data_dir: Path, airflow_home: Path, env: dict, services: Services, days: list[date], port: int):
        self.root, self.data_dir, self.airflow_home, self.env, self.services = root, data_dir, airflow_home, env, services
        self.days = days
        self.quiet_day = days[0]  # its file holds a header and no events
        self.base_url = f"http://127.0.0.1:{port}"
        self.db = airflow_home / "airflow.db"

    # ---- metadata DB -------------------------------------------------------------------------
    def run_of(self, day: date) -> tuple[str, str] | None:
        rows = query_sqlite(
            self.db,
            "select run_id, state from dag_run where dag_id = ? and date(logical_date) = ? order by id desc limit 1",
            (DAG_ID, day.isoformat()),
        )
        return rows[0] if rows else None

    def task(self, run_id: str, task_id: str) -> dict:
        rows = query_sqlite(
            self.db,
            "select state, try_number, pid, start_date, end_date from task_instance where dag_id = ? and run_id = ? and task_id = ?",
            (DAG_ID, run_id, task_id),
        )
        if not rows:
            return {}
        state, try_number, pid, start, end = rows[0]
        return {"state": state, "try_number": try_number, "pid": pid, "start_date": start, "end_date": end}

    def tasks(self, run_id: str) -> dict[str, dict]:
        tasks = json_output(airflow_cli(["tasks", "states-for-dag-run", DAG_ID, run_id, "-o", "json"], self.env))
        return {t["task_id"]: t for t in tasks}

    def wait_run(self, day: date, what: str, timeout: float = RUN_TIMEOUT_S, after_state: str | None = None) -> str:
        """Wait until the run of ``day`` is finished; its state. A run cleared just now is still 'success' for a
        moment: pass the state it must leave first as ``after_state``."""
        left = {"done": after_state is None}

        def finished():
            run = self.run_of(day)
            if not run:
                return None
            if not left["done"]:
                left["done"] = run[1] != after_state
                return None
            return run[1] if run[1] in TERMINAL_STATES else None

        return self.services.wait(what, finished, timeout, interval=3)

    def clear(self, day: date, task_regex: str | None = None) -> None:
        args = ["tasks", "clear", DAG_ID, "-s", day.isoformat(), "-e", day.isoformat(), "-y"]
        if task_regex:
            args += ["-t", task_regex]
        airflow_cli(args, self.env)

    def attempt_logs(self, run_id: str, task_id: str) -> str:
        logs = sorted((self.airflow_home / "logs").glob(f"dag_id={DAG_ID}/run_id={run_id}/task_id={task_id}/attempt=*.log"))
        return "\n".join(path.read_text(errors="replace") for path in logs)

    # ---- warehouse (through the project's reader, which waits for a writing process instead of failing) ----
    def _warehouse(self):
        from recsys.warehouse.writer import open_warehouse

        return open_warehouse(f"duckdb://{self.data_dir / 'warehouse.duckdb'}")

    def recommendations(self, day: date):
        with self._warehouse() as warehouse:
            return warehouse.read_partition(day)

    def run_record(self, day: date) -> dict:
        with self._warehouse() as warehouse:
            runs = warehouse.read_runs()
        frame = runs[runs["ds"].astype(str).str[:10] == day.isoformat()]
        assert len(frame) == 1, f"expected one pipeline_runs row for {day}, found {len(frame)}"
        return frame.iloc[0].to_dict()

    def clean_events_up_to(self, day: date, columns: list[str]):
        """The validated events of every day up to ``day`` (a quiet day's partition is empty)."""
        import pandas as pd

        frames = [
            pd.read_parquet(folder, columns=columns)
            for folder in sorted((self.data_dir / "clean" / "events").glob("ds=*"))
            if date.fromisoformat(folder.name[3:]) <= day
        ]
        return pd.concat(frames, ignore_index=True)

    def users_seen_up_to(self, day: date) -> set[int]:
        return set(self.clean_events_up_to(day, ["user_id"])["user_id"].astype("int64"))


@pytest.fixture(scope="module")
def drill(tmp_path_factory):
    from recsys.data.synthetic import GeneratorConfig, generate

    root = tmp_path_factory.mktemp("drills")
    data_dir, airflow_home = root / "data", root / "airflow"
    summary = generate(data_dir, GeneratorConfig(users=500, products=120, days=9, seed=11, end_date=END_DATE, bad_rows_fraction=0.003))
    days = [summary.end_date - timedelta(days=n) for n in (1, 0)]
    # The first backfilled day is a quiet one: its file holds a header and no events.
    quiet = data_dir / "raw" / "events" / f"ds={days[0].isoformat()}"
    for path in quiet.iterdir():
        path.unlink()
    (quiet / "events.csv").write_text(",".join(RAW_COLUMNS) + "\n")
    port = free_port()
    env = scheduler_env(
        airflow_home, data_dir, port,
        schedule_runs=True,  # Asset-triggered runs need it; recsys_daily then also gets its cron run for yesterday
        RECSYS_LOOKBACK_DAYS=str(LOOKBACK_DAYS),
        RECSYS_TOP_K=str(TOP_K),
        RECSYS_ALS_TRIALS="1",  # these drills are about orchestration; the MovieLens e2e test runs the full ALS search
        RECSYS_RETRIES=str(RETRIES),
        RECSYS_RETRY_DELAY_SECONDS="3",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="10",
    )
    env.update(local_airflow.simple_auth_settings(airflow_home))
    local_airflow.prepare(env)
    # Step 1's backfill is created before any service runs, as `make backfill` does: no other process then
    # holds SQLite's write lock, which a creation can lose half-way (recsys.local_airflow.create_backfill).
    local_airflow.create_backfill(env, days[0], days[-1])
    services = Services(root, env)
    try:
        # The whole api-server (REST API and UI too, behind auth): step 4 backfills through the REST API.
        services.start_scheduler_stack(port, airflow_home / "airflow.db", apps="all")
        yield Drill(root, data_dir, airflow_home, env, services, days, port)
    finally:
        services.stop()
    assert services.all_gone(), "an Airflow service or one of its children outlived the module"


@pytest.fixture(scope="module")
def backfilled(drill):
    """Step 1: `airflow backfill create` over the last two days (created by ``drill`` before its services
    start), run to the end by the scheduler."""
    states = {}
    for day in drill.days:
        states[day] = drill.wait_run(day, f"the backfill run for {day}")
    if set(states.values()) != {"success"}:
        details = {str(d): drill.tasks(drill.run_of(d)[0]) for d in drill.days if drill.run_of(d)}
        pytest.fail(
            f"backfill ended {states}; task states: "
            + json.dumps({d: {t: v['state'] for t, v in tasks.items()} for d, tasks in details.items()})
            + f"\n--- scheduler\n{tail(drill.root / 'scheduler.log', 40)}"
        )
    return {day: drill.recommendations(day) for day in drill.days}


def test_backfill_computes_each_day_from_its_own_history(drill, backfilled):
    first, last = drill.days
    runs = {day: drill.run_of(day) for day in drill.days}
    assert all(run_id.startswith("backfill__") for run_id, _ in runs.values()), runs
    seen_first, seen_last = drill.users_seen_up_to(first), drill.users_seen_up_to(last)
    newcomers = seen_last - seen_first
    assert newcomers, "the generator produced no user first seen on the last day: the leakage check would be empty"
    for day, seen in ((first, seen_first), (last, seen_last)):
        recs = backfilled[day]
        assert set(recs["user_id"]) == seen, f"{day}: recommendations for users outside that day's history"
        assert (recs.groupby("user_id").size() == TOP_K).all()
        assert not recs.duplicated(["user_id", "rank"]).any() and not recs.duplicated(["user_id", "product_id"]).any()
        assert recs["reason"].str.len().gt(0).all() and recs["sources"].str.len().gt(0).all()
        # What a user bought up to that day is never recommended back to them.
        bought = drill.clean_events_up_to(day, ["user_id", "product_id", "event_type"]).query("event_type == 'purchase'")
        assert len(bought) and recs.merge(bought[["user_id", "product_id"]].drop_duplicates(), on=["user_id", "product_id"]).empty
        assert drill.run_record(day)["published_rows"] == len(recs)
    # No future leakage: nobody first seen on the last day is in the earlier day's list.
    assert not newcomers & set(backfilled[first]["user_id"])


def test_a_day_without_events_publishes_recommendations_from_history(drill, backfilled):
    quiet = drill.quiet_day
    record = drill.run_record(quiet)
    assert (record["raw_rows"], record["clean_rows"], record["quarantined_rows"]) == (0, 0, 0)
    recs = backfilled[quiet]
    history = drill.users_seen_up_to(quiet - timedelta(days=1))
    assert history and set(recs["user_id"]) == history
    assert (recs.groupby("user_id").size() == TOP_K).all()


def test_bad_rows_are_quarantined_and_the_day_is_scored_by_every_model(drill, backfilled):
    import pandas as pd

    last = drill.days[-1]
    record = drill.run_record(last)
    assert record["quarantined_rows"] > 0, "the generator planted no bad row on the last day: nothing to check"
    assert record["raw_rows"] == record["clean_rows"] + record["quarantined_rows"]
    # The quarantine holds the raw text of each bad row with the rules it broke.
    quarantine = pd.concat(
        [pd.read_csv(path, dtype=str) for path in (drill.data_dir / "quarantine" / f"ds={last}").glob("*.csv")], ignore_index=True
    )
    assert len(quarantine) == record["quarantined_rows"] and quarantine["failed_rules"].str.len().gt(0).all()
    metrics = json.loads(record["metrics"])
    assert set(metrics) == {*MODEL_NAMES, *BASELINE_NAMES, HYBRID_NAME}
    assert all(0.0 <= row["ndcg@10"] <= 1.0 for row in metrics.values()), metrics


def test_training_tasks_overlap_within_each_backfilled_run(drill, backfilled):
    for day in drill.days:
        run_id, _ = drill.run_of(day)
        tasks = drill.tasks(run_id)
        intervals = {
            t: (datetime.fromisoformat(tasks[t]["start_date"]), datetime.fromisoformat(tasks[t]["end_date"])) for t in TRAIN_TASKS
        }
        assert_tasks_overlapped(
            intervals, datetime.fromisoformat(tasks["build_features"]["end_date"]), datetime.fromisoformat(tasks["fuse"]["start_date"]),
            f"{day} training task intervals",
        )


def test_published_asset_triggers_the_export_dag(drill, backfilled):
    import pandas as pd

    _, last = drill.days
    latest = drill.data_dir / "exports" / "latest.json"
    drill.services.wait(
        "recsys_export_latest to export the last day",
        lambda: latest.exists() and json.loads(latest.read_text())["ds"] == last.isoformat(),
        RUN_TIMEOUT_S / 4,
        interval=3,
    )
    for day in drill.days:
        exported = pd.read_parquet(drill.data_dir / "exports" / f"ds={day.isoformat()}" / "recommendations.parquet")
        assert len(exported) == len(backfilled[day]) and set(exported["user_id"]) == set(backfilled[day]["user_id"])
    runs = query_sqlite(drill.db, "select run_type, state from dag_run where dag_id = 'recsys_export_latest'")
    assert runs and set(runs) == {("asset_triggered", "success")}, runs


@pytest.fixture(scope="module")
def killed_and_rerun(drill, backfilled):
    """Step 2: rerun the last day through the REST API, SIGKILLing train_sequence while it trains."""
    _, last = drill.days
    run_id, _ = drill.run_of(last)
    published_before = drill.run_record(last)["published_at"]
    # A backfill that reprocesses completed runs, as a data engineer's script would send it: Airflow clears
    # the day's run (the same run id) and the scheduler runs it again.
    token = local_airflow.api_token(drill.base_url, local_airflow.ADMIN, local_airflow.generated_password(drill.airflow_home))
    backfill = local_airflow.create_backfill_via_api(drill.base_url, token, last, last)
    assert (backfill["dag_id"], backfill["max_active_runs"], backfill["reprocess_behavior"]) == (DAG_ID, 1, "completed")
    # Auth stays on: the same request without the token is refused.
    status, _ = local_airflow.api_request(
        f"{drill.base_url}/api/v2/backfills", {"dag_id": DAG_ID, "from_date": f"{last}T00:00:00Z", "to_date": f"{last}T00:00:00Z"}
    )
    assert status == 401, status

    def training():
        info = drill.task(run_id, "train_sequence")
        return info if info.get("state") == "running" and info.get("pid") else None

    victim = drill.services.wait("train_sequence to be running again", training, RUN_TIMEOUT_S, interval=1)
    time.sleep(3)  # into the training, past start-up
    os.kill(victim["pid"], signal.SIGKILL)
    state = drill.wait_run(last, f"the rerun of {last} after the SIGKILL")
    return {
        "run_id": run_id, "killed_try": victim["try_number"], "state": state, "final": drill.task(run_id, "train_sequence"),
        "published_before": published_before,
    }


def test_sigkilled_training_task_is_retried_and_the_day_lands_once(drill, backfilled, killed_and_rerun):
    _, last = drill.days
    assert killed_and_rerun["state"] == "success", drill.tasks(killed_and_rerun["run_id"])
    final = killed_and_rerun["final"]
    assert final["state"] == "success"
    assert final["try_number"] == killed_and_rerun["killed_try"] + 1, (killed_and_rerun, final)
    recs = drill.recommendations(last)
    assert not recs.duplicated(["user_id", "rank"]).any()
    assert set(recs["run_id"]) == {killed_and_rerun["run_id"]}
    record = drill.run_record(last)  # one row, rewritten by the rerun
    assert record["published_rows"] == len(recs) and record["published_at"] > killed_and_rerun["published_before"]


def test_rerun_of_a_successful_day_gives_the_same_rows(drill, backfilled, killed_and_rerun):
    _, last = drill.days
    before = backfilled[last][["user_id", "rank", "product_id"]].reset_index(drop=True)
    after = drill.recommendations(last)[["user_id", "rank", "product_id"]].reset_index(drop=True)
    assert len(after) == len(before)
    same = (before == after).all(axis=1).mean()
    assert same == 1.0, f"only {same:.1%} of (user, rank, product) rows are the same after clear + rerun"


def test_the_cron_run_for_a_day_that_never_landed_fails_naming_the_folder(drill, backfilled):
    """Late data: the scheduler's run for yesterday finds no folder, retries, then fails with what to do."""
    def scheduled():
        rows = query_sqlite(
            drill.db, "select run_id, state, date(logical_date) from dag_run where dag_id = ? and run_type = 'scheduled'", (DAG_ID,)
        )
        return rows if rows and all(state in TERMINAL_STATES for _, state, _ in rows) else None

    runs = drill.services.wait("the scheduled run for yesterday to finish", scheduled, RUN_TIMEOUT_S / 4, interval=3)
    assert len(runs) >= 1
    for run_id, state, day in runs:
        assert state == "failed" and date.fromisoformat(day) > END_DATE
        validate = drill.task(run_id, "validate_raw")
        assert validate["state"] == "failed" and validate["try_number"] == 1 + RETRIES
        assert f"no raw events for ds={day}" in drill.attempt_logs(run_id, "validate_raw")
        assert drill.task(run_id, "publish")["state"] == "upstream_failed"


def test_unreachable_postgres_warehouse_fails_publish_naming_it_and_publishes_nothing(drill, backfilled):
    day = drill.quiet_day
    run_id, _ = drill.run_of(day)
    before, record_before = drill.recommendations(day), drill.run_record(day)
    tries_before = drill.task(run_id, "publish")["try_number"]
    port = _closed_port()
    airflow_cli(["connections", "add", "warehouse_default", "--conn-uri", f"postgresql://recsys:drill-secret@127.0.0.1:{port}/recsys"], drill.env)
    try:
        drill.clear(day, "publish")  # Airflow 3.3 matches -t as a substring of the task id, not as a regex
        state = drill.wait_run(day, "publish to give up on the unreachable warehouse", after_state="success")
    finally:
        airflow_cli(["connections", "delete", "warehouse_default"], drill.env)
    publish = drill.task(run_id, "publish")
    assert state == "failed" and publish["state"] == "failed"
    assert publish["try_number"] == tries_before + 1 + RETRIES  # the cleared try, then every retry
    logs = drill.attempt_logs(run_id, "publish")
    assert logs.count(f"cannot reach the PostgreSQL warehouse at 127.0.0.1:{port}/recsys") >= RETRIES + 1, tail(drill.root / "scheduler.log")
    # (That the message never carries the password is tested in test_warehouse.py: Airflow masks connection
    # passwords in task logs anyway, so a check here could not fail.)
    after = drill.recommendations(day)
    assert after.equals(before) and drill.run_record(day)["published_at"] == record_before["published_at"]


def test_a_hybrid_below_the_quality_gate_fails_publish_at_once_and_keeps_the_day(drill, backfilled, killed_and_rerun):
    """A champion far better than these days' models can reach (registered here, for a later day): the rerun
    of the last day's publish is refused by the gate, with no retry (a verdict: a retry compares the same
    figures), and the day's published copy stays as it was."""
    from mlflow.tracking import MlflowClient

    from recsys import tracking
    from recsys.config import Settings
    from tests.champions import make_champion

    _, last = drill.days
    run_id, _ = drill.run_of(last)
    before, record_before = drill.recommendations(last), drill.run_record(last)
    tries_before = drill.task(run_id, "publish")["try_number"]
    settings = Settings(data_dir=drill.data_dir)  # the embedded MLflow store the scheduler's tasks use
    champion = tracking.champion_metric(settings)
    assert champion is not None  # the backfill's publish promoted its hybrid
    make_champion(settings, ndcg=0.99, se=0.0, ds="2099-12-31")
    try:
        drill.clear(last, "publish")
        state = drill.wait_run(last, "publish to meet the quality gate", after_state="success")
    finally:
        MlflowClient().set_registered_model_alias(tracking.REGISTERED_MODEL, tracking.CHAMPION_ALIAS, champion.version)
    publish = drill.task(run_id, "publish")
    assert state == "failed" and publish["state"] == "failed"
    assert publish["try_number"] == tries_before + 1, (tries_before, publish)  # not + 1 + RETRIES
    logs = drill.attempt_logs(run_id, "publish")
    assert "quality gate: hybrid NDCG@10" in logs and "the hybrid is below the floor" in logs, tail(drill.root / "scheduler.log")
    assert "a retry would read the same inputs" in logs  # the retry policy's reason, logged by the task runner
    assert drill.recommendations(last).equals(before) and drill.run_record(last)["published_at"] == record_before["published_at"]


def test_unreachable_mlflow_fails_the_first_task_naming_it(drill, backfilled):
    day = drill.quiet_day
    run_id, _ = drill.run_of(day)
    before = drill.recommendations(day)
    tries_before = drill.task(run_id, "validate_raw")["try_number"]
    port = _closed_port()
    airflow_cli(["connections", "add", "mlflow_default", "--conn-type", "http", "--conn-host", "127.0.0.1", "--conn-port", str(port)], drill.env)
    try:
        drill.clear(day)
        state = drill.wait_run(day, "validate_raw to give up on the unreachable MLflow", after_state="failed")
    finally:
        airflow_cli(["connections", "delete", "mlflow_default"], drill.env)
    assert state == "failed"
    validate = drill.task(run_id, "validate_raw")
    assert validate["state"] == "failed" and validate["try_number"] == tries_before + 1 + RETRIES
    assert f"cannot reach the MLflow tracking store at http://127.0.0.1:{port}" in drill.attempt_logs(run_id, "validate_raw")
    downstream = drill.tasks(run_id)
    assert downstream["publish"]["state"] == "upstream_failed"
    assert drill.recommendations(day).equals(before)
