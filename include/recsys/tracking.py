"""MLflow conventions: one experiment, one parent run per DAG run, one child run per model.

The embedded store is SQLite, which several training tasks write at once: every tracking call goes
through :func:`retry_locked`, which waits and retries on "database is locked" instead of failing.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext, redirect_stderr
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, NamedTuple, TypeVar

if TYPE_CHECKING:
    from recsys.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

PARENT_TAG = "recsys.role"
_LOCK_MARKERS = ("database is locked", "database table is locked", "unable to open database file")


def _is_lock_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(marker in text for marker in _LOCK_MARKERS)


def retry_locked(fn: Callable[..., T], *args, attempts: int = 12, **kwargs) -> T:
    """Call ``fn``, retrying with jittered backoff while SQLite reports a lock."""
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - only lock errors are retried, the rest re-raised
            if attempt == attempts or not _is_lock_error(exc):
                raise
            delay = min(10.0, 0.25 * 2 ** attempt) * (0.5 + random.random())
            log.warning("MLflow store busy (%s); retry %d/%d in %.1fs", exc, attempt, attempts, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def tracking_uri_from_connection(conn_type: str | None, host: str | None, port: int | None, path: str | None = None) -> str:
    """The tracking URI of an Airflow ``mlflow_default`` connection: ``http(s)://host[:port][/path]``.

    ``host`` may already carry the scheme (``http://mlflow``), as people often type it in the UI.
    """
    if not host:
        raise ValueError("the mlflow_default connection has no host; set it to the tracking server, e.g. http://mlflow:5000")
    scheme = "https" if (conn_type or "").lower() == "https" else "http"
    if "://" in host:
        scheme, host = host.split("://", 1)
    host = host.rstrip("/")
    address = f"{host}:{port}" if port and ":" not in host else host  # a host may already carry its port
    suffix = f"/{path.strip('/')}" if path and path.strip("/") else ""
    return f"{scheme}://{address}{suffix}"


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///path[?query]`` tracking URI, None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


def _store_open_lock(uri: str) -> AbstractContextManager:
    """A cross-process lock around opening an embedded SQLite store (nothing for a server).

    MLflow creates a new SQLite store by running its schema migrations when the store is first opened.
    Several tasks opening one new file at once (a backfill starts several days' first tasks together)
    run the migrations concurrently and leave the file half-migrated, failing every later call; under
    this lock the first opener migrates and the others find the tables in place.
    """
    from recsys.locks import file_lock

    path = _sqlite_path(uri)
    if path is None:
        return nullcontext()
    path.parent.mkdir(parents=True, exist_ok=True)
    return file_lock(path.with_name(path.name + ".open.lock"), "MLflow store", timeout_s=600)


def route_mlflow_logs() -> None:
    """Let MLflow's log records reach this process's own handlers, at their own levels.

    MLflow logs through a handler of its own that writes to stderr, and an Airflow task records every
    stderr line at level ERROR: its notes ("Saving pytorch model by Pickle…") showed as errors.
    """
    from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM

    logger = logging.getLogger("mlflow")
    for handler in list(logger.handlers):
        if getattr(handler, "stream", None) is MLFLOW_LOGGING_STREAM:
            logger.removeHandler(handler)
    logger.propagate = True


def configure(settings: "Settings") -> str:
    """Point MLflow at the configured store and return the experiment id (created if missing)."""
    import mlflow

    route_mlflow_logs()
    uri = settings.tracking_uri
    mlflow.set_tracking_uri(uri)

    def get_or_create() -> str:
        experiment = mlflow.get_experiment_by_name(settings.mlflow_experiment)
        if experiment is not None:
            return experiment.experiment_id
        artifact_location = None
        if not uri.startswith(("http://", "https://", "databricks")):
            settings.mlflow_artifact_root.mkdir(parents=True, exist_ok=True)
            artifact_location = settings.mlflow_artifact_root.as_uri()
        try:
            return mlflow.create_experiment(settings.mlflow_experiment, artifact_location=artifact_location)
        except Exception:  # noqa: BLE001 - another task created it first
            experiment = mlflow.get_experiment_by_name(settings.mlflow_experiment)
            if experiment is None:
                raise
            return experiment.experiment_id

    try:
        with _store_open_lock(uri):
            return retry_locked(get_or_create)
    except Exception as exc:
        raise RuntimeError(
            f"cannot reach the MLflow tracking store at {uri} ({type(exc).__name__}: {exc}). "
            "The URI comes from the mlflow_default Airflow connection when one is defined, else from "
            "MLFLOW_TRACKING_URI (else the embedded store under RECSYS_DATA_DIR): check that one, and that the server is up."
        ) from exc


def ensure_parent_run(settings: "Settings", dag_id: str, airflow_run_id: str, ds: str, tags: dict | None = None) -> str:
    """The parent run of this DAG run: found by its tags (so a retried task reuses it) or created."""
    import mlflow
    from mlflow.tracking import MlflowClient

    experiment_id = configure(settings)
    client = MlflowClient()
    escaped = airflow_run_id.replace("'", "\\'")
    found = retry_locked(
        client.search_runs,
        [experiment_id],
        filter_string=f"tags.airflow_run_id = '{escaped}' and tags.`{PARENT_TAG}` = 'parent' and tags.dag_id = '{dag_id}'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    all_tags = {"dag_id": dag_id, "airflow_run_id": airflow_run_id, "ds": ds, PARENT_TAG: "parent", **(tags or {})}
    run = retry_locked(client.create_run, experiment_id, run_name=f"{dag_id} {ds}", tags={k: str(v) for k, v in all_tags.items()})
    log.info("MLflow parent run %s for %s %s", run.info.run_id, dag_id, airflow_run_id)
    return run.info.run_id


def log_to_run(settings: "Settings", run_id: str, params: dict | None = None, metrics: dict | None = None, tags: dict | None = None) -> None:
    """Log params/metrics/tags to an existing run (e.g. data counts on the parent)."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    configure(settings)
    now = int(time.time() * 1000)
    retry_locked(
        MlflowClient().log_batch,
        run_id,
        metrics=[Metric(_metric_key(k), float(v), now, 0) for k, v in (metrics or {}).items()],
        params=[Param(k, str(v)) for k, v in (params or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
    )


def _metric_key(name: str) -> str:
    # MLflow metric names allow alphanumerics, _ - . / and space: "ndcg@10" becomes "ndcg_at_10".
    return name.replace("@", "_at_")


def metric_keys(metrics: dict[str, float]) -> dict[str, float]:
    return {_metric_key(k): float(v) for k, v in metrics.items()}


@contextmanager
def child_run(settings: "Settings", parent_run_id: str, name: str, tags: dict | None = None) -> Iterator[object]:
    """Open a child run of the parent (as the active run) for one model or the fusion."""
    import mlflow

    experiment_id = configure(settings)
    run = retry_locked(
        mlflow.start_run,
        experiment_id=experiment_id,
        run_name=name,
        parent_run_id=parent_run_id,
        tags={"model": name, PARENT_TAG: "child", **(tags or {})},
    )
    try:
        yield run
    except BaseException:
        retry_locked(mlflow.end_run, status="FAILED")
        raise
    else:
        retry_locked(mlflow.end_run)


def finish_parent_run(settings: "Settings", run_id: str, status: str = "FINISHED") -> None:
    from mlflow.tracking import MlflowClient

    configure(settings)
    retry_locked(MlflowClient().set_terminated, run_id, status)


# ---------------------------------------------------------------------------------------------
# model registry: the hybrid under the `champion` alias
# ---------------------------------------------------------------------------------------------
REGISTERED_MODEL = "recsys_hybrid"
CHAMPION_ALIAS = "champion"
GATE_METRIC = "test_ndcg_at_10"
#: the standard error of GATE_METRIC over the held-out slice's users (``ndcg_se@10`` of the evaluation)
GATE_SE_METRIC = "test_ndcg_se_at_10"


class Champion(NamedTuple):
    """The registered model version under the `champion` alias and its run's held-out gate metric."""

    version: str
    run_id: str
    value: float
    #: standard error of ``value`` over the slice's users; 0.0 for a run that did not log it
    standard_error: float


def champion_metric(settings: "Settings", metric: str = GATE_METRIC) -> Champion | None:
    """The current champion with its run's ``metric`` and that metric's standard error, or None when there is none yet."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    configure(settings)
    client = MlflowClient()
    try:
        version = retry_locked(client.get_model_version_by_alias, REGISTERED_MODEL, CHAMPION_ALIAS)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
            return None
        raise
    run = retry_locked(client.get_run, version.run_id)
    value = run.data.metrics.get(metric)
    if value is None:
        return None
    return Champion(str(version.version), version.run_id, float(value), float(run.data.metrics.get(GATE_SE_METRIC, 0.0)))


def promote_champion(settings: "Settings", run_id: str, ds: str | None = None, artifact_path: str = "model") -> str:
    """Register the run's model (tagged with its ``ds``) and point the `champion` alias at it; the new version.

    A backfill publishes old days after newer ones: the alias then stays on the newest day's version
    (compared by the ``ds`` tag), so re-computing history never rolls the champion back.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    configure(settings)
    client = MlflowClient()
    # register_model prints its notes ("Created version '3' of model …") to stderr; the log line below says the same.
    with redirect_stderr(sys.stdout):
        version = retry_locked(mlflow.register_model, f"runs:/{run_id}/{artifact_path}", REGISTERED_MODEL)
    if ds:
        retry_locked(client.set_model_version_tag, REGISTERED_MODEL, version.version, "ds", ds)
    try:
        current = retry_locked(client.get_model_version_by_alias, REGISTERED_MODEL, CHAMPION_ALIAS)
    except MlflowException:
        current = None
    current_ds = (current.tags or {}).get("ds", "") if current is not None else ""
    if ds and current_ds > ds:
        log.info(
            "registered %s version %s for ds=%s; %s stays version %s (ds=%s, a newer day)",
            REGISTERED_MODEL, version.version, ds, CHAMPION_ALIAS, current.version, current_ds,
        )
        return str(version.version)
    retry_locked(client.set_registered_model_alias, REGISTERED_MODEL, CHAMPION_ALIAS, version.version)
    log.info("registered %s version %s as %s", REGISTERED_MODEL, version.version, CHAMPION_ALIAS)
    return str(version.version)
