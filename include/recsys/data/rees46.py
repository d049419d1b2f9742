"""Adapter: the public REES46 e-commerce behaviour files, as published, into the landing zone.

REES46 ships one file per month (``2019-Oct.csv``, often ``2019-Oct.csv.gz``; ~40M rows and ~5 GB
uncompressed for one month) with the header::

    event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session

and times like ``2019-10-01 00:00:00 UTC``. The pipeline reads one folder per UTC day, so this
adapter splits each file by day::

    OUT/raw/events/ds=YYYY-MM-DD/part-NNNN.csv.gz   the day's lines, NNNN = 0000, 0001, ...
    OUT/raw/rejected/<source-name>.csv               lines that belong to no day, with the reason

(``<source-name>`` is the file name without ``.csv``/``.gz``: rejects of ``2019-Oct.csv.gz`` go to
``raw/rejected/2019-Oct.csv``).

What it promises:

* **Rows untouched.** Lines are routed as text, byte for byte (line endings included; a last line
  without a newline gets one), under the source's own header line. Nothing is parsed into types and
  written back, so ``validate_raw`` sees exactly what the source had: a line with a wrong field count,
  a bad price or an unknown event type lands in its day and is quarantined *there*, with the rule it
  broke. The adapter is not a second, silent validator.
* **Nothing lost.** The only thing the adapter must understand is ``event_time`` (to pick the day).
  A line whose ``event_time`` is missing or not in a contract format (``2019-10-01 00:00:00 UTC`` or
  ISO-8601, as ``validate_raw`` parses it) has no day: it goes to ``raw/rejected/<source-name>.csv`` with
  its line number, the reason and the raw line, and is counted. For every source,
  lines read = lines written to day folders + lines rejected (blank lines carry no data and are
  counted apart); the run fails if that does not hold.
* **Streaming.** The file is read in chunks of ``chunk_rows`` lines (``itertools.islice`` over the
  text stream; each chunk is a pandas Series, parsed with vectorised string and datetime operations),
  so memory stays bounded by the chunk size whatever the month's size. A day is split into parts of
  at most ``rows_per_part`` lines, so Spark can read a day's (non-splittable) gzip parts in parallel.
  Lines are routed as raw text rather than through ``pandas.read_csv(chunksize=...)`` because the CSV
  parser would drop or refuse malformed lines and re-format the values it writes back.
* **Idempotent, never half-written.** Everything is written to a staging folder under
  ``OUT/raw/events/`` first; only when every source has been read completely does each day's folder
  replace the previous one (a rename). A re-run replaces the days it writes, so give every source
  file that holds a given day in the same run (REES46 months are cut on UTC month boundaries, so
  consecutive months never share a day). A truncated or corrupt source stops the run before any day
  folder is touched.

``python -m recsys.data.rees46 --source 2019-Oct.csv.gz [--source 2019-Nov.csv.gz] --out ./data``
"""

from __future__ import annotations

import argparse
import csv
import gzip
import itertools
import os
import re
import shutil
import zlib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd

from recsys.constants import RAW_COLUMNS

TIME_COLUMN = "event_time"
DEFAULT_CHUNK_ROWS = 200_000
DEFAULT_ROWS_PER_PART = 1_000_000
GZIP_LEVEL = 6
REJECTED_COLUMNS = ("line_number", "reason", "raw_line")

#: The REES46 format, the fast path.
_REES46_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
#: The other timestamps the input contract (and so ``validate_raw``) accepts: ISO-8601 with a space or
#: a ``T``, optional fraction up to microseconds, optional ``Z`` or ``+HH:MM`` offset. Naive times are UTC.
_ISO_PATTERN = r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?$"


class Rees46Error(RuntimeError):
    """A source file cannot be converted; the message names the file, the problem and what to do."""


@dataclass
class SourceSummary:
    source: Path
    lines: int = 0  # data lines (header excluded, blank lines excluded)
    written: int = 0
    rejected: int = 0
    blank_lines: int = 0
    rows_per_day: dict[date, int] = field(default_factory=dict)
    rejected_path: Path | None = None


