"""The daily pipeline's steps as plain functions: each Airflow task calls exactly one of them.

They take the settings and small references (dates, run ids, paths) and return small JSON-able
dicts (paths, counts, metrics) for XCom; data itself stays on disk. Nothing here imports Airflow.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from recsys import tracking
from recsys.config import Settings
from recsys.constants import BASELINE_NAMES, EVAL_K, HYBRID_NAME, ITEM_COL, MODEL_NAMES, RANK_COL, SCORE_COL, STAGES, USER_COL
from recsys.errors import QualityGateError
from recsys.locks import day_data_lock

log = logging.getLogger(__name__)

#: ALS settings tried on the validation slice; the best by NDCG@10 is refitted for test and full.
ALS_GRID = (
    {"rank": 32, "alpha": 10.0, "reg_param": 0.05},
    {"rank": 64, "alpha": 20.0, "reg_param": 0.1},
    {"rank": 32, "alpha": 40.0, "reg_param": 0.1},
)

#: Content settings tried on the validation slice: the weight of item popularity added to the text
#: similarity. Text alone is weak wherever item text says little about taste (MovieLens: genres and a
#: few tags; pure similarity scores a quarter of popularity's validation NDCG@10), and the weight that
#: helps differs by data set, so it is chosen like ALS's settings.
CONTENT_GRID = tuple({"popularity_weight": weight} for weight in (0.1, 0.2, 0.3, 0.5))


#: Days of the training window whose distinct users per item start the LSTM's output bias.
SEQUENCE_PRIOR_RECENT_DAYS = 7


def parse_ds(ds: str | date) -> date:
    return ds if isinstance(ds, date) else date.fromisoformat(str(ds)[:10])


def run_dir(settings: Settings, ds: date) -> Path:
    return settings.runs_dir / f"ds={ds.isoformat()}"


def candidates_path(settings: Settings, ds: date, source: str, stage: str) -> Path:
    return run_dir(settings, ds) / "candidates" / source / f"{stage}.parquet"


# ---------------------------------------------------------------------------------------------
# validate_raw
# ---------------------------------------------------------------------------------------------
def validate_raw(settings: Settings, ds: str | date, dag_id: str, airflow_run_id: str) -> dict:
    """Validate the day's raw events, quarantine bad rows, open the MLflow parent run."""
    from recsys.features.spark import get_spark

    day = parse_ds(ds)
    parent_run_id = tracking.ensure_parent_run(settings, dag_id, airflow_run_id, day.isoformat())
    spark = get_spark(settings, app_name=f"validate_raw {day}", input_mb=_window_mb(settings, day))
    with day_data_lock(settings.data_dir):  # another day's run may be validating the same history
        return _validate_window(settings, spark, day, parent_run_id)


def _window_mb(settings: Settings, day: date) -> float:
    """The run's scale for its Spark JVM (recsys.features.spark.quick_jit): the window's raw event files."""
    from recsys.features.build import raw_window_mb

    return raw_window_mb(settings.raw_events_dir, day, settings.lookback_days)


def _validate_window(settings: Settings, spark, day: date, parent_run_id: str) -> dict:
    from recsys.quality.validation import DataQualityError, validate_day, validate_days

    folders = dict(
        raw_events_dir=settings.raw_events_dir,
        clean_events_dir=settings.clean_events_dir,
        quarantine_dir=settings.quarantine_dir,
        reports_dir=settings.data_dir / "quality" / "reports",
        max_quarantine_fraction=settings.quarantine_max_fraction,
    )
    # History days of the window that landed but were never validated (first run, late files) are
    # validated once here, together in one pass and without Data Docs; a bad history day is left out
    # with a warning instead of blocking today.
    pending_days = _unvalidated_history(settings, day)
    if pending_days:
        log.info("validating %d history day(s) of the window not yet validated: %s .. %s",
                 len(pending_days), pending_days[0], pending_days[-1])
        for pending, outcome in validate_days(spark, pending_days, **folders).items():
            if isinstance(outcome, DataQualityError):
                log.warning("history day %s left out of the window: %s", pending, outcome)
    try:
        report = validate_day(spark, day, docs_dir=settings.data_dir / "quality", **folders)
    except DataQualityError as exc:
        tracking.log_to_run(settings, parent_run_id, tags={"failed_step": "validate_raw", "failure": str(exc)[:4000]})
        tracking.finish_parent_run(settings, parent_run_id, "FAILED")
        raise
    tracking.log_to_run(
        settings,
        parent_run_id,
        metrics={"raw_rows": report.raw_rows, "clean_rows": report.clean_rows, "quarantined_rows": report.quarantined_rows},
        tags={"gx_data_docs": report.docs_page or ""},
    )
    return {"mlflow_parent_run_id": parent_run_id, **report.as_dict()}


