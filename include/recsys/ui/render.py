"""HTML for the Recommendations page: inline SVG line charts and plain tables, nothing fetched from anywhere.

Every value that reaches the page (titles, reasons, error messages, even numbers) goes through
:func:`html.escape`; the page has no script, so it works inside Airflow's sandboxed plugin iframe and in
any browser without a CDN.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from html import escape

from recsys.constants import BASELINE_NAMES, EVAL_K, HYBRID_NAME
from recsys.ui.data import RunDay, UserView, model_series

#: One colour per model (colour-blind-safe Tableau 10 order); baselines dashed, the hybrid wide and dark.
MODEL_COLOURS = {
    "collaborative": "#4e79a7",
    "content": "#f28e2b",
    "sequence": "#59a14f",
    "cooccurrence": "#b07aa1",
    "popularity": "#9c9c9c",
    "category_popularity": "#edc948",
    HYBRID_NAME: "#e15759",
}
_EXTRA_COLOURS = ("#76b7b2", "#ff9da7", "#9c755f", "#bab0ac")

CHART_WIDTH, CHART_HEIGHT = 560, 250
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 48, 30, 12, 30

NDCG_METRIC = f"ndcg@{EVAL_K}"
COVERAGE_METRIC = f"coverage@{EVAL_K}"
HR_METRIC = f"hr@{EVAL_K}"

_CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0; padding: 16px 20px;
       color: #1f2328; background: #fff; }
h1 { font-size: 20px; margin: 0 0 2px; } h2 { font-size: 16px; margin: 0 0 8px; } h3 { font-size: 14px; margin: 12px 0 6px; }
.sub { color: #59636e; margin: 0 0 14px; } .muted { color: #59636e; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 16px; margin-bottom: 16px; }
.card { border: 1px solid #d1d9e0; border-radius: 8px; padding: 12px 14px; min-width: 0; }
.notice { border: 1px solid #d4a72c; background: #fff8c5; border-radius: 8px; padding: 10px 14px; margin-bottom: 16px; }
.error { border-color: #cf222e; background: #ffebe9; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #eef1f4; vertical-align: top; }
th { font-weight: 600; color: #59636e; border-bottom-color: #d1d9e0; white-space: nowrap; }
td.num, th.num { text-align: right; white-space: nowrap; }
tr.hybrid td { font-weight: 600; }
.scroll { max-height: 360px; overflow-y: auto; }
.user { grid-template-columns: minmax(360px, 2fr) minmax(520px, 3fr); }
.tag { display: inline-block; font-size: 11px; padding: 0 6px; margin: 1px 2px 1px 0; border-radius: 9px; background: #eef1f4; white-space: nowrap; }
td.title { min-width: 150px; } td.nowrap { white-space: nowrap; } td.reason { min-width: 180px; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; margin-top: 4px; font-size: 12px; }
.legend span { display: inline-flex; align-items: center; gap: 5px; }
.swatch { display: inline-block; width: 16px; height: 0; border-top: 3px solid; }
.swatch.dashed { border-top-style: dashed; }
form { display: flex; gap: 8px; align-items: center; margin-bottom: 8px; }
input[type=text] { font: inherit; padding: 5px 8px; border: 1px solid #d1d9e0; border-radius: 6px; width: 160px; }
button { font: inherit; padding: 5px 14px; border-radius: 6px; border: 1px solid #1f6feb; background: #1f6feb; color: #fff; cursor: pointer; }
svg text { font: 11px system-ui, sans-serif; fill: #59636e; }
"""


def _colour(model: str, index: int) -> str:
    return MODEL_COLOURS.get(model, _EXTRA_COLOURS[index % len(_EXTRA_COLOURS)])


