"""Tests of the REES46 adapter on small files written in the real REES46 format (plain and gzip).

What must hold: every line lands in the folder of its UTC day byte for byte (or in raw/rejected with a
reason when its event_time names no day), the counts add up, the output is a landing zone that
``validate_day`` reads with raw = clean + quarantined, reruns replace instead of duplicating, and a
bad source stops the run with a message naming the file and what to do, without touching any day.
"""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from recsys.data.rees46 import REJECTED_COLUMNS, Rees46Error, convert, main, parse_event_days

HEADER = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
CATEGORY = "2053013555631882655"  # real REES46 category ids are beyond 2**53

# Lines as they appear in the public files: UTC suffix, empty category_code/brand, 2-decimal prices.
OCT_LINES = [
    f"2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde-8bb3-4e00-8c23-a032dfed738c\n",
    f"2019-10-01 00:00:04 UTC,view,1004237,{CATEGORY},electronics.smartphone,apple,1081.98,535871217,c6bd7419-2748-4c56-95b4-8cec9ff8b80d\n",
    f"2019-10-01 23:59:59 UTC,cart,1004237,{CATEGORY},electronics.smartphone,apple,1081.98,535871217,c6bd7419-2748-4c56-95b4-8cec9ff8b80d\n",
    f"2019-10-02 00:00:00 UTC,purchase,1004237,{CATEGORY},electronics.smartphone,apple,1081.98,535871217,c6bd7419-2748-4c56-95b4-8cec9ff8b80d\n",
    "2019-10-02 10:11:12 UTC,view,17200506,2053013559792632471,furniture.living_room.sofa,,543.10,519107250,566511c2-e2e3-422b-b695-cf8e6e792ca8\n",
    # The adapter is not a validator: a bad event type and a short line still go to their day.
    f"2019-10-02 11:00:00 UTC,click,1004237,{CATEGORY},electronics.smartphone,apple,1081.98,535871217,c6bd7419\n",
    "2019-10-02 11:00:01 UTC,view,1004237\n",
    "not-a-date,view,1004237,,,,1.00,535871217,s\n",  # no day: rejected
    "2019-10-03 08:00:00 UTC,remove_from_cart,1004237,,,,1081.98,535871217,abc\n",
]
NOV_LINES = [
    "2019-11-01 00:00:01 UTC,view,5100816,2053013553375346967,,xiaomi,29.51,550050854,7c90fc70-0e80-4590-96f3-13c02c18c713\n",
    "2019-11-01T23:59:59+00:00,cart,5100816,2053013553375346967,,xiaomi,29.51,550050854,7c90fc70-0e80-4590-96f3-13c02c18c713\n",
    # ISO-8601 with an offset: the UTC day is what counts (2019-11-02 01:30 local = 2019-11-01 23:30 UTC).
    "2019-11-02T01:30:00+02:00,view,5100816,2053013553375346967,,xiaomi,29.51,550050854,zz\n",
    "\n",  # a blank line carries no row
    "2019-11-31 00:00:00 UTC,view,5100816,,,,29.51,550050854,zz\n",  # no such date: rejected
    "2019-11-02 09:00:00 UTC,view,5100816,,,,29.51,550050854,zz",  # the last line has no newline
]


