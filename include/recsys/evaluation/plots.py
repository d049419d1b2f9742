"""Charts a person would rather look at than read: model comparison on the held-out slice."""

from __future__ import annotations

from pathlib import Path


def metrics_chart(table: dict[str, dict[str, float]], path: str | Path, metrics: tuple[str, ...]) -> Path:
    """Grouped bar chart: one group per metric, one bar per model; written as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # headless: tasks and CI have no display
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    models = list(table)
    width = 0.8 / max(1, len(models))
    x = np.arange(len(metrics))
    fig, ax = plt.subplots(figsize=(2.2 * len(metrics) + 2, 4.2), dpi=110)
    for i, model in enumerate(models):
        values = [table[model].get(m, 0.0) for m in metrics]
        bars = ax.bar(x + i * width - 0.4 + width / 2, values, width, label=model)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
    ax.set_xticks(x, metrics)
    ax.set_ylabel("value on the held-out slice")
    ax.set_title("Single models vs hybrid (held-out days)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_ylim(0, max(0.05, max(max(table[m].get(k, 0.0) for k in metrics) for m in models) * 1.3))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
