"""Print the summary of a published day: data counts, the held-out model table, where to look.

``python -m recsys.report --ds YYYY-MM-DD`` (``make demo`` and ``make run`` call it).
"""

from __future__ import annotations

import argparse
import json
import sys

from recsys.config import load_settings
from recsys.constants import BASELINE_NAMES, EVAL_K, HYBRID_NAME

COLUMNS = (f"ndcg@{EVAL_K}", f"hr@{EVAL_K}", f"recall@{EVAL_K}", f"map@{EVAL_K}", f"coverage@{EVAL_K}")


def format_summary(summary: dict) -> str:
    evaluation = summary["evaluation"]
    singles = {name: row for name, row in evaluation.items() if name not in (HYBRID_NAME, *BASELINE_NAMES)}
    best_name = max(singles, key=lambda name: singles[name][f"ndcg@{EVAL_K}"]) if singles else None
    lines = [
        f"recsys_daily ds={summary['ds']}",
        f"  validated : {summary['raw_rows']:,} raw rows -> {summary['clean_rows']:,} clean, "
        f"{summary['quarantined_rows']:,} quarantined ({summary.get('quarantine_path')})",
        f"  published : {summary['published_rows']:,} rows for {summary['users']:,} users -> {summary['warehouse']} (recsys.recommendations)",
        "",
        f"  held-out evaluation ({int(next(iter(evaluation.values()))['users']):,} users, last days of the window):",
        "  " + f"{'model':<20}" + "".join(f"{c:>13}" for c in COLUMNS),
    ]
    for name, row in evaluation.items():
        lines.append("  " + f"{name:<20}" + "".join(f"{row.get(c, float('nan')):>13.4f}" for c in COLUMNS))
    if best_name:
        hybrid, best = evaluation[HYBRID_NAME][f"ndcg@{EVAL_K}"], singles[best_name][f"ndcg@{EVAL_K}"]
        lift = (hybrid / best - 1) * 100 if best else float("nan")
        lines.append(f"  hybrid NDCG@{EVAL_K} {hybrid:.4f} vs best single model ({best_name}) {best:.4f}: {lift:+.1f}%")
        coverage_key = f"coverage@{EVAL_K}"
        lines.append(
            f"  hybrid coverage@{EVAL_K} {evaluation[HYBRID_NAME][coverage_key]:.4f} vs {best_name}'s "
            f"{singles[best_name][coverage_key]:.4f}"
        )
    lines += [
        "",
        "  where to look:",
        f"    chart       : {summary.get('chart')}",
        f"    data docs   : {summary.get('data_docs')}",
        f"    MLflow      : .venv/bin/mlflow ui --backend-store-uri '{summary['mlflow_tracking_uri']}'  (parent run {summary['mlflow_parent_run_id']})",
        f"    warehouse   : .venv/bin/python -c \"import duckdb; print(duckdb.connect('{summary['warehouse'].removeprefix('duckdb:///')}', read_only=True).sql('select * from recsys.recommendations limit 10'))\"",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ds", required=True, help="the published day, YYYY-MM-DD")
    args = parser.parse_args(argv)
    settings = load_settings()
    path = settings.runs_dir / f"ds={args.ds}" / "summary.json"
    if not path.is_file():
        print(f"no published run for ds={args.ds}: {path} does not exist (did the DAG run succeed?)", file=sys.stderr)
        return 1
    print(format_summary(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
