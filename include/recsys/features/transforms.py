"""Pure Spark transforms (DataFrame in, DataFrame out, no I/O) that turn clean events into features.

Built-in Spark functions only (no Python UDFs), so the work stays in the JVM and runs the same on a
local session or a standalone cluster.

Every ordering used to pick "the first/last event" is total on the values it picks, so results never
depend on how the data happens to be partitioned: that is what lets :mod:`recsys.features.partials`
rebuild exactly the same tables from per-day partial aggregates.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

from recsys.constants import RAW_COLUMNS

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

#: Time order of a user's events. Ties on time fall back on the event type, the product and the
#: user_session, so "the previous event" is well defined whatever the partitioning.
EVENT_ORDER = ("event_time", "event_type", "product_id", "user_session")

#: How strong each event type is as a signal; a collapsed sequence step keeps its strongest type.
EVENT_STRENGTH = {"view": 1, "remove_from_cart": 2, "cart": 3, "purchase": 4}

#: A pair's weight counts as positive only above this fraction of its gross weight (sum of |w| over
#: its events): a view cancelled by a remove_from_cart must give 0 whatever the summation order.
WEIGHT_RTOL = 1e-9


def event_weight_column(event_weights: dict[str, float]) -> "Column":
    """The implicit-feedback weight of ``event_type`` (null for a type without a weight)."""
    from pyspark.sql import functions as F

    return F.create_map(*[item for name, w in event_weights.items() for item in (F.lit(name), F.lit(float(w)))])[
        F.col("event_type")
    ]


def event_strength_column(column: str = "event_type") -> "Column":
    from pyspark.sql import functions as F

    strength = F.create_map(*[item for name, s in EVENT_STRENGTH.items() for item in (F.lit(name), F.lit(s))])
    return strength[F.col(column)]


def strongest_event_type(column: str = "event_type") -> "Column":
    """Aggregate: the strongest event type among the group's rows (see :data:`EVENT_STRENGTH`)."""
    from pyspark.sql import functions as F

    return F.max(F.struct(event_strength_column(column).alias("s"), F.col(column).alias("t"))).getField("t")


def latest_item_event() -> "Column":
    """Aggregate: the item's latest event as a struct (event_time, event_type, price, category_code, brand).

    Ties on time are broken by the greatest remaining fields, so the pick is unique and the max of
    per-day maxima is the max over the whole window.
    """
    from pyspark.sql import functions as F

    return F.max(F.struct("event_time", "event_type", "price", "category_code", "brand"))


def day_start(ds: date) -> datetime:
    return datetime(ds.year, ds.month, ds.day, tzinfo=timezone.utc)


def on_partition_day(events: "DataFrame") -> "DataFrame":
    """Keep the events that fall on their day folder's day (column ``ds``, a date), in UTC.

    The landing zone's contract is that a day folder holds that day's events (validate_raw enforces
    it); keeping it here too means exact duplicates and a day's aggregates can never straddle days.
    """
    from pyspark.sql import functions as F

    return events.filter(F.floor(F.col("event_time").cast("long") / 86400) == F.unix_date(F.col("ds").cast("date")))


def deduplicate(events: "DataFrame") -> "DataFrame":
    """Drop exact duplicate events (same values in every contract column)."""
    return events.dropDuplicates(list(RAW_COLUMNS))


def session_starts(gap_minutes: int, partition_by: tuple[str, ...] = ("user_id",)) -> "Column":
    """1 where an event starts a session: the partition's first event, a gap over the limit, a new user_session."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy(*partition_by).orderBy(*EVENT_ORDER)
    previous_time = F.lag("event_time").over(order)
    previous_session = F.lag("user_session").over(order)
    gap_seconds = F.col("event_time").cast("long") - previous_time.cast("long")
    starts = (
        previous_time.isNull()
        | (gap_seconds > gap_minutes * 60)
        | ~F.coalesce(previous_session, F.lit("")).eqNullSafe(F.coalesce(F.col("user_session"), F.lit("")))
    )
    return starts.cast("int")


def sessionize(events: "DataFrame", gap_minutes: int) -> "DataFrame":
    """Add ``session_id``: a new session starts when the given user_session changes or after a gap.

    ``session_id`` is ``"<user_id>-<n>"`` with n counting the user's sessions in time order, so it is
    deterministic and independent of how the data is partitioned.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    with_start = events.withColumn("_new_session", session_starts(gap_minutes))
    running = Window.partitionBy("user_id").orderBy(*EVENT_ORDER).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    return with_start.withColumn(
        "session_id", F.concat_ws("-", F.col("user_id").cast("string"), F.sum("_new_session").over(running).cast("string"))
    ).drop("_new_session")


