"""The embedded SQLite MLflow store survives the training tasks writing at once.

Under a parallel executor (LocalExecutor, Celery, Kubernetes) train_collaborative, train_content,
train_sequence and train_cooccurrence are separate OS processes logging to one SQLite file. This test
reproduces exactly that without Airflow: the features are built in-process, then one Python process per
model calls ``pipeline.train_model``, all released by one start signal, each recording when its training
started and ended. All must finish, every child run must be in MLflow under the parent with its
metrics, and the recorded intervals must overlap (otherwise the test proved nothing about concurrency).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recsys.constants import MODEL_NAMES

pytestmark = pytest.mark.spark

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "recsys_daily"
AIRFLOW_RUN_ID = "manual__parallel_training_test"
READY_TIMEOUT_S = 120  # imports of torch / mlflow / pyspark in four processes on two cores
TRAIN_TIMEOUT_S = 240

# Each worker: build the settings from the environment (as an Airflow task does), say it is ready,
# wait for the shared start signal, then time one pipeline.train_model call and write the result.
WORKER = r"""
import json, logging, os, sys, time
from pathlib import Path

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s")
for noisy in ("py4j", "alembic", "mlflow.store"):
    logging.getLogger(noisy).setLevel(logging.WARNING)

from recsys import pipeline
from recsys.config import load_settings

name, ds, parent_run_id, control = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
settings = load_settings()
(control / f"{name}.ready").write_text(str(os.getpid()))
go = control / "go"
deadline = time.time() + 120
while not go.exists():
    if time.time() > deadline:
        sys.exit("no start signal within 120 s")
    time.sleep(0.01)
