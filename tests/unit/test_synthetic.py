"""Tests of the synthetic landing-zone generator: layout, determinism, bad rows, cold start, funnel, signal.

Everything runs on real generated files (no mocks). The signal checks use small numpy/pandas
heuristics: if they cannot beat popularity on the held-out days, the real models will not either.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.constants import CATALOG_COLUMNS, EVENT_TYPES, RAW_COLUMNS
from recsys.data.synthetic import GenerationSummary, GeneratorConfig, generate, main

END_DATE = dt.date(2024, 3, 31)  # a Sunday; fixed so every run writes the same files
SIGNAL_CONFIG = GeneratorConfig(users=1500, products=200, days=14, seed=7, end_date=END_DATE)
SMALL_CONFIG = GeneratorConfig(users=300, products=60, days=4, seed=3, end_date=END_DATE)
HOLDOUT_DAYS = 2
K = 10

EVENT_TIME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}) \d{2}:\d{2}:\d{2} UTC$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
CATEGORY_CODE_RE = re.compile(r"^[a-z]+(\.[a-z_0-9]+){1,2}$")
PRICE_RE = re.compile(r"^\d+\.\d{2}$")
INTEGER_RE = re.compile(r"^\d+$")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def read_day_files(out_dir: Path) -> pd.DataFrame:
    """Every day file as strings (nothing parsed away), with the day folder's date as ``ds``."""
    frames = []
    for path in sorted((out_dir / "raw" / "events").glob("ds=*/events.csv")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame["ds"] = path.parent.name.removeprefix("ds=")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def read_catalog(out_dir: Path) -> pd.DataFrame:
    return pd.read_csv(out_dir / "raw" / "catalog" / "products.csv", dtype=str, keep_default_na=False)


def invalid_rows(events: pd.DataFrame) -> pd.Series:
    """Rows a validator must reject: the kinds of damage the generator injects on purpose."""
    bad_time = ~events["event_time"].str.match(EVENT_TIME_RE.pattern)
    bad_type = ~events["event_type"].isin(EVENT_TYPES)
    bad_product = ~events["product_id"].str.match(INTEGER_RE.pattern)
    bad_user = ~events["user_id"].str.match(INTEGER_RE.pattern)
    bad_price = ~events["price"].str.match(PRICE_RE.pattern)
    return bad_time | bad_type | bad_product | bad_user | bad_price


def all_file_bytes(out_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out_dir)): p.read_bytes() for p in sorted(out_dir.rglob("*")) if p.is_file()}


def typed_events(events: pd.DataFrame) -> pd.DataFrame:
    typed = events.assign(
        product_id=events["product_id"].astype(np.int64),
        user_id=events["user_id"].astype(np.int64),
        top_level=events["category_code"].str.split(".").str[0],
    )
    return typed.sort_values(["user_id", "event_time"], kind="stable")


