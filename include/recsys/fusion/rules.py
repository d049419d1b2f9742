"""Business rules and the coverage-aware re-rank applied to the hybrid's ranked candidates.

* ``popularity_penalty`` re-scores ``log p - strength * log(1 + users(i))``: a soft push away from the
  head of the catalogue; the strength (and an optional per-category cap) is chosen on the validation
  slice by :func:`choose_rerank`, never on held-out data.
* ``cover_catalog`` is the coverage floor: the hybrid's top-10 lists show at least as many distinct
  products as the best single model's lists for the same users. Products no list shows yet are swapped
  into the last top-10 slot of the user who ranks them closest to it, displacing an item that other
  lists still show: a few users' tenth item changes, instead of a penalty that reorders every list.
* ``restrict_to_catalog`` drops products that are not in the day's catalog file (discontinued ones).
* ``cold_users`` / ``session_context`` serve users whose first events are on ``ds``: neighbours of
  what they touched today, then what is popular lately in their categories, instead of global popularity.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.constants import EVAL_K, ITEM_COL, RANK_COL, SCORE_COL, USER_COL
from recsys.fusion.blend import top_k_per_user

log = logging.getLogger(__name__)

#: Penalty strengths and category caps tried on the validation slice (0, 0 = the plain learned order).
PENALTY_GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45)
CATEGORY_CAP_GRID = (0, 4)
#: NDCG@k within this fraction of the best validation NDCG counts as a tie (a thousand validation users
#: cannot tell them apart: the standard error of their mean NDCG is several percent of it); among tied
#: settings the mildest wins.
NDCG_TIE_FRACTION = 0.01


@dataclass(frozen=True)
class RerankChoice:
    strength: float = 0.0
    max_per_category: int = 0
    #: the single model whose lists' distinct products (top EVAL_K) the hybrid's must match ("" = no floor).
    coverage_source: str = ""


def popularity_penalty(ranked: pd.DataFrame, item_users: pd.Series, strength: float) -> pd.DataFrame:
    """``ranked`` (user, product, score in (0, 1]) with ``score = log score - strength * log1p(users)``."""
    if strength < 0:
        raise ValueError(f"popularity penalty strength must be >= 0, got {strength!r}")
    out = ranked.copy()
    users = out[ITEM_COL].map(item_users).fillna(0.0).to_numpy(np.float64)
    out[SCORE_COL] = np.log(np.clip(out[SCORE_COL].to_numpy(np.float64), 1e-12, None)) - strength * np.log1p(users)
    return out


def rerank(
    ranked: pd.DataFrame, k: int, choice: RerankChoice, item_users: pd.Series, item_category: pd.Series | None,
    cover_items: int = 0, cover_k: int = EVAL_K,
) -> pd.DataFrame:
    """Top-k per user after the popularity penalty and the category cap of ``choice``, then the coverage
    floor: at least ``cover_items`` distinct products in the top ``cover_k`` (0 = no floor)."""
    top = top_k_per_user(popularity_penalty(ranked, item_users, choice.strength), k, choice.max_per_category, item_category)
    return cover_catalog(top, cover_k, cover_items) if cover_items else top


def distinct_in_top(recommendations: pd.DataFrame, users, k: int = EVAL_K, catalog_ids: np.ndarray | None = None) -> int:
    """How many distinct products the top-k lists of ``users`` show (only catalog products, when given)."""
    top = recommendations[recommendations[USER_COL].isin(users) & (recommendations[RANK_COL] <= k)]
    return int(restrict_to_catalog(top, catalog_ids)[ITEM_COL].nunique())


#: Cheapest users considered per product not yet shown (bounds the greedy loop on a large catalogue).
COVER_USERS_PER_ITEM = 5


def cover_catalog(ranked: pd.DataFrame, k: int, target_items: int, max_swaps_per_user: int = 1) -> pd.DataFrame:
    """Raise the distinct products of the top-k lists to ``target_items`` with the fewest, cheapest swaps.

    ``ranked``: user, product, score (higher first), rank, any other columns; each user's rows beyond
    rank k are the pool. Greedy, cheapest first: a product no top-k list shows, at the pool position
    whose score is closest to that user's k-th score (cost = k-th score - its score), enters that
    user's top k at rank k; the user's lowest top-k product that another top-k list also shows moves
    to rank k + 1 (so no product loses its last list). At most ``max_swaps_per_user`` swaps a user.
    Each changed user keeps the same products and the same multiset of scores, re-assigned in the new
    order (so any later sort by score keeps it). Returns the frame sorted by user and rank.
    """
    out = ranked.sort_values([USER_COL, RANK_COL], kind="stable").reset_index(drop=True)
    in_top = (out[RANK_COL] <= k).to_numpy()
    counts = out.loc[in_top, ITEM_COL].value_counts().to_dict()
    if len(counts) >= target_items or not len(out):
        return out
    kth_score = out.loc[in_top].groupby(USER_COL)[SCORE_COL].min()
    pool = out.loc[~in_top & ~out[ITEM_COL].isin(counts.keys()), [USER_COL, ITEM_COL, SCORE_COL]]
    pool = pool.assign(cost=pool[USER_COL].map(kth_score) - pool[SCORE_COL]).dropna(subset=["cost"])
    pool = pool.sort_values(["cost", USER_COL, ITEM_COL], kind="stable").groupby(ITEM_COL, sort=False).head(COVER_USERS_PER_ITEM)

    rows_of = out.groupby(USER_COL, sort=False).indices  # user -> row positions, in rank order
    items = out[ITEM_COL].to_numpy()
    orders: dict[int, list[int]] = {}  # changed users: their row positions in the new order
    swaps: dict[int, int] = {}
    for user, item in zip(pool[USER_COL].to_numpy(), pool[ITEM_COL].to_numpy()):
        if len(counts) >= target_items:
            break
        if item in counts or swaps.get(user, 0) >= max_swaps_per_user:
            continue
        order = orders.get(user)
        if order is None:
            order = list(rows_of[user])
        top_k = min(k, len(order))
        slot = next((j for j in range(top_k - 1, -1, -1) if counts[items[order[j]]] >= 2), None)
        if slot is None:
            continue
        incoming = next(j for j in range(top_k, len(order)) if items[order[j]] == item)
        displaced = order.pop(slot)
        row = order.pop(incoming - 1)
        order[top_k - 1:top_k - 1] = [row, displaced]
        counts[items[displaced]] -= 1
        counts[item] = 1
        orders[user] = order
        swaps[user] = swaps.get(user, 0) + 1
    if len(counts) < target_items:
        log.info("coverage floor: %d distinct products in the top %d, short of %d (no more swappable candidates)", len(counts), k, target_items)
    if not orders:
        return out
    scores = out[SCORE_COL].to_numpy(copy=True)
    new_position = np.arange(len(out))
    for user, order in orders.items():
        rows = np.asarray(rows_of[user])  # the user's rows in the old rank order
        new_position[order] = rows  # the row now at the j-th place takes the j-th old place
        scores[rows] = np.sort(out[SCORE_COL].to_numpy()[rows])[::-1]
    moved = out.iloc[np.argsort(new_position, kind="stable")].reset_index(drop=True)
    moved[SCORE_COL] = scores
    moved[RANK_COL] = out[RANK_COL].to_numpy()  # each place keeps its rank
    swapped = sum(swaps.values())
    log.info("coverage floor: %d user(s) had a product swapped into their top %d: %d -> %d distinct products (target %d)",
             len(orders), k, len(counts) - swapped, len(counts), target_items)
    return moved


def choose_rerank(
    scored: pd.DataFrame,
    truth: pd.DataFrame,
    singles: dict[str, pd.DataFrame],
    item_users: pd.Series,
    item_category: pd.Series,
    n_catalog_items: int,
    k: int = EVAL_K,
) -> tuple[RerankChoice, list[dict]]:
    """Pick the re-rank on validation users the ranker was not fitted on (out-of-fold scores).

    ``scored``: those users' candidates with the ranker's score; ``singles``: each single model's
    candidates for the same users. The best single model is the one with the highest NDCG@k; its
    lists' distinct products become the coverage floor of every setting tried (:func:`cover_catalog`),
    so coverage is met by construction and the settings compete on NDCG@k after the floor. Rule: those
    within :data:`NDCG_TIE_FRACTION` of the best NDCG@k, and of those the mildest (smallest penalty,
    then no cap, then the higher NDCG): a penalty must earn its place by NDCG, since every swap or
    reorder it makes moves away from the learned order. Returns the choice and every trial (for MLflow).
    """
    from recsys.evaluation.metrics import catalog_coverage, ranking_metrics

    users = np.unique(truth[USER_COL])
    single_rows = {}
    for name, frame in singles.items():
        top = frame[frame[USER_COL].isin(users) & (frame[RANK_COL] <= k)]
        single_rows[name] = (ranking_metrics(top, truth, k)[f"ndcg@{k}"], distinct_in_top(top, users, k))
    best_single = max(single_rows, key=lambda name: single_rows[name][0])
    target = single_rows[best_single][1]
    longest = max(k, int(scored.groupby(USER_COL).size().max()))  # the whole list: the floor's pool lies beyond k
    trials = []
    for cap in CATEGORY_CAP_GRID:
        for strength in PENALTY_GRID:
            choice = RerankChoice(strength, cap, best_single)
            top = rerank(scored, longest, choice, item_users, item_category, target, k)
            top = top[top[RANK_COL] <= k]
            ndcg = ranking_metrics(top, truth, k)[f"ndcg@{k}"]
            coverage = catalog_coverage(top, n_catalog_items, k)
            trials.append({"strength": strength, "max_per_category": cap, f"ndcg@{k}": ndcg, f"coverage@{k}": coverage})
            log.info("re-rank trial strength=%.2f cap=%d: validation NDCG@%d %.4f, coverage %.4f (floor: %s's %d products)",
                     strength, cap, k, ndcg, coverage, best_single, target)

    def milder(t: dict) -> tuple:
        return -t["strength"], -t["max_per_category"], t[f"ndcg@{k}"]

    best_ndcg = max(t[f"ndcg@{k}"] for t in trials)
    best = max((t for t in trials if t[f"ndcg@{k}"] >= (1.0 - NDCG_TIE_FRACTION) * best_ndcg), key=milder)
    log.info(
        "re-rank chosen on validation: strength=%.2f cap=%d (NDCG@%d %.4f, coverage %.4f; best single %s: NDCG %.4f, %d products)",
        best["strength"], best["max_per_category"], k, best[f"ndcg@{k}"], best[f"coverage@{k}"],
        best_single, single_rows[best_single][0], target,
    )
    return RerankChoice(best["strength"], best["max_per_category"], best_single), trials


def catalog_product_ids(catalog_path: Path) -> np.ndarray | None:
    """Product ids of the day's catalog file, or None when there is none (then nothing is excluded)."""
    path = Path(catalog_path)
    if not path.is_file():
        return None
    frame = pd.read_csv(path, usecols=[ITEM_COL])
    ids = pd.to_numeric(frame[ITEM_COL], errors="coerce")
    bad = int(ids.isna().sum())
    if bad:
        raise ValueError(f"{path}: {bad} row(s) with a missing or non-numeric {ITEM_COL}; fix the catalog file")
    return np.unique(ids.to_numpy(np.int64))


