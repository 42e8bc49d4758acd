"""Reproduce edgevision's published benchmark table on this machine.

    python benchmarks/published.py            # everything, 3 repetitions: 20 min on 2 cores, more the first time
    python benchmarks/published.py --quick    # a smoke run (edgevision benchmark --quick)
    python benchmarks/published.py --only quickstart,resnet18

For each model: compile its recipe (skipped when build/<name> is current), then run
`edgevision benchmark` on it, PyTorch FP32 included, all models of one artifact interleaved.
Results: benchmarks/results/published.json (every report, raw samples dropped) and
benchmarks/results/published.md (the tables, the machine, the load, the time taken, the noise);
--only and --quick write published-<...>.json/.md instead, so the full table stays.

Models:
  quickstart, segmentation-unet: trained here (recipes/), so their accuracy means something.
  torchvision ssdlite320 / retinanet (detection, 320), lraspp / deeplabv3 (segmentation, 320),
  resnet18 / mobilenet_v3_large (classification, 224): random weights with BatchNorm statistics
  re-estimated (pretrained weights cannot be downloaded here), so only their speed means
  something: no accuracy column, and INT8 calibrated on generated shapes images.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgevision import api  # noqa: E402
from edgevision.bench.report import TABLE_HEADER, detail_rows, table_rows, write_reports  # noqa: E402
from edgevision.api import benchmark  # noqa: E402
from edgevision.bench.advice import Advice, from_report  # noqa: E402
from edgevision.benchmark_options import STEADY_BLOCK  # noqa: E402
from edgevision.bench.run import BenchOptions  # noqa: E402
from edgevision.console import RichReporter  # noqa: E402
from edgevision.tasks import METRIC_TITLE  # noqa: E402
from edgevision.errors import EdgeVisionError  # noqa: E402
from edgevision.random_weights import reestimated_checkpoint  # noqa: E402
from edgevision.recipe import load_recipe, parse_recipe  # noqa: E402

OUT = ROOT / "benchmarks" / "results"
BUILD = ROOT / "build" / "benchmarks"
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
ALL_TARGETS = [{"backend": "onnxruntime", "precision": "fp32"}, {"backend": "onnxruntime", "precision": "int8"},
               {"backend": "openvino", "precision": "fp32"}, {"backend": "openvino", "precision": "bf16"},
               {"backend": "openvino", "precision": "int8"}]
LABELS = {"detection": ["background", "circle", "square", "triangle"], "segmentation": ["background", "circle", "square", "triangle"]}
# name -> (task, torchvision builder, input size, extra recipe keys)
TORCHVISION = {
    "ssdlite320": ("detection", "ssdlite320_mobilenet_v3_large", 320, {"input": {"mean": [0.5] * 3, "std": [0.5] * 3}}),
    "retinanet-r50": ("detection", "retinanet_resnet50_fpn", 320, {}),
    "lraspp-mnv3": ("segmentation", "lraspp_mobilenet_v3_large", 320, {}),
    "deeplabv3-mnv3": ("segmentation", "deeplabv3_mobilenet_v3_large", 320, {}),
    "resnet18": ("classification", "resnet18", 224, {}),
    "mobilenet-v3-large": ("classification", "mobilenet_v3_large", 224, {}),
}
ORDER = ["quickstart", "segmentation-unet", *TORCHVISION]


def torchvision_recipe(name: str) -> Dict[str, Any]:
    task, builder, size, extra = TORCHVISION[name]
    model: Dict[str, Any] = {"source": builder}
    if task == "classification":
        model["num_classes"] = 1000
    else:
        model["labels"] = LABELS[task]
    data = {
        "name": name, "task": task, "model": model,
        "input": {"size": [size, size], **IMAGENET, **extra.get("input", {})},
        "targets": ALL_TARGETS,
        "calibration": {"source": "shapes", "count": 100, "seed": 7},
        # random weights: near-uniform logits make reduced-precision top-1 / pixel / detection agreement a coin toss,
        # so parity is gated only at FP32 here (trained models get the default tolerances)
        "verify": {"images": 4, "timing_rounds": 0, "tolerances": {
            p: {"min_cosine": 0.0 if task == "detection" else 0.9, "min_agreement": 0.0} for p in ("bf16", "int8")}},
        "benchmark": {"batch_sizes": [1, 8]},
        "output": str(BUILD / name),
    }
    ckpt = BUILD / f"{name}.pt"
    if not ckpt.is_file():
        BUILD.mkdir(parents=True, exist_ok=True)
        reestimated_checkpoint(data, ckpt)
    data["model"]["checkpoint"] = str(ckpt)
    return data


def artifact_for(name: str, reporter: RichReporter) -> Path:
    recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml") if name in ("quickstart", "segmentation-unet") \
        else parse_recipe(torchvision_recipe(name), source=name)
    if api.is_current(recipe):
        return recipe.output_dir
    started = time.perf_counter()
    try:
        api.compile(recipe, reporter=reporter)
    except EdgeVisionError as e:  # a failed variant is part of the result: benchmark what was built
        reporter.info(f"{name}: {e}")
        failed = recipe.output_dir.with_name(recipe.output_dir.name + ".failed")
        return failed if failed.is_dir() else recipe.output_dir
    reporter.info(f"{name}: compiled in {time.perf_counter() - started:.0f} s")
    return recipe.output_dir


def strip_samples(report: Dict[str, Any]) -> Dict[str, Any]:
    out = json.loads(json.dumps(report))
    for row in out["variants"]:
        for key in ("infer_samples_ms", "e2e_samples_ms"):
            (row.get("latency") or {}).pop(key, None)
    return out


def noise(reports: List[Dict[str, Any]]) -> List[str]:
    """Spread within a run: min / max and p99 / p50 of the end-to-end samples."""
    lines = []
    for rep in reports:
        for row in rep["variants"]:
            lat = row.get("latency")
            if lat:
                e = lat["e2e"]
                lines.append(f"| {rep['artifact']['name']} | {row['name']} | {e['min']:.2f} | {e['p50']:.2f} | {e['max']:.2f} "
                             f"| {e['p99'] / e['p50']:.2f} |")
    return lines


def repetition_p50s(runs: List[Dict[str, Any]], name: str, kind: str = "e2e") -> List[float]:
    """A variant's p50 (ms) in every repetition that timed it."""
    out = []
    for rep in runs:
        row = next((r for r in rep["variants"] if r["name"] == name), None)
        lat = (row or {}).get("latency")
        if lat:
            out.append(float(lat[kind]["p50"]))
    return out


