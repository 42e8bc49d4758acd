"""The benchmark report: its schema (report.json), and the Markdown and HTML renderings.

report.json follows `Report` below; `edgevision schema --report` prints its JSON Schema, and
docs/report.schema.json is that schema, committed. Times are milliseconds, sizes megabytes,
accuracy metrics fractions (0..1), accuracy drops points (percent), throughput images per second.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
FILES = ("report.json", "report.md", "report.html")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Stats(_Model):
    """Summary of a sample of timings in ms (percentiles by linear interpolation)."""

    n: int = Field(ge=1, description="Timed calls.")
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float


class Latency(_Model):
    infer: Stats = Field(description="Engine only: the runner's infer() on a pre-processed batch of 1.")
    e2e: Stats = Field(description="End to end: Predictor.predict(JPEG path), decode + pre-process + infer + post-process.")
    infer_samples_ms: List[float] = Field(description="Every timed infer() call, in order.")
    e2e_samples_ms: List[float] = Field(description="Every timed predict() call, in order.")


class Throughput(_Model):
    mode: Literal["sync", "async"] = Field(description="sync: one request at a time; async: many in flight.")
    batch: int = Field(ge=1)
    fps: float = Field(description="Images per second, engine only.")
    requests: int = Field(ge=1, description="Requests in flight.")
    detail: Dict[str, Any] = Field(default_factory=dict, description="Backend settings (OpenVINO: streams, hint).")


class Memory(_Model):
    rss_start_mb: Optional[float] = Field(description="Resident memory of the probe process before loading the model.")
    peak_rss_mb: float = Field(description="Peak resident memory of a process that loads the model and predicts.")


class Accuracy(_Model):
    images: int
    map: Optional[float] = Field(None, description="Detection: box mAP@[.5:.95] (COCO, faster-coco-eval).")
    map50: Optional[float] = Field(None, description="Detection: box mAP@.5.")
    mask_map: Optional[float] = Field(None, description="Instance segmentation: mask mAP@[.5:.95].")
    miou: Optional[float] = Field(None, description="Segmentation: mean IoU over classes.")
    top1: Optional[float] = Field(None, description="Classification: top-1 accuracy.")
    top5: Optional[float] = Field(None, description="Classification: top-5 accuracy.")


class VariantRow(_Model):
    name: str
    backend: str
    precision: str
    device: str
    baseline: bool = Field(description="True for the PyTorch FP32 model the artifact was compiled from.")
    status: Literal["reference", "passed", "failed", "error", "skipped"] = Field(
        description="The compile's verdict (passed/failed/error), 'reference' for the baseline, 'skipped' when this "
        "machine cannot run it (reasons say why).")
    reasons: List[str] = Field(description="Why a variant failed, errored or was skipped.")
    notes: List[str] = Field(description="Caveats about this row's numbers.")
    size_mb: Optional[float] = None
    compile_seconds: Optional[float] = Field(None, description="Build time of this variant (from the manifest).")
    accuracy: Optional[Accuracy] = None
    accuracy_drop: Optional[float] = Field(None, description="Points below the baseline on the artifact's metric.")
    latency: Optional[Latency] = None
    speedup: Optional[Dict[Literal["infer", "e2e"], float]] = Field(None, description="Baseline p50 / this p50.")
    throughput: List[Throughput] = Field(default_factory=list)
    memory: Optional[Memory] = None


class ArtifactInfo(_Model):
    path: str
    name: str
    task: str
    input_size: List[int]
    metric: Literal["map", "miou", "top1"] = Field(description="The accuracy metric the table and the gate use.")
    compiled: Optional[str]
    recipe_sha256: str
    export_seconds: Optional[float]


class Machine(_Model):
    cpu: str
    cores: Optional[int]
    threads: Optional[int] = Field(description="Threads given to every model, the baseline included.")
    isa: List[str] = Field(description="Instruction-set extensions present (AVX-512, VNNI, AMX, NEON...).")
    platform: str
    libraries: Dict[str, Optional[str]]


class Settings(_Model):
    iterations: Optional[int] = Field(description="Interleaved rounds per latency measurement (None: duration-bound).")
    duration: Optional[float] = Field(description="Seconds per latency measurement, if duration-bound.")
    warmup: int
    batch_sizes: List[int]
    async_seconds: float
    accuracy: bool
    memory: bool
    accuracy_images: Optional[int] = Field(description="Cap on data.val images (None: all).")
    quick: bool
    threads: int
    e2e_input: str


class Report(_Model):
    schema_version: Literal[1]
    kind: Literal["edgevision.benchmark"]
    edgevision: str
    created: str
    seconds: float = Field(description="Wall time of the whole benchmark.")
    artifact: ArtifactInfo
    machine: Machine
    settings: Settings
    notes: List[str] = Field(default_factory=list, description="Caveats about the whole run (e.g. no accuracy: the recipe has no data.val).")
    variants: List[VariantRow] = Field(description="The baseline first, then every variant of the artifact, failed ones included.")


def json_schema() -> Dict[str, Any]:
    return Report.model_json_schema()


# ---------------------------------------------------------------------------------------------
# Rendering


def _f(v: Optional[float], digits: int = 2) -> str:
    if v is None:
        return "-"
    text = f"{v:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.00"


def metric_title(metric: str) -> str:
    return {"map": "mAP", "miou": "mIoU", "top1": "top-1"}[metric]


def _fps(row: Dict[str, Any]) -> Optional[float]:
    lat = row.get("latency")
    return 1000.0 / lat["e2e"]["mean"] if lat else None


TABLE_HEADER = ["variant", "backend", "precision", "status", "size MB", "{metric}", "p50 ms", "p99 ms", "FPS", "speedup"]


def table_rows(report: Dict[str, Any]) -> List[List[str]]:
    """The headline table: one row per model; latency and FPS end to end at batch 1."""
    metric = report["artifact"]["metric"]
    rows = []
    for r in report["variants"]:
        lat = r.get("latency") or {}
        acc = (r.get("accuracy") or {}).get(metric)
        speed = (r.get("speedup") or {}).get("e2e")
        rows.append([r["name"], r["backend"], r["precision"], r["status"], _f(r.get("size_mb")), _f(acc, 4),
                     _f(lat.get("e2e", {}).get("p50")), _f(lat.get("e2e", {}).get("p99")), _f(_fps(r), 1),
                     "-" if speed is None else f"{speed:.2f}x"])
    return rows


DETAIL_HEADER = ["variant", "infer p50 ms", "infer p99 ms", "e2e mean ± std ms", "infer speedup", "throughput img/s",
                 "peak RSS MB", "compile s", "drop pts"]


def detail_rows(report: Dict[str, Any]) -> List[List[str]]:
    rows = []
    for r in report["variants"]:
        lat = r.get("latency") or {}
        thr = ", ".join(f"{t['mode']} b{t['batch']}" + (f"x{t['requests']}" if t["requests"] > 1 else "") + f": {t['fps']:.1f}"
                        for t in r.get("throughput") or []) or "-"
        e2e = lat.get("e2e")
        speed = (r.get("speedup") or {}).get("infer")
        rows.append([r["name"], _f(lat.get("infer", {}).get("p50")), _f(lat.get("infer", {}).get("p99")),
                     f"{e2e['mean']:.2f} ± {e2e['std']:.2f}" if e2e else "-", "-" if speed is None else f"{speed:.2f}x",
                     thr, _f((r.get("memory") or {}).get("peak_rss_mb"), 0), _f(r.get("compile_seconds")),
                     _f(r.get("accuracy_drop"))])
    return rows


def _caveats(report: Dict[str, Any]) -> List[str]:
    out = list(report.get("notes") or [])
    for r in report["variants"]:
        for reason in r.get("reasons") or []:
            out.append(f"{r['name']} ({r['status']}): {reason}")
        for note in r.get("notes") or []:
            out.append(f"{r['name']}: {note}")
    return out


def _md_table(header: List[str], rows: List[List[str]]) -> str:
    esc = [[c.replace("|", "\\|") for c in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in esc]
    return "\n".join(lines)


def _machine_line(report: Dict[str, Any]) -> str:
    m, s = report["machine"], report["settings"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v and k in ("torch", "onnxruntime", "openvino", "tensorrt"))
    return (f"{m['cpu']}, {m['cores']} cores, {s['threads']} threads for every model; ISA: {' '.join(m['isa']) or '-'}; "
            f"{m['platform']}; {libs}")


def _settings_line(report: Dict[str, Any]) -> str:
    s = report["settings"]
    how = f"{s['iterations']} interleaved rounds" if s["iterations"] else f"{s['duration']:g} s per measurement, interleaved"
    acc = f"accuracy on {'all' if s['accuracy_images'] is None else 'at most ' + str(s['accuracy_images'])} data.val images" \
        if s["accuracy"] else "accuracy not measured"
    return f"{how} after {s['warmup']} warm-up calls; batch sizes {s['batch_sizes']}; {acc}" + ("; --quick" if s["quick"] else "")


def render_markdown(report: Dict[str, Any]) -> str:
    a = report["artifact"]
    title = metric_title(a["metric"])
    header = [h.format(metric=title) for h in TABLE_HEADER]
    parts = [
        f"# Benchmark: {a['name']} ({a['task']}, input {a['input_size'][0]}x{a['input_size'][1]})",
        "",
        f"- machine: {_machine_line(report)}",
        f"- run: {_settings_line(report)}; {report['seconds']:.0f} s in all; {report['created']}",
        f"- latency and FPS are end to end (JPEG decode, pre-processing, inference, post-processing) at batch 1; "
        f"speedup is PyTorch FP32's p50 over the variant's; {title} on data.val",
        "",
        _md_table(header, table_rows(report)),
        "",
        "## Details",
        "",
        _md_table(DETAIL_HEADER, detail_rows(report)),
    ]
    caveats = _caveats(report)
    if caveats:
        parts += ["", "## Status and caveats", ""] + [f"- {c}" for c in caveats]
    return "\n".join(parts) + "\n"


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
    title = metric_title(metric)
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


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:12px 0;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
tr.failed td,tr.error td{background:#fde2e2}tr.skipped td{background:#eeeeee;color:#666}
tr.reference td{background:#f7f7f7;font-weight:600}
.meta{color:#555;font-size:13px}img{max-width:100%;margin:8px 0;border:1px solid #ddd}
"""


