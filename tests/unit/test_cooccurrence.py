"""Item-to-item co-occurrence (Spark) and the "recently popular in the user's categories" baseline.

Small hand-made shops whose similarities and scores are worked out by hand below; the co-occurrence
counting runs on the real local Spark session of ``conftest.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.constants import ITEM_COL, RANK_COL, SCORE_COL, USER_COL
from recsys.models.category_popularity import CategoryPopularityParams, CategoryPopularityRecommender
from recsys.models.cooccurrence import NEIGHBOUR_COL, SIMILARITY_COL, CooccurrenceParams, CooccurrenceRecommender, item_neighbours

A, B, C, D = 10, 11, 12, 13
T0 = pd.Timestamp("2026-01-10", tz="UTC")


def _basket_interactions() -> pd.DataFrame:
    """Users 1-3 touched A and B, user 4 A and C, user 5 only D, user 6 only B.

    Users per item: n_A = 4, n_B = 4, n_C = 1, n_D = 1; together: c(A, B) = 3, c(A, C) = 1.
    Cosine: sim(A, B) = 3 / sqrt(4 * 4) = 0.75, sim(A, C) = 1 / sqrt(4 * 1) = 0.5; B-C and D never co-occur.
    """
    rows = [(u, item) for u in (1, 2, 3) for item in (A, B)] + [(4, A), (4, C), (5, D), (6, B)]
    frame = pd.DataFrame(rows, columns=[USER_COL, ITEM_COL])
    frame["weight"] = 1.0
    # Later rows are more recent, so user 4's most recent item is C.
    frame["last_event_time"] = [T0 + pd.Timedelta(minutes=i) for i in range(len(frame))]
    return frame


def _neighbours(spark, params: CooccurrenceParams) -> pd.DataFrame:
    table = item_neighbours(spark.createDataFrame(_basket_interactions()), params).toPandas()
    return table.sort_values([ITEM_COL, NEIGHBOUR_COL]).reset_index(drop=True)


def test_item_neighbours_are_cosine_of_user_cooccurrence(spark):
    table = _neighbours(spark, CooccurrenceParams(shrinkage=0.0))
    expected = pd.DataFrame(
        {ITEM_COL: [A, A, B, C], NEIGHBOUR_COL: [B, C, A, A], SIMILARITY_COL: [0.75, 0.5, 0.75, 0.5], "cooccurrences": [3, 1, 3, 1]}
    )
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)


def test_shrinkage_top_n_and_recent_item_cap(spark):
    # c / (c + 2) damps the pair resting on one user more: 0.75 * 3/5 = 0.45, 0.5 * 1/3 = 0.1667.
    shrunk = _neighbours(spark, CooccurrenceParams(shrinkage=2.0)).set_index([ITEM_COL, NEIGHBOUR_COL])[SIMILARITY_COL]
    assert shrunk[(A, B)] == pytest.approx(0.45)
    assert shrunk[(A, C)] == pytest.approx(0.5 / 3)
    top1 = _neighbours(spark, CooccurrenceParams(shrinkage=0.0, neighbours=1))
    assert top1[top1[ITEM_COL] == A][NEIGHBOUR_COL].tolist() == [B]
    # One item per user (the most recent) leaves no pair at all.
    assert _neighbours(spark, CooccurrenceParams(max_items_per_user=1)).empty


@pytest.fixture(scope="module")
def cooccurrence_model(spark):
    return CooccurrenceRecommender(CooccurrenceParams(shrinkage=0.0)).fit(spark, _basket_interactions())


def test_recommend_scores_neighbours_of_the_users_items(cooccurrence_model):
    recs = cooccurrence_model.recommend([4, 5, 6, 999], k=5)
    assert list(recs.columns) == [USER_COL, ITEM_COL, SCORE_COL, RANK_COL]
    by_user = {u: g for u, g in recs.groupby(USER_COL)}
    # User 6 touched B only: A (0.75) is the only item that co-occurs with B.
    assert by_user[6][ITEM_COL].tolist() == [A] and by_user[6][SCORE_COL].iloc[0] == pytest.approx(0.75)
    # User 4 touched A and C (half the weight each): B scores 0.5 * sim(A, B) = 0.375; A and C are seen.
    assert by_user[4][ITEM_COL].tolist() == [B] and by_user[4][SCORE_COL].iloc[0] == pytest.approx(0.375)
    # D co-occurs with nothing and 999 is unknown: no rows rather than made-up ones.
    assert 5 not in by_user and 999 not in by_user
    with_seen = cooccurrence_model.recommend([4], k=5, exclude_seen=False)
    assert set(with_seen[ITEM_COL]) == {A, B, C}


def test_recommend_from_items_serves_a_cold_basket(cooccurrence_model):
    basket = pd.DataFrame({USER_COL: [77, 78], ITEM_COL: [C, 999_999]})
    recs = cooccurrence_model.recommend_from_items(basket, k=3)
    assert recs[USER_COL].tolist() == [77] and recs[ITEM_COL].tolist() == [A]
    assert recs[SCORE_COL].iloc[0] == pytest.approx(0.5)
    neighbours = cooccurrence_model.neighbours_of([A], k=1)
    assert neighbours[NEIGHBOUR_COL].tolist() == [B]


def test_cooccurrence_save_load_round_trip(cooccurrence_model, tmp_path):
    cooccurrence_model.save(tmp_path / "model")
    loaded = CooccurrenceRecommender.load(tmp_path / "model")
    users = [1, 4, 6]
    pd.testing.assert_frame_equal(loaded.recommend(users, 3), cooccurrence_model.recommend(users, 3))


def test_cooccurrence_rejects_bad_input(spark, cooccurrence_model):
    with pytest.raises(ValueError, match="last_event_time"):
        CooccurrenceRecommender().fit(spark, _basket_interactions().drop(columns=["last_event_time"]))
    with pytest.raises(ValueError, match="no interactions"):
        CooccurrenceRecommender().fit(spark, _basket_interactions().iloc[:0])
    with pytest.raises(ValueError, match="k must be"):
        cooccurrence_model.recommend([1], k=0)
    with pytest.raises(ValueError, match="neighbours"):
        CooccurrenceParams(neighbours=0)
    with pytest.raises(RuntimeError, match="before fit"):
        CooccurrenceRecommender().recommend([1], k=3)


# ---- recently popular in the user's categories -------------------------------------------------
SHOES, KITCHEN = (1, 2, 3), (4, 5)


def _category_shop() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Item 4 (kitchen) was touched by 5 users in the last days, item 2 (shoes) by 2, items 1 and 5 by 1;
    item 3 only long ago (not recent). User 100 touched shoe 1 only."""
    items = pd.DataFrame({ITEM_COL: [1, 2, 3, 4, 5], "category_code": ["shoes"] * 3 + ["kitchen"] * 2})
    recent, old = T0 + pd.Timedelta(days=30), T0
    rows = [(100, 1, 2.0, recent)]
    rows += [(200 + u, 4, 1.0, recent) for u in range(5)]
    rows += [(300 + u, 2, 1.0, recent) for u in range(2)]
    rows += [(400, 5, 1.0, recent), (401, 3, 1.0, old)]
    return items, pd.DataFrame(rows, columns=[USER_COL, ITEM_COL, "weight", "last_event_time"])


