"""Validation of one raw day end to end (files in tmp_path, real Spark, real Great Expectations).

File-level problems must stop the day with a message that names the file, the column or rule and what
to do; row-level problems must land in the quarantine with the rules they broke; and no row may ever
be lost: raw rows == clean rows + quarantined rows, checked by reading back what was written.
"""

from __future__ import annotations

import gzip
import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

pytest.importorskip("pyspark")
pytest.importorskip("great_expectations")

from pyspark.testing import assertDataFrameEqual  # noqa: E402

from recsys.errors import QuarantineLimitError  # noqa: E402
from recsys.quality import validation as V  # noqa: E402
from recsys.quality.validation import DataQualityError, validate_day  # noqa: E402

DS = date(2019, 10, 1)  # a day safely in the past, like the REES46 data
HEADER = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
CATEGORY = "2053013555631882655"  # real REES46 category ids are beyond 2**53
CLEAN_SCHEMA = (
    "event_time timestamp, event_type string, product_id long, category_id long, category_code string, "
    "brand string, price double, user_id long, user_session string"
)
ALL_RULES = (
    "malformed_line",
    "event_time_parseable",
    "event_time_in_partition_day",
    "event_type_allowed",
    "event_type_present",
    "product_id_present_and_numeric",
    "user_id_present_and_numeric",
    "price_present_and_numeric",
    "price_in_range",
    "category_id_numeric",
    "duplicate_event",
)


def utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)


def line(time="2019-10-01 10:00:00 UTC", event_type="view", product="1001", category=CATEGORY,
         code="electronics.smartphone", brand="apple", price="9.99", user="541312140", session="s") -> str:
    return ",".join([time, event_type, product, category, code, brand, price, user, session])


class Day:
    """The directories of one validation run under tmp_path."""

    def __init__(self, root: Path, ds: date = DS):
        self.ds = ds
        self.raw = root / "raw" / "events"
        self.clean = root / "clean" / "events"
        self.quarantine = root / "quarantine"
        self.reports = root / "quality" / "reports"
        self.folder = self.raw / f"ds={ds.isoformat()}"

    def write(self, name: str, content: str | bytes) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    def validate(self, spark, max_fraction: float = 0.05, docs_dir: Path | None = None) -> V.ValidationReport:
        return validate_day(spark, self.ds, self.raw, self.clean, self.quarantine, self.reports, max_fraction, docs_dir=docs_dir)

    @property
    def clean_day(self) -> Path:
        return self.clean / f"ds={self.ds.isoformat()}"

    @property
    def quarantine_day(self) -> Path:
        return self.quarantine / f"ds={self.ds.isoformat()}"

    def quarantine_rows(self, spark) -> list[dict]:
        return [row.asDict() for row in spark.read.option("header", True).csv(str(self.quarantine_day)).collect()]

    def nothing_written(self) -> bool:
        return not self.clean_day.exists() and not self.quarantine_day.exists()


def assert_rows_conserved(spark, day: Day, report: V.ValidationReport, raw_rows: int) -> None:
    """raw == clean + quarantined, in the report and in what is on disk."""
    assert report.raw_rows == raw_rows
    assert report.raw_rows == report.clean_rows + report.quarantined_rows
    assert spark.read.parquet(str(day.clean_day)).count() == report.clean_rows
    assert len(day.quarantine_rows(spark)) == report.quarantined_rows
    saved = json.loads(Path(report.report_path).read_text())
    assert (saved["raw_rows"], saved["clean_rows"], saved["quarantined_rows"]) == (
        report.raw_rows, report.clean_rows, report.quarantined_rows,
    )


# ---------------------------------------------------------------------------------------------
# file level: the day stops with a message saying which file, what is wrong and what to do
# ---------------------------------------------------------------------------------------------
def test_wrong_delimiter_names_the_file_the_missing_columns_and_the_delimiter(spark, tmp_path):
    day = Day(tmp_path)
    day.write("events.csv", HEADER.replace(",", ";") + "\n" + line().replace(",", ";") + "\n")

    with pytest.raises(DataQualityError) as error:
        day.validate(spark)

    message = str(error.value)
    assert str(day.folder / "events.csv") in message
    assert "missing column(s) event_time, event_type" in message
    assert "rule: columns_present" in message
    assert "delimiter wrong" in message
    assert "Fix or re-export the file(s)" in message
    assert day.nothing_written()