@dataclass(frozen=True)
class ConversionSummary:
    out_dir: Path
    sources: tuple[SourceSummary, ...]
    rows_per_day: dict[date, int]
    parts: int
    replaced_days: tuple[date, ...]

    @property
    def rows(self) -> int:
        return sum(s.lines for s in self.sources)

    @property
    def written(self) -> int:
        return sum(s.written for s in self.sources)

    @property
    def rejected(self) -> int:
        return sum(s.rejected for s in self.sources)

    @property
    def days(self) -> list[date]:
        return sorted(self.rows_per_day)

    def describe(self) -> str:
        days = self.days
        span = f"{days[0]} to {days[-1]}" if days else "none"
        lines = [
            f"REES46 -> {self.out_dir / 'raw' / 'events'}",
            f"  rows     : {self.rows:,} read, {self.written:,} written, {self.rejected:,} rejected",
            f"  days     : {len(days)} ({span}), {self.parts} part file(s)"
            + (f"; replaced {len(self.replaced_days)} existing day folder(s)" if self.replaced_days else ""),
        ]
        for s in self.sources:
            detail = f"{s.lines:,} rows -> {s.written:,} written, {s.rejected:,} rejected"
            if s.blank_lines:
                detail += f", {s.blank_lines:,} blank line(s) skipped"
            if s.rejected_path is not None:
                detail += f" (see {s.rejected_path})"
            lines.append(f"  {s.source.name}: {detail}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
def _open_text(path: Path):
    """The source as text, gzip or plain by its magic bytes; undecodable bytes survive the round trip."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    # newline="": keep "\r\n" exactly as it is; utf-8-sig: a byte-order mark is not part of the header.
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="")
    return open(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="")


def _header_columns(header_line: str) -> list[str]:
    return [c.strip().strip('"') for c in next(csv.reader([header_line.rstrip("\r\n")]))] if header_line.strip() else []


def _time_fields(lines: pd.Series, index: int) -> pd.Series:
    """The ``event_time`` field of each line (NaN where the line has too few fields)."""
    stripped = lines.str.rstrip("\r\n")
    fields = stripped.str.split(",", n=index + 1, regex=False).str[index]
    quoted = stripped.str.contains('"', regex=False)
    if quoted.any():  # rare: a quoted field may hold commas, so those lines get a real CSV parse
        parsed = [next(csv.reader([text]), []) for text in stripped[quoted]]
        fields[quoted] = [row[index] if len(row) > index else None for row in parsed]
    return fields


def parse_event_days(fields: pd.Series) -> pd.Series:
    """UTC day of each ``event_time`` text, NaT where it is not a contract timestamp."""
    text = fields.astype("string").str.strip()
    parsed = pd.to_datetime(text, format=_REES46_FORMAT, errors="coerce", utc=True)
    other = parsed.isna() & text.notna() & text.str.match(_ISO_PATTERN, na=False)
    if other.any():
        parsed[other] = pd.to_datetime(text[other], format="ISO8601", errors="coerce", utc=True)
    return parsed.dt.floor("D")


def _reason(field_text) -> str:
    if field_text is None or pd.isna(field_text):
        return "event_time missing: the line has fewer fields than the header"
    if not str(field_text).strip():
        return "event_time empty"
    return (
        f"event_time {str(field_text)[:60]!r} is not a timestamp "
        "('2019-10-01 00:00:00 UTC' or ISO-8601): the line belongs to no day"
    )


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
class _DayWriter:
    """Gzip part files of the staged day folders.

    A day's part rolls over every ``rows_per_part`` lines. At most ``max_open`` parts are open at once
    (unsorted input can touch many days): the least recently written is closed, and the next lines of
    its day start a new part.
    """

    def __init__(self, staging: Path, rows_per_part: int, max_open: int = 64):
        self.staging = staging
        self.rows_per_part = rows_per_part
        self.max_open = max_open
        self.parts_per_day: dict[date, int] = {}
        self._open: dict[date, list] = {}  # day -> [handle, rows in the part]; insertion order = recency

    def _new_part(self, day: date, header: str) -> list:
        if len(self._open) >= self.max_open:
            oldest = next(iter(self._open))
            self._open.pop(oldest)[0].close()
        number = self.parts_per_day.get(day, 0)
        folder = self.staging / f"ds={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        handle = gzip.open(folder / f"part-{number:04d}.csv.gz", "wb", compresslevel=GZIP_LEVEL)
        handle.write(header.encode("utf-8", "surrogateescape"))
        self.parts_per_day[day] = number + 1
        return [handle, 0]

    def write(self, day: date, lines: list[str], header: str) -> None:
        position = 0
        while position < len(lines):
            part = self._open.pop(day, None)
            if part is None or part[1] >= self.rows_per_part:
                if part is not None:
                    part[0].close()
                part = self._new_part(day, header)
            take = lines[position : position + self.rows_per_part - part[1]]
            part[0].write("".join(take).encode("utf-8", "surrogateescape"))
            part[1] += len(take)
            self._open[day] = part  # re-inserted: now the most recently written
            position += len(take)

    def close_all(self) -> None:
        for handle, _ in self._open.values():
            handle.close()
        self._open.clear()


def _base_name(path: Path) -> str:
    """``2019-Oct.csv.gz`` -> ``2019-Oct``: the name rejected rows are filed under."""
    name = path.name
    for suffix in (".gz", ".csv"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return name


def _with_newline(line: str) -> str:
    return line if line.endswith("\n") else line + "\n"


def _convert_source(path: Path, writer: _DayWriter, rejected_path: Path, chunk_rows: int) -> SourceSummary:
    """Route one source's lines into the staged day folders; rejected lines go to ``rejected_path``."""
    summary = SourceSummary(source=path)
    rejected_handle = None
    try:
        with _open_text(path) as handle:
            header = handle.readline()
            columns = _header_columns(header)
            missing = [c for c in RAW_COLUMNS if c not in columns]
            if missing:
                raise Rees46Error(
                    f"{path}: header {columns} lacks column(s) {', '.join(missing)}. This is not a REES46 behaviour "
                    f"file (expected {','.join(RAW_COLUMNS)}): check the file, or its delimiter."
                )
            header = _with_newline(header)
            time_index = columns.index(TIME_COLUMN)
            line_number = 1  # the header
            while True:
                chunk = list(itertools.islice(handle, chunk_rows))
                if not chunk:
                    break
                lines = pd.Series(chunk, index=pd.RangeIndex(line_number + 1, line_number + 1 + len(chunk)), dtype=object)
                line_number += len(chunk)
                blank = lines.str.strip().eq("")
                summary.blank_lines += int(blank.sum())
                lines = lines[~blank]
                if lines.empty:
                    continue
                summary.lines += len(lines)
                fields = _time_fields(lines, time_index)
                days = parse_event_days(fields)
                bad = days.isna()
                if bad.any():
                    if rejected_handle is None:
                        rejected_path.parent.mkdir(parents=True, exist_ok=True)
                        rejected_handle = open(rejected_path, "w", encoding="utf-8", errors="surrogateescape", newline="")
                        rejected_writer = csv.writer(rejected_handle, lineterminator="\n")
                        rejected_writer.writerow(REJECTED_COLUMNS)
                    for number in lines.index[bad]:
                        rejected_writer.writerow((number, _reason(fields[number]), lines[number].rstrip("\r\n")))
                    summary.rejected += int(bad.sum())
                for day, group in lines[~bad].groupby(days[~bad], sort=True):
                    texts = [_with_newline(text) for text in group.tolist()]
                    writer.write(day.date(), texts, header)
                    summary.rows_per_day[day.date()] = summary.rows_per_day.get(day.date(), 0) + len(texts)
                    summary.written += len(texts)
    except (OSError, EOFError, zlib.error, UnicodeError) as exc:
        raise Rees46Error(
            f"{path}: cannot be read to its end ({type(exc).__name__}: {exc}). The file is truncated or corrupt: "
            "download it again (for .gz, check it with `gzip -t`). No day folder was changed."
        ) from exc
    finally:
        if rejected_handle is not None:
            rejected_handle.close()
    if rejected_handle is not None:
        summary.rejected_path = rejected_path
    if summary.written + summary.rejected != summary.lines:
        raise Rees46Error(
            f"{path}: {summary.lines} lines read but {summary.written} written + {summary.rejected} rejected; "
            "this is a bug in the adapter, please report it with the file."
        )
    return summary


def convert(
    sources: list[Path | str] | Path | str,
    out_dir: Path | str,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    rows_per_part: int = DEFAULT_ROWS_PER_PART,
) -> ConversionSummary:
    """Split REES46 monthly file(s) into the landing zone's day folders; see the module docstring."""
    sources = [Path(s) for s in ([sources] if isinstance(sources, (str, Path)) else sources)]
    out_dir = Path(out_dir)
    if not sources:
        raise Rees46Error("no source file given: pass one or more REES46 files (e.g. 2019-Oct.csv.gz)")
    if chunk_rows < 1 or rows_per_part < 1:
        raise ValueError(f"chunk_rows and rows_per_part must be positive, got {chunk_rows} and {rows_per_part}")
    for path in sources:
        if not path.is_file():
            raise Rees46Error(f"source file {path} not found: pass the path of a REES46 file such as 2019-Oct.csv.gz")
    names = [_base_name(p) for p in sources]
    if len(set(names)) != len(names):
        raise Rees46Error(
            f"two sources share a base name ({[str(p) for p in sources]}): rejected rows are filed under "
            "raw/rejected/<name>.csv, so pass each month once (either the .csv or the .csv.gz) or rename one"
        )

    events_dir = out_dir / "raw" / "events"
    events_dir.mkdir(parents=True, exist_ok=True)
    staging = events_dir / f"_staging-rees46-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    writer = _DayWriter(staging, rows_per_part)
    try:
        summaries = []
        for path in sources:
            summaries.append(_convert_source(path, writer, staging / "_rejected" / f"{_base_name(path)}.csv", chunk_rows))
            writer.close_all()  # a part file never mixes sources (their headers may order columns differently)
        rows_per_day: dict[date, int] = {}
        for s in summaries:
            for day, n in s.rows_per_day.items():
                rows_per_day[day] = rows_per_day.get(day, 0) + n
        replaced = []
        for day in sorted(rows_per_day):
            target = events_dir / f"ds={day.isoformat()}"
            if target.exists():
                shutil.rmtree(target)
                replaced.append(day)
            (staging / target.name).rename(target)
        rejected_dir = out_dir / "raw" / "rejected"
        for s in summaries:
            final = rejected_dir / f"{_base_name(s.source)}.csv"
            if s.rejected_path is not None:
                rejected_dir.mkdir(parents=True, exist_ok=True)
                s.rejected_path = s.rejected_path.replace(final)
            elif final.exists():
                final.unlink()  # a previous run's rejects of this file no longer apply
    finally:
        writer.close_all()
        shutil.rmtree(staging, ignore_errors=True)
    return ConversionSummary(out_dir, tuple(summaries), rows_per_day, sum(writer.parts_per_day.values()), tuple(replaced))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recsys.data.rees46",
        description="Split REES46 e-commerce behaviour files (.csv or .csv.gz) into the landing zone's day folders.",
    )
    parser.add_argument("--source", action="append", required=True, type=Path, help="a REES46 monthly file; repeat for several")
    parser.add_argument("--out", required=True, type=Path, help="the landing zone (RECSYS_DATA_DIR); days go to OUT/raw/events/")
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, help="lines read per chunk (memory bound)")
    parser.add_argument("--rows-per-part", type=int, default=DEFAULT_ROWS_PER_PART, help="lines per gzip part file of a day")
    args = parser.parse_args(argv)
    try:
        summary = convert(args.source, args.out, chunk_rows=args.chunk_rows, rows_per_part=args.rows_per_part)
    except (Rees46Error, ValueError) as exc:
        parser.exit(2, f"error: {exc}\n")
    print(summary.describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
