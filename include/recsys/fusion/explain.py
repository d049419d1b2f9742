"""A short human reason per recommendation, from the source that proposed it and the user's history."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.constants import ITEM_COL, USER_COL

#: Which source speaks first when several proposed the item (the most specific explanation wins).
SOURCE_PRIORITY = ("sequence", "cooccurrence", "content", "collaborative", "category_popularity", "popularity")
#: How many of the user's most recent items may anchor a "customers who bought X also bought" reason.
ANCHOR_ITEMS = 20


def _label(items: pd.DataFrame) -> pd.Series:
    title = items.get("title")
    fallback = items["category_code"].fillna("product").str.replace(".", " ", regex=False) + " #" + items[ITEM_COL].astype(str)
    label = title.fillna(fallback) if title is not None else fallback
    return pd.Series(label.to_numpy(), index=items[ITEM_COL].to_numpy())


def cooccurrence_anchors(recommendations: pd.DataFrame, sequences: pd.DataFrame, cooccurrence) -> pd.DataFrame:
    """For each (user, product), the user's recent item that co-occurs most with it, and how the user touched it.

    Returns user_id, product_id, anchor_id, anchor_event for the pairs that have one.
    """
    from recsys.models.cooccurrence import NEIGHBOUR_COL, SIMILARITY_COL

    recent = sequences[[USER_COL, "product_ids", "event_types"]].copy()
    recent["product_ids"] = recent["product_ids"].map(lambda ids: list(ids)[-ANCHOR_ITEMS:])
    recent["event_types"] = recent["event_types"].map(lambda types: list(types)[-ANCHOR_ITEMS:])
    touched = recent.explode(["product_ids", "event_types"]).dropna(subset=["product_ids"])
    touched = touched.rename(columns={"product_ids": "anchor_id", "event_types": "anchor_event"})
    touched["anchor_id"] = touched["anchor_id"].astype(np.int64)
    # Keep the strongest touch of an item the user met several times.
    strength = touched["anchor_event"].map({"purchase": 3, "cart": 2, "view": 1}).fillna(0)
    touched = touched.assign(_s=strength).sort_values("_s").drop_duplicates([USER_COL, "anchor_id"], keep="last").drop(columns="_s")
    pairs = recommendations[[USER_COL, ITEM_COL]].merge(touched, on=USER_COL)
    links = cooccurrence.neighbour_table[[ITEM_COL, NEIGHBOUR_COL, SIMILARITY_COL]].rename(
        columns={ITEM_COL: "anchor_id", NEIGHBOUR_COL: ITEM_COL}
    )
    pairs = pairs.merge(links, on=["anchor_id", ITEM_COL])
    best = pairs.sort_values([SIMILARITY_COL, "anchor_id"], ascending=[False, True]).drop_duplicates([USER_COL, ITEM_COL])
    return best[[USER_COL, ITEM_COL, "anchor_id", "anchor_event"]]


def add_reasons(recommendations: pd.DataFrame, items: pd.DataFrame, sequences: pd.DataFrame, cooccurrence=None) -> pd.DataFrame:
    """Add a ``reason`` column: "because you viewed …", "customers who bought … also bought this", "popular in …".

    ``cooccurrence`` (a fitted co-occurrence model, optional) names the item behind a co-occurrence
    recommendation; without it, or when none of the user's recent items is a neighbour, the next
    source in :data:`SOURCE_PRIORITY` explains the row.
    """
    labels = _label(items)
    categories = pd.Series(items["top_category"].fillna("the shop").to_numpy(), index=items[ITEM_COL].to_numpy())
    last_item = sequences.set_index(USER_COL)["product_ids"].map(lambda ids: int(ids[-1]) if len(ids) else None)
    last_event = sequences.set_index(USER_COL)["event_types"].map(lambda types: types[-1] if len(types) else "view")
    out = recommendations.copy()
    users = out[USER_COL]
    last_label = users.map(last_item).map(labels).fillna("your recent activity")
    last_verb = users.map(last_event).map({"purchase": "bought", "cart": "added", "remove_from_cart": "looked at"}).fillna("viewed")
    category = out[ITEM_COL].map(categories).fillna("the shop")

    anchor_label = pd.Series(np.nan, index=out.index, dtype=object)
    anchor_verb = pd.Series("viewed", index=out.index, dtype=object)
    # Only rows that co-occurrence may explain need an anchor: proposed by it, and not by the sequence model.
    row_sources = out["sources"].fillna("").str.split(",")
    needs_anchor = row_sources.map(lambda names: "cooccurrence" in names and "sequence" not in names)
    if cooccurrence is not None and needs_anchor.any():
        asked = out.loc[needs_anchor, [USER_COL, ITEM_COL]]
        anchors = asked.reset_index().merge(
            cooccurrence_anchors(asked, sequences, cooccurrence), on=[USER_COL, ITEM_COL]
        ).set_index("index")
        anchor_label.loc[anchors.index] = anchors["anchor_id"].map(labels).to_numpy()
        anchor_verb.loc[anchors.index] = anchors["anchor_event"].map({"purchase": "bought", "cart": "bought"}).fillna("viewed").to_numpy()
    has_anchor = anchor_label.notna()

    def first_source(row_sources: str, anchored: bool) -> str:
        names = row_sources.split(",")
        return next(
            (name for name in SOURCE_PRIORITY if name in names and (name != "cooccurrence" or anchored)), "popularity"
        )

    first = pd.Series(
        [first_source(s, a) for s, a in zip(out["sources"].fillna(""), has_anchor)], index=out.index, dtype=object
    )
    reason = np.select(
        [first == "sequence", first == "cooccurrence", first == "content", first == "collaborative", first == "category_popularity"],
        [
            "because you " + last_verb + " " + last_label,
            "customers who " + anchor_verb + " " + anchor_label.fillna("") + " also " + anchor_verb + " this",
            "similar to " + last_label,
            "customers with similar taste chose it",
            "popular lately in " + category + ", a category you like",
        ],
        default="popular in " + category,
    )
    out["reason"] = reason
    return out
