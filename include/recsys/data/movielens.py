"""Adapter: MovieLens (e.g. ml-latest-small) into the landing zone, so real data runs through the DAG.

Ratings become behaviour events: every rating is a ``view``; a rating of at least 3.5 adds a ``cart``
and one of at least 4.5 a ``purchase`` (a second apart, in that order). Movies become products: the
title, genres and users' free-text tags are the text; the first genre is the category.

MovieLens spans 20+ years with few ratings on most days, while the pipeline works on daily
partitions and a lookback window. So the timeline is compressed onto ``days`` days ending at
``end_date``, in one of two ways (``timeline``):

* ``per-user`` (the default): each user's ratings keep their own order and are spread evenly over the
  whole window, so every user has history in the training days and their last ratings fall in the
  validation and held-out days. The pipeline's temporal split then becomes the standard
  leave-last-out-in-time protocol, scored on every rater (610 users on ml-latest-small).
  The trade-off: across users the order is no longer real time. A 1996 rater and a 2018 rater share
  the same days, so "popular lately" mixes eras, and training may hold ratings another user made
  (in real time) after the held-out ones, a leak that every leave-last-out benchmark shares.
* ``global``: all ratings keep their global order, evenly spread by rank. Real time order across
  users holds, but MovieLens users rate in one burst, so the last days hold mostly brand-new users and
  only a couple of dozen warm users are left to score (21 on ml-latest-small, 30 days): too few for
  the comparison to mean much.

The output is deterministic (ties broken by user, then movie). The data's licence allows
redistribution of transformations under the same terms; read it from where it lies and never commit
the output.

``python -m recsys.data.movielens --source ../shared/datasets/ml-latest-small --out ./data --days 30``
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.constants import CATALOG_COLUMNS, RAW_COLUMNS

CART_MIN_RATING = 3.5
PURCHASE_MIN_RATING = 4.5
PRICE = 9.99  # MovieLens has no prices: a flat rental price keeps the contract's price column valid
#: Ways of compressing the timeline (see the module docstring); the first is the default.
TIMELINES = ("per-user", "global")
#: Seconds left free at the end of the window for the +1 s / +2 s follow-up events of the last rating.
_TAIL_SECONDS = 10


@dataclass(frozen=True)
class AdapterSummary:
    out_dir: Path
    start_date: date
    end_date: date
    ratings: int
    events: int
    users: int
    products: int

    def describe(self) -> str:
        return (
            f"Converted {self.ratings:,} MovieLens ratings into {self.events:,} events from {self.users:,} users "
            f"on {self.products:,} movies over {(self.end_date - self.start_date).days + 1} days "
            f"({self.start_date} to {self.end_date}) under {self.out_dir}."
        )


def _require(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: point --source at an unpacked MovieLens folder (ratings.csv, movies.csv)")
    frame = pd.read_csv(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; is this a MovieLens file?")
    return frame


def _check_timeline(timeline: str) -> None:
    if timeline not in TIMELINES:
        raise ValueError(f"timeline must be one of {TIMELINES}, got {timeline!r}")


def rating_offsets(ratings: pd.DataFrame, span_seconds: int, timeline: str = "per-user") -> tuple[pd.DataFrame, np.ndarray]:
    """Ratings in a stable order and each one's offset in seconds from the window's start (0 .. span).

    ``global``: the global order (time, user, movie), offsets evenly spread by global rank.
    ``per-user``: each user's own order (time, movie), offsets evenly spread by the rating's rank
    within the user, so every user reaches from the start of the window to its end.
    """
    _check_timeline(timeline)
    if timeline == "global":
        ordered = ratings.sort_values(["timestamp", "userId", "movieId"], kind="mergesort").reset_index(drop=True)
        offsets = np.arange(len(ordered), dtype=np.int64) * span_seconds // max(1, len(ordered))
        return ordered, offsets
    ordered = ratings.sort_values(["userId", "timestamp", "movieId"], kind="mergesort").reset_index(drop=True)
    rank = ordered.groupby("userId").cumcount().to_numpy(np.int64)
    count = ordered.groupby("userId")["movieId"].transform("size").to_numpy(np.int64)
    # (rank + 1) / count: a user's last rating lands at the very end of the window, their first one
    # step in (a user with one rating has it on the last day, which is all there is to say about them).
    offsets = (rank + 1) * span_seconds // count
    return ordered, offsets


def convert(
    source: Path | str, out_dir: Path | str, days: int = 30, end_date: date | None = None, timeline: str = "per-user"
) -> AdapterSummary:
    source, out_dir = Path(source), Path(out_dir)
    if days < 5:
        raise ValueError(f"days must be at least 5 (the window needs training, validation and held-out days), got {days}")
    _check_timeline(timeline)
    ratings = _require(source / "ratings.csv", ["userId", "movieId", "rating", "timestamp"])
    movies = _require(source / "movies.csv", ["movieId", "title", "genres"])
    tags_path = source / "tags.csv"
    tags = pd.read_csv(tags_path) if tags_path.is_file() else pd.DataFrame(columns=["movieId", "tag"])
    end_date = end_date or (datetime.now(timezone.utc).date() - timedelta(days=1))
    start = datetime(end_date.year, end_date.month, end_date.day, tzinfo=timezone.utc) - timedelta(days=days - 1)

    ratings, offsets = rating_offsets(ratings, days * 86400 - _TAIL_SECONDS, timeline)
    base_time = pd.Timestamp(start) + pd.to_timedelta(offsets, unit="s")

    genres = movies.set_index("movieId")["genres"].fillna("")
    first_genre = genres.str.split("|").str[0].str.lower().str.replace(r"[^a-z0-9]+", "_", regex=True)
    category = "movies." + first_genre.where(first_genre.ne("(no_genres_listed)") & first_genre.ne(""), "other")
    year = movies.set_index("movieId")["title"].str.extract(r"\((\d{4})\)\s*$")[0]
    decade = (year.astype(float) // 10 * 10).map(lambda y: f"{int(y)}s" if pd.notna(y) else "unknown")
    category_ids = {code: i + 1 for i, code in enumerate(sorted(category.unique()))}

    events = []
    for event_type, threshold, shift in (("view", -np.inf, 0), ("cart", CART_MIN_RATING, 1), ("purchase", PURCHASE_MIN_RATING, 2)):
        chosen = ratings["rating"] >= threshold
        part = ratings.loc[chosen, ["userId", "movieId"]].copy()
        part["event_time"] = base_time[chosen.to_numpy()] + pd.Timedelta(seconds=shift)
        part["event_type"] = event_type
        events.append(part)
    frame = pd.concat(events).sort_values(["event_time", "userId", "movieId"], kind="mergesort")
    frame["day"] = frame["event_time"].dt.date
    out = pd.DataFrame(
        {
            "event_time": frame["event_time"].dt.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "event_type": frame["event_type"],
            "product_id": frame["movieId"].astype("int64"),
            "category_id": frame["movieId"].map(category).map(category_ids).astype("int64"),
            "category_code": frame["movieId"].map(category),
            "brand": frame["movieId"].map(decade),
            "price": PRICE,
            "user_id": frame["userId"].astype("int64"),
            "user_session": frame["userId"].astype(str) + "-" + frame["day"].astype(str),
        }
    )[list(RAW_COLUMNS)]

    events_dir = out_dir / "raw" / "events"
    for day, rows in out.groupby(frame["day"].to_numpy()):
        folder = events_dir / f"ds={day.isoformat()}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        rows.to_csv(folder / "events.csv", index=False)

    tag_text = tags.groupby("movieId")["tag"].apply(lambda t: " ".join(sorted(set(map(str, t))))) if len(tags) else pd.Series(dtype=str)
    catalog = pd.DataFrame(
        {
            "product_id": movies["movieId"].astype("int64"),
            "title": movies["title"],
            "description": (movies["genres"].str.replace("|", " ", regex=False) + " " + movies["movieId"].map(tag_text).fillna("")).str.strip(),
            "category_code": movies["movieId"].map(category),
            "brand": movies["movieId"].map(decade),
            "price": PRICE,
        }
    )[list(CATALOG_COLUMNS)]
    (out_dir / "raw" / "catalog").mkdir(parents=True, exist_ok=True)
    catalog.to_csv(out_dir / "raw" / "catalog" / "products.csv", index=False)
    return AdapterSummary(out_dir, start.date(), end_date, len(ratings), len(out), ratings["userId"].nunique(), len(catalog))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert MovieLens ratings into the recsys landing zone.")
    parser.add_argument("--source", required=True, help="folder with ratings.csv, movies.csv (and tags.csv)")
    parser.add_argument("--out", default="./data", help="the landing zone (RECSYS_DATA_DIR)")
    parser.add_argument("--days", type=int, default=30, help="days the timeline is compressed onto")
    parser.add_argument("--end-date", type=date.fromisoformat, default=None, help="last day (default: yesterday, UTC)")
    parser.add_argument(
        "--timeline", choices=TIMELINES, default=TIMELINES[0],
        help="per-user: each user's ratings spread over the whole window (every user is scored); "
        "global: all ratings in real time order (few warm users in the last days). See the module docstring.",
    )
    args = parser.parse_args(argv)
    try:
        summary = convert(args.source, args.out, args.days, args.end_date, timeline=args.timeline)
    except (FileNotFoundError, ValueError) as exc:
        parser.exit(2, f"error: {exc}\n")
    print(summary.describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
