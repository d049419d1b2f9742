"""Pure Spark transforms (DataFrame in, DataFrame out, no I/O) that turn clean events into features.

Built-in Spark functions only (no Python UDFs), so the work stays in the JVM and runs the same on a
local session or a standalone cluster.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

from recsys.constants import RAW_COLUMNS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def day_start(ds: date) -> datetime:
    return datetime(ds.year, ds.month, ds.day, tzinfo=timezone.utc)


def deduplicate(events: "DataFrame") -> "DataFrame":
    """Drop exact duplicate events (same values in every contract column)."""
    return events.dropDuplicates(list(RAW_COLUMNS))


def sessionize(events: "DataFrame", gap_minutes: int) -> "DataFrame":
    """Add ``session_id``: a new session starts when the given user_session changes or after a gap.

    ``session_id`` is ``"<user_id>-<n>"`` with n counting the user's sessions in time order, so it is
    deterministic and independent of how the data is partitioned.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy("user_id").orderBy("event_time", "event_type", "product_id")
    previous_time = F.lag("event_time").over(order)
    previous_session = F.lag("user_session").over(order)
    gap_seconds = F.col("event_time").cast("long") - previous_time.cast("long")
    starts = (
        previous_time.isNull()
        | (gap_seconds > gap_minutes * 60)
        | ~F.coalesce(previous_session, F.lit("")).eqNullSafe(F.coalesce(F.col("user_session"), F.lit("")))
    )
    with_start = events.withColumn("_new_session", starts.cast("int"))
    running = Window.partitionBy("user_id").orderBy("event_time", "event_type", "product_id").rowsBetween(
        Window.unboundedPreceding, Window.currentRow
    )
    return with_start.withColumn(
        "session_id", F.concat_ws("-", F.col("user_id").cast("string"), F.sum("_new_session").over(running).cast("string"))
    ).drop("_new_session")


def interactions(events: "DataFrame", event_weights: dict[str, float], reference_time: datetime, half_life_days: float) -> "DataFrame":
    """One row per (user, product): time-decayed, event-weighted implicit feedback.

    ``weight = sum(event_weight(type) * 0.5 ** (age_days / half_life_days))`` over the pair's events,
    with age measured back from ``reference_time``. Pairs whose weight is not positive (e.g. only a
    remove_from_cart) are dropped: implicit-feedback models need positive confidence.
    """
    from pyspark.sql import functions as F

    weight_of_type = F.create_map(*[item for name, w in event_weights.items() for item in (F.lit(name), F.lit(float(w)))])
    age_days = (F.lit(reference_time.timestamp()) - F.col("event_time").cast("double")) / 86400.0
    decay = F.pow(F.lit(0.5), F.greatest(age_days, F.lit(0.0)) / F.lit(half_life_days))
    return (
        events.withColumn("_w", weight_of_type[F.col("event_type")] * decay)
        .groupBy("user_id", "product_id")
        .agg(
            F.sum("_w").alias("weight"),
            F.count(F.lit(1)).alias("n_events"),
            F.max("event_time").alias("last_event_time"),
            F.max((F.col("event_type") == "purchase").cast("int")).cast("boolean").alias("purchased"),
        )
        .filter(F.col("weight") > 0)
    )


def seen_pairs(events: "DataFrame") -> "DataFrame":
    """Every (user, product) the user had any event with: what ``exclude_seen`` excludes."""
    return events.select("user_id", "product_id").distinct()