def test_missing_column_names_only_the_bad_file_and_the_column(spark, tmp_path):
    day = Day(tmp_path)
    day.write("a_good.csv", HEADER + "\n" + line() + "\n")
    day.write("b_no_price.csv", HEADER.replace(",price", "") + "\n" + line().replace(",9.99", "") + "\n")

    with pytest.raises(DataQualityError) as error:
        day.validate(spark)

    message = str(error.value)
    assert f"{day.folder / 'b_no_price.csv'}: missing column(s) price (rule: columns_present" in message
    assert "a_good.csv" not in message
    assert "delimiter" not in message  # the header has commas: no delimiter hint
    assert "Expected columns: event_time, event_type" in message and "re-export" in message
    assert day.nothing_written()


def test_header_only_file_is_an_empty_day_not_an_error(spark, tmp_path):
    """Zero events landed: the day validates as empty (the DAG then recomputes from history)."""
    day = Day(tmp_path)
    day.write("events.csv", HEADER + "\n")

    report = day.validate(spark)

    assert (report.raw_rows, report.clean_rows, report.quarantined_rows) == (0, 0, 0)
    assert set(report.rule_counts) == set(ALL_RULES) and not any(report.rule_counts.values())
    assert report.quarantine_path == "" and not day.quarantine_day.exists()
    clean = spark.read.parquet(str(day.clean_day))
    assert clean.count() == 0
    assert clean.schema == spark.createDataFrame([], CLEAN_SCHEMA).schema
    assert json.loads(Path(report.report_path).read_text())["raw_rows"] == 0


def test_missing_day_folder_is_a_clear_error(spark, tmp_path):
    day = Day(tmp_path)
    day.raw.mkdir(parents=True)
    (day.raw / "ds=2019-09-30").mkdir()  # another day exists; this one does not

    with pytest.raises(DataQualityError) as error:
        day.validate(spark)

    message = str(error.value)
    assert f"folder {day.folder} does not exist" in message
    assert "run for another date" in message
    assert day.nothing_written()


def _events_gzip(rows: int) -> bytes:
    return gzip.compress(("\n".join([HEADER] + [line(session=f"s{i}") for i in range(rows)]) + "\n").encode())


GZIP_5000_ROWS = _events_gzip(5000)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # cut in the middle: the header still decompresses, so only reading to the end finds it
        pytest.param(GZIP_5000_ROWS[: len(GZIP_5000_ROWS) // 2], "truncated or corrupt", id="truncated"),
        pytest.param(b"event_time,event_type\nnot gzip at all\n", "cannot be read", id="not-gzip"),
    ],
)
def test_broken_gzip_names_the_file_instead_of_a_java_stack_trace(spark, tmp_path, content, expected):
    day = Day(tmp_path)
    day.write("a_fine.csv", HEADER + "\n" + line() + "\n")
    day.write("events.csv.gz", content)

    with pytest.raises(DataQualityError) as error:
        day.validate(spark)

    message = str(error.value)
    assert str(day.folder / "events.csv.gz") in message
    assert expected in message
    assert "Re-land the file" in message
    assert "a_fine.csv" not in message
    assert "Py4J" not in message and "java" not in message.lower()
    assert day.nothing_written()


def test_check_gzip_accepts_a_complete_archive(tmp_path):
    path = tmp_path / "ok.csv.gz"
    path.write_bytes(_events_gzip(10))
    V._check_gzip(path)  # no error


