"""The incremental feature build (stored daily partials, combined) equals the one-shot build, table by table.

A generated landing zone, validated with the real validate_days / validate_day (Great Expectations), plus a
few hand-made users whose activity spans midnight. Real local Spark; nothing mocked.

Equality: every feature table has the same rows; the only float column, ``interactions.weight``, is
compared with a relative tolerance of 1e-9 (the two paths sum the same decayed terms in a different
order and factorisation; the observed difference is ~1e-15 relative). Everything else is exact.
"""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest

pytest.importorskip("pyspark")
pytest.importorskip("great_expectations")

from pyspark.testing import assertDataFrameEqual  # noqa: E402

from recsys.config import Settings  # noqa: E402
from recsys.constants import STAGES  # noqa: E402
from recsys.data.synthetic import GeneratorConfig, generate  # noqa: E402
from recsys.features.build import build_features, feature_paths, partial_store  # noqa: E402
from recsys.quality.validation import ValidationReport, validate_day, validate_days  # noqa: E402

pytestmark = pytest.mark.spark

END = date(2026, 3, 10)
DAYS = 9
START = END - timedelta(days=DAYS - 1)
MIDDLE = START + timedelta(days=3)  # the day backfilled with changed data; in the val history
RTOL = 1e-9

# Hand-made users whose events cross midnight into MIDDLE (user ids far from the generated ones).
MIDNIGHT_USERS = (990001, 990002, 990003, 990004)


def _midnight_rows(products: list[int]) -> dict[date, list[str]]:
    """CSV lines per day. P1..P5 are catalog products."""
    p1, p2, p3, p4, p5 = products[:5]
    before, day, after = MIDDLE - timedelta(days=1), MIDDLE, MIDDLE + timedelta(days=1)

    def row(d: date, clock: str, event_type: str, product: int, user: int, session: str) -> str:
        return f"{d.isoformat()} {clock} UTC,{event_type},{product},2053013555631882655,electronics.smartphone,apple,10.00,{user},{session}"

    return {
        before: [
            row(before, "23:50:00", "view", p1, 990001, "mid-a"),  # session and step continue after midnight
            row(before, "23:59:00", "view", p3, 990002, "mid-b"),  # a run of p3 over three days
            row(before, "23:45:00", "view", p5, 990003, "mid-c"),  # 31 minutes to the next event: new session
            row(before, "23:59:50", "view", p4, 990004, "mid-d"),  # user_session changes at midnight
        ],
        day: [
            row(day, "00:10:00", "cart", p1, 990001, "mid-a"),
            row(day, "00:15:00", "view", p2, 990001, "mid-a"),
            row(day, "00:00:30", "view", p3, 990002, "mid-b"),
            row(day, "23:59:30", "view", p3, 990002, "mid-b"),
            row(day, "00:16:01", "view", p5, 990003, "mid-c"),
            row(day, "00:00:05", "view", p4, 990004, "mid-e"),
        ],
        after: [
            row(after, "00:00:10", "purchase", p3, 990002, "mid-b"),
            row(after, "00:05:00", "view", p4, 990002, "mid-b"),
        ],
    }


def _validate(spark, data_dir: Path, day: date) -> None:
    validate_day(
        spark, day, data_dir / "raw" / "events", data_dir / "clean" / "events", data_dir / "quarantine",
        data_dir / "quality" / "reports", max_quarantine_fraction=0.05,
    )


@pytest.fixture(scope="module")
def landing(tmp_path_factory, spark):
    """A validated landing zone (raw, clean, catalog) shared read-only by the tests: each copies it."""
    data_dir = tmp_path_factory.mktemp("incremental") / "data"
    generate(data_dir, GeneratorConfig(users=250, products=100, days=DAYS, seed=11, end_date=END))
    products = [int(line.split(",")[0]) for line in (data_dir / "raw" / "catalog" / "products.csv").read_text().splitlines()[1:6]]
    for day, rows in _midnight_rows(products).items():
        with open(data_dir / "raw" / "events" / f"ds={day.isoformat()}" / "events.csv", "a") as handle:
            handle.write("\n".join(rows) + "\n")
    days = [START + timedelta(days=offset) for offset in range(DAYS)]
    outcomes = validate_days(
        spark, days, data_dir / "raw" / "events", data_dir / "clean" / "events", data_dir / "quarantine",
        data_dir / "quality" / "reports", max_quarantine_fraction=0.05,
    )
    assert all(isinstance(outcome, ValidationReport) for outcome in outcomes.values()), outcomes
    return {"dir": data_dir, "products": products}


