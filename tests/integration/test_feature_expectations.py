"""Feature-level expectations on real build output (synthetic data -> validate_days -> build_features).

The untouched build must pass every expectation; then one table on disk is corrupted the way a bug
upstream would (an unknown product, a zero weight, a duplicated pair, a cold target user, a sequence
cut wrong, a summary from other settings) and ``check_features`` must fail with a message that names
the table, the column, the rule, the count and what to do.
"""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyspark")
pytest.importorskip("great_expectations")

from recsys.config import Settings  # noqa: E402
from recsys.constants import STAGES  # noqa: E402
from recsys.quality.features import FeatureQualityError, check_features  # noqa: E402

pytestmark = pytest.mark.spark

END_DATE = date(2024, 3, 31)
DAYS = 8


def _settings(data_dir: Path) -> Settings:
    # The `settings` fixture's pattern, built here because the build is shared by the whole module.
    return Settings(data_dir=data_dir, spark_master="local[2]", spark_shuffle_partitions=2)


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory) -> tuple[Settings, Path]:
    """One real feature build for ds = END_DATE, made once; tests copy it before corrupting it."""
    from recsys.data.synthetic import GeneratorConfig, generate
    from recsys.features.build import build_features, feature_paths
    from recsys.quality.validation import ValidationReport, validate_days

    settings = _settings(tmp_path_factory.mktemp("features") / "data")
    generate(settings.data_dir, GeneratorConfig(users=400, products=90, days=DAYS, seed=11, end_date=END_DATE, bad_rows_fraction=0.002))
    outcomes = validate_days(
        spark, [END_DATE - timedelta(days=offset) for offset in range(DAYS - 1, -1, -1)], settings.raw_events_dir,
        settings.clean_events_dir, settings.quarantine_dir, settings.data_dir / "quality" / "reports",
        settings.quarantine_max_fraction,
    )
    for report in outcomes.values():
        assert isinstance(report, ValidationReport), report
        assert report.raw_rows == report.clean_rows + report.quarantined_rows
    build_features(spark, settings, END_DATE)
    return settings, feature_paths(settings, END_DATE).root


@pytest.fixture
def features(built, tmp_path) -> tuple[Settings, Path]:
    """A private copy of the built feature folder (same ds=… name) to corrupt."""
    settings, root = built
    copy = tmp_path / "features" / root.name
    shutil.copytree(root, copy)
    return settings, copy


def rewrite(table_dir: Path, frame: pd.DataFrame) -> None:
    """Replace a Spark-written Parquet table with one pandas-written file of the same columns."""
    shutil.rmtree(table_dir)
    table_dir.mkdir()
    frame.to_parquet(table_dir / "part-00000.parquet", index=False)


def failure_of(settings: Settings, root: Path) -> str:
    with pytest.raises(FeatureQualityError) as info:
        check_features(root, settings)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# the real build passes
# ---------------------------------------------------------------------------------------------
def test_real_build_passes_every_expectation(built):
    settings, root = built
    results = check_features(root, settings)
    assert results and all(r["success"] for r in results.values()), [r for r in results.values() if not r["success"]]
    # Every promised rule ran, on every stage.
    for stage in STAGES:
        for rule in ("product_in_items", "weight_positive", "user_id_present", "product_id_present", "user_product_unique",
                     "history_before_cutoff", "row_count_as_in_summary"):
            assert f"{stage}/interactions:{rule}" in results, (stage, rule)
        for rule in ("product_ids_and_event_types_equal_length", "length_within_max", "length_matches_product_ids"):
            assert f"{stage}/sequences:{rule}" in results, (stage, rule)
        assert f"{stage}/sequences (product steps):product_in_items" in results
    for stage in ("val", "test"):
        for rule in ("product_in_items", "target_user_has_history", "target_is_new_to_user", "user_product_unique"):
            assert f"{stage}/targets:{rule}" in results, (stage, rule)
    assert "summary.json (stages):history_cutoff_as_configured" in results
    # Results are counted on the real tables, and JSON-able (they go to XCom / MLflow).
    summary = json.loads((root / "summary.json").read_text())
    assert results["test/interactions:weight_positive"]["element_count"] == summary["test"]["interactions"]
    assert results["test/interactions:weight_positive"]["unexpected_count"] == 0
    assert results["items:row_count_as_in_summary"]["observed_value"] == summary["items"]
    json.dumps(results)


# ---------------------------------------------------------------------------------------------
# corruptions fail with the right message
# ---------------------------------------------------------------------------------------------
def test_interaction_with_unknown_product_fails(features):
    settings, root = features
    table = root / "test" / "interactions"
    frame = pd.read_parquet(table)
    stranger = frame.iloc[[0]].copy()
    stranger["product_id"] = 999_999_999
    rewrite(table, pd.concat([frame, stranger], ignore_index=True))
    message = failure_of(settings, root)
    assert "test/interactions, column product_id, rule product_in_items: 1 of" in message
    assert "999999999" in message  # the offending id is quoted
    assert "Re-run build_features" in message
    # The added row is also one more than summary.json recorded.
    assert "test/interactions, column (rows), rule row_count_as_in_summary" in message
    assert "val/interactions" not in message  # only the corrupted table fails


