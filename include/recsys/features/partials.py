"""Daily partial aggregates and how to combine them into the feature tables (pure: DataFrame in/out).

A day's partials are computed once from that day's deduplicated clean events (column ``ds``, the day)
and stored; a run combines the stored partials of its window instead of re-reading the raw history.
Every combine below gives exactly what the one-shot transforms of :mod:`recsys.features.transforms`
give over the same events (floating-point sums up to rounding, ~1e-15 relative):

``pairs``    (ds, user_id, product_id, event_type, n_events, decay_sum, last_event_time)
    ``decay_sum = sum(2 ** (seconds_since_day_start / half_life_seconds))`` over the day's events of
    that type, a number in ``[1, 2 ** (1 / half_life_days))``. For any reference time ``ref`` at a
    day start, ``0.5 ** ((ref - t) / half_life) = 0.5 ** (days(ref - ds) / half_life_days) *
    2 ** ((t - ds) / half_life)``, so the decayed weight of a pair for any stage is
    ``sum(w_type * decay_sum * 0.5 ** (days(ref - ds) / half_life_days))``: exact, with no large
    exponents, for every stage cut-off and any later day. Depends on ``half_life_days``.
``steps``    (ds, user_id, step, product_id, event_type)
    The day's events per user in time order with consecutive repeats of a product collapsed into
    one step of the strongest type. The combine collapses again across days, so a run of the same
    product that spans midnight (or several days) is one step, exactly as over the whole window.
``items``    (ds, product_id, first_seen, n_events, n_purchases, latest)
    ``latest`` is the day's latest event as a struct under a total order, so the max over days is
    the window's latest event. Distinct users per product come from the combined pairs.
``sessions`` (ds, user_id, n_sessions, first_event_time, first_user_session, last_event_time,
    last_user_session)
    Sessions are cut per day, counting the day's first event as a start; the combine then joins
    each user-day to the user's previous active day: when the previous day's last event is within
    the session gap and has the same user_session as this day's first event, the session spans
    midnight and is counted once. So the window's session count equals :func:`transforms.sessionize`
    over the whole window. Depends on ``session_gap_minutes``.

Exact duplicates can only occur within a day (a day folder holds that day's events, see
:func:`transforms.on_partition_day`), so deduplicating per day is deduplicating the window.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from recsys.features import transforms as T

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

#: Bump when a partial's definition changes: stored partials of another version are rebuilt.
PARTIALS_VERSION = 1

PARTIAL_SCHEMAS = {
    "pairs": "ds date, user_id long, product_id long, event_type string, n_events long, decay_sum double, "
    "last_event_time timestamp",
    "steps": "ds date, user_id long, step long, product_id long, event_type string",
    "items": "ds date, product_id long, first_seen timestamp, n_events long, n_purchases long, "
    "latest struct<event_time: timestamp, event_type: string, price: double, category_code: string, brand: string>",
    "sessions": "ds date, user_id long, n_sessions long, first_event_time timestamp, first_user_session string, "
    "last_event_time timestamp, last_user_session string",
}
PARTIAL_TABLES = tuple(PARTIAL_SCHEMAS)


PARTIAL_COLUMNS = {
    "pairs": ("ds", "user_id", "product_id", "event_type", "n_events", "decay_sum", "last_event_time"),
    "steps": ("ds", "user_id", "step", "product_id", "event_type"),
    "items": ("ds", "product_id", "first_seen", "n_events", "n_purchases", "latest"),
    "sessions": ("ds", "user_id", "n_sessions", "first_event_time", "first_user_session", "last_event_time", "last_user_session"),
}


# ---- one day (or many days at once: everything is keyed by ds) ------------------------------------
def day_pairs(events: "DataFrame", half_life_days: float) -> "DataFrame":
    from pyspark.sql import functions as F

    seconds_into_day = F.col("event_time").cast("double") - F.unix_date(F.col("ds")).cast("double") * 86400.0
    decay = F.pow(F.lit(2.0), seconds_into_day / F.lit(half_life_days * 86400.0))
    return events.groupBy("ds", "user_id", "product_id", "event_type").agg(
        F.count(F.lit(1)).alias("n_events"),
        F.sum(decay).alias("decay_sum"),
        F.max("event_time").alias("last_event_time"),
    )


#: Per-day windows are keyed (user, day): user first, so the sort's prefix (a long) separates almost
#: every pair of rows and few comparisons fall back to the full key.
DAY_WINDOW = ("user_id", "ds")


def with_day_order(events: "DataFrame", gap_minutes: int) -> "DataFrame":
    """Add ``_step`` (the day's product-run number) and ``_session_start`` per user and day.

    Both come from one window (one sort) over the day's events in :data:`transforms.EVENT_ORDER`.
    """
    from pyspark.sql import functions as F

    return T.collapse_steps(events, DAY_WINDOW, T.EVENT_ORDER, "_step").withColumn(
        "_session_start", T.session_starts(gap_minutes, DAY_WINDOW)
    ).withColumn("_step", F.col("_step").cast("long"))


def day_steps(events: "DataFrame") -> "DataFrame":
    from pyspark.sql import functions as F

    return events.groupBy("ds", "user_id", F.col("_step").alias("step")).agg(
        F.first("product_id").alias("product_id"), T.strongest_event_type().alias("event_type")
    )


def day_items(events: "DataFrame") -> "DataFrame":
    return T.item_stats(events, by=("ds", "product_id"))


def day_sessions(events: "DataFrame") -> "DataFrame":
    from pyspark.sql import functions as F

    first = F.min(F.struct(*T.EVENT_ORDER))  # struct order = EVENT_ORDER ascending, nulls first, as the window
    last = F.max(F.struct(*T.EVENT_ORDER))
    return (
        events.groupBy("ds", "user_id")
        .agg(F.sum("_session_start").cast("long").alias("n_sessions"), first.alias("_first"), last.alias("_last"))
        .select(
            "ds",
            "user_id",
            "n_sessions",
            F.col("_first.event_time").alias("first_event_time"),
            F.col("_first.user_session").alias("first_user_session"),
            F.col("_last.event_time").alias("last_event_time"),
            F.col("_last.user_session").alias("last_user_session"),
        )
    )


def day_partials(events: "DataFrame", half_life_days: float, gap_minutes: int) -> dict[str, "DataFrame"]:
    """Every partial table of the deduplicated events (which carry their day in ``ds``).

    ``events`` may already hold the columns of :func:`with_day_order` (so a cached frame is sorted once).
    """
    if "_step" not in events.columns:
        events = with_day_order(events, gap_minutes)
    frames = {
        "pairs": day_pairs(events, half_life_days),
        "steps": day_steps(events),
        "items": day_items(events),
        "sessions": day_sessions(events),
    }
    return {name: frame.select(*PARTIAL_COLUMNS[name]) for name, frame in frames.items()}


# ---- combine -----------------------------------------------------------------------------------
Bounds = dict[str, tuple[date, date | None]]


def pair_stats(pairs: "DataFrame", event_weights: dict[str, float], half_life_days: float, bounds: Bounds) -> "DataFrame":
    """One row per (user, product) of the window, with every stage's interaction figures side by side.

    For each stage ``s`` with history cut-off ``H``: ``weight_s``, ``gross_s``, ``n_s`` (null when the
    pair has no event before ``H``), ``last_s``, ``purchased_s`` and, for stages with a scored slice
    ``[H, T)``, ``future_s`` (events in the slice). One aggregation and nothing per user: whether a
    user is known before ``H`` is only needed for the few target candidates (:func:`stage_targets`),
    so no window sorts every pair by user.
    """
    from pyspark.sql import functions as F

    # The per-row factors are projected once: each stage's decay feeds both its weight and gross sums.
    factors = [T.event_weight_column(event_weights).alias("_w")] + [
        (F.col("decay_sum") * F.pow(F.lit(0.5), F.datediff(F.lit(history_end), F.col("ds")) / F.lit(half_life_days)))
        .alias(f"_decay_{stage}")
        for stage, (history_end, _) in bounds.items()
    ]
    rows = pairs.select("ds", "user_id", "product_id", "n_events", "last_event_time",
                        (F.col("event_type") == "purchase").cast("int").alias("_purchase"), *factors)
    w = F.col("_w")
    aggs = []
    for stage, (history_end, target_end) in bounds.items():
        in_history = F.col("ds") < F.lit(history_end)
        decay = F.col(f"_decay_{stage}")
        aggs += [
            F.sum(F.when(in_history, w * decay)).alias(f"weight_{stage}"),
            F.sum(F.when(in_history, F.abs(w) * decay)).alias(f"gross_{stage}"),
            F.sum(F.when(in_history, F.col("n_events"))).alias(f"n_{stage}"),
            F.max(F.when(in_history, F.col("last_event_time"))).alias(f"last_{stage}"),
            F.max(F.when(in_history, F.col("_purchase"))).alias(f"purchased_{stage}"),
        ]
        if target_end is not None:
            in_slice = (F.col("ds") >= F.lit(history_end)) & (F.col("ds") < F.lit(target_end))
            aggs.append(F.sum(F.when(in_slice, F.col("n_events"))).alias(f"future_{stage}"))
    return rows.groupBy("user_id", "product_id").agg(*aggs)


def stage_interactions(stats: "DataFrame", stage: str) -> "DataFrame":
    """Same rows as :func:`transforms.interactions` over the stage's history."""
    from pyspark.sql import functions as F

    return stats.filter(
        F.col(f"n_{stage}").isNotNull() & (F.col(f"weight_{stage}") > F.col(f"gross_{stage}") * T.WEIGHT_RTOL)
    ).select(
        "user_id",
        "product_id",
        F.col(f"weight_{stage}").alias("weight"),
        F.col(f"n_{stage}").alias("n_events"),
        F.col(f"last_{stage}").alias("last_event_time"),
        F.col(f"purchased_{stage}").cast("boolean").alias("purchased"),
    )


def stage_seen(stats: "DataFrame", stage: str) -> "DataFrame":
    from pyspark.sql import functions as F

    return stats.filter(F.col(f"n_{stage}").isNotNull()).select("user_id", "product_id")


def stage_targets(stats: "DataFrame", stage: str) -> "DataFrame":
    """Same rows as :func:`transforms.targets`: new pairs of the scored slice, warm users only.

    The candidates (events in the slice, none before) are few; the warm users come from a per-user
    aggregate (one row per user), broadcast so the candidates keep their partitioning by user.
    """
    from pyspark.sql import functions as F

    n = F.col(f"n_{stage}")
    candidates = stats.filter(F.col(f"future_{stage}").isNotNull() & n.isNull()).select("user_id", "product_id")
    warm = stats.filter(n.isNotNull()).groupBy("user_id").agg(F.count(F.lit(1)).alias("_pairs")).select("user_id")
    return candidates.join(F.broadcast(warm), "user_id", "left_semi")


def stage_sequences(steps: "DataFrame", bounds: Bounds, max_len: int) -> "DataFrame":
    """Per user, one ``steps_<stage>`` array per stage: the last ``max_len`` steps before its cut-off.

    Day steps are collapsed again across days (a product repeated over midnight is one step); a run
    cut by a stage's cut-off keeps the strongest type of its part before the cut-off.
    """
    from pyspark.sql import functions as F

    runs = T.collapse_steps(steps, ("user_id",), ("ds", "step"), "_run")
    strength = T.event_strength_column()
    per_run = runs.groupBy("user_id", "_run").agg(
        F.first("product_id").alias("product_id"),
        *[
            F.max(F.when(F.col("ds") < F.lit(history_end), F.struct(strength.alias("s"), F.col("event_type").alias("t"))))
            .getField("t")
            .alias(f"type_{stage}")
            for stage, (history_end, _) in bounds.items()
        ],
    )
    per_user = per_run.groupBy("user_id").agg(
        *[
            F.sort_array(
                F.collect_list(
                    F.when(
                        F.col(f"type_{stage}").isNotNull(),
                        F.struct(F.col("_run").alias("_step"), "product_id", F.col(f"type_{stage}").alias("event_type")),
                    )
                )
            ).alias(f"steps_{stage}")
            for stage in bounds
        ]
    )
    # Keep only what the stage tables need: the last max_len steps and how many steps there were.
    return per_user.select(
        "user_id",
        *[
            F.slice(F.col(f"steps_{stage}"), F.greatest(F.size(f"steps_{stage}") - max_len + 1, F.lit(1)), max_len)
            .alias(f"steps_{stage}")
            for stage in bounds
        ],
        *[F.size(f"steps_{stage}").alias(f"size_{stage}") for stage in bounds],
    )


def sequences_of_stage(per_user: "DataFrame", stage: str, max_len: int) -> "DataFrame":
    """Same rows as :func:`transforms.sequences` over the stage's history."""
    from pyspark.sql import functions as F

    steps = F.col(f"steps_{stage}")
    return per_user.filter(F.col(f"size_{stage}") > 0).select(
        "user_id",
        F.transform(steps, lambda s: s.getField("product_id")).alias("product_ids"),
        F.transform(steps, lambda s: s.getField("event_type")).alias("event_types"),
        F.least(F.col(f"size_{stage}"), F.lit(max_len)).alias("length"),
    )


def stacked_sequences(per_user: "DataFrame", stages, max_len: int) -> "DataFrame":
    """Every stage's sequences in one frame with a ``stage`` column (one pass over ``per_user``)."""
    from pyspark.sql import functions as F

    entries = F.array(*[
        F.struct(F.lit(stage).alias("stage"), F.col(f"steps_{stage}").alias("steps"), F.col(f"size_{stage}").alias("size"))
        for stage in stages
    ])
    steps = F.col("_e.steps")
    return (
        per_user.select("user_id", F.explode(entries).alias("_e"))
        .filter(F.col("_e.size") > 0)
        .select(
            "user_id",
            F.transform(steps, lambda s: s.getField("product_id")).alias("product_ids"),
            F.transform(steps, lambda s: s.getField("event_type")).alias("event_types"),
            F.least(F.col("_e.size"), F.lit(max_len)).alias("length"),
            F.col("_e.stage").alias("stage"),
        )
    )


def combine_items(items: "DataFrame", stats: "DataFrame", catalog: "DataFrame | None") -> "DataFrame":
    """Same rows as :func:`transforms.item_table` over the window."""
    from pyspark.sql import functions as F

    combined = items.groupBy("product_id").agg(
        F.min("first_seen").alias("first_seen"),
        F.sum("n_events").alias("n_events"),
        F.sum("n_purchases").alias("n_purchases"),
        F.max("latest").alias("latest"),
    )
    users = stats.groupBy("product_id").agg(F.count(F.lit(1)).alias("n_users"))
    return T.item_features(combined, users, catalog)


def combine_sessions(sessions: "DataFrame", gap_minutes: int) -> "DataFrame":
    """One row, ``sessions``: the window's session count, sessions over midnight counted once."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    previous = Window.partitionBy("user_id").orderBy("ds")
    previous_time = F.lag("last_event_time").over(previous)
    previous_session = F.lag("last_user_session").over(previous)
    continues = (
        previous_time.isNotNull()
        & (F.col("first_event_time").cast("long") - previous_time.cast("long") <= gap_minutes * 60)
        & F.coalesce(previous_session, F.lit("")).eqNullSafe(F.coalesce(F.col("first_user_session"), F.lit("")))
    )
    return (
        sessions.withColumn("_continues", continues.cast("long"))
        .agg((F.coalesce(F.sum("n_sessions"), F.lit(0)) - F.coalesce(F.sum("_continues"), F.lit(0))).alias("sessions"))
    )