def _settings(data_dir: Path, **overrides) -> Settings:
    return Settings(data_dir=data_dir, spark_master="local[2]", spark_shuffle_partitions=2, **overrides)


def _copy(landing, tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    shutil.copytree(landing["dir"], data_dir)
    return data_dir


TABLES = ["items"] + [f"{stage}/{table}" for stage in STAGES for table in ("interactions", "sequences", "seen", "targets")
                      if not (stage == "full" and table == "targets")]


def assert_same_features(spark, actual: dict, expected: dict) -> None:
    """Same summary counts and the same rows in every table (weights within RTOL)."""
    ignore = {"mode", "partials", "root"}
    assert {k: v for k, v in actual.items() if k not in ignore} == {k: v for k, v in expected.items() if k not in ignore}
    for table in TABLES:
        left = spark.read.parquet(str(Path(actual["root"]) / table))
        right = spark.read.parquet(str(Path(expected["root"]) / table))
        assert left.count() > 0, table
        assertDataFrameEqual(left, right, rtol=RTOL, atol=0.0)


def _set_aside(summary: dict, tmp_path: Path) -> dict:
    """Move a build's output aside (the next build of the same day replaces the day's features)."""
    moved = tmp_path / f"{summary['mode']}-{len(list(tmp_path.iterdir()))}"
    shutil.move(summary["root"], moved)
    return {**summary, "root": str(moved)}


def _reference(spark, settings: Settings, ds: date, tmp_path: Path) -> dict:
    """The one-shot build over the clean events (no partials): what the incremental build must equal."""
    return _set_aside(build_features(spark, settings, ds, mode="reference"), tmp_path)


def test_daily_incremental_runs_build_one_new_day_and_equal_the_full_rebuild(spark, landing, tmp_path):
    data_dir = _copy(landing, tmp_path)
    settings = _settings(data_dir)
    days = [END - timedelta(days=2), END - timedelta(days=1), END]

    built = [build_features(spark, settings, ds)["partials"]["built"] for ds in days]

    assert built[0] == [(START + timedelta(days=i)).isoformat() for i in range(DAYS - 2)]
    assert built[1] == [days[1].isoformat()] and built[2] == [END.isoformat()]
    incremental = _set_aside(json.loads(feature_paths(settings, END).summary.read_text()), tmp_path)
    assert incremental["partials"] == {"built": [END.isoformat()], "reused": DAYS - 1}
    assert incremental["days"] == DAYS
    reference = _reference(spark, settings, END, tmp_path)
    assert_same_features(spark, incremental, reference)

    # Rebuilding every partial gives the same tables again.
    rebuilt = build_features(spark, settings, END, mode="rebuild")
    assert rebuilt["partials"] == {"built": [(START + timedelta(days=i)).isoformat() for i in range(DAYS)], "reused": 0}
    assert_same_features(spark, rebuilt, reference)


def test_runs_spanning_midnight_are_one_step_and_sessions_spanning_midnight_count_once(spark, landing, tmp_path):
    data_dir = _copy(landing, tmp_path)
    settings = _settings(data_dir)
    p1, p2, p3, p4, p5 = landing["products"][:5]

    summary = build_features(spark, settings, END)

    sequences = {
        row.user_id: (list(row.product_ids), list(row.event_types))
        for row in spark.read.parquet(str(feature_paths(settings, END).stage("full", "sequences"))).collect()
        if row.user_id in MIDNIGHT_USERS
    }
    assert sequences == {
        990001: ([p1, p2], ["cart", "view"]),  # view 23:50 + cart 00:10 of p1: one step, the stronger type
        990002: ([p3, p4], ["purchase", "view"]),  # p3 on three days in a row: one step
        990003: ([p5], ["view"]),
        990004: ([p4], ["view"]),
    }
    # Cut per day, the hand-made users have 4 + 5 + 1 = 10 sessions. Over the window 990001 has 1,
    # 990002 has 2 (each crosses a midnight), 990003 and 990004 have 2 each: 7, three fewer.
    store = partial_store(settings)
    per_day = spark.read.option("basePath", str(store.table("sessions"))).parquet(str(store.table("sessions")))
    naive = per_day.groupBy().sum("n_sessions").first()[0]
    midnight = per_day.filter(per_day.user_id.isin(*MIDNIGHT_USERS)).groupBy().sum("n_sessions").first()[0]
    assert midnight == 10
    assert summary["sessions"] <= naive - 3
    assert summary["sessions"] == _reference(spark, settings, END, tmp_path)["sessions"]


def test_backfill_of_a_middle_day_rewrites_only_that_days_partials_and_stays_equal(spark, landing, tmp_path):
    data_dir = _copy(landing, tmp_path)
    settings = _settings(data_dir)
    build_features(spark, settings, END)
    store = partial_store(settings)
    untouched = {d: store.manifest(d).read_text() for d in (START, END)}

    # Changed data for MIDDLE: a third of its rows dropped, a new user added; re-validated (backfill).
    raw = data_dir / "raw" / "events" / f"ds={MIDDLE.isoformat()}" / "events.csv"
    lines = raw.read_text().splitlines()
    kept = [line for i, line in enumerate(lines[1:]) if i % 3 != 1]
    kept.append(f"{MIDDLE.isoformat()} 12:00:00 UTC,purchase,{landing['products'][0]},2053013555631882655,,,5.00,990100,new")
    raw.write_text("\n".join([lines[0], *kept]) + "\n")
    _validate(spark, data_dir, MIDDLE)
    # And exact duplicates landed in the clean partition of another day (deduplication must hold).
    duplicated = START + timedelta(days=1)
    folder = data_dir / "clean" / "events" / f"ds={duplicated.isoformat()}"
    first = sorted(folder.glob("*.parquet"))[0]
    shutil.copy(first, folder / f"dup-{first.name}")

    incremental = _set_aside(build_features(spark, settings, END), tmp_path)

    assert incremental["partials"] == {"built": sorted([duplicated.isoformat(), MIDDLE.isoformat()]), "reused": DAYS - 2}
    assert {d: store.manifest(d).read_text() for d in (START, END)} == untouched
    assert_same_features(spark, incremental, _reference(spark, settings, END, tmp_path))


def test_partials_depending_on_a_changed_setting_are_recomputed(spark, landing, tmp_path):
    data_dir = _copy(landing, tmp_path)
    build_features(spark, _settings(data_dir), END)

    again = build_features(spark, _settings(data_dir), END)
    changed = build_features(spark, _settings(data_dir, half_life_days=7.0), END)

    assert again["partials"]["built"] == []
    assert len(changed["partials"]["built"]) == DAYS


def test_a_window_too_short_for_the_stages_is_a_verdict_naming_what_to_change(spark, landing, tmp_path):
    from recsys.errors import NOT_RETRYABLE, FeatureBuildError

    settings = _settings(_copy(landing, tmp_path))
    # Four days of events (START..START+3) for two validation and two test days: the val stage has no history.
    with pytest.raises(FeatureBuildError, match=r"stage 'val' has 0 training interactions") as short:
        build_features(spark, settings, START + timedelta(days=3))
    assert "more than 4 days of events" in str(short.value) and "RECSYS_VAL_DAYS" in str(short.value)
    # A day before anything was validated: the message names the folder and the task to run first.
    with pytest.raises(FeatureBuildError, match=r"no clean events in .*clean/events.*Run validate_raw") as empty:
        build_features(spark, settings, START - timedelta(days=settings.lookback_days + 1))
    # Verdicts: the DAG's retry policy fails the task at once on them (tests/dags/test_dag_policy.py).
    assert isinstance(short.value, NOT_RETRYABLE) and isinstance(empty.value, NOT_RETRYABLE)
