"""Reproduce edgevision's published benchmark table on this machine.

    python benchmarks/published.py            # everything, ~30 min on 2 cores
    python benchmarks/published.py --quick    # a smoke run (edgevision benchmark --quick), ~8 min
    python benchmarks/published.py --only quickstart,resnet18

For each model: compile its recipe (skipped when build/<name> is current), then run
`edgevision benchmark` on it, PyTorch FP32 included, all models of one artifact interleaved.
Results: benchmarks/results/published.json (every report, raw samples dropped) and
benchmarks/results/published.md (the tables, the machine, the time taken, the noise).

Models:
  quickstart, segmentation-unet: trained here (recipes/), so their accuracy means something;
  the quickstart is benchmarked twice to show the run-to-run noise.
  torchvision ssdlite320 / retinanet (detection, 320), lraspp / deeplabv3 (segmentation, 320),
  resnet18 / mobilenet_v3_large (classification, 224): random weights with BatchNorm statistics
  re-estimated (pretrained weights cannot be downloaded here), so only their speed means
  something: no accuracy column, and INT8 calibrated on generated shapes images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgevision import api  # noqa: E402
from edgevision.artifact import read_manifest  # noqa: E402
from edgevision.bench.report import TABLE_HEADER, detail_rows, table_rows, write_reports  # noqa: E402
from edgevision.api import benchmark  # noqa: E402
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
    try:
        if read_manifest(recipe.output_dir).recipe["sha256"] == recipe.digest():
            return recipe.output_dir
    except EdgeVisionError:
        pass
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
    """Spread within runs (min/max and p99/p50 of the end-to-end samples) and between the two
    quickstart runs (ratio of p50s)."""
    lines = []
    for rep in reports:
        for row in rep["variants"]:
            lat = row.get("latency")
            if lat:
                e = lat["e2e"]
                lines.append(f"| {rep['artifact']['name']} | {row['name']} | {e['min']:.2f} | {e['p50']:.2f} | {e['max']:.2f} "
                             f"| {e['p99'] / e['p50']:.2f} |")
    return lines


def run_to_run(a: Dict[str, Any], b: Dict[str, Any]) -> List[str]:
    rows = {r["name"]: r for r in b["variants"] if r.get("latency")}
    out = []
    for r in a["variants"]:
        if r.get("latency") and r["name"] in rows:
            p, q = r["latency"]["e2e"]["p50"], rows[r["name"]]["latency"]["e2e"]["p50"]
            out.append(f"| {r['name']} | {p:.2f} | {q:.2f} | {max(p, q) / min(p, q):.2f} |")
    return out


HEADLINE = ["pytorch-fp32", "onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-bf16", "openvino-int8"]


def headline(reports: List[Dict[str, Any]]) -> List[str]:
    """One row per model: end-to-end p50 ms (speedup vs PyTorch FP32), accuracy where trained."""
    lines = ["| model | input | accuracy (PyTorch FP32 -> best INT8) | " + " | ".join(HEADLINE) + " |",
             "|---|---|---|" + "---|" * len(HEADLINE)]
    for rep in reports:
        a = rep["artifact"]
        rows = {r["name"]: r for r in rep["variants"]}
        cells = []
        for name in HEADLINE:
            r = rows.get(name)
            lat = (r or {}).get("latency")
            if not lat:
                cells.append("-")
                continue
            speed = (r.get("speedup") or {}).get("e2e")
            mark = "" if r["status"] in ("passed", "reference") else f" ({r['status']})"
            cells.append(f"{lat['e2e']['p50']:.1f}" + (f" ({speed:.1f}x)" if speed and name != "pytorch-fp32" else "") + mark)
        metric = a["metric"]
        base = ((rows.get("pytorch-fp32") or {}).get("accuracy") or {}).get(metric)
        int8 = [r["accuracy"][metric] for r in rep["variants"] if r["precision"] == "int8" and r.get("accuracy")]
        acc = f"{METRIC_TITLE[a['task']]} {base:.4f} -> {max(int8):.4f}" if base is not None and int8 else "- (random weights)"
        lines.append(f"| {a['name']} | {a['input_size'][0]} | {acc} | " + " | ".join(cells) + " |")
    return lines


def markdown(reports: List[Dict[str, Any]], seconds: float, quick: bool, extra: List[Dict[str, Any]]) -> str:
    m = reports[0]["machine"]
    s = reports[0]["settings"]
    parts = [
        "# Published benchmark",
        "",
        f"`python benchmarks/published.py{' --quick' if quick else ''}`: {seconds / 60:.1f} min in all (compiles reused "
        "where current), on:",
        "",
        f"- {m['cpu']}, {m['cores']} cores, {s['threads']} threads for every model; ISA: {' '.join(m['isa'])}",
        f"- {m['platform']}; " + ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v),
        f"- {s['iterations']} interleaved rounds after {s['warmup']} warm-up calls per measurement; latency and FPS end "
        "to end (JPEG decode, pre-processing, inference, post-processing), batch 1; speedup = PyTorch FP32 p50 / variant p50",
        "- quickstart and segmentation-unet are trained here (accuracy on their 200 held-out shapes images); the torchvision "
        "models have random weights (BatchNorm re-estimated): their accuracy is not reported, only speed, and their BF16/INT8 "
        "variants are checked against PyTorch only loosely (cosine >= 0.9), since agreement on random logits means nothing",
    ]
    parts += ["", "## Headline: end-to-end p50 ms at batch 1 (speedup against PyTorch FP32)", ""] + headline(reports)
    for rep in reports:
        a = rep["artifact"]
        header = [h.format(metric=METRIC_TITLE[a["task"]]) for h in TABLE_HEADER]
        parts += ["", f"## {a['name']} ({a['task']}, {a['input_size'][0]}x{a['input_size'][1]}), {rep['seconds']:.0f} s", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        parts += ["| " + " | ".join(row) + " |" for row in table_rows(rep)]
        parts += ["", "<details><summary>engine-only latency, throughput, memory</summary>", "",
                  "| variant | infer p50 ms | infer p99 ms | e2e mean ± std ms | infer speedup | throughput img/s | "
                  "peak RSS MB | compile s | drop pts |", "|" + "---|" * 9]
        parts += ["| " + " | ".join(row) + " |" for row in detail_rows(rep)]
        parts += ["", "</details>"]
        caveats = [f"- {r['name']} ({r['status']}): {x}" for r in rep["variants"] for x in r.get("reasons") or []]
        if caveats:
            parts += [""] + caveats
    parts += ["", "## Noise", "", "Within each run, end-to-end ms:", "",
              "| artifact | model | min | p50 | max | p99 / p50 |", "|---|---|---|---|---|---|"] + noise(reports)
    if extra:
        parts += ["", "Between two runs of the quickstart benchmark, end-to-end p50 ms:", "",
                  "| model | run 1 | run 2 | max / min |", "|---|---|---|---|"] + run_to_run(reports[0], extra[0])
    return "\n".join(parts) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="edgevision benchmark --quick for every model")
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(ORDER))
    parser.add_argument("--iterations", type=int, default=100, help="interleaved rounds (default 100)")
    parser.add_argument("--render", action="store_true", help="only rewrite results/published.md from published.json")
    args = parser.parse_args()
    if args.render:
        saved = json.loads((OUT / "published.json").read_text())
        (OUT / "published.md").write_text(markdown(saved["reports"], saved["seconds"], False, saved["repeat"]))
        return 0
    names = args.only.split(",") if args.only else ORDER
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from {', '.join(ORDER)}")
    reporter = RichReporter()
    started = time.perf_counter()
    reports, repeats = [], []
    for name in names:
        artifact = artifact_for(name, reporter)
        options = BenchOptions({"iterations": None if args.quick else args.iterations}, quick=args.quick)
        report = benchmark(artifact, options, reporter)
        write_reports(report, artifact)  # the full report (HTML with plots) next to the artifact
        reports.append(report)
        if name == "quickstart" and len(names) > 1:
            repeats.append(benchmark(artifact, options, reporter))
    seconds = time.perf_counter() - started
    stem = "published-quick" if args.quick else "published"
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{stem}.json").write_text(json.dumps({"seconds": round(seconds, 1), "reports": [strip_samples(r) for r in reports],
                                                  "repeat": [strip_samples(r) for r in repeats]}, indent=1) + "\n")
    (OUT / f"{stem}.md").write_text(markdown(reports, seconds, args.quick, repeats))
    print(f"wrote {OUT / (stem + '.md')} and .json in {seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
