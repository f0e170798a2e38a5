# SPDX-License-Identifier: Apache-2.0
"""Charts of benchmark results (matplotlib, Agg backend: no display needed).

Each panel is one metric: a bar per arm at the median, a whisker from min to max, every run as a
dot (so a reader sees the spread, not just a bar), and the improvement factor against EEVDF over
each bar (>1 better, in the metric's own direction, as in stats.improvement).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

BASE_COLOR = "#8c8c8c"
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]


def _panel(ax, result: dict[str, Any], metric: dict[str, Any]) -> None:
    summary = result.get("summary", {})
    names = [a["name"] for a in result["arms"] if metric["key"] in summary.get(a["name"], {}).get("metrics", {})]
    for i, name in enumerate(names):
        cell = summary[name]["metrics"][metric["key"]]
        color = BASE_COLOR if i == 0 and name == "eevdf" else COLORS[(i - 1) % len(COLORS)]
        ax.bar(i, cell["median"], color=color, alpha=0.85, width=0.65)
        ax.vlines(i, cell["min"], cell["max"], color="black", linewidth=1.2)
        values = cell.get("values", [])
        offsets = [(k - (len(values) - 1) / 2) * 0.06 for k in range(len(values))]
        ax.scatter([i + o for o in offsets], values, s=9, color="black", zorder=3)
        factor = cell.get("improvement")
        if factor is not None and name != "eevdf":
            ax.annotate(
                f"{factor:.2f}×",
                (i, cell["max"]),
                textcoords="offset points",
                xytext=(0, 3),
                ha="center",
                fontsize=8,
                fontweight="bold",
            )
    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    better = "lower is better" if metric["direction"] == "lower" else "higher is better"
    ax.set_title(f"{metric['label']} ({metric['unit']}), {better}", fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)


def _primary(result: dict[str, Any], limit: int = 3) -> list[dict[str, Any]]:
    metrics = [m for m in result.get("metrics", []) if m["primary"]]
    return metrics[:limit] or result.get("metrics", [])[:1]


def plot_benchmark(result: dict[str, Any], path: Path) -> Path:
    """One row of panels (primary metrics) for one benchmark."""
    metrics = _primary(result)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        _panel(ax, result, metric)
    fig.suptitle(f"{result['title']} — median of {result.get('runs')} runs, whiskers min–max", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_suite(doc: dict[str, Any], path: Path) -> Path:
    """One row per benchmark that produced a summary."""
    results = [r for r in doc.get("benchmarks", []) if "summary" in r]
    if not results:
        raise ValueError("no benchmark results to plot")
    cols = max(len(_primary(r)) for r in results)
    fig, axes = plt.subplots(len(results), cols, figsize=(4.2 * cols, 3.3 * len(results)), squeeze=False)
    for row, result in zip(axes, results, strict=True):
        metrics = _primary(result)
        for ax, metric in zip(row[: len(metrics)], metrics, strict=True):
            _panel(ax, result, metric)
        row[0].set_ylabel(result["benchmark"], fontsize=10, fontweight="bold")
        for ax in row[len(metrics) :]:
            ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