def restrict_to_catalog(frame: pd.DataFrame, catalog_ids: np.ndarray | None) -> pd.DataFrame:
    """Rows of ``frame`` whose product is in the catalog (all rows when there is no catalog)."""
    if catalog_ids is None:
        return frame
    keep = frame[ITEM_COL].isin(catalog_ids)
    if not keep.all():
        log.info("catalog rule: %d candidate row(s) of %d products not in the catalog dropped",
                 int((~keep).sum()), frame.loc[~keep, ITEM_COL].nunique())
    return frame[keep]


def cold_users(interactions: pd.DataFrame, day_start: pd.Timestamp) -> pd.DataFrame:
    """Interactions of users whose every interaction is on or after ``day_start`` (no earlier history)."""
    last = pd.to_datetime(interactions["last_event_time"], utc=True)
    first_touch = last.groupby(interactions[USER_COL]).transform("min")
    return interactions[first_touch >= day_start]


def session_context(
    today: pd.DataFrame, k: int, cooccurrence, category_popular: pd.DataFrame, popular: pd.DataFrame,
    catalog_ids: np.ndarray | None = None,
) -> pd.DataFrame:
    """k rows per cold user: co-occurrence neighbours of today's items, then category-popular, then popular.

    ``today``: the cold users' interactions (user, product, weight); ``cooccurrence``: a fitted
    :class:`~recsys.models.cooccurrence.CooccurrenceRecommender` or None; ``category_popular`` and
    ``popular``: recommendation frames for those users (seen items already excluded); ``catalog_ids``:
    when given, only these products are recommended (today's items may be off-catalog and still say
    what the user is after).
    """
    users = np.unique(today[USER_COL].to_numpy(np.int64))
    parts = []
    if cooccurrence is not None and len(users):
        parts.append(cooccurrence.recommend_from_items(today[[USER_COL, ITEM_COL, "weight"]], k).assign(sources="cooccurrence"))
    parts.append(category_popular.assign(sources="category_popularity"))
    parts.append(popular.assign(sources="popularity"))
    frames = []
    for tier, frame in enumerate(parts):
        frame = restrict_to_catalog(frame[frame[USER_COL].isin(users)], catalog_ids).copy()
        # Earlier tiers first; within a tier, the tier's own order.
        frame[SCORE_COL] = -float(tier) - frame[RANK_COL].astype(np.float64) / (frame[RANK_COL].max() + 1 if len(frame) else 1)
        frames.append(frame[[USER_COL, ITEM_COL, SCORE_COL, "sources"]])
    merged = pd.concat(frames, ignore_index=True).drop_duplicates([USER_COL, ITEM_COL], keep="first")
    seen = today[[USER_COL, ITEM_COL]].drop_duplicates()
    merged = merged.merge(seen.assign(_seen=True), on=[USER_COL, ITEM_COL], how="left")
    merged = merged[merged["_seen"].isna()].drop(columns="_seen")
    return top_k_per_user(merged, k)
