"""Feature-level expectations: Great Expectations over the tables ``build_features`` wrote, before training.

``validate_raw`` guards what comes in; this guards what the models are about to learn from and be
scored on. A feature table that breaks one of these rules would not crash a model: it would make
it quietly learn or report something wrong (a recommendation of a product the catalog does not know,
a user scored on a held-out slice they had no history for, a sequence cut at the wrong length, a
stage trained on days that belong to its held-out slice). So every rule is checked on every stage,
and any failure stops the run with :class:`FeatureQualityError`.

The tables are those of :mod:`recsys.features.build` under ``features/ds=YYYY-MM-DD/``, read with
pandas (the same way the models read them) and validated with a GX pandas data source, one batch
per table:

============================  ===================================================================
table                         rules
============================  ===================================================================
items                         product_id present and unique; row count as in summary.json
<stage>/interactions          user_id, product_id present; (user, product) unique; weight > 0;
                              product in items; last_event_time before the stage's cut-off;
                              row count as in summary.json
<stage>/sequences             user_id present and unique; product_ids and event_types of equal
                              length, 1..RECSYS_SEQUENCE_LENGTH, equal to ``length``; every
                              product in items; every event type allowed; row count as in summary
<stage>/targets (val, test)   user_id, product_id present; (user, product) unique; product in
                              items; user has history in the stage (warm users only); the pair is
                              new (not in the stage's seen pairs); row count as in summary.json
summary.json (stages)         each stage's cut-off and end of scored slice equal the bounds that
                              ds, RECSYS_VAL_DAYS and RECSYS_TEST_DAYS give
============================  ===================================================================

GX 1.x has no expectation that spans two dataframes, so the cross-table rules (product in items,
target user has history, target pair is new) are prepared with a pandas join: a helper column holds
the offending value (e.g. the unknown product id) and is null elsewhere, and GX checks it with
``ExpectColumnValuesToBeNull``, so the report still counts the rows and shows examples. This keeps
the expectation configs small whatever the catalog size (no value set of every product id).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from recsys.constants import EVENT_TYPES, STAGES
from recsys.features.transforms import day_start, stage_bounds

if TYPE_CHECKING:
    from recsys.config import Settings

log = logging.getLogger(__name__)

#: Stages whose scored slice has targets (the full stage is what gets published and has none).
TARGET_STAGES = tuple(stage for stage in STAGES if stage != "full")
#: Examples of offending values quoted in an error message, per rule.
EXAMPLES_IN_MESSAGE = 5
REBUILD_HINT = "Re-run build_features for this ds (it rewrites every table)"


class FeatureQualityError(RuntimeError):
    """Feature tables break a rule; the message names table, column, rule, count and what to do."""


@dataclass(frozen=True)
class FeatureRule:
    """One expectation on one table, with the words a person needs when it fails."""

    table: str
    column: str
    rule: str
    description: str
    fix: str
    expectation: object  # a great_expectations Expectation

    @property
    def key(self) -> str:
        return f"{self.table}:{self.rule}"


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
_REQUIRED_COLUMNS = {
    "items": ("product_id",),
    "interactions": ("user_id", "product_id", "weight", "last_event_time"),
    "sequences": ("user_id", "product_ids", "event_types", "length"),
    "seen": ("user_id", "product_id"),
    "targets": ("user_id", "product_id"),
}


def _ds_of(root: Path) -> date:
    name = root.name
    try:
        if not name.startswith("ds="):
            raise ValueError(name)
        return date.fromisoformat(name[3:])
    except ValueError as exc:
        raise FeatureQualityError(
            f"{root}: not a feature folder of one day (expected .../features/ds=YYYY-MM-DD, the folder build_features writes)"
        ) from exc


def _read_table(root: Path, relative: str, kind: str) -> pd.DataFrame:
    path = root / relative
    if not path.exists():
        raise FeatureQualityError(
            f"feature table {relative} is missing: {path} does not exist (rule: table_present). {REBUILD_HINT}."
        )
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for unreadable Parquet
        raise FeatureQualityError(f"feature table {relative} at {path} is not readable Parquet ({exc}). {REBUILD_HINT}.") from exc
    missing = [c for c in _REQUIRED_COLUMNS[kind] if c not in frame.columns]
    if missing:
        raise FeatureQualityError(
            f"feature table {relative} at {path} lacks column(s) {', '.join(missing)} (rule: columns_present; "
            f"found {list(frame.columns)}). {REBUILD_HINT}; if build_features changed its output, update "
            "recsys.quality.features with it."
        )
    return frame


def _read_summary(root: Path) -> dict:
    path = root / "summary.json"
    if not path.is_file():
        raise FeatureQualityError(f"{path} is missing (rule: summary_present): build_features writes it last. {REBUILD_HINT}.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise FeatureQualityError(f"{path} is not valid JSON ({exc}). {REBUILD_HINT}.") from exc


def _missing_from(values: pd.Series, allowed: pd.Series) -> pd.Series:
    """``values`` where they are not in ``allowed``, null elsewhere (a helper column for GX)."""
    known = values.isin(pd.Index(allowed.dropna().unique()))
    return values.astype(object).where(~known & values.notna(), None)


# ---------------------------------------------------------------------------------------------
# the rules, table by table
# ---------------------------------------------------------------------------------------------
def _not_null(table: str, column: str, fix: str) -> FeatureRule:
    import great_expectations.expectations as gxe

    return FeatureRule(table, column, f"{column}_present", f"{column} must never be null", fix,
                       gxe.ExpectColumnValuesToNotBeNull(column=column))


def _row_count(table: str, expected: int | None) -> list[FeatureRule]:
    import great_expectations.expectations as gxe

    if expected is None:
        return []
    return [FeatureRule(
        table, "(rows)", "row_count_as_in_summary", f"the table must hold the {expected} rows summary.json records",
        "The table changed after build_features wrote it, or the build was interrupted. " + REBUILD_HINT + ".",
        gxe.ExpectTableRowCountToEqual(value=int(expected)),
    )]


def _in_items(table: str, column: str, helper: str) -> FeatureRule:
    import great_expectations.expectations as gxe

    return FeatureRule(
        table, column, "product_in_items", f"every {column} must exist in the items table",
        "Items and this table come from different builds, or item_table dropped products. " + REBUILD_HINT
        + "; if it persists, check recsys.features.transforms.item_table.",
        gxe.ExpectColumnValuesToBeNull(column=helper),
    )


def _items_rules(items: pd.DataFrame, summary: dict) -> tuple[pd.DataFrame, list[FeatureRule]]:
    import great_expectations.expectations as gxe

    table = "items"
    rules = [
        _not_null(table, "product_id", "A product without an id cannot be recommended. " + REBUILD_HINT + "."),
        FeatureRule(table, "product_id", "product_id_unique", "one row per product",
                    "Duplicate products make candidates and scores ambiguous. " + REBUILD_HINT + ".",
                    gxe.ExpectColumnValuesToBeUnique(column="product_id")),
        *_row_count(table, summary.get("items")),
    ]
    return items[["product_id"]], rules


def _interactions_rules(stage: str, frame: pd.DataFrame, items: pd.DataFrame, cutoff: datetime, summary_stage: dict):
    import great_expectations.expectations as gxe

    table = f"{stage}/interactions"
    fix_ids = "Interactions are grouped by (user_id, product_id): a null id means the clean events carry one. " + REBUILD_HINT + "."
    data = pd.DataFrame({
        "user_id": frame["user_id"],
        "product_id": frame["product_id"],
        "weight": frame["weight"],
        "last_event_time": pd.to_datetime(frame["last_event_time"], utc=True),
        "_product_not_in_items": _missing_from(frame["product_id"], items["product_id"]),
    })
    rules = [
        _not_null(table, "user_id", fix_ids),
        _not_null(table, "product_id", fix_ids),
        FeatureRule(table, "user_id, product_id", "user_product_unique", "one row per (user, product)",
                    "Duplicate pairs double-count feedback. " + REBUILD_HINT + ".",
                    gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "product_id"])),
        FeatureRule(table, "weight", "weight_positive", "weight must be > 0 (implicit feedback needs positive confidence)",
                    "recsys.features.transforms.interactions drops pairs whose weight is not positive: check the event "
                    "weights (EventWeights) and rebuild.",
                    gxe.ExpectColumnValuesToBeBetween(column="weight", min_value=0, strict_min=True)),
        _in_items(table, "product_id", "_product_not_in_items"),
        FeatureRule(table, "last_event_time", "history_before_cutoff",
                    f"every event must be before the stage's cut-off {cutoff.date()} (no leakage from the scored slice)",
                    "The stage was built from events of its own scored slice: check stage_bounds / slice_window and rebuild.",
                    gxe.ExpectColumnValuesToBeBetween(column="last_event_time", max_value=cutoff, strict_max=True)),
        *_row_count(table, summary_stage.get("interactions")),
    ]
    return data, rules


def _sequences_rules(stage: str, frame: pd.DataFrame, items: pd.DataFrame, max_len: int, summary_stage: dict):
    import great_expectations.expectations as gxe

    table = f"{stage}/sequences"
    n_products = frame["product_ids"].map(lambda v: len(v) if v is not None else 0)
    n_types = frame["event_types"].map(lambda v: len(v) if v is not None else 0)
    data = pd.DataFrame({
        "user_id": frame["user_id"],
        "n_product_ids": n_products.astype("int64"),
        "n_event_types": n_types.astype("int64"),
        "length": frame["length"],
    })
    # Exploded one list at a time: a row whose lists differ in length must be reported, not crash explode().
    products = frame[["user_id", "product_ids"]].explode("product_ids", ignore_index=True).dropna(subset=["product_ids"])
    products_data = pd.DataFrame({
        "user_id": products["user_id"],
        "product_id": products["product_ids"],
        "_product_not_in_items": _missing_from(products["product_ids"], items["product_id"]),
    })
    types = frame[["user_id", "event_types"]].explode("event_types", ignore_index=True).dropna(subset=["event_types"])
    types_data = pd.DataFrame({"user_id": types["user_id"], "event_type": types["event_types"]})
    fix_length = (
        f"Sequences keep the last RECSYS_SEQUENCE_LENGTH={max_len} steps, one event type per product: the features were "
        "built with another length, or transforms.sequences is broken. " + REBUILD_HINT + " with the current settings."
    )
    rules = [
        _not_null(table, "user_id", "Sequences are grouped by user_id. " + REBUILD_HINT + "."),
        FeatureRule(table, "user_id", "user_id_unique", "one sequence per user",
                    "A user with two sequences is scored twice. " + REBUILD_HINT + ".",
                    gxe.ExpectColumnValuesToBeUnique(column="user_id")),
        FeatureRule(table, "product_ids, event_types", "product_ids_and_event_types_equal_length",
                    "product_ids and event_types must have equal length (one event type per step)", fix_length,
                    gxe.ExpectColumnPairValuesToBeEqual(column_A="n_product_ids", column_B="n_event_types")),
        FeatureRule(table, "product_ids", "length_within_max",
                    f"a sequence must have 1..{max_len} steps (RECSYS_SEQUENCE_LENGTH)", fix_length,
                    gxe.ExpectColumnValuesToBeBetween(column="n_product_ids", min_value=1, max_value=max_len)),
        FeatureRule(table, "length", "length_matches_product_ids", "length must equal the number of product_ids", fix_length,
                    gxe.ExpectColumnPairValuesToBeEqual(column_A="length", column_B="n_product_ids")),
        *_row_count(table, summary_stage.get("sequences")),
    ]
    products_table, types_table = f"{stage}/sequences (product steps)", f"{stage}/sequences (event-type steps)"
    products_rules = [_in_items(products_table, "product_ids", "_product_not_in_items")]
    types_rules = [
        FeatureRule(types_table, "event_types", "event_type_allowed", f"every event type must be one of {', '.join(EVENT_TYPES)}",
                    "Clean events carry only allowed types: the sequences were not built from validated events. " + REBUILD_HINT + ".",
                    gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES))),
    ]
    return [(table, data, rules), (products_table, products_data, products_rules), (types_table, types_data, types_rules)]


def _targets_rules(stage: str, frame: pd.DataFrame, items: pd.DataFrame, history_users: pd.Series,
                   seen: pd.DataFrame, summary_stage: dict):
    import great_expectations.expectations as gxe

    table = f"{stage}/targets"
    already_seen = frame[["user_id", "product_id"]].merge(
        seen[["user_id", "product_id"]].drop_duplicates(), on=["user_id", "product_id"], how="left", indicator=True
    )["_merge"].eq("both").to_numpy()
    data = pd.DataFrame({
        "user_id": frame["user_id"],
        "product_id": frame["product_id"],
        "_product_not_in_items": _missing_from(frame["product_id"], items["product_id"]),
        "_user_without_history": _missing_from(frame["user_id"], history_users),
        "_already_seen_product": frame["product_id"].astype(object).where(already_seen, None),
    })
    fix_ids = "Targets are (user, product) pairs of the scored slice. " + REBUILD_HINT + "."
    rules = [
        _not_null(table, "user_id", fix_ids),
        _not_null(table, "product_id", fix_ids),
        FeatureRule(table, "user_id, product_id", "user_product_unique", "one row per (user, product)",
                    "A duplicated target counts twice in every metric. " + REBUILD_HINT + ".",
                    gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "product_id"])),
        _in_items(table, "product_id", "_product_not_in_items"),
        FeatureRule(table, "user_id", "target_user_has_history",
                    f"every target user must have history (interactions or sequences) in stage '{stage}': targets are warm users only",
                    "A user in a future slice without training history cannot be scored by the models (cold users get "
                    "popularity and are not part of the comparison): check transforms.targets (its join on history users) "
                    "and rebuild.",
                    gxe.ExpectColumnValuesToBeNull(column="_user_without_history")),
        FeatureRule(table, "product_id", "target_is_new_to_user",
                    f"a target must be a product the user never touched before the cut-off (not in {stage}/seen)",
                    "Seen items are excluded from recommendations, so such targets can never be hit: check "
                    "transforms.targets (its anti-join on seen pairs) and rebuild.",
                    gxe.ExpectColumnValuesToBeNull(column="_already_seen_product")),
        *_row_count(table, summary_stage.get("targets")),
    ]
    return data, rules


def _stage_bounds_rules(ds: date, summary: dict, settings: "Settings"):
    import great_expectations.expectations as gxe

    expected = stage_bounds(ds, settings.val_days, settings.test_days)
    rows = []
    for stage in STAGES:
        recorded = summary.get(stage) or {}
        history_end, target_end = expected[stage]
        rows.append({
            "stage": stage,
            "summary_history_end": recorded.get("history_end_exclusive"),
            "expected_history_end": history_end.isoformat(),
            "summary_target_end": recorded.get("target_end_exclusive"),
            "expected_target_end": target_end.isoformat() if target_end else None,
        })
    table = "summary.json (stages)"
    fix = (
        f"summary.json's stage boundaries differ from what ds={ds}, RECSYS_VAL_DAYS={settings.val_days} and "
        f"RECSYS_TEST_DAYS={settings.test_days} give: the features were built with other settings or for another day. "
        + REBUILD_HINT + " with the current settings."
    )
    rules = [
        FeatureRule(table, "history_end_exclusive", "history_cutoff_as_configured",
                    "each stage's history cut-off must match the configured split", fix,
                    gxe.ExpectColumnPairValuesToBeEqual(column_A="summary_history_end", column_B="expected_history_end",
                                                        ignore_row_if="neither")),
        FeatureRule(table, "target_end_exclusive", "scored_slice_end_as_configured",
                    "each stage's scored-slice end must match the configured split (none for the full stage)", fix,
                    gxe.ExpectColumnPairValuesToBeEqual(column_A="summary_target_end", column_B="expected_target_end",
                                                        ignore_row_if="both_values_are_missing")),
    ]
    return pd.DataFrame(rows), rules, expected


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------
def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, (pd.Timestamp, datetime, date)):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return None if isinstance(value, float) and value != value else value
    return str(value)


def _validate(context, table: str, frame: pd.DataFrame, rules: list[FeatureRule]) -> dict[str, dict]:
    """Run the table's rules as one GX suite over one pandas batch; one result per rule."""
    import great_expectations as gx

    safe = "".join(ch if ch.isalnum() else "_" for ch in table)
    source = context.data_sources.get("feature_tables")
    batch = (
        source.add_dataframe_asset(name=safe)
        .add_batch_definition_whole_dataframe("whole_table")
        .get_batch(batch_parameters={"dataframe": frame.reset_index(drop=True)})
    )
    suite = gx.ExpectationSuite(name=f"features_{safe}")
    by_key = {}
    for rule in rules:
        expectation = rule.expectation
        expectation.meta = {"rule": rule.key}
        suite.add_expectation(expectation)
        by_key[rule.key] = rule
    suite = context.suites.add(suite)
    validation = batch.validate(suite)
    results = {}
    for result in validation.results:
        key = (result.expectation_config.meta or {}).get("rule")
        rule = by_key.get(key)
        if rule is None:
            continue
        body = dict(result.result or {})
        raised = bool(result.exception_info and result.exception_info.get("raised_exception"))
        results[key] = _jsonable({
            "table": rule.table,
            "column": rule.column,
            "rule": rule.rule,
            "description": rule.description,
            "expectation": type(rule.expectation).__name__,
            "success": bool(result.success) and not raised,
            "element_count": body.get("element_count", len(frame)),
            "unexpected_count": body.get("unexpected_count"),
            "observed_value": body.get("observed_value"),
            "examples": (body.get("partial_unexpected_list") or [])[:EXAMPLES_IN_MESSAGE],
            "error": result.exception_info.get("exception_message") if raised else None,
            "fix": rule.fix,
        })
    missing = set(by_key) - set(results)
    if missing:
        raise FeatureQualityError(f"Great Expectations returned no result for {sorted(missing)} on table {table}")
    return results


