"""Airflow objects the DAGs share: the Assets recsys_daily produces, and the pool bounding heavy work.

``recsys_daily`` emits an asset event on :data:`FEATURE_STORE` when ``build_features`` has written the
day's features, and on :data:`RECOMMENDATIONS` when ``publish`` has replaced the day's partition of
``recsys.recommendations``. Each event's ``extra`` carries the day (``ds``) and counts, so a consumer
knows which partition is fresh without querying Airflow::

    from recsys.orchestration import RECOMMENDATIONS

    @dag(schedule=[RECOMMENDATIONS])
    def my_consumer(): ...

The URIs are logical names (the data dir and the warehouse differ per deployment); the scheme is this
project's own, so Airflow treats them as opaque strings. This is the one module of ``recsys`` that
imports Airflow, and only its lightweight task SDK.
"""

from __future__ import annotations

import os

from airflow.sdk import Asset

# The pool is named in recsys.constants so that code without Airflow (recsys.local_airflow) can use it.
from recsys.constants import COMPUTE_POOL, COMPUTE_POOL_SLOTS  # noqa: F401 - re-exported for the DAGs

#: Features of the day's lookback window (interactions, sequences, items; val / test / full stages).
FEATURE_STORE = Asset(name="recsys_feature_store", uri="recsys://feature-store/daily", group="recsys")
#: The warehouse table ``recsys.recommendations`` (one partition per ds).
RECOMMENDATIONS = Asset(name="recsys_recommendations", uri="recsys://warehouse/recsys/recommendations", group="recsys")

SPARK_CONN_ID = "spark_default"
WAREHOUSE_CONN_ID = "warehouse_default"
#: Optional: an http(s) connection to the MLflow tracking server; else MLFLOW_TRACKING_URI or the embedded store.
MLFLOW_CONN_ID = "mlflow_default"

#: The training task on a day's critical path: fuse waits for the LSTM, which at 1M events trains for
#: about 500 s where the other three take 80-135 s each (bench/e2e.py).
CRITICAL_TRAINING = "sequence"
#: ``os.nice`` increment of the other training tasks (and their Spark JVMs, which inherit it).
SIDE_TRAINING_NICENESS = 10


def connection(conn_id: str):
    """The Airflow connection (from the metadata DB or an ``AIRFLOW_CONN_*`` variable), or None when undefined.

    Call it inside a task only: tasks read connections through the Execution API.
    """
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:  # noqa: BLE001 - "not defined" differs between Airflow versions
        if "isn't defined" in str(exc) or "not found" in str(exc).lower() or type(exc).__name__ == "AirflowNotFoundException":
            return None
        raise


def yield_cpu_to_critical_path(model_name: str) -> int:
    """Lower this process's CPU priority unless it trains :data:`CRITICAL_TRAINING`; return the niceness.

    The four training tasks run side by side on the same cores. At equal priority the LSTM, the longest,
    got about half a core while the others ran (its first epochs took 10-20 s instead of 3.4 s) and the
    others finished early, leaving a core idle for the rest of its fit. Niced, the others use what the
    LSTM leaves and still end before it: at 1M events its early-stopped fit took 253 s instead of 301 s
    (bench/e2e.py, one day, one run each). Nothing else changes: same work, same results. Under
    ``airflow dags test``, which runs the tasks one after another, it only lowers their priority against
    other programs.
    """
    return os.nice(0 if model_name == CRITICAL_TRAINING else SIDE_TRAINING_NICENESS)


def warehouse_uri_for(settings) -> str:
    """The warehouse URI: the ``warehouse_default`` connection if defined, else the embedded DuckDB file."""
    from recsys.warehouse.uri import warehouse_uri

    conn = connection(WAREHOUSE_CONN_ID)
    return warehouse_uri(
        settings.warehouse_path,
        *((conn.conn_type, conn.host, conn.port, conn.login, conn.password, conn.schema) if conn else ()),
    )


def default_args(owner: str = "recsys") -> dict:
    """Retries with exponential backoff for every recsys task: ``RECSYS_RETRIES`` (default 2) retries,
    the first after ``RECSYS_RETRY_DELAY_SECONDS`` (default 30), doubling up to 10 minutes; except for the
    verdicts of :data:`recsys.errors.NOT_RETRYABLE`, which fail the task at once."""
    from datetime import timedelta

    from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule

    from recsys.errors import NOT_RETRYABLE

    return {
        "owner": owner,
        "retries": int(os.environ.get("RECSYS_RETRIES", "2")),
        "retry_delay": timedelta(seconds=float(os.environ.get("RECSYS_RETRY_DELAY_SECONDS", "30"))),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
        "retry_policy": ExceptionRetryPolicy(rules=[
            RetryRule(
                exception=list(NOT_RETRYABLE), action=RetryAction.FAIL,
                reason="a verdict on the day's data or models: a retry would read the same inputs and give the same answer",
            ),
        ]),
    }
