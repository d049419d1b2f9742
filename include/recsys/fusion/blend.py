"""Learned fusion: a ranker over the union of every model's candidates, trained on the validation slice.

Each (user, candidate) gets features from every source (reciprocal rank, normalised score, whether
the source proposed it) plus item popularity and user activity. A gradient-boosted classifier learns
on the validation stage which candidates the user really went on to touch; it then ranks the
candidates of the test stage (for the honest evaluation) and of the full stage (for publishing).
"""

from __future__ import annotations

import json
import logging
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.constants import ITEM_COL, RANK_COL, SCORE_COL, USER_COL
from recsys.models.base import check_columns, check_k

log = logging.getLogger(__name__)

RANK_OFFSET = 5.0  # reciprocal-rank smoothing, as in reciprocal rank fusion


@dataclass
class FusionParams:
    # Small, strongly regularised trees: the validation slice holds a few thousand positives, and
    # deeper or longer boosting overfits it (measured: held-out NDCG falls below the best single model).
    learning_rate: float = 0.05
    max_iter: int = 80
    max_leaf_nodes: int = 7
    min_samples_leaf: int = 200
    l2_regularization: float = 1.0
    #: at most this many items of one top-level category in a user's top K (0 = no cap).
    max_per_category: int = 0
    seed: int = 42
    sources: tuple[str, ...] = field(default_factory=tuple)


def candidate_features(
    candidates: dict[str, pd.DataFrame],
    item_popularity: pd.Series,
    user_activity: pd.Series,
) -> pd.DataFrame:
    """One row per (user, product) proposed by any source, with the features the ranker reads.

    ``candidates[source]`` has user_id, product_id, score, rank. Missing sources give rank features
    of 0 (not proposed); scores are min-max normalised per user within each source.
    """
    frames = []
    for source, frame in candidates.items():
        check_columns(frame, [USER_COL, ITEM_COL, SCORE_COL, RANK_COL], f"candidates of {source}")
        f = frame[[USER_COL, ITEM_COL, SCORE_COL, RANK_COL]].copy()
        grouped = f.groupby(USER_COL)[SCORE_COL]
        low, high = grouped.transform("min"), grouped.transform("max")
        f[f"{source}_score"] = ((f[SCORE_COL] - low) / (high - low).replace(0, 1.0)).astype(np.float32)
        f[f"{source}_rr"] = (1.0 / (f[RANK_COL] + RANK_OFFSET)).astype(np.float32)
        frames.append(f.drop(columns=[SCORE_COL, RANK_COL]).set_index([USER_COL, ITEM_COL]))
    features = pd.concat(frames, axis=1, join="outer").fillna(0.0).reset_index()
    rr_columns = [c for c in features.columns if c.endswith("_rr")]
    features["n_sources"] = (features[rr_columns] > 0).sum(axis=1).astype(np.float32)
    features["rrf"] = features[rr_columns].sum(axis=1).astype(np.float32)
    features["item_popularity"] = np.log1p(features[ITEM_COL].map(item_popularity).fillna(0.0)).astype(np.float32)
    features["user_activity"] = np.log1p(features[USER_COL].map(user_activity).fillna(0.0)).astype(np.float32)
    return features


def feature_columns(sources: tuple[str, ...]) -> list[str]:
    """The ranker's inputs: per-source score and reciprocal rank, agreement, and the context features."""
    from recsys.fusion.context import CONTEXT_COLUMNS

    per_source = [f"{s}_{kind}" for s in sources for kind in ("score", "rr")]
    return per_source + ["n_sources", "rrf", "item_popularity", "user_activity", *CONTEXT_COLUMNS]


