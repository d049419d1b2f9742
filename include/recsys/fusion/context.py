"""Context features for the fusion ranker: how a candidate fits the user beyond the models' scores.

Per (user, candidate): the user's affinity to the candidate's category, leaf category and brand
(share of the user's interaction weight), the candidate's recent popularity and age, and its price
relative to what the user usually looks at. All vectorised pandas joins, no per-user loop.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.constants import ITEM_COL, USER_COL

CONTEXT_COLUMNS = (
    "top_category_affinity",
    "category_affinity",
    "brand_affinity",
    "item_recent_users",
    "item_age_days",
    "price_ratio",
)


def _affinity(interactions: pd.DataFrame, items: pd.DataFrame, attribute: str) -> pd.DataFrame:
    """Share of each user's interaction weight on each value of ``attribute``."""
    joined = interactions[[USER_COL, ITEM_COL, "weight"]].merge(items[[ITEM_COL, attribute]], on=ITEM_COL, how="left")
    joined[attribute] = joined[attribute].fillna("unknown")
    per_value = joined.groupby([USER_COL, attribute], sort=False)["weight"].sum()
    total = per_value.groupby(level=0).transform("sum").replace(0, np.nan)
    return (per_value / total).fillna(0.0).rename(f"{attribute}_share").reset_index()


def add_context_features(
    candidates: pd.DataFrame, interactions: pd.DataFrame, items: pd.DataFrame, recent_days: int = 3
) -> pd.DataFrame:
    """Return ``candidates`` (user_id, product_id, …) with :data:`CONTEXT_COLUMNS` added."""
    items = items.copy()
    items["top_category"] = items["top_category"].fillna("unknown")
    items["category_code"] = items["category_code"].fillna("unknown")
    items["brand"] = items["brand"].fillna("unknown")
    out = candidates.merge(items[[ITEM_COL, "top_category", "category_code", "brand", "price", "first_seen"]], on=ITEM_COL, how="left")
    for attribute, column in (("top_category", "top_category_affinity"), ("category_code", "category_affinity"), ("brand", "brand_affinity")):
        out[attribute] = out[attribute].fillna("unknown")
        share = _affinity(interactions, items, attribute)
        out = out.merge(share, on=[USER_COL, attribute], how="left")
        out[column] = out.pop(f"{attribute}_share").fillna(0.0).astype(np.float32)

    if len(interactions):
        horizon = interactions["last_event_time"].max()
        recent = interactions[interactions["last_event_time"] >= horizon - pd.Timedelta(days=recent_days)]
        recent_users = recent.groupby(ITEM_COL)[USER_COL].nunique()
        first_seen = pd.to_datetime(out["first_seen"], utc=True)
        age = (pd.Timestamp(horizon).tz_convert("UTC") if pd.Timestamp(horizon).tzinfo else pd.Timestamp(horizon, tz="UTC")) - first_seen
        out["item_age_days"] = (age.dt.total_seconds() / 86400.0).fillna(-1.0).astype(np.float32)
    else:
        recent_users = pd.Series(dtype=float)
        out["item_age_days"] = np.float32(-1.0)
    out["item_recent_users"] = np.log1p(out[ITEM_COL].map(recent_users).fillna(0.0)).astype(np.float32)

    user_price = interactions[[USER_COL, ITEM_COL]].merge(items[[ITEM_COL, "price"]], on=ITEM_COL).groupby(USER_COL)["price"].median()
    ratio = out["price"] / out[USER_COL].map(user_price)
    out["price_ratio"] = np.log(ratio.where(ratio > 0)).fillna(0.0).clip(-5, 5).astype(np.float32)
    return out.drop(columns=["top_category", "category_code", "brand", "price", "first_seen"])