def sequences(events: "DataFrame", max_len: int) -> "DataFrame":
    """Per user, the last ``max_len`` events in time order, with repeats of the same product collapsed.

    Consecutive events on the same product (view, view, cart) collapse to one step holding the
    strongest event type, since the sequence model predicts the *next product*.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    strength = F.create_map(F.lit("view"), F.lit(1), F.lit("remove_from_cart"), F.lit(2), F.lit("cart"), F.lit(3), F.lit("purchase"), F.lit(4))
    order = Window.partitionBy("user_id").orderBy("event_time", "event_type", "product_id")
    steps = (
        events.withColumn("_prev", F.lag("product_id").over(order))
        .withColumn("_step_start", (F.col("_prev").isNull() | (F.col("_prev") != F.col("product_id"))).cast("int"))
        .withColumn("_step", F.sum("_step_start").over(order.rowsBetween(Window.unboundedPreceding, Window.currentRow)))
        .groupBy("user_id", "_step")
        .agg(
            F.first("product_id").alias("product_id"),
            F.min("event_time").alias("event_time"),
            F.max(F.struct(strength[F.col("event_type")].alias("s"), F.col("event_type").alias("t"))).getField("t").alias("event_type"),
        )
    )
    ordered = steps.groupBy("user_id").agg(
        F.sort_array(F.collect_list(F.struct("_step", "product_id", "event_type"))).alias("_steps")
    )
    last = F.slice(F.col("_steps"), F.greatest(F.size("_steps") - max_len + 1, F.lit(1)), max_len)
    return ordered.select(
        "user_id",
        F.transform(last, lambda s: s.getField("product_id")).alias("product_ids"),
        F.transform(last, lambda s: s.getField("event_type")).alias("event_types"),
        F.least(F.size("_steps"), F.lit(max_len)).alias("length"),
    )


def item_table(events: "DataFrame", catalog: "DataFrame | None") -> "DataFrame":
    """One row per product seen in events or listed in the catalog, with the text the content model reads.

    ``text`` joins title, description, the category path as words, and brand. Without a catalog the
    text comes from the category_code and brand seen in events.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    latest = Window.partitionBy("product_id").orderBy(F.col("event_time").desc(), F.col("event_type"))
    from_events = (
        events.withColumn("_n", F.row_number().over(latest))
        .filter(F.col("_n") == 1)
        .select("product_id", "category_code", "brand", "price", F.col("event_time").alias("_last_seen"))
    )
    stats = events.groupBy("product_id").agg(
        F.min("event_time").alias("first_seen"),
        F.count(F.lit(1)).alias("n_events"),
        F.countDistinct("user_id").alias("n_users"),
        F.sum((F.col("event_type") == "purchase").cast("int")).alias("n_purchases"),
    )
    items = from_events.join(stats, "product_id", "left").drop("_last_seen")
    if catalog is not None:
        cat = catalog.select(
            "product_id",
            F.col("title"),
            F.col("description"),
            F.col("category_code").alias("_cat_code"),
            F.col("brand").alias("_cat_brand"),
            F.col("price").alias("_cat_price"),
        )
        items = items.join(cat, "product_id", "full_outer").select(
            "product_id",
            F.coalesce("_cat_code", "category_code").alias("category_code"),
            F.coalesce("_cat_brand", "brand").alias("brand"),
            F.coalesce("price", "_cat_price").alias("price"),
            "title",
            "description",
            "first_seen",
            F.coalesce("n_events", F.lit(0)).alias("n_events"),
            F.coalesce("n_users", F.lit(0)).alias("n_users"),
            F.coalesce("n_purchases", F.lit(0)).alias("n_purchases"),
        )
    else:
        items = items.select(
            "product_id", "category_code", "brand", "price",
            F.lit(None).cast("string").alias("title"), F.lit(None).cast("string").alias("description"),
            "first_seen", "n_events", "n_users", "n_purchases",
        )
    category_words = F.regexp_replace(F.coalesce(F.col("category_code"), F.lit("")), r"[._]", " ")
    text = F.trim(
        F.concat_ws(" ", F.col("title"), F.col("description"), category_words, F.col("brand"))
    )
    return items.withColumn("text", text).withColumn(
        "top_category", F.split(F.coalesce(F.col("category_code"), F.lit("unknown")), r"\.").getItem(0)
    )


def slice_window(events: "DataFrame", start: date | None, end_exclusive: date) -> "DataFrame":
    """Events with ``start <= event day < end_exclusive`` (``start=None``: from the beginning)."""
    from pyspark.sql import functions as F

    condition = F.col("event_time") < F.lit(day_start(end_exclusive))
    if start is not None:
        condition = condition & (F.col("event_time") >= F.lit(day_start(start)))
    return events.filter(condition)


def targets(history: "DataFrame", future: "DataFrame") -> "DataFrame":
    """Held-out relevance: (user, product) pairs of the future slice the user had never touched before.

    Only users with history are kept (warm users): cold users are routed to popularity and are not
    what the single models are compared on.
    """
    known_users = history.select("user_id").distinct()
    seen = seen_pairs(history)
    return (
        future.select("user_id", "product_id")
        .distinct()
        .join(known_users, "user_id", "left_semi")
        .join(seen, ["user_id", "product_id"], "left_anti")
    )


def stage_bounds(ds: date, val_days: int, test_days: int) -> dict[str, tuple[date, date | None]]:
    """Cut-off day and end of the scored slice for each stage of the temporal protocol.

    Returns ``{stage: (history_end_exclusive, target_end_exclusive)}``; the full stage has no target.
    """
    end = ds + timedelta(days=1)
    test_start = end - timedelta(days=test_days)
    val_start = test_start - timedelta(days=val_days)
    return {"val": (val_start, test_start), "test": (test_start, end), "full": (end, None)}
