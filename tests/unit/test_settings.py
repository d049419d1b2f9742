"""Settings from the environment: the knobs added for operations."""

from __future__ import annotations

import os

import pytest

from recsys.config import load_settings
from recsys.features.spark import master_slots, session_cores
from recsys.pipeline import ALS_GRID, _search_als


def test_als_trials_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RECSYS_ALS_TRIALS", "1")
    assert load_settings().als_trials == 1
    monkeypatch.delenv("RECSYS_ALS_TRIALS")
    assert load_settings().als_trials == 3 == len(ALS_GRID)  # the documented default: the whole grid


def test_spark_quick_jit_threshold_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("RECSYS_SPARK_QUICK_JIT_MAX_MB", raising=False)
    assert load_settings().spark_quick_jit_max_mb == 32.0
    monkeypatch.setenv("RECSYS_SPARK_QUICK_JIT_MAX_MB", "0")
    assert load_settings().spark_quick_jit_max_mb == 0.0
    monkeypatch.setenv("RECSYS_SPARK_QUICK_JIT_MAX_MB", "lots")
    with pytest.raises(ValueError, match="RECSYS_SPARK_QUICK_JIT_MAX_MB='lots' must be a number"):
        load_settings()


@pytest.mark.parametrize("trials", [0, len(ALS_GRID) + 1])
def test_als_trials_outside_the_grid_is_a_clear_error(settings, trials):
    with pytest.raises(ValueError, match=rf"RECSYS_ALS_TRIALS={trials}: must be between 1 and {len(ALS_GRID)}"):
        _search_als(settings.with_overrides(als_trials=trials), spark=None, data=None)


@pytest.mark.parametrize(
    ("master", "slots"),
    [("local", 1), ("local[2]", 2), ("local[3, 2]", 3), ("local[*]", os.cpu_count()), ("spark://127.0.0.1:7077", 8)],
)
def test_master_slots_reads_local_threads_and_falls_back_to_parallelism_on_a_cluster(master, slots):
    assert master_slots(master, default_parallelism=8) == slots


def test_session_cores_of_the_real_test_session(spark):
    assert spark.sparkContext.master == "local[2]"
    assert session_cores(spark) == 2