def _nice_step(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k that is ≥ value: a readable spacing of y-axis ticks."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * 10**exponent >= value - 1e-12:
            return step * 10**exponent
    return 10 ** (exponent + 1)


def line_chart(series: dict[str, list[tuple[dt.date, float]]], label: str, element_id: str) -> str:
    """An inline SVG line chart of one metric per model over days, with an HTML legend under it.

    Days are placed by date (a missing day leaves a gap in spacing, not a false neighbour); with a single
    day every model is a dot. Each point carries a ``<title>`` tooltip with the exact value.
    """
    points = [(day, value) for values in series.values() for day, value in values]
    if not points:
        return f'<p class="muted" id="{escape(element_id)}">No {escape(label)} recorded yet.</p>'
    first = min(day for day, _ in points)
    last = max(day for day, _ in points)
    highest = max(value for _, value in points)
    step = _nice_step(highest / 5)
    ticks = max(1, math.ceil(highest / step - 1e-9))
    top = step * ticks
    plot_w = CHART_WIDTH - _MARGIN_LEFT - _MARGIN_RIGHT
    plot_h = CHART_HEIGHT - _MARGIN_TOP - _MARGIN_BOTTOM
    span = max((last - first).days, 1)

    def x(day: dt.date) -> float:
        if first == last:
            return _MARGIN_LEFT + plot_w / 2
        return _MARGIN_LEFT + plot_w * (day - first).days / span

    def y(value: float) -> float:
        return _MARGIN_TOP + plot_h * (1 - value / top)

    parts = [
        f'<svg id="{escape(element_id)}" class="chart" role="img" aria-label="{escape(label)} by day" '
        f'viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" width="100%" preserveAspectRatio="xMidYMid meet" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    for i in range(ticks + 1):  # horizontal grid lines and y labels at round values
        value = step * i
        parts.append(
            f'<line x1="{_MARGIN_LEFT}" x2="{CHART_WIDTH - _MARGIN_RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            f'stroke="{"#8c959f" if i == 0 else "#eef1f4"}"/>'
            f'<text x="{_MARGIN_LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{round(value, 10):g}</text>'
        )
    days = sorted({day for day, _ in points})
    stride = max(1, math.ceil(len(days) / 8))
    for day in days[::stride]:
        parts.append(
            f'<text x="{x(day):.1f}" y="{CHART_HEIGHT - 10}" text-anchor="middle">{escape(day.strftime("%b %d"))}</text>'
        )
    legend = []
    for index, (model, values) in enumerate(series.items()):
        colour = _colour(model, index)
        hybrid = model == HYBRID_NAME
        dashed = model in BASELINE_NAMES
        width = 3.2 if hybrid else 1.8
        dash = ' stroke-dasharray="5 4"' if dashed else ""
        coords = " ".join(f"{x(day):.1f},{y(value):.1f}" for day, value in sorted(values))
        parts.append(f'<g class="series" data-model="{escape(model)}">')
        if len(values) > 1:
            parts.append(
                f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="{width}"{dash} '
                'stroke-linejoin="round" stroke-linecap="round"/>'
            )
        for day, value in sorted(values):
            parts.append(
                f'<circle cx="{x(day):.1f}" cy="{y(value):.1f}" r="{3.6 if hybrid else 2.6}" fill="{colour}">'
                f"<title>{escape(model)} {day.isoformat()}: {value:.4f}</title></circle>"
            )
        parts.append("</g>")
        legend.append(
            f'<span><i class="swatch{" dashed" if dashed else ""}" style="border-color:{colour}'
            f'{";border-top-width:4px" if hybrid else ""}"></i>{"<b>" if hybrid else ""}{escape(model)}'
            f'{"</b>" if hybrid else ""}</span>'
        )
    parts.append("</svg>")
    return "".join(parts) + f'<div class="legend">{"".join(legend)}</div>'


def _num(value: int | float | None, digits: int | None = None) -> str:
    if value is None:
        return "–"
    if digits is None:
        return f"{value:,}"
    return f"{value:.{digits}f}"


def quarantine_table(runs: Sequence[RunDay]) -> str:
    """Raw, clean and quarantined rows per day, newest first (the validate_raw outcome of each run)."""
    rows = []
    for run in sorted(runs, key=lambda r: r.ds, reverse=True):
        share = run.quarantined_fraction
        rows.append(
            f"<tr><td>{run.ds.isoformat()}</td><td class=num>{_num(run.raw_rows)}</td>"
            f"<td class=num>{_num(run.clean_rows)}</td><td class=num>{_num(run.quarantined_rows)}</td>"
            f"<td class=num>{'–' if share is None else f'{share:.2%}'}</td></tr>"
        )
    return (
        '<div class="scroll"><table id="quarantine"><thead><tr><th>day</th><th class=num>raw rows</th>'
        "<th class=num>clean</th><th class=num>quarantined</th><th class=num>share</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def latest_metrics_table(run: RunDay) -> str:
    """Every model's held-out metrics on the newest day, the hybrid highlighted."""
    series = model_series([run], NDCG_METRIC)
    models = list(series) + [m for m in run.metrics if m not in series]
    rows = []
    for model in models:
        values = run.metrics.get(model, {})
        rows.append(
            f'<tr class="{"hybrid" if model == HYBRID_NAME else ""}"><td>{escape(model)}</td>'
            f"<td class=num>{_num(values.get(NDCG_METRIC), 4)}</td><td class=num>{_num(values.get(HR_METRIC), 4)}</td>"
            f"<td class=num>{_num(values.get(COVERAGE_METRIC), 4)}</td></tr>"
        )
    return (
        f'<table id="latest-metrics"><thead><tr><th>model</th><th class=num>{NDCG_METRIC}</th>'
        f"<th class=num>{HR_METRIC}</th><th class=num>{COVERAGE_METRIC}</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _tags(sources: str | None) -> str:
    """The comma-separated model names of a row as small wrapping tags (a long list would not wrap)."""
    names = [name.strip() for name in (sources or "").split(",") if name.strip()]
    return "".join(f'<span class="tag">{escape(name)}</span>' for name in names)


def user_section(view: UserView) -> str:
    """The lookup result: the user's newest events and the latest day's list, with product titles."""
    events = "".join(
        f"<tr><td class=nowrap>{escape(e.event_time.strftime('%Y-%m-%d %H:%M'))}</td><td>{escape(e.event_type)}</td>"
        f"<td class=num>{e.product_id}</td><td>{escape(e.title or '(not in catalog)')}</td></tr>"
        for e in view.events
    )
    events_html = (
        '<table id="user-events"><thead><tr><th>time (UTC)</th><th>event</th><th class=num>product</th>'
        f"<th>title</th></tr></thead><tbody>{events}</tbody></table>"
        if view.events
        else f'<p class="muted" id="user-events">No clean events for user {view.user_id} in the recent days.</p>'
    )
    recs = "".join(
        f"<tr><td class=num>{r.rank}</td><td class=num>{r.product_id}</td><td class=title>{escape(r.title or '(not in catalog)')}</td>"
        f"<td class=num>{_num(r.score, 3)}</td><td>{_tags(r.sources)}</td><td class=reason>{escape(r.reason or '')}</td></tr>"
        for r in view.recommendations
    )
    if view.recommendations:
        recs_html = (
            '<table id="user-recommendations"><thead><tr><th class=num>rank</th><th class=num>product</th><th>title</th>'
            f"<th class=num>score</th><th>sources</th><th>reason</th></tr></thead><tbody>{recs}</tbody></table>"
        )
    elif view.ds is None:
        recs_html = '<p class="muted" id="user-recommendations">Nothing has been published yet.</p>'
    else:
        recs_html = (
            f'<p class="muted" id="user-recommendations">User {view.user_id} has no recommendations on '
            f"{view.ds.isoformat()} (not active in the lookback window, or not a known user id).</p>"
        )
    day = view.ds.isoformat() if view.ds else "–"
    return (
        f'<div class="grid user" id="user-result" data-user-id="{view.user_id}">'
        f'<div class="card"><h3>Recent events of user {view.user_id}</h3><div class="scroll">{events_html}</div></div>'
        f'<div class="card"><h3>Recommendations for user {view.user_id} on {day}</h3>'
        f'<div class="scroll">{recs_html}</div></div></div>'
    )


def page(
    *,
    runs: Sequence[RunDay] | None,
    source: str,
    warehouse_error: str | None = None,
    user_id_text: str = "",
    user_view: UserView | None = None,
    user_error: str | None = None,
) -> str:
    """The whole page. ``runs`` is None when the warehouse could not be read (``warehouse_error`` says why)."""
    blocks = []
    if warehouse_error:
        blocks.append(f'<div class="notice" id="warehouse-error" role="alert">{escape(warehouse_error)}</div>')
    if runs is not None and not runs:
        blocks.append('<div class="notice" id="no-runs">No day has been published yet: run the recsys_daily DAG.</div>')
    if runs:
        latest = max(runs, key=lambda r: r.ds)
        blocks.append(
            '<div class="grid">'
            f'<div class="card"><h2>Held-out {NDCG_METRIC} by day</h2>{line_chart(model_series(runs, NDCG_METRIC), NDCG_METRIC, "ndcg-chart")}</div>'
            f'<div class="card"><h2>Catalog {COVERAGE_METRIC} by day</h2>{line_chart(model_series(runs, COVERAGE_METRIC), COVERAGE_METRIC, "coverage-chart")}</div>'
            "</div>"
            '<div class="grid">'
            f'<div class="card"><h2>Validation: quarantined rows per day</h2>{quarantine_table(runs)}</div>'
            f'<div class="card"><h2>Models on {latest.ds.isoformat()}</h2>{latest_metrics_table(latest)}'
            f'<p class="muted">{_num(latest.published_rows)} rows published for {_num(latest.users)} users, '
            f"{_num(latest.items)} items.</p></div>"
            "</div>"
        )
    lookup = (
        '<div class="card" id="lookup"><h2>User lookup</h2>'
        '<form method="get" action="" id="lookup-form"><label for="user_id">user_id</label>'
        f'<input type="text" inputmode="numeric" id="user_id" name="user_id" value="{escape(user_id_text)}" '
        'placeholder="e.g. 1042" autocomplete="off"><button type="submit" id="lookup-button">Look up</button></form>'
    )
    if user_error:
        lookup += f'<div class="notice error" id="user-error" role="alert">{escape(user_error)}</div>'
    lookup += "</div>"
    blocks.append(lookup)
    if user_view is not None:
        blocks.append(user_section(user_view))
    days = f"{len(runs)} published day(s)" if runs else "no published days"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Recommendations</title><style>{_CSS}</style></head><body>"
        f'<h1>Recommendations</h1><p class="sub">recsys_daily · warehouse <code>{escape(source)}</code> · {days} · '
        "metrics are scored on each run's held-out days</p>"
        f"{''.join(blocks)}</body></html>"
    )