# ---------------------------------------------------------------------------------------------
# tolerated layouts: extra columns, reordered columns, gzip and Parquet in one day
# ---------------------------------------------------------------------------------------------
def test_extra_and_reordered_columns_and_mixed_formats_still_validate(spark, tmp_path):
    import pandas as pd

    day = Day(tmp_path)
    # An extra column in the middle: columns are matched by name, not by position.
    day.write(
        "a_extra.csv",
        HEADER.replace("event_type,", "event_type,referrer,") + "\n"
        + "2019-10-01 10:00:00 UTC,view,google,1001,1,,apple,9.99,7,s-extra\n",
    )
    # Reordered columns, gzipped.
    reordered = ["user_id", "user_session", "event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price"]
    day.write(
        "b_reordered.csv.gz",
        gzip.compress((",".join(reordered) + "\n" + "8,s-gz,2019-10-01 11:00:00 UTC,cart,1002,2,,samsung,19.50\n").encode()),
    )
    # Typed Parquet with an extra column and a sub-second timestamp.
    pd.DataFrame(
        {
            "event_time": pd.to_datetime(["2019-10-01 12:00:00.250"]).tz_localize("UTC").astype("datetime64[us, UTC]"),
            "event_type": ["purchase"],
            "product_id": [1003],
            "category_id": [int(CATEGORY)],
            "category_code": ["electronics.audio"],
            "brand": [None],
            "price": [29.0],
            "user_id": [9],
            "user_session": ["s-parquet"],
            "extra": [1],
        }
    ).to_parquet(day.folder / "c_typed.parquet", index=False)

    report = day.validate(spark)

    expected = spark.createDataFrame(
        [
            (utc("2019-10-01 10:00:00"), "view", 1001, 1, None, "apple", 9.99, 7, "s-extra"),
            (utc("2019-10-01 11:00:00"), "cart", 1002, 2, None, "samsung", 19.5, 8, "s-gz"),
            (utc("2019-10-01 12:00:00") + timedelta(milliseconds=250), "purchase", 1003, int(CATEGORY),
             "electronics.audio", None, 29.0, 9, "s-parquet"),
        ],
        CLEAN_SCHEMA,
    )
    assertDataFrameEqual(spark.read.parquet(report.clean_path), expected)
    assert report.rule_counts == dict.fromkeys(ALL_RULES, 0)
    assert_rows_conserved(spark, day, report, raw_rows=3)


def test_a_file_spark_cannot_read_is_a_clear_error(spark, tmp_path):
    import pandas as pd

    day = Day(tmp_path)
    day.folder.mkdir(parents=True)
    # Nanosecond timestamps (pandas' default unit) are not readable by Spark.
    columns = {name: ["1"] for name in HEADER.split(",")} | {"event_time": pd.to_datetime(["2019-10-01 12:00:00"])}
    pd.DataFrame(columns).to_parquet(day.folder / "nanos.parquet", index=False)

    with pytest.raises(DataQualityError) as error:
        day.validate(spark)

    message = str(error.value)
    assert "Spark could not read the day's files" in message and str(day.folder / "nanos.parquet") in message
    assert "TIMESTAMP(NANOS" in message  # Spark's own one-line reason, not its stack trace
    assert "Check or re-land the files" in message
    assert "\tat org.apache" not in message
    assert day.nothing_written()


# ---------------------------------------------------------------------------------------------
# row level: one day with every kind of bad row, checked row by row
# ---------------------------------------------------------------------------------------------
TOO_FEW_FIELDS = ",".join(line().split(",")[:8])  # no user_session field at all: 8 fields for 9 columns