started = time.time()
result = pipeline.train_model(settings, ds, name, parent_run_id)
ended = time.time()
(control / f"{name}.json").write_text(json.dumps({"pid": os.getpid(), "start": started, "end": ended, "result": result}))
"""


@pytest.fixture
def features(tmp_path, monkeypatch, spark):
    """A small landing zone, validated and featurised in this process; the env the workers inherit.

    ``spark`` (the run's shared local[2] session) is started first so that the steps run here reuse it
    whatever the test order: a local[1] session started here would outlive this test and be handed to
    every later test that asks for ``spark``. The workers read RECSYS_SPARK_MASTER=local[1].
    """
    from recsys import pipeline
    from recsys.config import load_settings
    from recsys.data.synthetic import GeneratorConfig, generate

    data_dir = tmp_path / "data"
    generated = generate(data_dir, GeneratorConfig(users=500, products=120, days=9, seed=3))
    env = {
        "RECSYS_DATA_DIR": str(data_dir),
        "RECSYS_SPARK_MASTER": "local[1]",
        "RECSYS_SPARK_SHUFFLE_PARTITIONS": "2",
        "RECSYS_SPARK_DRIVER_MEMORY": "1g",
        # This small LSTM would refit test and full one after the other; force the side-by-side worker
        # processes, whose output is checked against refits made here.
        "RECSYS_SEQUENCE_SIDE_BY_SIDE_SECONDS": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the embedded SQLite store is the point
    settings = load_settings()  # the very settings each worker builds from the same environment
    assert settings.tracking_uri.startswith("sqlite:")

    ds = generated.end_date.isoformat()
    validation = pipeline.validate_raw(settings, ds, DAG_ID, AIRFLOW_RUN_ID)
    summary = pipeline.build_features(settings, ds, validation["mlflow_parent_run_id"])
    assert summary["events"] > 0 and summary["items"] > 0
    return {"settings": settings, "ds": ds, "parent_run_id": validation["mlflow_parent_run_id"], "env": env}


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def _start_workers(features: dict, control: Path, logs: Path) -> dict[str, tuple[subprocess.Popen, Path]]:
    env = {**os.environ, **features["env"], "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    env.pop("MLFLOW_TRACKING_URI", None)
    workers = {}
    for name in MODEL_NAMES:
        log_path = logs / f"{name}.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", WORKER, name, features["ds"], features["parent_run_id"], str(control)],
                env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        workers[name] = (process, log_path)
    return workers


def test_training_processes_share_the_sqlite_mlflow_store(features, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    control = tmp_path / "control"
    logs = tmp_path / "logs"
    control.mkdir()
    logs.mkdir()
    workers = _start_workers(features, control, logs)
    try:
        # Release them all at once, after each has paid for its imports.
        deadline = time.time() + READY_TIMEOUT_S
        while not all((control / f"{name}.ready").exists() for name in MODEL_NAMES):
            crashed = {name: p.returncode for name, (p, _) in workers.items() if p.poll() not in (None, 0)}
            if crashed or time.time() > deadline:
                pytest.fail(
                    f"workers not ready (crashed: {crashed}):\n"
                    + "\n".join(f"--- {n}\n{_tail(log)}" for n, (_, log) in workers.items())
                )
            time.sleep(0.05)
        (control / "go").touch()
        for name, (process, log) in workers.items():
            process.wait(timeout=TRAIN_TIMEOUT_S)
    finally:
        for process, _ in workers.values():
            if process.poll() is None:
                os.killpg(process.pid, 9)
                process.wait()

    failed = {name: p.returncode for name, (p, _) in workers.items() if p.returncode != 0}
    assert not failed, f"training processes failed {failed}:\n" + "\n".join(
        f"--- {name} (log {workers[name][1]})\n{_tail(workers[name][1])}" for name in failed
    )
    records = {name: json.loads((control / f"{name}.json").read_text()) for name in MODEL_NAMES}
    assert len({r["pid"] for r in records.values()}) == len(MODEL_NAMES)  # one OS process per model, not one

    # The training intervals overlapped: every process was still training when the last one started.
    latest_start = max(r["start"] for r in records.values())
    earliest_end = min(r["end"] for r in records.values())
    spans = {n: f"{r['start'] - latest_start:+.2f}s .. {r['end'] - latest_start:+.2f}s" for n, r in records.items()}
    assert latest_start < earliest_end, f"training intervals did not overlap: {spans}"

    # MLflow holds every finished child run under the parent, each with its held-out metrics.
    settings = features["settings"]
    mlflow.set_tracking_uri(settings.tracking_uri)
    experiment = mlflow.get_experiment_by_name(settings.mlflow_experiment)
    runs = MlflowClient().search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{features['parent_run_id']}'"
    )
    by_model = {run.data.tags["model"]: run for run in runs}
    assert set(by_model) == set(MODEL_NAMES), f"child runs: {sorted(by_model)}"
    for name, run in by_model.items():
        assert run.info.status == "FINISHED", name
        assert run.info.run_id == records[name]["result"]["mlflow_run_id"], name
        for stage in ("val", "test"):
            assert 0.0 <= run.data.metrics[f"{stage}_ndcg_at_10"] <= 1.0, (name, stage)
        assert run.data.metrics["test_ndcg_at_10"] == pytest.approx(records[name]["result"]["metrics"]["ndcg@10"])
        assert run.data.params, name
        assert {a.path for a in MlflowClient().list_artifacts(run.info.run_id)} >= {"recommender"}, name
    # The LSTM's curve is its early-stopped fit's: train loss and validation NDCG per epoch.
    client = MlflowClient()
    losses = client.get_metric_history(by_model["sequence"].info.run_id, "epoch_train_loss")
    val_ndcg = client.get_metric_history(by_model["sequence"].info.run_id, "epoch_val_ndcg_at_10")
    assert len(losses) >= 1 and len(val_ndcg) == len(losses)
    assert "refitting test and full side by side" in _tail(workers["sequence"][1], 10**6)
    _assert_side_by_side_refits_match_sequential_ones(settings, features["ds"], records["sequence"])
    # The parent run is still open for fuse/publish and was not disturbed by the children.
    parent = MlflowClient().get_run(features["parent_run_id"])
    assert parent.info.status == "RUNNING"
    assert parent.data.metrics["feature_events"] > 0

    busy = {name: _tail(log, 10**6).count("MLflow store busy") for name, (_, log) in workers.items()}
    print(f"\ntraining intervals relative to the last start: {spans}; SQLite lock retries per process: {busy}")


def _assert_side_by_side_refits_match_sequential_ones(settings, ds: str, record: dict) -> None:
    """train_sequence refits test and full in two worker processes: same candidates as fitting them here."""
    import pandas as pd

    from recsys import pipeline
    from recsys.features.build import feature_paths
    from recsys.models.base import load_stage
    from recsys.models.sequence import SequenceRecommender

    day = pipeline.parse_ds(ds)
    assert {"test", "full"} <= set(record["result"]["seconds"])
    published = SequenceRecommender.load(pipeline.run_dir(settings, day) / "models" / "sequence")
    assert published.params.patience == 10**6 and published.params.epochs >= 1  # the refit's params
    root = feature_paths(settings, day).root
    for stage in ("test", "full"):
        data = load_stage(root, stage)
        here = pipeline._fit_model("sequence", data, settings, params=published.params)
        written = pd.read_parquet(pipeline.candidates_path(settings, day, "sequence", stage))
        expected = here.recommend(pipeline._stage_users(data, stage), max(settings.candidates_per_model, settings.top_k))
        assert len(written) > 0, stage
        pd.testing.assert_frame_equal(written, expected, check_exact=False, rtol=1e-6, obj=f"sequence {stage} candidates")
