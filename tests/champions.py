"""Register a champion with known figures in a real MLflow registry, for the quality gate's tests.

The gate (``recsys.pipeline.check_quality_gate``) reads the `champion` alias of ``recsys_hybrid`` and its
run's ``test_ndcg_at_10`` and standard error; a champion made here is a real registered model version
(a tiny scikit-learn model) whose run carries the figures a test needs.
"""

from __future__ import annotations

import mlflow
import numpy as np
from sklearn.linear_model import LogisticRegression

from recsys import tracking
from recsys.config import Settings


def make_champion(settings: Settings, ndcg: float, ds: str | None = None, se: float | None = None) -> str:
    """Register a run with the gate metric (and its standard error, unless None: an older run) as champion; its run id."""
    experiment_id = tracking.configure(settings)
    model = LogisticRegression().fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_metric(tracking.GATE_METRIC, ndcg)
        if se is not None:
            mlflow.log_metric(tracking.GATE_SE_METRIC, se)
        mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    tracking.promote_champion(settings, run.info.run_id, ds=ds)
    return run.info.run_id