def _html_table(header: List[str], rows: List[List[str]], classes: Optional[List[str]] = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(report: Dict[str, Any]) -> str:
    """A self-contained page (plots embedded as PNG data URIs, no scripts, no network)."""
    a = report["artifact"]
    title = metric_title(a["metric"])
    header = [h.format(metric=title) for h in TABLE_HEADER]
    classes = [r["status"] for r in report["variants"]]
    figs = figures(report)
    captions = {"scatter": "latency vs accuracy", "distribution": "latency distributions", "throughput": "throughput"}
    images = "".join(f'<h2>{captions[k]}</h2><img alt="{captions[k]}" src="data:image/png;base64,{v}">' for k, v in figs.items())
    caveats = "".join(f"<li>{html.escape(c)}</li>" for c in _caveats(report))
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>edgevision benchmark: {html.escape(a['name'])}</title><style>{_CSS}</style></head><body>"
        f"<h1>Benchmark: {html.escape(a['name'])} ({html.escape(a['task'])}, input {a['input_size'][0]}x{a['input_size'][1]})</h1>"
        f"<p class=\"meta\">{html.escape(_machine_line(report))}<br>{html.escape(_settings_line(report))}; "
        f"{report['seconds']:.0f} s in all; {html.escape(report['created'])}<br>latency and FPS end to end at batch 1 "
        f"(JPEG decode, pre-processing, inference, post-processing); speedup: PyTorch FP32 p50 / variant p50</p>"
        + _html_table(header, table_rows(report), classes)
        + "<h2>details</h2>" + _html_table(DETAIL_HEADER, detail_rows(report), classes)
        + (f"<h2>status and caveats</h2><ul>{caveats}</ul>" if caveats else "")
        + images + "</body></html>\n"
    )


def write_reports(report: Dict[str, Any], out_dir: Path) -> List[Path]:
    """Validate the report against the schema, then write report.json/.md/.html into out_dir;
    each file is written to a temporary name and renamed, so none is ever half-written."""
    Report.model_validate(report)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = {"report.json": json.dumps(report, indent=2) + "\n", "report.md": render_markdown(report),
             "report.html": render_html(report)}
    paths = []
    for name, text in texts.items():
        path = out_dir / name
        tmp = out_dir / f".{name}.tmp-{os.getpid()}"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        paths.append(path)
    return paths
