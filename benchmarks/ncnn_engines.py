"""ncnn beside ONNX Runtime and OpenVINO on this machine: the same artifact's variants, predict() end to end
and the engine call alone, interleaved in one process (one call per variant in turn, each round), same
thread count; and the share of an ncnn call spent in the host NMS that ncnn cannot run.

    python benchmarks/ncnn_engines.py build/quickstart [build/segmentation-unet ...] [--rounds 200] [--threads 2]

An x86 ranking is not an ARM ranking: ncnn's kernels are tuned for ARM NEON first, ONNX Runtime's and
OpenVINO's for x86 (OpenVINO's ARM plugin is younger). Measure on the board before choosing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import edgevision  # noqa: E402
from edgevision.artifact import read_manifest  # noqa: E402
from edgevision.data import ShapesDataset  # noqa: E402

from record import record  # noqa: E402

BACKENDS = ("onnxruntime", "openvino", "ncnn")


def _stats(samples: List[float]) -> Dict[str, float]:
    a = np.asarray(samples) * 1000
    return {"p50": round(float(np.median(a)), 3), "p25": round(float(np.percentile(a, 25)), 3),
            "p75": round(float(np.percentile(a, 75)), 3), "n": len(a)}


def measure_artifact(root: Path, rounds: int, threads: int) -> Dict[str, Any]:
    variants = [v for v in read_manifest(root).variants if v.backend in BACKENDS and v.status == "passed"]
    models = {v.name: edgevision.load(root / v.name, threads=threads) for v in variants}
    size = next(iter(models.values())).input.size
    image = ShapesDataset(1, seed=21, size=(int(size[0] * 1.5), int(size[1] * 2)))[0].image  # camera-like 4:3
    feeds = {name: m.feeds([image])[0] for name, m in models.items()}
    e2e: Dict[str, List[float]] = {n: [] for n in models}
    infer: Dict[str, List[float]] = {n: [] for n in models}
    for name, m in models.items():  # warm-up
        for _ in range(5):
            m.predict(image)
    host = {n: m.runner.host_seconds for n, m in models.items() if hasattr(m.runner, "host_seconds")}
    for _ in range(rounds):
        for name, m in models.items():
            start = time.perf_counter()
            m.runner.infer(feeds[name])
            infer[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            m.predict(image)
            e2e[name].append(time.perf_counter() - start)
    rows = []
    for name, m in models.items():
        row: Dict[str, Any] = {"variant": name, "infer_ms": _stats(infer[name]), "e2e_ms": _stats(e2e[name])}
        if name in host:  # host NMS seconds over the timed calls (2 per round: infer + predict)
            spent = m.runner.host_seconds - host[name]
            row["host_nms_share_of_infer"] = round(spent / (sum(infer[name]) + sum(e2e[name])), 4)
        rows.append(row)
        m.close()
    base = {r["variant"]: r["e2e_ms"]["p50"] for r in rows}
    for r in rows:
        r["e2e_vs"] = {other: round(base[other] / r["e2e_ms"]["p50"], 2) for other in base if other != r["variant"]}
    return {"artifact": root.name, "task": read_manifest(root).info.task, "input": list(size),
            "image": list(image.shape[:2]), "variants": rows}


def markdown(report: Dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"# ncnn beside ONNX Runtime and OpenVINO ({m['cpu']}, {m['cores']} cores, {report['threads']} threads)", "",
             f"ISA: {' '.join(m['isa'])}. {report['rounds']} interleaved rounds, batch 1; load average "
             f"{report['load_before']} before, {report['load_after']} after. Median (p25-p75) ms.",
             "An x86 ranking is not an ARM ranking: measure on the board.", ""]
    for art in report["models"]:
        lines += [f"## {art['artifact']} ({art['task']}, input {art['input']}, image {art['image']})", "",
                  "| variant | engine ms | e2e ms | host NMS share | e2e speed vs others |", "|---|---|---|---|---|"]
        for r in art["variants"]:
            i, e = r["infer_ms"], r["e2e_ms"]
            share = f"{100 * r['host_nms_share_of_infer']:.1f}%" if "host_nms_share_of_infer" in r else "-"
            vs = ", ".join(f"{k} {v}x" for k, v in r["e2e_vs"].items())
            lines.append(f"| {r['variant']} | {i['p50']} ({i['p25']}-{i['p75']}) | {e['p50']} ({e['p25']}-{e['p75']}) "
                         f"| {share} | {vs} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    record("ncnn_engines", args.threads, {"rounds": args.rounds, "command": " ".join(sys.argv)},
           lambda: [measure_artifact(a, args.rounds, args.threads) for a in args.artifacts], markdown)


if __name__ == "__main__":
    main()