def test_category_popularity_prefers_the_users_categories():
    items, interactions = _category_shop()
    model = CategoryPopularityRecommender(CategoryPopularityParams(recent_days=7, smoothing=0.01)).fit(interactions, items)
    recs = model.recommend([100, 999], k=5)
    known = recs[recs[USER_COL] == 100]
    # User 100's share of shoes is 1: shoe 2 scores (1 + 0.01) * 2 = 2.02, kitchen 4 scores 0.01 * 5 = 0.05,
    # kitchen 5 0.01 * 1; shoe 1 is seen and shoe 3 was not touched recently.
    assert known[ITEM_COL].tolist() == [2, 4, 5]
    np.testing.assert_allclose(known[SCORE_COL], [2.02, 0.05, 0.01])
    # A user without history gets plain recent popularity.
    assert recs[recs[USER_COL] == 999][ITEM_COL].tolist() == [4, 2, 1, 5]  # 1 and 5 tie: smaller id first


def test_category_popularity_round_trip_and_errors(tmp_path):
    items, interactions = _category_shop()
    model = CategoryPopularityRecommender().fit(interactions, items)
    model.save(tmp_path / "m")
    pd.testing.assert_frame_equal(CategoryPopularityRecommender.load(tmp_path / "m").recommend([100, 999], 3), model.recommend([100, 999], 3))
    with pytest.raises(ValueError, match="category_code"):
        CategoryPopularityRecommender().fit(interactions, items.drop(columns=["category_code"]))
    with pytest.raises(ValueError, match="recent_days"):
        CategoryPopularityParams(recent_days=0)