def _unvalidated_history(settings: Settings, day: date) -> list[date]:
    days = [day - timedelta(days=offset) for offset in range(settings.lookback_days - 1, 0, -1)]
    return [
        d for d in days
        if (settings.raw_events_dir / f"ds={d.isoformat()}").is_dir()
        and not (settings.clean_events_dir / f"ds={d.isoformat()}").is_dir()
    ]


# ---------------------------------------------------------------------------------------------
# build_features
# ---------------------------------------------------------------------------------------------
def build_features(settings: Settings, ds: str | date, parent_run_id: str | None = None) -> dict:
    from recsys.features.build import build_features as build
    from recsys.features.spark import get_spark

    day = parse_ds(ds)
    spark = get_spark(settings, app_name=f"build_features {day}", input_mb=_window_mb(settings, day))
    with day_data_lock(settings.data_dir):  # partials of shared history days may be rebuilt by one run at a time
        summary = build(spark, settings, day)
    from recsys.quality.features import check_features

    # Feature-level GX expectations: FeatureQualityError stops the run before any model trains on bad tables.
    summary["feature_expectations_passed"] = len(check_features(Path(summary["root"]), settings))
    if parent_run_id:
        tracking.log_to_run(
            settings,
            parent_run_id,
            metrics={"feature_events": summary["events"], "users": summary["users"], "items": summary["items"]},
            params={"lookback_days": settings.lookback_days, "val_days": settings.val_days, "test_days": settings.test_days},
        )
    return summary


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def _stage_users(data, stage: str) -> np.ndarray:
    """Whom a stage recommends for: the held-out users (val/test) or everyone with history (full)."""
    if stage == "full":
        users = pd.concat([data.interactions[USER_COL], data.sequences[USER_COL]])
    else:
        users = data.targets[USER_COL]
    return np.unique(users.to_numpy(np.int64))


def _evaluate(recs: pd.DataFrame, data, k: int) -> dict[str, float]:
    from recsys.evaluation.metrics import evaluate

    popularity = data.interactions.groupby(ITEM_COL)[USER_COL].nunique()
    popularity = popularity / max(1, data.interactions[USER_COL].nunique())
    category = data.items.set_index(ITEM_COL)["top_category"]
    return evaluate(
        recs, data.targets, k, n_catalog_items=len(data.items), item_popularity=popularity, item_category=category
    )


def _fit_model(name: str, data, settings: Settings, params=None, spark=None, validation: pd.DataFrame | None = None):
    if name == "collaborative":
        from recsys.models.collaborative import ALSParams, ALSRecommender

        return ALSRecommender(params or ALSParams(seed=settings.seed)).fit(spark, data.interactions, seen=data.seen)
    if name == "content":
        from recsys.models.content import ContentRecommender

        return ContentRecommender(params).fit(data.items, data.interactions, seen=data.seen)
    if name == "sequence":
        from recsys.models.category_popularity import recent_item_users
        from recsys.models.sequence import SequenceParams, SequenceRecommender, batch_size_for

        params = params or SequenceParams(
            max_len=settings.sequence_length, seed=settings.seed, num_threads=settings.torch_threads,
            batch_size=batch_size_for(len(data.sequences)),
        )
        # The LSTM has no clock: its output bias starts from what is popular lately, since the next item
        # is always at the end of the timeline (on MovieLens validation: NDCG@10 0.142 -> 0.170).
        prior = recent_item_users(data.interactions, SEQUENCE_PRIOR_RECENT_DAYS)
        return SequenceRecommender(params).fit(data.sequences, validation=validation, seen=data.seen, item_prior=prior)
    if name == "cooccurrence":
        from recsys.models.cooccurrence import CooccurrenceRecommender

        return CooccurrenceRecommender(params).fit(spark, data.interactions, seen=data.seen)
    if name == "popularity":
        from recsys.models.popularity import PopularityRecommender

        return PopularityRecommender(params).fit(data.interactions, seen=data.seen)
    if name == "category_popularity":
        from recsys.models.category_popularity import CategoryPopularityRecommender

        return CategoryPopularityRecommender(params).fit(data.interactions, data.items, seen=data.seen)
    raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES + BASELINE_NAMES}")


def _search_als(settings: Settings, spark, data) -> tuple[tuple[float, object, object], list[dict]]:
    """Pick ALS hyper-parameters by NDCG@10 on the validation slice (never the held-out one)."""
    from recsys.models.collaborative import ALSParams

    if not 1 <= settings.als_trials <= len(ALS_GRID):
        raise ValueError(f"RECSYS_ALS_TRIALS={settings.als_trials}: must be between 1 and {len(ALS_GRID)} (the ALS grid's size)")
    return _search_grid(
        "collaborative", ALS_GRID[: settings.als_trials], lambda point: ALSParams(seed=settings.seed, **point), settings, data, spark
    )


