"""The report's plots (matplotlib, Agg): latency vs accuracy, latency distributions, throughput,
each returned as a base64 PNG for embedding in report.html."""

from __future__ import annotations

import base64
import io
from typing import Any, Dict, List

from edgevision.tasks import METRIC_TITLE

_COLORS = {"torch": "#444444", "onnxruntime": "#1f77b4", "openvino": "#ff7f0e", "tensorrt": "#2ca02c"}
_MODE_COLORS = ("#17becf", "#9467bd", "#bcbd22", "#8c564b", "#e377c2")
_MARKERS = {"fp32": "o", "fp16": "s", "bf16": "D", "int8": "^"}


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def figures(report: Dict[str, Any]) -> Dict[str, str]:
    """The report's plots as base64 PNGs: latency vs accuracy, latency distributions, throughput."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = report["artifact"]["metric"]
    title = METRIC_TITLE[report["artifact"]["task"]]
    rows = [r for r in report["variants"] if r.get("latency")]
    out: Dict[str, str] = {}
    if not rows:
        return out
    scored = [(r, r["accuracy"][metric]) for r in rows if (r.get("accuracy") or {}).get(metric) is not None]
    if scored:
        out["scatter"] = _scatter(plt, scored, title)
    out.update(_distribution_and_throughput(plt, matplotlib, rows))
    return out


def _scatter(plt: Any, scored: List[Any], title: str) -> str:
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for r, acc in scored:
        e2e = r["latency"]["e2e"]
        color = _COLORS.get(r["backend"], "#9467bd")
        ax.plot([e2e["p50"], e2e["p99"]], [acc, acc], color=color, linewidth=1.5, alpha=0.5)
        ax.scatter([e2e["p50"]], [acc], s=110, color=color, marker="*" if r["baseline"] else _MARKERS.get(r["precision"], "o"),
                   edgecolor="black", linewidth=0.6, zorder=3)
        ax.annotate(r["name"], (e2e["p50"], acc), textcoords="offset points", xytext=(7, 5), fontsize=8)
    ax.set_xlabel("end-to-end latency, ms (marker: p50, line: to p99)")
    ax.set_ylabel(title)
    ax.set_title(f"{title} vs latency (lower right is worse, upper left is better)")
    ax.grid(alpha=0.3)
    png = _png(fig)
    plt.close(fig)
    return png


def _distribution_and_throughput(plt: Any, matplotlib: Any, rows: List[Dict[str, Any]]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.55 * len(rows) + 1.6), sharey=True)
    names = [r["name"] for r in rows]
    for ax, kind in zip(axes, ("infer", "e2e")):
        data = [r["latency"][f"{kind}_samples_ms"] for r in rows]
        box = ax.boxplot(data, vert=False, patch_artist=True, showfliers=True, widths=0.6,
                         flierprops={"markersize": 3, "alpha": 0.5})
        for patch, r in zip(box["boxes"], rows):
            patch.set_facecolor(_COLORS.get(r["backend"], "#9467bd"))
            patch.set_alpha(0.8)
        ax.set_yticks(range(1, len(rows) + 1), names)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("ms (log scale)")
        ax.set_title("engine only" if kind == "infer" else "end to end")
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle("latency distribution (box: p25-p75, whiskers: 1.5 IQR, dots: outliers)")
    out["distribution"] = _png(fig)
    plt.close(fig)

    modes = sorted({(t["mode"], t["batch"]) for r in rows for t in r.get("throughput") or []})
    if modes:
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) * max(1, len(modes)) / 2 + 1.8))
        height = 0.8 / len(modes)
        for j, (mode, batch) in enumerate(modes):
            vals = [next((t["fps"] for t in r.get("throughput") or [] if (t["mode"], t["batch"]) == (mode, batch)), 0.0)
                    for r in rows]
            ax.barh([i + j * height for i in range(len(rows))], vals, height=height, label=f"{mode}, batch {batch}",
                    color=_MODE_COLORS[j % len(_MODE_COLORS)])
        ax.set_yticks([i + 0.4 - height / 2 for i in range(len(rows))], names)
        ax.set_xlabel("images / s (engine only)")
        ax.set_title("throughput")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="x")
        out["throughput"] = _png(fig)
        plt.close(fig)
    return out