def interactions(events: "DataFrame", event_weights: dict[str, float], reference_time: datetime, half_life_days: float) -> "DataFrame":
    """One row per (user, product): time-decayed, event-weighted implicit feedback.

    ``weight = sum(event_weight(type) * 0.5 ** (age_days / half_life_days))`` over the pair's events,
    with age measured back from ``reference_time``. Pairs whose weight is not positive (e.g. only a
    remove_from_cart, or a view cancelled by a remove) are dropped: implicit-feedback models need
    positive confidence. "Positive" means above :data:`WEIGHT_RTOL` times the pair's gross weight, so
    an exact cancellation is dropped whatever the floating-point summation order.
    """
    from pyspark.sql import functions as F

    age_days = (F.lit(reference_time.timestamp()) - F.col("event_time").cast("double")) / 86400.0
    decay = F.pow(F.lit(0.5), F.greatest(age_days, F.lit(0.0)) / F.lit(half_life_days))
    weight = event_weight_column(event_weights)
    return (
        events.withColumn("_w", weight * decay)
        .withColumn("_gross", F.abs(weight) * decay)
        .groupBy("user_id", "product_id")
        .agg(
            F.sum("_w").alias("weight"),
            F.count(F.lit(1)).alias("n_events"),
            F.max("event_time").alias("last_event_time"),
            F.max((F.col("event_type") == "purchase").cast("int")).cast("boolean").alias("purchased"),
            F.sum("_gross").alias("_gross"),
        )
        .filter(F.col("weight") > F.col("_gross") * WEIGHT_RTOL)
        .drop("_gross")
    )


def seen_pairs(events: "DataFrame") -> "DataFrame":
    """Every (user, product) the user had any event with: what ``exclude_seen`` excludes."""
    return events.select("user_id", "product_id").distinct()


def sequences(events: "DataFrame", max_len: int) -> "DataFrame":
    """Per user, the last ``max_len`` events in time order, with repeats of the same product collapsed.

    Consecutive events on the same product (view, view, cart) collapse to one step holding the
    strongest event type, since the sequence model predicts the *next product*.
    """
    from pyspark.sql import functions as F

    steps = collapse_steps(events, ("user_id",), EVENT_ORDER[:3], "_step").groupBy("user_id", "_step").agg(
        F.first("product_id").alias("product_id"),
        strongest_event_type().alias("event_type"),
    )
    ordered = steps.groupBy("user_id").agg(
        F.sort_array(F.collect_list(F.struct("_step", "product_id", "event_type"))).alias("_steps")
    )
    return last_steps(ordered, "_steps", max_len)


def collapse_steps(rows: "DataFrame", partition_by: tuple[str, ...], order_by: tuple[str, ...], step_col: str) -> "DataFrame":
    """Number runs of consecutive rows on the same product (in ``order_by`` within ``partition_by``) 1, 2, ..."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy(*partition_by).orderBy(*order_by)
    previous = F.lag("product_id").over(order)
    return (
        rows.withColumn("_step_start", (previous.isNull() | (previous != F.col("product_id"))).cast("int"))
        .withColumn(step_col, F.sum("_step_start").over(order.rowsBetween(Window.unboundedPreceding, Window.currentRow)))
        .drop("_step_start")
    )


def last_steps(frame: "DataFrame", steps_col: str, max_len: int) -> "DataFrame":
    """(user_id, product_ids, event_types, length) from an ordered array of (step, product_id, event_type)."""
    from pyspark.sql import functions as F

    steps = F.col(steps_col)
    last = F.slice(steps, F.greatest(F.size(steps) - max_len + 1, F.lit(1)), max_len)
    return frame.select(
        "user_id",
        F.transform(last, lambda s: s.getField("product_id")).alias("product_ids"),
        F.transform(last, lambda s: s.getField("event_type")).alias("event_types"),
        F.least(F.size(steps), F.lit(max_len)).alias("length"),
    )


def item_stats(events: "DataFrame", by: tuple[str, ...] = ("product_id",)) -> "DataFrame":
    """Per product (and ``by``): first_seen, n_events, n_purchases and the latest event (struct ``latest``)."""
    from pyspark.sql import functions as F

    return events.groupBy(*by).agg(
        F.min("event_time").alias("first_seen"),
        F.count(F.lit(1)).alias("n_events"),
        F.sum((F.col("event_type") == "purchase").cast("long")).alias("n_purchases"),
        latest_item_event().alias("latest"),
    )


def item_table(events: "DataFrame", catalog: "DataFrame | None") -> "DataFrame":
    """One row per product seen in events or listed in the catalog, with the text the content model reads.

    ``text`` joins title, description, the category path as words, and brand. Without a catalog the
    text comes from the category_code and brand seen in events (those of the product's latest event).
    """
    from pyspark.sql import functions as F

    users = events.groupBy("product_id").agg(F.countDistinct("user_id").alias("n_users"))
    return item_features(item_stats(events), users, catalog)


def item_features(stats: "DataFrame", users: "DataFrame", catalog: "DataFrame | None") -> "DataFrame":
    """The item table from :func:`item_stats` rows (one per product), distinct users per product and the catalog."""
    from pyspark.sql import functions as F

    latest = F.col("latest")
    items = stats.join(users, "product_id", "left").select(
        "product_id",
        latest.getField("category_code").alias("category_code"),
        latest.getField("brand").alias("brand"),
        latest.getField("price").alias("price"),
        "first_seen",
        "n_events",
        F.coalesce("n_users", F.lit(0)).alias("n_users"),
        "n_purchases",
    )
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
