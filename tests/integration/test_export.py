"""The export behind recsys_export_latest: a published day read back from DuckDB into one Parquet file."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from recsys.export import export_partition
from recsys.warehouse.writer import open_warehouse
from tests.integration.test_warehouse import make_recommendations, run_record, sorted_frame


@pytest.fixture
def warehouse_uri(tmp_path):
    uri = f"duckdb://{tmp_path / 'warehouse.duckdb'}"
    with open_warehouse(uri) as warehouse:
        warehouse.ensure_schema()
        warehouse.publish_partition("2024-03-01", make_recommendations(n_users=6, k=3, seed=1, run_id="a"), run_record())
        warehouse.publish_partition("2024-03-02", make_recommendations(n_users=4, k=3, seed=2, run_id="b"), run_record())
    return uri


def test_export_writes_the_day_and_points_latest_at_it(warehouse_uri, tmp_path):
    exports = tmp_path / "exports"
    summary = export_partition(warehouse_uri, "2024-03-02", exports)

    written = pd.read_parquet(exports / "ds=2024-03-02" / "recommendations.parquet")
    expected = sorted_frame(make_recommendations(n_users=4, k=3, seed=2, run_id="b"))
    pd.testing.assert_frame_equal(written, expected)
    assert summary == {"ds": "2024-03-02", "rows": 12, "users": 4, "path": str(exports / "ds=2024-03-02" / "recommendations.parquet")}
    assert json.loads((exports / "latest.json").read_text())["ds"] == "2024-03-02"
    assert not list(exports.rglob("*.tmp"))  # written under a temp name, then renamed


def test_exporting_an_older_day_does_not_move_latest_back(warehouse_uri, tmp_path):
    exports = tmp_path / "exports"
    export_partition(warehouse_uri, "2024-03-02", exports)
    export_partition(warehouse_uri, "2024-03-01", exports)  # a backfill of an older day

    assert json.loads((exports / "latest.json").read_text())["ds"] == "2024-03-02"
    assert len(pd.read_parquet(exports / "ds=2024-03-01" / "recommendations.parquet")) == 18


def test_a_day_that_was_never_published_is_a_clear_error(warehouse_uri, tmp_path):
    with pytest.raises(ValueError, match=r"no recommendations for ds=2024-03-09 .* re-run recsys_daily's publish"):
        export_partition(warehouse_uri, "2024-03-09", tmp_path / "exports")
    assert not (tmp_path / "exports" / "ds=2024-03-09").exists()