def write_source(folder: Path, name: str, lines: list[str], header: str = HEADER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = (header + "".join(lines)).encode("utf-8")
    path = folder / name
    path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    return path


def day_lines(out: Path) -> dict[str, list[str]]:
    """Each day folder's data lines (headers dropped), over all its parts, in part order."""
    days = {}
    for folder in sorted((out / "raw" / "events").glob("ds=*")):
        lines = []
        for part in sorted(folder.glob("part-*.csv.gz")):
            with gzip.open(part, "rt", newline="") as handle:
                header, *rest = handle.readlines()
            assert header == HEADER, part
            lines.extend(rest)
        days[folder.name[3:]] = lines
    return days


@pytest.fixture
def sources(tmp_path) -> list[Path]:
    return [write_source(tmp_path / "src", "2019-Oct.csv", OCT_LINES), write_source(tmp_path / "src", "2019-Nov.csv.gz", NOV_LINES)]


# ---------------------------------------------------------------------------------------------
# routing, passthrough and counts
# ---------------------------------------------------------------------------------------------
def test_every_line_goes_to_its_utc_day_untouched(tmp_path, sources):
    out = tmp_path / "landing"
    summary = convert(sources, out)

    days = day_lines(out)
    assert days == {
        "2019-10-01": OCT_LINES[0:3],
        "2019-10-02": OCT_LINES[3:7],
        "2019-10-03": OCT_LINES[8:9],
        "2019-11-01": NOV_LINES[0:3],
        "2019-11-02": [NOV_LINES[5] + "\n"],
    }
    assert summary.rows == 9 + 5 and summary.written == 12 and summary.rejected == 2
    assert summary.days == [date(2019, 10, 1), date(2019, 10, 2), date(2019, 10, 3), date(2019, 11, 1), date(2019, 11, 2)]
    assert summary.rows_per_day == {date.fromisoformat(d): len(lines) for d, lines in days.items()}
    by_source = {s.source.name: s for s in summary.sources}
    assert (by_source["2019-Oct.csv"].lines, by_source["2019-Oct.csv"].written, by_source["2019-Oct.csv"].rejected) == (9, 8, 1)
    assert (by_source["2019-Nov.csv.gz"].lines, by_source["2019-Nov.csv.gz"].rejected) == (5, 1)
    assert by_source["2019-Nov.csv.gz"].blank_lines == 1
    # Nothing staged is left behind in the landing zone.
    assert [p.name for p in (out / "raw" / "events").iterdir() if not p.name.startswith("ds=")] == []


def test_rejected_lines_keep_their_text_line_number_and_reason(tmp_path, sources):
    out = tmp_path / "landing"
    convert(sources, out)
    rejected = {p.name: pd.read_csv(p, dtype=str, keep_default_na=False) for p in (out / "raw" / "rejected").glob("*.csv")}
    assert set(rejected) == {"2019-Oct.csv", "2019-Nov.csv"}
    oct_rejects = rejected["2019-Oct.csv"]
    assert list(oct_rejects.columns) == list(REJECTED_COLUMNS)
    assert oct_rejects["raw_line"].tolist() == [OCT_LINES[7].rstrip("\n")]
    assert oct_rejects["line_number"].tolist() == ["9"]  # header is line 1
    assert "'not-a-date' is not a timestamp" in oct_rejects["reason"].iloc[0]
    nov_rejects = rejected["2019-Nov.csv"]
    assert nov_rejects["raw_line"].tolist() == [NOV_LINES[4].rstrip("\n")]
    assert nov_rejects["line_number"].tolist() == ["6"]


def test_small_chunks_and_parts_give_the_same_rows(tmp_path, sources):
    whole = convert(sources, tmp_path / "whole")
    chunked = convert(sources, tmp_path / "chunked", chunk_rows=2, rows_per_part=2)
    assert day_lines(tmp_path / "chunked") == day_lines(tmp_path / "whole")
    assert chunked.rows_per_day == whole.rows_per_day
    parts = sorted(p.name for p in (tmp_path / "chunked" / "raw" / "events" / "ds=2019-10-02").iterdir())
    assert parts == ["part-0000.csv.gz", "part-0001.csv.gz"]  # 4 lines, 2 per part
    assert chunked.parts == 8 and whole.parts == 5  # 2+2+1+2+1 parts of at most 2 lines


def test_rerun_replaces_days_instead_of_appending(tmp_path, sources):
    out = tmp_path / "landing"
    convert(sources, out)
    first = day_lines(out)
    again = convert(sources, out)
    assert day_lines(out) == first
    assert len(again.replaced_days) == 5
    # A day written by an earlier run and not by this one is left alone.
    convert([sources[1]], out)
    assert day_lines(out) == first


def test_crlf_and_quoted_fields_pass_through(tmp_path):
    lines = [
        '2019-10-05 01:00:00 UTC,view,1,2,"kids,toys",lego,9.99,7,s1\r\n',
        '"2019-10-06 02:00:00 UTC",view,1,2,,lego,9.99,7,s1\r\n',
    ]
    source = write_source(tmp_path, "2019-Oct.csv", lines, header=HEADER.replace("\n", "\r\n"))
    out = tmp_path / "out"
    convert([source], out)
    part = out / "raw" / "events" / "ds=2019-10-05" / "part-0000.csv.gz"
    assert gzip.decompress(part.read_bytes()) == (HEADER.replace("\n", "\r\n") + lines[0]).encode()
    assert (out / "raw" / "events" / "ds=2019-10-06").is_dir()


def test_parse_event_days_accepts_the_contract_formats_only():
    texts = pd.Series([
        "2019-10-01 00:00:00 UTC", " 2019-10-01 23:59:59 UTC ", "2019-10-01T12:00:00", "2019-10-01T23:30:00-01:00",
        "2019-10-01 12:00:00.123456", "2019-10-01", "yesterday", None, "",
    ])
    days = parse_event_days(texts)
    assert [d.date().isoformat() if pd.notna(d) else None for d in days] == [
        "2019-10-01", "2019-10-01", "2019-10-01", "2019-10-02", "2019-10-01", None, None, None, None,
    ]


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_wrong_header_stops_with_the_file_and_missing_columns(tmp_path):
    source = write_source(tmp_path, "2019-Oct.csv", OCT_LINES[:1], header=HEADER.replace(",", ";"))
    with pytest.raises(Rees46Error, match=r"2019-Oct\.csv: header .* lacks column\(s\) event_time, event_type.*delimiter"):
        convert([source], tmp_path / "out")
    assert not (tmp_path / "out" / "raw" / "events" / "ds=2019-10-01").exists()


def test_truncated_gzip_stops_before_any_day_is_changed(tmp_path, sources):
    out = tmp_path / "landing"
    convert(sources, out)
    before = day_lines(out)
    broken = tmp_path / "src" / "2019-Dec.csv.gz"
    full = gzip.compress((HEADER + "".join(OCT_LINES) * 50).encode())
    broken.write_bytes(full[: len(full) // 2])
    with pytest.raises(Rees46Error, match=r"2019-Dec\.csv\.gz: cannot be read to its end .*gzip -t.*No day folder was changed"):
        convert([sources[0], broken], out)
    assert day_lines(out) == before
    assert [p.name for p in (out / "raw" / "events").iterdir() if not p.name.startswith("ds=")] == []


def test_missing_source_and_clashing_names(tmp_path, sources):
    with pytest.raises(Rees46Error, match=r"source file .*2019-Sep\.csv not found"):
        convert([tmp_path / "2019-Sep.csv"], tmp_path / "out")
    gz_copy = write_source(tmp_path / "other", "2019-Oct.csv.gz", OCT_LINES)
    with pytest.raises(Rees46Error, match="share a base name"):
        convert([sources[0], gz_copy], tmp_path / "out")


def test_cli_prints_the_summary(tmp_path, sources, capsys):
    out = tmp_path / "cli"
    assert main(["--source", str(sources[0]), "--source", str(sources[1]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "14 read, 12 written, 2 rejected" in printed
    assert "days     : 5 (2019-10-01 to 2019-11-02)" in printed
    assert "2019-Nov.csv.gz: 5 rows -> 4 written, 1 rejected, 1 blank line(s) skipped" in printed
    with pytest.raises(SystemExit) as exit_info:
        main(["--source", str(tmp_path / "nope.csv"), "--out", str(out)])
    assert exit_info.value.code == 2
    assert "nope.csv not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# the output is a landing zone validate_raw accepts
# ---------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_validate_day_reads_every_day_with_full_conservation(tmp_path, sources, spark):
    pytest.importorskip("great_expectations")
    from recsys.quality.validation import validate_day

    out = tmp_path / "landing"
    summary = convert(sources, out, rows_per_part=2)  # several gzip parts per day
    total_raw = total_clean = total_quarantined = 0
    for day in summary.days:
        report = validate_day(
            spark, day, out / "raw" / "events", out / "clean" / "events", out / "quarantine", out / "quality" / "reports",
            max_quarantine_fraction=1.0,
        )
        assert report.raw_rows == summary.rows_per_day[day], day
        assert report.raw_rows == report.clean_rows + report.quarantined_rows, day
        total_raw += report.raw_rows
        total_clean += report.clean_rows
        total_quarantined += report.quarantined_rows
        if day == date(2019, 10, 2):
            # The bad event type and the short line reached validation and were quarantined there.
            assert report.rule_counts["event_type_allowed"] == 1
            assert report.rule_counts["malformed_line"] == 1
            assert report.quarantined_rows == 2
        else:
            assert report.quarantined_rows == 0, (day, report.rule_counts)
    assert total_raw == summary.written
    assert total_raw + summary.rejected == summary.rows  # every source row: validated or rejected
    assert (total_clean, total_quarantined) == (summary.written - 2, 2)
