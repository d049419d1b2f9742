"""A short human reason per recommendation, from the source that proposed it and the user's history."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.constants import ITEM_COL, USER_COL

#: Which source speaks first when several proposed the item (the most specific explanation wins).
SOURCE_PRIORITY = ("sequence", "content", "collaborative", "popularity")


def _label(items: pd.DataFrame) -> pd.Series:
    title = items.get("title")
    fallback = items["category_code"].fillna("product").str.replace(".", " ", regex=False) + " #" + items[ITEM_COL].astype(str)
    label = title.fillna(fallback) if title is not None else fallback
    return pd.Series(label.to_numpy(), index=items[ITEM_COL].to_numpy())


def add_reasons(recommendations: pd.DataFrame, items: pd.DataFrame, sequences: pd.DataFrame) -> pd.DataFrame:
    """Add a ``reason`` column: "because you viewed …", "popular in …", and so on."""
    labels = _label(items)
    categories = pd.Series(items["top_category"].fillna("the shop").to_numpy(), index=items[ITEM_COL].to_numpy())
    last_item = sequences.set_index(USER_COL)["product_ids"].map(lambda ids: int(ids[-1]) if len(ids) else None)
    last_event = sequences.set_index(USER_COL)["event_types"].map(lambda types: types[-1] if len(types) else "view")
    out = recommendations.copy()
    users = out[USER_COL]
    last_label = users.map(last_item).map(labels).fillna("your recent activity")
    last_verb = users.map(last_event).map({"purchase": "bought", "cart": "added", "remove_from_cart": "looked at"}).fillna("viewed")
    category = out[ITEM_COL].map(categories).fillna("the shop")
    first_source = out["sources"].fillna("").map(
        lambda s: next((name for name in SOURCE_PRIORITY if name in s.split(",")), "popularity")
    )
    reason = np.select(
        [first_source == "sequence", first_source == "content", first_source == "collaborative"],
        [
            "because you " + last_verb + " " + last_label,
            "similar to " + last_label,
            "customers with similar taste chose it",
        ],
        default="popular in " + category,
    )
    out["reason"] = reason
    return out
