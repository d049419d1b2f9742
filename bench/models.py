"""Model benchmarks: our Spark MLlib ALS against the `implicit` library, and the LSTM's cost per step vs catalog size.

    .venv/bin/python bench/models.py                       # ~1M events: 16,000 users, 5,000 products, 30 days
    .venv/bin/python bench/models.py --users 3000 --products 800 --days 14 --catalog-sizes 10000,100000,1000000

Prints a table and writes the same figures as JSON to bench/results/models.json (git-ignored).
It asserts nothing: figures depend on the machine; the targets are printed next to them.

ALS. Both libraries fit the "test" stage interactions that the pipeline's own feature job
(recsys.features.build.build_features) writes for the last day of a generated dataset, with the same
rank, regularisation, alpha and iterations, on the same number of cores; both are scored by the same
code (factor dot products, seen items masked, top 10) and recsys.evaluation.metrics.evaluate on the
held-out slice. What is matched and what cannot be:

* confidence: MLlib (implicitPrefs) uses c = 1 + alpha * |w| with preference p = [w > 0]. implicit
  0.7.3 reads the matrix value itself as the confidence (c = alpha * value, p = [value > 0], and a
  negative value means c = |value| with p = 0). So implicit gets the values sign(w) * (1 + alpha * |w|)
  with its alpha = 1: the same c and p for every pair, zero and negative weights included.
* regularisation: MLlib multiplies regParam by each row's number of positive ratings (ALS-WR);
  implicit adds regularization unscaled. implicit gets the same nominal value (``--reg``); there is no
  setting of implicit that reproduces the per-row scaling.
* solver: MLlib solves each normal equation exactly (Cholesky); implicit runs with use_cg=False, its
  exact solver, so the two differ only in initialisation and regularisation scaling. The faster
  conjugate-gradient solver (implicit's default) is timed as an extra row.
* linear algebra: MLlib's per-rating updates (dspr) and solves (dppsv) run in the native BLAS/LAPACK
  the JVM loaded (``make blas``; the BLAS is Debian's reference one where installed, see
  recsys.features.spark.spark_ml_blas_library, and RECSYS_SPARK_BLAS_LIBRARY=system compares OpenBLAS),
  else in Java; the report names which.
* time: our ALSRecommender.fit end to end (pandas -> Spark DataFrame, MLlib fit, factors back to numpy,
  seen index) against building the CSR matrix plus implicit's fit. Session start-up is excluded; a small
  warm-up fit runs first on each side, then ``--als-repeats`` full fits each, and the median is compared
  (the JVM's JIT keeps warming over the first full fit: about 12 s, then about 10 s, on a quiet machine).

LSTM. SequenceRecommender on generated sequences, the same users, lengths and positions for each
catalog size, only the item ids drawn from a larger vocabulary (every item occurs at least once, so the
embedding tables really have that many rows). Throughput is positions per second of training time,
from the model's own ``history``, averaged over the epochs after the first; each size is fitted
``--seq-repeats`` times, sizes interleaved so that drifting load on a shared machine hits them alike,
and the median is reported with the spread.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
K = 10
TIME_RATIO_TARGET = 3.0
NDCG_RELATIVE_TARGET = 0.02

log = logging.getLogger("bench.models")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("dataset (recsys.data.synthetic)")
    data.add_argument("--users", type=int, default=16000)
    data.add_argument("--products", type=int, default=5000)
    data.add_argument("--days", type=int, default=30)
    data.add_argument("--seed", type=int, default=42)
    data.add_argument("--end-date", type=date.fromisoformat, default=date(2026, 6, 30), help="last generated day (fixed so reruns reuse the data)")
    data.add_argument("--work-dir", type=Path, default=RESULTS_DIR / "data", help="generated data and features are cached here, per size")
    data.add_argument("--rebuild", action="store_true", help="regenerate the data and features even if cached")
    als = parser.add_argument_group("ALS (the same values for both libraries)")
    als.add_argument("--rank", type=int, default=32)
    als.add_argument("--reg", type=float, default=0.05)
    als.add_argument("--alpha", type=float, default=20.0)
    als.add_argument("--iterations", type=int, default=12)
    als.add_argument("--als-repeats", type=int, default=3, help="fits per library; the median time is reported, with the spread")
    lstm = parser.add_argument_group("LSTM")
    lstm.add_argument("--catalog-sizes", default="10000,100000", help="comma-separated item vocabulary sizes")
    lstm.add_argument("--seq-users", type=int, default=4000, help="sequences (users) per catalog size")
    lstm.add_argument("--seq-len", type=int, default=51, help="events per sequence (len - 1 predicted positions)")
    lstm.add_argument("--seq-epochs", type=int, default=3)
    lstm.add_argument("--seq-repeats", type=int, default=2, help="fits per catalog size (interleaved); the median is reported")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="cores for Spark, implicit and torch")
    parser.add_argument("--skip-als", action="store_true")
    parser.add_argument("--skip-lstm", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "models.json")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------------
# data: generate, type the raw events, run the pipeline's feature job
# ---------------------------------------------------------------------------------------------------
def _settings(args, data_dir: Path):
    from recsys.config import Settings, load_settings

    return Settings(
        data_dir=data_dir,
        spark_master=f"local[{args.threads}]",
        spark_shuffle_partitions=max(4, 2 * args.threads),
        spark_driver_memory="6g",
        spark_blas_library=load_settings().spark_blas_library,  # RECSYS_SPARK_BLAS_LIBRARY, as in the pipeline
        seed=args.seed,
    )


def _clean_events(spark, settings, start: date, end: date) -> None:
    """Raw CSV -> typed Parquet under clean/events, what validate_raw writes for a day without bad rows.

    The generator is run with no bad rows, so the Great Expectations pass would keep every row; it is
    skipped because it costs minutes per month of data and is not what this benchmark measures.
    """
    from pyspark.sql import functions as F

    from recsys.constants import RAW_COLUMNS

    day = start
    while day <= end:
        raw = spark.read.option("header", True).csv(str(settings.raw_events_dir / f"ds={day.isoformat()}"))
        typed = raw.select(
            F.to_timestamp(F.regexp_replace("event_time", " UTC$", ""), "yyyy-MM-dd HH:mm:ss").alias("event_time"),
            F.col("event_type"),
            F.col("product_id").cast("long"),
            F.col("category_id").cast("long"),
            F.nullif(F.col("category_code"), F.lit("")).alias("category_code"),
            F.nullif(F.col("brand"), F.lit("")).alias("brand"),
            F.col("price").cast("double"),
            F.col("user_id").cast("long"),
            F.col("user_session"),
        ).select(*RAW_COLUMNS)
        typed.write.mode("overwrite").parquet(str(settings.clean_events_dir / f"ds={day.isoformat()}"))
        day = date.fromordinal(day.toordinal() + 1)


def prepare_features(args, spark_holder: dict) -> tuple[Path, dict]:
    """Features of the last generated day (cached per dataset size); returns (features root, info)."""
    from recsys.data.synthetic import GeneratorConfig, generate
    from recsys.features.build import build_features, feature_paths
    from recsys.features.spark import get_spark

    data_dir = args.work_dir / f"u{args.users}_p{args.products}_d{args.days}_s{args.seed}_{args.end_date.isoformat()}"
    settings = _settings(args, data_dir)
    root = feature_paths(settings, args.end_date).root
    info_path = data_dir / "bench_info.json"
    if args.rebuild and data_dir.exists():
        shutil.rmtree(data_dir)
    if info_path.exists() and (root / "summary.json").exists():
        log.info("reusing features in %s", root)
        return root, json.loads(info_path.read_text())

    started = time.perf_counter()
    generated = generate(
        data_dir, GeneratorConfig(users=args.users, products=args.products, days=args.days, seed=args.seed, end_date=args.end_date)
    )
    log.info("%s (%.0fs)", generated.describe(), time.perf_counter() - started)
    spark = spark_holder.setdefault("spark", get_spark(settings, app_name="bench-models"))
    started = time.perf_counter()
    _clean_events(spark, settings, generated.start_date, generated.end_date)
    summary = build_features(spark, settings, args.end_date)
    log.info("features built in %.0fs: %s", time.perf_counter() - started, {k: summary[k] for k in ("events", "users", "items")})
    info = {"events_generated": generated.events, "users_active": generated.users, "products": generated.products, "features": summary}
    info_path.write_text(json.dumps(info, indent=2, default=str))
    return root, info


# ---------------------------------------------------------------------------------------------------
# ALS: MLlib (ours) vs implicit
# ---------------------------------------------------------------------------------------------------
def _metrics(recs: pd.DataFrame, data) -> dict[str, float]:
    from recsys.constants import ITEM_COL, USER_COL
    from recsys.evaluation.metrics import evaluate

    popularity = data.interactions.groupby(ITEM_COL)[USER_COL].nunique() / max(1, data.interactions[USER_COL].nunique())
    return evaluate(recs, data.targets, K, n_catalog_items=len(data.items), item_popularity=popularity)


def _implicit_matrix(interactions: pd.DataFrame, alpha: float):
    """users x items CSR holding sign(w) * (1 + alpha * |w|): MLlib's confidence and preference, in implicit's convention."""
    from scipy.sparse import csr_matrix

    from recsys.constants import ITEM_COL, USER_COL

    user_ids = np.unique(interactions[USER_COL].to_numpy(np.int64))
    item_ids = np.unique(interactions[ITEM_COL].to_numpy(np.int64))
    rows = np.searchsorted(user_ids, interactions[USER_COL].to_numpy(np.int64))
    cols = np.searchsorted(item_ids, interactions[ITEM_COL].to_numpy(np.int64))
    weight = interactions["weight"].to_numpy(np.float64)
    # w <= 0 means "no preference" in MLlib with confidence 1 + alpha|w|; implicit reads a negative value that way.
    values = np.where(weight > 0, 1.0, -1.0) * (1.0 + alpha * np.abs(weight))
    matrix = csr_matrix((values.astype(np.float32), (rows, cols)), shape=(len(user_ids), len(item_ids)))
    return matrix, user_ids, item_ids


def _recommend_from_factors(user_ids, item_ids, user_factors, item_factors, seen: pd.DataFrame, users) -> pd.DataFrame:
    """Top-K by dot product with seen items masked: the scoring of ALSRecommender.recommend, for any factors."""
    from recsys.models.base import SeenIndex, batches, empty_recommendations, top_k_frame

    user_index = {int(u): i for i, u in enumerate(user_ids)}
    index = SeenIndex(seen, user_index, {int(i): j for j, i in enumerate(item_ids)})
    known = np.array(sorted(int(u) for u in set(np.asarray(users).tolist()) if int(u) in user_index), dtype=np.int64)
    if len(known) == 0:
        return empty_recommendations()
    rows = np.array([user_index[int(u)] for u in known])
    frames = []
    for chunk in batches(len(known), 1024):
        scores = user_factors[rows[chunk]] @ item_factors.T
        index.mask(scores, rows[chunk])
        frames.append(top_k_frame(known[chunk], scores, item_ids, K))
    return pd.concat(frames, ignore_index=True)


def _repeat(times: int, fit):
    """Run ``fit`` ``times`` times; returns (seconds of each run, the last result)."""
    seconds, result = [], None
    for _ in range(max(1, times)):
        started = time.perf_counter()
        result = fit()
        seconds.append(time.perf_counter() - started)
    return seconds, result


def _spread(seconds: list[float]) -> str:
    return f"median {np.median(seconds):.2f} (min {min(seconds):.2f}, max {max(seconds):.2f}, {len(seconds)} fits)"


def bench_als(args, root: Path, spark_holder: dict) -> dict:
    from threadpoolctl import threadpool_limits

    from recsys.constants import USER_COL
    from recsys.features.spark import get_spark, linear_algebra_backends
    from recsys.models.base import load_stage
    from recsys.models.collaborative import ALSParams, ALSRecommender

    data = load_stage(root, "test")
    users = np.unique(data.targets[USER_COL].to_numpy(np.int64))
    interactions = data.interactions
    params = ALSParams(rank=args.rank, reg_param=args.reg, alpha=args.alpha, max_iter=args.iterations, seed=args.seed)
    shape = {
        "interactions": int(len(interactions)),
        "users": int(interactions[USER_COL].nunique()),
        "items": int(interactions["product_id"].nunique()),
        "non_positive_weights": int((interactions["weight"] <= 0).sum()),
        "eval_users": int(len(users)),
        "targets": int(len(data.targets)),
    }
    log.info("ALS on the test stage: %s", shape)
    warmup = interactions[interactions[USER_COL].isin(np.unique(interactions[USER_COL])[:500])]

    # --- ours: Spark MLlib through ALSRecommender ---
    spark = spark_holder.setdefault("spark", get_spark(_settings(args, root.parent.parent), app_name="bench-models"))
    ALSRecommender(ALSParams(**{**asdict(params), "max_iter": 2})).fit(spark, warmup, seen=data.seen)
    mllib_times, ours = _repeat(args.als_repeats, lambda: ALSRecommender(params).fit(spark, interactions, seen=data.seen))
    mllib_seconds = float(np.median(mllib_times))
    mllib_metrics = _metrics(ours.recommend(users, K), data)
    log.info("MLlib ALS: %s s, ndcg@10 %.4f", _spread(mllib_times), mllib_metrics[f"ndcg@{K}"])

    # --- implicit, the matched configuration and its default CG solver ---
    from implicit.cpu.als import AlternatingLeastSquares

    def fit_implicit(use_cg: bool, frame: pd.DataFrame, iterations: int):
        matrix, user_ids, item_ids = _implicit_matrix(frame, args.alpha)
        model = AlternatingLeastSquares(
            factors=args.rank, regularization=args.reg, alpha=1.0, iterations=iterations, use_cg=use_cg,
            num_threads=args.threads, random_state=args.seed,
        )
        model.fit(matrix, show_progress=False)
        return model, user_ids, item_ids

    rows = {}
    # implicit parallelises over users itself; a multi-threaded BLAS underneath only oversubscribes.
    with threadpool_limits(1, "blas"):
        for label, use_cg in (("implicit (exact solver)", False), ("implicit (CG solver)", True)):
            fit_implicit(use_cg, warmup, 2)
            times, (model, user_ids, item_ids) = _repeat(args.als_repeats, lambda: fit_implicit(use_cg, interactions, args.iterations))
            recs = _recommend_from_factors(user_ids, item_ids, model.user_factors, model.item_factors, data.seen, users)
            rows[label] = {"seconds": float(np.median(times)), "fit_seconds": times, "metrics": _metrics(recs, data), "use_cg": use_cg}
            log.info("%s: %s s, ndcg@10 %.4f", label, _spread(times), rows[label]["metrics"][f"ndcg@{K}"])

    matched = rows["implicit (exact solver)"]
    ndcg_ours, ndcg_theirs = mllib_metrics[f"ndcg@{K}"], matched["metrics"][f"ndcg@{K}"]
    return {
        "data": shape,
        "linear_algebra": linear_algebra_backends(spark),
        "params": {"rank": args.rank, "regularization": args.reg, "alpha": args.alpha, "iterations": args.iterations, "threads": args.threads},
        "rows": {"Spark MLlib ALS (ours)": {"seconds": mllib_seconds, "fit_seconds": mllib_times, "metrics": mllib_metrics}, **rows},
        "time_ratio_mllib_over_implicit": mllib_seconds / matched["seconds"],
        "time_ratio_mllib_over_implicit_cg": mllib_seconds / rows["implicit (CG solver)"]["seconds"],
        "ndcg_abs_diff": ndcg_ours - ndcg_theirs,
        "ndcg_rel_diff": (ndcg_ours - ndcg_theirs) / ndcg_theirs if ndcg_theirs else float("nan"),
    }


# ---------------------------------------------------------------------------------------------------
# LSTM: throughput vs catalog size
# ---------------------------------------------------------------------------------------------------
def _sequences(n_users: int, length: int, n_items: int, seed: int) -> pd.DataFrame:
    """n_users sequences of ``length`` events over exactly n_items distinct product ids (Zipf-like draws)."""
    from recsys.constants import EVENT_TYPES, USER_COL

    total = n_users * length
    if total < n_items:
        raise SystemExit(f"--seq-users x --seq-len = {total} positions cannot hold {n_items} distinct items; raise them")
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, n_items + 1, dtype=np.float64)
    p = ranks**-0.8
    items = rng.choice(n_items, size=total, p=p / p.sum())
    items[rng.choice(total, size=n_items, replace=False)] = rng.permutation(n_items)  # every item at least once
    events = rng.choice(len(EVENT_TYPES), size=total, p=[0.8, 0.1, 0.03, 0.07])
    product_ids = (1_000_000 + items).reshape(n_users, length)
    event_names = np.asarray(EVENT_TYPES, dtype=object)[events].reshape(n_users, length)
    return pd.DataFrame(
        {USER_COL: np.arange(n_users, dtype=np.int64), "product_ids": list(product_ids), "event_types": [list(e) for e in event_names]}
    )


def bench_lstm(args) -> dict:
    """Fit each catalog size ``--seq-repeats`` times, the sizes interleaved, so drifting load hits all alike."""
    from recsys.models.sequence import SequenceParams, SequenceRecommender

    params = SequenceParams(max_len=args.seq_len - 1, epochs=args.seq_epochs, num_threads=args.threads, seed=args.seed)
    sizes = [int(s) for s in args.catalog_sizes.split(",") if s.strip()]
    sequences = {size: _sequences(args.seq_users, args.seq_len, size, args.seed) for size in sizes}
    fits: dict[int, list[dict]] = {size: [] for size in sizes}
    for repeat in range(1, args.seq_repeats + 1):
        for size in sizes:
            started = time.perf_counter()
            model = SequenceRecommender(params).fit(sequences[size])
            history = model.history
            # The first epoch pays for allocator and thread-pool warm-up: steady state is the epochs after it.
            steady = float(np.mean([h["positions_per_second"] for h in (history[1:] or history)]))
            fits[size].append(
                {"positions_per_second": steady, "per_epoch_positions_per_second": [h["positions_per_second"] for h in history],
                 "fit_seconds": time.perf_counter() - started, "catalog_items": len(model._item_ids), "epochs": len(history)}
            )
            log.info("LSTM catalog %d, repeat %d: %.0f positions/s", size, repeat, steady)

    results = {}
    for size, runs in fits.items():
        rates = [run["positions_per_second"] for run in runs]
        pps = float(np.median(rates))
        results[str(size)] = {
            "catalog_items": runs[0]["catalog_items"],
            "sequences": args.seq_users,
            "positions_per_epoch": args.seq_users * (args.seq_len - 1),
            "steps_per_epoch": int(np.ceil(args.seq_users / params.batch_size)),
            "epochs": runs[0]["epochs"],
            "repeats": len(runs),
            "positions_per_second": pps,
            "positions_per_second_min": min(rates),
            "positions_per_second_max": max(rates),
            "ms_per_step": 1000.0 * params.batch_size * (args.seq_len - 1) / pps,
            "fits": runs,
        }
    first = results[str(sizes[0])]["positions_per_second"]
    for row in results.values():
        row["relative_to_smallest"] = row["positions_per_second"] / first
    return {"params": asdict(params), "rows": results}


# ---------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------
def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def print_report(report: dict) -> None:
    print()
    print(f"bench/models.py  ({report['machine']['cores']} cores, {report['machine']['python']}, "
          f"torch {report['machine']['torch']}, pyspark {report['machine']['pyspark']}, implicit {report['machine']['implicit']})")
    print(f"load average (1/5/15 min) at start {report['machine']['load_average_at_start']}, at end {report['machine']['load_average_at_end']}: "
          "other work on the machine slows every row")
    if "dataset" in report:
        d = report["dataset"]
        f = d["features"]
        print(f"dataset: {d['events_generated']:,} events generated ({d['args']['users']:,} users, {d['args']['products']:,} products, "
              f"{d['args']['days']} days, seed {d['args']['seed']}); after dedupe {f['events']:,} events")
    if "als" in report:
        a = report["als"]
        s, p = a["data"], a["params"]
        print()
        print(f"ALS on the 'test' stage: {s['interactions']:,} interactions, {s['users']:,} users x {s['items']:,} items; "
              f"held-out: {s['eval_users']:,} users, {s['targets']:,} targets")
        print(f"  rank {p['rank']}, regularization {p['regularization']}, alpha {p['alpha']}, {p['iterations']} iterations, "
              f"{p['threads']} threads; confidence 1 + alpha*|w| on both sides")
        la = a["linear_algebra"]
        native = la["blas"].startswith("JNI") and la["lapack"].startswith("JNI")
        print(f"  Spark ML linear algebra: BLAS {la['blas']} ({la.get('blas_library', 'libblas.so.3')}), LAPACK {la['lapack']} "
              f"({'native' if native else 'Java fallback: `make blas` installs native ones'})")
        header = f"  {'model':<26}{'fit s':>9}{'min-max s':>13}{'ndcg@10':>10}{'hr@10':>9}{'recall@10':>11}{'map@10':>9}{'coverage@10':>13}"
        print(header)
        print("  " + "-" * (len(header) - 2))
        for name, row in a["rows"].items():
            m = row["metrics"]
            spread = f"{min(row['fit_seconds']):.2f}-{max(row['fit_seconds']):.2f}"
            print(f"  {name:<26}{row['seconds']:>9.2f}{spread:>13}{m['ndcg@10']:>10.4f}{m['hr@10']:>9.4f}{m['recall@10']:>11.4f}"
                  f"{m['map@10']:>9.4f}{m['coverage@10']:>13.4f}")
        ratio = a["time_ratio_mllib_over_implicit"]
        print(f"  time ratio MLlib / implicit (exact): {ratio:.2f}x  (target <= {TIME_RATIO_TARGET:.0f}x: {_verdict(ratio <= TIME_RATIO_TARGET)}); "
              f"vs implicit CG: {a['time_ratio_mllib_over_implicit_cg']:.2f}x")
        rel = a["ndcg_rel_diff"]
        print(f"  NDCG@10 MLlib - implicit (exact): {a['ndcg_abs_diff']:+.4f} absolute, {100 * rel:+.2f}% relative "
              f"(target within {100 * NDCG_RELATIVE_TARGET:.0f}%: {_verdict(abs(rel) <= NDCG_RELATIVE_TARGET)})")
    if "lstm" in report:
        l = report["lstm"]
        p = l["params"]
        print()
        print(f"LSTM training throughput ({p['num_threads']} threads, batch {p['batch_size']}, {p['n_negatives']} sampled negatives, "
              f"embedding {p['embedding_dim']}, hidden {p['hidden_dim']})")
        header = (f"  {'catalog items':>14}{'sequences':>11}{'positions/epoch':>17}{'epochs x fits':>15}{'positions/s':>13}"
                  f"{'(min..max)':>17}{'ms/step':>9}{'vs smallest':>13}")
        print(header)
        print("  " + "-" * (len(header) - 2))
        for row in l["rows"].values():
            spread = f"{row['positions_per_second_min']:,.0f}..{row['positions_per_second_max']:,.0f}"
            print(f"  {row['catalog_items']:>14,}{row['sequences']:>11,}{row['positions_per_epoch']:>17,}"
                  f"{str(row['epochs']) + ' x ' + str(row['repeats']):>15}{row['positions_per_second']:>13,.0f}{spread:>17}"
                  f"{row['ms_per_step']:>9.1f}{row['relative_to_smallest']:>12.2f}x")
        print("  positions/s: median over fits of the mean over epochs 2.. (training time only, from SequenceRecommender.history)")
    print()
    print(f"figures written to {report['out']}")


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for noisy in ("py4j", "implicit"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    import implicit
    import pyspark
    import torch

    report: dict = {
        "machine": {
            "cores": args.threads, "python": platform.python_version(), "torch": torch.__version__,
            "pyspark": pyspark.__version__, "implicit": implicit.__version__, "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "out": str(args.out),
    }
    spark_holder: dict = {}
    try:
        if not args.skip_als:
            root, info = prepare_features(args, spark_holder)
            report["dataset"] = {**info, "args": {k: getattr(args, k) for k in ("users", "products", "days", "seed")}, "features_root": str(root)}
            report["als"] = bench_als(args, root, spark_holder)
    finally:
        if "spark" in spark_holder:
            spark_holder["spark"].stop()
    if not args.skip_lstm:
        report["lstm"] = bench_lstm(args)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