def split_holdout(events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    days = sorted(events["ds"].unique())
    first_holdout_day = days[-HOLDOUT_DAYS]
    return events[events["ds"] < first_holdout_day], events[events["ds"] >= first_holdout_day]


def new_items_per_user(history: pd.DataFrame, holdout: pd.DataFrame) -> dict[int, set[int]]:
    """Relevance: items a user with history interacts with in the holdout and had not interacted with before."""
    seen = history.groupby("user_id")["product_id"].agg(set)
    relevant: dict[int, set[int]] = {}
    for user, items in holdout.groupby("user_id")["product_id"].agg(set).items():
        if user in seen.index:
            new = items - seen[user]
            if new:
                relevant[user] = new
    return relevant


def top_k_unseen(ranked_items: np.ndarray, seen: set[int], k: int = K) -> list[int]:
    out = []
    for item in ranked_items:
        if item not in seen:
            out.append(int(item))
            if len(out) == k:
                break
    return out


def hit_rate(recommendations: dict[int, list[int]], relevant: dict[int, set[int]]) -> float:
    return float(np.mean([bool(set(recommendations[user]) & items) for user, items in relevant.items()]))


def popularity_ranking(history: pd.DataFrame) -> np.ndarray:
    counts = history["product_id"].value_counts(sort=False)
    return counts.sort_values(ascending=False, kind="stable").index.to_numpy()


def popularity_recommendations(history, relevant) -> dict[int, list[int]]:
    ranking = popularity_ranking(history)
    seen = history.groupby("user_id")["product_id"].agg(set)
    return {user: top_k_unseen(ranking, seen[user]) for user in relevant}


def favourite_category_recommendations(history, relevant) -> dict[int, list[int]]:
    """The most popular unseen items of the user's most-interacted top-level category, then global popularity."""
    ranking = popularity_ranking(history)
    item_top_level = history.drop_duplicates("product_id").set_index("product_id")["top_level"]
    seen = history.groupby("user_id")["product_id"].agg(set)
    favourite = history.groupby("user_id")["top_level"].agg(lambda s: s.value_counts().index[0])
    recommendations = {}
    for user in relevant:
        in_favourite = ranking[item_top_level.reindex(ranking).to_numpy() == favourite[user]]
        recommendations[user] = top_k_unseen(np.concatenate([in_favourite, ranking]), seen[user])
    return recommendations


def co_occurrence_recommendations(history, relevant) -> dict[int, list[int]]:
    """Item-item cosine over users ("users who interacted with X also did with Y"), summed over the user's items."""
    items = np.sort(history["product_id"].unique())
    users = np.sort(history["user_id"].unique())
    user_row = pd.Series(np.arange(users.size), index=users)
    item_col = pd.Series(np.arange(items.size), index=items)
    incidence = np.zeros((users.size, items.size))
    incidence[user_row[history["user_id"]].to_numpy(), item_col[history["product_id"]].to_numpy()] = 1.0
    co_counts = incidence.T @ incidence
    np.fill_diagonal(co_counts, 0.0)
    norms = np.sqrt(incidence.sum(axis=0)) + 1e-9
    similarity = co_counts / norms[:, None] / norms[None, :]
    seen = history.groupby("user_id")["product_id"].agg(set)
    recommendations = {}
    for user in relevant:
        scores = incidence[user_row[user]] @ similarity
        ranked = items[np.argsort(-scores, kind="stable")]
        recommendations[user] = top_k_unseen(np.concatenate([ranked, popularity_ranking(history)]), seen[user])
    return recommendations


def distinct_transitions(events: pd.DataFrame, by: str) -> pd.DataFrame:
    """(previous item, next distinct item) pairs in time order within each group of ``by``."""
    ordered = events.sort_values([by, "event_time"], kind="stable")
    group, item = ordered[by].to_numpy(), ordered["product_id"].to_numpy()
    changes = np.r_[True, (group[1:] != group[:-1]) | (item[1:] != item[:-1])]
    group, item = group[changes], item[changes]
    same_group = group[1:] == group[:-1]
    return pd.DataFrame({"previous": item[:-1][same_group], "next": item[1:][same_group]})


def transition_hit_rates(history: pd.DataFrame, holdout: pd.DataFrame) -> tuple[float, float]:
    """Hit-rate@10 of a first-order transition table vs popularity at the next distinct item in holdout sessions."""
    table = distinct_transitions(history, by="user_id").value_counts().reset_index(name="count")
    table = table.sort_values(["previous", "count", "next"], ascending=[True, False, True], kind="stable")
    followers = table.groupby("previous")["next"].agg(list)
    ranking = popularity_ranking(history)
    targets = distinct_transitions(holdout, by="user_session")
    table_hits, popularity_hits = [], []
    for previous, actual in zip(targets["previous"], targets["next"]):
        exclude = {previous}
        from_table = followers.get(previous, [])
        table_hits.append(actual in top_k_unseen(np.concatenate([from_table, ranking]).astype(np.int64), exclude))
        popularity_hits.append(actual in top_k_unseen(ranking, exclude))
    return float(np.mean(table_hits)), float(np.mean(popularity_hits))


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def signal_run(tmp_path_factory) -> tuple[GenerationSummary, pd.DataFrame, pd.DataFrame]:
    out_dir = tmp_path_factory.mktemp("signal")
    summary = generate(out_dir, SIGNAL_CONFIG)
    return summary, read_day_files(out_dir), read_catalog(out_dir)


@pytest.fixture(scope="module")
def signal_split(signal_run):
    _, events, _ = signal_run
    history, holdout = split_holdout(typed_events(events))
    return history, holdout, new_items_per_user(history, holdout)


# ---------------------------------------------------------------------------------------------
# layout and formats
# ---------------------------------------------------------------------------------------------
def test_event_files_follow_the_rees46_layout(signal_run):
    summary, events, _ = signal_run
    day_folders = sorted(p.parent.name for p in (summary.out_dir / "raw" / "events").glob("ds=*/events.csv"))
    expected_days = [f"ds={END_DATE - dt.timedelta(days=n)}" for n in reversed(range(SIGNAL_CONFIG.days))]
    assert day_folders == expected_days
    for path in (summary.out_dir / "raw" / "events").glob("ds=*/events.csv"):
        assert path.read_text().splitlines()[0] == ",".join(RAW_COLUMNS)

    event_time = events["event_time"].str.extract(EVENT_TIME_RE.pattern)[0]
    assert (event_time == events["ds"]).all(), "every event_time must fall on its folder's day"
    assert events["event_type"].isin(EVENT_TYPES).all()
    assert set(events["event_type"]) == set(EVENT_TYPES)
    assert events["product_id"].str.match(INTEGER_RE.pattern).all()
    assert events["user_id"].str.match(INTEGER_RE.pattern).all()
    assert events["category_id"].str.match(r"^(\d+)?$").all()
    codes = events["category_code"]
    assert codes[codes != ""].str.match(CATEGORY_CODE_RE.pattern).all()
    assert 0 < (codes == "").mean() < 0.1, "a few products have no category_code, most do"
    assert 0 < (events["brand"] == "").mean() < 0.15
    assert events["price"].str.match(PRICE_RE.pattern).all()
    assert (events["price"].astype(float) >= 0).all()
    assert events["user_session"].str.match(UUID_RE.pattern).all()
    for _, day in events.groupby("ds"):
        assert day["event_time"].is_monotonic_increasing, "rows are sorted by event_time within a day"
    assert not invalid_rows(events).any(), "no bad rows by default"
    assert summary.bad_rows == 0


def test_catalog_lists_every_product_with_text(signal_run):
    summary, events, catalog = signal_run
    assert list(catalog.columns) == list(CATALOG_COLUMNS)
    assert len(catalog) == SIGNAL_CONFIG.products == summary.products
    assert catalog["product_id"].is_unique
    assert set(events["product_id"]) <= set(catalog["product_id"])
    assert (catalog["title"].str.len() > 0).all() and (catalog["description"].str.len() > 0).all()
    assert catalog["price"].str.match(PRICE_RE.pattern).all()
    # The title names the brand and the description the category's words, so TF-IDF has something to use.
    branded = catalog[catalog["brand"] != ""]
    assert all(b.lower() in t.lower() for b, t in zip(branded["brand"], branded["title"]))
    # Events carry the catalog's attributes of the product.
    merged = events.drop_duplicates("product_id").merge(catalog, on="product_id", suffixes=("", "_catalog"))
    for column in ("category_code", "brand", "price"):
        assert (merged[column] == merged[f"{column}_catalog"]).all(), column


def test_summary_matches_what_was_written(signal_run):
    summary, events, _ = signal_run
    assert summary.events == len(events)
    assert summary.start_date == END_DATE - dt.timedelta(days=SIGNAL_CONFIG.days - 1)
    assert summary.end_date == END_DATE
    assert summary.users == events["user_id"].nunique()
    assert len(summary.files) == SIGNAL_CONFIG.days + 1 and all(p.is_file() for p in summary.files)
    assert 20_000 < summary.events < 80_000


# ---------------------------------------------------------------------------------------------
# determinism and re-runs
# ---------------------------------------------------------------------------------------------
def test_same_config_gives_identical_bytes_and_another_seed_differs(tmp_path):
    generate(tmp_path / "a", SMALL_CONFIG)
    generate(tmp_path / "b", SMALL_CONFIG)
    generate(tmp_path / "c", GeneratorConfig(**{**SMALL_CONFIG.__dict__, "seed": SMALL_CONFIG.seed + 1}))
    first, second, other = (all_file_bytes(tmp_path / name) for name in "abc")
    assert first == second
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first)