def _mixed_day(day: Day) -> tuple[str, dict[str, str]]:
    """Write the mixed day; return the future timestamp used and {user_session: failed_rules} of the bad rows."""
    future = (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S UTC")
    good = [
        line(session="g-plain"),
        # ids written as floats: whole numbers are accepted, keeping every digit of the category id
        line(event_type="cart", product="1002.0", category=CATEGORY + ".0", code="", brand="", price="10.00",
             user="541312140.0", session="g-float-ids"),
        # an offset is converted to UTC (12:30+02:00 is 10:30Z, on the day)
        line(time="2019-10-01T12:30:00+02:00", product="1003", session="g-offset"),
        # no zone at all: taken as UTC
        line(time="2019-10-01 23:59:59", product="1004", session="g-no-zone"),
        # event types are trimmed and lower-cased
        line(event_type="Cart", product="1008", session="g-case"),
    ]
    duplicated = [line(event_type="purchase", product="1006", session="g-dup3")] * 3 + [
        line(product="1007", session="g-dup2")
    ] * 2
    bad = {
        "b-id-fraction": (line(product="1010.5", session="b-id-fraction"), "product_id_present_and_numeric"),
        "b-offset-prev-day": (
            line(time="2019-10-01T01:30:00+02:00", session="b-offset-prev-day"), "event_time_in_partition_day"
        ),
        "b-currency": (line(price="$9.99", session="b-currency"), "price_present_and_numeric"),
        "b-unknown-type": (line(event_type="click", session="b-unknown-type"), "event_type_allowed"),
        "b-negative-price": (line(price="-5.00", session="b-negative-price"), "price_in_range"),
        "b-future": (line(time=future, session="b-future"), "event_time_in_partition_day"),
        "b-too-many-fields": (line(session="b-too-many-fields") + ",surplus", "malformed_line"),
        "b-bad-time": (line(time="not-a-date", session="b-bad-time"), "event_time_parseable"),
        "b-no-user": (line(user="", session="b-no-user"), "user_id_present_and_numeric"),
        "b-category": (line(category="abc", session="b-category"), "category_id_numeric"),
        "b-two-rules": (line(event_type="", price="-1", session="b-two-rules"), "event_type_present,price_in_range"),
    }
    text = "\n".join([HEADER, *good, *duplicated, *(row for row, _ in bad.values()), TOO_FEW_FIELDS]) + "\n"
    # a non-UTF-8 byte (Latin-1 é) in a text field: the row must not be lost
    latin1 = (line(brand="caf\x00", product="1005", session="g-latin1") + "\n").encode().replace(b"\x00", b"\xe9")
    day.write("events.csv", text.encode() + latin1)
    return future, {session: rules for session, (_, rules) in bad.items()}


def test_mixed_day_quarantines_each_bad_row_with_its_rules_and_keeps_the_rest(spark, tmp_path):
    day = Day(tmp_path)
    future, expected_rules = _mixed_day(day)
    docs_dir = tmp_path / "quality"

    # 12 bad rows + 3 duplicate copies of 23 rows: exactly at the threshold still passes
    report = day.validate(spark, max_fraction=15 / 23, docs_dir=docs_dir)

    assert report.rule_counts == {
        "malformed_line": 2,
        "event_time_parseable": 1,
        "event_time_in_partition_day": 2,
        "event_type_allowed": 1,
        "event_type_present": 1,
        "product_id_present_and_numeric": 1,
        "user_id_present_and_numeric": 1,
        "price_present_and_numeric": 1,
        "price_in_range": 2,
        "category_id_numeric": 1,
        "duplicate_event": 3,
    }
    assert_rows_conserved(spark, day, report, raw_rows=23)
    assert (report.clean_rows, report.quarantined_rows) == (8, 15)

    clean = spark.createDataFrame(
        [
            (utc("2019-10-01 10:00:00"), "view", 1001, int(CATEGORY), "electronics.smartphone", "apple", 9.99, 541312140, "g-plain"),
            (utc("2019-10-01 10:00:00"), "cart", 1002, int(CATEGORY), None, None, 10.0, 541312140, "g-float-ids"),
            (utc("2019-10-01 10:30:00"), "view", 1003, int(CATEGORY), "electronics.smartphone", "apple", 9.99, 541312140, "g-offset"),
            (utc("2019-10-01 23:59:59"), "view", 1004, int(CATEGORY), "electronics.smartphone", "apple", 9.99, 541312140, "g-no-zone"),
            (utc("2019-10-01 10:00:00"), "cart", 1008, int(CATEGORY), "electronics.smartphone", "apple", 9.99, 541312140, "g-case"),
            (utc("2019-10-01 10:00:00"), "view", 1005, int(CATEGORY), "electronics.smartphone", "caf\ufffd", 9.99, 541312140, "g-latin1"),
            (utc("2019-10-01 10:00:00"), "purchase", 1006, int(CATEGORY), "electronics.smartphone", "apple", 9.99, 541312140, "g-dup3"),
            (utc("2019-10-01 10:00:00"), "view", 1007, int(CATEGORY), "electronics.smartphone", "apple", 9.99, 541312140, "g-dup2"),
        ],
        CLEAN_SCHEMA,
    )
    assertDataFrameEqual(spark.read.parquet(report.clean_path), clean)

    quarantined = day.quarantine_rows(spark)
    rules_by_session: dict[str | None, list[str]] = {}
    for row in quarantined:
        rules_by_session.setdefault(row["user_session"], []).append(row["failed_rules"])
    assert rules_by_session == {
        **{session: [rules] for session, rules in expected_rules.items()},
        "g-dup3": ["duplicate_event", "duplicate_event"],  # the 2nd and 3rd copies; the first is clean
        "g-dup2": ["duplicate_event"],
        None: ["malformed_line"],  # the too-few-fields line: its missing field is the session
    }
    rows = {row["user_session"]: row for row in quarantined}
    # the raw text is kept exactly as it arrived, with where it came from
    assert rows["b-currency"]["price"] == "$9.99"
    assert rows["b-id-fraction"]["product_id"] == "1010.5"
    assert rows["b-offset-prev-day"]["event_time"] == "2019-10-01T01:30:00+02:00"
    assert rows["b-future"]["event_time"] == future
    assert all(row["source_file"].endswith("ds=2019-10-01/events.csv") for row in quarantined)
    # a line with too many (or too few) fields is quarantined whole, never truncated into the clean data
    assert rows["b-too-many-fields"]["raw_line"] == line(session="b-too-many-fields") + ",surplus"
    assert rows[None]["raw_line"] == TOO_FEW_FIELDS
    assert rows["b-currency"]["raw_line"] is None

    # Great Expectations Data Docs were built and point at a real page
    assert report.docs_page is not None
    page = Path(unquote(urlparse(report.docs_page).path))
    assert page.is_file() and page.is_relative_to(docs_dir)
    assert "raw_events_rows" in "".join(p.read_text(errors="replace") for p in page.parent.rglob("*.html"))


def test_all_rows_invalid_stops_the_day_naming_the_fraction_and_the_quarantine(spark, tmp_path):
    day = Day(tmp_path)
    day.write(
        "events.csv",
        "\n".join([HEADER, line(event_type="click"), line(price="-1", session="t"), line(time="yesterday", session="u")]) + "\n",
    )

    # QuarantineLimitError (a DataQualityError): the DAG's tasks fail at once on it instead of retrying
    with pytest.raises(QuarantineLimitError) as error:
        day.validate(spark, max_fraction=0.05)

    message = str(error.value)
    assert "3 of 3 rows (100.0%) failed validation, above the 5.0% threshold" in message
    assert "RECSYS_QUARANTINE_MAX_FRACTION" in message
    assert f"The bad rows are in {day.quarantine_day}" in message
    assert "event_time_parseable=1" in message and "event_type_allowed=1" in message and "price_in_range=1" in message
    # the quarantine is written for a person to look at; the clean partition is not
    assert sorted(row["failed_rules"] for row in day.quarantine_rows(spark)) == [
        "event_time_parseable", "event_type_allowed", "price_in_range",
    ]
    assert not day.clean_day.exists()
    saved = json.loads((day.reports / "ds=2019-10-01.json").read_text())
    assert (saved["raw_rows"], saved["clean_rows"], saved["quarantined_rows"]) == (3, 0, 3)


def test_gx_and_spark_disagreeing_stops_the_day(spark, tmp_path, monkeypatch):
    day = Day(tmp_path)
    day.write("events.csv", "\n".join([HEADER, line(), line(event_type="click", session="t")]) + "\n")
    lying_gx = dict.fromkeys(ALL_RULES, 0)  # GX "sees" no bad row, Spark sees the unknown event type
    monkeypatch.setattr(V, "run_expectations", lambda typed, ds, docs_dir: (lying_gx, None))

    with pytest.raises(DataQualityError) as error:
        day.validate(spark, max_fraction=1.0)

    assert "disagree" in str(error.value) and "'event_type_allowed': (0, 1)" in str(error.value)
    assert day.nothing_written()


@pytest.mark.parametrize(
    ("gx_count", "spark_count", "agree"),
    [
        (0, 0, True),
        (2, 1, True),  # one pair
        (3, 2, True),  # one triple
        (5, 3, True),  # a triple and a pair
        (4, 2, True),  # two pairs
        (2, 2, False),  # GX must see every copy, so strictly more than Spark's 2nd+ copies
        (5, 2, False),  # more groups than extra copies is impossible
        (1, 0, False),
        (0, 1, False),
    ],
)
def test_duplicate_counts_cross_check(gx_count, spark_count, agree):
    assert V._duplicate_counts_agree(gx_count, spark_count) is agree


# ---------------------------------------------------------------------------------------------
# many days in one pass (a first run's history): each day's outcome is the one it gets on its own
# ---------------------------------------------------------------------------------------------
def _history(root: Path) -> list[date]:
    """Six landed days: the mixed day, a day with copies of the first day's lines and rows on its edges, a
    quiet day, a day over the threshold, a day with a wrong file and a clean day landed again (its earlier
    quarantine is stale) with typed Parquet. Returns the days in order."""
    import numpy as np
    import pandas as pd

    days = [DS + timedelta(days=n) for n in range(6)]
    _mixed_day(Day(root, days[0]))
    on_second = "2019-10-02 08:00:00 UTC"
    second = Day(root, days[1])
    second.write("events.csv", "\n".join([
        HEADER,
        line(time=on_second, session="g2"),
        line(time=on_second, product="1002", session="g2b"),
        line(session="g-plain"),  # the first day's line landed again: off its partition day here
        line(time="not-a-date", session="b-bad-time"),  # the same broken line on both days: no duplicate
        line(time=on_second, session="d2"),
        line(time=on_second, session="d2"),
        line(time="2019-10-02 00:00:00", session="g2-first-instant"),
        line(time="2019-10-02 23:59:59.999999", session="g2-last-instant"),
        line(time="2019-10-03 00:00:00", session="b2-next-day"),
    ]) + "\n")
    fields = dict(zip(HEADER.split(","), line(time=on_second, product="1020", session="g2-parquet").split(",")))
    pd.DataFrame({name: [value] for name, value in fields.items()}).to_parquet(second.folder / "more.parquet", index=False)
    Day(root, days[2]).write("events.csv", HEADER + "\n")
    Day(root, days[3]).write("events.csv", "\n".join([HEADER, line(time="2019-10-04 10:00:00 UTC", event_type="click")]) + "\n")
    Day(root, days[4]).write("events.csv", HEADER.replace("price", "cost") + "\n" + line(time="2019-10-05 10:00:00 UTC") + "\n")
    relanded = Day(root, days[5])
    relanded.write("events.csv", "\n".join([HEADER, line(time="2019-10-06 09:00:00 UTC", session="g6")]) + "\n")
    # Typed Parquet (float32 price, int64 ids): read alone, never widened to another day's Parquet schema.
    pd.DataFrame({
        "event_time": ["2019-10-06 10:00:00 UTC"], "event_type": ["cart"], "product_id": np.array([1030], np.int64),
        "category_id": np.array([7], np.int64), "category_code": ["kitchen"], "brand": ["acme"],
        "price": np.array([9.99], np.float32), "user_id": np.array([77], np.int64), "user_session": ["g6-parquet"],
    }).to_parquet(relanded.folder / "typed.parquet", index=False)
    relanded.quarantine_day.mkdir(parents=True)
    (relanded.quarantine_day / "part-00000-earlier-landing.csv").write_text(HEADER + ",failed_rules,source_file,raw_line\n" + line() + ",price_in_range,x,\n")
    return days


def _outcomes_one_by_one(spark, root: Path, days: list[date], max_fraction: float) -> dict:
    outcomes = {}
    for ds in days:
        try:
            outcomes[ds] = Day(root, ds).validate(spark, max_fraction)
        except DataQualityError as exc:
            outcomes[ds] = exc
    return outcomes


def test_history_days_in_one_pass_match_one_day_at_a_time(spark, tmp_path, caplog):
    import logging
    import shutil

    alone, together = tmp_path / "alone", tmp_path / "together"
    days = _history(alone)
    shutil.copytree(alone, together)
    max_fraction = 15 / 23
    expected = _outcomes_one_by_one(spark, alone, days, max_fraction)
    folders = Day(together)
    # What runs killed halfway leave: this version's staging folder and an older version's hidden one.
    crashed = [together / "quarantine-staging-0123" / "ds=2019-10-01", together / ".quarantine-staging-4567" / "ds=2019-10-01"]
    for folder in crashed:
        folder.mkdir(parents=True)

    with caplog.at_level(logging.INFO, logger=V.__name__):
        outcomes = V.validate_days(spark, days, folders.raw, folders.clean, folders.quarantine, folders.reports, max_fraction)

    assert "validating 5 days in one pass" in caplog.text and "one by one" not in caplog.text
    assert not any(folder.parent.exists() for folder in crashed)
    assert not list(together.rglob("*-staging-*")), list(together.rglob("*-staging-*"))
    assert [type(outcomes[ds]) for ds in days] == [V.ValidationReport, V.ValidationReport, V.ValidationReport,
                                                   QuarantineLimitError, DataQualityError, V.ValidationReport]
    assert outcomes[days[1]].rule_counts["duplicate_event"] == 1
    assert outcomes[days[1]].rule_counts["event_time_in_partition_day"] == 2  # the first day's line, the next day's midnight
    assert (outcomes[days[5]].clean_rows, outcomes[days[5]].quarantined_rows) == (2, 0)
    for ds in days:
        one, batch = Day(alone, ds), Day(together, ds)
        want, got = expected[ds], outcomes[ds]
        assert type(got) is type(want), ds
        assert one.clean_day.exists() == batch.clean_day.exists(), ds
        assert one.quarantine_day.exists() == batch.quarantine_day.exists(), ds
        if isinstance(want, DataQualityError):
            assert str(got) == str(want).replace(str(alone), str(together)), ds
        else:
            assert (got.raw_rows, got.clean_rows, got.quarantined_rows, got.rule_counts) == (
                want.raw_rows, want.clean_rows, want.quarantined_rows, want.rule_counts,
            ), ds
            assert (got.clean_path, got.quarantine_path, got.report_path) == tuple(
                path.replace(str(alone), str(together)) for path in (want.clean_path, want.quarantine_path, want.report_path)
            ), ds
            if want.raw_rows:  # a quiet day has no quarantine folder to count
                assert_rows_conserved(spark, batch, got, raw_rows=want.raw_rows)
            assertDataFrameEqual(spark.read.parquet(str(batch.clean_day)), spark.read.parquet(str(one.clean_day)))
        if one.quarantine_day.exists():
            moved = [{**row, "source_file": row["source_file"].replace(str(together), str(alone))}
                     for row in batch.quarantine_rows(spark)]
            assert sorted(moved, key=repr) == sorted(one.quarantine_rows(spark), key=repr), ds
        report = one.reports / f"ds={ds.isoformat()}.json"
        if report.exists():
            saved = json.loads((batch.reports / report.name).read_text())
            assert {k: v for k, v in saved.items() if k in ("raw_rows", "clean_rows", "quarantined_rows", "rule_counts")} == {
                k: v for k, v in json.loads(report.read_text()).items() if k in ("raw_rows", "clean_rows", "quarantined_rows", "rule_counts")
            }, ds


def test_history_day_spark_cannot_read_sends_the_days_one_by_one(spark, tmp_path, caplog):
    import logging

    import pandas as pd

    good, unreadable = Day(tmp_path, DS), Day(tmp_path, DS + timedelta(days=1))
    good.write("events.csv", "\n".join([HEADER, line(), line(product="1002")]) + "\n")
    unreadable.folder.mkdir(parents=True)
    columns = {name: ["1"] for name in HEADER.split(",")} | {"event_time": pd.to_datetime(["2019-10-02 12:00:00"])}
    pd.DataFrame(columns).to_parquet(unreadable.folder / "nanos.parquet", index=False)

    with caplog.at_level(logging.INFO, logger=V.__name__):
        outcomes = V.validate_days(spark, [good.ds, unreadable.ds], good.raw, good.clean, good.quarantine, good.reports, 0.05)

    assert "validating the 2 days one by one instead" in caplog.text
    assert outcomes[good.ds].clean_rows == 2
    assert isinstance(outcomes[unreadable.ds], DataQualityError)
    assert "ds=2019-10-02: Spark could not read" in str(outcomes[unreadable.ds])
    assert str(unreadable.folder / "nanos.parquet") in str(outcomes[unreadable.ds])
    assert unreadable.nothing_written()
