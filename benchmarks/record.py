"""What every benchmark script records around its measurement: the machine, the thread count,
the load average before and after, the wall time; then results/<name>.json and .md."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

from edgevision.bench.machine import machine

OUT = Path(__file__).resolve().parent / "results"


def record(name: str, threads: int, settings: Dict[str, Any], measure: Callable[[], List[Dict[str, Any]]],
           markdown: Callable[[Dict[str, Any]], str]) -> Dict[str, Any]:
    """Run `measure` (-> one result per model) and write results/<name>.json and .md."""
    started, load_before = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    models = measure()
    report = {"machine": machine(threads), "threads": threads, **settings, "load_before": load_before,
              "load_after": [round(x, 2) for x in os.getloadavg()], "seconds": round(time.perf_counter() - started, 1),
              "models": models}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (OUT / f"{name}.md").write_text(markdown(report))
    print(markdown(report))
    return report