def test_rerun_replaces_the_generated_days_and_leaves_other_days(tmp_path):
    untouched_day = tmp_path / "raw" / "events" / "ds=2020-01-01"
    untouched_day.mkdir(parents=True)
    (untouched_day / "events.csv").write_text("kept")
    generate(tmp_path, SMALL_CONFIG)
    stale = tmp_path / "raw" / "events" / f"ds={END_DATE}" / "part-old.csv"
    stale.write_text("stale")
    summary = generate(tmp_path, SMALL_CONFIG)
    assert not stale.exists()
    assert (untouched_day / "events.csv").read_text() == "kept"
    assert sum(len(pd.read_csv(path)) for path in summary.files[:-1]) == summary.events


def test_default_end_date_is_yesterday_utc(tmp_path):
    summary = generate(tmp_path, GeneratorConfig(users=20, products=40, days=1, seed=1))
    assert summary.end_date == dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
    assert (tmp_path / "raw" / "events" / f"ds={summary.end_date}" / "events.csv").is_file()


# ---------------------------------------------------------------------------------------------
# bad rows
# ---------------------------------------------------------------------------------------------
def test_bad_rows_are_counted_exactly(tmp_path):
    config = GeneratorConfig(**{**SMALL_CONFIG.__dict__, "bad_rows_fraction": 0.02})
    summary = generate(tmp_path, config)
    events = read_day_files(tmp_path)
    assert summary.bad_rows == round(0.02 * summary.events) > 0
    assert int(invalid_rows(events).sum()) == summary.bad_rows
    damaged = events[invalid_rows(events)]
    # Each realistic kind of damage shows up.
    assert (damaged["event_type"] == "click").any()
    assert (damaged["event_time"] == "not-a-date").any()
    assert (damaged["product_id"] == "abc").any()
    assert (damaged["user_id"] == "").any()
    assert damaged["price"].str.startswith("-").any()


