"""Business rules and the coverage-aware re-rank applied to the hybrid's ranked candidates.

* ``popularity_penalty`` re-scores ``log p - strength * log(1 + users(i))``: a soft push away from the
  head of the catalogue, so the hybrid's lists cover more of it; the strength (and an optional
  per-category cap) is chosen on the validation slice by :func:`choose_rerank`, never on held-out data.
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
#: settings the one with the widest coverage wins.
NDCG_TIE_FRACTION = 0.01


@dataclass(frozen=True)
class RerankChoice:
    strength: float = 0.0
    max_per_category: int = 0


def popularity_penalty(ranked: pd.DataFrame, item_users: pd.Series, strength: float) -> pd.DataFrame:
    """``ranked`` (user, product, score in (0, 1]) with ``score = log score - strength * log1p(users)``."""
    if strength < 0:
        raise ValueError(f"popularity penalty strength must be >= 0, got {strength!r}")
    out = ranked.copy()
    users = out[ITEM_COL].map(item_users).fillna(0.0).to_numpy(np.float64)
    out[SCORE_COL] = np.log(np.clip(out[SCORE_COL].to_numpy(np.float64), 1e-12, None)) - strength * np.log1p(users)
    return out


def rerank(ranked: pd.DataFrame, k: int, choice: RerankChoice, item_users: pd.Series, item_category: pd.Series | None) -> pd.DataFrame:
    """Top-k per user after the popularity penalty and the category cap of ``choice``."""
    return top_k_per_user(popularity_penalty(ranked, item_users, choice.strength), k, choice.max_per_category, item_category)


def choose_rerank(
    scored: pd.DataFrame,
    truth: pd.DataFrame,
    singles: dict[str, pd.DataFrame],
    item_users: pd.Series,
    item_category: pd.Series,
    n_catalog_items: int,
    k: int = EVAL_K,
    folds: pd.Series | None = None,
) -> tuple[RerankChoice, list[dict]]:
    """Pick the re-rank on validation users the ranker was not fitted on (out-of-fold scores).

    ``scored``: those users' candidates with the ranker's score; ``singles``: each single model's
    candidates for the same users; ``folds`` (optional): user_id -> fold. The best single model is the
    one with the highest NDCG@k. A setting keeps the coverage when its coverage@k is at least the best
    single model's on all the users *and* on each fold's users alone (coverage of one user set is a
    noisy figure; holding on every fold makes it more likely to hold on the next slice). Rule: among
    the settings that keep the coverage, those within :data:`NDCG_TIE_FRACTION` of the best NDCG@k
    among them, and of those the widest coverage (then the higher NDCG, the milder setting); if none
    keeps it, the one closest to keeping it. Returns the choice and every trial (for MLflow).
    """
    from recsys.evaluation.metrics import catalog_coverage, ranking_metrics

    users = np.unique(truth[USER_COL])
    groups = {"all": users}
    if folds is not None:
        for fold, members in folds[folds.index.isin(users)].groupby(folds[folds.index.isin(users)]):
            groups[f"fold{fold}"] = members.index.to_numpy()

    def coverages(top: pd.DataFrame) -> dict[str, float]:
        return {name: catalog_coverage(top[top[USER_COL].isin(members)], n_catalog_items, k) for name, members in groups.items()}

    single_rows = {}
    for name, frame in singles.items():
        top = frame[frame[USER_COL].isin(users) & (frame[RANK_COL] <= k)]
        single_rows[name] = (ranking_metrics(top, truth, k)[f"ndcg@{k}"], coverages(top))
    best_single = max(single_rows, key=lambda name: single_rows[name][0])
    target = single_rows[best_single][1]
    trials = []
    for cap in CATEGORY_CAP_GRID:
        for strength in PENALTY_GRID:
            choice = RerankChoice(strength, cap)
            top = rerank(scored, k, choice, item_users, item_category)
            ndcg = ranking_metrics(top, truth, k)[f"ndcg@{k}"]
            covered = coverages(top)
            margin = min(covered[name] - target[name] for name in groups)
            trials.append({
                "strength": strength, "max_per_category": cap, f"ndcg@{k}": ndcg, f"coverage@{k}": covered["all"],
                "coverage_margin": margin,
            })
            log.info(
                "re-rank trial strength=%.2f cap=%d: validation NDCG@%d %.4f, coverage %.4f (margin to %s on every user set %+.4f)",
                strength, cap, k, ndcg, covered["all"], best_single, margin,
            )

    def wider(t: dict) -> tuple:
        return t[f"coverage@{k}"], t[f"ndcg@{k}"], -t["strength"], -t["max_per_category"]

    feasible = [t for t in trials if t["coverage_margin"] >= 0]
    if feasible:
        best_ndcg = max(t[f"ndcg@{k}"] for t in feasible)
        best = max((t for t in feasible if t[f"ndcg@{k}"] >= (1.0 - NDCG_TIE_FRACTION) * best_ndcg), key=wider)
    else:
        best = max(trials, key=lambda t: (t["coverage_margin"], *wider(t)))
    log.info(
        "re-rank chosen on validation: strength=%.2f cap=%d (NDCG@%d %.4f, coverage %.4f; best single %s: NDCG %.4f, coverage %.4f)",
        best["strength"], best["max_per_category"], k, best[f"ndcg@{k}"], best[f"coverage@{k}"],
        best_single, single_rows[best_single][0], target["all"],
    )
    return RerankChoice(best["strength"], best["max_per_category"]), trials


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
