"""The publish quality gate against a real MLflow registry (SQLite store in a temp dir)."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from recsys import tracking
from recsys.config import Settings
from recsys.pipeline import QualityGateError, check_quality_gate


@pytest.fixture
def gate_settings(tmp_path):
    return Settings(data_dir=tmp_path / "data", champion_tolerance=0.10)


def _evaluation(hybrid: float, popularity: float) -> dict:
    return {"hybrid": {"ndcg@10": hybrid}, "popularity": {"ndcg@10": popularity}}


def _make_champion(settings: Settings, ndcg: float, ds: str | None = None) -> str:
    experiment_id = tracking.configure(settings)
    model = LogisticRegression().fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_metric(tracking.GATE_METRIC, ndcg)
        mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    tracking.promote_champion(settings, run.info.run_id, ds=ds)
    return run.info.run_id


def test_no_champion_yet_only_popularity_matters(gate_settings):
    check_quality_gate(gate_settings, _evaluation(hybrid=0.12, popularity=0.10))
    with pytest.raises(QualityGateError, match=r"0\.0900.*below the popularity baseline's 0\.1000"):
        check_quality_gate(gate_settings, _evaluation(hybrid=0.09, popularity=0.10))


def test_champion_tolerance(gate_settings):
    run_id = _make_champion(gate_settings, ndcg=0.20)
    version, champion_run, value = tracking.champion_metric(gate_settings)
    assert champion_run == run_id and value == pytest.approx(0.20)
    check_quality_gate(gate_settings, _evaluation(hybrid=0.181, popularity=0.05))  # within 10%
    with pytest.raises(QualityGateError) as excinfo:
        check_quality_gate(gate_settings, _evaluation(hybrid=0.17, popularity=0.05))
    message = str(excinfo.value)
    assert "0.1700" in message and "0.2000" in message and f"version {version}" in message


def test_promote_moves_the_alias(gate_settings):
    _make_champion(gate_settings, ndcg=0.20)
    second = _make_champion(gate_settings, ndcg=0.25)
    version, run_id, value = tracking.champion_metric(gate_settings)
    assert run_id == second and value == pytest.approx(0.25) and version == "2"


def test_a_backfilled_older_day_does_not_take_the_alias_back(gate_settings):
    newest = _make_champion(gate_settings, ndcg=0.20, ds="2024-03-10")
    _make_champion(gate_settings, ndcg=0.30, ds="2024-03-01")  # a backfill of an older day, registered later
    version, run_id, value = tracking.champion_metric(gate_settings)
    assert run_id == newest and version == "1" and value == pytest.approx(0.20)
    later = _make_champion(gate_settings, ndcg=0.21, ds="2024-03-11")
    assert tracking.champion_metric(gate_settings)[1] == later