def median(values: List[float]) -> float:
    return float(statistics.median(values))


def spread(values: List[float]) -> float:
    """Slowest / fastest repetition - 1 (0 for a single one)."""
    return max(values) / min(values) - 1 if len(values) > 1 else 0.0


def repetitions(runs: Dict[str, List[Dict[str, Any]]]) -> List[str]:
    """Per model and variant: every repetition's end-to-end p50, their median and spread."""
    lines = []
    for name, reps in runs.items():
        for row in reps[0]["variants"]:
            p50s = repetition_p50s(reps, row["name"])
            if p50s:
                lines.append(f"| {name} | {row['name']} | {' / '.join(f'{v:.2f}' for v in p50s)} | {median(p50s):.2f} "
                             f"| {100 * spread(p50s):.0f}% |")
    return lines


HEADLINE = ["pytorch-fp32", "onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-bf16", "openvino-int8"]


def median_advice(reps: List[Dict[str, Any]]) -> Advice:
    """The benchmark's what-to-ship advice from the median over repetitions of each end-to-end p50
    (throughput and accuracy from the complete first repetition), so it agrees with the headline."""
    medians = {r["name"]: median(p50s) for r in reps[0]["variants"] if (p50s := repetition_p50s(reps, r["name"]))}
    return from_report(reps[0], medians)


