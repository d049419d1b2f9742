"""Tests of the MovieLens adapter on small files in the MovieLens layout.

What must hold: the per-user timeline (the default) spreads each user's ratings over the whole
window in the user's own order, so every user has history and a last rating on the last day; the
global timeline keeps the real time order across users (so users who rated in one early burst have
nothing late); both write the same events, deterministically; a bad option says what is allowed.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from recsys.data.movielens import convert, main, rating_offsets

END = date(2026, 10, 31)
DAYS = 10
DAY = 86400


def _write_movielens(folder: Path) -> Path:
    """Three users: 1 and 2 rate in an early burst (years ago), 3 much later; user 2 has a timestamp tie."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        # userId, movieId, rating, timestamp
        (1, 10, 4.0, 1_000_000), (1, 11, 5.0, 1_000_100), (1, 12, 2.0, 1_000_200), (1, 13, 3.5, 1_000_300),
        (2, 13, 3.0, 1_000_050), (2, 10, 4.5, 1_000_050), (2, 14, 1.0, 1_000_400), (2, 11, 4.0, 1_000_500),
        (2, 12, 3.0, 1_000_600),
        (3, 14, 5.0, 900_000_000), (3, 10, 3.0, 900_000_100), (3, 15, 4.0, 900_000_200),
    ]
    pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"]).to_csv(folder / "ratings.csv", index=False)
    pd.DataFrame(
        {
            "movieId": [10, 11, 12, 13, 14, 15],
            "title": ["A (1995)", "B (1999)", "C (2001)", "D (2010)", "E (1972)", "F"],
            "genres": ["Comedy|Drama", "Action", "Drama", "(no genres listed)", "Horror|Comedy", "Sci-Fi"],
        }
    ).to_csv(folder / "movies.csv", index=False)
    return folder


def _views(out: Path) -> pd.DataFrame:
    """Every written view event (one per rating) with its parsed time and day folder."""
    frames = []
    for path in sorted((out / "raw" / "events").glob("ds=*/events.csv")):
        frame = pd.read_csv(path)
        frame["folder_day"] = date.fromisoformat(path.parent.name[len("ds="):])
        frames.append(frame)
    events = pd.concat(frames, ignore_index=True)
    events["time"] = pd.to_datetime(events["event_time"].str.replace(" UTC", "", regex=False), utc=True)
    return events[events["event_type"] == "view"].sort_values(["user_id", "time"], kind="mergesort")


def test_per_user_timeline_gives_every_user_history_and_a_last_day(tmp_path):
    source = _write_movielens(tmp_path / "ml")
    summary = convert(source, tmp_path / "out", days=DAYS, end_date=END)
    views = _views(tmp_path / "out")
    first_day = date(2026, 10, 22)
    assert summary.start_date == first_day and summary.users == 3 and summary.ratings == 12
    for user, rows in views.groupby("user_id"):
        days = rows["folder_day"]
        assert days.max() == END, f"user {user}'s last rating should fall on the last day"
        assert days.min() < date(2026, 10, 28), f"user {user} should have history before the last four days"
    # Each user's own order (time, then movie for ties) is kept.
    assert views[views["user_id"] == 2]["product_id"].tolist() == [10, 13, 14, 11, 12]
    assert views[views["user_id"] == 1]["product_id"].tolist() == [10, 11, 12, 13]
    # The day folder is the event's UTC day, and nothing spills past the window.
    assert (views["time"].dt.date == views["folder_day"]).all()
    assert views["folder_day"].min() >= first_day


def test_global_timeline_keeps_real_time_order_across_users(tmp_path):
    source = _write_movielens(tmp_path / "ml")
    convert(source, tmp_path / "out", days=DAYS, end_date=END, timeline="global")
    views = _views(tmp_path / "out")
    ordered = views.sort_values("time", kind="mergesort")
    # Users 1 and 2 rated years before user 3: all of their ratings come first, user 3's last.
    assert ordered["user_id"].tolist()[-3:] == [3, 3, 3]
    last_day_users = set(views.loc[views["folder_day"] == END, "user_id"])
    assert last_day_users == {3}


def test_both_timelines_write_the_same_events_deterministically(tmp_path):
    source = _write_movielens(tmp_path / "ml")
    convert(source, tmp_path / "a", days=DAYS, end_date=END)
    convert(source, tmp_path / "b", days=DAYS, end_date=END)
    convert(source, tmp_path / "g", days=DAYS, end_date=END, timeline="global")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.csv"))
    assert files_a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.csv"))
    for relative in files_a:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes(), relative

    def pairs(out):
        events = pd.concat(pd.read_csv(p) for p in (out / "raw" / "events").glob("ds=*/events.csv"))
        return sorted(map(tuple, events[["user_id", "product_id", "event_type"]].to_numpy().tolist()))

    # 12 views, 7 carts (>= 3.5), 3 purchases (>= 4.5), whatever the timeline.
    assert pairs(tmp_path / "a") == pairs(tmp_path / "g")
    assert len(pairs(tmp_path / "a")) == 12 + 7 + 3


def test_rating_offsets_per_user_span_the_window():
    ratings = pd.DataFrame({"userId": [7, 7, 7, 7, 8], "movieId": [1, 2, 3, 4, 5], "timestamp": [40, 30, 20, 10, 5]})
    ordered, offsets = rating_offsets(ratings, span_seconds=100, timeline="per-user")
    assert ordered["movieId"].tolist() == [4, 3, 2, 1, 5]
    assert offsets.tolist() == [25, 50, 75, 100, 100]


def test_unknown_timeline_is_refused_with_the_choices(tmp_path):
    source = _write_movielens(tmp_path / "ml")
    with pytest.raises(ValueError, match="per-user"):
        convert(source, tmp_path / "out", days=DAYS, end_date=END, timeline="random")
    assert not (tmp_path / "out").exists()


def test_command_line_takes_the_timeline(tmp_path, capsys):
    source = _write_movielens(tmp_path / "ml")
    out = tmp_path / "out"
    argv = ["--source", str(source), "--out", str(out), "--days", str(DAYS), "--end-date", END.isoformat()]
    assert main([*argv, "--timeline", "global"]) == 0
    assert set(_views(out).loc[lambda v: v["folder_day"] == END, "user_id"]) == {3}
    assert "Converted 12 MovieLens ratings" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*argv, "--timeline", "sideways"])