def _search_content(settings: Settings, data) -> tuple[tuple[float, object, object], list[dict]]:
    """Pick the content model's popularity weight by NDCG@10 on the validation slice."""
    from recsys.models.content import ContentParams

    return _search_grid("content", CONTENT_GRID, lambda point: ContentParams(**point), settings, data)


def _search_grid(name: str, grid, make_params, settings: Settings, data, spark=None) -> tuple[tuple[float, object, object], list[dict]]:
    """Fit ``name`` at every grid point on a validation stage's data; the best by NDCG@10 on its targets.

    Returns ``(score, params, model)`` of the best point (the first of equals) and every trial for MLflow.
    """
    trials = []
    best = None
    for grid_point in grid:
        params = make_params(grid_point)
        model = _fit_model(name, data, settings, params=params, spark=spark)
        recs = model.recommend(_stage_users(data, "val"), EVAL_K)
        score = _evaluate(recs, data, EVAL_K)[f"ndcg@{EVAL_K}"]
        trials.append({**grid_point, f"val_ndcg@{EVAL_K}": score})
        log.info("%s trial %s: validation NDCG@%d = %.4f", name, grid_point, EVAL_K, score)
        if best is None or score > best[0]:
            best = (score, params, model)
    return best, trials


def train_model(settings: Settings, ds: str | date, name: str, parent_run_id: str) -> dict:
    """Fit one model family on each stage, write its candidates, log a child run to MLflow.

    val: fit on train, score the validation slice (hyper-parameters and fusion learn from this);
    test: fit on train+validation, score the held-out slice (the reported metrics);
    full: fit on everything up to ds, candidates for every user (what gets published).
    The LSTM's test and full fits are independent of each other, so they run side by side when
    they are big enough to repay the worker processes' start-up (:func:`_refit_sequence`).
    """
    import mlflow

    from recsys.features.build import FeaturePaths, feature_paths
    from recsys.models.base import load_stage

    day = parse_ds(ds)
    paths: FeaturePaths = feature_paths(settings, day)
    n_candidates = max(settings.candidates_per_model, settings.top_k)
    spark = None
    if name in ("collaborative", "cooccurrence"):
        from recsys.features.spark import get_spark

        spark = get_spark(settings, app_name=f"train_{name} {day}", input_mb=_window_mb(settings, day))

    metrics: dict[str, float] = {}
    extra_params: dict = {}
    timings: dict[str, float] = {}
    params = None
    model = None
    curve_model = None  # whose per-epoch history goes to MLflow: the sequence model's early-stopped fit
    # The sequence model fits val alone (it picks the epoch count), then test and full (see _refit_sequence).
    stages = ("val",) if name == "sequence" else STAGES
    for stage in stages:
        started = time.perf_counter()
        data = load_stage(paths.root, stage)
        users = _stage_users(data, stage)
        log.info("%s/%s: fitting on %d interactions, recommending for %d users", name, stage, len(data.interactions), len(users))
        if name == "collaborative" and stage == "val":
            (_, params, model), trials = _search_als(settings, spark, data)
            extra_params["als_search"] = json.dumps(trials)
        elif name == "content" and stage == "val":
            (_, params, model), trials = _search_content(settings, data)
            extra_params["content_search"] = json.dumps(trials)
        elif name == "sequence":
            # Early stopping on the validation slice; test and full reuse its best epoch count, so
            # test never sees its own held-out targets and full needs no slice to stop on.
            model = curve_model = _fit_model(name, data, settings, validation=data.targets)
        else:
            model = _fit_model(name, data, settings, params=params, spark=spark)
            params = model.params
        recs = model.recommend(users, n_candidates)
        _write_candidates(settings, day, name, stage, recs)
        metrics.update(_stage_metrics(settings, stage, recs, data))
        timings[stage] = time.perf_counter() - started
        log.info("%s/%s done in %.1fs", name, stage, timings[stage])
    if name == "sequence":
        model = _refit_sequence(settings, day, paths.root, curve_model, n_candidates, metrics, timings)

    with tracking.child_run(settings, parent_run_id, name, tags={"ds": day.isoformat()}) as run:
        tracking.retry_locked(mlflow.log_params, {**asdict(model.params), **extra_params})
        tracking.retry_locked(
            mlflow.log_metrics,
            {**tracking.metric_keys(metrics), **{f"train_seconds_{s}": t for s, t in timings.items()}},
        )
        if curve_model is not None:
            for entry in curve_model.history:
                step = int(entry["epoch"])
                tracking.retry_locked(
                    mlflow.log_metrics, {f"epoch_{k}": float(v) for k, v in entry.items() if k != "epoch" and v is not None}, step=step
                )
        _log_model(name, model, run_dir(settings, day) / "models" / name)
        child_id = run.info.run_id
    test_metrics = {k[len("test_"):]: v for k, v in metrics.items() if k.startswith("test_")}
    return {"model": name, "mlflow_run_id": child_id, "metrics": test_metrics, "seconds": timings}


