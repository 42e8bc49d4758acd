"""The benchmark report rendered: report.md (the table users paste into issues) and a
self-contained report.html (tables and plots/), written atomically next to report.json.

report.json follows bench/schema.py. Times are milliseconds, sizes megabytes, accuracy metrics
fractions (0..1), accuracy drops points (percent), throughput images per second.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from edgevision.bench.plots import figures
from edgevision.bench.schema import Report
from edgevision.benchmark_options import STEADY_BLOCK
from edgevision.tasks import METRIC_TITLE

def _f(v: Optional[float], digits: int = 2) -> str:
    if v is None:
        return "-"
    text = f"{v:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.00"


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
    engines = ("torch", "onnxruntime", "openvino", "tensorrt", "ncnn", "executorch")
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v and k in engines)
    return (f"{m['cpu']}, {m['cores']} cores, {s['threads']} threads for every model; ISA: {' '.join(m['isa']) or '-'}; "
            f"{m['platform']}; {libs}")


def _settings_line(report: Dict[str, Any]) -> str:
    s = report["settings"]
    how = (f"{s['iterations']} timed calls per model" if s["iterations"] else f"{s['duration']:g} s per measurement") + \
        f", interleaved in rounds of {STEADY_BLOCK - 1} calls after an untimed one (steady state)"
    acc = f"accuracy on {'all' if s['accuracy_images'] is None else 'at most ' + str(s['accuracy_images'])} data.val images" \
        if s["accuracy"] else "accuracy not measured"
    return f"{how} after {s['warmup']} warm-up calls; batch sizes {s['batch_sizes']}; {acc}" + ("; --quick" if s["quick"] else "")


def render_markdown(report: Dict[str, Any]) -> str:
    a = report["artifact"]
    title = METRIC_TITLE[a["task"]]
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
    parts[8:8] = ["## What to ship", ""] + [f"- {line}" for line in advice_lines(report)] + [""]
    caveats = _caveats(report)
    if caveats:
        parts += ["", "## Status and caveats", ""] + [f"- {c}" for c in caveats]
    return "\n".join(parts) + "\n"


def advice_lines(report: Dict[str, Any]) -> List[str]:
    from edgevision.bench.advice import Advice

    a = report.get("advice") or {}
    return Advice(a.get("latency"), a.get("throughput"), a.get("notes") or {}).lines()


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
    title = METRIC_TITLE[a["task"]]
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
        + "<h2>what to ship</h2><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in advice_lines(report)) + "</ul>"
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
