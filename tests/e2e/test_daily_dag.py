"""End to end: the real `airflow dags test recsys_daily <ds>` on a small generated landing zone.

Asserts on what landed in the DuckDB warehouse and in MLflow. Reruns of a day (same rows, one copy)
are drilled under a real scheduler in test_scheduler_drills.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys.constants import BASELINE_NAMES, MODEL_NAMES

from tests.e2e.airflow_stack import airflow_env, run_airflow

pytestmark = pytest.mark.e2e

TOP_K = 20


@pytest.fixture(scope="module")
def dag_run(tmp_path_factory):
    from recsys.data.synthetic import GeneratorConfig, generate

    root = tmp_path_factory.mktemp("e2e")
    data_dir = root / "data"
    summary = generate(data_dir, GeneratorConfig(users=700, products=150, days=10, seed=7, bad_rows_fraction=0.003))
    ds = summary.end_date.isoformat()
    env = airflow_env(root / "airflow", data_dir, RECSYS_TOP_K=str(TOP_K))
    run_airflow(["db", "migrate"], env, root / "migrate.log", timeout=300)
    run_airflow(["dags", "test", "recsys_daily", ds], env, root / "run1.log")
    return {"root": root, "data_dir": data_dir, "ds": ds, "env": env, "generated": summary}


def _warehouse(data_dir: Path):
    import duckdb

    return duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)


def test_every_user_with_history_gets_k_recommendations(dag_run):
    import pandas as pd

    ds = dag_run["ds"]
    with _warehouse(dag_run["data_dir"]) as con:
        recs = con.execute("select * from recsys.recommendations where ds = ?", [ds]).df()
    clean = pd.read_parquet(dag_run["data_dir"] / "clean" / "events")
    users_with_history = set(clean["user_id"].unique())
    assert set(recs["user_id"]) == users_with_history
    per_user = recs.groupby("user_id").size()
    assert (per_user == TOP_K).all()
    assert not recs.duplicated(["user_id", "rank"]).any()
    assert not recs.duplicated(["user_id", "product_id"]).any()
    assert sorted(recs["rank"].unique()) == list(range(1, TOP_K + 1))
    assert recs["reason"].str.len().gt(0).all() and recs["sources"].str.len().gt(0).all()
    # Purchased items are never recommended back to the buyer.
    purchased = clean.loc[clean["event_type"] == "purchase", ["user_id", "product_id"]].drop_duplicates()
    assert recs.merge(purchased, on=["user_id", "product_id"]).empty


def test_pipeline_run_recorded_with_conservation_and_metrics(dag_run):
    ds = dag_run["ds"]
    with _warehouse(dag_run["data_dir"]) as con:
        runs = con.execute("select * from recsys.pipeline_runs where ds = ?", [ds]).df()
        published = con.execute("select count(*) from recsys.recommendations where ds = ?", [ds]).fetchone()[0]
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["raw_rows"] == run["clean_rows"] + run["quarantined_rows"]
    assert run["quarantined_rows"] > 0  # the generator planted bad rows
    assert run["published_rows"] == published
    metrics = json.loads(run["metrics"])
    assert set(metrics) == {*MODEL_NAMES, *BASELINE_NAMES, "hybrid"}
    for name, row in metrics.items():
        assert 0.0 <= row["ndcg@10"] <= 1.0, name
    # Quarantine holds the raw text of the bad rows with the rule each broke.
    quarantine = list((dag_run["data_dir"] / "quarantine" / f"ds={ds}").glob("*.csv"))
    assert quarantine and "failed_rules" in quarantine[0].read_text().splitlines()[0]


def test_mlflow_has_parent_and_child_runs(dag_run):
    import mlflow

    from recsys.config import Settings

    settings = Settings(data_dir=dag_run["data_dir"])
    mlflow.set_tracking_uri(settings.tracking_uri)
    experiment = mlflow.get_experiment_by_name("recsys_daily")
    runs = mlflow.search_runs([experiment.experiment_id], output_format="pandas")
    parents = runs[runs["tags.recsys.role"] == "parent"]
    assert len(parents) == 1
    parent = parents.iloc[0]
    assert parent["tags.dag_id"] == "recsys_daily" and parent["tags.ds"] == dag_run["ds"]
    assert parent["status"] == "FINISHED"
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"]]
    assert set(children["tags.model"]) == {*MODEL_NAMES, *BASELINE_NAMES, "hybrid"}
    for _, child in children.iterrows():
        assert 0.0 <= child["metrics.test_ndcg_at_10"] <= 1.0, child["tags.model"]
    sequence = children[children["tags.model"] == "sequence"].iloc[0]
    history = mlflow.tracking.MlflowClient().get_metric_history(sequence["run_id"], "epoch_train_loss")
    assert len(history) >= 1  # per-epoch training curve
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(parent["run_id"])}
    assert "model_comparison.png" in artifacts
    # The published hybrid became the registry's champion.
    from recsys import tracking

    _, champion_run, champion_ndcg = tracking.champion_metric(settings)
    hybrid = children[children["tags.model"] == "hybrid"].iloc[0]
    assert champion_run == hybrid["run_id"]
    assert champion_ndcg == pytest.approx(hybrid["metrics.test_ndcg_at_10"])