# ---------------------------------------------------------------------------------------------
# cold start, funnel, seasonality
# ---------------------------------------------------------------------------------------------
def test_cold_items_and_cold_users_appear_in_the_last_days(signal_run):
    _, events, catalog = signal_run
    last_days = sorted(events["ds"].unique())[-HOLDOUT_DAYS:]
    first_item_day = events.groupby("product_id")["ds"].min()
    cold_items = first_item_day[first_item_day.isin(last_days)].index
    assert len(cold_items) >= 3
    assert set(cold_items) <= set(catalog["product_id"])
    first_user_day = events.groupby("user_id")["ds"].min()
    assert (first_user_day.isin(last_days)).sum() >= 10
    assert (first_user_day > first_user_day.min()).mean() > 0.1, "users keep joining over the period"


def test_funnel_ratios_are_roughly_as_intended(signal_run):
    _, events, _ = signal_run
    counts = events["event_type"].value_counts()
    views = counts["view"]
    assert 0.06 < counts["cart"] / views < 0.10
    assert 0.012 < counts["remove_from_cart"] / views < 0.03
    assert 0.02 < counts["purchase"] / views < 0.04


def test_weekends_are_busier(signal_run):
    _, events, _ = signal_run
    per_day = events.groupby("ds").size()
    weekend = pd.to_datetime(per_day.index).dayofweek >= 5
    assert per_day[weekend].mean() > 1.1 * per_day[~weekend].mean()


# ---------------------------------------------------------------------------------------------
# learnable signal
# ---------------------------------------------------------------------------------------------
def test_favourite_category_beats_global_popularity(signal_split):
    history, _, relevant = signal_split
    assert len(relevant) > 300
    baseline = hit_rate(popularity_recommendations(history, relevant), relevant)
    heuristic = hit_rate(favourite_category_recommendations(history, relevant), relevant)
    assert heuristic > baseline + 0.03, f"category {heuristic:.3f} vs popularity {baseline:.3f}"


def test_transition_table_beats_popularity_at_the_next_item(signal_split):
    history, holdout, _ = signal_split
    heuristic, baseline = transition_hit_rates(history, holdout)
    assert heuristic > baseline + 0.1, f"transitions {heuristic:.3f} vs popularity {baseline:.3f}"


def test_co_occurrence_beats_popularity(signal_split):
    history, _, relevant = signal_split
    baseline = hit_rate(popularity_recommendations(history, relevant), relevant)
    heuristic = hit_rate(co_occurrence_recommendations(history, relevant), relevant)
    assert heuristic > baseline + 0.03, f"co-occurrence {heuristic:.3f} vs popularity {baseline:.3f}"


# ---------------------------------------------------------------------------------------------
# configuration and CLI
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [{"users": 0}, {"products": 5}, {"days": 0}, {"sessions_per_user_day": 0.0}, {"bad_rows_fraction": 1.0},
     {"bad_rows_fraction": -0.1}, {"end_date": dt.datetime(2024, 3, 31, 12, 0)}],
)
def test_invalid_config_is_rejected_with_a_clear_error(overrides):
    field = next(iter(overrides))
    with pytest.raises(ValueError, match=field):
        GeneratorConfig(**overrides)


def test_cli_writes_the_landing_zone_and_prints_a_summary(tmp_path, capsys):
    exit_code = main(
        ["--users", "200", "--products", "50", "--days", "3", "--seed", "5", "--out", str(tmp_path),
         "--end-date", "2024-02-29", "--bad-rows-fraction", "0.01"]
    )
    assert exit_code == 0
    printed = capsys.readouterr().out
    assert "events" in printed and "3 days" in printed and str(tmp_path) in printed
    assert (tmp_path / "raw" / "events" / "ds=2024-02-29" / "events.csv").is_file()
    assert (tmp_path / "raw" / "catalog" / "products.csv").is_file()


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as error:
        main(["--out", str(tmp_path), "--end-date", "31/03/2024"])
    assert error.value.code == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--days", "0"])
