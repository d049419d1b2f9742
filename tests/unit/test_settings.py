"""Settings from the environment: the knobs added for operations."""

from __future__ import annotations

import pytest

from recsys.config import load_settings
from recsys.pipeline import ALS_GRID, _search_als


def test_als_trials_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RECSYS_ALS_TRIALS", "1")
    assert load_settings().als_trials == 1
    monkeypatch.delenv("RECSYS_ALS_TRIALS")
    assert load_settings().als_trials == 3 == len(ALS_GRID)  # the documented default: the whole grid


@pytest.mark.parametrize("trials", [0, len(ALS_GRID) + 1])
def test_als_trials_outside_the_grid_is_a_clear_error(settings, trials):
    with pytest.raises(ValueError, match=rf"RECSYS_ALS_TRIALS={trials}: must be between 1 and {len(ALS_GRID)}"):
        _search_als(settings.with_overrides(als_trials=trials), spark=None, data=None)
