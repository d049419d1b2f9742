"""Business rules and the coverage-aware re-rank of the hybrid (include/recsys/fusion/rules.py), and the
co-occurrence reasons of explain.py, on small hand-made frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.constants import ITEM_COL, RANK_COL, SCORE_COL, USER_COL
from recsys.fusion import rules
from recsys.fusion.blend import fill_with_fallback
from recsys.fusion.explain import add_reasons

DAY = pd.Timestamp("2026-03-10", tz="UTC")


def _ranked(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[USER_COL, ITEM_COL, SCORE_COL])


def test_popularity_penalty_is_log_score_minus_strength_log_users():
    ranked = _ranked([(1, 10, 0.5), (1, 11, 0.4)])
    item_users = pd.Series({10: 99.0, 11: 0.0})
    out = rules.popularity_penalty(ranked, item_users, strength=0.2)
    np.testing.assert_allclose(out[SCORE_COL], [np.log(0.5) - 0.2 * np.log(100.0), np.log(0.4)])
    # The head item (100 users) falls behind the slightly less likely tail item.
    assert rules.rerank(ranked, 2, rules.RerankChoice(0.2), item_users, None)[ITEM_COL].tolist() == [11, 10]
    assert rules.rerank(ranked, 2, rules.RerankChoice(0.0), item_users, None)[ITEM_COL].tolist() == [10, 11]
    with pytest.raises(ValueError, match="strength"):
        rules.popularity_penalty(ranked, item_users, -1.0)


def test_choose_rerank_takes_the_best_ndcg_that_keeps_the_best_singles_coverage():
    # Both users went on to touch the head item 10, which the ranker puts first for both (NDCG 1, but
    # coverage 1/4). The single model covers 2 of the 4 catalog items. A penalty of 0.05 moves tail
    # item 20 up for user 1 only (log 0.6 - 0.05 log 1001 < log 0.5 - 0.05 log 2): coverage 2/4, NDCG 0.5;
    # from 0.15 on it moves 21 up for user 2 as well: NDCG 0, far from a tie. 0.05 and 0.10 give the same
    # lists, and the milder setting wins the tie.
    scored = _ranked([(1, 10, 0.6), (1, 20, 0.5), (2, 10, 0.6), (2, 21, 0.3)])
    truth = pd.DataFrame({USER_COL: [1, 2], ITEM_COL: [10, 10]})
    single = pd.DataFrame({USER_COL: [1, 2], ITEM_COL: [10, 30], SCORE_COL: [1.0, 1.0], RANK_COL: [1, 1]})
    item_users = pd.Series({10: 1000.0, 20: 1.0, 21: 1.0, 30: 1.0})
    category = pd.Series({10: "a", 20: "a", 21: "a", 30: "b"})
    choice, trials = rules.choose_rerank(scored, truth, {"m": single}, item_users, category, n_catalog_items=4, k=1)
    assert choice == rules.RerankChoice(0.05, 0)
    assert len(trials) == len(rules.PENALTY_GRID) * len(rules.CATEGORY_CAP_GRID)
    by_strength = {t["strength"]: t for t in trials if t["max_per_category"] == 0}
    assert (by_strength[0.0]["ndcg@1"], by_strength[0.0]["coverage@1"]) == (1.0, 0.25)
    assert (by_strength[0.05]["ndcg@1"], by_strength[0.05]["coverage@1"]) == (0.5, 0.5)
    assert (by_strength[0.15]["ndcg@1"], by_strength[0.15]["coverage@1"]) == (0.0, 0.5)
    # With folds the coverage must hold on each fold's users too: the margin is the worst shortfall.
    folded, folded_trials = rules.choose_rerank(
        scored, truth, {"m": single}, item_users, category, n_catalog_items=4, k=1, folds=pd.Series({1: 0, 2: 1})
    )
    margins = {t["strength"]: t["coverage_margin"] for t in folded_trials if t["max_per_category"] == 0}
    assert margins[0.0] == pytest.approx(-0.25) and margins[0.05] == pytest.approx(0.0)
    assert folded == choice


def test_catalog_rule_drops_products_missing_from_the_catalog(tmp_path):
    catalog = tmp_path / "products.csv"
    catalog.write_text("product_id,title,description,category_code,brand,price\n10,a,,x,,1.0\n12,b,,x,,2.0\n")
    ids = rules.catalog_product_ids(catalog)
    assert ids.tolist() == [10, 12]
    frame = _ranked([(1, 10, 0.9), (1, 11, 0.8), (1, 12, 0.7)])
    assert rules.restrict_to_catalog(frame, ids)[ITEM_COL].tolist() == [10, 12]
    # No catalog file: nothing to exclude by.
    assert rules.catalog_product_ids(tmp_path / "missing.csv") is None
    assert len(rules.restrict_to_catalog(frame, None)) == 3
    catalog.write_text("product_id,title\n10,a\nabc,b\n")
    with pytest.raises(ValueError, match="non-numeric product_id"):
        rules.catalog_product_ids(catalog)


def _interactions(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[USER_COL, ITEM_COL, "weight", "last_event_time"])


def test_cold_users_are_those_whose_every_interaction_is_today():
    interactions = _interactions([
        (1, 10, 1.0, DAY + pd.Timedelta(hours=3)),  # cold: only today
        (1, 11, 2.0, DAY + pd.Timedelta(hours=4)),
        (2, 10, 1.0, DAY + pd.Timedelta(hours=1)),  # warm: has an earlier day too
        (2, 12, 1.0, DAY - pd.Timedelta(days=2)),
    ])
    cold = rules.cold_users(interactions, DAY)
    assert cold[USER_COL].unique().tolist() == [1] and sorted(cold[ITEM_COL]) == [10, 11]


def test_session_context_orders_neighbours_then_category_popular_then_popular(spark):
    from recsys.models.cooccurrence import CooccurrenceRecommender

    # Item 10 co-occurs with 30 (three users) more than with 31 (one user).
    history = _interactions([(u, i, 1.0, DAY - pd.Timedelta(days=3)) for u in (5, 6, 7) for i in (10, 30)] + [
        (8, 10, 1.0, DAY - pd.Timedelta(days=3)), (8, 31, 1.0, DAY - pd.Timedelta(days=3))
    ])
    neighbours = CooccurrenceRecommender().fit(spark, history)
    today = _interactions([(1, 10, 1.0, DAY)])
    category_popular = pd.DataFrame({USER_COL: [1, 1, 1], ITEM_COL: [31, 40, 41], SCORE_COL: [3.0, 2.0, 1.0], RANK_COL: [1, 2, 3]})
    popular = pd.DataFrame({USER_COL: [1, 1, 1], ITEM_COL: [10, 50, 40], SCORE_COL: [9.0, 8.0, 7.0], RANK_COL: [1, 2, 3]})
    recs = rules.session_context(today, 6, neighbours, category_popular, popular)
    # 31 comes once (from co-occurrence), 10 was touched today, 40 once (from category popularity).
    assert recs[ITEM_COL].tolist() == [30, 31, 40, 41, 50]
    assert recs["sources"].tolist() == ["cooccurrence", "cooccurrence", "category_popularity", "category_popularity", "popularity"]
    assert recs[RANK_COL].tolist() == [1, 2, 3, 4, 5]
    # Without a co-occurrence model the category-popular items lead.
    assert rules.session_context(today, 2, None, category_popular, popular)[ITEM_COL].tolist() == [31, 40]


def test_fallback_rows_follow_log_scored_rows():
    hybrid = pd.DataFrame({USER_COL: [1], ITEM_COL: [10], SCORE_COL: [-7.5], "sources": ["a"]})
    fallback = pd.DataFrame({USER_COL: [1, 1], ITEM_COL: [10, 11], SCORE_COL: [5.0, 4.0], RANK_COL: [1, 2]})
    filled = fill_with_fallback(hybrid, fallback, np.array([1]), 2, source="category_popularity")
    assert filled[ITEM_COL].tolist() == [10, 11]
    assert filled["sources"].tolist() == ["a", "category_popularity"]


def test_reasons_name_the_cooccurring_item_the_user_touched(spark):
    from recsys.models.cooccurrence import CooccurrenceParams, CooccurrenceRecommender

    basket = _interactions([(u, i, 1.0, DAY) for u in (1, 2, 3) for i in (10, 11)])
    model = CooccurrenceRecommender(CooccurrenceParams(shrinkage=0.0)).fit(spark, basket)
    items = pd.DataFrame({ITEM_COL: [10, 11, 12], "title": ["Red shoe", "Blue sock", "Green hat"],
                          "category_code": ["apparel.shoes"] * 3, "top_category": ["apparel"] * 3})
    sequences = pd.DataFrame({USER_COL: [9, 8], "product_ids": [[12, 10], [12]], "event_types": [["view", "purchase"], ["view"]]})
    recs = pd.DataFrame({USER_COL: [9, 9, 8], ITEM_COL: [11, 12, 11], "sources": ["cooccurrence,content", "category_popularity", "cooccurrence"]})
    reasons = add_reasons(recs, items, sequences, cooccurrence=model)["reason"].tolist()
    assert reasons[0] == "customers who bought Red shoe also bought this"
    assert reasons[1] == "popular lately in apparel, a category you like"
    # User 8 touched nothing that co-occurs with item 11: no made-up anchor, the generic reason instead.
    assert reasons[2] == "popular in apparel"


def test_choose_rerank_prefers_wider_coverage_among_ndcg_ties():
    # k=2. Every penalty from 0.05 up gives the same NDCG and lists with more distinct items than the
    # plain order: the widest of the tied settings is chosen, not the first one reaching the coverage.
    scored = _ranked([(1, 10, 0.9), (1, 11, 0.8), (1, 20, 0.79), (2, 12, 0.9), (2, 10, 0.8), (2, 21, 0.79)])
    truth = pd.DataFrame({USER_COL: [1, 2], ITEM_COL: [11, 12]})
    single = pd.DataFrame({USER_COL: [1, 1, 2, 2], ITEM_COL: [11, 10, 12, 10], SCORE_COL: 1.0, RANK_COL: [1, 2, 1, 2]})
    item_users = pd.Series({10: 500.0, 11: 1.0, 12: 1.0, 20: 1.0, 21: 1.0})
    category = pd.Series({i: "a" for i in (10, 11, 12, 20, 21)})
    choice, trials = rules.choose_rerank(scored, truth, {"m": single}, item_users, category, n_catalog_items=5, k=2)
    plain = next(t for t in trials if t["strength"] == 0 and t["max_per_category"] == 0)
    chosen = next(t for t in trials if (t["strength"], t["max_per_category"]) == (choice.strength, choice.max_per_category))
    # Plain order: user 1 [10, 11] (hit at 2), user 2 [12, 10] (hit at 1); the penalty lists [11, 20] and
    # [12, 21]: both hits at rank 1 at best, so NDCG does not fall, and coverage grows from 3/5 to 4/5.
    assert plain["coverage@2"] == pytest.approx(0.6)
    assert chosen["coverage@2"] == pytest.approx(0.8) and chosen["ndcg@2"] >= plain["ndcg@2"]


def test_session_context_recommends_only_catalog_products(spark):
    from recsys.models.cooccurrence import CooccurrenceRecommender

    history = _interactions([(u, i, 1.0, DAY - pd.Timedelta(days=3)) for u in (5, 6) for i in (10, 30, 31)])
    neighbours = CooccurrenceRecommender().fit(spark, history)
    today = _interactions([(1, 10, 1.0, DAY)])  # item 10 itself left the catalog; it still anchors neighbours
    category_popular = pd.DataFrame({USER_COL: [1, 1], ITEM_COL: [40, 41], SCORE_COL: [2.0, 1.0], RANK_COL: [1, 2]})
    popular = category_popular.iloc[:0]
    recs = rules.session_context(today, 5, neighbours, category_popular, popular, catalog_ids=np.array([31, 41]))
    assert recs[ITEM_COL].tolist() == [31, 41]
