"""Content model: TF-IDF item profiles and user profiles as weighted sums of the items they touched.

Everything stays sparse (items × terms, users × items weights); scores are computed for a batch of
users at a time, so no dense user × item matrix is ever held. It can rank products nobody has
interacted with yet (cold items), since they have text.
"""

from __future__ import annotations

import json
import logging
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.constants import ITEM_COL, USER_COL
from recsys.models.base import FactorScoredRecommender, SeenIndex, check_columns, check_k, empty_recommendations, top_k_frame

log = logging.getLogger(__name__)


@dataclass
class ContentParams:
    max_features: int = 20000
    ngram_max: int = 2
    min_df: int = 1
    sublinear_tf: bool = True
    #: exponent on item popularity blended into the score: 0 = pure text similarity.
    popularity_weight: float = 0.1


class ContentRecommender(FactorScoredRecommender):
    name = "content"

    def __init__(self, params: ContentParams | None = None):
        self.params = params or ContentParams()
        self.vectorizer = None
        self.item_ids: np.ndarray | None = None
        self.item_matrix: sp.csr_matrix | None = None
        self.user_ids: np.ndarray | None = None
        self.user_profiles: sp.csr_matrix | None = None
        self.item_prior: np.ndarray | None = None
        self._seen_pairs: pd.DataFrame | None = None
        self._seen: SeenIndex | None = None
        self._user_index: dict[int, int] = {}
        self._item_t: sp.csc_matrix | None = None

    def fit(self, items: pd.DataFrame, interactions: pd.DataFrame, seen: pd.DataFrame | None = None) -> "ContentRecommender":
        """Vectorise every item's text; build each user's profile from their weighted interactions."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.preprocessing import normalize

        check_columns(items, [ITEM_COL, "text"], "items")
        check_columns(interactions, [USER_COL, ITEM_COL, "weight"], "interactions")
        if seen is not None:
            check_columns(seen, [USER_COL, ITEM_COL], "seen")
        items = items.drop_duplicates(ITEM_COL).sort_values(ITEM_COL)
        p = self.params
        self.vectorizer = TfidfVectorizer(
            max_features=p.max_features, ngram_range=(1, p.ngram_max), min_df=p.min_df,
            sublinear_tf=p.sublinear_tf, lowercase=True, dtype=np.float32,
        )
        texts = items["text"].fillna("").astype(str).replace("", "unknown")
        self.item_matrix = normalize(self.vectorizer.fit_transform(texts)).tocsr()
        self.item_ids = items[ITEM_COL].to_numpy(np.int64)
        item_index = {int(i): j for j, i in enumerate(self.item_ids)}

        known = interactions[interactions[ITEM_COL].isin(item_index)]
        self.user_ids = np.unique(known[USER_COL].to_numpy(np.int64))
        user_rows = np.searchsorted(self.user_ids, known[USER_COL].to_numpy(np.int64))
        item_cols = known[ITEM_COL].map(item_index).to_numpy(np.int64)
        weights = sp.csr_matrix(
            (known["weight"].to_numpy(np.float32), (user_rows, item_cols)), shape=(len(self.user_ids), len(self.item_ids))
        )
        self.user_profiles = normalize(weights @ self.item_matrix).tocsr()
        # A mild popularity prior breaks ties between equally similar items in favour of liked ones.
        counts = np.bincount(item_cols, minlength=len(self.item_ids)).astype(np.float32)
        self.item_prior = np.log1p(counts) * p.popularity_weight
        log.info("content model: %d items x %d terms, %d user profiles", *self.item_matrix.shape, len(self.user_ids))
        self._index_seen(seen if seen is not None else interactions[[USER_COL, ITEM_COL]])
        return self

    def _score_rows(self, rows: np.ndarray) -> np.ndarray:
        if self._item_t is None:
            self._item_t = self.item_matrix.T.tocsc()
        return np.asarray((self.user_profiles[rows] @ self._item_t).todense(), dtype=np.float64) + self.item_prior

    def recommend(self, user_ids, k: int, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-k items by cosine similarity of the user profile to the item profiles (+ prior)."""
        check_k(k)
        if self.user_profiles is None:
            raise RuntimeError("ContentRecommender.recommend called before fit")
        self._item_t = None  # transposed once per call, shared by the batches
        return self._recommend_known(user_ids, k, exclude_seen)

    def similar_items(self, product_ids, k: int) -> pd.DataFrame:
        """Items most similar in text to each given item (for cold items and explanations)."""
        check_k(k)
        index = {int(i): j for j, i in enumerate(self.item_ids)}
        known = np.array([p for p in product_ids if int(p) in index], dtype=np.int64)
        if len(known) == 0:
            return empty_recommendations().rename(columns={USER_COL: "source_product_id"})
        rows = np.array([index[int(p)] for p in known])
        scores = np.asarray((self.item_matrix[rows] @ self.item_matrix.T).todense(), dtype=np.float64)
        scores[np.arange(len(rows)), rows] = -np.inf
        return top_k_frame(known, scores, self.item_ids, k).rename(columns={USER_COL: "source_product_id"})

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with open(path / "vectorizer.pkl", "wb") as handle:
            pickle.dump(self.vectorizer, handle)
        sp.save_npz(path / "item_matrix.npz", self.item_matrix)
        sp.save_npz(path / "user_profiles.npz", self.user_profiles)
        np.savez(path / "ids.npz", item_ids=self.item_ids, user_ids=self.user_ids, item_prior=self.item_prior)
        self._seen_pairs.to_parquet(path / "seen.parquet")
        (path / "params.json").write_text(json.dumps(asdict(self.params)))

    @classmethod
    def load(cls, path: str | Path) -> "ContentRecommender":
        path = Path(path)
        model = cls(ContentParams(**json.loads((path / "params.json").read_text())))
        with open(path / "vectorizer.pkl", "rb") as handle:
            model.vectorizer = pickle.load(handle)
        model.item_matrix = sp.load_npz(path / "item_matrix.npz").tocsr()
        model.user_profiles = sp.load_npz(path / "user_profiles.npz").tocsr()
        ids = np.load(path / "ids.npz")
        model.item_ids, model.user_ids, model.item_prior = ids["item_ids"], ids["user_ids"], ids["item_prior"]
        model._index_seen(pd.read_parquet(path / "seen.parquet"))
        return model
