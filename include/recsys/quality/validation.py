"""Validate one day of raw events with Great Expectations on Spark; quarantine bad rows, lose none.

Two levels:

* file level (:func:`check_files`): every file of the day must have the contract's columns. A wrong
  file fails the task with a message naming the file, the missing column and what to do.
* row level (:data:`ROW_RULES`): each rule is one Great Expectations expectation *and* the Spark
  expression of the same rule. GX validates the typed day; the Spark expression routes each failing
  row to the quarantine with the names of the rules it broke. The two must agree on every rule's
  count (``duplicate_event`` by a bound, see :func:`_duplicate_counts_agree`), and raw rows must
  equal clean rows plus quarantined rows, or the run stops.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import shutil
import uuid
import zlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from recsys.constants import EVENT_TYPES, RAW_COLUMNS
from recsys.errors import DataQualityError, QuarantineLimitError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

RAW_FILE_SUFFIXES = (".csv", ".csv.gz", ".parquet")
FAILED_RULES_COL = "failed_rules"
SOURCE_FILE_COL = "source_file"
#: Spark's PERMISSIVE CSV parser puts the whole line here when it has too many or too few fields.
CORRUPT_RECORD_COL = "_corrupt_record"
#: Quarantine column with the whole line as it arrived, for malformed lines (empty otherwise).
RAW_LINE_COL = "raw_line"
#: 1 for the first copy of an event, 2, 3, ... for exact duplicates of it.
COPY_NUMBER_COL = "_copy_number"
#: Several days validated in one pass (:func:`validate_days`): the partition day each row was landed under.
DAY_COL = "_ds"
#: Microseconds from the start of the row's partition day (UTC) to its event_time: in [0, 86,400,000,000) on the day.
DAY_OFFSET_COL = "_micros_into_day"
MICROS_PER_DAY = 86_400_000_000
#: Whole numbers up to here are exact as doubles; beyond, "1e3"-style input would lose digits.
MAX_EXACT_DOUBLE = float(2**53)
MAX_PRICE = 1_000_000.0
TIMESTAMP_FORMATS = (
    "yyyy-MM-dd HH:mm:ss 'UTC'",
    # Fractional seconds are optional: a Parquet timestamp cast to text carries them.
    "yyyy-MM-dd HH:mm:ss[.SSSSSS]",
    "yyyy-MM-dd'T'HH:mm:ss[.SSSSSS]XXX",
    "yyyy-MM-dd'T'HH:mm:ss[.SSSSSS]",
)


@dataclass(frozen=True)
class RowRule:
    """One row-level rule: a GX expectation and the Spark expression of the same rule.

    ``expectation(ds)`` and ``violates(ds)`` check one day's rows. With ``ds=None`` they check rows of
    several days at once (:func:`validate_days`), each row against its own partition day (:data:`DAY_COL`).
    """

    name: str
    column: str
    description: str
    expectation: Callable[[date | None], object]
    violates: Callable[[date | None], "Column"]
    #: How GX's unexpected count must relate to the Spark count: equal, unless the rule says otherwise.
    counts_agree: Callable[[int, int], bool] = lambda gx_count, spark_count: gx_count == spark_count


def _duplicate_counts_agree(gx_count: int, spark_count: int) -> bool:
    """GX flags *every* copy of a duplicated event; the quarantine takes only the 2nd+ copies.

    GX has no expectation for "all but the first copy", so the counts cannot be equal. For groups of
    n >= 2 identical rows, GX counts sum(n) and Spark sum(n - 1): with g = number of groups,
    GX - Spark = g and 1 <= g <= Spark, so both are zero together, or Spark < GX <= 2 * Spark.
    """
    if spark_count == 0:
        return gx_count == 0
    return spark_count < gx_count <= 2 * spark_count


def _rules() -> tuple[RowRule, ...]:
    import great_expectations.expectations as gxe
    from pyspark.sql import functions as F

    def day_bounds(ds: date) -> tuple[datetime, datetime]:
        start = datetime(ds.year, ds.month, ds.day, tzinfo=timezone.utc)
        return start, start + timedelta(days=1) - timedelta(microseconds=1)

    def not_null_rule(column: str) -> RowRule:
        return RowRule(
            name=f"{column}_present_and_numeric",
            column=column,
            description=f"{column} must be present and a whole number",
            expectation=lambda ds: gxe.ExpectColumnValuesToNotBeNull(column=column),
            violates=lambda ds: F.col(column).isNull(),
        )

    return (
        RowRule(
            name="malformed_line",
            column=CORRUPT_RECORD_COL,
            description="each line must have exactly one field per header column (a wrong count is never truncated)",
            expectation=lambda ds: gxe.ExpectColumnValuesToBeNull(column=CORRUPT_RECORD_COL),
            violates=lambda ds: F.col(CORRUPT_RECORD_COL).isNotNull(),
        ),
        RowRule(
            name="event_time_parseable",
            column="event_time",
            description="event_time must be a timestamp ('2019-10-01 00:00:00 UTC' or ISO-8601)",
            expectation=lambda ds: gxe.ExpectColumnValuesToNotBeNull(column="event_time"),
            violates=lambda ds: F.col("event_time").isNull(),
        ),
        RowRule(
            name="event_time_in_partition_day",
            column="event_time",
            description="event_time must fall on the partition's day (UTC)",
            # Rows of several days: GX checks the microseconds from each row's own day start (a column Spark
            # derives) against the same bounds, since one between-expectation holds only one day.
            expectation=lambda ds: gxe.ExpectColumnValuesToBeBetween(
                column="event_time", min_value=day_bounds(ds)[0], max_value=day_bounds(ds)[1]
            ) if ds is not None else gxe.ExpectColumnValuesToBeBetween(
                column=DAY_OFFSET_COL, min_value=0, max_value=MICROS_PER_DAY, strict_max=True
            ),
            violates=lambda ds: F.col("event_time").isNotNull()
            & (F.to_date("event_time") != (F.lit(ds.isoformat()).cast("date") if ds is not None else F.col(DAY_COL))),
        ),
        RowRule(
            name="event_type_allowed",
            column="event_type",
            description=f"event_type must be one of {', '.join(EVENT_TYPES)}",
            expectation=lambda ds: gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)),
            violates=lambda ds: F.col("event_type").isNotNull() & ~F.col("event_type").isin(*EVENT_TYPES),
        ),
        RowRule(
            name="event_type_present",
            column="event_type",
            description="event_type must be present",
            expectation=lambda ds: gxe.ExpectColumnValuesToNotBeNull(column="event_type"),
            violates=lambda ds: F.col("event_type").isNull(),
        ),
        not_null_rule("product_id"),
        not_null_rule("user_id"),
        RowRule(
            name="price_present_and_numeric",
            column="price",
            description="price must be present and a number",
            expectation=lambda ds: gxe.ExpectColumnValuesToNotBeNull(column="price"),
            violates=lambda ds: F.col("price").isNull(),
        ),
        RowRule(
            name="price_in_range",
            column="price",
            description=f"price must be between 0 and {MAX_PRICE:,.0f}",
            expectation=lambda ds: gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, max_value=MAX_PRICE),
            violates=lambda ds: F.col("price").isNotNull() & ((F.col("price") < 0) | (F.col("price") > MAX_PRICE)),
        ),
        RowRule(
            name="category_id_numeric",
            column="category_id",
            description="category_id, when given, must be a whole number",
            expectation=lambda ds: gxe.ExpectColumnValuesToNotBeNull(column="_category_id_ok"),
            violates=lambda ds: F.col("_category_id_ok").isNull(),
        ),
        RowRule(
            name="duplicate_event",
            column=", ".join(RAW_COLUMNS),
            description="an exact duplicate of an earlier event (same value in every contract column); the first copy is kept",
            # A copy landed under another day is not a duplicate: each day is deduplicated on its own.
            expectation=lambda ds: gxe.ExpectCompoundColumnsToBeUnique(
                column_list=list(RAW_COLUMNS) + ([] if ds is not None else [DAY_COL]), ignore_row_if="never"
            ),
            violates=lambda ds: F.col(COPY_NUMBER_COL) > 1,
            counts_agree=_duplicate_counts_agree,
        ),
    )


# ---------------------------------------------------------------------------------------------
# file level
# ---------------------------------------------------------------------------------------------
def day_dir(raw_events_dir: Path, ds: date) -> Path:
    return Path(raw_events_dir) / f"ds={ds.isoformat()}"


def list_day_files(raw_events_dir: Path, ds: date) -> list[Path]:
    """The day's raw files; a missing or empty day is a clear error, not an empty result."""
    folder = day_dir(raw_events_dir, ds)
    if not folder.is_dir():
        raise DataQualityError(
            f"no raw events for ds={ds}: folder {folder} does not exist. "
            "Land the day's files there (raw/events/ds=YYYY-MM-DD/*.csv|.csv.gz|.parquet) or run for another date."
        )
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(RAW_FILE_SUFFIXES))
    if not files:
        raise DataQualityError(
            f"no raw event files for ds={ds} in {folder} (expected *.csv, *.csv.gz or *.parquet). "
            "Land the day's files there or run for another date."
        )
    return files


def _header_of(path: Path) -> list[str]:
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a broken file
            raise DataQualityError(f"{path}: not a readable Parquet file ({exc}). Re-land the file.") from exc
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        # utf-8-sig: a byte-order mark (Excel exports) must not hide the first column's name.
        with opener(path, "rt", encoding="utf-8-sig", errors="replace", newline="") as handle:
            first_line = handle.readline()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataQualityError(f"{path}: cannot be read ({exc}). Re-land the file.") from exc
    return [name.strip().strip('"') for name in first_line.rstrip("\r\n").split(",")] if first_line else []


def _check_gzip(path: Path) -> None:
    """Read a .gz file to its end: a truncated or corrupt archive is found here, not as a Java stack trace."""
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise DataQualityError(
            f"{path}: the gzip archive is truncated or corrupt ({exc}) (rule: gzip_complete). "
            "Re-land the file: copy or download it again and check it with `gzip -t`."
        ) from exc


def check_files(files: list[Path]) -> None:
    """File-level rule: every file carries all the contract's columns (extra columns are tolerated)."""
    problems = []
    for path in files:
        try:
            header = _header_of(path)
            if path.name.endswith(".gz"):
                _check_gzip(path)
        except DataQualityError as exc:
            problems.append(str(exc))
            continue
        if not header or header == [""]:
            problems.append(f"{path}: empty file (no header line)")
            continue
        missing = [column for column in RAW_COLUMNS if column not in header]
        if missing:
            delimiter_hint = " The header has no comma: is the delimiter wrong?" if len(header) == 1 else ""
            problems.append(
                f"{path}: missing column(s) {', '.join(missing)} (rule: columns_present; found {header}).{delimiter_hint}"
            )
            continue
        repeated = sorted({column for column in header if header.count(column) > 1})
        if repeated:
            problems.append(f"{path}: column(s) {', '.join(repeated)} appear more than once (rule: columns_unique).")
    if problems:
        raise DataQualityError(
            "raw events fail the file-level checks:\n  "
            + "\n  ".join(problems)
            + f"\nExpected columns: {', '.join(RAW_COLUMNS)} (the REES46 layout). Fix or re-export the file(s)."
        )


# ---------------------------------------------------------------------------------------------
# reading and typing
# ---------------------------------------------------------------------------------------------
def read_raw_day(spark: "SparkSession", files: list[Path]) -> "DataFrame":
    """All of the day's rows as strings (nothing dropped), with the file each row came from."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    frames = []
    # Columns are matched by name, so files may order them differently or carry extra ones. Each
    # group of files with the same header is read with that header as its schema (all strings)
    # plus the corrupt-record column: a line with too many or too few fields is kept and flagged,
    # never silently truncated or padded.
    csv_by_header: dict[tuple[str, ...], list[str]] = {}
    for path in files:
        if not path.name.endswith(".parquet"):
            csv_by_header.setdefault(tuple(_header_of(path)), []).append(str(path))
    for header, csv_files in csv_by_header.items():
        schema = StructType([StructField(c, StringType()) for c in header] + [StructField(CORRUPT_RECORD_COL, StringType())])
        frames.append(
            spark.read.option("header", True)
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT_RECORD_COL)
            # Without this, a query that does not read every column parses only the columns it
            # needs and no longer sees a wrong field count.
            .option("columnPruning", False)
            .schema(schema)
            .csv(csv_files)
            .select(*RAW_COLUMNS, CORRUPT_RECORD_COL)
            .withColumn(SOURCE_FILE_COL, F.input_file_name())
        )
    parquet_files = [str(p) for p in files if p.name.endswith(".parquet")]
    if parquet_files:
        pq = spark.read.parquet(*parquet_files)
        frames.append(
            pq.select(
                *[F.col(c).cast("string").alias(c) for c in RAW_COLUMNS], F.lit(None).cast("string").alias(CORRUPT_RECORD_COL)
            ).withColumn(SOURCE_FILE_COL, F.input_file_name())
        )
    raw = frames[0]
    for frame in frames[1:]:
        raw = raw.unionByName(frame)
    return raw


def typed_events(raw: "DataFrame") -> "DataFrame":
    """Parse the string columns into the contract's types; unparseable values become null (never an error).

    Also numbers each copy of an exact duplicate event (``_copy_number``; same typed value in every
    contract column, as :func:`recsys.features.transforms.deduplicate` sees it).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    def parse_time(column: str) -> "Column":
        text = F.trim(F.col(column))
        return F.coalesce(*[F.try_to_timestamp(text, F.lit(fmt)) for fmt in TIMESTAMP_FORMATS])

    def parse_whole_number(column: str) -> "Column":
        # "123.0" is a whole number written as a float (a common export artefact): accept it. Digits
        # are parsed as text first: REES46 category ids (~2e18) do not survive a trip through double.
        text = F.trim(F.col(column))
        exact = F.when(text.rlike(r"^[+-]?[0-9]+(\.0*)?$"), F.regexp_extract(text, r"^([+-]?[0-9]+)", 1).try_cast("long"))
        as_double = text.try_cast("double")
        other = F.when(
            (F.abs(as_double) <= F.lit(MAX_EXACT_DOUBLE)) & (as_double == F.floor(as_double)), as_double.try_cast("long")
        )
        return F.coalesce(exact, other)

    # Rows of several days (validate_days) carry their partition day: rules and duplicates are per day.
    day_columns = [DAY_COL] if DAY_COL in raw.columns else []
    category_raw = F.trim(F.col("category_id"))
    typed = raw.select(
        parse_time("event_time").alias("event_time"),
        F.lower(F.trim(F.col("event_type"))).alias("event_type"),
        parse_whole_number("product_id").alias("product_id"),
        parse_whole_number("category_id").alias("category_id"),
        F.nullif(F.trim(F.col("category_code")), F.lit("")).alias("category_code"),
        F.nullif(F.trim(F.col("brand")), F.lit("")).alias("brand"),
        F.trim(F.col("price")).try_cast("double").alias("price"),
        parse_whole_number("user_id").alias("user_id"),
        F.nullif(F.trim(F.col("user_session")), F.lit("")).alias("user_session"),
        # A sentinel so "category_id given but not a number" is a not-null expectation in GX.
        F.when(category_raw.isNull() | (category_raw == "") | parse_whole_number("category_id").isNotNull(), F.lit(1))
        .alias("_category_id_ok"),
        F.col(CORRUPT_RECORD_COL),
        *[F.col(c).alias(f"_raw_{c}") for c in RAW_COLUMNS],
        F.col(SOURCE_FILE_COL),
        *[F.col(c) for c in day_columns],
    )
    if day_columns:
        typed = typed.withColumn(
            DAY_OFFSET_COL, F.unix_micros("event_time") - F.unix_date(DAY_COL).cast("long") * F.lit(MICROS_PER_DAY)
        )
    # The copy kept first is one that can pass the other rules (a well-formed line, a category_id
    # that parsed), so a good event is never quarantined for duplicating a broken line. Among equals,
    # the order only decides which raw text and source file the quarantine shows.
    copies = Window.partitionBy(*RAW_COLUMNS, *day_columns).orderBy(
        F.col(CORRUPT_RECORD_COL).asc_nulls_first(),
        F.col("_category_id_ok").asc_nulls_last(),
        SOURCE_FILE_COL,
        *[f"_raw_{c}" for c in RAW_COLUMNS],
    )
    return typed.withColumn(COPY_NUMBER_COL, F.row_number().over(copies))


# ---------------------------------------------------------------------------------------------
# GX run
# ---------------------------------------------------------------------------------------------
def run_expectations(typed: "DataFrame", ds: date | None, docs_dir: Path | None) -> tuple[dict[str, int], str | None]:
    """Validate the typed day with GX; return each rule's unexpected count and the Data Docs page.

    ``ds=None``: the rows of several days at once, each checked against its own day (:class:`RowRule`).
    """
    import great_expectations as gx

    rules = _rules()
    if docs_dir is not None:
        docs_dir.mkdir(parents=True, exist_ok=True)
        context = gx.get_context(mode="file", project_root_dir=str(docs_dir))
    else:
        context = gx.get_context(mode="ephemeral")
    try:
        context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    except Exception:  # noqa: BLE001 - cosmetic: older/newer GX may not accept it
        pass
    source = context.data_sources.add_or_update_spark(name="raw_events")
    asset = source.get_asset("events") if "events" in source.get_asset_names() else source.add_dataframe_asset("events")
    batch_name = "whole_day"
    try:
        batch_definition = asset.get_batch_definition(batch_name)
    except KeyError:
        batch_definition = asset.add_batch_definition_whole_dataframe(batch_name)
    suite = gx.ExpectationSuite(name="raw_events_rows")
    meta_by_rule = {}
    for rule in rules:
        expectation = rule.expectation(ds)
        expectation.meta = {"rule": rule.name, "description": rule.description}
        suite.add_expectation(expectation)
        meta_by_rule[rule.name] = rule
    suite = context.suites.add_or_update(suite)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name="raw_events_rows", data=batch_definition, suite=suite)
    )
    actions = []
    if docs_dir is not None:
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="update_data_docs"))
    # Only the unexpected counts are read back here. Examples of bad values (GX's SUMMARY format: a
    # Spark job per rule for the values and another for their counts) are worth it only where a person
    # sees them, the Data Docs of the run's day; history days skip them (about a third of a day's time).
    result_format = "SUMMARY" if docs_dir is not None else {"result_format": "BASIC", "partial_unexpected_count": 0}
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(name="raw_events", validation_definitions=[definition], actions=actions, result_format=result_format)
    )
    result = checkpoint.run(batch_parameters={"dataframe": typed})
    counts: dict[str, int] = {}
    for run_result in result.run_results.values():
        for expectation_result in run_result.results:
            rule_name = (expectation_result.expectation_config.meta or {}).get("rule")
            if rule_name:
                counts[rule_name] = int(expectation_result.result.get("unexpected_count") or 0)
    missing = set(meta_by_rule) - set(counts)
    if missing:
        raise DataQualityError(f"Great Expectations returned no result for rule(s) {sorted(missing)}")
    docs_page = None
    if docs_dir is not None:
        sites = context.get_docs_sites_urls()
        docs_page = sites[0]["site_url"] if sites else None
    return counts, docs_page


# ---------------------------------------------------------------------------------------------
# the task-level entry point
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ValidationReport:
    ds: str
    raw_rows: int
    clean_rows: int
    quarantined_rows: int
    rule_counts: dict[str, int]
    clean_path: str
    quarantine_path: str
    docs_page: str | None
    report_path: str

    @property
    def quarantined_fraction(self) -> float:
        return self.quarantined_rows / self.raw_rows if self.raw_rows else 0.0

    def as_dict(self) -> dict:
        return {**self.__dict__, "quarantined_fraction": self.quarantined_fraction}


def _report_path(reports_dir: Path, ds: date) -> Path:
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    return reports_dir / f"ds={ds.isoformat()}.json"


def _save(report: ValidationReport) -> ValidationReport:
    Path(report.report_path).write_text(json.dumps(report.as_dict(), indent=2))
    return report


def _empty_day(typed: "DataFrame", ds: date, files: list[Path], clean_events_dir: Path, quarantine_dir: Path,
               reports_dir: Path) -> ValidationReport:
    """A day whose files hold a header and no events: a quiet day, not an error.

    The day's clean partition is written empty (with the schema), so the feature build sees a validated
    day with nothing in it and recomputes everything from the rest of the lookback window. No rule ran on
    zero rows, so there is no quarantine and no Data Docs page. A *missing* day folder stays an error
    (:func:`list_day_files`): late data must not be mistaken for a quiet day.
    """
    clean_path = Path(clean_events_dir) / f"ds={ds.isoformat()}"
    typed.limit(0).select(*RAW_COLUMNS).write.mode("overwrite").parquet(str(clean_path))
    # An earlier landing of this day may have left a quarantine: it no longer describes the day.
    shutil.rmtree(Path(quarantine_dir) / f"ds={ds.isoformat()}", ignore_errors=True)
    report = _save(ValidationReport(
        ds.isoformat(), 0, 0, 0, {rule.name: 0 for rule in _rules()}, str(clean_path), "", None,
        str(_report_path(reports_dir, ds)),
    ))
    log.warning(
        "ds=%s: the raw files hold a header but no events (%s): validated as an empty day; recommendations "
        "for it are recomputed from the lookback window's history",
        ds, ", ".join(str(f) for f in files),
    )
    return report


def _unreadable(ds: date | str, files: list[Path], exc: Exception) -> DataQualityError:
    first_line = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return DataQualityError(
        f"ds={ds}: Spark could not read the day's files ({', '.join(str(f) for f in files)}): {first_line[:500]}. "
        "Check or re-land the files."
    )


def _quarantine_columns() -> list["Column"]:
    """The quarantine keeps the raw text of each bad row exactly as it arrived, plus why and from where."""
    from pyspark.sql import functions as F

    return [
        *[F.col(f"_raw_{c}").alias(c) for c in RAW_COLUMNS],
        F.col(FAILED_RULES_COL),
        F.col(SOURCE_FILE_COL),
        F.col(CORRUPT_RECORD_COL).alias(RAW_LINE_COL),
    ]


def _summary(rule_counts: dict[str, int]) -> str:
    return ", ".join(f"{name}={count}" for name, count in rule_counts.items() if count) or "none"


def _too_many_bad_rows(ds: date, quarantined_rows: int, raw_rows: int, max_fraction: float, rule_counts: dict[str, int],
                       quarantine_path: Path) -> QuarantineLimitError:
    return QuarantineLimitError(
        f"ds={ds}: {quarantined_rows} of {raw_rows} rows ({quarantined_rows / raw_rows:.1%}) failed validation, above the "
        f"{max_fraction:.1%} threshold (RECSYS_QUARANTINE_MAX_FRACTION). Failed rules: {_summary(rule_counts)}. "
        f"The bad rows are in {quarantine_path}; the run stops before training and nothing is published. "
        "Fix the source and re-run the day, or raise the threshold if this is expected."
    )


def _rows_lost(ds: date, raw_rows: int, clean_rows: int, quarantined_rows: int) -> DataQualityError:
    return DataQualityError(
        f"ds={ds}: rows lost in validation: raw={raw_rows} but clean={clean_rows} + quarantined={quarantined_rows}"
    )


def _log_day(report: ValidationReport) -> None:
    log.info(
        "ds=%s: %d raw rows, %d clean, %d quarantined (%.2f%%; %s). Data Docs: %s",
        report.ds, report.raw_rows, report.clean_rows, report.quarantined_rows, 100 * report.quarantined_fraction,
        _summary(report.rule_counts), report.docs_page,
    )


def validate_day(
    spark: "SparkSession",
    ds: date,
    raw_events_dir: Path,
    clean_events_dir: Path,
    quarantine_dir: Path,
    reports_dir: Path,
    max_quarantine_fraction: float,
    docs_dir: Path | None = None,
) -> ValidationReport:
    """Validate the day, write clean rows (Parquet) and quarantined rows (CSV with the failed rules).

    Raises :class:`DataQualityError` on wrong files, on a GX/Spark disagreement, on lost rows, or
    when more than ``max_quarantine_fraction`` of the rows are bad (after writing the quarantine,
    so a person can look at it; the clean partition is then not written).
    """
    from pyspark.sql import functions as F

    files = list_day_files(raw_events_dir, ds)
    check_files(files)
    log.info("validating %d file(s) for ds=%s", len(files), ds)

    typed = None
    try:
        typed = typed_events(read_raw_day(spark, files)).persist()
        raw_rows = typed.count()
    except Exception as exc:  # noqa: BLE001 - py4j/Spark errors: report the files, not a stack trace
        if typed is not None:
            typed.unpersist()
        raise _unreadable(ds, files, exc) from exc
    if raw_rows == 0:
        typed.unpersist()
        return _empty_day(typed, ds, files, clean_events_dir, quarantine_dir, reports_dir)

    gx_counts, docs_page = run_expectations(typed.drop(*[c for c in typed.columns if c.startswith("_raw_")]), ds, docs_dir)

    rules = _rules()
    failed = F.concat_ws(",", *[F.when(rule.violates(ds), F.lit(rule.name)) for rule in rules])
    flagged = typed.withColumn(FAILED_RULES_COL, failed).persist()
    spark_counts = {
        rule.name: int(value or 0)
        for rule, value in zip(
            rules,
            flagged.agg(*[F.sum(rule.violates(ds).cast("int")) for rule in rules]).first(),
        )
    }
    disagreements = _disagreements(rules, gx_counts, spark_counts)
    if disagreements:
        raise DataQualityError(
            f"ds={ds}: Great Expectations and the quarantine split disagree on rule counts (gx, spark): {disagreements}"
        )

    bad = flagged.filter(F.col(FAILED_RULES_COL) != "")
    good = flagged.filter(F.col(FAILED_RULES_COL) == "")
    quarantine_path = Path(quarantine_dir) / f"ds={ds.isoformat()}"
    bad.select(*_quarantine_columns()).coalesce(1).write.mode("overwrite").option("header", True).csv(str(quarantine_path))
    quarantined_rows = spark.read.option("header", True).csv(str(quarantine_path)).count()
    report_path = _report_path(reports_dir, ds)
    clean_path = Path(clean_events_dir) / f"ds={ds.isoformat()}"

    if quarantined_rows / raw_rows > max_quarantine_fraction:
        _save(ValidationReport(ds.isoformat(), raw_rows, 0, quarantined_rows, spark_counts, "", str(quarantine_path), docs_page, str(report_path)))
        raise _too_many_bad_rows(ds, quarantined_rows, raw_rows, max_quarantine_fraction, spark_counts, quarantine_path)

    good.select(*RAW_COLUMNS).write.mode("overwrite").parquet(str(clean_path))
    clean_rows = spark.read.parquet(str(clean_path)).count()
    flagged.unpersist()
    typed.unpersist()
    if clean_rows + quarantined_rows != raw_rows:
        shutil.rmtree(clean_path, ignore_errors=True)  # not a validated day: the next run validates it again
        raise _rows_lost(ds, raw_rows, clean_rows, quarantined_rows)
    report = _save(ValidationReport(
        ds.isoformat(), raw_rows, clean_rows, quarantined_rows, spark_counts, str(clean_path), str(quarantine_path), docs_page, str(report_path)
    ))
    _log_day(report)
    return report


def _disagreements(rules, gx_counts: dict[str, int], spark_counts: dict[str, int]) -> dict[str, tuple[int, int]]:
    return {
        rule.name: (gx_counts[rule.name], spark_counts[rule.name])
        for rule in rules
        if not rule.counts_agree(gx_counts[rule.name], spark_counts[rule.name])
    }


# ---------------------------------------------------------------------------------------------
# many days in one pass
# ---------------------------------------------------------------------------------------------
class _BatchUnusable(RuntimeError):
    """The days cannot be validated together (a file Spark cannot read, GX and Spark disagree): the
    caller validates them one by one instead, so that whatever is wrong is reported against its day."""


def validate_days(
    spark: "SparkSession",
    days: list[date],
    raw_events_dir: Path,
    clean_events_dir: Path,
    quarantine_dir: Path,
    reports_dir: Path,
    max_quarantine_fraction: float,
) -> dict[date, ValidationReport | DataQualityError]:
    """Validate several days (a first run's history) in one pass; each day's outcome, report or error.

    Every day gets what :func:`validate_day` would give it, by the same rules: its clean partition, its
    quarantine, its report, or the same :class:`DataQualityError` (a bad day does not stop the others).
    Rules and duplicates apply per partition day. What changes is the cost: one Spark read, one Great
    Expectations run (BASIC results, no Data Docs) and one write per output for all the days, instead
    of one each; the GX/Spark agreement is checked on the rule totals over the days. When the days
    cannot go together (a file Spark cannot read, a disagreement), they are validated one by one.
    """
    outcomes: dict[date, ValidationReport | DataQualityError] = {}
    files_by_day: dict[date, list[Path]] = {}
    for day in days:
        try:
            files = list_day_files(raw_events_dir, day)
            check_files(files)
        except DataQualityError as exc:
            outcomes[day] = exc
            continue
        files_by_day[day] = files

    def one_by_one(pending: list[date]) -> None:
        for day in pending:
            try:
                outcomes[day] = validate_day(spark, day, raw_events_dir, clean_events_dir, quarantine_dir, reports_dir,
                                             max_quarantine_fraction)
            except DataQualityError as exc:
                outcomes[day] = exc

    if len(files_by_day) == 1:
        one_by_one(list(files_by_day))
    elif files_by_day:
        try:
            outcomes.update(_validate_together(spark, files_by_day, clean_events_dir, quarantine_dir, reports_dir,
                                               max_quarantine_fraction))
        except _BatchUnusable as exc:
            log.warning("validating the %d days one by one instead: %s", len(files_by_day), exc)
            one_by_one(list(files_by_day))
    return {day: outcomes[day] for day in days}


def _validate_together(
    spark: "SparkSession",
    files_by_day: dict[date, list[Path]],
    clean_events_dir: Path,
    quarantine_dir: Path,
    reports_dir: Path,
    max_quarantine_fraction: float,
) -> dict[date, ValidationReport | DataQualityError]:
    from pyspark.sql import functions as F

    days = sorted(files_by_day)
    files = [path for day in days for path in files_by_day[day]]
    log.info("validating %d days in one pass (%s .. %s, %d files)", len(days), days[0], days[-1], len(files))
    typed = None
    try:
        # Each day's files are read as they would be alone (a Parquet schema is never widened to another
        # day's), the day attached as a literal: one scan per day, one job for all.
        frames = [read_raw_day(spark, files_by_day[day]).withColumn(DAY_COL, F.lit(day)) for day in days]
        raw = frames[0]
        for frame in frames[1:]:
            raw = raw.unionByName(frame)
        typed = typed_events(raw).persist()
        raw_counts = {row[DAY_COL]: row["count"] for row in typed.groupBy(DAY_COL).count().collect()}
    except Exception as exc:  # noqa: BLE001 - py4j/Spark errors: the per-day path names the day and its files
        if typed is not None:
            typed.unpersist()
        raise _BatchUnusable(str(_unreadable(f"{days[0]}..{days[-1]}", files, exc))) from exc
    try:
        return _split_days(spark, typed, days, files_by_day, raw_counts, clean_events_dir, quarantine_dir, reports_dir,
                           max_quarantine_fraction)
    finally:
        typed.unpersist()


def _split_days(spark, typed, days, files_by_day, raw_counts, clean_events_dir, quarantine_dir, reports_dir,
                max_quarantine_fraction) -> dict[date, ValidationReport | DataQualityError]:
    from pyspark.sql import functions as F

    outcomes: dict[date, ValidationReport | DataQualityError] = {}
    for day in days:
        if not raw_counts.get(day):
            outcomes[day] = _empty_day(typed, day, files_by_day[day], clean_events_dir, quarantine_dir, reports_dir)
    days = [day for day in days if raw_counts.get(day)]
    if not days:
        return outcomes

    rules = _rules()
    failed = F.concat_ws(",", *[F.when(rule.violates(None), F.lit(rule.name)) for rule in rules])
    flagged = typed.withColumn(FAILED_RULES_COL, failed)
    try:
        gx_counts, _ = run_expectations(typed.drop(*[c for c in typed.columns if c.startswith("_raw_")]), None, None)
        counts_by_day = {
            row[DAY_COL]: {rule.name: int(row[rule.name] or 0) for rule in rules}
            for row in flagged.groupBy(DAY_COL).agg(*[F.sum(rule.violates(None).cast("int")).alias(rule.name) for rule in rules]).collect()
        }
    except Exception as exc:  # noqa: BLE001 - GX or Spark on the whole batch: alone, each day reports its own error
        raise _BatchUnusable(f"the rule checks over all the days failed: {str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__}") from exc
    totals = {rule.name: sum(counts[rule.name] for counts in counts_by_day.values()) for rule in rules}
    disagreements = _disagreements(rules, gx_counts, totals)
    if disagreements:
        raise _BatchUnusable(f"Great Expectations and the quarantine split disagree on rule totals (gx, spark): {disagreements}")

    with _staging(quarantine_dir) as staging:
        (
            flagged.filter(F.col(FAILED_RULES_COL) != "")
            .select(*_quarantine_columns(), F.col(DAY_COL).cast("string").alias("ds"))
            .coalesce(1)
            .write.option("header", True)
            .partitionBy("ds")
            .csv(str(staging))
        )
        quarantined = _count_by_partition(spark.read.option("header", True).csv, staging)
        header = flagged.select(*_quarantine_columns()).columns
        for day in days:
            _replace_partition(staging, quarantine_dir, day, header=header)

    passing = []
    for day in days:
        quarantine_path, quarantined_rows = day_dir(quarantine_dir, day), quarantined.get(day.isoformat(), 0)
        if quarantined_rows / raw_counts[day] > max_quarantine_fraction:
            _save(ValidationReport(day.isoformat(), raw_counts[day], 0, quarantined_rows, counts_by_day[day], "",
                                   str(quarantine_path), None, str(_report_path(reports_dir, day))))
            outcomes[day] = _too_many_bad_rows(day, quarantined_rows, raw_counts[day], max_quarantine_fraction,
                                               counts_by_day[day], quarantine_path)
        else:
            passing.append(day)
    if not passing:
        return outcomes

    with _staging(clean_events_dir) as staging:
        (
            flagged.filter((F.col(FAILED_RULES_COL) == "") & F.col(DAY_COL).isin(passing))
            .select(*RAW_COLUMNS, F.col(DAY_COL).cast("string").alias("ds"))
            .write.partitionBy("ds")
            .parquet(str(staging))
        )
        cleaned = _count_by_partition(spark.read.parquet, staging)
        for day in passing:
            raw_rows, clean_rows, quarantined_rows = raw_counts[day], cleaned.get(day.isoformat(), 0), quarantined.get(day.isoformat(), 0)
            clean_path = day_dir(clean_events_dir, day)
            if clean_rows + quarantined_rows != raw_rows:  # not a validated day: no clean partition, validated again next run
                outcomes[day] = _rows_lost(day, raw_rows, clean_rows, quarantined_rows)
                shutil.rmtree(clean_path, ignore_errors=True)
                continue
            if clean_rows == 0:  # every row quarantined, under a threshold of 100%: what validate_day writes
                typed.limit(0).select(*RAW_COLUMNS).write.mode("overwrite").parquet(str(clean_path))
            else:
                _replace_partition(staging, clean_events_dir, day)
            outcomes[day] = _save(ValidationReport(
                day.isoformat(), raw_rows, clean_rows, quarantined_rows, counts_by_day[day], str(clean_path),
                str(day_dir(quarantine_dir, day)), None, str(_report_path(reports_dir, day)),
            ))
            _log_day(outcomes[day])
    return outcomes


def _count_by_partition(read: Callable[[str], "DataFrame"], staging: Path) -> dict[str, int]:
    """Rows per ``ds=`` folder of what was just written (read back: the figures are what is on disk)."""
    from pyspark.sql import functions as F

    if not any(staging.glob("ds=*")):  # no rows at all: Spark wrote no partition folder
        return {}
    frame = read(str(staging))
    return {str(row["ds"]): row["count"] for row in frame.groupBy(F.col("ds").cast("string").alias("ds")).count().collect()}


@contextlib.contextmanager
def _staging(target_dir: Path):
    """A folder beside ``target_dir`` (same file system, so partitions move by rename), removed after.

    Not a hidden name: Spark skips paths starting with "." or "_" when it lists files, and warns
    "All paths were ignored" when asked to read one (it read them all the same). Readers of
    ``target_dir`` never see it: it is a sibling, not a child.

    Leftovers of a run killed halfway are removed first (also those of older versions, which were
    hidden): validation runs under the data folder's lock (:func:`recsys.locks.day_data_lock`), so no
    other run is using them.
    """
    target_dir = Path(target_dir)
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    for pattern in (f"{target_dir.name}-staging-*", f".{target_dir.name}-staging-*"):
        for leftover in target_dir.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)
    staging = target_dir.parent / f"{target_dir.name}-staging-{uuid.uuid4().hex}"
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace_partition(staging: Path, target_dir: Path, day: date, header: list[str] | None = None) -> None:
    """Move the day's staged ``ds=`` folder over the target's (the rows :func:`validate_day` would have written).

    A day with no staged rows gets what Spark writes for an empty frame: a header-only CSV (``header``
    given) or no files.
    """
    name = f"ds={day.isoformat()}"
    target = Path(target_dir) / name
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    if (staging / name).is_dir():
        (staging / name).rename(target)
    else:
        target.mkdir()
        if header is not None:
            (target / "part-00000-no-rows.csv").write_text(",".join(header) + "\n")
    (target / "_SUCCESS").touch()