def _failure_line(result: dict) -> str:
    where = f"{result['table']}, column {result['column']}, rule {result['rule']}"
    if result["error"]:
        what = f"could not be evaluated ({result['error']})"
    elif result["unexpected_count"] is not None:
        what = f"{result['unexpected_count']} of {result['element_count']} rows break it ({result['description']})"
        if result["examples"]:
            what += f"; e.g. {result['examples']}"
    else:
        what = f"observed {result['observed_value']!r} ({result['description']})"
    return f"{where}: {what}. {result['fix']}"


def check_features(features_root: Path, settings: "Settings") -> dict[str, dict]:
    """Run every feature expectation on ``features/ds=…``; return one result per expectation.

    The result maps ``"<table>:<rule>"`` to a JSON-able dict (table, column, rule, description,
    success, element_count, unexpected_count, observed_value, examples, fix). Raises
    :class:`FeatureQualityError` naming every failed rule (table, column, rule, count, examples and
    what to do) when any fails, or when a table or summary.json is missing or unreadable.
    """
    import great_expectations as gx

    root = Path(features_root)
    ds = _ds_of(root)
    summary = _read_summary(root)
    items = _read_table(root, "items", "items")

    batches: list[tuple[str, pd.DataFrame, list[FeatureRule]]] = []
    items_data, items_rules = _items_rules(items, summary)
    batches.append(("items", items_data, items_rules))
    bounds_data, bounds_rules, expected_bounds = _stage_bounds_rules(ds, summary, settings)
    batches.append(("summary.json (stages)", bounds_data, bounds_rules))
    for stage in STAGES:
        summary_stage = summary.get(stage) or {}
        cutoff = day_start(expected_bounds[stage][0])
        interactions = _read_table(root, f"{stage}/interactions", "interactions")
        sequences = _read_table(root, f"{stage}/sequences", "sequences")
        batches.append((f"{stage}/interactions", *_interactions_rules(stage, interactions, items, cutoff, summary_stage)))
        batches.extend(_sequences_rules(stage, sequences, items, settings.sequence_length, summary_stage))
        if stage in TARGET_STAGES:
            targets = _read_table(root, f"{stage}/targets", "targets")
            seen = _read_table(root, f"{stage}/seen", "seen")
            history_users = pd.concat([interactions["user_id"], sequences["user_id"]], ignore_index=True)
            batches.append((f"{stage}/targets", *_targets_rules(stage, targets, items, history_users, seen, summary_stage)))

    context = gx.get_context(mode="ephemeral")
    try:
        context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    except Exception:  # noqa: BLE001 - cosmetic: older/newer GX may not accept it
        pass
    context.data_sources.add_pandas(name="feature_tables")
    results: dict[str, dict] = {}
    for table, frame, rules in batches:
        results.update(_validate(context, table, frame, rules))

    failed = [r for r in results.values() if not r["success"]]
    if failed:
        raise FeatureQualityError(
            f"ds={ds}: {len(failed)} of {len(results)} feature expectation(s) failed on {root}; nothing should train on "
            "these tables:\n  " + "\n  ".join(_failure_line(r) for r in failed)
        )
    log.info("ds=%s: all %d feature expectations passed on %s", ds, len(results), root)
    return results