def _write_candidates(settings: Settings, day: date, name: str, stage: str, recs: pd.DataFrame) -> None:
    out = candidates_path(settings, day, name, stage)
    out.parent.mkdir(parents=True, exist_ok=True)
    recs.to_parquet(out, index=False)


def _stage_metrics(settings: Settings, stage: str, recs: pd.DataFrame, data) -> dict[str, float]:
    """``{stage}_{metric}@k`` on the stage's targets for val and test; full has none to score."""
    if stage not in ("val", "test"):
        return {}
    return {f"{stage}_{key}": value for k in (EVAL_K, settings.top_k) for key, value in _evaluate(recs, data, k).items()}


def _refit_sequence(settings: Settings, day: date, root: Path, early_stopped, n_candidates: int, metrics: dict, timings: dict):
    """Refit the LSTM for test and full, for the early-stopped fit's best epoch count; return the full model.

    The two refits are independent of each other. When the epochs they repeat took at least
    ``settings.sequence_side_by_side_seconds`` in the early-stopped fit, they run side by side in two
    worker processes, each on half of ``RECSYS_TORCH_THREADS`` (at least one thread): two
    single-threaded fits on two cores take about half the time of one after the other, where one fit
    on two threads gains only about 1.4x. A smaller fit runs here, test then full, on every thread:
    a worker's start-up (a fresh interpreter importing torch, pandas and the pipeline, a few seconds)
    would cost more than it saves. Each refit is deterministic for a given thread count, whatever
    runs beside it.
    """
    import tempfile

    from recsys.models.sequence import SequenceParams, SequenceRecommender
    from recsys.parallel import run_side_by_side

    epochs = max(1, early_stopped.best_epoch)
    repeated_seconds = sum(entry["seconds"] for entry in early_stopped.history[:epochs])
    side_by_side = repeated_seconds >= settings.sequence_side_by_side_seconds
    params = SequenceParams(
        **{
            **asdict(early_stopped.params),
            "epochs": epochs,
            "patience": 10**6,
            "num_threads": max(1, settings.torch_threads // 2) if side_by_side else settings.torch_threads,
        }
    )
    how = "side by side" if side_by_side else "one after the other"
    log.info(
        "sequence: refitting test and full %s, %d epochs, %d thread(s) each (those epochs took %.1fs in the "
        "early-stopped fit; side by side from %.1fs, RECSYS_SEQUENCE_SIDE_BY_SIDE_SECONDS)",
        how, params.epochs, params.num_threads, repeated_seconds, settings.sequence_side_by_side_seconds,
    )
    staging = run_dir(settings, day) / "models"
    staging.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".sequence-full-", dir=staging) as scratch:
        jobs = [(settings, root, stage, params, n_candidates, scratch if stage == "full" else None) for stage in ("test", "full")]
        if side_by_side:
            results = run_side_by_side([(_sequence_refit, args) for args in jobs])
        else:
            results = [_sequence_refit(*args) for args in jobs]
        for stage, (recs, stage_metrics, seconds) in zip(("test", "full"), results):
            _write_candidates(settings, day, "sequence", stage, recs)
            metrics.update(stage_metrics)
            timings[stage] = seconds
            log.info("sequence/%s done in %.1fs (%s)", stage, seconds, how)
        return SequenceRecommender.load(scratch)


def _sequence_refit(settings: Settings, root: Path, stage: str, params, n_candidates: int, save_to: str | None):
    """One LSTM refit (in a worker process when side by side): candidates, the stage's metrics and seconds; the model saved to ``save_to``."""
    from recsys.models.base import load_stage

    started = time.perf_counter()
    data = load_stage(root, stage)
    users = _stage_users(data, stage)
    log.info("sequence/%s: fitting on %d sequences, recommending for %d users", stage, len(data.sequences), len(users))
    model = _fit_model("sequence", data, settings, params=params)
    recs = model.recommend(users, n_candidates)
    if save_to is not None:
        model.save(save_to)
    return recs, _stage_metrics(settings, stage, recs, data), time.perf_counter() - started


