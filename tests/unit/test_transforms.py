"""Tests of the pure Spark feature transforms on small hand-made event frames.

Every expected frame below is worked out by hand from the input rows, never computed with the code
under test.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

pytest.importorskip("pyspark")

from pyspark.sql import functions as F  # noqa: E402
from pyspark.testing import assertDataFrameEqual  # noqa: E402

from recsys.features import transforms as T  # noqa: E402

EVENTS_SCHEMA = (
    "event_time timestamp, event_type string, product_id long, category_id long, category_code string, "
    "brand string, price double, user_id long, user_session string"
)
WEIGHTS = {"view": 1.0, "cart": 3.0, "remove_from_cart": -1.0, "purchase": 5.0}
CATEGORY = 2053013555631882655  # a real-looking REES46 category id (beyond 2**53 on purpose)


def at(text: str) -> datetime:
    """A UTC timestamp from 'YYYY-MM-DD HH:MM[:SS]'."""
    fmt = "%Y-%m-%d %H:%M:%S" if text.count(":") == 2 else "%Y-%m-%d %H:%M"
    return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)


def event(time: str | datetime, event_type: str, product_id: int, user_id: int, session: str | None = "s",
          *, category_code: str | None = "electronics.smartphone", brand: str | None = "apple", price: float = 10.0):
    when = at(time) if isinstance(time, str) else time
    return (when, event_type, product_id, CATEGORY, category_code, brand, price, user_id, session)


def events_frame(spark, rows):
    return spark.createDataFrame(rows, EVENTS_SCHEMA)


# ---------------------------------------------------------------------------------------------
# deduplicate
# ---------------------------------------------------------------------------------------------
def test_deduplicate_drops_only_rows_equal_in_every_contract_column(spark):
    original = event("2026-11-20 10:00", "view", 1, 7)
    other_price = event("2026-11-20 10:00", "view", 1, 7, price=11.0)
    other_session = event("2026-11-20 10:00", "view", 1, 7, session="t")
    frame = events_frame(spark, [original, original, original, other_price, other_session])

    assertDataFrameEqual(T.deduplicate(frame), events_frame(spark, [original, other_price, other_session]))


# ---------------------------------------------------------------------------------------------
# sessionize
# ---------------------------------------------------------------------------------------------
def test_sessionize_splits_after_a_gap_longer_than_the_limit_and_on_a_user_session_change(spark):
    rows = [
        # user 1: 20 minutes apart (same session), then 31 minutes (new), then user_session changes (new)
        event("2026-11-20 10:00", "view", 1, 1, "A"),
        event("2026-11-20 10:20", "view", 2, 1, "A"),
        event("2026-11-20 10:51", "view", 3, 1, "A"),
        event("2026-11-20 10:52", "cart", 3, 1, "B"),
        # user 2: exactly 30 minutes apart is not longer than the gap: one session
        event("2026-11-20 10:00", "view", 1, 2, "A"),
        event("2026-11-20 10:30", "view", 1, 2, "A"),
        # user 3: no user_session at all, 5 minutes apart: one session
        event("2026-11-20 09:00", "view", 4, 3, None),
        event("2026-11-20 09:05", "view", 5, 3, None),
    ]
    expected_ids = ["1-1", "1-1", "1-2", "1-3", "2-1", "2-1", "3-1", "3-1"]
    expected = spark.createDataFrame(
        [(*row, session_id) for row, session_id in zip(rows, expected_ids)], EVENTS_SCHEMA + ", session_id string"
    )

    assertDataFrameEqual(T.sessionize(events_frame(spark, rows), gap_minutes=30), expected)


def test_sessionize_numbers_sessions_in_time_order_whatever_the_input_order(spark):
    rows = [
        event("2026-11-21 08:00", "view", 1, 9, "C"),
        event("2026-11-20 08:00", "view", 1, 9, "A"),
        event("2026-11-20 12:00", "view", 1, 9, "A"),  # 4 hours after the previous one
    ]
    expected = spark.createDataFrame(
        [(*rows[1], "9-1"), (*rows[2], "9-2"), (*rows[0], "9-3")], EVENTS_SCHEMA + ", session_id string"
    )

    assertDataFrameEqual(T.sessionize(events_frame(spark, rows), gap_minutes=30), expected)


# ---------------------------------------------------------------------------------------------
# interactions
# ---------------------------------------------------------------------------------------------
INTERACTIONS_SCHEMA = "user_id long, product_id long, weight double, n_events long, last_event_time timestamp, purchased boolean"


def test_interactions_weight_events_decay_them_and_drop_non_positive_pairs(spark):
    reference = at("2026-11-21 00:00")
    one_half_life_ago = reference - timedelta(days=14)
    two_half_lives_ago = reference - timedelta(days=28)
    rows = [
        # (1, 10): view one half-life ago (1 * 0.5) + cart two half-lives ago (3 * 0.25) = 1.25
        event(one_half_life_ago, "view", 10, 1),
        event(two_half_lives_ago, "cart", 10, 1),
        # (1, 11): view and remove_from_cart at the reference time: 1 - 1 = 0, not positive: dropped
        event(reference, "view", 11, 1),
        event(reference, "remove_from_cart", 11, 1),
        # (1, 12): only a remove_from_cart: -0.5, dropped
        event(one_half_life_ago, "remove_from_cart", 12, 1),
        # (2, 10): a purchase two half-lives ago: 5 * 0.25 = 1.25, purchased
        event(two_half_lives_ago, "purchase", 10, 2),
        # (2, 13): a view a week *after* the reference time is not boosted above its full weight: 1.0
        event(reference + timedelta(days=7), "view", 13, 2),
    ]
    expected = spark.createDataFrame(
        [
            (1, 10, 1.25, 2, one_half_life_ago, False),
            (2, 10, 1.25, 1, two_half_lives_ago, True),
            (2, 13, 1.0, 1, reference + timedelta(days=7), False),
        ],
        INTERACTIONS_SCHEMA,
    )

    result = T.interactions(events_frame(spark, rows), WEIGHTS, reference, half_life_days=14.0)

    assertDataFrameEqual(result, expected)


def test_interactions_decay_halves_a_weight_after_exactly_one_half_life(spark):
    reference = at("2026-11-21 00:00")
    rows = [
        event(reference - timedelta(days=3), "cart", 1, 1),  # 3 * 0.5 with a 3-day half-life
        event(reference, "cart", 2, 1),  # no decay at age 0
        event(reference - timedelta(days=6), "cart", 3, 1),  # 3 * 0.25
    ]
    result = T.interactions(events_frame(spark, rows), WEIGHTS, reference, half_life_days=3.0).select(
        "product_id", "weight"
    )

    assertDataFrameEqual(result, spark.createDataFrame([(1, 1.5), (2, 3.0), (3, 0.75)], "product_id long, weight double"))


# ---------------------------------------------------------------------------------------------
# seen_pairs
# ---------------------------------------------------------------------------------------------
def test_seen_pairs_is_every_distinct_pair_with_any_event_even_a_remove_from_cart(spark):
    rows = [
        event("2026-11-20 10:00", "view", 10, 1),
        event("2026-11-20 10:01", "view", 10, 1),
        event("2026-11-20 10:02", "remove_from_cart", 11, 1),
        event("2026-11-20 10:03", "purchase", 10, 2),
    ]
    expected = spark.createDataFrame([(1, 10), (1, 11), (2, 10)], "user_id long, product_id long")

    assertDataFrameEqual(T.seen_pairs(events_frame(spark, rows)), expected)


# ---------------------------------------------------------------------------------------------
# sequences
# ---------------------------------------------------------------------------------------------
SEQUENCES_SCHEMA = "user_id long, product_ids array<long>, event_types array<string>, length int"


def test_sequences_collapse_consecutive_repeats_to_the_strongest_event_and_keep_the_last_steps(spark):
    rows = [
        # user 1: view, view, cart of A collapse to one "cart" step; B view+purchase -> "purchase";
        # coming back to A later is a new step.
        event("2026-11-20 10:00", "view", 100, 1),
        event("2026-11-20 10:01", "view", 100, 1),
        event("2026-11-20 10:02", "cart", 100, 1),
        event("2026-11-20 10:03", "view", 200, 1),
        event("2026-11-20 10:04", "purchase", 200, 1),
        event("2026-11-20 10:05", "view", 100, 1),
        # user 2: five different products, max_len 3 keeps the LAST three (given out of order)
        event("2026-11-20 10:05", "view", 5, 2),
        event("2026-11-20 10:01", "view", 1, 2),
        event("2026-11-20 10:03", "view", 3, 2),
        event("2026-11-20 10:02", "view", 2, 2),
        event("2026-11-20 10:04", "view", 4, 2),
        # user 3: cart then remove_from_cart of C: cart is the stronger signal
        event("2026-11-20 09:00", "cart", 7, 3),
        event("2026-11-20 09:01", "remove_from_cart", 7, 3),
        event("2026-11-20 09:02", "view", 8, 3),
    ]
    expected = spark.createDataFrame(
        [
            (1, [100, 200, 100], ["cart", "purchase", "view"], 3),
            (2, [3, 4, 5], ["view", "view", "view"], 3),
            (3, [7, 8], ["cart", "view"], 2),
        ],
        SEQUENCES_SCHEMA,
    )

    assertDataFrameEqual(T.sequences(events_frame(spark, rows), max_len=3), expected)


def test_sequences_truncation_counts_collapsed_steps_not_raw_events(spark):
    # Six events but only three steps (A x3, B x2, C): max_len 2 keeps B and C.
    rows = [event(f"2026-11-20 10:0{i}", "view", product, 1) for i, product in enumerate([1, 1, 1, 2, 2, 3])]
    expected = spark.createDataFrame([(1, [2, 3], ["view", "view"], 2)], SEQUENCES_SCHEMA)

    assertDataFrameEqual(T.sequences(events_frame(spark, rows), max_len=2), expected)


# ---------------------------------------------------------------------------------------------
# item_table
# ---------------------------------------------------------------------------------------------
ITEMS_SCHEMA = (
    "product_id long, category_code string, brand string, price double, title string, description string, "
    "first_seen timestamp, n_events long, n_users long, n_purchases long, text string, top_category string"
)
CATALOG_SCHEMA = "product_id long, title string, description string, category_code string, brand string, price double"


def _item_events(spark):
    return events_frame(
        spark,
        [
            # product 10: three events, two users, one purchase; the latest event (12:00) has price 95
            event("2026-11-20 10:00", "view", 10, 1, price=100.0),
            event("2026-11-20 11:00", "purchase", 10, 2, price=90.0),
            event("2026-11-20 12:00", "view", 10, 1, price=95.0),
            # product 11: no category, no brand
            event("2026-11-20 10:30", "view", 11, 1, category_code=None, brand=None, price=5.0),
            # product 12: underscores in the category become words too
            event("2026-11-20 10:40", "cart", 12, 3, category_code="appliances.kitchen.coffee_machine", brand=None, price=50.0),
        ],
    )


def test_item_table_without_catalog_takes_text_from_category_and_brand(spark):
    expected = spark.createDataFrame(
        [
            (10, "electronics.smartphone", "apple", 95.0, None, None, at("2026-11-20 10:00"), 3, 2, 1,
             "electronics smartphone apple", "electronics"),
            (11, None, None, 5.0, None, None, at("2026-11-20 10:30"), 1, 1, 0, "", "unknown"),
            (12, "appliances.kitchen.coffee_machine", None, 50.0, None, None, at("2026-11-20 10:40"), 1, 1, 0,
             "appliances kitchen coffee machine", "appliances"),
        ],
        ITEMS_SCHEMA,
    )

    assertDataFrameEqual(T.item_table(_item_events(spark), None), expected)


def test_item_table_with_catalog_adds_catalog_only_products_and_prefers_catalog_text(spark):
    catalog = spark.createDataFrame(
        [
            (10, "iPhone 15", "A phone", "electronics.smartphone", "Apple", 99.0),
            (20, "Kettle", None, "appliances.kitchen.kettle", "bosch", 30.0),
        ],
        CATALOG_SCHEMA,
    )
    expected = spark.createDataFrame(
        [
            # catalog brand wins; the last observed event price (95) wins over the catalog's 99
            (10, "electronics.smartphone", "Apple", 95.0, "iPhone 15", "A phone", at("2026-11-20 10:00"), 3, 2, 1,
             "iPhone 15 A phone electronics smartphone Apple", "electronics"),
            (11, None, None, 5.0, None, None, at("2026-11-20 10:30"), 1, 1, 0, "", "unknown"),
            (12, "appliances.kitchen.coffee_machine", None, 50.0, None, None, at("2026-11-20 10:40"), 1, 1, 0,
             "appliances kitchen coffee machine", "appliances"),
            # in the catalog only: never seen, zero counts
            (20, "appliances.kitchen.kettle", "bosch", 30.0, "Kettle", None, None, 0, 0, 0,
             "Kettle appliances kitchen kettle bosch", "appliances"),
        ],
        ITEMS_SCHEMA,
    )

    assertDataFrameEqual(T.item_table(_item_events(spark), catalog), expected)


# ---------------------------------------------------------------------------------------------
# slice_window, targets, stage_bounds
# ---------------------------------------------------------------------------------------------
def test_slice_window_keeps_start_day_and_excludes_end_day(spark):
    rows = [
        event("2026-11-19 23:59:59", "view", 1, 1),
        event("2026-11-20 00:00:00", "view", 2, 1),
        event("2026-11-21 23:59:59", "view", 3, 1),
        event("2026-11-22 00:00:00", "view", 4, 1),
    ]
    frame = events_frame(spark, rows)

    assertDataFrameEqual(T.slice_window(frame, date(2026, 11, 20), date(2026, 11, 22)), events_frame(spark, rows[1:3]))
    assertDataFrameEqual(T.slice_window(frame, None, date(2026, 11, 20)), events_frame(spark, rows[:1]))


def test_targets_are_new_items_of_warm_users_only(spark):
    history = events_frame(
        spark,
        [
            event("2026-11-18 10:00", "view", 1, 1),
            event("2026-11-18 10:01", "remove_from_cart", 2, 1),
            event("2026-11-18 10:02", "view", 3, 2),
        ],
    )
    future = events_frame(
        spark,
        [
            event("2026-11-20 10:00", "purchase", 2, 1),  # seen in history (even only a remove): not a target
            event("2026-11-20 10:01", "view", 4, 1),  # new for user 1: target
            event("2026-11-20 10:02", "cart", 4, 1),  # same pair again: one target row
            event("2026-11-20 10:03", "view", 5, 2),  # new for user 2: target
            event("2026-11-20 10:04", "view", 1, 3),  # user 3 has no history (cold): not a target
        ],
    )
    expected = spark.createDataFrame([(1, 4), (2, 5)], "user_id long, product_id long")

    assertDataFrameEqual(T.targets(history, future), expected)


def test_stage_bounds_cut_validation_and_test_days_off_the_end():
    # ds=2026-11-23 with 2 test days: test scores 11-22 and 11-23 (end exclusive 11-24); 2 validation
    # days before it: validation history ends (exclusive) 11-20 and scores 11-20 and 11-21.
    assert T.stage_bounds(date(2026, 11, 23), val_days=2, test_days=2) == {
        "val": (date(2026, 11, 20), date(2026, 11, 22)),
        "test": (date(2026, 11, 22), date(2026, 11, 24)),
        "full": (date(2026, 11, 24), None),
    }
    assert T.stage_bounds(date(2026, 11, 23), val_days=1, test_days=3) == {
        "val": (date(2026, 11, 20), date(2026, 11, 21)),
        "test": (date(2026, 11, 21), date(2026, 11, 24)),
        "full": (date(2026, 11, 24), None),
    }
    # across a month end
    assert T.stage_bounds(date(2026, 12, 1), val_days=2, test_days=1)["val"] == (date(2026, 11, 29), date(2026, 12, 1))


# ---------------------------------------------------------------------------------------------
# daily partials (recsys.features.partials): hand-made partial rows, combined
# ---------------------------------------------------------------------------------------------
def test_day_pairs_store_counts_and_decay_relative_to_the_day_start(spark):
    from recsys.features import partials as P

    # half-life 1 day: an event at 00:00 counts 2**0 = 1, at 12:00 2**0.5, at 18:00 2**0.75
    rows = [
        event("2026-11-20 00:00", "view", 10, 1),
        event("2026-11-20 12:00", "view", 10, 1),
        event("2026-11-20 18:00", "cart", 10, 1),
    ]
    frame = events_frame(spark, rows).withColumn("ds", F.lit(date(2026, 11, 20)))
    expected = spark.createDataFrame(
        [
            (date(2026, 11, 20), 1, 10, "view", 2, 1 + 2**0.5, at("2026-11-20 12:00")),
            (date(2026, 11, 20), 1, 10, "cart", 1, 2**0.75, at("2026-11-20 18:00")),
        ],
        P.PARTIAL_SCHEMAS["pairs"],
    )

    assertDataFrameEqual(P.day_partials(frame, half_life_days=1.0, gap_minutes=30)["pairs"], expected, rtol=1e-12)


def test_pair_stats_rebuild_the_decayed_weight_for_any_stage_cut_off(spark):
    from recsys.features import partials as P

    day1, day2 = date(2026, 11, 19), date(2026, 11, 20)
    pairs = spark.createDataFrame(
        [
            # a view at 12:00 on day1 (decay_sum 2**0.5 with a 1-day half-life) and a cart at 00:00 on day2
            (day1, 1, 10, "view", 1, 2**0.5, at("2026-11-19 12:00")),
            (day2, 1, 10, "cart", 1, 1.0, at("2026-11-20 00:00")),
            # a remove_from_cart only: never a positive weight
            (day2, 1, 11, "remove_from_cart", 1, 1.0, at("2026-11-20 00:00")),
        ],
        P.PARTIAL_SCHEMAS["pairs"],
    )
    bounds = {"val": (day2, date(2026, 11, 21)), "full": (date(2026, 11, 21), None)}
    stats = P.pair_stats(pairs, WEIGHTS, half_life_days=1.0, bounds=bounds)

    # val history ends at day2 00:00: the view is 0.5 day old: 0.5**0.5; (1, 10) is not a target
    # (already seen), (1, 11) is a target of the val slice (new, and the user is known)
    assertDataFrameEqual(
        P.stage_interactions(stats, "val"),
        spark.createDataFrame([(1, 10, 0.5**0.5, 1, at("2026-11-19 12:00"), False)], INTERACTIONS_SCHEMA),
        rtol=1e-12,
    )
    assertDataFrameEqual(P.stage_targets(stats, "val"), spark.createDataFrame([(1, 11)], "user_id long, product_id long"))
    # full history ends at day2 + 1: view 1.5 days old, cart 1 day old: 0.5**1.5 + 3 * 0.5
    assertDataFrameEqual(
        P.stage_interactions(stats, "full"),
        spark.createDataFrame([(1, 10, 0.5**1.5 + 1.5, 2, at("2026-11-20 00:00"), False)], INTERACTIONS_SCHEMA),
        rtol=1e-12,
    )
    assertDataFrameEqual(P.stage_seen(stats, "full"), spark.createDataFrame([(1, 10), (1, 11)], "user_id long, product_id long"))


def test_stage_sequences_merge_a_product_run_across_midnight_and_respect_each_cut_off(spark):
    from recsys.features import partials as P

    d1, d2, d3 = date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)
    steps = spark.createDataFrame(
        [
            (d1, 1, 1, 100, "view"), (d1, 1, 2, 200, "cart"),
            (d2, 1, 1, 200, "purchase"), (d2, 1, 2, 300, "view"),  # 200 continues over midnight
            (d3, 1, 1, 300, "view"),  # and so does 300
        ],
        P.PARTIAL_SCHEMAS["steps"],
    )
    bounds = {"val": (d2, d3), "full": (date(2026, 11, 21), None)}
    per_user = P.stage_sequences(steps, bounds, max_len=2)

    assertDataFrameEqual(
        P.sequences_of_stage(per_user, "val", max_len=2),  # day1 only: the run of 200 is cut at its cart
        spark.createDataFrame([(1, [100, 200], ["view", "cart"], 2)], SEQUENCES_SCHEMA),
    )
    assertDataFrameEqual(
        P.sequences_of_stage(per_user, "full", max_len=2),  # three steps (100, 200, 300): the last two
        spark.createDataFrame([(1, [200, 300], ["purchase", "view"], 2)], SEQUENCES_SCHEMA),
    )


def test_combine_sessions_counts_a_session_over_midnight_once(spark):
    from recsys.features import partials as P

    d1, d2 = date(2026, 11, 19), date(2026, 11, 20)
    sessions = spark.createDataFrame(
        [
            # user 1: 23:50 -> 00:10 in the same user_session: the session continues (1 + 2 - 1 = 2)
            (d1, 1, 1, at("2026-11-19 23:00"), "s", at("2026-11-19 23:50"), "s"),
            (d2, 1, 2, at("2026-11-20 00:10"), "s", at("2026-11-20 09:00"), "t"),
            # user 2: 70 minutes over midnight: a new session (1 + 1)
            (d1, 2, 1, at("2026-11-19 23:00"), "s", at("2026-11-19 23:00"), "s"),
            (d2, 2, 1, at("2026-11-20 00:10"), "s", at("2026-11-20 00:10"), "s"),
            # user 3: two minutes apart but the user_session changes: a new session (1 + 1)
            (d1, 3, 1, at("2026-11-19 23:59"), "a", at("2026-11-19 23:59"), "a"),
            (d2, 3, 1, at("2026-11-20 00:01"), "b", at("2026-11-20 00:01"), "b"),
        ],
        P.PARTIAL_SCHEMAS["sessions"],
    )

    assert P.combine_sessions(sessions, gap_minutes=30).first()["sessions"] == 6
