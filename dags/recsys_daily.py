"""
### recsys_daily: hybrid e-commerce recommendations, every day

Takes one day of raw behaviour events (`$RECSYS_DATA_DIR/raw/events/ds=YYYY-MM-DD/`) to the
warehouse table `recsys.recommendations`:

1. **validate_raw**: Great Expectations suite over the day's events (Spark); bad rows go to
   `quarantine/ds=…/` with the rule they broke; the run stops if more than 5% are bad.
2. **build_features**: Spark: dedupe, sessions, weighted interactions, sequences, item text and the
   temporal train / validation / held-out split over the lookback window.
3. **train_collaborative**, **train_content**, **train_sequence**, **train_cooccurrence**: ALS, TF-IDF,
   LSTM and item-to-item co-occurrence (Spark), in parallel, each an MLflow child run of this DAG run's
   parent run. The LSTM takes longest, so the other three run niced (`os.nice(10)`) and use the CPU it
   leaves.
4. **fuse**: a ranker learned on the validation slice blends the four plus the two baselines (global
   popularity, recently popular in the user's categories), with a popularity-penalty re-rank chosen on
   validation users; products missing from today's catalog are dropped, and users whose first events
   are today get session-context recommendations. Every model, both baselines and the hybrid are
   scored on the held-out slice.
5. **publish**: replaces the day's partition in the warehouse atomically (DuckDB by default, the
   `warehouse_default` connection for PostgreSQL) and records the run in `recsys.pipeline_runs`.

Params: `top_k` (recommendations per user), `lookback_days` (history used, ending at `ds`); left empty,
they are the deployment's `RECSYS_TOP_K` (20) and `RECSYS_LOOKBACK_DAYS` (90).

**Backfill**: `airflow backfill create --dag-id recsys_daily --from-date … --to-date …` (or `make backfill
FROM=… TO=…`): each day is recomputed from the events up to that day only. Scheduled runs go one at a
time (`max_active_runs=1`); a backfill has its own limit (10 unless `--max-active-runs` is given; `make
backfill` passes 1). Overlapping days are safe (locks on shared history), and the heavy tasks share the
`recsys_compute` pool (4 slots; create it with `airflow pools set recsys_compute 4 "recsys Spark and
training"`), so a long backfill cannot swamp the machine.

**Assets**: `build_features` updates `recsys_feature_store`, `publish` updates `recsys_recommendations`
(event extra: `ds`, rows); downstream DAGs can `schedule=[RECOMMENDATIONS]` (`recsys.orchestration`).

**Failures**: every task retries (`RECSYS_RETRIES`, default 2) with exponential backoff from
`RECSYS_RETRY_DELAY_SECONDS` (default 30). An unreachable MLflow server or PostgreSQL warehouse fails the
task naming the endpoint, after the retries; publish replaces the day in one transaction, so a killed or
failed publish leaves the previous copy of the day (or none), never a partial one. Three failures are
verdicts a retry cannot change, so they fail the task at once: more than `RECSYS_QUARANTINE_MAX_FRACTION`
of the day's rows bad (validate_raw), a lookback window with too little history for the three stages
(build_features), and a hybrid below the quality gate (publish). A day whose files hold
no events is valid: the models are recomputed from the lookback window's history and published for it.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from recsys.constants import MODEL_NAMES
from recsys.orchestration import (
    COMPUTE_POOL, FEATURE_STORE, MLFLOW_CONN_ID, RECOMMENDATIONS, SPARK_CONN_ID, connection, default_args, warehouse_uri_for,
    yield_cpu_to_critical_path,
)


def _settings(context):
    """Settings from the environment, with this run's params and the Spark connection applied."""
    from recsys.config import load_settings
    from recsys.features.spark import spark_master_from_connection
    from recsys.tracking import tracking_uri_from_connection

    params = context["params"]
    spark = connection(SPARK_CONN_ID)
    master = spark_master_from_connection(spark.host, spark.port) if spark is not None else None
    mlflow = connection(MLFLOW_CONN_ID)
    tracking_uri = tracking_uri_from_connection(mlflow.conn_type, mlflow.host, mlflow.port, mlflow.schema) if mlflow else None
    return load_settings().with_overrides(
        top_k=params.get("top_k"), lookback_days=params.get("lookback_days"), spark_master=master,
        mlflow_tracking_uri=tracking_uri,
    )


@dag(
    dag_id="recsys_daily",
    # Data-interval semantics: the run that starts at midnight processes the day that just ended,
    # so ds (the logical date) is that complete day, as in `airflow backfill create`.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={
        # Empty (None) means the deployment's setting: RECSYS_TOP_K / RECSYS_LOOKBACK_DAYS (defaults 20 / 90).
        "top_k": Param(
            None, type=["null", "integer"], minimum=1, maximum=500,
            description="recommendations per user; empty: RECSYS_TOP_K (default 20)",
        ),
        "lookback_days": Param(
            None, type=["null", "integer"], minimum=3, maximum=730,
            description="days of history up to ds; empty: RECSYS_LOOKBACK_DAYS (default 90)",
        ),
    },
    tags=["recsys", "ml", "spark", "mlflow"],
    doc_md=__doc__,
)
def recsys_daily():
    @task(pool=COMPUTE_POOL)
    def validate_raw(**context) -> dict:
        from recsys import pipeline

        return pipeline.validate_raw(_settings(context), context["ds"], context["dag"].dag_id, context["run_id"])

    @task(pool=COMPUTE_POOL, outlets=[FEATURE_STORE])
    def build_features(validation: dict, **context) -> dict:
        from recsys import pipeline

        parent_run_id = validation["mlflow_parent_run_id"]
        summary = pipeline.build_features(_settings(context), context["ds"], parent_run_id)
        context["outlet_events"][FEATURE_STORE].extra = {"ds": context["ds"], "events": summary["events"], "users": summary["users"]}
        return {**summary, "mlflow_parent_run_id": parent_run_id}

    @task(pool=COMPUTE_POOL)
    def train(model_name: str, features: dict, **context) -> dict:
        from recsys import pipeline

        parent_run_id = features["mlflow_parent_run_id"]
        yield_cpu_to_critical_path(model_name)  # the LSTM is the longest: the others run at a lower CPU priority
        result = pipeline.train_model(_settings(context), context["ds"], model_name, parent_run_id)
        return {**result, "mlflow_parent_run_id": parent_run_id}

    @task(pool=COMPUTE_POOL)
    def fuse(trained: list[dict], **context) -> dict:
        from recsys import pipeline

        trained = list(trained)
        return pipeline.fuse(_settings(context), context["ds"], trained[0]["mlflow_parent_run_id"], trained)

    @task(outlets=[RECOMMENDATIONS])
    def publish(fused: dict, validation: dict, features: dict, **context) -> dict:
        from recsys import pipeline

        settings = _settings(context)
        uri = warehouse_uri_for(settings)
        summary = pipeline.publish(
            settings, context["ds"], uri, fused, validation, features, context["run_id"], validation["mlflow_parent_run_id"]
        )
        context["outlet_events"][RECOMMENDATIONS].extra = {
            "ds": context["ds"], "rows": summary["published_rows"], "users": summary["users"], "warehouse": summary["warehouse"],
        }
        return summary

    validation = validate_raw()
    features = build_features(validation)
    # Same single upstream and downstream for every model: the scheduler runs them in parallel.
    trained = [train.override(task_id=f"train_{name}")(name, features) for name in MODEL_NAMES]
    fused = fuse(trained)
    publish(fused, validation, features)


recsys_daily()