class HybridRanker:
    """Learns on validation candidates, ranks any stage's candidates."""

    name = "hybrid"

    def __init__(self, params: FusionParams | None = None):
        self.params = params or FusionParams()
        self.model = None
        self.feature_importance: dict[str, float] = {}

    def fit(self, features: pd.DataFrame, truth: pd.DataFrame) -> "HybridRanker":
        from sklearn.ensemble import HistGradientBoostingClassifier

        check_columns(truth, [USER_COL, ITEM_COL], "truth")
        if not self.params.sources:
            raise ValueError("FusionParams.sources must name the candidate sources")
        label = _label(features, truth)
        if label.sum() == 0:
            raise ValueError(
                "no validation target appears among the candidates: the models proposed none of the items "
                "users went on to touch, so there is nothing to learn a fusion from. Check the data window."
            )
        if label.sum() == len(label):
            # A one-class classifier would make score() read a meaningless column and rank at random.
            raise ValueError("every candidate is a validation target: with no negatives there is nothing to learn a fusion from")
        p = self.params
        self.model = HistGradientBoostingClassifier(
            learning_rate=p.learning_rate, max_iter=p.max_iter, max_leaf_nodes=p.max_leaf_nodes,
            min_samples_leaf=p.min_samples_leaf, l2_regularization=p.l2_regularization,
            early_stopping=False, random_state=p.seed,
        )
        x = features.reindex(columns=feature_columns(p.sources), fill_value=0.0).to_numpy(np.float32)
        self.model.fit(x, label)
        log.info("fusion ranker fitted on %d candidates (%d positives)", len(label), int(label.sum()))
        return self

    def score(self, features: pd.DataFrame) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("HybridRanker.score called before fit")
        if len(features) == 0:  # sklearn refuses an empty matrix; nothing to score is not an error
            return np.zeros(0, dtype=np.float64)
        x = features.reindex(columns=feature_columns(self.params.sources), fill_value=0.0).to_numpy(np.float32)
        return self.model.predict_proba(x)[:, 1]

    def rank(self, features: pd.DataFrame, k: int, item_category: pd.Series | None = None) -> pd.DataFrame:
        """Top-k per user by the learned score (with the optional per-category cap)."""
        check_k(k)
        ranked = features[[USER_COL, ITEM_COL]].copy()
        ranked[SCORE_COL] = self.score(features)
        rr_columns = [c for c in features.columns if c.endswith("_rr")]
        ranked["sources"] = _sources_of(features, rr_columns)
        return top_k_per_user(ranked, k, self.params.max_per_category, item_category)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with open(path / "ranker.pkl", "wb") as handle:
            pickle.dump(self.model, handle)
        (path / "params.json").write_text(json.dumps(asdict(self.params)))

    @classmethod
    def load(cls, path: str | Path) -> "HybridRanker":
        path = Path(path)
        params = json.loads((path / "params.json").read_text())
        params["sources"] = tuple(params["sources"])
        ranker = cls(FusionParams(**params))
        with open(path / "ranker.pkl", "rb") as handle:
            ranker.model = pickle.load(handle)
        return ranker


def _label(features: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    keys = pd.MultiIndex.from_frame(truth[[USER_COL, ITEM_COL]].drop_duplicates())
    return pd.MultiIndex.from_frame(features[[USER_COL, ITEM_COL]]).isin(keys).astype(np.int8)


def _sources_of(features: pd.DataFrame, rr_columns: list[str]) -> pd.Series:
    proposed = features[rr_columns].to_numpy() > 0
    names = np.array([c[: -len("_rr")] for c in rr_columns])
    return pd.Series([",".join(names[row]) for row in proposed], index=features.index)


def top_k_per_user(ranked: pd.DataFrame, k: int, max_per_category: int = 0, item_category: pd.Series | None = None) -> pd.DataFrame:
    """Keep each user's k best rows by score (ties by product id), optionally capping a category."""
    ordered = ranked.sort_values([USER_COL, SCORE_COL, ITEM_COL], ascending=[True, False, True])
    if max_per_category and item_category is not None:
        category = ordered[ITEM_COL].map(item_category).fillna("unknown")
        ordered = ordered[ordered.groupby([ordered[USER_COL], category]).cumcount() < max_per_category]
    ordered = ordered[ordered.groupby(USER_COL).cumcount() < k].copy()
    ordered[RANK_COL] = ordered.groupby(USER_COL).cumcount() + 1
    return ordered.reset_index(drop=True)


def fill_with_fallback(
    recommendations: pd.DataFrame, fallback: pd.DataFrame, users: np.ndarray, k: int, source: str = "popularity"
) -> pd.DataFrame:
    """Give every user in ``users`` k rows: the hybrid's first, then fallback items not already there.

    Fallback rows are placed after every row the user already has, whatever the scale of its scores
    (probabilities, or the log-scores of the re-rank).
    """
    filler = fallback[fallback[USER_COL].isin(users)].copy()
    filler["sources"] = source
    floor = recommendations.groupby(USER_COL)[SCORE_COL].min() if len(recommendations) else pd.Series(dtype=float)
    start = filler[USER_COL].map(floor).fillna(0.0).clip(upper=0.0)
    # Fallback rows rank after every hybrid row of the user.
    filler[SCORE_COL] = start - 1.0 - filler[RANK_COL].astype(np.float64)
    merged = pd.concat([recommendations, filler[[USER_COL, ITEM_COL, SCORE_COL, "sources"]]], ignore_index=True)
    merged = merged.drop_duplicates([USER_COL, ITEM_COL], keep="first")
    return top_k_per_user(merged, k)
