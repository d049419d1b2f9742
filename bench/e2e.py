"""Benchmark: a backfill of recsys_daily under the real scheduler, end to end.

Generates a landing zone (default: about 1M events over 37 days), starts the real Airflow services
(api-server, dag-processor, scheduler with the LocalExecutor, the ``recsys_compute`` pool) through
:mod:`recsys.local_airflow`, runs ``airflow backfill create`` over the last ``--backfill-days`` days (default
30, one day at a time; the days before them are the first day's history, which needs more than the
validation + test days) and prints:

* total wall time of the backfill and per day;
* each task's median duration over the runs;
* parallel efficiency = sum of task durations / (wall time x slots), with slots = the executor's
  parallelism (4): 1.0 would mean every slot busy all the time.

Writes bench/results/e2e.json. A full 30-day backfill of 1M events takes hours on 2 cores (every day
trains four models on its whole history, which grows day by day); ``--backfill-days 3`` gives the per-day
figures of the last, fullest days quickly, and ``--budget-minutes`` stops a long backfill after that long
and reports the days it finished (the figures say that it was cut short and how many days were left).

    .venv/bin/python bench/e2e.py [--users 12300 --products 5000 --days 37] [--backfill-days 30] [--budget-minutes 90]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "e2e.json"
SLOTS = 4


def plot_timeline(intervals: list[tuple[str, str, datetime, datetime]], path: Path) -> None:
    """One row per task, one bar per (day, task) run, coloured by task: where the time of a backfill goes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    origin = min(start for _, _, start, _ in intervals)
    order = ["validate_raw", "build_features", "train_collaborative", "train_content", "train_sequence",
             "train_cooccurrence", "fuse", "publish"]
    tasks = [t for t in order if any(i[1] == t for i in intervals)] + sorted({i[1] for i in intervals} - set(order))
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(tasks) + 1.6))
    for row, task_id in enumerate(tasks):
        bars = [((s - origin).total_seconds(), (e - s).total_seconds()) for _, t, s, e in intervals if t == task_id]
        ax.broken_barh(bars, (row - 0.35, 0.7), color=colours(row % 10))
    for day in sorted({i[0] for i in intervals}):
        start = min((s - origin).total_seconds() for d, _, s, _ in intervals if d == day)
        ax.axvline(start, color="grey", lw=0.5, ls=":")
    ax.set_yticks(range(len(tasks)), tasks)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the backfill's first task started (dotted: a day's run begins)")
    days = sorted({i[0] for i in intervals})
    ax.set_title(f"recsys_daily backfill {days[0]}..{days[-1]} under the scheduler: the four training tasks run side by side")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from recsys import local_airflow
    from recsys.config import load_settings
    from recsys.data.synthetic import GeneratorConfig, generate

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=12_300, help="~2.2 events per user and day: 12,300 x 37 days ~ 1M events")
    parser.add_argument("--products", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=37, help="days of events in the landing zone")
    parser.add_argument("--backfill-days", type=int, default=30, help="the last N days are backfilled")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/recsys-bench-e2e"))
    parser.add_argument("--chart", type=Path, default=RESULTS.with_name("e2e_timeline.png"), help="task timeline PNG")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="stop the backfill after this long and report the days finished by then")
    args = parser.parse_args(argv)
    if args.budget_minutes is not None and args.budget_minutes <= 0:
        parser.error(f"--budget-minutes must be positive, got {args.budget_minutes}")
    settings = load_settings()
    # The first backfilled day's window must hold more than the validation + test days (build_features
    # refuses it otherwise): that many landed days before it, and it.
    needed = settings.val_days + settings.test_days
    if args.days - args.backfill_days < needed:
        parser.error(
            f"--days {args.days} with --backfill-days {args.backfill_days} leaves the first backfilled day "
            f"{args.days - args.backfill_days} day(s) of history; it needs at least {needed} (RECSYS_VAL_DAYS + "
            f"RECSYS_TEST_DAYS): use --days {args.backfill_days + needed} or more"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    if args.work_dir.exists():
        shutil.rmtree(args.work_dir)
    data_dir, airflow_home = args.work_dir / "data", args.work_dir / "airflow"
    summary = generate(data_dir, GeneratorConfig(users=args.users, products=args.products, days=args.days, seed=args.seed))
    last = summary.end_date
    first = last - timedelta(days=args.backfill_days - 1)  # fewer than --days, checked above
    print(f"landing zone: {summary.events:,} events, {args.days} days up to {last}; backfilling {first}..{last}", flush=True)

    started = time.time()
    budget_s = args.budget_minutes * 60 if args.budget_minutes is not None else None
    states = local_airflow.backfill(airflow_home, data_dir, first, last, budget_s=budget_s)
    wall = time.time() - started
    finished = {day: state for day, state in states.items() if state in local_airflow.TERMINAL_STATES}
    unfinished = sorted(set(states) - set(finished))

    env = local_airflow.airflow_env(airflow_home, data_dir)
    durations: dict[str, list[float]] = {}
    intervals: list[tuple[str, str, datetime, datetime]] = []
    per_day = {}
    busy = 0.0
    runs_started, runs_ended = [], []
    for run in local_airflow.dag_runs(env):
        day = local_airflow.run_day(run)
        if day not in finished:  # a day cut short by the budget: its tasks' figures would be partial
            continue
        tasks = local_airflow.json_output(
            local_airflow.cli(["tasks", "states-for-dag-run", local_airflow.DAG_ID, run["run_id"], "-o", "json"], env)
        )
        for task in tasks:
            if task.get("start_date") and task.get("end_date"):
                start, end = datetime.fromisoformat(task["start_date"]), datetime.fromisoformat(task["end_date"])
                intervals.append((day, task["task_id"], start, end))
                seconds = (end - start).total_seconds()
                durations.setdefault(task["task_id"], []).append(seconds)
                busy += seconds
        if run.get("start_date") and run.get("end_date"):
            run_start, run_end = datetime.fromisoformat(run["start_date"]), datetime.fromisoformat(run["end_date"])
            per_day[day] = (run_end - run_start).total_seconds()
            runs_started.append(run_start)
            runs_ended.append(run_end)

    if unfinished:
        # The days finished ran one after another from the backfill's first run: their span is the wall time
        # the figures below belong to (the budget's remainder went to the day that was cut short).
        span = (max(runs_ended) - min(runs_started)).total_seconds() if runs_ended else 0.0
        print(f"\nCUT SHORT by --budget-minutes {args.budget_minutes:g}: {len(finished)} of {len(states)} day(s) finished "
              f"in {wall:.0f}s; not finished: {unfinished[0]}..{unfinished[-1]} ({len(unfinished)} day(s)).")
        if not finished:
            print("No day finished within the budget, so there are no figures: give it more minutes.")
            return 1
        print(f"Figures below are for the finished days, over their span of {span:.0f}s.")
        wall = span
    efficiency = busy / (wall * SLOTS) if wall else 0.0
    print(f"\nbackfill of {len(finished)} day(s): {wall:.0f}s wall, {sum(s == 'success' for s in finished.values())} succeeded")
    print(f"{'task':<22}{'median s':>10}{'max s':>10}{'runs':>6}")
    for task_id, values in sorted(durations.items(), key=lambda item: -statistics.median(item[1])):
        print(f"{task_id:<22}{statistics.median(values):>10.1f}{max(values):>10.1f}{len(values):>6}")
    if per_day:
        print(f"per day: median {statistics.median(per_day.values()):.0f}s, max {max(per_day.values()):.0f}s")
        print("each day's run (the history it trains on grows day by day):")
        print("  " + ", ".join(f"{day[5:]} {seconds:.0f}s" for day, seconds in sorted(per_day.items())))
    print(f"parallel efficiency: {busy:.0f} task-seconds / ({wall:.0f}s x {SLOTS} slots) = {efficiency:.2f}")

    if intervals:
        plot_timeline(intervals, args.chart)
        print(f"timeline: {args.chart}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "events": summary.events, "days": args.days, "backfill_days": len(states), "finished_days": len(finished),
        "budget_minutes": args.budget_minutes, "wall_seconds": wall, "states": states, "per_day_seconds": per_day,
        "task_median_seconds": {t: statistics.median(v) for t, v in durations.items()},
        "parallel_efficiency": efficiency, "slots": SLOTS,
    }, indent=2))
    return 0 if finished and all(state == "success" for state in finished.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