def _log_model(name: str, model, local_dir: Path) -> None:
    """Save the model locally (our own format, loadable with Model.load) and log it to MLflow."""
    import mlflow
    from mlflow.models import infer_signature

    local_dir.mkdir(parents=True, exist_ok=True)
    model.save(local_dir)
    tracking.retry_locked(mlflow.log_artifacts, str(local_dir), "recommender")
    if name == "content":
        texts = pd.Series(["example product text"])
        signature = infer_signature(texts.to_frame("text"), None)
        tracking.retry_locked(
            mlflow.sklearn.log_model, model.vectorizer, name="model", signature=signature,
            pyfunc_predict_fn="transform", pip_requirements=["scikit-learn"],
        )
    elif name == "sequence":
        import torch

        # Inputs: right-padded item and event-type index sequences; output: next-item scores.
        network = model.network.eval()
        items = torch.ones((1, 3), dtype=torch.long)
        events = torch.ones((1, 3), dtype=torch.long)
        with torch.no_grad():
            scores = network(items, events).numpy()
        signature = infer_signature({"items": items.numpy(), "events": events.numpy()}, scores)
        tracking.retry_locked(
            mlflow.pytorch.log_model, network, name="model", signature=signature, serialization_format="pickle",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
    elif name == "collaborative":
        signature = infer_signature(
            pd.DataFrame({"u": np.array([0], np.int32), "i": np.array([0], np.int32)}), pd.DataFrame({"prediction": np.array([0.0], np.float32)})
        )
        tracking.retry_locked(
            mlflow.spark.log_model, model.spark_model, "model", signature=signature, pip_requirements=["pyspark"],
        )


# ---------------------------------------------------------------------------------------------
# fuse
# ---------------------------------------------------------------------------------------------
def _load_candidates(settings: Settings, day: date, stage: str, sources) -> dict[str, pd.DataFrame]:
    return {source: pd.read_parquet(candidates_path(settings, day, source, stage)) for source in sources}


def fuse(settings: Settings, ds: str | date, parent_run_id: str, trained: list[dict]) -> dict:
    """Learn the fusion on validation candidates, evaluate everything on the held-out slice,
    and rank the full stage's candidates into the day's recommendations."""
    import mlflow

    from recsys.evaluation.plots import metrics_chart
    from recsys.features.build import feature_paths
    from recsys.fusion import rules
    from recsys.fusion.blend import FusionParams, HybridRanker, candidate_features, fill_with_fallback, top_k_per_user
    from recsys.fusion.context import add_context_features
    from recsys.fusion.explain import add_reasons
    from recsys.models.base import load_stage

    day = parse_ds(ds)
    root = feature_paths(settings, day).root
    model_names = tuple(t["model"] for t in trained)
    sources = model_names + BASELINE_NAMES
    k = settings.top_k
    n_candidates = max(settings.candidates_per_model, k)

    stages = {stage: load_stage(root, stage) for stage in STAGES}
    baselines: dict[str, dict[str, object]] = {name: {} for name in BASELINE_NAMES}
    for stage, data in stages.items():
        for name in BASELINE_NAMES:
            baselines[name][stage] = _fit_model(name, data, settings)
            recs = baselines[name][stage].recommend(_stage_users(data, stage), n_candidates)
            path = candidates_path(settings, day, name, stage)
            path.parent.mkdir(parents=True, exist_ok=True)
            recs.to_parquet(path, index=False)

    def features_for(stage: str, candidates: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
        data = stages[stage]
        candidates = candidates if candidates is not None else _load_candidates(settings, day, stage, sources)
        features = candidate_features(candidates, _item_users(data), data.interactions.groupby(USER_COL).size())
        return add_context_features(features, data.interactions, data.items)

    params = FusionParams(sources=sources, seed=settings.seed)
    val = stages["val"]
    val_candidates = _load_candidates(settings, day, "val", sources)
    val_features = features_for("val", val_candidates)
    # The re-rank is chosen on out-of-fold scores of the validation users (two folds), then the ranker is
    # refitted on the whole validation slice. The held-out slice plays no part in either.
    choice, rerank_trials = _choose_rerank(params, val, val_features, val_candidates, model_names, settings.seed)
    ranker = HybridRanker(params).fit(val_features, val.targets)

    def hybrid_for(stage: str, n: int, catalog_ids=None) -> pd.DataFrame:
        """The stage's hybrid lists, n rows a user, with the coverage floor: the top EVAL_K lists show at
        least as many products as the floor model's lists for the same users (no held-out labels used)."""
        data = stages[stage]
        ranked = rules.restrict_to_catalog(ranker.rank(features_for(stage), n_candidates), catalog_ids)
        floor = 0
        if choice.coverage_source:
            floor_lists = _load_candidates(settings, day, stage, [choice.coverage_source])[choice.coverage_source]
            floor = rules.distinct_in_top(floor_lists, _stage_users(data, stage), EVAL_K, catalog_ids)
        covered = rules.rerank(ranked, n_candidates, choice, _item_users(data), _item_category(data), floor, EVAL_K)
        return top_k_per_user(covered, n)

    # Held-out evaluation: every single model, both baselines and the hybrid on the same users and targets.
    test = stages["test"]
    test_users = _stage_users(test, "test")
    test_candidates = _load_candidates(settings, day, "test", sources)
    hybrid_test = fill_with_fallback(
        hybrid_for("test", n_candidates), test_candidates["category_popularity"], test_users, n_candidates, source="category_popularity"
    )
    hybrid_test = fill_with_fallback(hybrid_test, test_candidates["popularity"], test_users, n_candidates)
    table: dict[str, dict[str, float]] = {}
    for source, recs in {**test_candidates, HYBRID_NAME: hybrid_test}.items():
        row = {}
        for kk in (EVAL_K, k):
            row.update(_evaluate(recs, test, kk))
        table[source] = row
    _log_table(table)

    # What gets published: the full stage, every user with history gets k rows of products in today's catalog.
    full = stages["full"]
    users = _stage_users(full, "full")
    catalog_ids = rules.catalog_product_ids(settings.catalog_path)
    popular = rules.restrict_to_catalog(baselines["popularity"]["full"].recommend(users, n_candidates), catalog_ids)
    category_popular = rules.restrict_to_catalog(baselines["category_popularity"]["full"].recommend(users, n_candidates), catalog_ids)
    published = fill_with_fallback(hybrid_for("full", k, catalog_ids), category_popular, users, k, source="category_popularity")
    published = fill_with_fallback(published, popular, users, k)
    # Users whose first events are today: session context (what their items co-occur with, what is
    # popular lately in their categories) instead of models that saw one day of them.
    today = rules.cold_users(full.interactions, pd.Timestamp(day, tz="UTC"))
    cooccurrence = _load_full_model(settings, day, "cooccurrence") if "cooccurrence" in model_names else None
    if len(today):
        cold = rules.session_context(
            today, k, cooccurrence,
            category_popular[category_popular[USER_COL].isin(today[USER_COL])], popular[popular[USER_COL].isin(today[USER_COL])],
            catalog_ids=catalog_ids,
        )
        published = pd.concat([published[~published[USER_COL].isin(today[USER_COL])], cold], ignore_index=True)
        published = published.sort_values([USER_COL, RANK_COL]).reset_index(drop=True)
        log.info("%d cold user(s) with events only on %s got session-context recommendations", today[USER_COL].nunique(), day)
    published = add_reasons(published, full.items, full.sequences, cooccurrence=cooccurrence)
    out_dir = run_dir(settings, day)
    out_dir.mkdir(parents=True, exist_ok=True)
    recommendations_path = out_dir / "recommendations.parquet"
    published[[USER_COL, RANK_COL, ITEM_COL, SCORE_COL, "sources", "reason"]].to_parquet(recommendations_path, index=False)
    chart_path = metrics_chart(table, out_dir / "model_comparison.png", metrics=(f"ndcg@{EVAL_K}", f"hr@{EVAL_K}", f"recall@{EVAL_K}", f"coverage@{EVAL_K}"))

    with tracking.child_run(settings, parent_run_id, HYBRID_NAME, tags={"ds": day.isoformat()}) as run:
        tracking.retry_locked(
            mlflow.log_params,
            {**{k_: str(v) for k_, v in asdict(params).items()}, "rerank_strength": choice.strength,
             "rerank_max_per_category": choice.max_per_category, "coverage_floor_model": choice.coverage_source or "none",
             "rerank_search": json.dumps(rerank_trials)},
        )
        tracking.retry_locked(mlflow.log_metrics, {f"test_{key}": v for key, v in tracking.metric_keys(table[HYBRID_NAME]).items()})
        tracking.retry_locked(mlflow.log_artifact, str(chart_path))
        tracking.retry_locked(mlflow.log_dict, table, "evaluation_table.json")
        model_dir = out_dir / "models" / HYBRID_NAME
        ranker.save(model_dir)
        tracking.retry_locked(mlflow.log_artifacts, str(model_dir), "recommender")
        _log_ranker(ranker)
        fusion_run_id = run.info.run_id
    for name in BASELINE_NAMES:
        with tracking.child_run(settings, parent_run_id, name, tags={"ds": day.isoformat(), "baseline": "true"}):
            tracking.retry_locked(mlflow.log_params, asdict(baselines[name]["test"].params))
            tracking.retry_locked(mlflow.log_metrics, {f"test_{key}": v for key, v in tracking.metric_keys(table[name]).items()})
    # The parent carries the comparison too, so the runs list lines the days up side by side.
    tracking.log_to_run(
        settings,
        parent_run_id,
        metrics={f"{name}_{key}": v for name, row in table.items() for key, v in tracking.metric_keys(row).items()},
    )
    tracking.configure(settings)
    tracking.retry_locked(mlflow.tracking.MlflowClient().log_artifact, parent_run_id, str(chart_path))
    return {
        "recommendations_path": str(recommendations_path),
        "users": int(len(users)),
        "rows": int(len(published)),
        "cold_users": int(today[USER_COL].nunique()),
        "mlflow_fusion_run_id": fusion_run_id,
        "evaluation": table,
        "chart": str(chart_path),
    }


def _item_users(data) -> pd.Series:
    return data.interactions.groupby(ITEM_COL)[USER_COL].nunique()


def _item_category(data) -> pd.Series:
    return data.items.set_index(ITEM_COL)["top_category"]


def _load_full_model(settings: Settings, day: date, name: str):
    """The full-stage model that ``train_model`` saved for ``name`` (None when it is not there)."""
    path = run_dir(settings, day) / "models" / name
    if not path.is_dir():
        log.warning("no saved %s model at %s: cold users get category popularity only", name, path)
        return None
    if name == "cooccurrence":
        from recsys.models.cooccurrence import CooccurrenceRecommender

        return CooccurrenceRecommender.load(path)
    raise ValueError(f"no loader for {name!r}")


def _choose_rerank(params, val, val_features: pd.DataFrame, val_candidates: dict, model_names, seed: int):
    """Choose the re-rank on out-of-fold ranker scores of the validation users (two seeded folds).

    Each fold's candidates are scored by a ranker fitted on the other fold, so every validation user
    has scores from a ranker that never learned from them, and NDCG after the coverage floor is
    measured over all of them. The held-out slice plays no part.
    """
    from recsys.fusion import rules
    from recsys.fusion.blend import HybridRanker

    users = np.unique(val.targets[USER_COL].to_numpy(np.int64))
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(users.tolist(), rng.permutation(len(users)) % 2))
    feature_fold = val_features[USER_COL].map(fold_of)
    truth_fold = val.targets[USER_COL].map(fold_of)
    scored = []
    for fold in (0, 1):
        try:
            ranker = HybridRanker(params).fit(val_features[feature_fold != fold], val.targets[truth_fold != fold])
        except ValueError as exc:  # too few validation users to split: keep the plain learned order
            log.warning("re-rank not tuned (%s): the learned order is used as is", exc)
            return rules.RerankChoice(), []
        held = val_features[feature_fold == fold]
        scored.append(ranker.rank(held, max(len(held), 1)))
    singles = {name: val_candidates[name] for name in model_names}
    return rules.choose_rerank(
        pd.concat(scored, ignore_index=True), val.targets, singles, _item_users(val), _item_category(val), len(val.items),
    )


def _log_ranker(ranker) -> None:
    """The fusion ranker as an MLflow scikit-learn model whose signature names its feature columns."""
    import mlflow
    from mlflow.models import infer_signature

    from recsys.fusion.blend import feature_columns

    columns = feature_columns(ranker.params.sources)
    example = pd.DataFrame(np.zeros((1, len(columns)), dtype=np.float32), columns=columns)
    signature = infer_signature(example, np.zeros(1, dtype=np.int64))
    tracking.retry_locked(
        mlflow.sklearn.log_model, ranker.model, name="model", signature=signature, pip_requirements=["scikit-learn"],
        # We wrote this model ourselves a moment ago: its tree nodes are trusted.
        skops_trusted_types=["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"],
    )


def _log_table(table: dict[str, dict[str, float]]) -> None:
    keys = [f"ndcg@{EVAL_K}", f"hr@{EVAL_K}", f"recall@{EVAL_K}", f"map@{EVAL_K}", f"coverage@{EVAL_K}"]
    lines = ["held-out evaluation:", f"{'model':<14}" + "".join(f"{k:>14}" for k in keys)]
    for name, row in table.items():
        lines.append(f"{name:<14}" + "".join(f"{row.get(k, float('nan')):>14.4f}" for k in keys))
    log.info("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# publish
# ---------------------------------------------------------------------------------------------
#: how many standard errors of the day-to-day difference a drop below the champion may be and still be noise
GATE_STANDARD_ERRORS = 2.0


def check_quality_gate(settings: Settings, evaluation: dict[str, dict[str, float]]) -> None:
    """Publish only a hybrid at least as good as popularity and not much worse than the champion.

    The champion was scored on another day's held-out slice, another sample of users, so the two
    NDCG@10 means differ by noise alone: by about sqrt(se_today² + se_champion²) (each mean's standard
    error over its users). A drop counts as a regression only when it goes below the champion's value
    less ``RECSYS_CHAMPION_TOLERANCE`` and less ``GATE_STANDARD_ERRORS`` of that noise. On a few
    hundred held-out users the noise is several percent of NDCG; on tens of thousands it vanishes and
    the tolerance alone decides.
    """
    key = f"ndcg@{EVAL_K}"
    hybrid, popularity = evaluation[HYBRID_NAME][key], evaluation["popularity"][key]
    if hybrid < popularity:
        raise QualityGateError(
            f"quality gate: hybrid NDCG@{EVAL_K} {hybrid:.4f} is below the popularity baseline's {popularity:.4f} on the "
            "held-out slice; nothing is published and the previous partitions stay as they are. Inspect the MLflow runs."
        )
    champion = tracking.champion_metric(settings)
    if champion is None:
        log.info("quality gate passed: hybrid %.4f vs popularity %.4f (no champion yet)", hybrid, popularity)
        return
    standard_error = evaluation[HYBRID_NAME][f"ndcg_se@{EVAL_K}"]
    noise = GATE_STANDARD_ERRORS * math.hypot(standard_error, champion.standard_error)
    floor = champion.value * (1.0 - settings.champion_tolerance) - noise
    figures = (
        f"hybrid NDCG@{EVAL_K} {hybrid:.4f} ± {standard_error:.4f}; floor {floor:.4f} = the champion's "
        f"{champion.value:.4f} ± {champion.standard_error:.4f} (recsys_hybrid version {champion.version}, run "
        f"{champion.run_id}) less {settings.champion_tolerance:.0%} less {GATE_STANDARD_ERRORS:g} standard errors of "
        f"the day-to-day difference ({noise:.4f})"
    )
    if hybrid < floor:
        raise QualityGateError(
            f"quality gate: {figures}; the hybrid is below the floor and nothing is published. Inspect the MLflow runs; "
            "raise RECSYS_CHAMPION_TOLERANCE if the data changed on purpose."
        )
    log.info("quality gate passed: %s; popularity %.4f", figures, popularity)


def publish(
    settings: Settings,
    ds: str | date,
    warehouse_uri: str,
    fused: dict,
    validation: dict,
    features: dict,
    airflow_run_id: str,
    parent_run_id: str,
) -> dict:
    """Replace the day's partition in the warehouse and record the run, in one transaction."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recsys.warehouse.writer import open_warehouse

    day = parse_ds(ds)
    check_quality_gate(settings, fused["evaluation"])
    # Read as Arrow, not pandas: the writer checks and loads an Arrow table as it is, whereas a DataFrame's text
    # columns (Python objects) must be converted back to Arrow first, most of what publishing to DuckDB cost
    # beyond the bulk load itself. The fuse task writes every contract column but run_id.
    fused_table = pq.read_table(fused["recommendations_path"])
    recommendations = fused_table.append_column("run_id", pa.repeat(airflow_run_id, fused_table.num_rows))
    run_record = {
        "airflow_run_id": airflow_run_id,
        "mlflow_run_id": parent_run_id,
        "raw_rows": validation["raw_rows"],
        "clean_rows": validation["clean_rows"],
        "quarantined_rows": validation["quarantined_rows"],
        "users": fused["users"],
        "items": features["items"],
        "published_rows": len(recommendations),
        "metrics": fused["evaluation"],
    }
    with open_warehouse(warehouse_uri) as warehouse:
        warehouse.ensure_schema()
        published = warehouse.publish_partition(day, recommendations, run_record)
    champion_version = tracking.promote_champion(settings, fused["mlflow_fusion_run_id"], ds=day.isoformat())
    tracking.log_to_run(
        settings, parent_run_id, metrics={"published_rows": published},
        tags={"warehouse": _redact(warehouse_uri), "champion_version": champion_version},
    )
    tracking.finish_parent_run(settings, parent_run_id)
    summary = {
        "ds": day.isoformat(),
        "warehouse": _redact(warehouse_uri),
        "published_rows": published,
        "users": fused["users"],
        "raw_rows": validation["raw_rows"],
        "clean_rows": validation["clean_rows"],
        "quarantined_rows": validation["quarantined_rows"],
        "quarantine_path": validation.get("quarantine_path"),
        "data_docs": validation.get("docs_page"),
        "evaluation": fused["evaluation"],
        "chart": fused.get("chart"),
        "mlflow_parent_run_id": parent_run_id,
        "mlflow_tracking_uri": _redact(settings.tracking_uri),
    }
    (run_dir(settings, day) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _redact(uri: str) -> str:
    """Hide a password in a URI before it is logged or stored."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri
