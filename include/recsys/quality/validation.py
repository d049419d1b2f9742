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

import gzip
import json
import logging
import shutil
import zlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from recsys.constants import EVENT_TYPES, RAW_COLUMNS

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


class DataQualityError(RuntimeError):
    """Raised when the day's raw data cannot be used; the message says what, where and what to do."""


@dataclass(frozen=True)
class RowRule:
    """One row-level rule: a GX expectation and the Spark expression of the same rule."""

    name: str
    column: str
    description: str
    expectation: Callable[[date], object]
    violates: Callable[[date], "Column"]
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
            expectation=lambda ds: gxe.ExpectColumnValuesToBeBetween(
                column="event_time", min_value=day_bounds(ds)[0], max_value=day_bounds(ds)[1]
            ),
            violates=lambda ds: F.col("event_time").isNotNull()
            & (F.to_date("event_time") != F.lit(ds.isoformat()).cast("date")),
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
            expectation=lambda ds: gxe.ExpectCompoundColumnsToBeUnique(column_list=list(RAW_COLUMNS), ignore_row_if="never"),
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
    )
    # The copy kept first is one that can pass the other rules (a well-formed line, a category_id
    # that parsed), so a good event is never quarantined for duplicating a broken line. Among equals,
    # the order only decides which raw text and source file the quarantine shows.
    copies = Window.partitionBy(*RAW_COLUMNS).orderBy(
        F.col(CORRUPT_RECORD_COL).asc_nulls_first(),
        F.col("_category_id_ok").asc_nulls_last(),
        SOURCE_FILE_COL,
        *[f"_raw_{c}" for c in RAW_COLUMNS],
    )
    return typed.withColumn(COPY_NUMBER_COL, F.row_number().over(copies))


# ---------------------------------------------------------------------------------------------
# GX run
# ---------------------------------------------------------------------------------------------
def run_expectations(typed: "DataFrame", ds: date, docs_dir: Path | None) -> tuple[dict[str, int], str | None]:
    """Validate the typed day with GX; return each rule's unexpected count and the Data Docs page."""
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


def _empty_day(typed: "DataFrame", ds: date, files: list[Path], clean_events_dir: Path, quarantine_dir: Path,
               reports_dir: Path) -> ValidationReport:
    """A day whose files hold a header and no events: a quiet day, not an error.

    The day's clean partition is written empty (with the schema), so the feature build sees a validated
    day with nothing in it and recomputes everything from the rest of the lookback window. No rule ran on
    zero rows, so there is no quarantine and no Data Docs page. A *missing* day folder stays an error
    (:func:`list_day_files`): late data must not be mistaken for a quiet day.
    """
    clean_path = Path(clean_events_dir) / f"ds={ds.isoformat()}"
    typed.select(*RAW_COLUMNS).write.mode("overwrite").parquet(str(clean_path))
    # An earlier landing of this day may have left a quarantine: it no longer describes the day.
    shutil.rmtree(Path(quarantine_dir) / f"ds={ds.isoformat()}", ignore_errors=True)
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    report_path = reports_dir / f"ds={ds.isoformat()}.json"
    report = ValidationReport(
        ds.isoformat(), 0, 0, 0, {rule.name: 0 for rule in _rules()}, str(clean_path), "", None, str(report_path)
    )
    report_path.write_text(json.dumps(report.as_dict(), indent=2))
    log.warning(
        "ds=%s: the raw files hold a header but no events (%s): validated as an empty day; recommendations "
        "for it are recomputed from the lookback window's history",
        ds, ", ".join(str(f) for f in files),
    )
    return report


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
        first_line = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise DataQualityError(
            f"ds={ds}: Spark could not read the day's files ({', '.join(str(f) for f in files)}): {first_line[:500]}. "
            "Check or re-land the files."
        ) from exc
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
    disagreements = {
        rule.name: (gx_counts[rule.name], spark_counts[rule.name])
        for rule in rules
        if not rule.counts_agree(gx_counts[rule.name], spark_counts[rule.name])
    }
    if disagreements:
        raise DataQualityError(
            f"ds={ds}: Great Expectations and the quarantine split disagree on rule counts (gx, spark): {disagreements}"
        )

    bad = flagged.filter(F.col(FAILED_RULES_COL) != "")
    good = flagged.filter(F.col(FAILED_RULES_COL) == "")
    quarantine_path = Path(quarantine_dir) / f"ds={ds.isoformat()}"
    # The quarantine keeps the raw text of each bad row exactly as it arrived, plus why and from where.
    (
        bad.select(
            *[F.col(f"_raw_{c}").alias(c) for c in RAW_COLUMNS],
            FAILED_RULES_COL,
            SOURCE_FILE_COL,
            F.col(CORRUPT_RECORD_COL).alias(RAW_LINE_COL),
        )
        .coalesce(1)
        .write.mode("overwrite")
        .option("header", True)
        .csv(str(quarantine_path))
    )
    quarantined_rows = spark.read.option("header", True).csv(str(quarantine_path)).count()
    fraction = quarantined_rows / raw_rows
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    report_path = reports_dir / f"ds={ds.isoformat()}.json"
    clean_path = Path(clean_events_dir) / f"ds={ds.isoformat()}"

    summary = ", ".join(f"{name}={count}" for name, count in spark_counts.items() if count) or "none"
    if fraction > max_quarantine_fraction:
        report = ValidationReport(ds.isoformat(), raw_rows, 0, quarantined_rows, spark_counts, "", str(quarantine_path), docs_page, str(report_path))
        report_path.write_text(json.dumps(report.as_dict(), indent=2))
        raise DataQualityError(
            f"ds={ds}: {quarantined_rows} of {raw_rows} rows ({fraction:.1%}) failed validation, above the "
            f"{max_quarantine_fraction:.1%} threshold (RECSYS_QUARANTINE_MAX_FRACTION). Failed rules: {summary}. "
            f"The bad rows are in {quarantine_path}; the run stops before training and nothing is published. "
            "Fix the source and re-run the day, or raise the threshold if this is expected."
        )

    good.select(*RAW_COLUMNS).write.mode("overwrite").parquet(str(clean_path))
    clean_rows = spark.read.parquet(str(clean_path)).count()
    flagged.unpersist()
    typed.unpersist()
    if clean_rows + quarantined_rows != raw_rows:
        raise DataQualityError(
            f"ds={ds}: rows lost in validation: raw={raw_rows} but clean={clean_rows} + quarantined={quarantined_rows}"
        )
    report = ValidationReport(
        ds.isoformat(), raw_rows, clean_rows, quarantined_rows, spark_counts, str(clean_path), str(quarantine_path), docs_page, str(report_path)
    )
    report_path.write_text(json.dumps(report.as_dict(), indent=2))
    log.info(
        "ds=%s: %d raw rows, %d clean, %d quarantined (%.2f%%; %s). Data Docs: %s",
        ds, raw_rows, clean_rows, quarantined_rows, 100 * fraction, summary, docs_page,
    )
    return report