def _int8_mark(notes: List[str]) -> str:
    if any("do not ship" in n for n in notes):
        return " (slower than FP32: do not ship)"
    return " (< 1.3x FP32: not worth it)" if any("not worth" in n for n in notes) else ""


def headline(runs: Dict[str, List[Dict[str, Any]]]) -> List[str]:
    """One row per model: median over repetitions of the end-to-end p50 ms (speedup against PyTorch
    FP32's median; spread across repetitions), accuracy where trained; INT8 that does not pay marked."""
    lines = ["| model | input | accuracy (PyTorch FP32 -> best INT8) | " + " | ".join(HEADLINE) + " |",
             "|---|---|---|" + "---|" * len(HEADLINE)]
    for reps in runs.values():
        rep = reps[0]  # the complete repetition: status and accuracy
        a = rep["artifact"]
        rows = {r["name"]: r for r in rep["variants"]}
        base = repetition_p50s(reps, "pytorch-fp32")
        notes = median_advice(reps).notes
        cells = []
        for name in HEADLINE:
            p50s = repetition_p50s(reps, name)
            if not p50s:
                cells.append("-")
                continue
            speed = median(base) / median(p50s) if base and name != "pytorch-fp32" else None
            mark = _int8_mark(notes.get(name, [])) if rows[name]["status"] in ("passed", "reference") \
                else f" ({rows[name]['status']})"
            cells.append(f"{median(p50s):.1f}" + (f" ({speed:.1f}x)" if speed else "") + f" ±{100 * spread(p50s):.0f}%" + mark)
        metric = a["metric"]
        acc_base = ((rows.get("pytorch-fp32") or {}).get("accuracy") or {}).get(metric)
        int8 = [r["accuracy"][metric] for r in rep["variants"] if r["precision"] == "int8" and r.get("accuracy")]
        acc = f"{METRIC_TITLE[a['task']]} {acc_base:.4f} -> {max(int8):.4f}" if acc_base is not None and int8 else "- (random weights)"
        lines.append(f"| {a['name']} | {a['input_size'][0]} | {acc} | " + " | ".join(cells) + " |")
    return lines


