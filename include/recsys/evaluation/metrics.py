"""Offline recommendation metrics (ranking accuracy, coverage, popularity bias, diversity) over all users at once.

Every function is pure and vectorised with numpy/pandas group-bys, in the style of Microsoft Recommenders'
``python_evaluation.py`` and RecBole's ``metrics.py``: no per-user Python loop, so a test slice with
millions of users costs a few joins, not millions of iterations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.constants import ITEM_COL, RANK_COL, USER_COL

__all__ = [
    "ranking_metrics",
    "catalog_coverage",
    "popularity_bias",
    "intra_list_diversity",
    "evaluate",
]

_HIT_ORDER = "_hit_order"


def _check_k(k: int, where: str) -> None:
    # bool is an int subclass; k=True would silently mean k=1.
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{where}: k must be an integer >= 1 (the cut-off of the top-k list), got {k!r}")


def _check_columns(frame: pd.DataFrame, required: tuple[str, ...], argument: str, where: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{where}: {argument} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{where}: {argument} is missing column(s) {missing}; it has {list(frame.columns)}. "
            f"Rename or add them (see recsys.constants)."
        )
    null_rows = int(frame[list(required)].isna().any(axis=1).sum())
    if null_rows:
        raise ValueError(f"{where}: {argument} has {null_rows} row(s) with a null in {list(required)}; drop or fill them")


def _top_k(recommendations: pd.DataFrame, k: int, where: str) -> pd.DataFrame:
    """Validate a recommendation frame and return its rows with rank <= k (user, item, rank only)."""
    _check_k(k, where)
    _check_columns(recommendations, (USER_COL, ITEM_COL, RANK_COL), "recommendations", where)
    ranks = recommendations[RANK_COL]
    if not pd.api.types.is_integer_dtype(ranks):
        raise ValueError(f"{where}: recommendations[{RANK_COL!r}] must be an integer column, got dtype {ranks.dtype}")
    if (ranks < 1).any():
        raise ValueError(f"{where}: {int((ranks < 1).sum())} recommendation row(s) have {RANK_COL} < 1; ranks are 1-based")
    duplicated_items = int(recommendations.duplicated([USER_COL, ITEM_COL]).sum())
    if duplicated_items:
        raise ValueError(
            f"{where}: {duplicated_items} duplicate ({USER_COL}, {ITEM_COL}) row(s) in recommendations; "
            f"an item may appear once per user's list: deduplicate before evaluating"
        )
    # Two items sharing a rank would let a user have more than k items in the top k (precision > 1).
    duplicated_ranks = int(recommendations.duplicated([USER_COL, RANK_COL]).sum())
    if duplicated_ranks:
        raise ValueError(
            f"{where}: {duplicated_ranks} duplicate ({USER_COL}, {RANK_COL}) row(s) in recommendations; "
            f"each position of a user's list must hold one item: break ties before ranking"
        )
    top = recommendations.loc[ranks <= k, [USER_COL, ITEM_COL, RANK_COL]]
    # Nullable Int64 ranks would become object arrays in to_numpy(); positions index numpy arrays below.
    return top.astype({RANK_COL: "int64"})


def _relevant(truth: pd.DataFrame, where: str) -> pd.DataFrame:
    _check_columns(truth, (USER_COL, ITEM_COL), "truth", where)
    relevant = truth[[USER_COL, ITEM_COL]].drop_duplicates()
    if relevant.empty:
        raise ValueError(f"{where}: truth is empty, so there is no user to evaluate; check the evaluation slice")
    return relevant


def _discounts(k: int) -> np.ndarray:
    """discounts[i] = 1 / log2(i + 1) for positions i = 1..k (index 0 unused)."""
    positions = np.arange(k + 1, dtype=float)
    discounts = np.zeros(k + 1)
    discounts[1:] = 1.0 / np.log2(positions[1:] + 1.0)
    return discounts


def ranking_metrics(recommendations: pd.DataFrame, truth: pd.DataFrame, k: int) -> dict[str, float]:
    """Accuracy of the top-k lists against held-out relevant items, averaged over the users in ``truth``.

    For a user u with relevant set T_u, top-k list L_u (rows with rank <= k), hits H_u = L_u ∩ T_u and
    rel(i) = 1 if the item at rank i is relevant (binary relevance), with m_u = min(|T_u|, k):

    - ``hr@k``        = 1[|H_u| > 0]                                              in [0, 1]
    - ``precision@k`` = |H_u| / k                                                 in [0, 1]
    - ``recall@k``    = |H_u| / |T_u|                                             in [0, 1]
    - ``ndcg@k``      = Σ_{i∈H_u} 1/log2(rank_i + 1)  /  Σ_{j=1..m_u} 1/log2(j + 1) in [0, 1]
    - ``map@k``       = (1/m_u) Σ_{i∈H_u} precision@rank_i  (AP@k)                in [0, 1]
    - ``mrr@k``       = 1 / rank of the first hit (0 without a hit)               in [0, 1]
    - ``ndcg_se@k``   = s / sqrt(n): the standard error of the mean ndcg@k, with s the sample standard
                        deviation of the n users' ndcg@k (0 with fewer than two users); how far the mean
                        may move on another sample of users, e.g. another day's held-out slice
    - ``users``       = number of evaluated users (the distinct users of ``truth``)

    Each metric is the mean over the evaluated users: a user of ``truth`` with no recommendation scores 0
    on everything, and recommended users absent from ``truth`` are ignored. Ranks are taken as given
    (a list with ranks 1, 3 has its second item at position 3).

    Args:
        recommendations: columns user_id, product_id, rank (1-based integer); rows with rank > k are ignored.
        truth: columns user_id, product_id of relevant items; duplicate pairs are dropped.
        k: cut-off, >= 1.

    Raises:
        ValueError: on missing columns, nulls, k < 1, non-integer or < 1 ranks, duplicate (user, item)
            or (user, rank) in ``recommendations``, or an empty ``truth``.
    """
    where = "ranking_metrics"
    top = _top_k(recommendations, k, where)
    relevant = _relevant(truth, where)

    relevant_counts = relevant.groupby(USER_COL).size()
    users = relevant_counts.index
    n_users = len(users)

    hits = top.merge(relevant, on=[USER_COL, ITEM_COL], how="inner").sort_values([USER_COL, RANK_COL])
    # 1-based position of each hit among the user's hits: the numerator of precision at that rank.
    hits[_HIT_ORDER] = hits.groupby(USER_COL).cumcount() + 1

    discounts = _discounts(k)
    hit_ranks = hits[RANK_COL].to_numpy()
    by_user = hits.assign(
        _dcg=discounts[hit_ranks],
        _precision_at_hit=hits[_HIT_ORDER].to_numpy() / hit_ranks,
    ).groupby(USER_COL)
    per_user = pd.DataFrame(
        {
            "hits": by_user.size(),
            "dcg": by_user["_dcg"].sum(),
            "precision_sum": by_user["_precision_at_hit"].sum(),
            "first_hit_rank": by_user[RANK_COL].min(),
        }
    ).reindex(users)
    # Users without a hit (including users without any recommendation) contribute zeros.
    hit_counts = per_user["hits"].fillna(0.0).to_numpy()
    dcg = per_user["dcg"].fillna(0.0).to_numpy()
    precision_sum = per_user["precision_sum"].fillna(0.0).to_numpy()
    reciprocal_rank = (1.0 / per_user["first_hit_rank"]).fillna(0.0).to_numpy()

    n_relevant = relevant_counts.to_numpy()
    ideal_hits = np.minimum(n_relevant, k)
    ideal_dcg = np.cumsum(discounts)[ideal_hits]

    ndcg = dcg / ideal_dcg
    return {
        f"hr@{k}": float(np.mean(hit_counts > 0)),
        f"precision@{k}": float(np.mean(hit_counts / k)),
        f"recall@{k}": float(np.mean(hit_counts / n_relevant)),
        f"ndcg@{k}": float(np.mean(ndcg)),
        f"map@{k}": float(np.mean(precision_sum / ideal_hits)),
        f"mrr@{k}": float(np.mean(reciprocal_rank)),
        f"ndcg_se@{k}": float(np.std(ndcg, ddof=1) / np.sqrt(n_users)) if n_users > 1 else 0.0,
        "users": float(n_users),
    }


def catalog_coverage(recommendations: pd.DataFrame, n_catalog_items: int, k: int) -> float:
    """Share of the catalogue that appears in at least one top-k list.

    ``coverage@k = |∪_u L_u| / n_catalog_items``, in [0, 1]; 0 when nothing is recommended.

    Raises:
        ValueError: on a bad frame or k (see ``ranking_metrics``), ``n_catalog_items`` < 1, or more
            distinct recommended items than ``n_catalog_items`` (the catalogue size is then wrong).
    """
    where = "catalog_coverage"
    top = _top_k(recommendations, k, where)
    if isinstance(n_catalog_items, bool) or not isinstance(n_catalog_items, (int, np.integer)) or n_catalog_items < 1:
        raise ValueError(f"{where}: n_catalog_items must be an integer >= 1, got {n_catalog_items!r}")
    distinct_items = top[ITEM_COL].nunique()
    if distinct_items > n_catalog_items:
        raise ValueError(
            f"{where}: {distinct_items} distinct items are recommended but n_catalog_items is {n_catalog_items}; "
            f"pass the size of the catalogue the recommendations are drawn from"
        )
    return float(distinct_items / n_catalog_items)


def _check_item_series(series: pd.Series, argument: str, where: str) -> None:
    if not isinstance(series, pd.Series):
        raise TypeError(f"{where}: {argument} must be a pandas Series indexed by {ITEM_COL}, got {type(series).__name__}")
    duplicated = int(series.index.duplicated().sum())
    if duplicated:
        raise ValueError(f"{where}: {argument} has {duplicated} duplicate {ITEM_COL} index value(s); keep one per item")


def popularity_bias(recommendations: pd.DataFrame, item_popularity: pd.Series, k: int) -> float:
    """Mean popularity of the recommended items: how much the lists lean towards the head of the catalogue.

    ``popularity@k = (1 / Σ_u |L_u|) Σ_u Σ_{i∈L_u} pop(i)``, averaged over every top-k row, where ``pop`` is
    ``item_popularity`` (e.g. each item's share of training interactions) and items it does not know count 0.
    The range is [min pop, max pop] ([0, 1] for shares); 0 when nothing is recommended.

    Raises:
        ValueError: on a bad frame or k, or a duplicated index in ``item_popularity``.
    """
    where = "popularity_bias"
    top = _top_k(recommendations, k, where)
    _check_item_series(item_popularity, "item_popularity", where)
    if top.empty:
        return 0.0
    popularity = top[ITEM_COL].map(item_popularity).astype(float).fillna(0.0)
    return float(popularity.mean())


def intra_list_diversity(recommendations: pd.DataFrame, item_category: pd.Series, k: int) -> float:
    """Mean share of item pairs within a user's top-k list whose categories differ.

    For a list of n items with c_g items in category g: ``ILD_u = 1 - Σ_g C(c_g, 2) / C(n, 2)``, in [0, 1]
    (0: one category, 1: all categories distinct); ``diversity@k`` is the mean over users. Items whose
    category ``item_category`` does not know are left out (their pairs cannot be judged), and users with
    fewer than two judged items are skipped; 0 when no user is left.

    Raises:
        ValueError: on a bad frame or k, or a duplicated index in ``item_category``.
    """
    where = "intra_list_diversity"
    top = _top_k(recommendations, k, where)
    _check_item_series(item_category, "item_category", where)
    categorised = top.assign(_category=top[ITEM_COL].map(item_category)).dropna(subset=["_category"])
    if categorised.empty:
        return 0.0
    # Counting pairs per (user, category) keeps this O(rows) instead of materialising all k² pairs.
    per_category = categorised.groupby([USER_COL, "_category"]).size()
    same_category_pairs = (per_category * (per_category - 1) // 2).groupby(level=USER_COL).sum()
    list_sizes = per_category.groupby(level=USER_COL).sum()
    all_pairs = list_sizes * (list_sizes - 1) // 2
    judged = all_pairs > 0
    if not judged.any():
        return 0.0
    diversity = 1.0 - same_category_pairs[judged] / all_pairs[judged]
    return float(diversity.mean())


def evaluate(
    recommendations: pd.DataFrame,
    truth: pd.DataFrame,
    k: int,
    *,
    n_catalog_items: int,
    item_popularity: pd.Series,
    item_category: pd.Series | None = None,
) -> dict[str, float]:
    """All metrics of this module in one flat dict (ready for MLflow ``log_metrics``).

    Keys: those of ``ranking_metrics`` plus ``coverage@k``, ``popularity@k`` and, when ``item_category``
    is given, ``diversity@k``. See each function for formulas and errors.
    """
    results = ranking_metrics(recommendations, truth, k)
    results[f"coverage@{k}"] = catalog_coverage(recommendations, n_catalog_items, k)
    results[f"popularity@{k}"] = popularity_bias(recommendations, item_popularity, k)
    if item_category is not None:
        results[f"diversity@{k}"] = intra_list_diversity(recommendations, item_category, k)
    return results
