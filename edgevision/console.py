"""How the command line talks to the user: a rich progress Reporter and the summary tables."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional

from edgevision.records import Manifest
from edgevision.reporting import Reporter
from edgevision.tasks import METRIC, METRIC_TITLE


class RichReporter(Reporter):
    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)

    def info(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False, soft_wrap=True)

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[note]}")]
        with Progress(*columns, console=self.console, transient=False) as progress:
            tid = progress.add_task(description, total=total, note="")

            def advance(n: int = 1, note: str = "") -> None:
                progress.update(tid, advance=n, note=note)

            yield advance


def _fmt(v: Optional[float], digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def summary_rows(manifest: Manifest) -> List[List[str]]:
    """One row per variant (PyTorch FP32 baseline first): the compile summary table."""
    metric = METRIC[manifest.info.task]
    base = manifest.baseline
    base_lat = (base.get("latency") or {}).get("e2e", {}).get("p50")
    rows = [["pytorch-fp32 (reference)", "-", "-", _fmt((base.get("accuracy") or {}).get(metric), 4), "-",
             _fmt((base.get("latency") or {}).get("infer", {}).get("p50")), _fmt(base_lat), "1.00x", "reference"]]
    for v in manifest.variants:
        lat = v.latency or {}
        e2e = lat.get("e2e", {}).get("p50")
        speed = f"{base_lat / e2e:.2f}x" if (base_lat and e2e) else "-"
        status = v.status if v.status == "passed" else f"{v.status}: {'; '.join(v.reasons)}"
        if v.status == "passed" and v.verified_with is not None:
            status = "passed (CPU emulation)"
        warnings = ((manifest.advice or {}).get("notes") or {}).get(v.name)
        if v.status == "passed" and warnings:
            status += " - " + "; ".join(warnings)
        parity_txt = _parity_text(v.parity or {})
        rows.append([v.name, _fmt(v.size_mb), parity_txt, _fmt((v.accuracy or {}).get(metric), 4),
                     _fmt(v.accuracy_drop),
                     _fmt(lat.get("infer", {}).get("p50")), _fmt(e2e), speed, status])
    return rows


def _parity_text(parity: Dict[str, Any]) -> str:
    if not parity or "error" in parity:
        return "-"
    if "matched" in parity:
        return f"matched {min(parity['matched'], parity['matched_candidate']):.4f} / dscore {parity['max_score_diff']:.1e}"
    agree = parity.get("pixel_agreement", parity.get("top1_agreement"))
    return f"cos {parity['min_cosine']:.5f} / agree {agree:.4f}"


SUMMARY_HEADER = ["variant", "size MB", "parity vs PyTorch", "accuracy", "drop pts", "infer ms", "e2e ms", "speedup", "status"]


def summary_header(task: str) -> List[str]:
    return [METRIC_TITLE[task] if h == "accuracy" else h for h in SUMMARY_HEADER]


QUANT_HEADER = ["variant", "tool", "quantized nodes", "kept in float", "calibration", "quantize s", "cache"]


def quantization_rows(manifest: Manifest) -> List[List[str]]:
    """One row per INT8/FP16 variant: what was quantized and with which calibration set."""
    rows = []
    for v in manifest.variants:
        q = (v.settings or {}).get("quantization")
        if not q:
            continue
        cal = q.get("calibration") or {}
        calib = f"{cal['images']} img, {q.get('calibration_method')}, {cal['seconds']:.1f} s" if cal else "-"
        nodes = q.get("quantized_nodes", q.get("fp16_nodes", "-"))
        kept = q.get("kept_float") or []
        rows.append([v.name, q["tool"], str(nodes), f"{len(kept)} + {q.get('float_tail_nodes', 0)} tail ops",
                     calib, _fmt(q.get("quantize_seconds")), "hit" if q.get("calibration_cached") else "-"])
    return rows


def print_summary(manifest: Manifest) -> None:
    from rich.console import Console
    from rich.table import Table

    head = f", head {manifest.export['head']}" if (manifest.export or {}).get("head") else ""
    table = Table(title=f"{manifest.name} ({manifest.info.task}, input {list(manifest.info.input.size)}{head})")
    for h in summary_header(manifest.info.task):
        table.add_column(h, overflow="fold", no_wrap=(h == "variant"))
    for row in summary_rows(manifest):
        style = None if row[-1].startswith(("passed", "reference")) else "red"
        table.add_row(*row, style=style)
    console = Console()
    if not console.is_terminal:  # logs and CI: do not squeeze the table into 80 columns
        console = Console(width=160)
    console.print(table)
    if manifest.verified_on:
        console.print(f"parity against PyTorch on {manifest.verified_on}", highlight=False, markup=False)
    if manifest.advice:
        from edgevision.bench.advice import Advice

        a = manifest.advice
        for line in Advice(a["latency"], a["throughput"], {}).lines():
            console.print(line + " (quick timing; `edgevision benchmark` measures carefully)", highlight=False, markup=False)
    quant = quantization_rows(manifest)
    if quant:
        qtable = Table(title="quantization")
        for h in QUANT_HEADER:
            qtable.add_column(h, overflow="fold")
        for row in quant:
            qtable.add_row(*row)
        console.print(qtable)


def print_report(report: Dict[str, Any]) -> None:
    """The benchmark's headline table (report.md has the same rows)."""
    from rich.console import Console
    from rich.table import Table

    from edgevision.bench.report import TABLE_HEADER, table_rows

    a = report["artifact"]
    table = Table(title=f"benchmark: {a['name']} ({a['task']}, input {a['input_size']}), e2e batch 1, "
                        f"{report['settings']['threads']} threads")
    for h in TABLE_HEADER:
        table.add_column(h.format(metric=METRIC_TITLE[a["task"]]), no_wrap=(h == "variant"))
    for row in table_rows(report):
        table.add_row(*row, style=None if row[3] in ("passed", "reference") else "red")
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)
    for r in report["variants"]:
        for text in (r.get("reasons") or []) + (r.get("notes") or []):
            console.print(f"  {r['name']}: {text}", highlight=False, markup=False)
    from edgevision.bench.report import advice_lines

    for line in advice_lines(report):
        console.print(line, highlight=False, markup=False)
