"""A fresh embedded MLflow store survives several tasks opening it at the same moment.

The first task of a run (``validate_raw``) is the one that creates the SQLite store, and a backfill
runs several days' first tasks at once (plus the scheduler's own cron run). MLflow creates the store by
running its schema migrations on first open; two processes migrating one new file at once leave it
half-migrated ("table _alembic_tmp_experiments already exists", "expected to match one row ... in
'alembic_version'") and every later call fails the same way (seen in a scheduler drill on a loaded
machine). ``tracking.configure`` serialises that first open; this test starts several real processes on
one fresh store, releases them together, and checks every one got the experiment and the store is whole.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 4
READY_TIMEOUT_S = 120  # importing mlflow in four processes on two cores

WORKER = r"""
import sys, time
from pathlib import Path
from recsys import tracking
from recsys.config import load_settings

control = Path(sys.argv[1])
settings = load_settings()
(control / f"{sys.argv[2]}.ready").touch()
while not (control / "go").exists():
    time.sleep(0.005)
print(tracking.configure(settings))
"""


def test_processes_opening_a_new_store_together_all_get_the_experiment(tmp_path, monkeypatch):
    data_dir, control = tmp_path / "data", tmp_path / "control"
    control.mkdir()
    env = {**os.environ, "RECSYS_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO_ROOT / "include")}
    env.pop("MLFLOW_TRACKING_URI", None)  # the embedded SQLite store is the point
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(control), str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for i in range(PROCESSES)
    ]
    try:
        deadline = time.time() + READY_TIMEOUT_S
        while len(list(control.glob("*.ready"))) < PROCESSES:
            assert time.time() < deadline, "the workers did not start within the timeout"
            assert all(w.poll() is None for w in workers), [w.communicate() for w in workers if w.poll() is not None]
            time.sleep(0.05)
        assert not (data_dir / "mlflow" / "mlflow.db").exists(), "the store must be new when the workers open it"
        (control / "go").touch()
        outputs = [w.communicate(timeout=180) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    failures = [(w.returncode, err[-2000:]) for w, (_, err) in zip(workers, outputs) if w.returncode != 0]
    assert not failures, failures
    experiment_ids = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert len(experiment_ids) == 1, f"the workers saw different experiments: {experiment_ids}"

    import mlflow
    from recsys.config import load_settings

    monkeypatch.setenv("RECSYS_DATA_DIR", str(data_dir))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = load_settings()
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    # A half-migrated store fails here; a whole one takes a run.
    run = client.create_run(experiment.experiment_id)
    client.log_metric(run.info.run_id, "probe", 1.0)
    assert client.get_run(run.info.run_id).data.metrics == {"probe": 1.0}