def test_zero_weight_and_duplicate_pair_fail(features):
    settings, root = features
    table = root / "val" / "interactions"
    frame = pd.read_parquet(table)
    frame.loc[frame.index[:3], "weight"] = 0.0
    frame = pd.concat([frame.iloc[:-1], frame.iloc[[5]]], ignore_index=True)  # same row count, one pair twice
    rewrite(table, frame)
    message = failure_of(settings, root)
    assert "val/interactions, column weight, rule weight_positive: 3 of" in message
    assert "must be > 0" in message
    assert "val/interactions, column user_id, product_id, rule user_product_unique: 2 of" in message
    assert "row_count_as_in_summary" not in message


def test_target_user_without_history_fails(features):
    settings, root = features
    table = root / "val" / "targets"
    frame = pd.read_parquet(table)
    cold = frame.iloc[[0]].copy()
    cold["user_id"] = 424_242_424_242
    rewrite(table, pd.concat([frame, cold], ignore_index=True))
    message = failure_of(settings, root)
    assert "val/targets, column user_id, rule target_user_has_history: 1 of" in message
    assert "warm users only" in message and "424242424242" in message


def test_target_already_seen_fails(features):
    settings, root = features
    seen = pd.read_parquet(root / "test" / "seen")
    table = root / "test" / "targets"
    frame = pd.read_parquet(table)
    rewrite(table, pd.concat([frame.iloc[1:], seen.iloc[[0]][["user_id", "product_id"]]], ignore_index=True))
    message = failure_of(settings, root)
    assert "test/targets, column product_id, rule target_is_new_to_user: 1 of" in message


def test_sequences_of_unequal_or_too_long_length_fail(features):
    settings, root = features
    table = root / "full" / "sequences"
    frame = pd.read_parquet(table)
    frame["product_ids"] = frame["product_ids"].map(list)
    frame["event_types"] = frame["event_types"].map(list)
    frame.at[0, "event_types"] = frame.at[0, "event_types"][:-1] if len(frame.at[0, "event_types"]) > 1 else []
    long_ids = list(np.resize(np.asarray(frame.at[1, "product_ids"]), settings.sequence_length + 5))
    frame.at[1, "product_ids"] = long_ids
    frame.at[1, "event_types"] = ["view"] * len(long_ids)
    frame.at[1, "length"] = len(long_ids)
    rewrite(table, frame)
    message = failure_of(settings, root)
    assert "full/sequences, column product_ids, event_types, rule product_ids_and_event_types_equal_length: 1 of" in message
    assert "full/sequences, column product_ids, rule length_within_max: 1 of" in message
    assert f"1..{settings.sequence_length} steps" in message


def test_summary_from_other_settings_fails(built, features):
    settings, root = features
    # The same tables checked against other split settings: the recorded boundaries no longer match.
    other = Settings(data_dir=settings.data_dir, val_days=3, test_days=2)
    message = failure_of(other, root)
    assert "summary.json (stages), column history_end_exclusive, rule history_cutoff_as_configured: 1 of 3" in message
    assert "RECSYS_VAL_DAYS=3" in message
    # And a summary.json edited to claim other boundaries fails against the real settings.
    summary = json.loads((root / "summary.json").read_text())
    summary["test"]["history_end_exclusive"] = "2024-03-29"
    (root / "summary.json").write_text(json.dumps(summary))
    message = failure_of(settings, root)
    assert "history_cutoff_as_configured: 1 of 3" in message


def test_leaked_history_fails(features):
    settings, root = features
    table = root / "val" / "interactions"
    frame = pd.read_parquet(table)
    frame["last_event_time"] = pd.to_datetime(frame["last_event_time"], utc=True)
    frame.loc[frame.index[0], "last_event_time"] = pd.Timestamp(END_DATE, tz="UTC")  # a day of the scored slice
    rewrite(table, frame)
    message = failure_of(settings, root)
    assert "val/interactions, column last_event_time, rule history_before_cutoff: 1 of" in message


def test_missing_table_and_wrong_folder(features, tmp_path):
    settings, root = features
    shutil.rmtree(root / "test" / "targets")
    with pytest.raises(FeatureQualityError, match=r"feature table test/targets is missing: .* does not exist .*Re-run build_features"):
        check_features(root, settings)
    with pytest.raises(FeatureQualityError, match=r"not a feature folder of one day"):
        check_features(tmp_path, settings)