def markdown(saved: Dict[str, Any]) -> str:
    runs = saved["runs"]
    reports = [reps[0] for reps in runs.values()]  # the first repetition is the complete one
    m = reports[0]["machine"]
    s = reports[0]["settings"]
    load = saved["load"]
    parts = [
        "# Published benchmark",
        "",
        f"`{saved['command']}`: {saved['seconds'] / 60:.1f} min in all (compiles reused where current), on:",
        "",
        f"- {m['cpu']}, {m['cores']} cores, {s['threads']} threads for every model; ISA: {' '.join(m['isa'])}",
        f"- {m['platform']}; " + ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v),
        f"- load average (1, 5, 15 min) {load['before']} before, {load['after']} after",
        f"- {saved['repeats']} repetitions of every model's benchmark (the first complete; the others latency only), "
        f"each {s['iterations']} timed calls per model after {s['warmup']} warm-up calls, interleaved in rounds of "
        f"{STEADY_BLOCK - 1} after an untimed call (steady state); latency and FPS end "
        "to end (JPEG decode, pre-processing, inference, post-processing), batch 1",
        "- headline: the median over repetitions of each p50, ±spread = slowest / fastest repetition - 1; "
        "speedup = PyTorch FP32's median / the variant's median. PyTorch FP32 runs through edgevision's pre- and "
        "post-processing here; benchmarks/e2e.py also times torchvision's own transform (results/e2e.md)",
        "- quickstart and segmentation-unet are trained here (accuracy on their 200 held-out shapes images); the torchvision "
        "models have random weights (BatchNorm re-estimated): their accuracy is not reported, only speed, and their BF16/INT8 "
        "variants are checked against PyTorch only loosely (cosine >= 0.9), since agreement on random logits means nothing",
    ]
    parts += ["", "## Headline: end-to-end p50 ms at batch 1 (speedup against PyTorch FP32)", ""] + headline(runs)
    for rep in reports:
        a = rep["artifact"]
        header = [h.format(metric=METRIC_TITLE[a["task"]]) for h in TABLE_HEADER]
        parts += ["", f"## {a['name']} ({a['task']}, {a['input_size'][0]}x{a['input_size'][1]}), first repetition, "
                  f"{rep['seconds']:.0f} s", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        parts += ["| " + " | ".join(row) + " |" for row in table_rows(rep)]
        parts += ["", "<details><summary>engine-only latency, throughput, memory</summary>", "",
                  "| variant | infer p50 ms | infer p99 ms | e2e mean ± std ms | infer speedup | throughput img/s | "
                  "peak RSS MB | compile s | drop pts |", "|" + "---|" * 9]
        parts += ["| " + " | ".join(row) + " |" for row in detail_rows(rep)]
        parts += ["", "</details>"]
        caveats = [f"- {r['name']} ({r['status']}): {x}" for r in rep["variants"] for x in r.get("reasons") or []]
        if caveats:
            parts += [""] + caveats
        parts += ["", "What to ship here (medians over the repetitions):", ""]
        parts += [f"- {line}" for line in median_advice(runs[a["name"]]).lines()]
    parts += ["", "## Noise", "", "Between repetitions, end-to-end p50 ms:", "",
              "| model | variant | repetitions | median | spread |", "|---|---|---|---|---|"] + repetitions(runs)
    parts += ["", "Within the first repetition, end-to-end ms:", "",
              "| artifact | model | min | p50 | max | p99 / p50 |", "|---|---|---|---|---|---|"] + noise(reports)
    return "\n".join(parts) + "\n"


# repetitions after the first: latency only (accuracy, memory and throughput do not change with noise)
LATENCY_ONLY = {"accuracy": False, "memory": False, "async_seconds": 0, "batch_sizes": [1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="edgevision benchmark --quick for every model")
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(ORDER))
    parser.add_argument("--iterations", type=int, default=100, help="timed calls per model and measurement (default 100)")
    parser.add_argument("--repeats", type=int, default=3, help="benchmark repetitions per model (default 3)")
    parser.add_argument("--render", action="store_true", help="only rewrite results/published.md from published.json")
    args = parser.parse_args()
    if args.render:
        saved = json.loads((OUT / "published.json").read_text())
        if "runs" not in saved:
            parser.error("results/published.json was written by an older published.py (no repetitions); rerun it")
        (OUT / "published.md").write_text(markdown(saved))
        return 0
    names = args.only.split(",") if args.only else ORDER
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from {', '.join(ORDER)}")
    reporter = RichReporter()
    started, load_before = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    runs: Dict[str, List[Dict[str, Any]]] = {}
    for name in names:
        artifact = artifact_for(name, reporter)
        overrides = {"iterations": None if args.quick else args.iterations}
        first = benchmark(artifact, BenchOptions(overrides, quick=args.quick), reporter)
        write_reports(first, artifact)  # the full report (HTML with plots) next to the artifact
        runs[first["artifact"]["name"]] = [first] + [
            benchmark(artifact, BenchOptions({**overrides, **LATENCY_ONLY}, quick=args.quick), reporter)
            for _ in range(args.repeats - 1)]
    saved = {"command": " ".join(["python benchmarks/published.py", *sys.argv[1:]]),
             "seconds": round(time.perf_counter() - started, 1), "quick": args.quick, "repeats": args.repeats,
             "load": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
             "runs": {n: [strip_samples(r) for r in reps] for n, reps in runs.items()}}
    stem = "published" + ("-quick" if args.quick else "") + ("-" + "-".join(names) if args.only else "")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{stem}.json").write_text(json.dumps(saved, indent=1) + "\n")
    (OUT / f"{stem}.md").write_text(markdown(saved))
    print(f"wrote {OUT / (stem + '.md')} and .json in {saved['seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
